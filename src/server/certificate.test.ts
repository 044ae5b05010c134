import { spawnSync } from 'node:child_process';
import { createHash, createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { rejectionCodeOf } from '../../test/helpers/error-code.js';
import {
  certificateFingerprint,
  der,
  describeCertificate,
  generateSelfSignedCertificate,
  ipAddressBytes,
  loadCertificate,
  loadOrCreateServerCertificate,
  serverCertificatePaths,
  subjectAltNamesFor,
  writeCertificateFiles,
  type GeneratedCertificate,
} from './certificate.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function openssl(args: string[], input?: string): { status: number | null; out: string } {
  const r = spawnSync('openssl', args, { input, encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'burrow-cert-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('DER writer (X.690 examples)', () => {
  it('encodes object identifiers', () => {
    // X.690 §8.19.5 and RFC 5280's well-known encodings.
    expect(hex(der.oid('1.2.840.113549'))).toBe('06062a864886f70d');
    expect(hex(der.oid('2.5.4.3'))).toBe('0603550403');
    expect(hex(der.oid('2.999.3'))).toBe('0603883703');
    expect(hex(der.oid('1.2.840.10045.4.3.2'))).toBe('06082a8648ce3d040302');
    expect(() => der.oid('3.1')).toThrow();
    expect(() => der.oid('1.40')).toThrow();
    expect(() => der.oid('1.x')).toThrow();
  });

  it('encodes integers in minimal two’s complement (non-negative)', () => {
    expect(hex(der.integer(0))).toBe('020100');
    expect(hex(der.integer(127))).toBe('02017f');
    expect(hex(der.integer(128))).toBe('02020080');
    expect(hex(der.integer(256))).toBe('02020100');
    expect(hex(der.integer(Buffer.from([0, 0, 0x80])))).toBe('02020080');
    expect(hex(der.integer(Buffer.from([0, 0, 0x01])))).toBe('020101');
  });

  it('integers decode back to the same value and are minimal', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 200n) - 1n }), (n) => {
        const tlv = der.integer(n);
        expect(tlv[0]).toBe(0x02);
        const content = tlv.subarray(2);
        expect(tlv[1]).toBe(content.length);
        expect(BigInt(`0x${hex(content)}`)).toBe(n);
        expect((content[0] ?? 0) & 0x80).toBe(0); // not negative
        if (content.length > 1)
          expect(content[0] === 0 && ((content[1] ?? 0) & 0x80) === 0).toBe(false);
      }),
    );
  });

  it('uses short and long length forms', () => {
    expect(hex(der.octetString(Buffer.alloc(127)).subarray(0, 2))).toBe('047f');
    expect(hex(der.octetString(Buffer.alloc(200)).subarray(0, 3))).toBe('0481c8');
    expect(hex(der.octetString(Buffer.alloc(300)).subarray(0, 4))).toBe('0482012c');
    expect(hex(der.octetString(Buffer.alloc(70000)).subarray(0, 5))).toBe('0483011170');
  });

  it('encodes the simple types and context tags', () => {
    expect(hex(der.boolean(true))).toBe('0101ff');
    expect(hex(der.null())).toBe('0500');
    expect(hex(der.sequence())).toBe('3000');
    expect(hex(der.utf8String('ä'))).toBe('0c02c3a4');
    expect(hex(der.bitString(Buffer.from([0x80]), 7))).toBe('03020780');
    expect(hex(der.explicit(0, der.integer(2)))).toBe('a003020102');
    expect(hex(der.implicitPrimitive(2, Buffer.from('a')))).toBe('820161');
  });

  it('switches from UTCTime to GeneralizedTime in 2050 (RFC 5280 §4.1.2.5)', () => {
    expect(der.time(new Date(Date.UTC(2049, 11, 31, 23, 59, 59))).toString('latin1')).toBe(
      '\x17\x0d491231235959Z',
    );
    expect(der.time(new Date(Date.UTC(1950, 0, 2, 3, 4, 5))).toString('latin1')).toBe(
      '\x17\x0d500102030405Z',
    );
    expect(der.time(new Date(Date.UTC(2050, 0, 1, 0, 0, 0))).toString('latin1')).toBe(
      '\x18\x0f20500101000000Z',
    );
    expect(der.time(new Date(Date.UTC(3025, 5, 7, 8, 9, 10))).toString('latin1')).toBe(
      '\x18\x0f30250607080910Z',
    );
  });
});

