/**
 * `mmlite demo`: throw-away local servers, the sample schema and workload, and the
 * convergence check. The command (src/commands/demo.ts) runs the real `runInit` in between.
 *
 * Everything lives in one directory per OS user, `<tmpdir>/mmlite-demo-<uid>`:
 *   mmlite.yaml         the demo cluster's configuration (cluster "demo"; DSNs without passwords)
 *   pgpass              the servers' random passwords (scram-sha-256), a libpq password file, 0600:
 *                       PGPASSFILE of the demo process and of the servers (their subscriptions)
 *   .mmlite/            init's journal, as for any cluster
 *   demo-state.json     every server of this demo (LocalServer.info()), recorded before it is
 *                       started (`starting: true`, predicted paths) and again once it runs,
 *                       so a killed demo can always be cleaned up by the next one
 *   run-<id>/node1/ ..  the servers (LocalServer layout); <id> is unique per run
 *
 * Servers are started with `keepAlive: true` (LocalServer does not stop them at exit); this
 * module stops them itself: teardown() after the demo, teardownSync() from signal/exit hooks,
 * and cleanupLeftovers() for the servers recorded by an earlier (kept or killed) demo. Servers
 * are only ever stopped through `pg_ctl -D <recorded data dir>`, never by process name, and only
 * data dirs inside the demo directory are touched.
 */
import {createHash} from 'node:crypto'
import {existsSync, readFileSync, rmSync} from 'node:fs'
import {chmod, lstat, mkdir, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {LocalServer, type PgMajor, type ServerInfo} from './server.js'
import {atomicWrite, loadConfig, writeNewConfig, type Config} from '../config/config.js'
import {Cluster} from '../cluster/cluster.js'
import {pollUntil} from '../util/poll.js'
import {MmliteError, ExitCode, errorMessage} from '../errors.js'

export const DEMO_CLUSTER = 'demo'
export const DEMO_MAJORS = [16, 17, 18] as const
export type DemoMajor = (typeof DEMO_MAJORS)[number]
export const MIN_NODES = 2
export const MAX_NODES = 9
export const STATE_FILE = 'demo-state.json'
export const CONFIG_FILE = 'mmlite.yaml'
export const PASS_FILE = 'pgpass'
export const DEMO_TABLES = ['public.customers', 'public.orders']

export const SCHEMA_SQL = `CREATE TABLE public.customers (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name text NOT NULL,
  updated_at timestamptz DEFAULT now()
);
CREATE TABLE public.orders (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  customer_id uuid,
  amount numeric(10,2),
  node text
)`

/** Rows per node: one transaction per batch, each batch some customers and orders for them. */
export interface Workload {
  customers: number
  orders: number
  batches: number
}

export const DEFAULT_WORKLOAD: Workload = {customers: 50, orders: 100, batches: 5}

// ---------------------------------------------------------------------------- directory + state

export function currentUid(): number {
  return typeof process.getuid === 'function' ? process.getuid() : os.userInfo().uid
}

/** Where the demo keeps its servers and state: $MMLITE_DEMO_DIR, else <tmp>/mmlite-demo-<uid>. */
export function demoDir(): string {
  return process.env.MMLITE_DEMO_DIR ? path.resolve(process.env.MMLITE_DEMO_DIR) : path.join(os.tmpdir(), `mmlite-demo-${currentUid()}`)
}

export interface DemoServerRecord extends ServerInfo {
  /** recorded before LocalServer.start returned: paths predicted, port unknown (0) */
  starting?: boolean
}

export interface DemoState {
  version: 1
  /** process that ran the demo */
  pid: number
  status: 'starting' | 'running' | 'kept'
  major: PgMajor
  config: string
  createdAt: string
  servers: DemoServerRecord[]
}

/** The demo directory must be ours: a real directory (not a symlink) owned by this user. */
async function checkOwnDir(dir: string): Promise<boolean> {
  let st
  try {
    st = await lstat(dir)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false
    throw e
  }
  if (st.isSymbolicLink() || !st.isDirectory() || st.uid !== currentUid()) {
    throw new MmliteError(`${dir} is not a directory owned by you; refusing to use it for the demo`, {
      code: ExitCode.Config,
      suggestions: [`Inspect and remove ${dir}, or point TMPDIR at another directory.`],
    })
  }
  return true
}

export function readState(dir: string): DemoState | undefined {
  const file = path.join(dir, STATE_FILE)
  if (!existsSync(file)) return undefined
  let s: DemoState
  try {
    s = JSON.parse(readFileSync(file, 'utf8')) as DemoState
  } catch (e) {
    throw new MmliteError(`demo state ${file} is not valid JSON: ${errorMessage(e)}`, {
      code: ExitCode.Config,
      suggestions: [`Stop any server left in ${dir} (pg_ctl -D ${dir}/<node>/data stop) and remove ${dir}.`],
    })
  }
  if (!s || s.version !== 1 || !Array.isArray(s.servers)) {
    throw new MmliteError(`demo state ${file} has an unknown format`, {
      code: ExitCode.Config,
      suggestions: [`Stop any server left in ${dir} (pg_ctl -D ${dir}/<node>/data stop) and remove ${dir}.`],
    })
  }
  return s
}

function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child)
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel)
}

