/**
 * Mutation fuzzing of the pxar decoder and accessor, shared by src/pxar/fuzz.test.ts (a few
 * seconds) and scripts/fuzz-pxar.ts (as long as you like). Each case is fully determined by its
 * seed: it picks a valid archive from a small corpus (v1 and v2, every entry kind and attribute),
 * applies a few random mutations (bit flips, interesting u64 values, truncation, deletion,
 * insertion and splices from other archives, or damage to the v2 payload stream), then decodes it
 * completely with the streaming decoder (random piece sizes, all contents read) and walks it with
 * the accessor. Each must succeed or fail with a BurrowError whose code starts with PXAR_; when
 * both succeed they must agree entry for entry. Anything else, or a case that does not finish in
 * time, is a failure reported with its seed.
 */
import { isBurrowError } from '../../src/lib/errors.js';
import { PXAR } from '../../src/pxar/format.js';
import { bytesRandomAccess } from '../../src/pxar/random-access.js';
import { buildArchive, concat, type TreeNode } from './pxar-builder.js';
import { decodeAll, pathText, walkAccessor } from './pxar-walk.js';
import { makeRng } from './rng.js';

export interface FuzzSample {
  readonly label: string;
  readonly archive: Uint8Array;
  readonly payload?: Uint8Array;
}

const int = (rng: () => number, n: number): number => Math.floor(rng() * n);

const enc = new TextEncoder();

function corpusTrees(): { label: string; tree: TreeNode[] }[] {
  const acl = {
    xattrs: [
      ['user.a', 'value'],
      ['user.empty', ''],
    ] as [string, string][],
    aclUsers: [[1000, 6]] as [number, number][],
    aclGroups: [[100, 4]] as [number, number][],
    aclGroupObj: 5,
    aclDefault: [7, undefined, 5, 7] as [number, undefined, number, number],
    aclDefaultUsers: [[1, 7]] as [number, number][],
    aclDefaultGroups: [[2, 1]] as [number, number][],
    fcaps: new Uint8Array([1, 0, 0, 2, 0, 0, 0, 0]),
    projid: 42,
  };
  return [
    {
      label: 'mixed',
      tree: [
        { kind: 'file', name: 'a.txt', data: enc.encode('hello world\n'), ...acl },
        { kind: 'file', name: 'empty', data: new Uint8Array(0) },
        {
          kind: 'dir',
          name: 'dir',
          ...acl,
          children: [
            {
              kind: 'file',
              name: 'inner',
              stat: { mode: 0o100600, secs: -5, nanos: 7 },
              data: enc.encode('inner data'),
            },
            { kind: 'dir', name: 'sub', children: [{ kind: 'fifo', name: 'p' }] },
            { kind: 'symlink', name: 'up', target: '../a.txt' },
          ],
        },
        { kind: 'device', name: 'blk', stat: { mode: 0o60660 }, major: 8, minor: 0 },
        { kind: 'device', name: 'chr', stat: { mode: 0o20666 }, major: 1, minor: 5 },
        { kind: 'hardlink', name: 'hl', target: 'dir/inner' },
        { kind: 'socket', name: 'sock' },
        { kind: 'symlink', name: 'sl', target: 'a.txt' },
      ],
    },
    {
      label: 'wide',
      tree: Array.from({ length: 20 }, (_, i): TreeNode =>
        i % 3 === 0
          ? { kind: 'file', name: `f${i}`, data: enc.encode(`file ${i}`) }
          : i % 3 === 1
            ? {
                kind: 'dir',
                name: `d${i}`,
                children: [{ kind: 'file', name: 'x', data: new Uint8Array([i]) }],
              }
            : { kind: 'hardlink', name: `h${i}`, target: `f${i - 2}` },
      ),
    },
    { label: 'empty', tree: [] },
    {
      label: 'nonutf8',
      tree: [
        { kind: 'file', name: new Uint8Array([0xff, 0xfe, 0x41]), data: new Uint8Array([1, 2, 3]) },
        { kind: 'dir', name: new Uint8Array([0xc3, 0x28]), children: [] },
      ],
    },
  ];
}

export function fuzzCorpus(): FuzzSample[] {
  const samples: FuzzSample[] = [];
  for (const { label, tree } of corpusTrees()) {
    const v1 = buildArchive(tree, {
      rootStat: { mode: 0o40755, uid: 1000, gid: 1000, secs: 1430487000 },
    });
    samples.push({ label: `${label}-v1`, archive: v1.archive });
    const v2 = buildArchive(tree, { version: 2, prelude: enc.encode('{"exclude-patterns":"x"}') });
    samples.push({ label: `${label}-v2`, archive: v2.archive, payload: v2.payload! });
    const reused = buildArchive(tree, { version: 2, v2SizeQuirk: false });
    samples.push({
      label: `${label}-v2-reused`,
      archive: reused.archive,
      payload: reused.payload!,
    });
  }
  return samples;
}

const TYPE_VALUES = Object.values(PXAR);

function interestingU64(rng: () => number, length: number): bigint {
  switch (int(rng, 12)) {
    case 0:
      return 0n;
    case 1:
      return BigInt(int(rng, 64));
    case 2:
      return 16n + BigInt(int(rng, 48));
    case 3:
      return BigInt(length);
    case 4:
      return BigInt(Math.max(0, length - int(rng, 64)));
    case 5:
      return 2n ** 32n + BigInt(int(rng, 3)) - 1n;
    case 6:
      return 2n ** 53n + BigInt(int(rng, 3)) - 1n;
    case 7:
      return 2n ** 63n;
    case 8:
      return 2n ** 64n - 1n - BigInt(int(rng, 3));
    case 9:
      return BigInt(int(rng, 0x10000));
    default:
      return TYPE_VALUES[int(rng, TYPE_VALUES.length)]!;
  }
}

