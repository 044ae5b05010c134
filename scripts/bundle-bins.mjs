// Links each CLI into one file, written over tsc's dist/cli/burrow.js and burrow-manager.js
// (package.json's bins), with the chunk worker beside them and the modules they share in
// dist/cli/bundled-*.js. Node 20 resolves, reads and compiles each ES module on its own, and a
// command loads about 115 of them: about 0.1 s of every command's start.
// esbuild reads src/ directly (the tsconfig has isolatedModules and verbatimModuleSyntax, so it
// strips types as tsc would); the rest of dist/ stays tsc's, for the library and its types. Run
// after tsc (npm run build); tsc alone leaves working, unbundled CLIs.
//
// Paths that code finds from import.meta.url (package.json, build/Release/*.node, the worker
// next to the bin) are relative; dist/cli/ sits two levels below the package root as src/lib/
// and dist/lib/ do, so they hold for every build. test/e2e/bundled-bins.test.ts runs the result.
import { build } from 'esbuild';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../', import.meta.url));
const outdir = join(root, 'dist', 'cli');
// Chunk names carry a content hash: drop those of an earlier build.
for (const name of existsSync(outdir) ? readdirSync(outdir) : [])
  if (name.startsWith('bundled-')) rmSync(join(outdir, name));

await build({
  absWorkingDir: root,
  entryPoints: {
    burrow: 'src/cli/burrow.ts',
    'burrow-manager': 'src/cli/burrow-manager.ts',
    // The pool starts `chunk-worker.js` beside the module that holds it (src/client/worker-pool.ts).
    'chunk-worker': 'src/client/chunk-worker.ts',
  },
  outdir,
  chunkNames: 'bundled-[name]-[hash]',
  bundle: true,
  // Shared modules go into chunk files; code behind a dynamic import (the HTTP client) is only
  // read when a command needs it.
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // zstd-napi loads a native addon by path; pino starts worker threads by file name.
  external: ['zstd-napi', 'pino'],
  // Bundled CommonJS packages (commander) call require(), which an ES module does not have.
  banner: {
    js: "import { createRequire as burrowCreateRequire } from 'node:module'; const require = burrowCreateRequire(import.meta.url);",
  },
  sourcemap: 'linked',
  logLevel: 'warning',
});
