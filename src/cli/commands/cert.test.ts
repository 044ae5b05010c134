import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { describeCertificate, generateSelfSignedCertificate } from '../../server/certificate.js';
import { opensslTime, renderCertificateInfo } from './cert.js';

describe('cert info rendering', () => {
  it('prints times as OpenSSL does (node reports them in the same form)', async () => {
    for (const now of [Date.UTC(2024, 0, 5, 1, 2, 3), Date.UTC(2031, 10, 23, 23, 59, 59)]) {
      const generated = await generateSelfSignedCertificate({ hostname: 'h', now: new Date(now) });
      const cert = new X509Certificate(generated.certPem);
      const info = describeCertificate(generated.certPem);
      expect(opensslTime(info.notBefore)).toBe(cert.validFrom);
      expect(opensslTime(info.notAfter)).toBe(cert.validTo);
    }
    expect(opensslTime('2024-01-05T01:02:03Z')).toBe('Jan  5 01:02:03 2024 GMT');
  });

  it('lays out the fields like proxmox-backup-manager cert info', async () => {
    const generated = await generateSelfSignedCertificate({
      hostname: 'pbs.example.org',
      now: new Date(Date.UTC(2024, 0, 5, 1, 2, 3)),
    });
    const info = describeCertificate(generated.certPem);
    const lines = renderCertificateInfo(info).split('\n');
    expect(lines[0]).toBe(`Subject: ${info.subject}`);
    expect(lines.slice(1, 6)).toEqual([
      '    DNS:pbs.example.org',
      '    DNS:pbs',
      '    DNS:localhost',
      '    IP:127.0.0.1',
      '    IP:::1',
    ]);
    expect(lines.slice(6)).toEqual([
      `Issuer: ${info.subject}`,
      'Validity:',
      '    Not Before: Jan  5 01:02:03 2024 GMT',
      // 2024-01-05 + 365000 days (Python datetime): 3023-05-08.
      '    Not After : May  8 01:02:03 3023 GMT',
      `Fingerprint (sha256): ${generated.fingerprint}`,
      'Public key type: ec (prime256v1)',
      'Public key bits: 256',
    ]);
  });
});
