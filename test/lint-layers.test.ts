import { ESLint } from 'eslint';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));

// Only the layer rule runs here: the point is that ARCHITECTURE.md's import rules are enforced.
async function layerErrors(filePath: string, source: string): Promise<string[]> {
  const eslint = new ESLint({
    cwd: root,
    overrideConfig: [
      {
        files: ['**/*.ts'],
        languageOptions: { parserOptions: { projectService: false, project: null } },
      },
    ],
    ruleFilter: ({ ruleId }) => ruleId === 'import-x/no-restricted-paths',
  });
  const [result] = await eslint.lintText(source, { filePath: `${root}${filePath}` });
  return (result?.messages ?? []).map((m) => m.message);
}

describe('layer rules (ARCHITECTURE.md)', () => {
  it('forbid a codec importing the datastore, and lib importing anything', async () => {
    expect(
      await layerErrors(
        'src/format/probe.ts',
        "import { readIndexFile } from '../datastore/index-file.js';\nvoid readIndexFile;\n",
      ),
    ).toEqual([expect.stringContaining('pure codec layer')]);
    expect(
      await layerErrors(
        'src/lib/probe.ts',
        "import { MAX_BLOB_SIZE } from '../format/magic.js';\nvoid MAX_BLOB_SIZE;\n",
      ),
    ).toEqual([expect.stringContaining('lib/ imports nothing')]);
    expect(
      await layerErrors(
        'src/datastore/probe.ts',
        "import { runProgram } from '../cli/run.js';\nvoid runProgram;\n",
      ),
    ).toEqual([expect.stringContaining('datastore/ never imports')]);
  });

  it('allow the imports the architecture allows', async () => {
    expect(
      await layerErrors(
        'src/datastore/probe.ts',
        "import { MAX_BLOB_SIZE } from '../format/magic.js';\nvoid MAX_BLOB_SIZE;\n",
      ),
    ).toEqual([]);
    expect(
      await layerErrors(
        'src/types/probe.ts',
        "import { BurrowError } from '../lib/errors.js';\nvoid BurrowError;\n",
      ),
    ).toEqual([]);
  });
});
