/**
 * `burrow-manager acl update|list`: the access control list (acl.cfg), as
 * `proxmox-backup-manager acl` manages it. A change applies to a running server at its next
 * request.
 */
import type { Command } from 'commander';
import { ServerAccess, type AclListItem } from '../../server/access/index.js';
import { managerContext, parseBooleanText } from '../manager-context.js';
import { renderTable } from '../output.js';
import { outputFormatOption } from '../run.js';

export function renderAcl(entries: readonly AclListItem[]): string {
  return renderTable(
    [
      { header: 'ugid', value: (e: AclListItem) => e.ugid },
      { header: 'path', value: (e) => e.path },
      { header: 'propagate', value: (e) => (e.propagate ? '1' : '0') },
      { header: 'roleid', value: (e) => e.roleid },
    ],
    entries,
  );
}

export function registerAclCommands(program: Command): void {
  const acl = program.command('acl').description('manage the access control list');

  acl
    .command('update')
    .description('grant a role on an ACL path (or take it away with --delete)')
    .argument('<path>', 'ACL path: /, /datastore/<store>[/<ns>...], /system, /remote/..., ...')
    .argument('<role>', 'role, e.g. DatastoreBackup, DatastoreAdmin, Audit, NoAccess, Admin')
    .requiredOption('--auth-id <authid>', 'user or API token the entry is for')
    .option('--propagate <bool>', 'whether the role holds below the path too (default true)', (v) =>
      parseBooleanText('--propagate', v),
    )
    .option('--delete', 'remove the role instead of adding it')
    .addOption(outputFormatOption())
    .action(
      async (
        path: string,
        role: string,
        options: { outputFormat: string; authId: string; propagate?: boolean; delete?: boolean },
        command: Command,
      ) => {
        const { dirs, printer } = managerContext(command, options);
        const access = await ServerAccess.open(dirs);
        await access.updateAcl({
          path,
          role,
          authId: options.authId,
          propagate: options.propagate ?? true,
          delete: options.delete === true,
        });
        const result = {
          path,
          role,
          'auth-id': options.authId,
          propagate: options.propagate ?? true,
          deleted: options.delete === true,
        };
        printer.result(result, (r) =>
          r.deleted
            ? `removed role ${r.role} of ${r['auth-id']} on ${r.path}`
            : `granted role ${r.role} to ${r['auth-id']} on ${r.path}${r.propagate ? '' : ' (not propagated)'}`,
        );
      },
    );

  acl
    .command('list')
    .description('list ACL entries')
    .option('--path <path>', 'only entries on this path and below it')
    .option('--exact', 'with --path: only entries on exactly that path')
    .addOption(outputFormatOption())
    .action(
      async (
        options: { outputFormat: string; path?: string; exact?: boolean },
        command: Command,
      ) => {
        const { dirs, printer } = managerContext(command, options);
        const access = await ServerAccess.open(dirs);
        const { entries } = await access.readAcl({
          ...(options.path === undefined ? {} : { path: options.path }),
          exact: options.exact === true,
        });
        printer.result(entries, renderAcl);
      },
    );
}