/** Only act on records that point into the demo directory (and the short socket dirs LocalServer makes). */
function checkRecord(dir: string, r: DemoServerRecord): void {
  const ok =
    (DEMO_MAJORS as readonly number[]).includes(r.major) &&
    typeof r.name === 'string' &&
    [r.serverDir, r.dataDir, r.removeDir, r.logFile].every(p => typeof p === 'string' && isInside(path.resolve(p), dir)) &&
    typeof r.socketDir === 'string' &&
    (isInside(path.resolve(r.socketDir), dir) || /^\/tmp\/mmlite-sock-[^/]+$/.test(r.socketDir))
  if (!ok) {
    throw new MmliteError(`demo state in ${dir} records a server outside the demo directory; refusing to touch it`, {
      code: ExitCode.Config,
      suggestions: [`Inspect ${path.join(dir, STATE_FILE)}, stop its servers by hand and remove ${dir}.`],
    })
  }
}

/** The process that recorded the state, if it still runs a demo (not kept, not ourselves). */
export function liveDemoPid(s: DemoState): number | undefined {
  if (s.status === 'kept' || s.pid === process.pid || !Number.isInteger(s.pid) || s.pid <= 0) return undefined
  try {
    process.kill(s.pid, 0)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return undefined
  }
  try {
    const cmd = readFileSync(`/proc/${s.pid}/cmdline`, 'utf8')
    if (!/demo/.test(cmd)) return undefined // pid reused by something else
  } catch {
    /* no /proc: trust kill(0) */
  }
  return s.pid
}

/**
 * Stop and remove the servers an earlier demo recorded, then the demo directory.
 * Returns what was stopped. Refuses (unless `force`) when another live process runs a demo there.
 */
