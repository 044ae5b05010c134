/**
 * Where passphrases come from, as with proxmox-backup-client: the environment variable first
 * (PBS_ENCRYPTION_PASSWORD for key files), else a hidden prompt on a terminal. Without either,
 * the command fails with a message naming the variable instead of hanging on a closed stdin.
 */
import { BurrowError } from '../lib/errors.js';

export async function readPassphrase(
  prompt: string,
  envVar = 'PBS_ENCRYPTION_PASSWORD',
): Promise<string> {
  const fromEnv = process.env[envVar];
  if (fromEnv !== undefined) return fromEnv;
  if (!process.stdin.isTTY || !process.stderr.isTTY) {
    throw new BurrowError('INVALID_ARGUMENT', `${prompt}: no terminal to ask on; set ${envVar}`);
  }
  return promptHidden(`${prompt}: `);
}

function promptHidden(question: string): Promise<string> {
  const stdin = process.stdin;
  return new Promise((resolve, reject) => {
    let answer = '';
    process.stderr.write(question);
    stdin.setRawMode(true);
    stdin.resume();
    stdin.setEncoding('utf8');
    const finish = (error?: Error): void => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off('data', onData);
      process.stderr.write('\n');
      if (error) reject(error);
      else resolve(answer);
    };
    const onData = (chunk: string): void => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') return finish();
        if (ch === '\u0003') return finish(new BurrowError('INVALID_ARGUMENT', 'interrupted'));
        if (ch === '\u007f' || ch === '\b') answer = answer.slice(0, -1);
        else answer += ch;
      }
    };
    stdin.on('data', onData);
  });
}
