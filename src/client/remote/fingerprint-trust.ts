/**
 * Whether to trust a PBS server's TLS certificate, decided the way proxmox-backup-client decides
 * (pbs-protocol §2): a certificate whose chain verifies and which names the host is trusted;
 * any other certificate is trusted only by the SHA-256 fingerprint of its DER encoding, when it
 * equals the expected one (PBS_FINGERPRINT or the caller's option, else the one remembered in the
 * fingerprint cache), or when a person at a terminal says yes. PBS servers use self-signed
 * certificates by default, so the fingerprint path is the common one.
 *
 * The decision is made after the handshake and before the caller may write a single byte on the
 * socket, so no password or token leaves the machine towards an untrusted server.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { checkServerIdentity, type PeerCertificate, type TLSSocket } from 'node:tls';
import { writeFileAtomic } from '../../lib/atomic-write.js';
import { BurrowError } from '../../lib/errors.js';

/** The environment variable with the expected fingerprint (PBS). */
export const FINGERPRINT_ENV = 'PBS_FINGERPRINT';

/** PBS's default port; the cache names servers on another port `host:port`. */
export const DEFAULT_PBS_PORT = 8007;

const FINGERPRINT_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){31}$/;

/** SHA-256 of a certificate's DER bytes, as 32 lowercase hex pairs joined by `:`. */
export function certificateFingerprint(der: Uint8Array): string {
  const hex = createHash('sha256').update(der).digest('hex');
  return hex.replace(/(..)(?!$)/g, '$1:');
}

/**
 * A fingerprint as people write it, in the one form it is compared in: lowercase, with colons.
 * Accepts the 64 hex digits without colons too (as the Go client does); anything else is
 * INVALID_FINGERPRINT.
 */
export function normalizeFingerprint(text: string): string {
  const lower = text.trim().toLowerCase();
  if (FINGERPRINT_RE.test(lower)) return lower;
  if (/^[0-9a-f]{64}$/.test(lower)) return lower.replace(/(..)(?!$)/g, '$1:');
  throw new BurrowError(
    'INVALID_FINGERPRINT',
    `invalid certificate fingerprint ${JSON.stringify(text.slice(0, 120))}: expected 32 hex bytes separated by ':' (SHA-256)`,
    { details: { value: text.slice(0, 200) } },
  );
}

/**
 * Burrow's fingerprint cache: `$XDG_CONFIG_HOME/burrow/fingerprints`, else
 * `~/.config/burrow/fingerprints`. Its lines have PBS's format, `<server> <fingerprint>`.
 */
export function defaultFingerprintCachePath(env: NodeJS.ProcessEnv = process.env): string {
  const base =
    env.XDG_CONFIG_HOME !== undefined && env.XDG_CONFIG_HOME !== ''
      ? env.XDG_CONFIG_HOME
      : join(env.HOME ?? homedir(), '.config');
  return join(base, 'burrow', 'fingerprints');
}

/** How a server is named in the cache: the host, with `:port` when it is not 8007. */
export function fingerprintCacheKey(host: string, port: number = DEFAULT_PBS_PORT): string {
  if (port === DEFAULT_PBS_PORT) return host;
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The cache as server → fingerprint; a missing file is empty, unreadable lines are skipped. */
export async function readFingerprintCache(path: string): Promise<Map<string, string>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
    throw new BurrowError(
      'IO_ERROR',
      `cannot read the fingerprint cache ${path}: ${(error as Error).message}`,
      { cause: error, details: { file: path } },
    );
  }
  const cache = new Map<string, string>();
  for (const line of text.split('\n')) {
    const [server, fingerprint, ...rest] = line.trim().split(/\s+/);
    if (server === undefined || fingerprint === undefined || rest.length > 0) continue;
    try {
      cache.set(server, normalizeFingerprint(fingerprint));
    } catch {
      // A damaged line must not make every server untrusted; it is replaced on the next write.
    }
  }
  return cache;
}

