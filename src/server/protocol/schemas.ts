/**
 * The parameter schemas of the backup and reader protocols (pbs-protocol §5.1, §5.3, §6.1, §6.2),
 * with PBS's limits, in the REST layer's schema language so that the same checker produces PBS's
 * `parameter verification failed - ...` messages for the upgrade request and for every session
 * endpoint.
 */
import { BLOB_HEADER_SIZE, MAX_CHUNK_SIZE, MAX_ENCODED_CHUNK_SIZE } from '../../format/magic.js';
import { MAX_WRITER_ID } from '../../datastore/backup-session.js';
import type { ParamSchema, ParamSpec } from '../rest/route.js';
import { ARCHIVE_NAME_PARAM, SNAPSHOT_PARAMS } from '../rest/routes/datastore-common.js';

const DIGEST_RE = /^[a-f0-9]{64}$/;

const DEBUG_PARAM: ParamSpec = {
  type: 'boolean',
  description: 'Enable verbose debug logging.',
  optional: true,
};

/** GET /api2/json/reader (§6.1): the snapshot, as the REST routes name one. */
export const READER_UPGRADE_PARAMS: ParamSchema = { ...SNAPSHOT_PARAMS, debug: DEBUG_PARAM };

/** GET /api2/json/backup (§5.1). */
export const BACKUP_UPGRADE_PARAMS: ParamSchema = {
  ...READER_UPGRADE_PARAMS,
  benchmark: {
    type: 'boolean',
    description: 'Job is a benchmark (do not keep data).',
    optional: true,
  },
  // [4.x] Only meaningful for S3 datastores, which Burrow does not have: accepted and ignored.
  'no-cache': {
    type: 'boolean',
    description: 'Disable local datastore cache for network storages',
    optional: true,
  },
};

// ---------------------------------------------------------------------------------------------
// Session endpoints

const DIGEST: ParamSpec = {
  type: 'string',
  description: 'Chunk digest (SHA256).',
  pattern: DIGEST_RE,
};

const WID: ParamSpec = {
  type: 'integer',
  description: 'Dynamic writer ID.',
  minimum: 1,
  maximum: MAX_WRITER_ID,
};

const CHUNK_SIZE: ParamSpec = {
  type: 'integer',
  description: 'Chunk size.',
  minimum: 1,
  maximum: MAX_CHUNK_SIZE,
};

const CHUNK_ENCODED_SIZE: ParamSpec = {
  type: 'integer',
  description: 'Encoded chunk size.',
  minimum: BLOB_HEADER_SIZE + 1,
  maximum: MAX_ENCODED_CHUNK_SIZE,
};

export const BLOB_PARAMS: ParamSchema = {
  'file-name': ARCHIVE_NAME_PARAM,
  'encoded-size': {
    type: 'integer',
    description: 'Encoded blob size.',
    minimum: BLOB_HEADER_SIZE,
    maximum: MAX_ENCODED_CHUNK_SIZE,
  },
};

export const CREATE_DYNAMIC_INDEX_PARAMS: ParamSchema = { 'archive-name': ARCHIVE_NAME_PARAM };

export const CREATE_FIXED_INDEX_PARAMS: ParamSchema = {
  'archive-name': ARCHIVE_NAME_PARAM,
  size: { type: 'integer', description: 'File size.', minimum: 1, optional: true },
  'reuse-csum': {
    type: 'string',
    description:
      "If set, compare last backup's csum and reuse index for incremental backup if it matches.",
    pattern: DIGEST_RE,
    optional: true,
  },
};

export const APPEND_INDEX_PARAMS: ParamSchema = {
  wid: WID,
  'digest-list': { type: 'array', description: 'Chunk digest list.', items: DIGEST },
  'offset-list': {
    type: 'array',
    description: 'Chunk offset list.',
    items: { type: 'integer', minimum: 0 },
  },
};

export const UPLOAD_CHUNK_PARAMS: ParamSchema = {
  wid: WID,
  digest: DIGEST,
  size: CHUNK_SIZE,
  'encoded-size': CHUNK_ENCODED_SIZE,
};

function closeParams(min: number): ParamSchema {
  return {
    wid: WID,
    'chunk-count': {
      type: 'integer',
      description: 'Chunk count. This is used to verify that the server got all chunks.',
      minimum: min,
    },
    size: {
      type: 'integer',
      description: 'File size. This is used to verify that the server got all data.',
      minimum: min,
    },
    csum: { ...DIGEST, description: 'Digest list checksum.' },
  };
}

export const CLOSE_DYNAMIC_PARAMS: ParamSchema = closeParams(1);
export const CLOSE_FIXED_PARAMS: ParamSchema = closeParams(0);

export const PREVIOUS_PARAMS: ParamSchema = { 'archive-name': ARCHIVE_NAME_PARAM };

export const NO_PARAMS: ParamSchema = {};

export const DOWNLOAD_PARAMS: ParamSchema = { 'file-name': ARCHIVE_NAME_PARAM };

export const CHUNK_PARAMS: ParamSchema = { digest: DIGEST };
