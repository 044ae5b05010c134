/**
 * Child process for the "unreadable snapshot" test: reads one snapshot directory with
 * readSnapshotInfo and prints the result as JSON. When started as root it first drops to the
 * unprivileged uid/gid 65534 (nobody), because root reads every directory whatever its mode and
 * the test needs a real EACCES. Arguments: <base> <type> <id> <backup-time-epoch>.
 */
import { readSnapshotInfo } from '../../src/datastore/backup-info.js';
import { backupDir, backupGroup, ROOT_NAMESPACE } from '../../src/types/backup.js';

const [base, type, id, time] = process.argv.slice(2);
if (process.getuid?.() === 0) {
  process.setgid!(65534);
  process.setuid!(65534);
}
const dir = backupDir(backupGroup(ROOT_NAMESPACE, type!, id!), Number(time));
const info = await readSnapshotInfo(base!, dir);
process.stdout.write(
  JSON.stringify({ uid: process.getuid?.(), error: info.error, files: info.files }),
);
