/**
 * `burrow-manager user create|update|remove|list|generate-token|list-tokens|delete-token|
 * permissions`: users and API tokens in the config directory (user.cfg, shadow.json,
 * token.shadow), as `proxmox-backup-manager user` manages them. The changes apply to a running
 * server at its next request.
 */
import type { Command } from 'commander';
import { BurrowError } from '../../lib/errors.js';
import { ServerAccess, type UserInfo } from '../../server/access/index.js';
import type { TokenEntry, UserDeletable, UserProps } from '../../server/access/index.js';
import { parseAuthid } from '../../types/auth.js';
import { integerOption, managerContext, parseBooleanText } from '../manager-context.js';
import { formatEpoch, renderKeyValues, renderTable } from '../output.js';
import { readPassphrase } from '../passphrase.js';
import { outputFormatOption } from '../run.js';

/** Where `user create` takes a password from when --password is not given. */
export const NEW_PASSWORD_ENV = 'BURROW_USER_PASSWORD';

const DELETABLE: readonly UserDeletable[] = ['comment', 'firstname', 'lastname', 'email'];

interface UserOptions {
  outputFormat: string;
  password?: string;
  comment?: string;
  email?: string;
  enable?: boolean;
  expire?: number;
  firstname?: string;
  lastname?: string;
  delete?: string[];
}

const repeatable = (value: string, previous: string[] = []): string[] => [...previous, value];

function addUserOptions(command: Command): Command {
  return command
    .option('--comment <text>', 'comment')
    .option('--email <address>', 'e-mail address')
    .option('--enable <bool>', 'enable the account (default true)', (v) =>
      parseBooleanText('--enable', v),
    )
    .option(
      '--expire <epoch>',
      'account expiration date, seconds since the epoch (0: never)',
      integerOption('--expire'),
    )
    .option('--firstname <name>', 'first name')
    .option('--lastname <name>', 'last name')
    .addOption(outputFormatOption());
}

function propsOf(options: UserOptions): UserProps {
  const props: UserProps = {};
  if (options.comment !== undefined) props.comment = options.comment;
  if (options.email !== undefined) props.email = options.email;
  if (options.enable !== undefined) props.enable = options.enable;
  if (options.expire !== undefined) props.expire = options.expire;
  if (options.firstname !== undefined) props.firstname = options.firstname;
  if (options.lastname !== undefined) props.lastname = options.lastname;
  return props;
}

/** --password, else $BURROW_USER_PASSWORD, else a hidden prompt (twice) on a terminal, else none. */
async function newPassword(userid: string, given: string | undefined): Promise<string | undefined> {
  if (given !== undefined) return given;
  if (process.env[NEW_PASSWORD_ENV] !== undefined) return process.env[NEW_PASSWORD_ENV];
  if (!process.stdin.isTTY || !process.stderr.isTTY) return undefined;
  const first = await readPassphrase(`Password for ${userid}`, NEW_PASSWORD_ENV);
  const second = await readPassphrase('Retype password', NEW_PASSWORD_ENV);
  if (first !== second) throw new BurrowError('INVALID_ARGUMENT', 'the passwords do not match');
  return first;
}

/** How `expire` reads for people: 0 or absent is never. */
export function expireText(expire: number | undefined): string {
  return expire === undefined || expire === 0 ? 'never' : formatEpoch(expire);
}

const enableText = (enable: boolean | undefined): string => (enable === false ? '0' : '1');

export function renderUsers(users: readonly UserInfo[]): string {
  return renderTable(
    [
      { header: 'userid', value: (u: UserInfo) => u.userid },
      { header: 'enable', value: (u) => enableText(u.enable) },
      { header: 'expire', value: (u) => expireText(u.expire) },
      { header: 'firstname', value: (u) => u.firstname ?? '' },
      { header: 'lastname', value: (u) => u.lastname ?? '' },
      { header: 'email', value: (u) => u.email ?? '' },
      { header: 'comment', value: (u) => u.comment ?? '' },
    ],
    users,
  );
}

export function renderTokens(tokens: readonly TokenEntry[]): string {
  return renderTable(
    [
      { header: 'tokenid', value: (t: TokenEntry) => t.tokenid },
      { header: 'enable', value: (t) => enableText(t.enable) },
      { header: 'expire', value: (t) => expireText(t.expire) },
      { header: 'comment', value: (t) => t.comment ?? '' },
    ],
    tokens,
  );
}

/** PBS's text form of a permission map: one block per path, `(*)` marking propagated ones. */
export function renderPermissions(map: Record<string, Record<string, boolean>>): string {
  const paths = Object.keys(map);
  if (paths.length === 0) return 'no privileges';
  const blocks = paths.map((path) => {
    const lines = Object.entries(map[path] ?? {}).map(
      ([privilege, propagated]) => `- ${privilege}${propagated ? ' (*)' : ''}`,
    );
    return [`Path: ${path}`, ...lines].join('\n');
  });
  return ['Privileges with (*) have the propagate flag set', ...blocks].join('\n\n');
}

