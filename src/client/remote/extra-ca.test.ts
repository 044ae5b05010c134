import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFERRED_EXTRA_CA_ENV } from './env-names.js';
import { deferredExtraCa } from './extra-ca.js';

let dir: string | undefined;
afterEach(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

const PEM = '-----BEGIN CERTIFICATE-----\nnot checked here\n-----END CERTIFICATE-----\n';

describe('deferredExtraCa', () => {
  it('leaves the trust anchors to Node when the bin deferred nothing', () => {
    const warnings: string[] = [];
    expect(deferredExtraCa({}, (m) => warnings.push(m))).toBeUndefined();
    expect(deferredExtraCa({ [DEFERRED_EXTRA_CA_ENV]: '' }, (m) => warnings.push(m))).toBe(
      undefined,
    );
    // NODE_EXTRA_CA_CERTS itself is Node's business: it loaded that file at start.
    expect(deferredExtraCa({ NODE_EXTRA_CA_CERTS: '/x' }, (m) => warnings.push(m))).toBe(undefined);
    expect(warnings).toEqual([]);
  });

  it("trusts Node's roots and the file's certificates, as Node would have", () => {
    dir = mkdtempSync(join(tmpdir(), 'burrow-extra-ca-'));
    const file = join(dir, 'extra ca.pem');
    writeFileSync(file, PEM);
    const ca = deferredExtraCa({ [DEFERRED_EXTRA_CA_ENV]: file }, () => {
      throw new Error('no warning expected');
    });
    expect(ca).toHaveLength(rootCertificates.length + 1);
    expect(ca!.slice(0, -1)).toEqual([...rootCertificates]);
    expect(ca!.at(-1)).toBe(PEM);
  });

  it('warns about a file it cannot read and keeps the default anchors', () => {
    dir = mkdtempSync(join(tmpdir(), 'burrow-extra-ca-'));
    const missing = join(dir, 'missing.pem');
    const warnings: string[] = [];
    expect(deferredExtraCa({ [DEFERRED_EXTRA_CA_ENV]: missing }, (m) => warnings.push(m))).toBe(
      undefined,
    );
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('NODE_EXTRA_CA_CERTS');
    expect(warnings[0]).toContain(missing);
    expect(warnings[0]).toContain('ENOENT');
  });
});
