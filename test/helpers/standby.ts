/**
 * Physical standbys of a LocalServer for the `add-node --strategy standby` tests: what an
 * operator does before running add-node.
 *
 *  - `basebackup` (PostgreSQL 15 from Debian, which ships pg_basebackup):
 *      pg_basebackup -D <data> -h <primary> -p <port> -U postgres -R -X stream -c fast [-C -S <slot>]
 *    run as the server OS user. pg_basebackup leaves pg_replslot/ empty in the copy.
 *  - `lowlevel` (the npm builds only have initdb/pg_ctl/postgres): the documented low-level
 *    API. A physical slot is created first (immediately reserving WAL, like -C -S), then
 *    `pg_backup_start(label, true)` (PG 15+; `pg_start_backup(label, true, false)` on 14) in
 *    a session kept open while the data directory is copied file by file,
 *    `pg_backup_stop()` returns the backup_label (and tablespace_map) contents written into
 *    the copy, and standby.signal + primary_conninfo/primary_slot_name make it a standby.
 *    Left out of the copy, as the documentation says: postmaster.pid/.opts, pg_wal/ contents
 *    (the standby streams from the slot's reserved WAL), pg_dynshmem/, pg_notify/,
 *    pg_serial/, pg_snapshots/, pg_stat_tmp/, pg_subtrans/ contents, pgsql_tmp*,
 *    pg_internal.init. pg_replslot/ IS copied by default (`keepSlotFiles`): the
 *    documentation only calls omitting it "often a good idea", so a file-level copy that
 *    keeps the primary's slots is what an operator may well hand to mmlite, and add-node
 *    must cope (it drops the inherited slots of the source on the new node).
 *
 * The standby is started with the same managed settings as LocalServer.start (on its own
 * port and socket dir), tracked for stopAllStarted(), and returned once it streams.
 */
import {copyFile, lstat, mkdir, readdir, readlink, symlink, writeFile, chmod} from 'node:fs/promises'
import path from 'node:path'
import pg from 'pg'
import {
  LocalServer,
  chownToServerUser,
  pgProgram,
  prepareServerDirs,
  runAsServerUser,
} from '../../src/local/server.js'
import {reloadConf, sql, waitFor} from './cluster.js'

export type StandbyMethod = 'basebackup' | 'lowlevel'

export interface StandbyOptions {
  /** server name (directory label), e.g. 'node4' */
  name: string
  /** physical slot on the primary that feeds the standby (created here); null: none */
  slot?: string | null
  /** default: basebackup where the binary exists (PG 15), else lowlevel */
  method?: StandbyMethod
  /** lowlevel only: copy pg_replslot/ as it is (default true, see above) */
  keepSlotFiles?: boolean
  /** extra settings for the standby (after the defaults) */
  settings?: Record<string, string | number>
}

/** Settings the test servers of test/helpers/cluster.ts startServers use. */
const TEST_SETTINGS = {wal_retrieve_retry_interval: '200ms'}

const EMPTY_CONTENTS = new Set(['pg_wal', 'pg_dynshmem', 'pg_notify', 'pg_serial', 'pg_snapshots', 'pg_stat_tmp', 'pg_subtrans'])
const SKIP_FILES = new Set([
  'postmaster.pid',
  'postmaster.opts',
  'backup_label',
  'backup_label.old',
  'tablespace_map',
  'standby.signal',
  'recovery.signal',
  'current_logfiles',
])

export async function createStandby(primary: LocalServer, opts: StandbyOptions): Promise<LocalServer> {
  const basebackup = pgProgram(primary.major, 'pg_basebackup')
  const method = opts.method ?? (basebackup ? 'basebackup' : 'lowlevel')
  const slot = opts.slot === undefined ? `${opts.name}_feed` : opts.slot
  const info = await prepareServerDirs({major: primary.major, name: opts.name})
  const server = LocalServer.attach(info, {track: true, sameAuthAs: primary}) // copy of primary: its password
  const conninfo = `host=127.0.0.1 port=${primary.port} user=postgres application_name=${opts.name}`
  if (method === 'basebackup') {
    if (!basebackup) throw new Error(`PostgreSQL ${primary.major} has no pg_basebackup here; use method 'lowlevel'`)
    const args = ['-D', info.dataDir, '-h', '127.0.0.1', '-p', String(primary.port), '-U', 'postgres', '-R', '-X', 'stream', '-c', 'fast', '--no-sync']
    if (slot) args.push('-C', '-S', slot)
    const r = await runAsServerUser(basebackup, args, {cwd: info.serverDir, timeoutMs: 300_000})
    if (r.code !== 0) throw new Error(`pg_basebackup failed (exit ${r.code ?? r.signal}): ${(r.stderr || r.stdout).trim()}`)
    await server.setSettings({...TEST_SETTINGS, ...opts.settings})
  } else {
    await lowLevelCopy(primary, info.dataDir, {slot, keepSlotFiles: opts.keepSlotFiles ?? true})
    await server.setSettings({
      ...TEST_SETTINGS,
      primary_conninfo: conninfo,
      ...(slot ? {primary_slot_name: slot} : {}),
      ...opts.settings,
    })
  }
  await server.start()
  await waitStreaming(server)
  return server
}

