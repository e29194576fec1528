/**
 * Continuous write load for join/leave tests: one writer per node, each on its own disjoint
 * keys (ids node_index * 10^9 + n), inserting and updating its own rows. Every acknowledged
 * write is logged with the value it left, so after the load stops and lag drains the test can
 * check that every acknowledged write is present exactly once, with its last value, on every
 * node. Also records the longest gap between two commits of one writer (client stall).
 */
import pg from 'pg'
import type {LocalServer} from '../../src/local/server.js'
import {waitFor, sql} from './cluster.js'

export interface LoadReport {
  /** per writer: id -> last acknowledged `name` */
  acked: Map<string, Map<number, string>>
  /** longest gap between two acknowledged commits, per writer, in ms */
  maxGapMs: Map<string, number>
  commits: number
}

export class WriteLoad {
  private stopping = false
  private runs: Promise<void>[] = []
  readonly report: LoadReport = {acked: new Map(), maxGapMs: new Map(), commits: 0}

  /** writers: [label, server, index] — index keeps key ranges disjoint across writers */
  start(writers: Array<{label: string; server: LocalServer; index: number}>, opts: {pauseMs?: number} = {}): this {
    for (const w of writers) this.runs.push(this.writer(w.label, w.server, w.index, opts.pauseMs ?? 2))
    return this
  }

  private async writer(label: string, server: LocalServer, index: number, pauseMs: number): Promise<void> {
    const acked = new Map<number, string>()
    this.report.acked.set(label, acked)
    this.report.maxGapMs.set(label, 0)
    const c = new pg.Client({connectionString: server.dsn()})
    await c.connect()
    let n = 0
    let last = Date.now()
    try {
      while (!this.stopping) {
        const id = index * 1_000_000_000 + n
        const name = `${label}-${n}`
        await c.query('INSERT INTO public.users (id, dept, name, updated_by) VALUES ($1, $2, $3, $4)', [id, n % 10, name, label])
        acked.set(id, name)
        if (n % 3 === 2) {
          const target = index * 1_000_000_000 + n - 2
          const newName = `${label}-${n - 2}-u${n}`
          await c.query('UPDATE public.users SET name = $2 WHERE id = $1', [target, newName])
          acked.set(target, newName)
        }
        n++
        this.report.commits++
        const now = Date.now()
        this.report.maxGapMs.set(label, Math.max(this.report.maxGapMs.get(label)!, now - last))
        last = now
        if (pauseMs) await new Promise(r => setTimeout(r, pauseMs))
      }
    } finally {
      await c.end().catch(() => {})
    }
  }

  async stop(): Promise<LoadReport> {
    this.stopping = true
    await Promise.all(this.runs)
    return this.report
  }
}

/**
 * After the load: wait until every node holds every acknowledged write, then check each is
 * present exactly once with its last acknowledged value, and that nodes hold identical tables.
 */
export async function verifyLoad(servers: LocalServer[], report: LoadReport, extraRows = 0, timeoutMs = 120_000): Promise<void> {
  const expected = [...report.acked.values()].reduce((a, m) => a + m.size, 0) + extraRows
  await waitFor(async () => {
    const counts = await Promise.all(servers.map(s => sql<{n: number}>(s, 'SELECT count(*)::int AS n FROM public.users')))
    return counts.every(c => c[0].n === expected)
  }, `every node to hold ${expected} rows`, timeoutMs)
  for (const s of servers) {
    for (const [label, acked] of report.acked) {
      const ids = [...acked.keys()]
      const rows = await sql<{id: string; name: string; n: number}>(
        s,
        'SELECT id::text, name, count(*) OVER (PARTITION BY id)::int AS n FROM public.users WHERE id = ANY($1::bigint[])',
        [ids],
      )
      if (rows.length !== ids.length) throw new Error(`${s.name}: ${ids.length - rows.length} acknowledged writes of ${label} missing`)
      for (const r of rows) {
        if (r.n !== 1) throw new Error(`${s.name}: id ${r.id} present ${r.n} times`)
        const want = acked.get(Number(r.id))
        if (r.name !== want) throw new Error(`${s.name}: id ${r.id} has "${r.name}", last acknowledged "${want}"`)
      }
    }
  }
  const digests = await Promise.all(
    servers.map(s => sql<{md5: string}>(s, "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY id), '')) AS md5 FROM public.users t")),
  )
  for (const d of digests) if (d[0].md5 !== digests[0][0].md5) throw new Error('nodes differ: ' + JSON.stringify(digests.map(x => x[0].md5)))
}
