// Lint: type-aware typescript-eslint rules plus the layer rules of ARCHITECTURE.md.
// The layer rules are import zones: a file under `target` may not import from `from`.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';
import globals from 'globals';

const layer = (name) => `./src/${name}`;
const everythingBut = (...allowed) =>
  [
    'types',
    'lib',
    'format',
    'crypto',
    'chunker',
    'pxar',
    'datastore',
    'tasks',
    'server',
    'client',
    'cli',
  ]
    .filter((l) => !allowed.includes(l))
    .map(layer);

const layerZones = [
  // lib: small helpers that know nothing of the project.
  {
    target: layer('lib'),
    from: everythingBut('lib'),
    message: 'lib/ imports nothing else from the project',
  },
  // types: shared words; only the error helpers of lib.
  {
    target: layer('types'),
    from: everythingBut('types', 'lib'),
    message: 'types/ imports only lib/',
  },
  // pure codecs: types, lib and each other.
  ...['format', 'crypto', 'chunker', 'pxar'].map((l) => ({
    target: layer(l),
    from: everythingBut('types', 'lib', 'format', 'crypto', 'chunker', 'pxar'),
    message: `${l}/ is a pure codec layer: it imports only types/, lib/ and the other codec layers`,
  })),
  {
    target: layer('datastore'),
    from: ['server', 'client', 'cli'].map(layer),
    message: 'datastore/ never imports server/, client/ or cli/',
  },
  {
    target: layer('tasks'),
    from: ['server', 'client', 'cli'].map(layer),
    message: 'tasks/ never imports server/, client/ or cli/',
  },
  {
    target: layer('server'),
    from: ['client', 'cli'].map(layer),
    message: 'server/ never imports client/ or cli/',
  },
  {
    target: layer('client'),
    from: ['server', 'cli'].map(layer),
    message: 'client/ never imports server/ or cli/',
  },
];

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      globals: { ...globals.node },
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { 'import-x': importX },
    // The layer zones compare resolved file paths, so `./x.js` must resolve to `./x.ts`.
    settings: {
      'import-x/resolver-next': [createTypeScriptImportResolver({ project: './tsconfig.json' })],
    },
    rules: {
      'import-x/no-restricted-paths': ['error', { zones: layerZones }],
      '@typescript-eslint/only-throw-error': 'error',
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
  },
);