/** Wait until the standby's WAL receiver streams. */
export async function waitStreaming(standby: LocalServer, timeoutMs = 60_000): Promise<void> {
  await waitFor(
    async () => (await sql<{status: string}>(standby, 'SELECT status FROM pg_stat_wal_receiver'))[0]?.status === 'streaming',
    `${standby.name} to stream from its primary`,
    timeoutMs,
  )
}

async function lowLevelCopy(primary: LocalServer, dest: string, opts: {slot: string | null; keepSlotFiles: boolean}): Promise<void> {
  const c = new pg.Client({connectionString: primary.dsn()})
  await c.connect()
  try {
    if (opts.slot) await c.query('SELECT pg_create_physical_replication_slot($1, true)', [opts.slot])
    const v15 = primary.major >= 15
    await c.query(v15 ? 'SELECT pg_backup_start($1, true)' : 'SELECT pg_start_backup($1, true, false)', ['mmlite test standby'])
    let stopped = false
    try {
      await copyTree(primary.dataDir, dest, '', opts.keepSlotFiles)
      const r = await c.query<{labelfile: string; spcmapfile: string | null}>(
        v15 ? 'SELECT labelfile, spcmapfile FROM pg_backup_stop(true)' : 'SELECT labelfile, spcmapfile FROM pg_stop_backup(false, true)',
      )
      stopped = true
      await writeOwned(path.join(dest, 'backup_label'), r.rows[0].labelfile)
      if (r.rows[0].spcmapfile) await writeOwned(path.join(dest, 'tablespace_map'), r.rows[0].spcmapfile)
      await writeOwned(path.join(dest, 'standby.signal'), '')
    } finally {
      if (!stopped) await c.query(v15 ? 'SELECT pg_backup_stop(false)' : 'SELECT pg_stop_backup(false, false)').catch(() => {})
    }
  } finally {
    await c.end()
  }
}

async function writeOwned(file: string, content: string): Promise<void> {
  await writeFile(file, content, {mode: 0o600})
  await chownToServerUser(file)
}

