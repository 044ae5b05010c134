/**
 * The environment variables of remote mode that the CLI reads before it knows whether the
 * repository is remote: a module of its own, so naming them does not load the HTTP client.
 */

/** The password or API token secret (PBS). */
export const PASSWORD_ENV = 'PBS_PASSWORD';

/**
 * Where the bins' shebang lines move NODE_EXTRA_CA_CERTS (src/cli/burrow.ts, burrow-manager.ts):
 * Node would read that file, and build its whole root store, at every start; the HTTP client
 * reads it only when it connects (remote/extra-ca.ts).
 */
export const DEFERRED_EXTRA_CA_ENV = 'BURROW_EXTRA_CA_CERTS';
