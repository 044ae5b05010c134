/**
 * The server's TLS certificate. Like PBS, Burrow creates a self-signed certificate on first start
 * (`<configDir>/proxy.pem` + `proxy.key`) and clients pin its SHA-256 fingerprint (pbs-protocol
 * §2). node:crypto can make keys and signatures but not certificates, and we add no dependency
 * for it: the X.509 v3 structure is written here with a small DER writer (RFC 5280, X.690).
 *
 * The key is ECDSA P-256 by default (PBS uses RSA 4096; `keyType: 'rsa'` gives that): the key is
 * made in milliseconds instead of seconds, a handshake signature costs a fraction of an RSA 4096
 * one, and the strength is about the same. Clients do not care: they pin the fingerprint of the
 * whole certificate, whatever key is inside, and every TLS 1.2/1.3 client supports P-256.
 */
import {
  createHash,
  createPrivateKey,
  generateKeyPair,
  randomBytes,
  randomUUID,
  sign,
  X509Certificate,
  type KeyObject,
} from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { hostname as osHostname } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fsyncDirectory, writeFileAtomic } from '../lib/atomic-write.js';
import type { BurrowDirs } from '../lib/dirs.js';
import { BurrowError, isBurrowError } from '../lib/errors.js';
import { writeNewFile } from './new-file.js';

// ---------------------------------------------------------------------------------------------
// DER writer (X.690): just the types a certificate needs. Every function returns a whole TLV.

function derLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag: number, content: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([tag]), derLength(content.length), content]);
}

/** Two's-complement big-endian bytes of a non-negative integer, in the minimal DER form. */
function unsignedIntegerBytes(value: Uint8Array | bigint | number): Buffer {
  let bytes: Buffer;
  if (typeof value === 'bigint' || typeof value === 'number') {
    let n = BigInt(value);
    if (n < 0n) throw new BurrowError('INVALID_ARGUMENT', 'DER integer must not be negative');
    const out: number[] = [];
    do {
      out.unshift(Number(n & 0xffn));
      n >>= 8n;
    } while (n > 0n);
    bytes = Buffer.from(out);
  } else {
    bytes = Buffer.from(value);
  }
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  bytes = bytes.subarray(start);
  if (bytes.length === 0) return Buffer.from([0]);
  // A set top bit would read as negative: unsigned values get a leading zero byte.
  return (bytes[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), bytes]) : bytes;
}

function oidContent(text: string): Buffer {
  const arcs = text.split('.').map((part) => {
    if (!/^\d+$/.test(part)) throw new BurrowError('INVALID_ARGUMENT', `bad OID ${text}`);
    return BigInt(part);
  });
  const [first, second, ...rest] = arcs;
  if (first === undefined || second === undefined || first > 2n || (first < 2n && second > 39n))
    throw new BurrowError('INVALID_ARGUMENT', `bad OID ${text}`);
  const out: number[] = [];
  for (const arc of [first * 40n + second, ...rest]) {
    // Base 128, most significant group first, bit 8 set on all but the last byte.
    const groups: number[] = [Number(arc & 0x7fn)];
    for (let n = arc >> 7n; n > 0n; n >>= 7n) groups.unshift(Number(n & 0x7fn) | 0x80);
    out.push(...groups);
  }
  return Buffer.from(out);
}

function pad2(n: number): string {
  return String(n).padStart(2, '0');
}

