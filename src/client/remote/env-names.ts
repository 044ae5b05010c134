/**
 * The environment variables of remote mode that the CLI reads before it knows whether the
 * repository is remote: a module of its own, so naming them does not load the HTTP client.
 */

/** The password or API token secret (PBS). */
export const PASSWORD_ENV = 'PBS_PASSWORD';
