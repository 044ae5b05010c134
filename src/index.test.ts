import { describe, expect, it } from 'vitest';
import * as burrow from './index.js';

describe('the library entry', () => {
  it('round-trips a blob and a manifest through the public API alone', () => {
    const data = new TextEncoder().encode('library use');
    const blob = burrow.encodeBlob(data);
    expect(new TextDecoder().decode(burrow.decodeBlob(blob))).toBe('library use');
    const manifest = burrow.parseManifest(
      JSON.stringify({
        'backup-type': 'host',
        'backup-id': 'h1',
        'backup-time': 1700000000,
        files: [],
        signature: null,
        unprotected: {},
      }),
    );
    expect(manifest.backupId).toBe('h1');
    expect(burrow.formatBackupTime(manifest.backupTime)).toBe('2023-11-14T22:13:20Z');
  });
});
