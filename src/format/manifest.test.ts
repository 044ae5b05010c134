import { createHash, createHmac, pbkdf2Sync, scryptSync } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { CryptConfig, formatFingerprint } from '../crypto/crypt-config.js';
import { fromHex } from '../lib/bytes.js';
import { isBurrowError } from '../lib/errors.js';
import type { CryptMode } from '../types/crypt-mode.js';
import type { BackupManifest, FileInfo } from './manifest.js';
import {
  CATALOG_NAME,
  CLIENT_LOG_BLOB_NAME,
  ENCRYPTED_KEY_BLOB_NAME,
  MANIFEST_BLOB_NAME,
  archiveTypeOf,
  blobFileInfo,
  indexFileInfo,
  lookupFile,
  manifestSignature,
  manifestSignedBytes,
  newManifest,
  parseManifest,
  serializeManifest,
  serializeManifestBytes,
  serverArchiveName,
  signManifest,
  verifyFile,
  verifyManifest,
} from './manifest.js';

const HEX64_01 = '01'.repeat(32);
const HEX64_02 = '02'.repeat(32);

// pbs-protocol §11 #4 and #5.
const SPEC_CANONICAL =
  '{"backup-id":"elsa","backup-time":1593179765,"backup-type":"host","files":[' +
  `{"crypt-mode":"encrypt","csum":"${HEX64_01}","filename":"test1.img.fidx","size":200},` +
  `{"crypt-mode":"none","csum":"${HEX64_02}","filename":"abc.blob","size":200}]}`;
const SPEC_ENC_KEY = '28cdb1a3bef39396c3860e00d448fe7a0efd8244486ab6feb30457681d31597e';
const SPEC_ID_KEY = '758495a21c31047f543f46d694700e02d168568bab37bb0ceece947b591f5100';
const SPEC_FINGERPRINT =
  '12:b9:b7:74:bb:3d:89:95:2b:97:cb:c2:82:f0:0c:14:2b:83:ba:7f:96:62:6a:a1:5a:44:9a:63:e8:91:fe:25';

function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected an error');
}

function expectCode(fn: () => unknown, code: string, path?: string): void {
  const err = caught(fn);
  expect(isBurrowError(err), `expected BurrowError ${code}, got ${String(err)}`).toBe(true);
  expect((err as { code: string }).code).toBe(code);
  if (path !== undefined) expect((err as { details: { path?: string } }).details.path).toBe(path);
}

function specManifest(): BackupManifest {
  const m = newManifest('host', 'elsa', 1593179765);
  m.files.push(
    indexFileInfo('test1.img.fidx', { size: 200, csum: new Uint8Array(32).fill(1) }, 'encrypt'),
  );
  m.files.push({ filename: 'abc.blob', cryptMode: 'none', size: 200, csum: HEX64_02 });
  m.unprotected['note'] = 'This is not protected by the signature.';
  return m;
}