export function registerUserCommands(program: Command): void {
  const user = program.command('user').description('manage users and API tokens');

  addUserOptions(
    user
      .command('create')
      .description('create a user (realm pbs or pam)')
      .argument('<userid>', 'user ID, <name>@<realm>')
      .option(
        '--password <password>',
        `password (else $${NEW_PASSWORD_ENV}, else asked on a terminal, else none)`,
      ),
  ).action(async (userid: string, options: UserOptions, command: Command) => {
    const { dirs, printer } = managerContext(command, options);
    const access = await ServerAccess.open(dirs);
    const password = await newPassword(userid, options.password);
    await access.createUser({ userid, ...propsOf(options) }, password);
    const { user: created } = await access.getUser(userid);
    printer.result(
      created,
      (u) => `created user '${u.userid}'${password === undefined ? ' (no password)' : ''}`,
    );
  });

  addUserOptions(
    user
      .command('update')
      .description('change a user; properties not given stay as they are')
      .argument('<userid>', 'user ID')
      .option('--password <password>', 'new password')
      .option(
        '--delete <property>',
        `remove a property: ${DELETABLE.join(', ')} (repeatable)`,
        repeatable,
      ),
  ).action(async (userid: string, options: UserOptions, command: Command) => {
    const { dirs, printer } = managerContext(command, options);
    const remove = options.delete ?? [];
    for (const name of remove) {
      if (!(DELETABLE as readonly string[]).includes(name)) {
        throw new BurrowError(
          'INVALID_ARGUMENT',
          `--delete: '${name}' is not one of ${DELETABLE.join(', ')}`,
        );
      }
    }
    const access = await ServerAccess.open(dirs);
    await access.updateUser(userid, {
      ...propsOf(options),
      ...(options.password === undefined ? {} : { password: options.password }),
      delete: remove as UserDeletable[],
    });
    const { user: updated } = await access.getUser(userid);
    printer.result(updated, (u) => `updated user '${u.userid}'`);
  });

  user
    .command('remove')
    .alias('delete')
    .description('remove a user with its password, API tokens and ACL entries')
    .argument('<userid>', 'user ID')
    .addOption(outputFormatOption())
    .action(async (userid: string, options: { outputFormat: string }, command: Command) => {
      const { dirs, printer } = managerContext(command, options);
      const access = await ServerAccess.open(dirs);
      await access.deleteUser(userid);
      printer.result({ userid }, (r) => `removed user '${r.userid}'`);
    });

  user
    .command('list')
    .description('list users')
    .option('--include-tokens', "include each user's API tokens (JSON output)")
    .addOption(outputFormatOption())
    .action(
      async (options: { outputFormat: string; includeTokens?: boolean }, command: Command) => {
        const { dirs, printer } = managerContext(command, options);
        const access = await ServerAccess.open(dirs);
        const { users } = await access.listUsers({ includeTokens: options.includeTokens === true });
        printer.result(users, (list) => {
          const table = renderUsers(list);
          const tokens = list.flatMap((u) => u.tokens ?? []);
          return tokens.length === 0 ? table : `${table}\n\n${renderTokens(tokens)}`;
        });
      },
    );

  user
    .command('generate-token')
    .description('create an API token; its secret is shown only now')
    .argument('<userid>', 'user ID')
    .argument('<name>', 'token name')
    .option('--comment <text>', 'comment')
    .option('--enable <bool>', 'enable the token (default true)', (v) =>
      parseBooleanText('--enable', v),
    )
    .option(
      '--expire <epoch>',
      'expiration date, seconds since the epoch (0: never)',
      integerOption('--expire'),
    )
    .addOption(outputFormatOption())
    .action(
      async (
        userid: string,
        name: string,
        options: { outputFormat: string; comment?: string; enable?: boolean; expire?: number },
        command: Command,
      ) => {
        const { dirs, printer } = managerContext(command, options);
        const access = await ServerAccess.open(dirs);
        const token = await access.generateToken(userid, name, {
          ...(options.comment === undefined ? {} : { comment: options.comment }),
          ...(options.enable === undefined ? {} : { enable: options.enable }),
          ...(options.expire === undefined ? {} : { expire: options.expire }),
        });
        printer.result(token, (t) =>
          [
            renderKeyValues([
              ['tokenid', t.tokenid],
              ['secret', t.value],
            ]),
            '',
            'The secret is shown only now: store it safely, it cannot be shown again.',
          ].join('\n'),
        );
      },
    );

  user
    .command('list-tokens')
    .description("list a user's API tokens")
    .argument('<userid>', 'user ID')
    .addOption(outputFormatOption())
    .action(async (userid: string, options: { outputFormat: string }, command: Command) => {
      const { dirs, printer } = managerContext(command, options);
      const access = await ServerAccess.open(dirs);
      const { tokens } = await access.listTokens(userid);
      printer.result(tokens, renderTokens);
    });

  user
    .command('delete-token')
    .description('remove an API token with its secret and ACL entries')
    .argument('<userid>', 'user ID')
    .argument('<name>', 'token name')
    .addOption(outputFormatOption())
    .action(
      async (userid: string, name: string, options: { outputFormat: string }, command: Command) => {
        const { dirs, printer } = managerContext(command, options);
        const access = await ServerAccess.open(dirs);
        await access.deleteToken(userid, name);
        printer.result({ userid, name }, () => `removed API token '${userid}!${name}'`);
      },
    );

  user
    .command('permissions')
    .description('show the effective privileges of a user or API token')
    .argument('<authid>', 'user ID or API token ID (<userid>!<name>)')
    .option('--path <path>', 'only this ACL path (default: every path with privileges)')
    .addOption(outputFormatOption())
    .action(
      async (
        authidText: string,
        options: { outputFormat: string; path?: string },
        command: Command,
      ) => {
        const { dirs, printer } = managerContext(command, options);
        const authId = parseAuthid(authidText);
        const access = await ServerAccess.open(dirs);
        if (!(await access.authidExists(authId))) {
          throw new BurrowError('NOT_FOUND', `user or API token '${authidText}' does not exist`, {
            details: { authId: authidText },
          });
        }
        const map = await access.permissions(authId, options.path);
        printer.result(map, (m) => renderPermissions(m as Record<string, Record<string, boolean>>));
      },
    );
}
