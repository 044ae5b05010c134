/**
 * NODE_EXTRA_CA_CERTS, honoured when a connection needs it instead of at every start.
 *
 * Node reads the file named by NODE_EXTRA_CA_CERTS while it starts, and builds its root
 * certificate store then, even for a process that never opens a TLS connection: 60 ms per
 * command on a machine whose variable names the system bundle (about 140 certificates), more
 * than a tenth of an unchanged backup. The bins' shebang lines move the variable to
 * DEFERRED_EXTRA_CA_ENV, so Node skips that work, and the HTTP client adds the certificates here
 * when it connects: Node's own roots plus the file's, as Node would have trusted.
 */
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import { DEFERRED_EXTRA_CA_ENV } from './env-names.js';

/**
 * The trust anchors for a connection when a bin deferred NODE_EXTRA_CA_CERTS: undefined when it
 * did not (Node's default store applies, with any extra certificates Node loaded itself). A file
 * that cannot be read is warned about and left out, as Node does at start.
 */
export function deferredExtraCa(
  env: NodeJS.ProcessEnv,
  warn: (message: string) => void,
): string[] | undefined {
  const path = env[DEFERRED_EXTRA_CA_ENV];
  if (path === undefined || path === '') return undefined;
  let pem: string;
  try {
    pem = readFileSync(path, 'utf8');
  } catch (error) {
    warn(
      `ignoring the extra CA certificates of NODE_EXTRA_CA_CERTS (${path}): ${error instanceof Error ? error.message : String(error)}`,
    );
    return undefined;
  }
  return [...rootCertificates, pem];
}
