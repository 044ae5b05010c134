/**
 * `burrow-manager snapshot list|forget|protected|notes` and `group list`: what PBS's client does
 * with these commands through the API, done here directly on a local store named in
 * datastore.cfg.
 */
import type { Command } from 'commander';
import { DataStore } from '../../datastore/datastore.js';
import type { SnapshotInfo } from '../../datastore/backup-info.js';
import { MANIFEST_BLOB_NAME, type BackupManifest } from '../../format/manifest.js';
import { formatUpid } from '../../format/upid.js';
import { parseVerifyState } from '../../datastore/verify-filter.js';
import { formatAuthid } from '../../types/auth.js';
import {
  formatGroup,
  formatSnapshot,
  namespaceToString,
  type BackupGroup,
  type BackupNamespace,
} from '../../types/backup.js';
import {
  groupArgument,
  managerContext,
  namespaceOption,
  parseBooleanText,
  snapshotArgument,
} from '../manager-context.js';
import {
  formatEpoch,
  humanBytes,
  renderKeyValues,
  renderTable,
  snapshotIdentity,
  type SnapshotIdentity,
} from '../output.js';
import { outputFormatOption } from '../run.js';

/** PBS's snapshot list item, plus the snapshot path and whether it is finished. */
export interface SnapshotItem extends SnapshotIdentity {
  finished: boolean;
  protected: boolean;
  files: string[];
  size?: number;
  comment?: string;
  verification?: { state: string; upid: string };
  owner?: string;
  /** Why the snapshot directory or its manifest could not be read, when it could not. */
  error?: string;
}

/** The first line of the notes, as PBS shows a snapshot's comment. */
const firstLine = (notes: string): string => notes.split('\n', 1)[0] ?? '';

function manifestNotes(manifest: BackupManifest): string {
  const notes = manifest.unprotected['notes'];
  return typeof notes === 'string' ? notes : '';
}

async function snapshotItem(
  store: DataStore,
  info: SnapshotInfo,
  owner: string | undefined,
): Promise<SnapshotItem> {
  const item: SnapshotItem = {
    ...snapshotIdentity(info.dir),
    finished: info.finished,
    protected: info.protected,
    files: [...info.files].sort(),
    ...(owner === undefined ? {} : { owner }),
  };
  if (info.error !== undefined) item.error = info.error;
  if (!info.finished || info.error !== undefined) return item;
  try {
    const { manifest, raw } = await store.loadManifest(info.dir);
    item.size = manifest.files.reduce((sum, f) => sum + f.size, raw.byteLength);
    const comment = firstLine(manifestNotes(manifest));
    if (comment !== '') item.comment = comment;
    const verify = parseVerifyState(manifest.unprotected['verify_state']);
    if (verify !== undefined)
      item.verification = { state: verify.state, upid: formatUpid(verify.upid) };
  } catch (error) {
    // A damaged manifest must not hide the snapshot, nor the others.
    item.error = error instanceof Error ? error.message : String(error);
  }
  return item;
}

async function ownerOf(store: DataStore, group: BackupGroup): Promise<string | undefined> {
  try {
    return formatAuthid(await store.getOwner(group));
  } catch {
    return undefined;
  }
}

const stripExtension = (name: string): string => name.replace(/\.(blob|didx|fidx)$/, '');

function verifyColumn(item: SnapshotItem): string {
  if (item.error !== undefined) return 'damaged';
  if (!item.finished) return 'unfinished';
  return item.verification?.state ?? '-';
}

function renderSnapshots(items: readonly SnapshotItem[]): string {
  return renderTable(
    [
      { header: 'snapshot', value: (s: SnapshotItem) => s.snapshot },
      {
        header: 'size',
        value: (s) => (s.size === undefined ? '' : humanBytes(s.size)),
        align: 'right',
      },
      { header: 'protected', value: (s) => (s.protected ? 'yes' : '') },
      { header: 'verify', value: verifyColumn },
      { header: 'comment', value: (s) => s.comment ?? '' },
      {
        header: 'files',
        value: (s) =>
          s.files
            .filter((f) => f !== MANIFEST_BLOB_NAME)
            .map(stripExtension)
            .join(' '),
      },
    ],
    items,
  );
}

/** PBS's group list item. */
export interface GroupItem {
  group: string;
  ns?: string;
  'backup-type': string;
  'backup-id': string;
  /** Time of the newest finished snapshot. */
  'last-backup'?: number;
  'backup-count': number;
  files: string[];
  owner?: string;
  comment?: string;
}

async function groupItem(store: DataStore, group: BackupGroup): Promise<GroupItem> {
  const snapshots = await store.listSnapshots(group);
  const last = await store.lastSuccessfulBackup(group);
  const newest =
    [...snapshots].reverse().find((s) => s.finished) ?? snapshots[snapshots.length - 1];
  const ns = namespaceToString(group.ns);
  const owner = await ownerOf(store, group);
  let notes = '';
  try {
    notes = await store.getGroupNotes(group);
  } catch {
    // Notes are decoration; a listing does not fail for them.
  }
  return {
    group: formatGroup(group),
    ...(ns === '' ? {} : { ns }),
    'backup-type': group.type,
    'backup-id': group.id,
    ...(last === undefined ? {} : { 'last-backup': last }),
    'backup-count': snapshots.length,
    files: newest === undefined ? [] : [...newest.files].sort(),
    ...(owner === undefined ? {} : { owner }),
    ...(firstLine(notes) === '' ? {} : { comment: firstLine(notes) }),
  };
}

