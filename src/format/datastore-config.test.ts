import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { BurrowError } from '../lib/errors.js';
import { isBurrowError } from '../lib/errors.js';
import {
  DEFAULT_TUNING,
  datastoreBackend,
  datastoreMaintenanceMode,
  datastoreNotify,
  datastoreTuning,
  formatMaintenanceMode,
  formatTuning,
  parseDatastoreConfig,
  parseMaintenanceMode,
  parseTuning,
  writeDatastoreConfig,
  type DatastoreConfigEntry,
  type DatastoreProps,
} from './datastore-config.js';

function errorOf(fn: () => unknown): BurrowError {
  try {
    fn();
  } catch (error) {
    if (isBurrowError(error)) return error;
    throw new Error(`not a BurrowError: ${String(error)}`);
  }
  throw new Error('no error thrown');
}

/** The example file of pbs-formats §10.1, verbatim. */
const SPEC_EXAMPLE = `datastore: store1
\tcomment Main store
\tgc-schedule daily
\tnotification-mode notification-system
\tpath /mnt/datastore/store1
\ttuning chunk-order=none,sync-level=filesystem
\tverify-new true

datastore: store2
\tpath /srv/store2
`;

describe('datastore.cfg', () => {
  it('parses the §10.1 example', () => {
    expect(parseDatastoreConfig(SPEC_EXAMPLE)).toEqual([
      {
        name: 'store1',
        props: {
          comment: 'Main store',
          'gc-schedule': 'daily',
          'notification-mode': 'notification-system',
          path: '/mnt/datastore/store1',
          tuning: 'chunk-order=none,sync-level=filesystem',
          'verify-new': true,
        },
      },
      { name: 'store2', props: { path: '/srv/store2' } },
    ]);
  });

  it('writes the §10.1 example back byte for byte', () => {
    expect(writeDatastoreConfig(parseDatastoreConfig(SPEC_EXAMPLE))).toBe(SPEC_EXAMPLE);
  });

  it('writes keys sorted whatever order they were given in', () => {
    const entries: DatastoreConfigEntry[] = [
      {
        name: 'store1',
        props: {
          'verify-new': true,
          tuning: 'chunk-order=none,sync-level=filesystem',
          path: '/mnt/datastore/store1',
          'notification-mode': 'notification-system',
          'gc-schedule': 'daily',
          comment: 'Main store',
        },
      },
      { name: 'store2', props: { path: '/srv/store2' } },
    ];
    expect(writeDatastoreConfig(entries)).toBe(SPEC_EXAMPLE);
  });

  it('accepts every §10.2 property', () => {
    const text = `datastore: full-store_1
\tbackend type=s3,client=my-client,bucket=backups,max-cache-size=10GiB
\tbacking-device 0f3c51b6-1c7b-4a1e-9d55-2b6a5b0c8e11
\tcomment everything set
\tcounter-reset-schedule monthly
\tgc-on-unmount false
\tgc-schedule sat 18:15
\tkeep-daily 7
\tkeep-hourly 24
\tkeep-last 3
\tkeep-monthly 12
\tkeep-weekly 4
\tkeep-yearly 2
\tmaintenance-mode read-only,message="disk swap"
\tnotification-mode legacy-sendmail
\tnotification-thresholds put-requests=1000
\tnotify gc=always,verify=error,sync=never,prune=error
\tnotify-user admin@pbs
\tpath relative/on/device
\tprune-schedule daily
\ttuning chunk-order=inode,sync-level=file,gc-atime-safety-check=false,gc-atime-cutoff=2880,gc-cache-capacity=0,default-verification-workers=8,default-verification-readers=2
\tverify-new false
`;
    const [entry] = parseDatastoreConfig(text);
    expect(entry?.props['keep-hourly']).toBe(24);
    expect(entry?.props['gc-on-unmount']).toBe(false);
    expect(writeDatastoreConfig(parseDatastoreConfig(text))).toBe(text);
  });

  it('rejects bad files with errors that name the line', () => {
    const cases: [string, string, number][] = [
      ['datastore: store1\n\tpath /a\n\tcolour blue\n', 'SECTION_CONFIG_INVALID', 3],
      ['datastore: store1\n\tpath /a\n\tpath /b\n', 'SECTION_CONFIG_INVALID', 3],
      ['\tpath /a\ndatastore: store1\n', 'SECTION_CONFIG_SYNTAX', 1],
      ['datastore store1\n\tpath /a\n', 'SECTION_CONFIG_SYNTAX', 1],
      ['remote: store1\n\tpath /a\n', 'SECTION_CONFIG_SYNTAX', 1],
      ['datastore: store1\n\tpath /a\n\tcomment bell\u0007\n', 'SECTION_CONFIG_SYNTAX', 3],
      ['datastore: s1\n\tpath /a\n', 'SECTION_CONFIG_INVALID', 1], // name shorter than 3
      [`datastore: ${'s'.repeat(33)}\n\tpath /a\n`, 'SECTION_CONFIG_INVALID', 1],
      ['datastore: -store\n\tpath /a\n', 'SECTION_CONFIG_INVALID', 1],
      ['datastore: store1\n\tcomment no path\n', 'SECTION_CONFIG_INVALID', 1],
      ['datastore: store1\n\tpath /a\n\tkeep-last 0\n', 'SECTION_CONFIG_INVALID', 3],
      ['datastore: store1\n\tpath /a\n\tverify-new perhaps\n', 'SECTION_CONFIG_INVALID', 3],
      ['datastore: store1\n\tpath /a\n\tnotification-mode email\n', 'SECTION_CONFIG_INVALID', 3],
      ['datastore: store1\n\tpath /a\n\tnotify-user root\n', 'SECTION_CONFIG_INVALID', 3],
      ['datastore: store1\n\tpath /a\n\tnotify gc=sometimes\n', 'SECTION_CONFIG_INVALID', 3],
      ['datastore: store1\n\tpath /a\n\ttuning gc-atime-cutoff=0\n', 'SECTION_CONFIG_INVALID', 3],
      [
        'datastore: store1\n\tpath /a\n\ttuning gc-atime-cutoff=2881\n',
        'SECTION_CONFIG_INVALID',
        3,
      ],
      [
        'datastore: store1\n\tpath /a\n\ttuning gc-cache-capacity=8388609\n',
        'SECTION_CONFIG_INVALID',
        3,
      ],
      ['datastore: store1\n\tpath /a\n\ttuning chunk-order=random\n', 'SECTION_CONFIG_INVALID', 3],
      [
        'datastore: store1\n\tpath /a\n\ttuning sync-level=file,sync-level=none\n',
        'SECTION_CONFIG_INVALID',
        3,
      ],
      ['datastore: store1\n\tpath /a\n\tmaintenance-mode message=x\n', 'SECTION_CONFIG_INVALID', 3],
      [
        'datastore: store1\n\tpath /a\n\tmaintenance-mode type=paused\n',
        'SECTION_CONFIG_INVALID',
        3,
      ],
      [
        `datastore: store1\n\tpath /a\n\tmaintenance-mode offline,message=${'m'.repeat(65)}\n`,
        'SECTION_CONFIG_INVALID',
        3,
      ],
      ['datastore: store1\n\tpath /a\n\tbackend type=s3,bucket=b\n', 'SECTION_CONFIG_INVALID', 3],
      ['datastore: store1\n\tpath /a\n\tbackend client=c\n', 'SECTION_CONFIG_INVALID', 3],
      ['datastore: store1\n\tpath /a\n\tbacking-device not-a-uuid\n', 'SECTION_CONFIG_INVALID', 3],
      [`datastore: store1\n\tpath /${'p'.repeat(4096)}\n`, 'SECTION_CONFIG_INVALID', 2],
      [`datastore: store1\n\tpath /a\n\tcomment ${'c'.repeat(129)}\n`, 'SECTION_CONFIG_INVALID', 3],
    ];
    for (const [text, code, line] of cases) {
      const error = errorOf(() => parseDatastoreConfig(text));
      expect(error.code, text.slice(0, 120)).toBe(code);
      expect(error.details['line'], text.slice(0, 120)).toBe(line);
      expect(error.message).toContain(`line ${line}`);
    }
  });

  it('names the offending key and datastore in messages', () => {
    const error = errorOf(() =>
      parseDatastoreConfig('datastore: store1\n\tpath /a\n\tcolour blue\n'),
    );
    expect(error.message).toBe("line 3: unknown property 'colour' in datastore 'store1'");
  });

  it('round-trips generated configs', () => {
    const text = fc
      .string({ unit: 'binary', minLength: 1, maxLength: 30 })
      .filter((s) => !/^\p{White_Space}|\p{White_Space}$|\p{Cc}/u.test(s));
    const keep = fc.option(fc.integer({ min: 1, max: 10_000 }), { nil: undefined });
    const props = fc.record({
      path: text,
      comment: fc.option(
        text.filter((s) => s.length <= 64),
        { nil: undefined },
      ),
      'gc-schedule': fc.option(fc.constantFrom('daily', 'sat 18:15', 'hourly'), { nil: undefined }),
      'keep-last': keep,
      'keep-daily': keep,
      'keep-yearly': keep,
      'verify-new': fc.option(fc.boolean(), { nil: undefined }),
      'notify-user': fc.option(fc.constantFrom('root@pam', 'admin@pbs'), { nil: undefined }),
      'notification-mode': fc.option(
        fc.constantFrom('legacy-sendmail' as const, 'notification-system' as const),
        {
          nil: undefined,
        },
      ),
      tuning: fc.option(
        fc
          .record(
            {
              chunkOrder: fc.constantFrom('none' as const, 'inode' as const),
              syncLevel: fc.constantFrom('none' as const, 'file' as const, 'filesystem' as const),
              gcAtimeSafetyCheck: fc.boolean(),
              gcAtimeCutoff: fc.integer({ min: 1, max: 2880 }),
              gcCacheCapacity: fc.integer({ min: 0, max: 8_388_608 }),
            },
            { requiredKeys: [] },
          )
          .map(formatTuning)
          .filter((t) => t !== ''),
        { nil: undefined },
      ),
      'maintenance-mode': fc.option(
        fc
          .record({
            type: fc.constantFrom('read-only' as const, 'offline' as const),
            message: fc.option(
              fc
                .oneof(
                  fc.string({ maxLength: 20 }),
                  fc.string({ maxLength: 10 }).map((m) => ` ${m} `),
                )
                .filter((m) => !/\p{Cc}/u.test(m)),
              { nil: undefined },
            ),
          })
          .map(formatMaintenanceMode),
        { nil: undefined },
      ),
    });
    const entries = fc.uniqueArray(
      fc.record({ name: fc.stringMatching(/^[a-z][a-z0-9_-]{2,31}$/), props }),
      { selector: (e) => e.name, maxLength: 4 },
    );
    fc.assert(
      fc.property(entries, (generated) => {
        const cfg: DatastoreConfigEntry[] = generated.map((e) => ({
          name: e.name,
          props: Object.fromEntries(
            Object.entries(e.props).filter(([, v]) => v !== undefined),
          ) as DatastoreProps,
        }));
        const written = writeDatastoreConfig(cfg);
        expect(parseDatastoreConfig(written)).toEqual(cfg);
        expect(writeDatastoreConfig(parseDatastoreConfig(written))).toBe(written);
      }),
      { numRuns: 200 },
    );
  });
});

