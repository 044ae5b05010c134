/** How an archive is protected (manifest `crypt-mode`, pbs-formats §5.3). */
export const CRYPT_MODES = ['none', 'encrypt', 'sign-only'] as const;
export type CryptMode = (typeof CRYPT_MODES)[number];

export function isCryptMode(value: unknown): value is CryptMode {
  return typeof value === 'string' && (CRYPT_MODES as readonly string[]).includes(value);
}