describe('ipAddressBytes', () => {
  it('gives the 4 or 16 address bytes', () => {
    expect(hex(ipAddressBytes('127.0.0.1'))).toBe('7f000001');
    expect(hex(ipAddressBytes('::1'))).toBe('00000000000000000000000000000001');
    expect(hex(ipAddressBytes('::'))).toBe('00000000000000000000000000000000');
    // RFC 4291 §2.2 example.
    expect(hex(ipAddressBytes('2001:DB8:0:0:8:800:200C:417A'))).toBe(
      '20010db8000000000008080020 0c417a'.replace(' ', ''),
    );
    expect(hex(ipAddressBytes('2001:db8::8:800:200c:417a'))).toBe(
      '20010db80000000000080800200c417a',
    );
    expect(hex(ipAddressBytes('fe80::'))).toBe('fe800000000000000000000000000000');
    expect(hex(ipAddressBytes('::ffff:192.0.2.1'))).toBe('00000000000000000000ffffc0000201');
    expect(() => ipAddressBytes('host')).toThrow();
  });
});

describe('subjectAltNamesFor', () => {
  it('covers the name, its first label, localhost and the loopback addresses', () => {
    expect(subjectAltNamesFor('pbs.example.org')).toEqual({
      dns: ['pbs.example.org', 'pbs', 'localhost'],
      ip: ['127.0.0.1', '::1'],
    });
    expect(subjectAltNamesFor('localhost')).toEqual({
      dns: ['localhost'],
      ip: ['127.0.0.1', '::1'],
    });
    expect(subjectAltNamesFor('192.0.2.7')).toEqual({
      dns: ['localhost'],
      ip: ['192.0.2.7', '127.0.0.1', '::1'],
    });
  });
});