/** The DER writer, exported for its tests. */
export const der = {
  sequence: (...items: Uint8Array[]): Buffer => tlv(0x30, Buffer.concat(items)),
  set: (...items: Uint8Array[]): Buffer => tlv(0x31, Buffer.concat(items)),
  boolean: (value: boolean): Buffer => tlv(0x01, Buffer.from([value ? 0xff : 0x00])),
  integer: (value: Uint8Array | bigint | number): Buffer => tlv(0x02, unsignedIntegerBytes(value)),
  bitString: (bytes: Uint8Array, unusedBits = 0): Buffer =>
    tlv(0x03, Buffer.concat([Buffer.from([unusedBits]), bytes])),
  octetString: (bytes: Uint8Array): Buffer => tlv(0x04, bytes),
  null: (): Buffer => Buffer.from([0x05, 0x00]),
  oid: (text: string): Buffer => tlv(0x06, oidContent(text)),
  utf8String: (text: string): Buffer => tlv(0x0c, Buffer.from(text, 'utf8')),
  /**
   * RFC 5280 §4.1.2.5: UTCTime for the years 1950 to 2049, GeneralizedTime otherwise; both in
   * UTC with seconds and no fraction.
   */
  time(date: Date): Buffer {
    const year = date.getUTCFullYear();
    if (year < 0 || year > 9999)
      throw new BurrowError('INVALID_ARGUMENT', `certificate time out of range: year ${year}`);
    const rest =
      pad2(date.getUTCMonth() + 1) +
      pad2(date.getUTCDate()) +
      pad2(date.getUTCHours()) +
      pad2(date.getUTCMinutes()) +
      pad2(date.getUTCSeconds()) +
      'Z';
    return year >= 1950 && year < 2050
      ? tlv(0x17, Buffer.from(pad2(year % 100) + rest, 'ascii'))
      : tlv(0x18, Buffer.from(String(year).padStart(4, '0') + rest, 'ascii'));
  },
  /** `[n] EXPLICIT`: a constructed context tag around a whole TLV. */
  explicit: (tagNumber: number, inner: Uint8Array): Buffer => tlv(0xa0 | tagNumber, inner),
  /** `[n] IMPLICIT` of a primitive type: the context tag replaces the type's tag. */
  implicitPrimitive: (tagNumber: number, content: Uint8Array): Buffer =>
    tlv(0x80 | tagNumber, content),
};

// ---------------------------------------------------------------------------------------------
// The certificate.

const OID = {
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  organizationalUnit: '2.5.4.11',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  sha256WithRsa: '1.2.840.113549.1.1.11',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
} as const;

/** PBS's self-signed certificates are valid for 365 × 1000 days from the day they are made. */
export const SELF_SIGNED_VALIDITY_DAYS = 365 * 1000;
export const CERTIFICATE_ORGANIZATION = 'Burrow';
export const CERT_FILE_NAME = 'proxy.pem';
export const KEY_FILE_NAME = 'proxy.key';
const KEY_FILE_MODE = 0o600;
const CERT_FILE_MODE = 0o640;

export type CertificateKeyType = 'ec' | 'rsa';

export interface SelfSignedOptions {
  /**
   * The name the certificate is for (CN and a DNS name, or an IP address). Default: this host's
   * fully qualified name as PBS forms it (host name, plus the resolv.conf search domain when the
   * host name has no dot).
   */
  hostname?: string;
  /** 'ec' (P-256, ecdsa-with-SHA256; default) or 'rsa' (sha256WithRSAEncryption). */
  keyType?: CertificateKeyType;
  /** RSA modulus size; default 4096 as in PBS. */
  rsaBits?: number;
  /** Start of validity; default now. */
  now?: Date;
  validityDays?: number;
}

export interface GeneratedCertificate {
  certPem: string;
  /** PKCS#8 PEM, unencrypted (the daemon must start unattended). */
  keyPem: string;
  fingerprint: string;
}

