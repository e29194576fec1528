/**
 * Continuous write load for join/leave/fault tests, and the check that every acknowledged
 * write arrived exactly once, with its last value, on every node.
 *
 * Every writer owns disjoint keys, so the expected final content of its keys is known from
 * the transactions it saw acknowledged:
 *   users        id = index * 10^9 + w * 10^8 + n       (w: the writer's number on its node)
 *   departments  id = index * 10^5 + w * 10^4 + n / 4   (int column: small keys)
 *
 * Default (the historical load, kept for the existing tests): one writer per node, one
 * statement per transaction, INSERT and UPDATE of its own `users` rows.
 * `{hard: true}` (issue #14.1): several writers per node (`writersPerNode`, default 3), each
 * transaction INSERTs a fresh `users` row and, mixed in, INSERTs/UPDATEs/DELETEs earlier rows
 * of `users` and of `departments` in the SAME transaction (a copy inconsistent across tables
 * shows); `longTransaction()` opens a multi-row transaction before a moment chosen by the
 * test (slot creation, snapshot export) and commits it after.
 * `{tolerateErrors: true}` (fault tests): a writer whose connection breaks reconnects until
 * the load stops; the fate of the transaction in flight (committed or not: the client never
 * got the answer) is read back from its own node once it is reachable again (the fresh
 * `users` id of that transaction exists there or not), so the model stays exact.
 *
 * verifyLoad() polls until every node holds exactly the model for the load's keys (present
 * once with the last value, deleted rows absent, no stray row in a writer's key range), the
 * expected number of `users` rows, and identical full contents of every replicated table.
 */
import pg from 'pg'
import type {LocalServer} from '../../src/local/server.js'
import {waitFor, sql} from './cluster.js'

export interface LoadReport {
  /** per writer: users id -> last acknowledged `name` (live rows only: deleted ids are removed) */
  acked: Map<string, Map<number, string>>
  /** longest gap between two acknowledged commits, per writer, in ms */
  maxGapMs: Map<string, number>
  commits: number
  /** hard load: per writer, users ids whose DELETE was acknowledged */
  deletedUsers?: Map<string, Set<number>>
  /** hard load: per writer, departments id -> last acknowledged `name` (live rows) */
  depts?: Map<string, Map<number, string>>
  /** hard load: per writer, departments ids whose DELETE was acknowledged */
  deletedDepts?: Map<string, Set<number>>
  /** per writer: its key ranges [lo, hi) (rows inside them and not in the model are strays) */
  ranges?: Map<string, {users: [number, number]; depts: [number, number]}>
}

export interface LoadOptions {
  /** pause between two transactions of one writer (ms) */
  pauseMs?: number
  /** the harder load of issue #14.1 */
  hard?: boolean
  /** writers per node (hard load: 3 by default; otherwise 1) */
  writersPerNode?: number
  /** reconnect after a broken connection and resolve the transaction in flight (fault tests) */
  tolerateErrors?: boolean
}

export interface WriterSpec {
  label: string
  server: LocalServer
  index: number
}

/** Merge reports of several loads (disjoint writers). */
export function mergeReports(...reports: LoadReport[]): LoadReport {
  const m = <K, V>(pick: (r: LoadReport) => Map<K, V> | undefined) => new Map(reports.flatMap(r => [...(pick(r) ?? new Map<K, V>())]))
  return {
    acked: m(r => r.acked),
    maxGapMs: m(r => r.maxGapMs),
    commits: reports.reduce((a, r) => a + r.commits, 0),
    deletedUsers: m(r => r.deletedUsers),
    depts: m(r => r.depts),
    deletedDepts: m(r => r.deletedDepts),
    ranges: m(r => r.ranges),
  }
}

const USERS_SPAN = 100_000_000
const DEPTS_SPAN = 10_000

type Change = {table: 'users' | 'depts'; id: number; value: string | null}

/** A transaction the test keeps open across a moment of its choice. */
export interface LongTransaction {
  /** the backend pid of the open transaction (to see who blocks a slot creation) */
  pid: number
  /** COMMIT it; its rows enter the model once acknowledged */
  commit(): Promise<void>
}

