/**
 * `burrow-manager cert info|update`: the server's TLS certificate (`<configDir>/proxy.pem` +
 * `proxy.key`), as `proxmox-backup-manager cert` shows and renews it. Clients pin the
 * `Fingerprint (sha256)` line (pbs-protocol §2).
 */
import { Option, type Command } from 'commander';
import { BurrowError } from '../../lib/errors.js';
import {
  describeCertificate,
  generateSelfSignedCertificate,
  serverCertificatePaths,
  writeCertificateFiles,
  type CertificateInfo,
  type CertificateKeyType,
} from '../../server/certificate.js';
import { access, readFile } from 'node:fs/promises';
import { dirsOf } from '../manager-context.js';
import { outputFormatOption, printerFor } from '../run.js';

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** `Nov  6 17:49:50 2026 GMT`: how OpenSSL (and so PBS's cert info) prints certificate times. */
export function opensslTime(iso: string): string {
  const d = new Date(iso);
  const two = (n: number): string => String(n).padStart(2, '0');
  return (
    `${MONTHS[d.getUTCMonth()]} ${String(d.getUTCDate()).padStart(2, ' ')} ` +
    `${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${two(d.getUTCSeconds())} ` +
    `${d.getUTCFullYear()} GMT`
  );
}

export function renderCertificateInfo(info: CertificateInfo): string {
  return [
    `Subject: ${info.subject}`,
    ...info.subjectAltNames.map((name) => `    ${name}`),
    `Issuer: ${info.issuer}`,
    'Validity:',
    `    Not Before: ${opensslTime(info.notBefore)}`,
    `    Not After : ${opensslTime(info.notAfter)}`,
    `Fingerprint (sha256): ${info.fingerprint}`,
    `Public key type: ${info.publicKeyType}`,
    ...(info.publicKeyBits === undefined ? [] : [`Public key bits: ${info.publicKeyBits}`]),
  ].join('\n');
}

async function readCertificateFile(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT')
      throw new BurrowError(
        'NOT_FOUND',
        `no certificate at ${path}: start the server once (burrow-manager serve) or create one with burrow-manager cert update`,
        { details: { path } },
      );
    throw new BurrowError('IO_ERROR', `cannot read ${path}: ${code ?? String(error)}`, {
      details: { path, errnoName: code },
      cause: error,
    });
  }
}

export function registerCertCommands(program: Command): void {
  const cert = program.command('cert').description('manage the server TLS certificate');

  cert
    .command('info')
    .description('show the server certificate: names, validity and fingerprint')
    .addOption(outputFormatOption())
    .action(async (options: { outputFormat: string }, command: Command) => {
      const { certPath } = serverCertificatePaths(dirsOf(command));
      const info = describeCertificate(await readCertificateFile(certPath), certPath);
      printerFor(options).result(info, renderCertificateInfo);
    });

  cert
    .command('update')
    .description('create a new self-signed certificate (proxy.pem, proxy.key)')
    .option('--force', 'replace an existing certificate and key')
    .option('--hostname <name>', "the name the certificate is for (default: this host's name)")
    .addOption(
      new Option('--key-type <type>', 'key algorithm: ec (P-256) or rsa (4096 bits, as PBS)')
        .choices(['ec', 'rsa'])
        .default('ec'),
    )
    .addOption(outputFormatOption())
    .action(
      async (
        options: { force?: boolean; hostname?: string; keyType: string; outputFormat: string },
        command: Command,
      ) => {
        const paths = serverCertificatePaths(dirsOf(command));
        const printer = printerFor(options);
        const exists = await Promise.all(
          [paths.certPath, paths.keyPath].map((p) =>
            access(p).then(
              () => true,
              (error: NodeJS.ErrnoException) => error.code !== 'ENOENT',
            ),
          ),
        );
        if (exists.some(Boolean) && options.force !== true)
          throw new BurrowError(
            'ALREADY_EXISTS',
            `a certificate exists already (${paths.certPath}); use --force to replace it`,
            { details: { path: paths.certPath } },
          );
        const generated = await generateSelfSignedCertificate({
          keyType: options.keyType as CertificateKeyType,
          ...(options.hostname === undefined ? {} : { hostname: options.hostname }),
        });
        await writeCertificateFiles(paths, generated, { replace: options.force === true });
        const info = describeCertificate(generated.certPem, paths.certPath);
        printer.result({ certPath: paths.certPath, keyPath: paths.keyPath, ...info }, (i) =>
          [
            `created ${i.certPath} and ${i.keyPath}`,
            `Subject: ${i.subject}`,
            `Fingerprint (sha256): ${i.fingerprint}`,
          ].join('\n'),
        );
        printer.info(
          'a running server presents the new certificate after SIGHUP or a restart; clients that pinned the old fingerprint must be updated',
        );
      },
    );
}
