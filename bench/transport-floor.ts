/**
 * The least CPU the network path of a backup can cost, for `bench:server`: a datastore's encoded
 * chunks sent over one TLS connection on 127.0.0.1, each behind a 4-byte length, to a receiver
 * that checks each as a server must check an unencrypted upload (decode and SHA-256,
 * `plainBlobDigest`, pbs-protocol §5.3). No HTTP/2, no session, no chunk files: what is left is
 * TLS, the loopback socket and the upload check, the parts any implementation pays.
 *
 * The same with `http2` as the last argument: each chunk is a `POST /dynamic_chunk` of its own over
 * Node's HTTP/2 on that TLS connection, with the windows and frame sizes Burrow's client and server
 * set, at most 8 at a time (the client's upload window with two workers), each answered with a
 * small JSON body once checked. That is the least a backup session costs on Node's HTTP/2.
 *
 * Two roles, each its own process, each printing one JSON line:
 *   receive <cert.pem> <key.pem> [tls|http2]   {"port"} once listening, then
 *                                              {"cpu","chunks","bytes"} at the end
 *   send <port> <chunk dir> [tls|http2]        {"cpu","cipher"} once everything is sent and the
 *                                              receiver closed
 * CPU seconds count from the connection's start, so loading the chunk files is left out.
 */
import { readdirSync, readFileSync } from 'node:fs';
import http2 from 'node:http2';
import { join } from 'node:path';
import tls from 'node:tls';
import { H2_MAX_FRAME, H2_MAX_WINDOW } from '../src/client/remote/h2-session.js';
import { plainBlobDigest } from '../src/format/data-blob.js';
import {
  SESSION_MAX_FRAME_SIZE,
  SESSION_WINDOW_SIZE,
} from '../src/server/protocol/http2-session.js';

type Transport = 'tls' | 'http2';
/** Uploads in flight: the client's chunk window with two worker threads (threads * 2 + 4). */
const STREAMS_IN_FLIGHT = 8;

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

function readBlobs(chunkDir: string): Buffer[] {
  const blobs: Buffer[] = [];
  for (const prefix of readdirSync(chunkDir)) {
    for (const name of readdirSync(join(chunkDir, prefix))) {
      blobs.push(readFileSync(join(chunkDir, prefix, name)));
    }
  }
  return blobs;
}

function send(port: number, chunkDir: string): void {
  const blobs = readBlobs(chunkDir);
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

function receiveHttp2(certFile: string, keyFile: string): void {
  const server = http2.createSecureServer({
    cert: readFileSync(certFile),
    key: readFileSync(keyFile),
    settings: { initialWindowSize: SESSION_WINDOW_SIZE, maxFrameSize: SESSION_MAX_FRAME_SIZE },
    // As the backup session's server (src/server/protocol/http2-session.ts).
    maxSessionMemory: 256,
  });
  let start = process.cpuUsage();
  let chunks = 0;
  let bytes = 0;
  server.on('session', (session) => {
    start = process.cpuUsage();
    // SETTINGS only set stream windows; the connection window takes a WINDOW_UPDATE, sent here
    // at once as the backup session's server does.
    session.setLocalWindowSize(SESSION_WINDOW_SIZE);
    session.on('close', () => {
      console.log(JSON.stringify({ cpu: cpuSince(start), chunks, bytes }));
      server.close();
    });
  });
  server.on('stream', (stream) => {
    const parts: Buffer[] = [];
    let have = 0;
    stream.on('data', (piece: Buffer) => {
      parts.push(piece);
      have += piece.byteLength;
    });
    stream.on('end', () => {
      const blob = parts.length === 1 ? parts[0]! : Buffer.concat(parts, have);
      const { digest } = plainBlobDigest(blob, { checkCrc: false });
      chunks++;
      bytes += have;
      stream.respond({ ':status': 200, 'content-type': 'application/json;charset=UTF-8' });
      stream.end(JSON.stringify({ data: Buffer.from(digest).toString('hex') }));
    });
  });
  server.listen(0, '127.0.0.1', () => {
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('no TCP address');
    console.log(JSON.stringify({ port: address.port }));
  });
}

function sendHttp2(port: number, chunkDir: string): void {
  const blobs = readBlobs(chunkDir);
  const start = process.cpuUsage();
  let cipher = '';
  // As transport-floor's TLS sender: the bench server's self-signed certificate, nothing secret.
  const session = http2.connect(`https://127.0.0.1:${port}`, {
    rejectUnauthorized: false,
    settings: { enablePush: false, initialWindowSize: H2_MAX_WINDOW, maxFrameSize: H2_MAX_FRAME },
  });
  const upload = (blob: Buffer): Promise<void> =>
    new Promise((done, fail) => {
      const query = `wid=1&digest=${'0'.repeat(64)}&size=${blob.byteLength}&encoded-size=${blob.byteLength}`;
      const request = session.request({
        ':method': 'POST',
        ':path': `/dynamic_chunk?${query}`,
        'content-type': 'application/octet-stream',
      });
      request.on('data', () => undefined);
      request.on('end', done);
      request.on('error', fail);
      request.end(blob);
    });
  session.once('connect', () => {
    session.setLocalWindowSize(H2_MAX_WINDOW);
    const socket = session.socket as tls.TLSSocket;
    cipher = `${socket.getProtocol() ?? '?'} ${socket.getCipher().name} + HTTP/2`;
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < blobs.length) await upload(blobs[next++]!);
    };
    Promise.all(Array.from({ length: STREAMS_IN_FLIGHT }, lane)).then(
      () => session.close(),
      (error: unknown) => {
        console.error(error);
        process.exit(1);
      },
    );
  });
  session.on('close', () => console.log(JSON.stringify({ cpu: cpuSince(start), cipher })));
}

const [role, a, b, transportArg = 'tls'] = process.argv.slice(2);
const transport = transportArg as Transport;
if (a === undefined || b === undefined || (transport !== 'tls' && transport !== 'http2')) {
  console.error(
    'usage: transport-floor.ts receive <cert.pem> <key.pem> [tls|http2] | send <port> <chunk dir> [tls|http2]',
  );
  process.exit(2);
} else if (role === 'receive') {
  if (transport === 'tls') receive(a, b);
  else receiveHttp2(a, b);
} else if (role === 'send') {
  if (transport === 'tls') send(Number(a), b);
  else sendHttp2(Number(a), b);
} else {
  console.error(`transport-floor.ts: unknown role ${String(role)}`);
  process.exit(2);
}