export async function cleanupLeftovers(dir: string, opts: {force?: boolean} = {}): Promise<{state?: DemoState; stopped: DemoServerRecord[]}> {
  if (!(await checkOwnDir(dir))) return {stopped: []}
  const state = readState(dir)
  if (state) {
    const live = liveDemoPid(state)
    if (live !== undefined && !opts.force) {
      throw new MmliteError(`another demo (pid ${live}) is running in ${dir}`, {
        code: ExitCode.Locked,
        suggestions: ['Wait for it to finish, or stop it with `mmlite demo --stop`.'],
      })
    }
    for (const r of state.servers) checkRecord(dir, r)
    // a demo the user kept is theirs: never removed by another demo, only by --stop
    if (state.status === 'kept' && !opts.force) {
      const list = state.servers.map(r => `${r.name} on port ${r.port}`).join(', ')
      throw new MmliteError(`a demo you kept is still running in ${dir} (${list}); it is left as it is`, {
        code: ExitCode.Locked,
        suggestions: [`Remove it with \`mmlite demo --stop\`, or run another demo next to it: MMLITE_DEMO_DIR=${dir}-2 mmlite demo`],
      })
    }
  }
  const stopped: DemoServerRecord[] = []
  const failures: string[] = []
  await Promise.all(
    (state?.servers ?? []).map(async r => {
      const s = LocalServer.attach(r)
      const wasRunning = s.running
      try {
        // A demo killed during initdb leaves initdb running (its single-user backend holds the data
        // dir, pg_ctl cannot stop it): let it finish. Server dirs are never reused by a later run, so
        // removing them, even under an initdb that is still at work, cannot hit a newer demo.
        const stillInitdb = await waitForInitdb(r.dataDir)
        if (!stillInitdb) await s.stop('immediate')
        await s.destroy()
        if (wasRunning || !r.starting) stopped.push(r)
      } catch (e) {
        failures.push(`${r.name}: ${errorMessage(e)}`)
      }
    }),
  )
  if (failures.length) {
    throw new MmliteError(`could not stop ${failures.length} demo server(s) in ${dir}`, {
      code: ExitCode.Failed,
      details: failures,
      suggestions: [`Stop them with pg_ctl -D <data dir> stop (see ${path.join(dir, STATE_FILE)}), then remove ${dir}.`],
    })
  }
  await rm(dir, {recursive: true, force: true})
  stopped.sort((a, b) => a.name.localeCompare(b.name, 'en', {numeric: true}))
  return {state, stopped}
}

/** pid of a live single-user backend (initdb's) holding `dataDir`, if any. */
function singleUserPid(dataDir: string): number | undefined {
  let first: string
  try {
    first = readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0].trim()
  } catch {
    return undefined
  }
  const pid = Number(first)
  if (!Number.isInteger(pid) || pid >= 0) return undefined
  try {
    process.kill(-pid, 0)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return undefined
  }
  return -pid
}

/** Wait (bounded) until no initdb works on `dataDir`; true if one still does. */
async function waitForInitdb(dataDir: string, timeoutMs = 60_000): Promise<boolean> {
  try {
    await pollUntil(async () => singleUserPid(dataDir) === undefined, {timeoutMs, what: `initdb on ${dataDir}`, maxIntervalMs: 200})
    return false
  } catch {
    return true
  }
}

// ---------------------------------------------------------------------------- one demo run

export interface NodeRows {
  node: string
  customers: number
  orders: number
  checksum: string
}

export interface Written {
  customers: string[]
  orders: string[]
}

/** md5 over the sorted ids, as `checksumSql` computes it on a node (uuid order = lower-case text order). */
export function expectedChecksum(ids: Written): string {
  const agg = (a: string[]) => [...a].map(s => s.toLowerCase()).sort().join(',')
  return createHash('md5').update(`${agg(ids.customers)}|${agg(ids.orders)}`).digest('hex')
}

export const CHECKSUM_SQL = `SELECT (SELECT count(*) FROM public.customers)::int AS customers,
       (SELECT count(*) FROM public.orders)::int AS orders,
       md5(coalesce((SELECT string_agg(id::text, ',' ORDER BY id) FROM public.customers), '') || '|' ||
           coalesce((SELECT string_agg(id::text, ',' ORDER BY id) FROM public.orders), '')) AS checksum`

export class DemoRun {
  /** started (or being started) servers, by node name */
  readonly servers = new Map<string, LocalServer>()
  /** parent of this run's server dirs: unique per run, so nothing left by a killed run can touch them */
  readonly serversDir: string
  private state: DemoState
  private saving: Promise<void> = Promise.resolve()
  private cluster?: Cluster
  private kept = false
  private tornDown = false

  constructor(
    readonly dir: string,
    readonly major: DemoMajor,
    readonly nodeCount: number,
  ) {
    this.serversDir = path.join(dir, `run-${Date.now().toString(36)}-${process.pid}`)
    this.state = {
      version: 1,
      pid: process.pid,
      status: 'starting',
      major,
      config: this.configFile,
      createdAt: new Date().toISOString(),
      servers: [],
    }
  }

  get configFile(): string {
    return path.join(this.dir, CONFIG_FILE)
  }

  get passFile(): string {
    return path.join(this.dir, PASS_FILE)
  }

