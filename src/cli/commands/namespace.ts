/**
 * `burrow-manager namespace create|list|remove <store> [<ns>]`: the namespaces of a local store
 * (`ns/<a>/ns/<b>` directories, pbs-formats §6.4), as PBS's client `namespace` commands manage
 * them through the API.
 */
import type { Command } from 'commander';
import { DataStore } from '../../datastore/datastore.js';
import { BurrowError } from '../../lib/errors.js';
import {
  MAX_NAMESPACE_DEPTH,
  isRootNamespace,
  namespaceToString,
  parseNamespace,
} from '../../types/backup.js';
import { integerOption, managerContext } from '../manager-context.js';
import { renderTable } from '../output.js';
import { outputFormatOption } from '../run.js';

/** A namespace as PBS's namespace list returns it: its path, `''` for the root. */
export interface NamespaceItem {
  ns: string;
}

function requireNamespace(text: string, action: string) {
  const ns = parseNamespace(text);
  if (isRootNamespace(ns)) {
    throw new BurrowError('INVALID_ARGUMENT', `cannot ${action} the root namespace`);
  }
  return ns;
}

export function registerNamespaceCommands(program: Command): void {
  const namespace = program
    .command('namespace')
    .description('manage the namespaces of a datastore');

  namespace
    .command('create')
    .description('create a namespace; its parent must exist')
    .argument('<store>', 'datastore name')
    .argument('<ns>', 'namespace path, e.g. a/b')
    .addOption(outputFormatOption())
    .action(
      async (name: string, nsText: string, options: { outputFormat: string }, command: Command) => {
        const { dirs, printer } = managerContext(command, options);
        const ns = requireNamespace(nsText, 'create');
        const store = await DataStore.lookup(name, { dirs, operation: 'write' });
        await store.createNamespace(ns);
        printer.result({ ns: namespaceToString(ns) }, (r) => `created namespace '${r.ns}'`);
      },
    );

  namespace
    .command('list')
    .description('list a namespace (default: the root) and the namespaces below it')
    .argument('<store>', 'datastore name')
    .argument('[ns]', 'namespace to start from (default: the root)')
    .option(
      '--max-depth <n>',
      `how many levels below <ns> to list (0..${MAX_NAMESPACE_DEPTH}; default all)`,
      integerOption('--max-depth'),
    )
    .addOption(outputFormatOption())
    .action(
      async (
        name: string,
        nsText: string | undefined,
        options: { outputFormat: string; maxDepth?: number },
        command: Command,
      ) => {
        const { dirs, printer } = managerContext(command, options);
        if (options.maxDepth !== undefined && options.maxDepth > MAX_NAMESPACE_DEPTH) {
          throw new BurrowError(
            'INVALID_ARGUMENT',
            `--max-depth must be at most ${MAX_NAMESPACE_DEPTH}, got ${options.maxDepth}`,
          );
        }
        const parent = parseNamespace(nsText ?? '');
        const store = await DataStore.lookup(name, { dirs, operation: 'read' });
        const list = await store.listNamespaces(parent, options.maxDepth);
        printer.result(
          list.map((ns): NamespaceItem => ({ ns: namespaceToString(ns) })),
          (items) =>
            renderTable(
              [
                {
                  header: 'namespace',
                  value: (i: NamespaceItem) => (i.ns === '' ? '(root)' : i.ns),
                },
              ],
              items,
            ),
        );
      },
    );

  namespace
    .command('remove')
    .alias('delete')
    .description('remove an empty namespace, or with --delete-groups everything in it')
    .argument('<store>', 'datastore name')
    .argument('<ns>', 'namespace path')
    .option('--delete-groups', 'also remove the backup groups in it and in the namespaces below it')
    .addOption(outputFormatOption())
    .action(
      async (
        name: string,
        nsText: string,
        options: { outputFormat: string; deleteGroups?: boolean },
        command: Command,
      ) => {
        const { dirs, printer } = managerContext(command, options);
        const ns = requireNamespace(nsText, 'remove');
        const store = await DataStore.lookup(name, { dirs, operation: 'write' });
        if (!(await store.namespaceExists(ns))) {
          throw new BurrowError(
            'NOT_FOUND',
            `namespace '${namespaceToString(ns)}' does not exist in datastore '${name}'`,
            {
              details: { datastore: name, ns: namespaceToString(ns) },
            },
          );
        }
        const { removedAll } = await store.removeNamespace(ns, {
          deleteGroups: options.deleteGroups === true,
        });
        const result = { ns: namespaceToString(ns), removed: removedAll };
        if (!removedAll) {
          throw new BurrowError(
            'NOT_EMPTY',
            options.deleteGroups === true
              ? `namespace '${result.ns}' was only partly removed: it holds protected snapshots`
              : `namespace '${result.ns}' is not empty; pass --delete-groups to remove its groups too`,
            { details: result },
          );
        }
        printer.result(result, (r) => `removed namespace '${r.ns}'`);
      },
    );
}
