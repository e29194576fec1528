/** Step: compare one table on every reachable node (shapes, ranges, drill-down to rows). */
import {errorMessage} from '../../errors.js'
import {readShape, ShapeError, type TableShape} from './shape.js'
import {differingRanges, hashRanges, sampleBounds} from './ranges.js'
import {drill} from './drill.js'
import type {Session} from './session.js'
import type {TableWork, VerifyContext} from './types.js'

function commonColumns(w: TableWork, live: string[]): string[] {
  const sets = live.map(n => new Set(w.shapes.get(n)!.columns.map(c => c.name)))
  const first = w.shapes.get(live[0])!.columns.map(c => c.name)
  const all = new Set(live.flatMap(n => w.shapes.get(n)!.columns.map(c => c.name)))
  for (const c of all) {
    const missing = live.filter((_, i) => !sets[i].has(c))
    if (missing.length) w.report.notes.push(`column ${c} is missing on ${missing.join(', ')}: not compared`)
  }
  return first.filter(c => sets.every(s => s.has(c)))
}

/** One sentence per problem, naming every node that has it. */
function shapeProblems(live: string[], got: PromiseSettledResult<TableShape>[]): string {
  const byProblem = new Map<string, {nodes: string[]; hint: string}>()
  got.forEach((g, i) => {
    if (g.status === 'fulfilled') return
    const e = g.reason
    const problem = e instanceof ShapeError ? e.problem : errorMessage(e)
    const hint = e instanceof ShapeError ? e.hint : ''
    const entry = byProblem.get(problem) ?? {nodes: [], hint}
    entry.nodes.push(live[i])
    byProblem.set(problem, entry)
  })
  return [...byProblem]
    .map(([p, {nodes, hint}]) => `${p} on node${nodes.length > 1 ? 's' : ''} ${nodes.join(', ')}${hint ? `: ${hint}` : ''}`)
    .join('; ')
}

function sameKey(a: TableShape, b: TableShape): boolean {
  return a.key.length === b.key.length && a.key.every((k, i) => k.name === b.key[i].name)
}

export async function compareTable(ctx: VerifyContext, w: TableWork, sessions: Map<string, Session>): Promise<void> {
  const live = ctx.live
  const on = <T>(fn: (s: Session, node: string) => Promise<T>) => Promise.all(live.map(n => fn(sessions.get(n)!, n)))
  try {
    const got = await Promise.allSettled(live.map(n => readShape(sessions.get(n)!, w.table)))
    const failed = live.filter((_, i) => got[i].status === 'rejected')
    if (failed.length) throw new Error(shapeProblems(live, got))
    const shapes = got.map(g => (g as PromiseFulfilledResult<TableShape>).value)
    live.forEach((n, i) => w.shapes.set(n, shapes[i]))
    const ref = shapes[0]
    const odd = live.filter((_, i) => !sameKey(ref, shapes[i]))
    if (odd.length) throw new Error(`the primary key of ${w.table.display} is (${ref.key.map(k => k.name).join(', ')}) on ${live[0]} but differs on ${odd.join(', ')}`)
    w.names = commonColumns(w, live)
    const bounds = await sampleBounds(sessions.get(live[0])!, ref, ctx.opts.blockRows)
    ctx.opts.progress?.(`${w.table.display}: hashing ${bounds.length + 1} key ranges on ${live.join(', ')}`)
    const sums = await on((s, n) => hashRanges(s, w.shapes.get(n)!, w.names, bounds))
    w.report.ranges = bounds.length + 1
    live.forEach((n, i) => (w.report.rows[n] = [...sums[i].values()].reduce((a, r) => a + Number(r.count), 0)))
    const ranges = differingRanges(sums)
    w.report.differingRanges = ranges.length
    if (ranges.length === 0) return
    ctx.opts.progress?.(`${w.table.display}: ${ranges.length} key range(s) differ; reading their rows`)
    const onAll = <T>(fn: (s: Session, sh: TableShape) => Promise<T>) => on((s, n) => fn(s, w.shapes.get(n)!))
    w.candidates = await drill(onAll, ref, w.names, bounds, ranges, sums, ctx.opts.blockRows)
  } catch (e) {
    w.report.status = 'error'
    w.report.error = errorMessage(e)
  }
}