function pem(label: string, der: Uint8Array): string {
  const base64 = Buffer.from(der).toString('base64');
  const lines = base64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

function name(hostname: string, unit: string): Buffer {
  const rdn = (oid: string, value: string): Buffer =>
    der.set(der.sequence(der.oid(oid), der.utf8String(value)));
  return der.sequence(
    rdn(OID.organization, CERTIFICATE_ORGANIZATION),
    rdn(OID.organizationalUnit, unit),
    rdn(OID.commonName, hostname),
  );
}

function extension(oid: string, critical: boolean, value: Uint8Array): Buffer {
  return critical
    ? der.sequence(der.oid(oid), der.boolean(true), der.octetString(value))
    : der.sequence(der.oid(oid), der.octetString(value));
}

/** An IPv4 or IPv6 address as the 4 or 16 bytes of a SAN iPAddress. */
export function ipAddressBytes(address: string): Buffer {
  const family = isIP(address);
  if (family === 4) return Buffer.from(address.split('.').map(Number));
  if (family !== 6) throw new BurrowError('INVALID_ARGUMENT', `not an IP address: ${address}`);
  let text = address;
  let tail: number[] = [];
  // An embedded IPv4 tail (::ffff:1.2.3.4) is the last two groups.
  const v4 = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4 !== null) {
    tail = (v4[2] ?? '').split('.').map(Number);
    text = `${v4[1] ?? ''}0:0`;
  }
  const [head = '', rest] = text.split('::');
  const parse = (part: string): number[] =>
    part === '' ? [] : part.split(':').map((g) => parseInt(g, 16));
  const left = parse(head);
  const right = rest === undefined ? [] : parse(rest);
  const groups = [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  if (tail.length === 4) Buffer.from(tail).copy(out, 12);
  return out;
}

const HOSTNAME_RE =
  /^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*$/;

/** The first `search` domain of /etc/resolv.conf (PBS appends it to the node name), if any. */
function searchDomain(): string | undefined {
  try {
    const text = readFileSync('/etc/resolv.conf', 'utf8');
    const match = /^\s*search\s+(\S+)/m.exec(text);
    return match?.[1];
  } catch {
    return undefined;
  }
}

/** This host's name as PBS puts it in its certificate: `<node>` or `<node>.<search domain>`. */
export function defaultCertificateHostname(): string {
  const host = osHostname();
  if (host.includes('.')) return host;
  const domain = searchDomain();
  return domain === undefined || !HOSTNAME_RE.test(`${host}.${domain}`)
    ? host
    : `${host}.${domain}`;
}

/** The names a certificate for `hostname` covers, as PBS chooses them: the name, its first label, localhost, loopback IPs. */
export function subjectAltNamesFor(hostname: string): { dns: string[]; ip: string[] } {
  const dns: string[] = [];
  const ip: string[] = [];
  const add = (list: string[], value: string): void => {
    if (!list.some((v) => v.toLowerCase() === value.toLowerCase())) list.push(value);
  };
  if (isIP(hostname) !== 0) add(ip, hostname);
  else {
    add(dns, hostname);
    add(dns, hostname.split('.')[0] ?? hostname);
  }
  add(dns, 'localhost');
  add(ip, '127.0.0.1');
  add(ip, '::1');
  return { dns, ip };
}

const generateKeyPairAsync = promisify(generateKeyPair);

async function makeKeyPair(
  keyType: CertificateKeyType,
  rsaBits: number,
): Promise<{ privateKey: KeyObject; publicKey: KeyObject }> {
  // Async: an RSA 4096 key takes seconds and must not stall a running server's event loop.
  return keyType === 'rsa'
    ? generateKeyPairAsync('rsa', { modulusLength: rsaBits })
    : generateKeyPairAsync('ec', { namedCurve: 'P-256' });
}

/** Build and sign a self-signed X.509 v3 server certificate with a new key. */
export async function generateSelfSignedCertificate(
  options: SelfSignedOptions = {},
): Promise<GeneratedCertificate> {
  const hostname = options.hostname ?? defaultCertificateHostname();
  if (isIP(hostname) === 0 && !HOSTNAME_RE.test(hostname))
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `invalid host name for a certificate: ${JSON.stringify(hostname)}`,
      { details: { hostname } },
    );
  const keyType = options.keyType ?? 'ec';
  const rsaBits = options.rsaBits ?? 4096;
  if (keyType === 'rsa' && (!Number.isInteger(rsaBits) || rsaBits < 2048))
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `RSA key size must be an integer ≥ 2048, got ${rsaBits}`,
    );
  const validityDays = options.validityDays ?? SELF_SIGNED_VALIDITY_DAYS;
  const notBefore = new Date(Math.floor((options.now ?? new Date()).getTime() / 1000) * 1000);
  const notAfter = new Date(notBefore.getTime() + validityDays * 86_400_000);

  const { privateKey, publicKey } = await makeKeyPair(keyType, rsaBits);
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  // RFC 5280 §4.2.1.2 method 1: the key id is the SHA-1 of the subjectPublicKey bits (the EC
  // point or the RSAPublicKey), as OpenSSL computes it, so tools show matching ids.
  const keyId = createHash('sha1').update(subjectPublicKeyBits(spki)).digest();

  // 16 random bytes, top bit clear (positive) and the next set (minimal encoding, no leading 0).
  const serial = randomBytes(16);
  serial[0] = ((serial[0] ?? 0) & 0x7f) | 0x40;
  // A unique subject as PBS makes it (OU = a fresh UUID): browsers that remember an older
  // certificate with the same issuer and serial would otherwise refuse the new one.
  const unit = randomUUID().replace(/-/g, '').toUpperCase();
  const subject = name(hostname, unit);
  const signatureAlgorithm =
    keyType === 'rsa'
      ? der.sequence(der.oid(OID.sha256WithRsa), der.null())
      : der.sequence(der.oid(OID.ecdsaWithSha256));

  const sans = subjectAltNamesFor(hostname);
  const generalNames = der.sequence(
    ...sans.dns.map((d) => der.implicitPrimitive(2, Buffer.from(d, 'ascii'))),
    ...sans.ip.map((a) => der.implicitPrimitive(7, ipAddressBytes(a))),
  );
  // digitalSignature (bit 0); RSA also keyEncipherment (bit 2) for TLS 1.2 RSA key exchange.
  const keyUsage =
    keyType === 'rsa'
      ? der.bitString(Buffer.from([0xa0]), 5)
      : der.bitString(Buffer.from([0x80]), 7);
  const extensions = der.sequence(
    extension(OID.basicConstraints, true, der.sequence()),
    extension(OID.keyUsage, true, keyUsage),
    extension(OID.extKeyUsage, false, der.sequence(der.oid(OID.serverAuth))),
    extension(OID.subjectAltName, false, generalNames),
    extension(OID.subjectKeyIdentifier, false, der.octetString(keyId)),
    extension(OID.authorityKeyIdentifier, false, der.sequence(der.implicitPrimitive(0, keyId))),
  );

  const tbs = der.sequence(
    der.explicit(0, der.integer(2)),
    der.integer(serial),
    signatureAlgorithm,
    subject,
    der.sequence(der.time(notBefore), der.time(notAfter)),
    subject,
    spki,
    der.explicit(3, extensions),
  );
  // node:crypto gives ECDSA signatures DER-encoded (r, s), which is what X.509 wants.
  const signature = sign('sha256', tbs, privateKey);
  const certDer = der.sequence(tbs, signatureAlgorithm, der.bitString(signature));
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  return { certPem: pem('CERTIFICATE', certDer), keyPem, fingerprint: fingerprintOfDer(certDer) };
}

