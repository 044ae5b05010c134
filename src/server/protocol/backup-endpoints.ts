/**
 * The endpoints of a backup session (pbs-protocol §5.3), each mapped onto the BackupSession
 * method that implements it with PBS's checks and messages. What stays here is HTTP: parameter
 * schemas, how a body is passed (raw or as parameters), the body size rules of uploads, the reply
 * shape, and which calls must keep their stream order.
 */
import type { BackupSession, IndexKind } from '../../datastore/backup-session.js';
import { parseDigestHex } from '../../types/digest.js';
import {
  APPEND_INDEX_PARAMS,
  BLOB_PARAMS,
  CLOSE_DYNAMIC_PARAMS,
  CLOSE_FIXED_PARAMS,
  CREATE_DYNAMIC_INDEX_PARAMS,
  CREATE_FIXED_INDEX_PARAMS,
  NO_PARAMS,
  PREVIOUS_PARAMS,
  UPLOAD_CHUNK_PARAMS,
} from './schemas.js';
import type { Endpoint, UploadLimit } from './http2-session.js';
import { dataReply, rawReply } from './http2-session.js';

type Params = Readonly<Record<string, unknown>>;

// The schema check ran before any handler: these only narrow the checked values' types.
const str = (params: Params, name: string): string => params[name] as string;
const int = (params: Params, name: string): number => params[name] as number;
const optInt = (params: Params, name: string): number | undefined =>
  params[name] as number | undefined;
const optStr = (params: Params, name: string): string | undefined =>
  params[name] as string | undefined;

/** A chunk upload's body must be `encoded-size` bytes (PBS's UploadChunk messages). */
function chunkLimit(params: Params): UploadLimit {
  return {
    expected: int(params, 'encoded-size'),
    tooLarge: () => 'uploaded chunk is larger than announced.',
    wrongSize: () => 'uploaded chunk has unexpected size.',
  };
}

/**
 * A blob's body must be `encoded-size` bytes. PBS reads the whole body and then reports both
 * lengths; Burrow stops reading at the first byte too many, so it can name the real length only
 * when the request declared it (content-length).
 */
function blobLimit(params: Params): UploadLimit {
  const expected = int(params, 'encoded-size');
  const wrong = (length: number): string =>
    `got blob with unexpected length (${expected} != ${length})`;
  return {
    expected,
    tooLarge: (length) =>
      length === undefined ? 'uploaded blob is larger than announced.' : wrong(length),
    wrongSize: wrong,
  };
}

function indexEndpoints(kind: IndexKind): Endpoint<BackupSession>[] {
  const prefix = kind === 'dynamic' ? 'dynamic' : 'fixed';
  return [
    {
      method: 'POST',
      path: `${prefix}_index`,
      parameters: kind === 'dynamic' ? CREATE_DYNAMIC_INDEX_PARAMS : CREATE_FIXED_INDEX_PARAMS,
      kind: 'normal',
      ordered: true,
      handler: async (session, params) => {
        const name = str(params, 'archive-name');
        if (kind === 'dynamic') return dataReply(await session.createDynamicIndex(name));
        const reuse = optStr(params, 'reuse-csum');
        return dataReply(
          await session.createFixedIndex(
            name,
            optInt(params, 'size'),
            reuse === undefined ? undefined : parseDigestHex(reuse),
          ),
        );
      },
    },
    {
      method: 'PUT',
      path: `${prefix}_index`,
      parameters: APPEND_INDEX_PARAMS,
      kind: 'normal',
      ordered: true,
      handler: async (session, params) => {
        const digests = (params['digest-list'] as string[]).map(parseDigestHex);
        const offsets = params['offset-list'] as number[];
        await session.appendIndex(int(params, 'wid'), kind, digests, offsets);
        return dataReply(null);
      },
    },
    {
      method: 'POST',
      path: `${prefix}_chunk`,
      parameters: UPLOAD_CHUNK_PARAMS,
      kind: 'upload',
      upload: chunkLimit,
      handler: async (session, params, body) =>
        dataReply(
          await session.uploadChunk(
            int(params, 'wid'),
            kind,
            parseDigestHex(str(params, 'digest')),
            int(params, 'size'),
            body ?? new Uint8Array(0),
          ),
        ),
    },
    {
      method: 'POST',
      path: `${prefix}_close`,
      parameters: kind === 'dynamic' ? CLOSE_DYNAMIC_PARAMS : CLOSE_FIXED_PARAMS,
      kind: 'normal',
      ordered: true,
      handler: async (session, params) => {
        await session.closeIndex(
          int(params, 'wid'),
          kind,
          int(params, 'chunk-count'),
          int(params, 'size'),
          parseDigestHex(str(params, 'csum')),
        );
        return dataReply(null);
      },
    },
  ];
}

export const BACKUP_ENDPOINTS: readonly Endpoint<BackupSession>[] = [
  {
    method: 'POST',
    path: 'blob',
    parameters: BLOB_PARAMS,
    kind: 'upload',
    upload: blobLimit,
    handler: async (session, params, body) => {
      await session.uploadBlob(str(params, 'file-name'), body ?? new Uint8Array(0));
      return dataReply(null);
    },
  },
  ...indexEndpoints('dynamic'),
  ...indexEndpoints('fixed'),
  {
    method: 'GET',
    path: 'previous',
    parameters: PREVIOUS_PARAMS,
    kind: 'download',
    handler: async (session, params) =>
      rawReply(await session.downloadPrevious(str(params, 'archive-name'))),
  },
  {
    method: 'GET',
    path: 'previous_backup_time',
    parameters: NO_PARAMS,
    kind: 'normal',
    handler: (session) => Promise.resolve(dataReply(session.previousBackupTime() ?? null)),
  },
  {
    method: 'POST',
    path: 'finish',
    parameters: NO_PARAMS,
    kind: 'normal',
    ordered: true,
    handler: async (session) => {
      await session.finish();
      return dataReply(null);
    },
  },
  {
    method: 'POST',
    path: 'speedtest',
    parameters: NO_PARAMS,
    kind: 'discard',
    handler: () => Promise.resolve(dataReply(null)),
  },
];
