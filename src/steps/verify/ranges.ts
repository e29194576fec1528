/**
 * Key ranges: bounds sampled on one node, then one pass per node computing, per range,
 * count(*) and the sum of 64-bit row hashes (order-independent, exact: sum() of int8 is numeric).
 */
import type {Session} from './session.js'
import {boundsArrayExpr, keyOrderExpr, keyOrderTextExprs, rowHashExpr, type TableShape} from './shape.js'

/** bounds[i] = the text of each key column's order value at the start of range i+1 */
export type Bounds = string[][]

export const MAX_RANGES = 100_000
const SAMPLE_PER_RANGE = 30
/** keys sampled at most: ranges of uneven size cost nothing but a little drill-down */
const MAX_SAMPLE = 50_000

/** Split the key space in ranges of about blockRows rows, from a sample of the keys of one node. */
export async function sampleBounds(s: Session, sh: TableShape, blockRows: number): Promise<Bounds> {
  const t = sh.table.qualified
  // the planner's estimate: tuples per page from the last ANALYZE/VACUUM times today's size
  const st = (await s.q<{tuples: number; relpages: number; pages: number}>(
    `SELECT c.reltuples::pg_catalog.float8 AS tuples, c.relpages::pg_catalog.float8 AS relpages,
            (pg_catalog.pg_relation_size(c.oid) / pg_catalog.current_setting('block_size')::pg_catalog.int8)::pg_catalog.float8 AS pages
       FROM pg_catalog.pg_class c WHERE c.oid = $1::pg_catalog.regclass`,
    [t],
  ))[0]
  let est = st.tuples > 0 && st.relpages > 0 ? (st.tuples / st.relpages) * Math.max(st.pages, 1) : -1
  if (!(est > 0)) est = Number((await s.q<{n: string}>(`SELECT pg_catalog.count(*) AS n FROM ${t}`))[0].n)
  const ranges = Math.min(MAX_RANGES, Math.ceil(est / blockRows))
  if (ranges <= 1) return []
  const pct = Math.min(100, (100 * Math.min(ranges * SAMPLE_PER_RANGE, MAX_SAMPLE)) / est)
  // BERNOULLI, not SYSTEM: SYSTEM picks whole pages, and on a table whose keys follow its
  // pages (the usual case) that gives a few clusters of neighbouring keys, not quantiles
  const sample = pct >= 50 ? '' : ` TABLESAMPLE BERNOULLI (${pct.toFixed(6)})`
  const texts = keyOrderTextExprs(sh)
  const cols = texts.map((e, i) => `${e} AS b${i}`).join(', ')
  const outs = texts.map((_, i) => `s.b${i}`).join(', ')
  const rows = await s.q<Record<string, string>>(
    `SELECT DISTINCT ON (s.tile) ${outs} FROM (SELECT ${cols}, ${keyOrderExpr(sh)} AS k, pg_catalog.ntile($1::pg_catalog.int4) OVER (ORDER BY ${keyOrderExpr(sh)}) AS tile FROM ${t} AS t${sample}) s ORDER BY s.tile, s.k`,
    [ranges],
  )
  // the first range starts at -infinity
  return rows.slice(1).map(r => texts.map((_, i) => r[`b${i}`]))
}

/** the range number of each row: 0 below the first bound, bounds.length at or above the last */
export function rangeExpr(sh: TableShape, bounds: Bounds, firstParam: number): string {
  if (bounds.length === 0) return '0'
  return `pg_catalog.width_bucket(${keyOrderExpr(sh)}, ${boundsArrayExpr(sh, firstParam)})`
}

export function boundsParams(sh: TableShape, bounds: Bounds): string[][] {
  if (bounds.length === 0) return []
  return sh.key.map((_, i) => bounds.map(b => b[i]))
}

export interface RangeSum {
  count: string
  sum: string
}

/** One pass over the table: count and hash sum per range. */
export async function hashRanges(s: Session, sh: TableShape, names: string[], bounds: Bounds): Promise<Map<number, RangeSum>> {
  const rows = await s.q<{r: number; n: string; h: string}>(
    `SELECT ${rangeExpr(sh, bounds, 1)} AS r, pg_catalog.count(*)::pg_catalog.text AS n, pg_catalog.sum(${rowHashExpr(names)})::pg_catalog.text AS h FROM ${sh.table.qualified} AS t GROUP BY 1`,
    boundsParams(sh, bounds),
  )
  return new Map(rows.map(r => [Number(r.r), {count: r.n, sum: r.h}]))
}

/** Ranges whose count or hash sum is not the same on every node (absent range = empty). */
export function differingRanges(perNode: Map<number, RangeSum>[]): number[] {
  const all = new Set<number>()
  for (const m of perNode) for (const k of m.keys()) all.add(k)
  const out: number[] = []
  for (const r of all) {
    const v = perNode.map(m => m.get(r))
    const s0 = v[0] ? `${v[0].count}:${v[0].sum}` : ''
    if (v.some(x => (x ? `${x.count}:${x.sum}` : '') !== s0)) out.push(r)
  }
  return out.sort((a, b) => a - b)
}
