/**
 * `burrow snapshot list|files|forget|notes|protected`: proxmox-backup-client's snapshot commands
 * on a local repository. Reading is for everyone who can read the store; changing a snapshot is
 * for its group's owner (or root), as PBS allows its owner.
 */
import type { Command } from 'commander';
import type { SnapshotInfo } from '../../datastore/backup-info.js';
import type { DataStore } from '../../datastore/datastore.js';
import { parseVerifyState } from '../../datastore/verify-filter.js';
import { KEY_FINGERPRINT_KEY, MANIFEST_BLOB_NAME } from '../../format/manifest.js';
import { formatUpid } from '../../format/upid.js';
import { formatAuthid } from '../../types/auth.js';
import { formatSnapshot, type BackupDir, type BackupGroup } from '../../types/backup.js';
import type { CryptMode } from '../../types/crypt-mode.js';
import {
  addNamespaceOption,
  checkGroupOwner,
  clientContext,
  namespaceOf,
} from '../client-context.js';
import { groupArgument, parseBooleanText, snapshotArgument } from '../manager-context.js';
import {
  humanBytes,
  renderKeyValues,
  renderTable,
  snapshotIdentity,
  type SnapshotIdentity,
} from '../output.js';
import { outputFormatOption } from '../run.js';

/** A file of a snapshot, as PBS's BackupContent. */
export interface BackupContent {
  filename: string;
  size?: number;
  'crypt-mode'?: CryptMode;
}

/** PBS's SnapshotListItem, plus the snapshot path, whether it finished, and a read error. */
export interface SnapshotListItem extends SnapshotIdentity {
  finished: boolean;
  protected: boolean;
  files: BackupContent[];
  size?: number;
  comment?: string;
  verification?: { state: string; upid: string };
  fingerprint?: string;
  owner?: string;
  error?: string;
}

/** The files of a finished snapshot from its manifest (the manifest itself first, as PBS lists it). */
async function manifestFiles(
  store: DataStore,
  dir: BackupDir,
): Promise<{ files: BackupContent[]; notes: string; verify: unknown; fingerprint?: string }> {
  const { manifest, raw } = await store.loadManifest(dir);
  const files: BackupContent[] = [
    {
      filename: MANIFEST_BLOB_NAME,
      size: raw.byteLength,
      'crypt-mode': manifestCryptMode(manifest.signature),
    },
    ...manifest.files.map((f) => ({
      filename: f.filename,
      size: f.size,
      'crypt-mode': f.cryptMode,
    })),
  ];
  const notes = manifest.unprotected['notes'];
  const fingerprint = manifest.unprotected[KEY_FINGERPRINT_KEY];
  return {
    files,
    notes: typeof notes === 'string' ? notes : '',
    verify: manifest.unprotected['verify_state'],
    ...(typeof fingerprint === 'string' ? { fingerprint } : {}),
  };
}

/** PBS shows the manifest as sign-only when it carries a signature. */
const manifestCryptMode = (signature: string | null): CryptMode =>
  signature === null ? 'none' : 'sign-only';

export async function snapshotListItem(
  store: DataStore,
  info: SnapshotInfo,
  owner: string | undefined,
): Promise<SnapshotListItem> {
  const item: SnapshotListItem = {
    ...snapshotIdentity(info.dir),
    finished: info.finished,
    protected: info.protected,
    files: info.files.map((filename) => ({ filename })),
    ...(owner === undefined ? {} : { owner }),
  };
  if (info.error !== undefined) item.error = info.error;
  if (!info.finished || info.error !== undefined) return item;
  try {
    const m = await manifestFiles(store, info.dir);
    item.files = m.files;
    item.size = m.files.reduce((sum, f) => sum + (f.size ?? 0), 0);
    const comment = m.notes.split('\n', 1)[0] ?? '';
    if (comment !== '') item.comment = comment;
    const verify = parseVerifyState(m.verify);
    if (verify !== undefined)
      item.verification = { state: verify.state, upid: formatUpid(verify.upid) };
    if (m.fingerprint !== undefined) item.fingerprint = m.fingerprint;
  } catch (error) {
    // A damaged manifest must not hide the snapshot, nor the others.
    item.error = error instanceof Error ? error.message : String(error);
  }
  return item;
}

const stripExtension = (name: string): string => name.replace(/\.(blob|didx|fidx)$/, '');

function stateOf(s: SnapshotListItem): string {
  if (s.error !== undefined) return 'damaged';
  if (!s.finished) return 'unfinished';
  return s.verification?.state ?? '';
}

export function renderSnapshotList(items: readonly SnapshotListItem[]): string {
  return renderTable(
    [
      { header: 'snapshot', value: (s: SnapshotListItem) => s.snapshot },
      {
        header: 'size',
        value: (s) => (s.size === undefined ? '' : humanBytes(s.size)),
        align: 'right',
      },
      { header: 'protected', value: (s) => (s.protected ? 'yes' : '') },
      { header: 'state', value: stateOf },
      {
        header: 'files',
        value: (s) => s.files.map((f) => stripExtension(f.filename)).join(' '),
      },
      { header: 'comment', value: (s) => s.comment ?? '' },
    ],
    items,
  );
}

async function ownerText(store: DataStore, group: BackupGroup): Promise<string | undefined> {
  try {
    return formatAuthid(await store.getOwner(group));
  } catch {
    return undefined;
  }
}

type NsOptions = { outputFormat: string; ns?: string };

/** A command with `--ns` and `--output-format`. */
const withCommon = (command: Command): Command =>
  addNamespaceOption(command).addOption(outputFormatOption());

