import { afterAll, beforeAll, it } from 'vitest';
import {
  type ProtocolServer,
  startServer,
  expectUpgraded,
  h2,
  closeSession,
} from './protocol-harness.js';
import { writeSnapshot } from '../helpers/store-fixture.js';
import { encodeBlob } from '../../src/format/data-blob.js';
import { backupDir, backupGroup, ROOT_NAMESPACE } from '../../src/types/backup.js';

let server: ProtocolServer;
beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => {
  await server?.close();
});

it('speed', async () => {
  await writeSnapshot(
    server.fx.store,
    backupDir(backupGroup(ROOT_NAMESPACE, 'host', 'a'), 1700000000),
    [
      {
        kind: 'blob',
        name: 'a.blob',
        raw: encodeBlob(Buffer.alloc(3 * 1024 * 1024, 7), { compress: false }),
      },
    ],
  );
  const u = await expectUpgraded(server.port, {
    path: '/api2/json/reader?store=conf&backup-type=host&backup-id=a&backup-time=1700000000',
    protocol: 'proxmox-backup-reader-protocol-v1',
    user: 'root',
  });
  for (let i = 0; i < 3; i++) {
    let t = Date.now();
    let r = await h2(u.session, 'GET', '/speedtest');
    console.log('speedtest', r.status, r.body.length, Date.now() - t);
    t = Date.now();
    r = await h2(u.session, 'GET', '/download?file-name=a.blob');
    console.log('download', r.status, r.body.length, Date.now() - t);
  }
  console.log(u.session.state);
  await closeSession(server, u);
});