export class WriteLoad {
  private stopping = false
  private runs: Promise<void>[] = []
  private opts: LoadOptions = {}
  private longCount = 0
  readonly report: LoadReport = {acked: new Map(), maxGapMs: new Map(), commits: 0, deletedUsers: new Map(), depts: new Map(), deletedDepts: new Map(), ranges: new Map()}
  /** connection errors the writers survived (tolerateErrors) */
  readonly errors: string[] = []

  /** writers: [label, server, index] — index keeps key ranges disjoint across writers (1..20000) */
  start(writers: WriterSpec[], opts: LoadOptions = {}): this {
    this.opts = opts
    const per = opts.writersPerNode ?? (opts.hard ? 3 : 1)
    for (const w of writers) {
      for (let k = 0; k < per; k++) {
        const label = k === 0 ? w.label : `${w.label}.${k}`
        this.runs.push(this.writer(label, w.server, w.index, k, opts.pauseMs ?? 2))
      }
    }
    return this
  }

  private model(label: string, index: number, w: number) {
    const r = this.report
    if (!r.acked.has(label)) {
      r.acked.set(label, new Map())
      r.deletedUsers!.set(label, new Set())
      r.depts!.set(label, new Map())
      r.deletedDepts!.set(label, new Set())
      r.maxGapMs.set(label, 0)
      const u0 = index * 1_000_000_000 + w * USERS_SPAN
      const d0 = index * 100_000 + w * DEPTS_SPAN
      r.ranges!.set(label, {users: [u0, u0 + USERS_SPAN], depts: [d0, d0 + DEPTS_SPAN]})
    }
    return {users: r.acked.get(label)!, delUsers: r.deletedUsers!.get(label)!, depts: r.depts!.get(label)!, delDepts: r.deletedDepts!.get(label)!}
  }

  private apply(label: string, index: number, w: number, changes: Change[]): void {
    const m = this.model(label, index, w)
    for (const c of changes) {
      const [live, dead] = c.table === 'users' ? [m.users, m.delUsers] : [m.depts, m.delDepts]
      if (c.value === null) {
        live.delete(c.id)
        dead.add(c.id)
      } else {
        live.set(c.id, c.value)
        dead.delete(c.id)
      }
    }
  }

  private async connect(server: LocalServer): Promise<pg.Client> {
    for (;;) {
      const c = new pg.Client({connectionString: server.dsn(), connectionTimeoutMillis: 5000})
      c.on('error', () => {})
      try {
        await c.connect()
        return c
      } catch (e) {
        await c.end().catch(() => {})
        if (!this.opts.tolerateErrors || this.stoppedForGood) throw e
        this.errors.push(`${server.name}: connect: ${(e as Error).message}`)
        await new Promise(r => setTimeout(r, 200))
      }
    }
  }

  /** set by stop(): a writer still unable to connect then gives up (after resolving what it can) */
  private stoppedForGood = false