export function registerClientSnapshotCommands(program: Command): void {
  const snapshot = program
    .command('snapshot')
    .description('list, inspect and change the snapshots of the repository');

  withCommon(
    snapshot
      .command('list')
      .description('list the snapshots of one group, or of every group in the namespace')
      .argument('[group]', 'backup group <type>/<id> (default: all groups)'),
  ).action(async (groupText: string | undefined, options: NsOptions, command: Command) => {
    const ctx = clientContext(command, options);
    const repo = await ctx.repository();
    const groups =
      groupText === undefined
        ? await repo.store.listGroups(namespaceOf(options))
        : [groupArgument(groupText, options.ns)];
    const items: SnapshotListItem[] = [];
    for (const group of groups) {
      const owner = await ownerText(repo.store, group);
      for (const info of await repo.store.listSnapshots(group))
        items.push(await snapshotListItem(repo.store, info, owner));
    }
    ctx.printer.result(items, renderSnapshotList);
  });

  withCommon(
    snapshot
      .command('files')
      .description('list the files of a snapshot with size and crypt mode')
      .argument('<snapshot>', 'snapshot <type>/<id>/<time>'),
  ).action(async (text: string, options: NsOptions, command: Command) => {
    const ctx = clientContext(command, options);
    const dir = snapshotArgument(text, options.ns);
    const repo = await ctx.repository();
    const info = await repo.store.snapshotInfo(dir);
    const files: BackupContent[] = info.finished
      ? (await manifestFiles(repo.store, dir)).files
      : info.files.map((filename) => ({ filename }));
    ctx.printer.result(files, (list) =>
      renderTable(
        [
          { header: 'filename', value: (f: BackupContent) => f.filename },
          {
            header: 'size',
            value: (f) => (f.size === undefined ? '' : String(f.size)),
            align: 'right',
          },
          { header: 'crypt-mode', value: (f) => f['crypt-mode'] ?? '' },
        ],
        list,
      ),
    );
  });

  withCommon(
    snapshot
      .command('forget')
      .description('remove a snapshot (refused when it is protected)')
      .argument('<snapshot>', 'snapshot <type>/<id>/<time>'),
  ).action(async (text: string, options: NsOptions, command: Command) => {
    const ctx = clientContext(command, options);
    const dir = snapshotArgument(text, options.ns);
    const repo = await ctx.repository();
    await repo.store.snapshotInfo(dir);
    await checkGroupOwner(repo, dir.group);
    await repo.store.removeBackupDir(dir, false);
    ctx.printer.result(
      { snapshot: formatSnapshot(dir), removed: true },
      (r) => `removed snapshot ${r.snapshot}`,
    );
  });

  const notes = snapshot.command('notes').description("show or change a snapshot's notes");
  withCommon(
    notes
      .command('show')
      .description("print a snapshot's notes")
      .argument('<snapshot>', 'snapshot <type>/<id>/<time>'),
  ).action(async (text: string, options: NsOptions, command: Command) => {
    const ctx = clientContext(command, options);
    const dir = snapshotArgument(text, options.ns);
    const repo = await ctx.repository();
    const value = await repo.store.getSnapshotNotes(dir);
    ctx.printer.result({ snapshot: formatSnapshot(dir), notes: value }, (r) => r.notes);
  });
  withCommon(
    notes
      .command('update')
      .description("replace a snapshot's notes (an empty text removes them)")
      .argument('<snapshot>', 'snapshot <type>/<id>/<time>')
      .argument('<notes>', 'the new notes'),
  ).action(async (text: string, value: string, options: NsOptions, command: Command) => {
    const ctx = clientContext(command, options);
    const dir = snapshotArgument(text, options.ns);
    const repo = await ctx.repository();
    await repo.store.snapshotInfo(dir);
    await checkGroupOwner(repo, dir.group);
    await repo.store.setSnapshotNotes(dir, value);
    ctx.printer.result(
      { snapshot: formatSnapshot(dir), notes: await repo.store.getSnapshotNotes(dir) },
      (r) => `updated the notes of ${r.snapshot}`,
    );
  });

  const prot = snapshot
    .command('protected')
    .description('show or change whether a snapshot is protected from prune and forget');
  const renderProtected = (r: { snapshot: string; protected: boolean }): string =>
    renderKeyValues([
      ['snapshot', r.snapshot],
      ['protected', r.protected],
    ]);
  withCommon(
    prot
      .command('show')
      .description('show whether a snapshot is protected')
      .argument('<snapshot>', 'snapshot <type>/<id>/<time>'),
  ).action(async (text: string, options: NsOptions, command: Command) => {
    const ctx = clientContext(command, options);
    const dir = snapshotArgument(text, options.ns);
    const repo = await ctx.repository();
    await repo.store.snapshotInfo(dir);
    ctx.printer.result(
      { snapshot: formatSnapshot(dir), protected: await repo.store.isProtected(dir) },
      renderProtected,
    );
  });
  withCommon(
    prot
      .command('update')
      .description('protect (true) or unprotect (false) a snapshot')
      .argument('<snapshot>', 'snapshot <type>/<id>/<time>')
      .argument('<protected>', 'true or false'),
  ).action(async (text: string, value: string, options: NsOptions, command: Command) => {
    const ctx = clientContext(command, options);
    const dir = snapshotArgument(text, options.ns);
    const wanted = parseBooleanText('protected', value);
    const repo = await ctx.repository();
    await repo.store.snapshotInfo(dir);
    await checkGroupOwner(repo, dir.group);
    await repo.store.setProtected(dir, wanted);
    ctx.printer.result(
      { snapshot: formatSnapshot(dir), protected: await repo.store.isProtected(dir) },
      renderProtected,
    );
  });
}