describe('manifest signature test vector (pbs-formats §12, pbs-protocol §11 #4/#5)', () => {
  let crypt: CryptConfig;
  let otherCrypt: CryptConfig;

  beforeAll(() => {
    // Derived here with node:crypto directly, so the vector does not depend on key-config.ts.
    const key = scryptSync('test', Buffer.alloc(0), 32, {
      N: 65536,
      r: 8,
      p: 1,
      maxmem: 1025 * 1024 * 1024,
    });
    expect(key.toString('hex')).toBe(SPEC_ENC_KEY);
    crypt = new CryptConfig(new Uint8Array(key));
    otherCrypt = new CryptConfig(new Uint8Array(32).fill(7));
  });

  it('derives the spec id key and fingerprint', () => {
    expect(Buffer.from(crypt.idKey).toString('hex')).toBe(SPEC_ID_KEY);
    expect(pbkdf2Sync(fromHex(SPEC_ENC_KEY), '_id_key', 10, 32, 'sha256').toString('hex')).toBe(
      SPEC_ID_KEY,
    );
    expect(formatFingerprint(crypt.fingerprint)).toBe(SPEC_FINGERPRINT);
  });

  it('signs the spec canonical JSON with HMAC-SHA256(id_key)', () => {
    const m = specManifest();
    expect(Buffer.from(manifestSignedBytes(m)).toString('utf8')).toBe(SPEC_CANONICAL);
    const expected = createHmac('sha256', fromHex(SPEC_ID_KEY))
      .update(SPEC_CANONICAL, 'utf8')
      .digest('hex');
    expect(manifestSignature(m, crypt)).toBe(expected);

    const signed = signManifest(m, crypt);
    expect(signed.signature).toBe(expected);
    expect(signed.unprotected['key-fingerprint']).toBe(SPEC_FINGERPRINT);
    expect(signed.unprotected['note']).toBe('This is not protected by the signature.');
    // signManifest does not touch its input.
    expect(m.signature).toBeNull();
    expect(m.unprotected['key-fingerprint']).toBeUndefined();

    const reread = parseManifest(serializeManifest(signed));
    expect(reread).toEqual(signed);
    expect(verifyManifest(reread, crypt)).toEqual({
      signed: true,
      verified: true,
      fingerprint: SPEC_FINGERPRINT,
    });
  });

  it('ignores unprotected changes but catches any signed change', () => {
    const signed = signManifest(specManifest(), crypt);
    const noted = {
      ...signed,
      unprotected: { ...signed.unprotected, notes: 'changed', verify_state: { state: 'ok' } },
    };
    expect(verifyManifest(noted, crypt).verified).toBe(true);

    const file0 = signed.files[0] as FileInfo;
    const tampered = { ...signed, files: [{ ...file0, size: 201 }, ...signed.files.slice(1)] };
    expectCode(() => verifyManifest(tampered, crypt), 'MANIFEST_SIGNATURE_MISMATCH');
    expectCode(
      () => verifyManifest({ ...signed, backupTime: signed.backupTime + 1 }, crypt),
      'MANIFEST_SIGNATURE_MISMATCH',
    );
    expectCode(
      () => verifyManifest({ ...signed, signature: 'f'.repeat(64) }, crypt),
      'MANIFEST_SIGNATURE_MISMATCH',
    );
  });

  it('checks the key fingerprint before the signature', () => {
    const signed = signManifest(specManifest(), crypt);
    expectCode(() => verifyManifest(signed), 'MANIFEST_WRONG_KEY');
    expectCode(() => verifyManifest(signed, otherCrypt), 'MANIFEST_WRONG_KEY');
    // Wrong key and a broken signature: the key is reported first.
    expectCode(
      () => verifyManifest({ ...signed, signature: '0'.repeat(64) }, otherCrypt),
      'MANIFEST_WRONG_KEY',
    );

    // Without a recorded fingerprint, a wrong key surfaces as a signature mismatch.
    const { ['key-fingerprint']: _fp, ...rest } = signed.unprotected;
    const anonymous = { ...signed, unprotected: rest };
    expectCode(() => verifyManifest(anonymous, otherCrypt), 'MANIFEST_SIGNATURE_MISMATCH');
    expect(verifyManifest(anonymous)).toEqual({ signed: true, verified: false, fingerprint: null });

    const badFp = { ...signed, unprotected: { ...signed.unprotected, 'key-fingerprint': 'zz' } };
    expectCode(
      () => verifyManifest(badFp, crypt),
      'MANIFEST_INVALID',
      'unprotected.key-fingerprint',
    );
  });

  it('accepts an unsigned manifest with any key or none', () => {
    const m = specManifest();
    expect(verifyManifest(m)).toEqual({ signed: false, verified: false, fingerprint: null });
    expect(verifyManifest(m, crypt)).toEqual({ signed: false, verified: false, fingerprint: null });
  });

  it('covers unknown top-level and file keys with the signature and keeps them', () => {
    const text = serializeManifest(specManifest())
      .replace('"backup-id"', '"future-field": {"x": 1},\n  "backup-id"')
      .replace('"crypt-mode": "encrypt"', '"chunk-format": 2,\n      "crypt-mode": "encrypt"');
    const m = parseManifest(text);
    expect(m.extra).toEqual({ 'future-field': { x: 1 } });
    expect(m.files[0]?.extra).toEqual({ 'chunk-format': 2 });
    expect(Buffer.from(manifestSignedBytes(m)).toString('utf8')).toBe(
      SPEC_CANONICAL.replace(
        '{"crypt-mode":"encrypt"',
        '{"chunk-format":2,"crypt-mode":"encrypt"',
      ).replace('}]}', '}],"future-field":{"x":1}}'),
    );
    const signed = signManifest(m, crypt);
    const reread = parseManifest(serializeManifest(signed));
    expect(reread).toEqual(signed);
    expect(verifyManifest(reread, crypt).verified).toBe(true);
    expect(manifestSignature(reread, crypt)).not.toBe(manifestSignature(specManifest(), crypt));
  });
});

