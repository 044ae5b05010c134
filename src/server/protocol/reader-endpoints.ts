/**
 * The endpoints of a reader session (pbs-protocol §6.2), mapped onto ReaderSession. All three are
 * raw downloads: parameters from the query string, the answer is bytes.
 */
import { isBurrowError } from '../../lib/errors.js';
import type { ReaderSession } from '../../datastore/reader-session.js';
import { parseDigestHex } from '../../types/digest.js';
import { CHUNK_PARAMS, DOWNLOAD_PARAMS, NO_PARAMS } from './schemas.js';
import type { Endpoint } from './http2-session.js';
import { rawReply } from './http2-session.js';

/** PBS's download speed test: 1 MiB of `A`. */
const SPEEDTEST_SIZE = 1024 * 1024;
const SPEEDTEST_BYTE = 0x41;

export const READER_ENDPOINTS: readonly Endpoint<ReaderSession>[] = [
  {
    method: 'GET',
    path: 'chunk',
    parameters: CHUNK_PARAMS,
    kind: 'download',
    // "not allowed" is 401; PBS answers any failure to read the chunk with 400, even a missing one.
    statusOf: (error) => (isBurrowError(error, 'CHUNK_NOT_ALLOWED') ? 401 : 400),
    handler: async (session, params) =>
      rawReply(await session.chunk(parseDigestHex(params['digest'] as string))),
  },
  {
    method: 'GET',
    path: 'download',
    parameters: DOWNLOAD_PARAMS,
    kind: 'download',
    handler: async (session, params) =>
      rawReply(await session.download(params['file-name'] as string)),
  },
  {
    method: 'GET',
    path: 'speedtest',
    parameters: NO_PARAMS,
    kind: 'download',
    handler: () => Promise.resolve(rawReply(Buffer.alloc(SPEEDTEST_SIZE, SPEEDTEST_BYTE))),
  },
];