describe('generateSelfSignedCertificate (EC P-256)', () => {
  let generated: GeneratedCertificate;
  let cert: X509Certificate;
  const now = new Date(Date.UTC(2024, 5, 5, 12, 0, 0));
  beforeAll(async () => {
    generated = await generateSelfSignedCertificate({ hostname: 'pbs.example.org', now });
    cert = new X509Certificate(generated.certPem);
  });

  it('is a self-signed server certificate that node:crypto accepts', () => {
    expect(cert.verify(cert.publicKey)).toBe(true);
    expect(cert.checkPrivateKey(createPrivateKey(generated.keyPem))).toBe(true);
    expect(cert.ca).toBe(false);
    expect(cert.subject).toBe(cert.issuer);
    expect(cert.subject).toMatch(/^O=Burrow\nOU=[0-9A-F]{32}\nCN=pbs\.example\.org$/);
    expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    // A positive serial of 16 bytes.
    expect(cert.serialNumber).toMatch(/^[0-7][0-9A-F]{31}$/);
  });

  it('is valid for 365000 days from now (as PBS)', () => {
    expect(new Date(cert.validFrom).getTime()).toBe(now.getTime());
    expect(new Date(cert.validTo).getTime() - now.getTime()).toBe(365_000 * 86_400_000);
  });

  it('names the host, localhost and the loopback addresses', () => {
    expect(cert.checkHost('pbs.example.org')).toBe('pbs.example.org');
    expect(cert.checkHost('pbs')).toBe('pbs');
    expect(cert.checkHost('localhost')).toBe('localhost');
    expect(cert.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(cert.checkIP('::1')).toBe('::1');
    expect(cert.checkHost('other.example.org')).toBeUndefined();
    expect(cert.checkIP('192.0.2.1')).toBeUndefined();
  });

  it('has the fingerprint of its DER, as certificateFingerprint and node compute it', () => {
    const expected = createHash('sha256')
      .update(cert.raw)
      .digest('hex')
      .replace(/(..)(?!$)/g, '$1:');
    expect(generated.fingerprint).toBe(expected);
    expect(generated.fingerprint).toBe(cert.fingerprint256.toLowerCase());
    expect(certificateFingerprint(generated.certPem)).toBe(expected);
    expect(generated.fingerprint).toMatch(/^([0-9a-f]{2}:){31}[0-9a-f]{2}$/);
  });

  it('is what openssl reads and verifies', () => {
    const text = openssl(['x509', '-noout', '-text'], generated.certPem);
    expect(text.status).toBe(0);
    expect(text.out).toContain('Version: 3 (0x2)');
    expect(text.out).toContain('Signature Algorithm: ecdsa-with-SHA256');
    expect(text.out).toMatch(/Basic Constraints: critical\s+CA:FALSE/);
    expect(text.out).toMatch(/Key Usage: critical\s+Digital Signature\n/);
    expect(text.out).toMatch(/Extended Key Usage:\s*\n\s+TLS Web Server Authentication/);
    expect(text.out).toContain(
      'DNS:pbs.example.org, DNS:pbs, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1',
    );
    // 2024-06-05 + 365000 days, computed with Python's datetime.
    expect(text.out).toContain('Not After : Oct  7 12:00:00 3023 GMT');
    // Key ids: RFC 5280 method 1, the same in both extensions.
    const ski = /Subject Key Identifier:\s*\n\s+([0-9A-F:]+)/.exec(text.out)?.[1];
    const aki = /Authority Key Identifier:\s*\n\s+(?:keyid:)?([0-9A-F:]+)/.exec(text.out)?.[1];
    expect(ski).toBeDefined();
    expect(aki).toBe(ski);
    const spki = createPublicKey(generated.keyPem).export({ type: 'spki', format: 'der' });
    // The P-256 SPKI ends with the 65-byte uncompressed point.
    const point = spki.subarray(spki.length - 65);
    expect(ski?.replace(/:/g, '').toLowerCase()).toBe(
      createHash('sha1').update(point).digest('hex'),
    );

    const certFile = join(dir, 'c.pem');
    return writeFile(certFile, generated.certPem).then(() => {
      const verify = openssl(['verify', '-CAfile', certFile, certFile]);
      expect(verify.out.trim()).toBe(`${certFile}: OK`);
      const fp = openssl(['x509', '-noout', '-fingerprint', '-sha256', '-in', certFile]);
      expect(fp.out.trim().toLowerCase()).toBe(`sha256 fingerprint=${generated.fingerprint}`);
    });
  });

  it('makes a new key, serial and subject every time', async () => {
    const other = await generateSelfSignedCertificate({ hostname: 'pbs.example.org', now });
    const otherCert = new X509Certificate(other.certPem);
    expect(other.fingerprint).not.toBe(generated.fingerprint);
    expect(otherCert.serialNumber).not.toBe(cert.serialNumber);
    expect(otherCert.subject).not.toBe(cert.subject);
    expect(other.keyPem).not.toBe(generated.keyPem);
  });
});

describe('generateSelfSignedCertificate (other choices)', () => {
  it('signs with sha256WithRSAEncryption for RSA keys', async () => {
    const rsa = await generateSelfSignedCertificate({
      hostname: 'h',
      keyType: 'rsa',
      rsaBits: 2048,
    });
    const cert = new X509Certificate(rsa.certPem);
    expect(cert.verify(cert.publicKey)).toBe(true);
    expect(cert.publicKey.asymmetricKeyDetails?.modulusLength).toBe(2048);
    const text = openssl(['x509', '-noout', '-text'], rsa.certPem);
    expect(text.out).toContain('Signature Algorithm: sha256WithRSAEncryption');
    expect(text.out).toMatch(/Key Usage: critical\s+Digital Signature, Key Encipherment/);
    const file = join(dir, 'rsa.pem');
    await writeFile(file, rsa.certPem);
    expect(openssl(['verify', '-CAfile', file, file]).out.trim()).toBe(`${file}: OK`);
  });

  it('puts an IP address host name into an IP entry', async () => {
    const generated = await generateSelfSignedCertificate({ hostname: '192.0.2.10' });
    const cert = new X509Certificate(generated.certPem);
    expect(cert.checkIP('192.0.2.10')).toBe('192.0.2.10');
    expect(cert.subject).toContain('CN=192.0.2.10');
    expect(cert.subjectAltName).not.toContain('DNS:192.0.2.10');
  });

  it('writes UTCTime for a certificate that ends before 2050', async () => {
    const generated = await generateSelfSignedCertificate({
      hostname: 'h',
      now: new Date(Date.UTC(2000, 0, 1)),
      validityDays: 2,
    });
    const cert = new X509Certificate(generated.certPem);
    expect(cert.validFrom).toBe('Jan  1 00:00:00 2000 GMT');
    expect(cert.validTo).toBe('Jan  3 00:00:00 2000 GMT');
    const parsed = openssl(['asn1parse'], generated.certPem).out;
    expect(parsed).toContain('UTCTIME           :000101000000Z');
  });

  it('refuses bad host names and weak RSA keys', async () => {
    for (const hostname of [
      '',
      'bad host',
      'a..b',
      'ünicode.example',
      '-lead',
      `${'a'.repeat(64)}.x`,
    ])
      expect(await rejectionCodeOf(generateSelfSignedCertificate({ hostname }))).toBe(
        'INVALID_ARGUMENT',
      );
    expect(
      await rejectionCodeOf(
        generateSelfSignedCertificate({ hostname: 'h', keyType: 'rsa', rsaBits: 1024 }),
      ),
    ).toBe('INVALID_ARGUMENT');
  });
});

describe('certificateFingerprint and describeCertificate', () => {
  it('takes the leaf (first) certificate of a chain', async () => {
    const a = await generateSelfSignedCertificate({ hostname: 'a' });
    const b = await generateSelfSignedCertificate({ hostname: 'b' });
    expect(certificateFingerprint(a.certPem + b.certPem)).toBe(a.fingerprint);
    expect(certificateFingerprint(b.certPem + a.certPem)).toBe(b.fingerprint);
  });

  it('refuses text that holds no certificate', () => {
    expect(() => certificateFingerprint('hello')).toThrow(/no PEM certificate/);
    expect(() =>
      certificateFingerprint('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'),
    ).toThrow(/invalid certificate/);
  });

  it('describes names, validity, key and fingerprint', async () => {
    const generated = await generateSelfSignedCertificate({
      hostname: 'pbs.example.org',
      now: new Date(Date.UTC(2024, 0, 2, 3, 4, 5)),
    });
    const info = describeCertificate(generated.certPem);
    expect(info.subject).toMatch(/^O=Burrow, OU=[0-9A-F]{32}, CN=pbs\.example\.org$/);
    expect(info.issuer).toBe(info.subject);
    expect(info.notBefore).toBe('2024-01-02T03:04:05Z');
    expect(info.notAfter).toBe(
      new Date(Date.UTC(2024, 0, 2, 3, 4, 5) + 365_000 * 86_400_000)
        .toISOString()
        .replace('.000Z', 'Z'),
    );
    expect(info.subjectAltNames).toEqual([
      'DNS:pbs.example.org',
      'DNS:pbs',
      'DNS:localhost',
      'IP:127.0.0.1',
      'IP:::1',
    ]);
    expect(info.fingerprint).toBe(
      new X509Certificate(generated.certPem).fingerprint256.toLowerCase(),
    );
    expect(info.publicKeyType).toBe('ec (prime256v1)');
    expect(info.publicKeyBits).toBe(256);
    expect(info.selfSigned).toBe(true);
  });
});

describe('loadOrCreateServerCertificate', () => {
  it('creates proxy.pem and proxy.key on first use and loads them afterwards', async () => {
    const configDir = join(dir, 'etc');
    const first = await loadOrCreateServerCertificate({ configDir }, { hostname: 'first.example' });
    expect(first.created).toBe(true);
    expect(first.certPath).toBe(join(configDir, 'proxy.pem'));
    expect(first.keyPath).toBe(join(configDir, 'proxy.key'));
    expect((await stat(first.keyPath)).mode & 0o777).toBe(0o600);
    expect((await stat(first.certPath)).mode & 0o777).toBe(0o640);
    expect(await readFile(first.certPath, 'utf8')).toBe(first.certPem);
    expect(new X509Certificate(first.certPem).checkHost('first.example')).toBe('first.example');

    const again = await loadOrCreateServerCertificate({ configDir }, { hostname: 'other' });
    expect(again.created).toBe(false);
    expect(again.fingerprint).toBe(first.fingerprint);
    expect(again.keyPem).toBe(first.keyPem);
  });

  it('makes one pair when two callers start at the same time', async () => {
    const configDir = join(dir, 'etc');
    const [a, b] = await Promise.all([
      loadOrCreateServerCertificate({ configDir }, { hostname: 'h' }),
      loadOrCreateServerCertificate({ configDir }, { hostname: 'h' }),
    ]);
    expect([a.created, b.created].sort()).toEqual([false, true]);
    expect(a.fingerprint).toBe(b.fingerprint);
    expect(certificateFingerprint(await readFile(join(configDir, 'proxy.pem'), 'utf8'))).toBe(
      a.fingerprint,
    );
  });

  it('never replaces half a pair or a key that does not match', async () => {
    const configDir = dir;
    const paths = serverCertificatePaths({ configDir });
    const one = await generateSelfSignedCertificate({ hostname: 'h' });
    const two = await generateSelfSignedCertificate({ hostname: 'h' });

    await writeFile(paths.certPath, one.certPem);
    const missingKey = loadOrCreateServerCertificate({ configDir });
    await expect(missingKey).rejects.toThrow(/proxy\.key is missing but .*proxy\.pem exists/);
    expect(await readFile(paths.certPath, 'utf8')).toBe(one.certPem);

    await writeFile(paths.keyPath, two.keyPem);
    const mismatch = loadOrCreateServerCertificate({ configDir });
    expect(await rejectionCodeOf(mismatch)).toBe('INVALID_ARGUMENT');
    await expect(loadCertificate(paths)).rejects.toThrow(/does not belong to the certificate/);

    await writeFile(paths.keyPath, 'not a key');
    await expect(loadCertificate(paths)).rejects.toThrow(/invalid private key in .*proxy\.key/);
  });

  it('uses named files as they are and never creates them', async () => {
    const generated = await generateSelfSignedCertificate({ hostname: 'named' });
    const certPath = join(dir, 'my.crt');
    const keyPath = join(dir, 'my.key');
    expect(
      await rejectionCodeOf(
        loadOrCreateServerCertificate({ configDir: dir }, { certPath, keyPath }),
      ),
    ).toBe('NOT_FOUND');
    await expect(stat(certPath)).rejects.toThrow();
    await expect(stat(join(dir, 'proxy.pem'))).rejects.toThrow();

    await writeFile(certPath, generated.certPem);
    await writeFile(keyPath, generated.keyPem);
    const loaded = await loadOrCreateServerCertificate({ configDir: dir }, { certPath, keyPath });
    expect(loaded).toMatchObject({ created: false, fingerprint: generated.fingerprint, certPath });
    expect(
      await rejectionCodeOf(loadOrCreateServerCertificate({ configDir: dir }, { certPath })),
    ).toBe('INVALID_ARGUMENT');
  });
});

describe('writeCertificateFiles', () => {
  it('refuses to replace without `replace`, replaces atomically with it', async () => {
    const paths = serverCertificatePaths({ configDir: dir });
    const one = await generateSelfSignedCertificate({ hostname: 'h' });
    const two = await generateSelfSignedCertificate({ hostname: 'h' });
    await writeCertificateFiles(paths, one);
    expect(await rejectionCodeOf(writeCertificateFiles(paths, two))).toBe('ALREADY_EXISTS');
    expect(await readFile(paths.keyPath, 'utf8')).toBe(one.keyPem);
    await writeCertificateFiles(paths, two, { replace: true });
    expect(await readFile(paths.certPath, 'utf8')).toBe(two.certPem);
    expect(await readFile(paths.keyPath, 'utf8')).toBe(two.keyPem);
    expect((await stat(paths.keyPath)).mode & 0o777).toBe(0o600);
    const left = (await import('node:fs/promises').then((fs) => fs.readdir(dir))).sort();
    expect(left).toEqual(['proxy.key', 'proxy.pem']);
  });
});
