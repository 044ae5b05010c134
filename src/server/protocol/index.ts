/**
 * The backup and reader protocols (pbs-protocol §5, §6): an HTTP/1.1 Upgrade inside TLS, then
 * HTTP/2 on the same connection, whose requests map onto the datastore's BackupSession and
 * ReaderSession. The HTTPS server calls handleProtocolUpgrade from its `'upgrade'` event.
 */
export {
  AUTH_FAILURE_DELAY_MS,
  BACKUP_PATH,
  BACKUP_PROTOCOL_ID,
  MAX_URI_QUERY_LENGTH,
  READER_PATH,
  READER_PROTOCOL_ID,
  handleProtocolUpgrade,
  type ProtocolUpgradeOptions,
} from './upgrade.js';
export {
  MAX_PARAMETER_BODY,
  SESSION_MAX_FRAME_SIZE,
  SESSION_WINDOW_SIZE,
} from './http2-session.js';