  /** one transaction of a hard-load writer: statements and the model changes they make */
  private hardTxn(label: string, index: number, w: number, n: number): {stmts: Array<[string, unknown[]]>; changes: Change[]; fresh: number} {
    const m = this.model(label, index, w)
    const [u0] = this.report.ranges!.get(label)!.users
    const [d0] = this.report.ranges!.get(label)!.depts
    const stmts: Array<[string, unknown[]]> = []
    const changes: Change[] = []
    const fresh = u0 + n
    const name = `${label}-${n}`
    stmts.push(['INSERT INTO public.users (id, dept, name, updated_by) VALUES ($1, $2, $3, $4)', [fresh, n % 10, name, label]])
    changes.push({table: 'users', id: fresh, value: name})
    const liveUsers = [...m.users.keys()]
    const pick = <T>(xs: T[], salt: number): T | undefined => (xs.length ? xs[(n * 7919 + salt) % xs.length] : undefined)
    if (n % 4 === 0 && n / 4 < DEPTS_SPAN) {
      const did = d0 + n / 4
      const dn = `${label}-d${n}`
      stmts.push(['INSERT INTO public.departments (id, name) VALUES ($1, $2)', [did, dn]])
      changes.push({table: 'depts', id: did, value: dn})
    }
    if (n % 3 === 2) {
      const id = pick(liveUsers, 1)
      if (id !== undefined) {
        const v = `${label}-u${n}`
        stmts.push(['UPDATE public.users SET name = $2 WHERE id = $1', [id, v]])
        changes.push({table: 'users', id, value: v})
      }
    }
    if (n % 5 === 4) {
      const id = pick(liveUsers.filter(u => !changes.some(c => c.id === u && c.table === 'users')), 2)
      if (id !== undefined) {
        stmts.push(['DELETE FROM public.users WHERE id = $1', [id]])
        changes.push({table: 'users', id, value: null})
      }
    }
    const liveDepts = [...m.depts.keys()]
    if (n % 6 === 5) {
      const id = pick(liveDepts, 3)
      if (id !== undefined) {
        const v = `${label}-du${n}`
        stmts.push(['UPDATE public.departments SET name = $2 WHERE id = $1', [id, v]])
        changes.push({table: 'depts', id, value: v})
      }
    }
    if (n % 11 === 10) {
      const id = pick(liveDepts.filter(d => !changes.some(c => c.id === d && c.table === 'depts')), 4)
      if (id !== undefined) {
        stmts.push(['DELETE FROM public.departments WHERE id = $1', [id]])
        changes.push({table: 'depts', id, value: null})
      }
    }
    return {stmts, changes, fresh}
  }

  private async writer(label: string, server: LocalServer, index: number, w: number, pauseMs: number): Promise<void> {
    const m = this.model(label, index, w)
    const hard = Boolean(this.opts.hard)
    const [u0] = this.report.ranges!.get(label)!.users
    let c = await this.connect(server)
    let n = 0
    let last = Date.now()
    try {
      while (!this.stopping) {
        let stmts: Array<[string, unknown[]]>
        let changes: Change[]
        let fresh: number
        if (hard) ({stmts, changes, fresh} = this.hardTxn(label, index, w, n))
        else {
          // the historical load: INSERT, and every third iteration an UPDATE (its own transaction)
          fresh = u0 + n
          stmts = [['INSERT INTO public.users (id, dept, name, updated_by) VALUES ($1, $2, $3, $4)', [fresh, n % 10, `${label}-${n}`, label]]]
          changes = [{table: 'users', id: fresh, value: `${label}-${n}`}]
        }
        try {
          if (stmts.length > 1) await c.query('BEGIN')
          for (const [q, p] of stmts) await c.query(q, p)
          if (stmts.length > 1) await c.query('COMMIT')
          this.apply(label, index, w, changes)
          if (!hard && n % 3 === 2) {
            const target = u0 + n - 2
            const newName = `${label}-${n - 2}-u${n}`
            await c.query('UPDATE public.users SET name = $2 WHERE id = $1', [target, newName])
            this.apply(label, index, w, [{table: 'users', id: target, value: newName}])
          }
        } catch (e) {
          if (!this.opts.tolerateErrors) throw e
          this.errors.push(`${label}: ${(e as Error).message}`)
          await c.end().catch(() => {})
          // the answer never came: did it commit? its fresh users row tells (keys are ours alone)
          c = await this.connect(server).catch(() => undefined as unknown as pg.Client)
          if (!c) throw new Error(`${label}: ${server.name} unreachable when the load stopped; the fate of its last transaction is unknown`)
          const committed = (await c.query('SELECT 1 FROM public.users WHERE id = $1', [fresh])).rowCount === 1
          if (committed) this.apply(label, index, w, changes)
          // a non-hard writer's separate UPDATE: re-read the row itself
          else if (!hard && m.users.has(fresh)) m.users.delete(fresh)
          if (!hard && committed && n % 3 === 2) {
            const target = u0 + n - 2
            const r = await c.query<{name: string}>('SELECT name FROM public.users WHERE id = $1', [target])
            if (r.rows[0]) m.users.set(target, r.rows[0].name)
          }
        }
        n++
        this.report.commits++
        const now = Date.now()
        this.report.maxGapMs.set(label, Math.max(this.report.maxGapMs.get(label)!, now - last))
        last = now
        if (pauseMs) await new Promise(r => setTimeout(r, pauseMs))
      }
    } finally {
      await c?.end().catch(() => {})
    }
  }