/**
 * The contents of the subjectPublicKey BIT STRING (without its unused-bits byte) of a DER
 * SubjectPublicKeyInfo: SEQUENCE { AlgorithmIdentifier, BIT STRING }.
 */
function subjectPublicKeyBits(spki: Buffer): Buffer {
  const readHeader = (offset: number): { tag: number; start: number; end: number } => {
    const tag = spki[offset];
    const first = spki[offset + 1];
    if (tag === undefined || first === undefined) throw badSpki();
    let length = first;
    let start = offset + 2;
    if (first & 0x80) {
      const count = first & 0x7f;
      length = 0;
      for (let i = 0; i < count; i++) length = length * 256 + (spki[start + i] ?? 0);
      start += count;
    }
    if (start + length > spki.length) throw badSpki();
    return { tag, start, end: start + length };
  };
  const outer = readHeader(0);
  const algorithm = readHeader(outer.start);
  const bits = readHeader(algorithm.end);
  if (outer.tag !== 0x30 || algorithm.tag !== 0x30 || bits.tag !== 0x03) throw badSpki();
  return spki.subarray(bits.start + 1, bits.end);
}

function badSpki(): BurrowError {
  return new BurrowError('INTERNAL', 'node:crypto exported an unexpected SubjectPublicKeyInfo');
}