function mutateBytes(
  rng: () => number,
  bytes: Uint8Array,
  donors: readonly FuzzSample[],
): Uint8Array {
  const n = bytes.length;
  const pos = (): number => int(rng, n + 1);
  switch (int(rng, 8)) {
    case 0: {
      if (n === 0) return bytes;
      const copy = bytes.slice();
      const at = int(rng, n);
      copy[at] = copy[at]! ^ (1 << int(rng, 8));
      return copy;
    }
    case 1: {
      if (n === 0) return bytes;
      const copy = bytes.slice();
      for (let k = 1 + int(rng, 4); k > 0; k--) copy[int(rng, n)] = int(rng, 256);
      return copy;
    }
    case 2:
    case 3: {
      if (n < 8) return bytes;
      const copy = bytes.slice();
      const at = int(rng, n - 7);
      new DataView(copy.buffer).setBigUint64(at, interestingU64(rng, n), true);
      return copy;
    }
    case 4:
      return bytes.slice(0, pos());
    case 5: {
      const at = pos();
      return concat([bytes.subarray(0, at), bytes.subarray(Math.min(n, at + 1 + int(rng, 64)))]);
    }
    case 6: {
      const donor = donors[int(rng, donors.length)]!.archive;
      const from = int(rng, donor.length + 1);
      const piece = donor.subarray(from, from + 1 + int(rng, 128));
      const at = pos();
      return concat([bytes.subarray(0, at), piece, bytes.subarray(at)]);
    }
    default: {
      const donor = donors[int(rng, donors.length)]!.archive;
      const from = int(rng, donor.length + 1);
      const piece = donor.subarray(from, from + 1 + int(rng, 128));
      const at = pos();
      return concat([bytes.subarray(0, at), piece, bytes.subarray(Math.min(n, at + piece.length))]);
    }
  }
}

/** The mutated input of case `seed`. */
export function fuzzInput(
  seed: number,
  corpus: readonly FuzzSample[],
): FuzzSample & { chunks: number[] } {
  const rng = makeRng(seed);
  const base = corpus[int(rng, corpus.length)]!;
  let archive = base.archive;
  let payload = base.payload;
  for (let k = 1 + int(rng, 3); k > 0; k--) {
    if (payload !== undefined && int(rng, 6) === 0) payload = mutateBytes(rng, payload, corpus);
    else archive = mutateBytes(rng, archive, corpus);
  }
  const chunks = int(rng, 4) === 0 ? [1 + int(rng, 7)] : [1 + int(rng, 5000), 1 + int(rng, 300)];
  return { label: base.label, archive, ...(payload === undefined ? {} : { payload }), chunks };
}

export type Outcome = 'ok' | `PXAR_${string}`;

export interface CaseResult {
  decoder: Outcome;
  accessor: Outcome;
}

function classify(error: unknown): Outcome {
  if (isBurrowError(error) && error.code.startsWith('PXAR_')) return error.code as Outcome;
  throw error;
}

/** Runs one case; throws (with the seed in the message) on a failure. */
export async function runFuzzCase(
  seed: number,
  corpus: readonly FuzzSample[],
  timeoutMs = 5000,
): Promise<CaseResult> {
  const input = fuzzInput(seed, corpus);
  const payload = input.payload === undefined ? undefined : bytesRandomAccess(input.payload);
  const options = payload === undefined ? {} : { payload };
  const work = async (): Promise<CaseResult> => {
    let decoded: Awaited<ReturnType<typeof decodeAll>> | undefined;
    let walked: Awaited<ReturnType<typeof walkAccessor>> | undefined;
    let decoder: Outcome = 'ok';
    let accessor: Outcome = 'ok';
    try {
      decoded = await decodeAll(input.archive, {
        ...options,
        chunk: input.chunks,
        name: 'fuzz.pxar',
      });
    } catch (error) {
      decoder = classify(error);
    }
    try {
      walked = await walkAccessor(input.archive, { ...options, name: 'fuzz.pxar' });
    } catch (error) {
      accessor = classify(error);
    }
    if (decoded !== undefined && walked !== undefined) {
      const a = decoded.entries.map((e) => ({
        path: pathText(e.path),
        body: e.body,
        metadata: e.metadata,
        at: e.fileNameOffset,
      }));
      const b = walked.entries.map((e) => ({
        path: pathText(e.path),
        body: e.body,
        metadata: e.metadata,
        at: e.fileNameOffset,
      }));
      if (JSON.stringify(a, replacer) !== JSON.stringify(b, replacer))
        throw new Error(
          'decoder and accessor both accepted the archive but disagree on its entries',
        );
      for (const [path, content] of decoded.contents) {
        const other = walked.contents.get(path);
        if (other === undefined || Buffer.compare(content, other) !== 0)
          throw new Error(`decoder and accessor disagree on the contents of ${path}`);
      }
    }
    return { decoder, accessor };
  };
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`case did not finish within ${timeoutMs} ms`)),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([work(), timeout]);
  } catch (error) {
    const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    throw new Error(`pxar fuzz case seed=${seed} (${input.label}) failed: ${message}`, {
      cause: error,
    });
  } finally {
    clearTimeout(timer);
  }
}

function replacer(_key: string, value: unknown): unknown {
  if (value instanceof Uint8Array) return Buffer.from(value).toString('hex');
  return value;
}