  /**
   * Open a multi-row transaction on `server` now (rows written, xid assigned), to be committed
   * by the test after the moment it must span. `index` must be a key range no writer uses.
   */
  async longTransaction(server: LocalServer, index: number, rows = 200): Promise<LongTransaction> {
    const label = `long${this.longCount++}@${server.name}`
    this.model(label, index, 0)
    const [u0] = this.report.ranges!.get(label)!.users
    const [d0] = this.report.ranges!.get(label)!.depts
    const c = new pg.Client({connectionString: server.dsn()})
    c.on('error', () => {})
    await c.connect()
    const pid = (await c.query<{pid: number}>('SELECT pg_backend_pid() AS pid')).rows[0].pid
    await c.query('BEGIN')
    await c.query(
      `INSERT INTO public.users (id, dept, name, updated_by) SELECT $1::bigint + g, g % 10, $2 || g, $2 FROM generate_series(0, $3::int - 1) g`,
      [u0, label, rows],
    )
    await c.query('INSERT INTO public.departments (id, name) VALUES ($1, $2)', [d0, label])
    const changes: Change[] = [
      ...Array.from({length: rows}, (_, g): Change => ({table: 'users', id: u0 + g, value: `${label}${g}`})),
      {table: 'depts', id: d0, value: label},
    ]
    return {
      pid,
      commit: async () => {
        try {
          await c.query('COMMIT')
          this.apply(label, index, 0, changes)
          this.report.commits++
        } finally {
          await c.end().catch(() => {})
        }
      },
    }
  }

  async stop(): Promise<LoadReport> {
    this.stopping = true
    this.stoppedForGood = true
    await Promise.all(this.runs)
    return this.report
  }
}

/** Wait until `server` runs a slot creation (pg_create_logical_replication_slot / CREATE_REPLICATION_SLOT). */
export async function waitSlotCreationRunning(server: LocalServer, timeoutMs = 120_000): Promise<void> {
  await waitFor(
    async () =>
      (
        await sql(
          server,
          "SELECT 1 FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND (query ILIKE '%pg_create_logical_replication_slot%' OR query ILIKE '%CREATE_REPLICATION_SLOT%') AND state = 'active'",
        )
      ).length > 0,
    `a slot creation on ${server.name}`,
    timeoutMs,
  )
}

/** Wait until some session on `server` waits for backend `pid` (a lock, or its transaction to end). */
export async function waitBlockedBy(server: LocalServer, pid: number, timeoutMs = 120_000): Promise<void> {
  await waitFor(
    async () => (await sql(server, 'SELECT 1 FROM pg_stat_activity WHERE $1::int = ANY(pg_blocking_pids(pid))', [pid])).length > 0,
    `a session on ${server.name} waiting for backend ${pid}`,
    timeoutMs,
  )
}

const TABLES = ['public.users', 'public.departments']

async function problemsOn(s: LocalServer, report: LoadReport, expectedUsers: number): Promise<string[]> {
  const out: string[] = []
  const users = await sql<{id: string; name: string}>(s, 'SELECT id::text, name FROM public.users')
  if (users.length !== expectedUsers) out.push(`${s.name}: ${users.length} users rows, expected ${expectedUsers}`)
  const have = new Map(users.map(r => [Number(r.id), r.name]))
  const depts = report.depts && [...report.depts.values()].some(m => m.size) ? await sql<{id: number; name: string}>(s, 'SELECT id, name FROM public.departments') : []
  const haveD = new Map(depts.map(r => [r.id, r.name]))
  for (const [label, acked] of report.acked) {
    let missing = 0
    for (const [id, want] of acked) {
      const got = have.get(id)
      if (got === undefined) missing++
      else if (got !== want) out.push(`${s.name}: users ${id} has "${got}", last acknowledged "${want}"`)
    }
    if (missing) out.push(`${s.name}: ${missing} acknowledged writes of ${label} missing`)
    for (const id of report.deletedUsers?.get(label) ?? []) if (have.has(id)) out.push(`${s.name}: users ${id} is present although its DELETE was acknowledged (${label})`)
    const range = report.ranges?.get(label)
    if (range) {
      for (const id of have.keys()) if (id >= range.users[0] && id < range.users[1] && !acked.has(id)) out.push(`${s.name}: users ${id} in ${label}'s keys was never acknowledged (or was deleted)`)
    }
    const dm = report.depts?.get(label)
    if (dm && (dm.size || report.deletedDepts?.get(label)?.size)) {
      for (const [id, want] of dm) if (haveD.get(id) !== want) out.push(`${s.name}: departments ${id} has ${JSON.stringify(haveD.get(id))}, last acknowledged "${want}"`)
      for (const id of report.deletedDepts?.get(label) ?? []) if (haveD.has(id)) out.push(`${s.name}: departments ${id} present although deleted (${label})`)
      if (range) for (const id of haveD.keys()) if (id >= range.depts[0] && id < range.depts[1] && !dm.has(id)) out.push(`${s.name}: departments ${id} in ${label}'s keys was never acknowledged (or was deleted)`)
    }
  }
  return out.slice(0, 20)
}