// ---------------------------------------------------------------------------------------------
// Fingerprints and inspection.

function colonHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(':');
}

function fingerprintOfDer(certDer: Uint8Array): string {
  return colonHex(createHash('sha256').update(certDer).digest());
}

/** The first certificate of a PEM text (the leaf of a chain), or an error naming `source`. */
function parseLeaf(pemText: string, source?: string): X509Certificate {
  const block = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/.exec(pemText);
  const where = source === undefined ? '' : ` in ${source}`;
  if (block === null)
    throw new BurrowError('INVALID_ARGUMENT', `no PEM certificate found${where}`, {
      details: source === undefined ? {} : { path: source },
    });
  try {
    return new X509Certificate(block[0]);
  } catch (error) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `invalid certificate${where}: ${error instanceof Error ? error.message : String(error)}`,
      { details: source === undefined ? {} : { path: source }, cause: error },
    );
  }
}

/**
 * SHA-256 of the DER of the leaf (first) certificate in `pemText`, as 32 lowercase hex bytes
 * joined by `:` (pbs-protocol §2): what clients pin and `cert info` prints.
 */
export function certificateFingerprint(pemText: string): string {
  return fingerprintOfDer(parseLeaf(pemText).raw);
}

export interface CertificateInfo {
  subject: string;
  issuer: string;
  /** RFC 3339 UTC. */
  notBefore: string;
  notAfter: string;
  /** `DNS:name` / `IP:address` entries, in certificate order. */
  subjectAltNames: string[];
  fingerprint: string;
  publicKeyType: string;
  publicKeyBits?: number;
  serial: string;
  selfSigned: boolean;
}

/** Node writes distinguished names one attribute per line (`O=Burrow\nCN=host`). */
function oneLineName(text: string): string {
  return text
    .split('\n')
    .filter((l) => l !== '')
    .join(', ');
}

function parseSubjectAltNames(text: string | undefined): string[] {
  if (text === undefined || text === '') return [];
  return text.split(', ').map((entry) => {
    if (!entry.startsWith('IP Address:')) return entry;
    const address = entry.slice('IP Address:'.length);
    // Node writes IPv6 in full (0:0:0:0:0:0:0:1); the URL parser gives the usual short form.
    if (!address.includes(':')) return `IP:${address}`;
    try {
      return `IP:${new URL(`http://[${address}]/`).hostname.slice(1, -1)}`;
    } catch {
      return `IP:${address}`;
    }
  });
}

/** What `cert info` shows about the leaf certificate in `pemText`. */
export function describeCertificate(pemText: string, source?: string): CertificateInfo {
  const cert = parseLeaf(pemText, source);
  const key = cert.publicKey;
  const details = key.asymmetricKeyDetails;
  const bits =
    details?.modulusLength ??
    (details?.namedCurve === 'prime256v1'
      ? 256
      : details?.namedCurve === 'secp384r1'
        ? 384
        : details?.namedCurve === 'secp521r1'
          ? 521
          : undefined);
  return {
    subject: oneLineName(cert.subject),
    issuer: oneLineName(cert.issuer),
    notBefore: new Date(cert.validFrom).toISOString().replace('.000Z', 'Z'),
    notAfter: new Date(cert.validTo).toISOString().replace('.000Z', 'Z'),
    subjectAltNames: parseSubjectAltNames(cert.subjectAltName),
    fingerprint: fingerprintOfDer(cert.raw),
    publicKeyType:
      key.asymmetricKeyType === 'ec' && details?.namedCurve !== undefined
        ? `ec (${details.namedCurve})`
        : (key.asymmetricKeyType ?? 'unknown'),
    ...(bits === undefined ? {} : { publicKeyBits: bits }),
    serial: cert.serialNumber.toLowerCase(),
    // Not checkIssued(): OpenSSL also wants keyCertSign there, which a server certificate lacks.
    selfSigned: cert.subject === cert.issuer && cert.verify(key),
  };
}