/** Copy `src` to `dst` (relative path `rel` below the data dir), owned by the server OS user. Files that vanish meanwhile are skipped. */
async function copyTree(src: string, dst: string, rel: string, keepSlotFiles: boolean): Promise<void> {
  const st = await lstat(src)
  await mkdir(dst, {mode: st.mode & 0o777})
  await chmod(dst, st.mode & 0o777)
  await chownToServerUser(dst)
  if (EMPTY_CONTENTS.has(rel) || (rel === 'pg_replslot' && !keepSlotFiles)) {
    if (rel === 'pg_wal') {
      await mkdir(path.join(dst, 'archive_status'), {mode: 0o700})
      await chownToServerUser(path.join(dst, 'archive_status'))
    }
    return
  }
  let entries
  try {
    entries = await readdir(src, {withFileTypes: true})
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return
    throw e
  }
  for (const e of entries) {
    const name = e.name
    const childRel = rel ? `${rel}/${name}` : name
    const s = path.join(src, name)
    const d = path.join(dst, name)
    if (!rel && SKIP_FILES.has(name)) continue
    if (name === 'pg_internal.init' || name.startsWith('pgsql_tmp')) continue
    try {
      if (e.isDirectory()) await copyTree(s, d, childRel, keepSlotFiles)
      else if (e.isSymbolicLink()) {
        await symlink(await readlink(s), d)
      } else if (e.isFile()) {
        const fst = await lstat(s)
        await copyFile(s, d)
        await chmod(d, fst.mode & 0o777)
        await chownToServerUser(d)
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue
      throw err
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Watching that a promoted standby never uses the source's slots
// ---------------------------------------------------------------------------------------------

/**
 * Samples the new node every few ms (until stop()): once it is out of recovery, no
 * subscription on it that uses a slot named for the source (`<c>_<P>_<S>`) may be enabled or
 * have a worker. Sampling errors do not stop the loop but are kept in `errors` (tests assert
 * it is empty: a query that always fails must not pass as "no violation"), and only samples
 * taken once the node is out of recovery count as `evaluated` (tests assert some were).
 */
export class SourceSlotGuard {
  readonly violations: string[] = []
  /** samples taken (in recovery or not) */
  samples = 0
  /** samples taken after promotion: the only ones that can see a violation */
  evaluated = 0
  readonly errors: string[] = []
  private stopping = false
  private loop?: Promise<void>

  constructor(
    private readonly x: LocalServer,
    private readonly sourceSlots: string[],
  ) {}

  start(intervalMs = 20): this {
    this.loop = (async () => {
      let c: pg.Client | undefined
      while (!this.stopping) {
        try {
          if (!c) {
            c = new pg.Client({connectionString: this.x.dsn()})
            c.on('error', () => {})
            await c.connect()
          }
          const r = await c.query<{rec: boolean; subname: string | null; slot: string | null; enabled: boolean | null; pid: number | null}>(
            `SELECT pg_is_in_recovery() AS rec, s.subname, s.subslotname AS slot, s.subenabled AS enabled, st.pid
               FROM (SELECT 1) one LEFT JOIN pg_subscription s ON s.subslotname = ANY($1::text[])
               LEFT JOIN pg_stat_subscription st ON st.subid = s.oid AND st.pid IS NOT NULL`,
            [this.sourceSlots],
          )
          this.samples++
          if (r.rows.length === 0) throw new Error('guard query returned no row')
          if (!r.rows[0].rec) this.evaluated++
          for (const row of r.rows) {
            if (row.rec || row.subname === null) continue
            if (row.enabled || row.pid !== null) {
              this.violations.push(`${new Date().toISOString()} ${this.x.name}: subscription ${row.subname} on slot ${row.slot} enabled=${row.enabled} worker=${row.pid}`)
            }
          }
        } catch (e) {
          this.errors.push(`${new Date().toISOString()} ${this.x.name}: ${(e as Error).message}`)
          await c?.end().catch(() => {})
          c = undefined
        }
        await new Promise(res => setTimeout(res, intervalMs))
      }
      await c?.end().catch(() => {})
    })()
    return this
  }

  async stop(): Promise<this> {
    this.stopping = true
    await this.loop
    return this
  }
}

/** How often a log says an apply worker of `sub` started. */
export async function applyWorkerStarts(s: LocalServer, sub: string): Promise<number> {
  const log = await s.readLog()
  return log.split('\n').filter(l => l.includes(`apply worker for subscription "${sub}" has started`)).length
}

/** How often a publisher's log shows START_REPLICATION on `slot` (needs log_replication_commands = on). */
export async function replicationStarts(s: LocalServer, slot: string): Promise<number> {
  const log = await s.readLog()
  return log.split('\n').filter(l => l.includes(`received replication command: START_REPLICATION SLOT "${slot}"`)).length
}

export async function logReplicationCommands(servers: LocalServer[]): Promise<void> {
  await Promise.all(servers.map(async s => {
    await sql(s, 'ALTER SYSTEM SET log_replication_commands = on')
    await reloadConf(s)
  }))
}

// ---------------------------------------------------------------------------------------------
// Taking a joined node out again (between test rounds), with plain SQL
// ---------------------------------------------------------------------------------------------

/**
 * Remove node `x` (named `xName`) from a mesh of `members`: on every member drop the
 * subscription x→member (without contacting x) and the slot member→x, drop a physical slot
 * named `<xName>_feed` if one is left, then destroy x's server and take it out of mmlite.yaml.
 */
export async function detachNode(members: Array<{name: string; server: LocalServer}>, x: LocalServer | undefined, xName: string, cfgFile: string, cluster = 'shop'): Promise<void> {
  const {editConfigNodes} = await import('../../src/config/config.js')
  const {edgeName} = await import('../../src/cluster/naming.js')
  if (x) await x.destroy()
  for (const m of members) {
    const sub = edgeName(cluster, xName, m.name)
    const exists = await sql(m.server, 'SELECT 1 FROM pg_subscription WHERE subname = $1', [sub])
    if (exists.length) {
      await sql(m.server, `ALTER SUBSCRIPTION "${sub}" DISABLE`)
      await sql(m.server, `ALTER SUBSCRIPTION "${sub}" SET (slot_name = NONE)`)
      await sql(m.server, `DROP SUBSCRIPTION "${sub}"`)
    }
    for (const slot of [edgeName(cluster, m.name, xName), `${xName}_feed`]) {
      await waitFor(
        async () => !(await sql<{active: boolean}>(m.server, 'SELECT active FROM pg_replication_slots WHERE slot_name = $1', [slot]))[0]?.active,
        `slot ${slot} on ${m.name} to be released`,
      )
      await sql(m.server, 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1', [slot])
    }
  }
  await editConfigNodes(cfgFile, {remove: xName})
}