/**
 * After the load: wait until every node holds every acknowledged write, then check each is
 * present exactly once (primary key) with its last acknowledged value, every acknowledged
 * DELETE is absent, no unacknowledged row sits in a writer's keys, `users` has
 * (live rows of the load + extraRows) rows, and every replicated table (`tables`) has the same
 * full content on every node — the source node included: pass every node.
 */
export async function verifyLoad(servers: LocalServer[], report: LoadReport, extraRows = 0, timeoutMs = 120_000, tables = TABLES): Promise<void> {
  if (servers.length === 0) throw new Error('verifyLoad: no servers given')
  const expected = [...report.acked.values()].reduce((a, m) => a + m.size, 0) + extraRows
  let last: string[] = []
  try {
    await waitFor(async () => {
      last = (await Promise.all(servers.map(s => problemsOn(s, report, expected)))).flat()
      if (last.length) return false
      for (const t of tables) {
        const d = await Promise.all(servers.map(s => sql<{md5: string}>(s, `SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) AS md5 FROM ${t} t`)))
        if (d.some(x => x[0].md5 !== d[0][0].md5)) {
          last = [`${t} differs between nodes: ${servers.map((s, i) => `${s.name}=${d[i][0].md5}`).join(' ')}`]
          return false
        }
      }
      return true
    }, `every node to hold exactly the acknowledged writes (${expected} users rows)`, timeoutMs)
  } catch (e) {
    throw new Error(`${(e as Error).message}:\n  ${last.join('\n  ')}`)
  }
}

/**
 * Samples `servers` for client sessions waiting on a heavyweight lock on the replicated tables
 * while a procedure runs. The load's writers touch only their own keys (and the apply workers
 * only other nodes' keys), so any such wait is one the procedure caused: a stall of clients
 * shown independently of how fast the machine is. Query errors are kept, never swallowed.
 */
export class LockWaitSampler {
  readonly waits: string[] = []
  readonly errors: string[] = []
  /** rounds in which every server was read */
  evaluated = 0
  private stopping = false
  private run?: Promise<void>
  constructor(private readonly servers: LocalServer[]) {}

  start(): this {
    this.run = (async () => {
      while (!this.stopping) {
        let ok = true
        for (const s of this.servers) {
          try {
            const rows = await sql<{pid: number; wait: string; query: string}>(
              s,
              `SELECT pid, wait_event AS wait, left(query, 100) AS query FROM pg_stat_activity
                WHERE backend_type = 'client backend' AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()
                  AND (query ILIKE '%public.users%' OR query ILIKE '%public.departments%')`,
            )
            for (const r of rows) this.waits.push(`${s.name}: backend ${r.pid} waits for a lock (${r.wait}) in: ${r.query}`)
          } catch (e) {
            ok = false
            this.errors.push(`${s.name}: ${(e as Error).message}`)
          }
        }
        if (ok) this.evaluated++
        await new Promise(r => setTimeout(r, 50))
      }
    })()
    return this
  }

  async stop(): Promise<void> {
    this.stopping = true
    await this.run
  }
}
