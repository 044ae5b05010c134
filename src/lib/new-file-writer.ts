/**
 * A file written as a stream that appears under its name only when it is complete: bytes go to
 * a temp file beside the target (`<name>.tmp_XXXXXX`), and commit() fsyncs it and links it into
 * place. link(2) fails when the target exists, so a file that appeared meanwhile is never
 * replaced (`pxar create` must not overwrite an archive, as PBS's does not), and a crash or an
 * error leaves at most the temp file, never a half-written archive under the real name.
 */
import { link, open, rm, stat, type FileHandle } from 'node:fs/promises';
import { BurrowError } from './errors.js';
import { fsyncDirectory, tempPathFor } from './atomic-write.js';
import { dirname } from 'node:path';

export class NewFileWriter {
  readonly path: string;
  readonly tempPath: string;
  #handle: FileHandle | undefined;
  #written = 0;

  private constructor(path: string, tempPath: string, handle: FileHandle) {
    this.path = path;
    this.tempPath = tempPath;
    this.#handle = handle;
  }

  /** Fails with ALREADY_EXISTS when `path` exists now; commit() checks again. */
  static async create(path: string, mode = 0o640): Promise<NewFileWriter> {
    const exists = await stat(path).then(
      () => true,
      (error: NodeJS.ErrnoException) => {
        if (error.code === 'ENOENT') return false;
        throw error;
      },
    );
    if (exists) throw alreadyExists(path);
    const tempPath = tempPathFor(path);
    const handle = await open(tempPath, 'wx', mode);
    return new NewFileWriter(path, tempPath, handle);
  }

  get bytesWritten(): number {
    return this.#written;
  }

  async write(bytes: Uint8Array): Promise<void> {
    const handle = this.#open();
    let done = 0;
    while (done < bytes.length) {
      const { bytesWritten } = await handle.write(bytes, done, bytes.length - done);
      done += bytesWritten;
    }
    this.#written += bytes.length;
  }

  /** fsync, then link the temp file to the real name (never replacing one) and remove the temp name. */
  async commit(): Promise<void> {
    const handle = this.#open();
    await handle.sync();
    await handle.close();
    this.#handle = undefined;
    try {
      await link(this.tempPath, this.path);
    } catch (error) {
      await rm(this.tempPath, { force: true });
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw alreadyExists(this.path);
      throw error;
    }
    await rm(this.tempPath, { force: true });
    await fsyncDirectory(dirname(this.path));
  }

  /** Drops the temp file; safe to call after commit() or twice. */
  async abort(): Promise<void> {
    if (this.#handle !== undefined) {
      await this.#handle.close().catch(() => undefined);
      this.#handle = undefined;
      await rm(this.tempPath, { force: true });
    }
  }

  #open(): FileHandle {
    if (this.#handle === undefined)
      throw new BurrowError('INTERNAL', `${this.path} was already committed or aborted`);
    return this.#handle;
  }
}

function alreadyExists(path: string): BurrowError {
  return new BurrowError(
    'ALREADY_EXISTS',
    `${path} already exists; choose another name or remove it first`,
    {
      details: { path },
    },
  );
}