describe('tuning', () => {
  it('fills in the documented defaults', () => {
    expect(DEFAULT_TUNING).toEqual({
      chunkOrder: 'inode',
      syncLevel: 'filesystem',
      gcAtimeSafetyCheck: true,
      gcAtimeCutoff: 1445,
      gcCacheCapacity: 1_048_576,
    });
    expect(datastoreTuning({ path: '/a' })).toEqual(DEFAULT_TUNING);
    expect(parseTuning('')).toEqual(DEFAULT_TUNING);
    expect(
      datastoreTuning({ path: '/a', tuning: 'chunk-order=none,sync-level=filesystem' }),
    ).toEqual({
      ...DEFAULT_TUNING,
      chunkOrder: 'none',
    });
    expect(
      parseTuning('gc-atime-safety-check=0,gc-atime-cutoff=60,default-verification-readers=3'),
    ).toEqual({
      ...DEFAULT_TUNING,
      gcAtimeSafetyCheck: false,
      gcAtimeCutoff: 60,
      defaultVerificationReaders: 3,
    });
  });

  it('writes options in PBS field order, leaving out unset ones', () => {
    expect(formatTuning({ syncLevel: 'filesystem', chunkOrder: 'none' })).toBe(
      'chunk-order=none,sync-level=filesystem',
    );
    expect(formatTuning({ gcCacheCapacity: 0, gcAtimeSafetyCheck: false })).toBe(
      'gc-atime-safety-check=false,gc-cache-capacity=0',
    );
    expect(formatTuning({})).toBe('');
    expect(errorOf(() => formatTuning({ gcAtimeCutoff: 0 })).code).toBe('PROPERTY_STRING_INVALID');
  });
});