describe('serializeManifest', () => {
  it('writes PBS pretty JSON: sorted keys, 2-space indent, signature always present', () => {
    const m = newManifest('vm', '100', 1700000000);
    m.files.push({
      filename: 'qemu-server.conf.blob',
      cryptMode: 'none',
      size: 428,
      csum: HEX64_01,
    });
    m.unprotected['notes'] = 'line 1\nline 2';
    m.unprotected['chunk_upload_stats'] = { size: 0, count: 0, duplicates: 0, compressed_size: 0 };
    expect(serializeManifest(m)).toBe(
      [
        '{',
        '  "backup-id": "100",',
        '  "backup-time": 1700000000,',
        '  "backup-type": "vm",',
        '  "files": [',
        '    {',
        '      "crypt-mode": "none",',
        `      "csum": "${HEX64_01}",`,
        '      "filename": "qemu-server.conf.blob",',
        '      "size": 428',
        '    }',
        '  ],',
        '  "signature": null,',
        '  "unprotected": {',
        '    "chunk_upload_stats": {',
        '      "compressed_size": 0,',
        '      "count": 0,',
        '      "duplicates": 0,',
        '      "size": 0',
        '    },',
        '    "notes": "line 1\\nline 2"',
        '  }',
        '}',
      ].join('\n'),
    );
    const empty = newManifest('ct', 'a', 1);
    expect(serializeManifest(empty)).toBe(
      '{\n  "backup-id": "a",\n  "backup-time": 1,\n  "backup-type": "ct",\n  "files": [],\n  "signature": null,\n  "unprotected": {}\n}',
    );
    expect(Buffer.from(serializeManifestBytes(empty)).toString('utf8')).toBe(
      serializeManifest(empty),
    );
  });

  it('refuses to write a manifest it could not read back', () => {
    const m = newManifest('host', 'x', 1);
    m.files.push({ filename: 'bad name.blob', cryptMode: 'none', size: 1, csum: HEX64_01 });
    expectCode(() => serializeManifest(m), 'MANIFEST_INVALID', 'files[0].filename');
  });
});