// ---------------------------------------------------------------------------------------------
// The files.

export interface CertificatePaths {
  certPath: string;
  keyPath: string;
}

/** `<configDir>/proxy.pem` and `<configDir>/proxy.key`, PBS's names. */
export function serverCertificatePaths(dirs: Pick<BurrowDirs, 'configDir'>): CertificatePaths {
  return {
    certPath: join(dirs.configDir, CERT_FILE_NAME),
    keyPath: join(dirs.configDir, KEY_FILE_NAME),
  };
}

export interface ServerCertificate extends CertificatePaths {
  certPem: string;
  keyPem: string;
  fingerprint: string;
  /** Whether this call made the certificate (first start). */
  created: boolean;
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    throw new BurrowError('IO_ERROR', `cannot read ${path}: ${code ?? String(error)}`, {
      details: { path, errnoName: code },
      cause: error,
    });
  }
}

/** Check that the key file holds the private key of the certificate file. */
function checkPair(paths: CertificatePaths, certPem: string, keyPem: string): string {
  const cert = parseLeaf(certPem, paths.certPath);
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch (error) {
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `invalid private key in ${paths.keyPath}: ${error instanceof Error ? error.message : String(error)}`,
      { details: { path: paths.keyPath }, cause: error },
    );
  }
  if (!cert.checkPrivateKey(key))
    throw new BurrowError(
      'INVALID_ARGUMENT',
      `the key in ${paths.keyPath} does not belong to the certificate in ${paths.certPath}`,
      { details: { certPath: paths.certPath, keyPath: paths.keyPath } },
    );
  return fingerprintOfDer(cert.raw);
}

/**
 * Read a certificate and its key; `undefined` when neither file exists. One without the other,
 * an unreadable file or a key that does not match is an error: a half-written pair must never
 * be silently replaced (the other file might be someone's real key or certificate).
 */
export async function loadCertificate(
  paths: CertificatePaths,
): Promise<Omit<ServerCertificate, 'created'> | undefined> {
  const [certPem, keyPem] = await Promise.all([
    readOptional(paths.certPath),
    readOptional(paths.keyPath),
  ]);
  if (certPem === undefined && keyPem === undefined) return undefined;
  if (certPem === undefined || keyPem === undefined) {
    const [present, missing] =
      certPem === undefined ? [paths.keyPath, paths.certPath] : [paths.certPath, paths.keyPath];
    throw new BurrowError(
      'NOT_FOUND',
      `${missing} is missing but ${present} exists; restore it, or make a new pair with \`burrow-manager cert update --force\``,
      { details: { path: missing } },
    );
  }
  return { ...paths, certPem, keyPem, fingerprint: checkPair(paths, certPem, keyPem) };
}

function writeError(path: string, error: unknown): BurrowError {
  if (error instanceof BurrowError) return error;
  const code = (error as NodeJS.ErrnoException).code;
  return new BurrowError('IO_ERROR', `cannot write ${path}: ${code ?? String(error)}`, {
    details: { path, errnoName: code },
    cause: error,
  });
}

/**
 * Store a certificate and key. Without `replace`, neither file may exist (ALREADY_EXISTS); with
 * it, each is replaced atomically. The key goes first and is mode 0600 from its first byte.
 */