describe('maintenance mode', () => {
  it('reads the bare type and a percent-encoded message', () => {
    expect(parseMaintenanceMode('offline')).toEqual({ type: 'offline' });
    expect(parseMaintenanceMode('type=read-only,message=disk%20swap%21')).toEqual({
      type: 'read-only',
      message: 'disk swap!',
    });
    expect(parseMaintenanceMode('type=offline,message="say \\"hi\\""')).toEqual({
      type: 'offline',
      message: 'say "hi"',
    });
    expect(parseMaintenanceMode('offline,message=100%')).toEqual({
      type: 'offline',
      message: '100%',
    });
    expect(parseMaintenanceMode('offline,message=%ff')).toEqual({ type: 'offline', message: '' }); // not UTF-8
    expect(datastoreMaintenanceMode({ path: '/a' })).toBeUndefined();
    expect(datastoreMaintenanceMode({ path: '/a', 'maintenance-mode': 'delete' })).toEqual({
      type: 'delete',
    });
  });

  it('writes the type bare and round-trips messages', () => {
    expect(formatMaintenanceMode({ type: 'unmount' })).toBe('unmount');
    expect(formatMaintenanceMode({ type: 'offline', message: 'disk swap' })).toBe(
      'offline,message=disk swap',
    );
    expect(formatMaintenanceMode({ type: 'offline', message: '50% done, "ok"' })).toBe(
      'offline,message="50%25 done, \\"ok\\""',
    );
    fc.assert(
      fc.property(fc.string({ unit: 'binary', minLength: 1, maxLength: 20 }), (message) => {
        fc.pre(!/\p{Cc}/u.test(message));
        expect(parseMaintenanceMode(formatMaintenanceMode({ type: 'offline', message }))).toEqual({
          type: 'offline',
          message,
        });
      }),
      { numRuns: 200 },
    );
    expect(errorOf(() => formatMaintenanceMode({ type: 'offline', message: 'a\nb' })).code).toBe(
      'PROPERTY_STRING_INVALID',
    );
  });
});

describe('backend and notify', () => {
  it('defaults to the filesystem backend', () => {
    expect(datastoreBackend({ path: '/a' })).toEqual({ type: 'filesystem' });
    expect(datastoreBackend({ path: '/a', backend: 'filesystem' })).toEqual({ type: 'filesystem' });
    expect(
      datastoreBackend({ path: 'x', backend: 's3,client=c1,bucket=b1,max-cache-size=1GiB' }),
    ).toEqual({
      type: 's3',
      client: 'c1',
      bucket: 'b1',
      maxCacheSize: '1GiB',
    });
    expect(
      errorOf(() => datastoreBackend({ path: 'x', backend: 'filesystem,bucket=b' })).code,
    ).toBe('PROPERTY_STRING_INVALID');
  });

  it('reads notify settings', () => {
    expect(datastoreNotify({ path: '/a' })).toEqual({});
    expect(datastoreNotify({ path: '/a', notify: 'gc=error,prune=never' })).toEqual({
      gc: 'error',
      prune: 'never',
    });
  });
});