  get stateFile(): string {
    return path.join(this.dir, STATE_FILE)
  }

  get names(): string[] {
    return Array.from({length: this.nodeCount}, (_, i) => `node${i + 1}`)
  }

  /** Create the (fresh) demo directory and the state file. Call cleanupLeftovers first. */
  async prepare(): Promise<void> {
    // readable by all (not writable): when we are root, the servers run as `postgres` and must reach their dirs
    await mkdir(this.dir, {mode: 0o755})
    await checkOwnDir(this.dir)
    await chmod(this.dir, 0o755)
    await mkdir(this.serversDir, {mode: 0o755})
    await chmod(this.serversDir, 0o755)
    await this.saveState()
  }

  private saveState(): Promise<void> {
    const snapshot = JSON.stringify(this.state, null, 2) + '\n'
    this.saving = this.saving.then(() => atomicWrite(this.stateFile, snapshot))
    return this.saving
  }

  private predicted(name: string): DemoServerRecord {
    const serverDir = path.join(this.serversDir, name)
    return {
      major: this.major,
      name,
      port: 0,
      serverDir,
      dataDir: path.join(serverDir, 'data'),
      logFile: path.join(serverDir, 'server.log'),
      socketDir: path.join(serverDir, 'sock'),
      removeDir: serverDir,
      passFile: this.passFile,
      starting: true,
    }
  }

  private async record(info: DemoServerRecord): Promise<void> {
    const i = this.state.servers.findIndex(s => s.name === info.name)
    if (i >= 0) this.state.servers[i] = info
    else this.state.servers.push(info)
    await this.saveState()
  }