describe('parseManifest', () => {
  const base = (): Record<string, unknown> => ({
    'backup-type': 'host',
    'backup-id': 'elsa',
    'backup-time': 1593179765,
    files: [{ filename: 'root.pxar.didx', 'crypt-mode': 'sign-only', size: 5, csum: HEX64_01 }],
    signature: null,
    unprotected: {},
  });

  it('reads text and UTF-8 bytes', () => {
    const text = JSON.stringify(base());
    const m = parseManifest(text);
    expect(m).toEqual({
      backupType: 'host',
      backupId: 'elsa',
      backupTime: 1593179765,
      files: [{ filename: 'root.pxar.didx', cryptMode: 'sign-only', size: 5, csum: HEX64_01 }],
      signature: null,
      unprotected: {},
    });
    expect(parseManifest(new TextEncoder().encode(text))).toEqual(m);
  });

  it('fills the defaults of manifests older than PBS 0.8', () => {
    const old = base();
    delete old['unprotected'];
    delete old['signature'];
    delete (old['files'] as Record<string, unknown>[])[0]?.['crypt-mode'];
    const m = parseManifest(JSON.stringify(old));
    expect(m.files[0]?.cryptMode).toBe('none');
    expect(m.signature).toBeNull();
    expect(m.unprotected).toEqual({});
  });

  it('keeps unprotected content untouched', () => {
    const json = base();
    json['unprotected'] = {
      note: 'kept',
      verify_state: { state: 'failed', upid: 'UPID:x' },
      list: [1, null, 2.5],
    };
    const m = parseManifest(JSON.stringify(json));
    expect(m.unprotected).toEqual(json['unprotected']);
    expect(parseManifest(serializeManifest(m)).unprotected).toEqual(json['unprotected']);
  });

  const cases: Array<[string, (j: Record<string, unknown>) => void, string]> = [
    ['backup-type', (j) => (j['backup-type'] = 'VM'), 'backup-type'],
    ['backup-type missing', (j) => delete j['backup-type'], 'backup-type'],
    ['backup-id', (j) => (j['backup-id'] = 'a/b'), 'backup-id'],
    ['backup-id number', (j) => (j['backup-id'] = 100), 'backup-id'],
    ['backup-time string', (j) => (j['backup-time'] = '1593179765'), 'backup-time'],
    ['backup-time fraction', (j) => (j['backup-time'] = 1.5), 'backup-time'],
    ['backup-time zero', (j) => (j['backup-time'] = 0), 'backup-time'],
    ['files object', (j) => (j['files'] = {}), 'files'],
    ['file not object', (j) => (j['files'] = ['x']), 'files[0]'],
    [
      'filename extension',
      (j) => ((j['files'] as Record<string, unknown>[])[0]!['filename'] = 'root.pxar'),
      'files[0].filename',
    ],
    [
      'filename path',
      (j) => ((j['files'] as Record<string, unknown>[])[0]!['filename'] = 'a/b.blob'),
      'files[0].filename',
    ],
    [
      'filename leading dot',
      (j) => ((j['files'] as Record<string, unknown>[])[0]!['filename'] = '.x.blob'),
      'files[0].filename',
    ],
    [
      'crypt-mode',
      (j) => ((j['files'] as Record<string, unknown>[])[0]!['crypt-mode'] = 'Encrypt'),
      'files[0].crypt-mode',
    ],
    [
      'crypt-mode null',
      (j) => ((j['files'] as Record<string, unknown>[])[0]!['crypt-mode'] = null),
      'files[0].crypt-mode',
    ],
    [
      'size negative',
      (j) => ((j['files'] as Record<string, unknown>[])[0]!['size'] = -1),
      'files[0].size',
    ],
    [
      'size huge',
      (j) => ((j['files'] as Record<string, unknown>[])[0]!['size'] = 2 ** 53),
      'files[0].size',
    ],
    [
      'size string',
      (j) => ((j['files'] as Record<string, unknown>[])[0]!['size'] = '5'),
      'files[0].size',
    ],
    [
      'csum uppercase',
      (j) => ((j['files'] as Record<string, unknown>[])[0]!['csum'] = 'AB'.repeat(32)),
      'files[0].csum',
    ],
    [
      'csum short',
      (j) => ((j['files'] as Record<string, unknown>[])[0]!['csum'] = '01'),
      'files[0].csum',
    ],
    ['signature short', (j) => (j['signature'] = 'abc'), 'signature'],
    ['signature number', (j) => (j['signature'] = 1), 'signature'],
    ['unprotected array', (j) => (j['unprotected'] = []), 'unprotected'],
  ];
  it.each(cases)(
    'rejects a bad %s with MANIFEST_INVALID and the field path',
    (_name, edit, path) => {
      const json = base();
      edit(json);
      expectCode(() => parseManifest(JSON.stringify(json)), 'MANIFEST_INVALID', path);
    },
  );

  it('rejects non-objects, bad JSON, bad UTF-8 and a byte order mark', () => {
    expectCode(() => parseManifest('[]'), 'MANIFEST_INVALID', '$');
    expectCode(() => parseManifest('null'), 'MANIFEST_INVALID', '$');
    expectCode(() => parseManifest('{"backup-type":'), 'MANIFEST_INVALID', '$');
    expectCode(() => parseManifest(new Uint8Array([0x7b, 0xff, 0x7d])), 'MANIFEST_INVALID', '$');
    const bom = new Uint8Array([
      0xef,
      0xbb,
      0xbf,
      ...new TextEncoder().encode(JSON.stringify(base())),
    ]);
    expectCode(() => parseManifest(bom), 'MANIFEST_INVALID', '$');
  });

  it('keeps a "__proto__" key as data', () => {
    const text = JSON.stringify(base()).replace(
      '"unprotected":{}',
      '"unprotected":{"__proto__":{"x":1}},"__proto__":5',
    );
    const m = parseManifest(text);
    expect(Object.getPrototypeOf(m.extra)).toBe(Object.prototype);
    expect(Object.keys(m.extra ?? {})).toEqual(['__proto__']);
    expect(serializeManifest(m)).toContain('"__proto__": 5');
    expect(serializeManifest(m)).toContain('"__proto__": {');
  });
});