/** Remember `fingerprint` for `server`: its line is replaced, every other line kept as it was. */
export async function rememberFingerprint(
  path: string,
  server: string,
  fingerprint: string,
): Promise<void> {
  let old = '';
  try {
    old = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const kept = old
    .split('\n')
    .filter((line) => line.trim() !== '' && line.trim().split(/\s+/)[0] !== server);
  kept.push(`${server} ${normalizeFingerprint(fingerprint)}`);
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await writeFileAtomic(path, `${kept.join('\n')}\n`, { mode: 0o600 });
}

// ---------------------------------------------------------------------------------------------
// asking a person

export interface TrustQuestion {
  /** The server as the cache names it. */
  server: string;
  fingerprint: string;
  /** The expected fingerprint it does not match, when there was one. */
  expected?: string;
  /** Why the certificate is not trusted by its chain (OpenSSL's reason). */
  reason: string;
}

/**
 * Ask whether to trust a certificate: true or false, or undefined when nobody can be asked
 * (no terminal), which refuses it.
 */
export type TrustPrompt = (question: TrustQuestion) => Promise<boolean | undefined>;

export interface TerminalStreams {
  input: Readable & { isTTY?: boolean };
  output: Writable & { isTTY?: boolean };
}

/** A yes/no question on a terminal (stdin + stderr by default); undefined without one. */
export function terminalTrustPrompt(
  streams: TerminalStreams = { input: process.stdin, output: process.stderr },
): TrustPrompt {
  return async (q) => {
    if (streams.input.isTTY !== true || streams.output.isTTY !== true) return undefined;
    const lines = [`The certificate of ${q.server} is not trusted (${q.reason}).`];
    if (q.expected !== undefined) {
      lines.push(`WARNING: its fingerprint does not match the expected ${q.expected}`);
    }
    lines.push(`fingerprint: ${q.fingerprint}`);
    streams.output.write(`${lines.join('\n')}\n`);
    // The line iterator buffers, so answers typed ahead (or piped in one go) are not lost.
    const rl = createInterface({ input: streams.input, terminal: false });
    const answers = rl[Symbol.asyncIterator]();
    try {
      for (;;) {
        streams.output.write('Are you sure you want to continue connecting? (y/n): ');
        const next = await answers.next();
        if (next.done === true) return false;
        const a = String(next.value).trim().toLowerCase();
        if (a === 'y' || a === 'yes') return true;
        if (a === 'n' || a === 'no') return false;
      }
    } finally {
      rl.close();
    }
  };
}

// ---------------------------------------------------------------------------------------------
// the decision

/** Why the chain check did not settle it, in words for the prompt and the error. */
function untrustedReason(socket: TLSSocket, host: string, cert: PeerCertificate): string {
  const code = String(socket.authorizationError ?? '');
  // Node reports a verified chain with the wrong names under this code.
  if (socket.authorized || code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return checkServerIdentity(host, cert)?.message ?? `the certificate does not name ${host}`;
  }
  switch (code) {
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
      return 'self-signed certificate';
    case 'CERT_HAS_EXPIRED':
      return 'the certificate has expired';
    default:
      return code === ''
        ? 'the certificate chain was not verified'
        : `chain verification failed: ${code}`;
  }
}

export interface TrustOptions {
  host: string;
  port?: number;
  /** Expected fingerprint; default PBS_FINGERPRINT. When given, the cache is not consulted. */
  fingerprint?: string;
  /** Default: a terminal prompt on stdin/stderr (none without a terminal). */
  prompt?: TrustPrompt;
  /** The fingerprint cache; default defaultFingerprintCachePath(); false: neither read nor written. */
  cachePath?: string | false;
  env?: NodeJS.ProcessEnv;
  /** Told when the cache cannot be written (the connection goes on). */
  warn?: (message: string) => void;
}

export type TrustReason = 'chain' | 'fingerprint' | 'cache' | 'prompt' | 'accepted';

export interface TrustDecision {
  how: TrustReason;
  fingerprint: string;
}

/**
 * The trust decisions of one client: what was accepted once (by fingerprint or by a yes) holds for
 * every further connection of the client, so a person is asked at most once per certificate.
 */
export class CertificateTrust {
  readonly server: string;
  readonly host: string;
  readonly #expected: string | undefined;
  readonly #prompt: TrustPrompt;
  readonly #cachePath: string | undefined;
  readonly #warn: (message: string) => void;
  readonly #accepted = new Set<string>();
  readonly #pending = new Map<string, Promise<TrustDecision>>();

  constructor(options: TrustOptions) {
    const env = options.env ?? process.env;
    this.host = options.host;
    this.server = fingerprintCacheKey(options.host, options.port ?? DEFAULT_PBS_PORT);
    const expected = options.fingerprint ?? env[FINGERPRINT_ENV];
    this.#expected =
      expected === undefined || expected === '' ? undefined : normalizeFingerprint(expected);
    this.#prompt = options.prompt ?? terminalTrustPrompt();
    this.#cachePath =
      options.cachePath === false
        ? undefined
        : (options.cachePath ?? defaultFingerprintCachePath(env));
    this.#warn = options.warn ?? (() => {});
  }

  /** Decide on a TLS socket right after its handshake; throws TLS_UNTRUSTED. */
  async verify(socket: TLSSocket): Promise<TrustDecision> {
    const cert = socket.getPeerCertificate(false) as PeerCertificate | undefined;
    if (cert?.raw === undefined || cert.raw.length === 0) {
      throw new BurrowError('TLS_UNTRUSTED', `${this.server} presented no TLS certificate`, {
        details: { server: this.server },
      });
    }
    const fingerprint = certificateFingerprint(cert.raw);
    // Node sets `authorized` from OpenSSL's chain verification and its own host name check;
    // the name is checked again so a resumed or otherwise special session cannot skip it.
    if (socket.authorized && checkServerIdentity(this.host, cert) === undefined) {
      return { how: 'chain', fingerprint };
    }
    const reason = untrustedReason(socket, this.host, cert);
    if (this.#accepted.has(fingerprint)) return { how: 'accepted', fingerprint };
    let pending = this.#pending.get(fingerprint);
    if (pending === undefined) {
      pending = this.#decide(fingerprint, reason);
      this.#pending.set(fingerprint, pending);
      const clear = (): void => void this.#pending.delete(fingerprint);
      pending.then(clear, clear);
    }
    return pending;
  }

  async #decide(fingerprint: string, reason: string): Promise<TrustDecision> {
    const expected = this.#expected ?? (await this.#cached());
    if (expected === fingerprint) {
      this.#accepted.add(fingerprint);
      if (this.#expected !== undefined) await this.#remember(fingerprint);
      return { how: this.#expected !== undefined ? 'fingerprint' : 'cache', fingerprint };
    }
    const question: TrustQuestion = { server: this.server, fingerprint, reason };
    if (expected !== undefined) question.expected = expected;
    const answer = await this.#prompt(question);
    if (answer === true) {
      this.#accepted.add(fingerprint);
      await this.#remember(fingerprint);
      return { how: 'prompt', fingerprint };
    }
    const mismatch =
      expected === undefined
        ? ''
        : ` and does not match the ${this.#expected !== undefined ? 'expected' : 'remembered'} fingerprint ${expected}`;
    const how =
      answer === false
        ? 'it was refused at the prompt'
        : `if it is the server's certificate, trust it with ${FINGERPRINT_ENV}=${fingerprint}`;
    throw new BurrowError(
      'TLS_UNTRUSTED',
      `the certificate of ${this.server} is not trusted (${reason})${mismatch}; its fingerprint is ${fingerprint}; ${how}`,
      {
        details: {
          server: this.server,
          fingerprint,
          reason,
          ...(expected === undefined ? {} : { expected }),
        },
      },
    );
  }

  async #cached(): Promise<string | undefined> {
    if (this.#cachePath === undefined) return undefined;
    try {
      return (await readFingerprintCache(this.#cachePath)).get(this.server);
    } catch (error) {
      this.#warn((error as Error).message);
      return undefined;
    }
  }

  async #remember(fingerprint: string): Promise<void> {
    if (this.#cachePath === undefined) return;
    try {
      await rememberFingerprint(this.#cachePath, this.server, fingerprint);
    } catch (error) {
      this.#warn(
        `cannot remember the fingerprint of ${this.server} in ${this.#cachePath}: ${(error as Error).message}`,
      );
    }
  }
}