  /** Start every server concurrently; each is recorded before it starts and once it runs. */
  async startServers(onStarted?: (s: LocalServer) => void): Promise<LocalServer[]> {
    for (const name of this.names) this.state.servers.push(this.predicted(name))
    await this.saveState()
    const results = await Promise.allSettled(
      this.names.map(async name => {
        const s = await LocalServer.start({major: this.major, baseDir: this.serversDir, name, keepAlive: true, passFile: this.passFile})
        this.servers.set(name, s)
        await this.record(s.info())
        onStarted?.(s)
        return s
      }),
    )
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed) throw failed.reason
    this.state.status = 'running'
    await this.saveState()
    return this.names.map(n => this.servers.get(n)!)
  }

  /** mmlite.yaml for the servers (the DSNs carry no password: it is in the pgpass file, PGPASSFILE). */
  async writeConfig(): Promise<Config> {
    await writeNewConfig(this.configFile, {
      cluster: DEMO_CLUSTER,
      tables: DEMO_TABLES,
      nodes: this.names.map(name => ({name, dsn: this.servers.get(name)!.dsn()})),
    })
    const cfg = loadConfig(this.configFile)
    this.cluster = new Cluster(cfg, {connectTimeoutMs: 10_000})
    return cfg
  }

  private get conns(): Cluster {
    if (!this.cluster) throw new Error('internal: demo config not written yet')
    return this.cluster
  }

  async createSchema(): Promise<void> {
    await Promise.all(this.names.map(n => this.conns.node(n).query(SCHEMA_SQL)))
  }

  /** Every node writes its rows at the same time, in `batches` transactions; returns all ids written. */
  async writeRows(w: Workload = DEFAULT_WORKLOAD): Promise<Written> {
    const split = (total: number, i: number) => Math.floor((total * (i + 1)) / w.batches) - Math.floor((total * i) / w.batches)
    const perNode = await Promise.all(
      this.names.map(async node => {
        const c = this.conns.node(node)
        const ids: Written = {customers: [], orders: []}
        let made = 0
        for (let b = 0; b < w.batches; b++) {
          const nc = split(w.customers, b)
          const no = split(w.orders, b)
          const cust = await c.query<{id: string}>(
            `INSERT INTO public.customers (name)
             SELECT $1 || ' customer ' || g FROM generate_series($2::int, $3::int) g RETURNING id`,
            [node, made + 1, made + nc],
          )
          made += nc
          const custIds = cust.map(r => r.id)
          ids.customers.push(...custIds)
          if (no > 0) {
            const ord = await c.query<{id: string}>(
              `INSERT INTO public.orders (customer_id, amount, node)
               SELECT CASE WHEN cardinality($1::uuid[]) > 0 THEN ($1::uuid[])[1 + g % cardinality($1::uuid[])] END,
                      round((1 + random() * 499)::numeric, 2), $2
                 FROM generate_series(0, $3::int - 1) g RETURNING id`,
              [custIds, node, no],
            )
            ids.orders.push(...ord.map(r => r.id))
          }
        }
        return ids
      }),
    )
    return {customers: perNode.flatMap(p => p.customers), orders: perNode.flatMap(p => p.orders)}
  }

  async readRows(): Promise<NodeRows[]> {
    return Promise.all(
      this.names.map(async node => {
        const r = (await this.conns.node(node).one<{customers: number; orders: number; checksum: string}>(CHECKSUM_SQL))!
        return {node, customers: r.customers, orders: r.orders, checksum: r.checksum}
      }),
    )
  }

  /** Poll until every node holds exactly the rows written on all nodes. */
  async waitConverged(written: Written, timeoutMs: number): Promise<{rows: NodeRows[]; ms: number}> {
    const want = {customers: written.customers.length, orders: written.orders.length, checksum: expectedChecksum(written)}
    const t0 = Date.now()
    let last: NodeRows[] = []
    try {
      await pollUntil(
        async () => {
          last = await this.readRows()
          return last.every(r => r.customers === want.customers && r.orders === want.orders && r.checksum === want.checksum)
        },
        {timeoutMs, what: 'every node to hold every row', minIntervalMs: 50, maxIntervalMs: 250},
      )
    } catch (e) {
      if (!(e instanceof MmliteError)) throw e
      throw new MmliteError(e.message, {
        code: e.code,
        details: [
          `expected on every node: ${want.customers} customers, ${want.orders} orders, checksum ${want.checksum}`,
          ...last.map(r => `${r.node}: ${r.customers} customers, ${r.orders} orders, checksum ${r.checksum}`),
        ],
        suggestions: [`Look at the server logs in ${this.dir}/<node>/server.log (re-run with --keep to inspect the servers).`],
      })
    }
    return {rows: last, ms: Date.now() - t0}
  }

  /** Leave the servers running; the state file tells `mmlite demo --stop` (or the next demo) about them. */
  async keep(): Promise<void> {
    await this.closeConnections()
    this.kept = true
    this.state.status = 'kept'
    await this.saveState()
  }

  async closeConnections(): Promise<void> {
    await this.cluster?.close()
  }

  /** Stop and remove every server of this demo and the demo directory (idempotent). */
  async teardown(): Promise<void> {
    if (this.kept || this.tornDown) return
    await this.closeConnections()
    await this.saving.catch(() => {})
    const failures: string[] = []
    await Promise.all(
      this.state.servers.map(async r => {
        const s = this.servers.get(r.name) ?? LocalServer.attach(r)
        try {
          await s.stop('immediate')
          await s.destroy()
        } catch (e) {
          failures.push(`${r.name}: ${errorMessage(e)}`)
        }
      }),
    )
    if (failures.length) {
      throw new MmliteError(`could not stop ${failures.length} demo server(s)`, {
        code: ExitCode.Failed,
        details: failures,
        suggestions: ['Run `mmlite demo --stop` to try again.'],
      })
    }
    this.tornDown = true
    await rm(this.dir, {recursive: true, force: true})
  }

  /** Best effort, synchronous (signal and exit hooks): stop every server recorded so far, remove the directory. */
  teardownSync(): void {
    if (this.kept || this.tornDown) return
    this.tornDown = true
    for (const r of this.state.servers) {
      try {
        ;(this.servers.get(r.name) ?? LocalServer.attach(r)).stopSync(true)
      } catch {
        /* best effort */
      }
    }
    try {
      rmSync(this.dir, {recursive: true, force: true})
    } catch {
      /* best effort */
    }
  }
}