describe('file entries', () => {
  it('blob entries hash the whole encoded blob (spec §12 "hello" blob)', () => {
    const blob = fromHex('42ab3807be8370a186a6103668656c6c6f');
    const info = blobFileInfo('hello.conf.blob', blob, 'none');
    expect(info).toEqual({
      filename: 'hello.conf.blob',
      cryptMode: 'none',
      size: 17,
      csum: '9c5944aba3379b450612203cafb5bf60c2358103550b7f799d197f4668f169d5',
    });
    expectCode(() => blobFileInfo('x.fidx', blob, 'none'), 'INVALID_ARCHIVE_NAME');
    expectCode(() => blobFileInfo('x/y.blob', blob, 'none'), 'INVALID_ARCHIVE_NAME');
  });

  it('index entries take size and csum from the index', () => {
    const csum = createHash('sha256').update('x').digest();
    expect(indexFileInfo('root.pxar.didx', { size: 10, csum }, 'encrypt')).toEqual({
      filename: 'root.pxar.didx',
      cryptMode: 'encrypt',
      size: 10,
      csum: csum.toString('hex'),
    });
    expect(indexFileInfo('d.img.fidx', { size: 0, csum: HEX64_02 }, 'none').csum).toBe(HEX64_02);
    expectCode(() => indexFileInfo('a.blob', { size: 1, csum }, 'none'), 'INVALID_ARCHIVE_NAME');
    expectCode(() => indexFileInfo('a.didx', { size: -1, csum }, 'none'), 'INVALID_ARGUMENT');
    expectCode(
      () => indexFileInfo('a.didx', { size: 1, csum: csum.subarray(1) }, 'none'),
      'INVALID_DIGEST',
    );
    expectCode(
      () => indexFileInfo('a.didx', { size: 1, csum: 'AA'.repeat(32) }, 'none'),
      'INVALID_DIGEST',
    );
  });

  it('looks files up and verifies size then checksum', () => {
    const m = specManifest();
    expect(lookupFile(m, 'abc.blob').size).toBe(200);
    expectCode(() => lookupFile(m, 'nope.blob'), 'NOT_FOUND');
    expect(() => verifyFile(m, 'abc.blob', 200, HEX64_02)).not.toThrow();
    expect(() => verifyFile(m, 'test1.img.fidx', 200, new Uint8Array(32).fill(1))).not.toThrow();
    expectCode(() => verifyFile(m, 'abc.blob', 199, HEX64_02), 'SIZE_MISMATCH');
    expectCode(() => verifyFile(m, 'abc.blob', 200, HEX64_01), 'DIGEST_MISMATCH');
    expectCode(() => verifyFile(m, 'abc.blob', 199, HEX64_01), 'SIZE_MISMATCH');
  });
});

describe('archive names', () => {
  it('types an archive by its last extension', () => {
    expect(archiveTypeOf('index.json.blob')).toBe('blob');
    expect(archiveTypeOf('drive-scsi0.img.fidx')).toBe('fixed');
    expect(archiveTypeOf('root.pxar.didx')).toBe('dynamic');
    expect(archiveTypeOf('x.didx.blob')).toBe('blob');
    for (const bad of ['root.pxar', 'blob', '.blob', 'x.blob.tmp', 'x.BLOB', '']) {
      expectCode(() => archiveTypeOf(bad), 'INVALID_ARCHIVE_NAME');
    }
  });

  it('maps client short names to server names', () => {
    const table: Array<[string, string]> = [
      ['root.pxar', 'root.pxar.didx'],
      ['root.mpxar', 'root.mpxar.didx'],
      ['root.ppxar', 'root.ppxar.didx'],
      ['catalog.pcat1', 'catalog.pcat1.didx'],
      ['drive-scsi0.img', 'drive-scsi0.img.fidx'],
      ['qemu-server.conf', 'qemu-server.conf.blob'],
      ['index.json', 'index.json.blob'],
      ['rsa-encrypted.key', 'rsa-encrypted.key.blob'],
      ['client.log', 'client.log.blob'],
      ['root.pxar.didx', 'root.pxar.didx'],
      ['x.img.fidx', 'x.img.fidx'],
      ['x.blob', 'x.blob'],
    ];
    for (const [client, server] of table) {
      expect(serverArchiveName(client)).toBe(server);
      expect(serverArchiveName(server)).toBe(server);
    }
    for (const bad of [
      'root',
      'root.tar',
      'dir/root.pxar',
      '.pxar',
      '-x.pxar',
      'x.PXAR',
      'a b.img',
      '',
    ]) {
      expectCode(() => serverArchiveName(bad), 'INVALID_ARCHIVE_NAME');
    }
  });

  it('names the reserved files', () => {
    expect([
      MANIFEST_BLOB_NAME,
      CLIENT_LOG_BLOB_NAME,
      CATALOG_NAME,
      ENCRYPTED_KEY_BLOB_NAME,
    ]).toEqual([
      'index.json.blob',
      'client.log.blob',
      'catalog.pcat1.didx',
      'rsa-encrypted.key.blob',
    ]);
  });
});