export async function writeCertificateFiles(
  paths: CertificatePaths,
  generated: Pick<GeneratedCertificate, 'certPem' | 'keyPem'>,
  options: { replace?: boolean } = {},
): Promise<void> {
  for (const dir of new Set([join(paths.keyPath, '..'), join(paths.certPath, '..')]))
    await mkdir(dir, { recursive: true, mode: 0o700 }).catch((error: unknown) => {
      throw writeError(dir, error);
    });
  const files: Array<[string, string, number]> = [
    [paths.keyPath, generated.keyPem, KEY_FILE_MODE],
    [paths.certPath, generated.certPem, CERT_FILE_MODE],
  ];
  for (const [path, data, mode] of files) {
    try {
      if (options.replace === true) await writeFileAtomic(path, data, { mode });
      else await writeNewFile(path, data, mode);
    } catch (error) {
      if (isBurrowError(error, 'ALREADY_EXISTS'))
        throw new BurrowError('ALREADY_EXISTS', `${path} exists already`, { details: { path } });
      throw writeError(path, error);
    }
  }
  await fsyncDirectory(join(paths.certPath, '..')).catch(() => undefined);
}

async function waitForPair(paths: CertificatePaths): Promise<ServerCertificate> {
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      const loaded = await loadCertificate(paths);
      if (loaded !== undefined) return { ...loaded, created: false };
      if (Date.now() > deadline)
        throw new BurrowError(
          'NOT_FOUND',
          `${paths.certPath} disappeared while it was being made`,
          {
            details: { path: paths.certPath },
          },
        );
    } catch (error) {
      if (!(error instanceof BurrowError && error.code === 'NOT_FOUND') || Date.now() > deadline)
        throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export interface LoadOrCreateOptions {
  /** Host name for a new certificate (default: this host's). */
  hostname?: string;
  keyType?: CertificateKeyType;
  /** Files named by the configuration or `serve --cert/--key`: loaded, never created. */
  certPath?: string;
  keyPath?: string;
}

/**
 * The certificate the server presents: `<configDir>/proxy.pem` + `proxy.key`, made on first
 * start as PBS does; or the files the caller names, which must exist.
 */
export async function loadOrCreateServerCertificate(
  dirs: Pick<BurrowDirs, 'configDir'>,
  options: LoadOrCreateOptions = {},
): Promise<ServerCertificate> {
  if ((options.certPath === undefined) !== (options.keyPath === undefined))
    throw new BurrowError(
      'INVALID_ARGUMENT',
      'a certificate file and a key file go together: give both or neither',
    );
  if (options.certPath !== undefined && options.keyPath !== undefined) {
    const paths = { certPath: options.certPath, keyPath: options.keyPath };
    const loaded = await loadCertificate(paths);
    if (loaded === undefined)
      throw new BurrowError('NOT_FOUND', `certificate file ${paths.certPath} not found`, {
        details: { path: paths.certPath },
      });
    return { ...loaded, created: false };
  }
  const paths = serverCertificatePaths(dirs);
  const existing = await loadCertificate(paths);
  if (existing !== undefined) return { ...existing, created: false };
  const generated = await generateSelfSignedCertificate({
    ...(options.hostname === undefined ? {} : { hostname: options.hostname }),
    ...(options.keyType === undefined ? {} : { keyType: options.keyType }),
  });
  try {
    await writeCertificateFiles(paths, generated);
  } catch (error) {
    // Another process is making its pair at the same moment: use that one once it is complete
    // (it writes the key first, so its certificate may lag a moment behind).
    if (error instanceof BurrowError && error.code === 'ALREADY_EXISTS') return waitForPair(paths);
    throw error;
  }
  return {
    ...paths,
    certPem: generated.certPem,
    keyPem: generated.keyPem,
    fingerprint: generated.fingerprint,
    created: true,
  };
}
