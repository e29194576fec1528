/**
 * Continuous writes into any table shaped `(id bigint PRIMARY KEY, node text, v int, ...)`,
 * one writer per node on disjoint ids (index * 10^9 + n): inserts, updates of its own earlier
 * rows and deletes of some of them. Every acknowledged write is logged with the state it left
 * (value, or deleted), so the test can check afterwards that every node holds exactly that.
 * Used by the schema tests for tables that become (or stop being) replicated while written.
 */
import {readFile, writeFile} from 'node:fs/promises'
import pg from 'pg'
import type {LocalServer} from '../../src/local/server.js'
import {runCli, sql, waitFor} from './cluster.js'
import {verifyLoad, type WriteLoad} from './load.js'

export class TableLoad {
  private stopping = false
  private runs: Promise<void>[] = []
  /** per writer: id -> last acknowledged v (null: deleted) */
  readonly acked = new Map<string, Map<number, number | null>>()
  /** extra columns the writers fill: name -> SQL expression (set with useColumn) */
  private extra = new Map<string, string>()
  commits = 0

  constructor(readonly table: string) {}

  /** From now on, writers also set `col` (e.g. a column added by `mmlite ddl`) to `expr`, which may use $3 (a number). */
  useColumn(col: string, expr: string): void {
    this.extra.set(col, expr)
  }

  start(writers: Array<{label: string; server: LocalServer; index: number}>, pauseMs = 3): this {
    for (const w of writers) this.runs.push(this.writer(w.label, w.server, w.index, pauseMs))
    return this
  }

  private async writer(label: string, server: LocalServer, index: number, pauseMs: number): Promise<void> {
    const acked = new Map<number, number | null>()
    this.acked.set(label, acked)
    const c = new pg.Client({connectionString: server.dsn()})
    await c.connect()
    let n = 0
    try {
      while (!this.stopping) {
        const id = index * 1_000_000_000 + n
        const cols = ['id', 'node', 'v', ...this.extra.keys()]
        const vals = ['$1', '$2', '$3', ...this.extra.values()]
        await c.query(`INSERT INTO ${this.table} (${cols.join(', ')}) VALUES (${vals.join(', ')})`, [id, label, n])
        acked.set(id, n)
        if (n % 3 === 2) {
          const target = id - 2
          const sets = ['v = $2', ...[...this.extra].map(([k, e]) => `${k} = ${e}`)]
          await c.query(`UPDATE ${this.table} SET ${sets.join(', ')} WHERE id = $1`, this.extra.size ? [target, n * 10, n] : [target, n * 10])
          if (acked.get(target) !== null) acked.set(target, n * 10)
        }
        if (n % 7 === 6) {
          await c.query(`DELETE FROM ${this.table} WHERE id = $1`, [id - 5])
          acked.set(id - 5, null)
        }
        n++
        this.commits++
        if (pauseMs) await new Promise(r => setTimeout(r, pauseMs))
      }
    } finally {
      await c.end().catch(() => {})
    }
  }

  /** Resolves once every writer has made `k` more commits than when called. */
  async progress(k: number, timeoutMs = 60_000): Promise<void> {
    const start = this.commits
    await waitFor(async () => this.commits >= start + k * this.runs.length, `${k} more writes per writer into ${this.table}`, timeoutMs)
  }

  async stop(): Promise<void> {
    this.stopping = true
    await Promise.all(this.runs)
  }

  /**
   * Wait until every node holds `baseRows` + the live acknowledged rows, then check each
   * acknowledged write is there exactly as left (deleted ones absent) and that the table is
   * identical on every node.
   */
  async verify(servers: LocalServer[], baseRows: number, timeoutMs = 120_000): Promise<void> {
    const live = [...this.acked.values()].reduce((a, m) => a + [...m.values()].filter(v => v !== null).length, 0)
    const expected = baseRows + live
    let counts: number[] = []
    try {
      await waitFor(async () => {
        counts = (await Promise.all(servers.map(s => sql<{n: number}>(s, `SELECT count(*)::int AS n FROM ${this.table}`)))).map(r => r[0].n)
        return counts.every(n => n === expected)
      }, `every node to hold ${expected} rows in ${this.table}`, timeoutMs)
    } catch (e) {
      throw new Error(`${(e as Error).message}; counts: ${counts.join(', ')}`)
    }
    for (const s of servers) {
      for (const [label, acked] of this.acked) {
        const ids = [...acked.keys()]
        const rows = await sql<{id: string; v: number}>(s, `SELECT id::text, v FROM ${this.table} WHERE id = ANY($1::bigint[])`, [ids])
        const have = new Map(rows.map(r => [Number(r.id), r.v]))
        for (const [id, v] of acked) {
          if (v === null && have.has(id)) throw new Error(`${s.name}: ${this.table} id ${id} (deleted by ${label}) is present`)
          if (v !== null && have.get(id) !== v) throw new Error(`${s.name}: ${this.table} id ${id} has ${have.get(id)}, last acknowledged ${v} (${label})`)
        }
      }
    }
    const digests = await Promise.all(
      servers.map(s => sql<{md5: string}>(s, `SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY id), '')) AS md5 FROM ${this.table} t`)),
    )
    for (const d of digests) if (d[0].md5 !== digests[0][0].md5) throw new Error(`${this.table} differs between nodes: ${JSON.stringify(digests.map(x => x[0].md5))}`)
  }
}

/** Rewrite `tables:` of an mmlite.yaml written by writeConfig. */
export async function setTables(cfg: string, tables: string[]): Promise<void> {
  const text = await readFile(cfg, 'utf8')
  const out = text.replace(/tables:\n(?:  - .*\n)+/, `tables:\n${tables.map(t => `  - ${t}\n`).join('')}`)
  await writeFile(cfg, out)
}

/**
 * Runs `body` while `users` and `items` write, re-runs `rerun` (a CLI command that must exit 0),
 * then `afterRerun` (e.g. writers start using a new column), lets the writers go on, stops both
 * loads (also when something failed), then checks that every node holds exactly the
 * acknowledged writes of public.users and of the table.
 */
export async function rerunUnderLoad(
  servers: LocalServer[],
  loads: {users: WriteLoad; usersBefore: number; items: TableLoad; baseRows: number},
  body: () => Promise<void>,
  rerun: string[],
  afterRerun?: () => Promise<void>,
): Promise<void> {
  const {users, items} = loads
  try {
    await body()
    const again = await runCli(rerun)
    if (again.code !== 0) throw new Error(`${rerun.join(' ')} exited ${again.code}:\n${again.stderr}${again.stdout}`)
    await afterRerun?.()
    await items.progress(10)
  } finally {
    await items.stop()
    await users.stop()
  }
  await verifyLoad(servers, users.report, loads.usersBefore)
  await items.verify(servers, loads.baseRows)
}