describe('round trips (properties)', () => {
  const safeId = fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,15}$/);
  const archive = fc
    .tuple(safeId, fc.constantFrom('.blob', '.fidx', '.didx'))
    .map(([a, b]) => a + b);
  const hex64 = fc
    .uint8Array({ minLength: 32, maxLength: 32 })
    .map((b) => Buffer.from(b).toString('hex'));
  const cryptMode = fc.constantFrom<CryptMode>('none', 'encrypt', 'sign-only');
  const fileInfo = fc.record({
    filename: archive,
    cryptMode,
    size: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    csum: hex64,
  });
  const text = fc.string({ unit: 'binary', maxLength: 10 });
  // Keys get a letter prefix so JSON.stringify (the oracle below) keeps our insertion order.
  const key = text.map((s) => `k${s}`);
  const jsonish = fc.letrec<{ v: unknown }>((tie) => ({
    v: fc.oneof(
      { depthSize: 'small' },
      text,
      fc.boolean(),
      fc.constant(null),
      fc.integer(),
      fc.array(tie('v'), { maxLength: 3 }),
      fc.dictionary(key, tie('v'), { maxKeys: 3 }),
    ),
  })).v;
  const manifest: fc.Arbitrary<BackupManifest> = fc.record({
    backupType: fc.constantFrom('vm' as const, 'ct' as const, 'host' as const),
    backupId: safeId,
    backupTime: fc.integer({ min: 1, max: 253402300799 }),
    files: fc.array(fileInfo, { maxLength: 4 }),
    signature: fc.option(hex64, { nil: null }),
    unprotected: fc.dictionary(key, jsonish, { maxKeys: 4 }),
  });

  const byteOrder = (a: string, b: string): number =>
    Buffer.compare(Buffer.from(a), Buffer.from(b));
  const sortDeep = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sortDeep);
    if (v !== null && typeof v === 'object') {
      const src = v as Record<string, unknown>;
      return Object.fromEntries(
        Object.keys(src)
          .sort(byteOrder)
          .map((k) => [k, sortDeep(src[k])]),
      );
    }
    return v;
  };

  it('parse(serialize(m)) equals m', () => {
    fc.assert(
      fc.property(manifest, (m) => {
        expect(parseManifest(serializeManifest(m))).toEqual(m);
      }),
      { numRuns: 200 },
    );
  });

  it('serializes with sorted keys and 2-space indentation', () => {
    fc.assert(
      fc.property(manifest, (m) => {
        const out = serializeManifest(m);
        expect(out).toBe(JSON.stringify(sortDeep(JSON.parse(out)), null, 2));
        expect(out.startsWith('{\n  "backup-id": ')).toBe(true);
        expect(out).toContain('\n  "signature": ');
      }),
      { numRuns: 200 },
    );
  });

  it('signing then verifying succeeds and keeps unprotected keys', () => {
    const crypt = new CryptConfig(new Uint8Array(32).fill(3));
    fc.assert(
      fc.property(manifest, (m) => {
        const signed = signManifest(m, crypt);
        const reread = parseManifest(serializeManifest(signed));
        expect(verifyManifest(reread, crypt).verified).toBe(true);
        for (const k of Object.keys(m.unprotected))
          expect(reread.unprotected[k]).toEqual(m.unprotected[k]);
      }),
      { numRuns: 50 },
    );
  });
});
