/**
 * `mmlite verify`: prove the nodes hold the same rows, or name exactly the rows that differ.
 *
 *   connect       one pinned session per node and job; a node that is down is named
 *   start-lsn     every node's WAL insert position before the first read
 *   compare       per table, on every node at once: key ranges (sampled on one node), one pass
 *                 hashing each range, then the rows of the differing ranges only
 *   settle        wait for every link to apply what was committed, re-read the differing keys
 *   fill-rows     the columns of rows left unsettled by a wait that timed out
 *   report        statuses, lists (full lists to .mmlite/ when long)
 */
import {Cluster} from '../../cluster/cluster.js'
import type {Config} from '../../config/config.js'
import {errorMessage} from '../../errors.js'
import {compareTable} from './compare.js'
import {fillRows, keyReport, settleRounds} from './rounds.js'
import {currentLsns} from './settle.js'
import type {RowVersion} from './rows.js'
import {openSession, type Session} from './session.js'
import type {TableStatus, TableWork, VerifyContext, VerifyOptions, VerifyResult} from './types.js'
import {VERIFY_SCHEMA_VERSION} from './types.js'

async function connect(ctx: VerifyContext): Promise<void> {
  const jobs = Math.max(1, Math.min(ctx.opts.jobs, ctx.opts.tables.length))
  ctx.pool = Array.from({length: jobs}, () => new Map<string, Session>())
  await Promise.all(
    ctx.cluster.names.map(async n => {
      try {
        for (const p of ctx.pool) p.set(n, await openSession(ctx.cluster.node(n)))
        ctx.result.nodes.push({name: n, reachable: true})
      } catch (e) {
        ctx.result.nodes.push({name: n, reachable: false, error: errorMessage(e)})
      }
    }),
  )
  ctx.result.nodes.sort((a, b) => ctx.cluster.names.indexOf(a.name) - ctx.cluster.names.indexOf(b.name))
  ctx.live = ctx.result.nodes.filter(n => n.reachable).map(n => n.name)
  for (const p of ctx.pool)
    for (const [n, s] of p)
      if (!ctx.live.includes(n)) {
        p.delete(n)
        await s.close()
      }
}

async function startLsn(ctx: VerifyContext): Promise<void> {
  ctx.result.startLsn = Object.fromEntries(await currentLsns([...ctx.pool[0].values()]))
}

async function compareAll(ctx: VerifyContext): Promise<void> {
  const queue = [...ctx.work]
  await Promise.all(
    ctx.pool.map(async sessions => {
      for (let w = queue.shift(); w; w = queue.shift()) await compareTable(ctx, w, sessions)
    }),
  )
}

const RANK: Record<TableStatus, number> = {consistent: 0, unsettled: 1, error: 2, divergent: 3}

function summarize(ctx: VerifyContext): void {
  for (const w of ctx.work) {
    const r = w.report
    r.divergentCount = w.divergent.size
    r.unsettledCount = w.candidates.size
    // a stable order for people: by key, numbers as numbers
    const sorted = (m: Map<string, Array<RowVersion | undefined>>) => [...m].sort(([a], [b]) => a.localeCompare(b, 'en', {numeric: true}))
    r.divergent = sorted(w.divergent).map(([k, v]) => keyReport(ctx, w, k, v))
    r.unsettled = sorted(w.candidates).map(([k, v]) => keyReport(ctx, w, k, v))
    if (r.status !== 'error') r.status = r.divergentCount ? 'divergent' : r.unsettledCount ? 'unsettled' : 'consistent'
  }
  const worst = ctx.work.reduce<TableStatus>((a, w) => (RANK[w.report.status] > RANK[a] ? w.report.status : a), 'consistent')
  ctx.result.status = worst === 'consistent' && ctx.live.length < ctx.cluster.names.length ? 'error' : worst
}

export async function runVerify(cfg: Config, opts: VerifyOptions, cluster = new Cluster(cfg)): Promise<VerifyResult> {
  return (await verifyDetailed(cfg, opts, cluster)).result
}

/** The run's context too: table shapes and every node's version of each divergent row (for repair). */
export async function verifyDetailed(cfg: Config, opts: VerifyOptions, cluster = new Cluster(cfg)): Promise<VerifyContext> {
  const t0 = Date.now()
  const ctx: VerifyContext = {
    cluster,
    opts,
    live: [],
    pool: [],
    result: {schemaVersion: VERIFY_SCHEMA_VERSION, cluster: cfg.cluster, status: 'consistent', nodes: [], startLsn: {}, settle: {rounds: 0, lagging: []}, tables: [], elapsedMs: 0},
    work: opts.tables.map(t => ({
      table: t,
      shapes: new Map(),
      names: [],
      candidates: new Map(),
      divergent: new Map(),
      report: {table: t.display, status: 'consistent', nodes: [], rows: {}, ranges: 0, differingRanges: 0, divergentCount: 0, unsettledCount: 0, divergent: [], unsettled: [], notes: []},
    })),
  }
  ctx.result.tables = ctx.work.map(w => w.report)
  try {
    await connect(ctx)
    if (ctx.live.length < 2) {
      for (const w of ctx.work) Object.assign(w.report, {status: 'error', error: `fewer than two nodes reachable (${ctx.live.join(', ') || 'none'}): nothing to compare`})
    } else {
      for (const w of ctx.work) w.report.nodes = [...ctx.live]
      for (const step of [startLsn, compareAll, settleRounds, fillRows]) await step(ctx)
    }
    summarize(ctx)
  } finally {
    await Promise.all(ctx.pool.flatMap(p => [...p.values()].map(s => s.close())))
  }
  ctx.result.elapsedMs = Date.now() - t0
  return ctx
}
