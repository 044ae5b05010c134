/**
 * The shapes of PBS's datastore API results (pbs-protocol §8), shared by the server that sends
 * them, the remote client that reads them and the local repository that builds the same values
 * from the datastore directly, so `burrow` prints the same whichever way it reached the store.
 * JSON keys are PBS's (kebab-case).
 */
import type { CryptMode } from './crypt-mode.js';

/** A file of a snapshot (PBS BackupContent). */
export interface BackupContent {
  filename: string;
  'crypt-mode'?: CryptMode;
  size?: number;
}

/** A backup group in a namespace (PBS GroupListItem). */
export interface GroupListItem {
  'backup-type': string;
  'backup-id': string;
  /** Time of the newest finished snapshot (of the only snapshot when there is one); 0 for none. */
  'last-backup': number;
  'backup-count': number;
  /** Files of the newest finished snapshot. */
  files: string[];
  owner?: string;
  /** First line of the group notes. */
  comment?: string;
}

export interface SnapshotVerification {
  state: string;
  upid: string;
}

/** A snapshot (PBS SnapshotListItem). */
export interface SnapshotListItem {
  'backup-type': string;
  'backup-id': string;
  'backup-time': number;
  /** First line of the snapshot notes. */
  comment?: string;
  verification?: SnapshotVerification;
  /** Key fingerprint of an encrypted or signed snapshot. */
  fingerprint?: string;
  files: BackupContent[];
  /** Sum of the file sizes; absent for an unfinished snapshot. */
  size?: number;
  owner?: string;
  protected: boolean;
}

/** One snapshot in a prune result (PBS PruneListItem). */
export interface PruneListItem {
  'backup-type': string;
  'backup-id': string;
  'backup-time': number;
  keep: boolean;
  protected: boolean;
  ns?: string;
}

export interface TypeCounts {
  groups: number;
  snapshots: number;
}

/** Groups and snapshots per backup type (PBS Counts; `other` for unknown types). */
export interface DatastoreCounts {
  ct?: TypeCounts;
  host?: TypeCounts;
  vm?: TypeCounts;
  other?: TypeCounts;
}

/** GET /admin/datastore/{store}/status (PBS DataStoreStatus, without gc-status). */
export interface DatastoreStatus {
  total: number;
  used: number;
  avail: number;
  counts?: DatastoreCounts;
}
