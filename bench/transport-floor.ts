/**
 * The least CPU the network path of a backup can cost, for `bench:server`: a datastore's encoded
 * chunks sent over one TLS connection on 127.0.0.1, each behind a 4-byte length, to a receiver
 * that checks each as a server must check an unencrypted upload (decode and SHA-256,
 * `plainBlobDigest`, pbs-protocol §5.3). No HTTP/2, no session, no chunk files: what is left is
 * TLS, the loopback socket and the upload check, the parts any implementation pays.
 *
 * Two roles, each its own process, each printing one JSON line:
 *   receive <cert.pem> <key.pem>   {"port"} once listening, then {"cpu","chunks","bytes"} at the end
 *   send <port> <chunk dir>        {"cpu","cipher"} once everything is sent and the receiver closed
 * CPU seconds count from the connection's start, so loading the chunk files is left out.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';
import { plainBlobDigest } from '../src/format/data-blob.js';

const cpuSince = (start: NodeJS.CpuUsage): number => {
  const used = process.cpuUsage(start);
  return (used.user + used.system) / 1e6;
};

function receive(certFile: string, keyFile: string): void {
  const server = tls.createServer(
    { cert: readFileSync(certFile), key: readFileSync(keyFile) },
    (socket) => {
      const start = process.cpuUsage();
      let parts: Buffer[] = [];
      let have = 0;
      let need = -1;
      let chunks = 0;
      let bytes = 0;
      const joined = (): Buffer => (parts.length === 1 ? parts[0]! : Buffer.concat(parts, have));
      socket.on('data', (piece: Buffer) => {
        parts.push(piece);
        have += piece.byteLength;
        for (;;) {
          if (need < 0) {
            if (have < 4) return;
            const all = joined();
            need = all.readUInt32LE(0);
            parts = [all.subarray(4)];
            have -= 4;
          }
          if (have < need) return;
          const all = joined();
          plainBlobDigest(all.subarray(0, need), { checkCrc: false });
          chunks++;
          bytes += need;
          parts = [all.subarray(need)];
          have -= need;
          need = -1;
        }
      });
      socket.on('end', () => {
        console.log(JSON.stringify({ cpu: cpuSince(start), chunks, bytes }));
        socket.end();
        server.close();
      });
    },
  );
  server.listen(0, '127.0.0.1', () => {
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('no TCP address');
    console.log(JSON.stringify({ port: address.port }));
  });
}

function send(port: number, chunkDir: string): void {
  const blobs: Buffer[] = [];
  for (const prefix of readdirSync(chunkDir)) {
    for (const name of readdirSync(join(chunkDir, prefix))) {
      blobs.push(readFileSync(join(chunkDir, prefix, name)));
    }
  }
  const start = process.cpuUsage();
  let cipher = '';
  // The receiver's certificate is the bench server's self-signed one; nothing here is secret.
  const socket = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false }, () => {
    cipher = `${socket.getProtocol() ?? '?'} ${socket.getCipher().name}`;
    void (async () => {
      for (const blob of blobs) {
        const length = Buffer.alloc(4);
        length.writeUInt32LE(blob.byteLength);
        socket.write(length);
        if (!socket.write(blob)) await new Promise((resume) => socket.once('drain', resume));
      }
      socket.end();
    })();
  });
  socket.on('data', () => undefined);
  socket.on('close', () => console.log(JSON.stringify({ cpu: cpuSince(start), cipher })));
}

const [role, a, b] = process.argv.slice(2);
if (role === 'receive' && a !== undefined && b !== undefined) receive(a, b);
else if (role === 'send' && a !== undefined && b !== undefined) send(Number(a), b);
else {
  console.error('usage: transport-floor.ts receive <cert.pem> <key.pem> | send <port> <chunk dir>');
  process.exit(2);
}