async function listSnapshotItems(
  store: DataStore,
  ns: BackupNamespace,
  group: BackupGroup | undefined,
): Promise<SnapshotItem[]> {
  const groups = group === undefined ? await store.listGroups(ns) : [group];
  const items: SnapshotItem[] = [];
  for (const g of groups) {
    const owner = await ownerOf(store, g);
    for (const info of await store.listSnapshots(g))
      items.push(await snapshotItem(store, info, owner));
  }
  return items;
}

type NsOptions = { outputFormat: string; ns?: string };

export function registerSnapshotCommands(program: Command): void {
  const snapshot = program
    .command('snapshot')
    .description('list and change the snapshots of a local datastore');

  snapshot
    .command('list')
    .description('list snapshots, of one group or of all groups in a namespace')
    .argument('<store>', 'datastore name')
    .argument('[group]', 'backup group ([ns/<a>/...]<type>/<id>); default all groups')
    .option('--ns <namespace>', 'namespace (default the root)')
    .addOption(outputFormatOption())
    .action(
      async (name: string, groupText: string | undefined, options: NsOptions, command: Command) => {
        const { dirs, printer } = managerContext(command, options);
        const group = groupText === undefined ? undefined : groupArgument(groupText, options.ns);
        const ns = namespaceOption(options.ns);
        const store = await DataStore.lookup(name, { dirs, operation: 'read' });
        const items = await listSnapshotItems(store, ns, group);
        printer.result(items, renderSnapshots);
      },
    );

  snapshot
    .command('forget')
    .description('remove a snapshot (refused when it is protected)')
    .argument('<store>', 'datastore name')
    .argument('<snapshot>', 'snapshot ([ns/<a>/...]<type>/<id>/<time>)')
    .option('--ns <namespace>', 'namespace of the snapshot')
    .addOption(outputFormatOption())
    .action(async (name: string, snapshotText: string, options: NsOptions, command: Command) => {
      const { dirs, printer } = managerContext(command, options);
      const dir = snapshotArgument(snapshotText, options.ns);
      const store = await DataStore.lookup(name, { dirs, operation: 'write' });
      // Fails with NOT_FOUND for a snapshot that does not exist, before anything is touched.
      await store.snapshotInfo(dir);
      await store.removeBackupDir(dir, false);
      printer.result(
        { snapshot: formatSnapshot(dir), removed: true },
        (r) => `removed snapshot ${r.snapshot}`,
      );
    });

  snapshot
    .command('protected')
    .description('show whether a snapshot is protected, or set it with true|false')
    .argument('<store>', 'datastore name')
    .argument('<snapshot>', 'snapshot ([ns/<a>/...]<type>/<id>/<time>)')
    .argument('[value]', 'true or false')
    .option('--ns <namespace>', 'namespace of the snapshot')
    .addOption(outputFormatOption())
    .action(
      async (
        name: string,
        snapshotText: string,
        value: string | undefined,
        options: NsOptions,
        command: Command,
      ) => {
        const { dirs, printer } = managerContext(command, options);
        const dir = snapshotArgument(snapshotText, options.ns);
        const wanted = value === undefined ? undefined : parseBooleanText('protected', value);
        const store = await DataStore.lookup(name, {
          dirs,
          operation: wanted === undefined ? 'read' : 'write',
        });
        await store.snapshotInfo(dir);
        if (wanted !== undefined) await store.setProtected(dir, wanted);
        const result = { snapshot: formatSnapshot(dir), protected: await store.isProtected(dir) };
        printer.result(result, (r) =>
          renderKeyValues([
            ['snapshot', r.snapshot],
            ['protected', r.protected],
          ]),
        );
      },
    );

  snapshot
    .command('notes')
    .description("show a snapshot's notes, or replace them with --set")
    .argument('<store>', 'datastore name')
    .argument('<snapshot>', 'snapshot ([ns/<a>/...]<type>/<id>/<time>)')
    .option('--set <text>', 'new notes (an empty text removes them)')
    .option('--ns <namespace>', 'namespace of the snapshot')
    .addOption(outputFormatOption())
    .action(
      async (
        name: string,
        snapshotText: string,
        options: NsOptions & { set?: string },
        command: Command,
      ) => {
        const { dirs, printer } = managerContext(command, options);
        const dir = snapshotArgument(snapshotText, options.ns);
        const store = await DataStore.lookup(name, {
          dirs,
          operation: options.set === undefined ? 'read' : 'write',
        });
        if (options.set !== undefined) await store.setSnapshotNotes(dir, options.set);
        const notes = await store.getSnapshotNotes(dir);
        printer.result({ snapshot: formatSnapshot(dir), notes }, (r) => r.notes);
      },
    );

  const group = program.command('group').description('list the backup groups of a local datastore');
  group
    .command('list')
    .description('list the backup groups in a namespace')
    .argument('<store>', 'datastore name')
    .option('--ns <namespace>', 'namespace (default the root)')
    .addOption(outputFormatOption())
    .action(async (name: string, options: NsOptions, command: Command) => {
      const { dirs, printer } = managerContext(command, options);
      const ns = namespaceOption(options.ns);
      const store = await DataStore.lookup(name, { dirs, operation: 'read' });
      const items: GroupItem[] = [];
      for (const g of await store.listGroups(ns)) items.push(await groupItem(store, g));
      printer.result(items, (list) =>
        renderTable(
          [
            { header: 'group', value: (g: GroupItem) => g.group },
            {
              header: 'last snapshot',
              value: (g) => (g['last-backup'] === undefined ? '' : formatEpoch(g['last-backup'])),
            },
            { header: 'snapshots', value: (g) => g['backup-count'], align: 'right' },
            { header: 'owner', value: (g) => g.owner ?? '' },
            { header: 'comment', value: (g) => g.comment ?? '' },
          ],
          list,
        ),
      );
    });
}
