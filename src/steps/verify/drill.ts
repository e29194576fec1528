/**
 * Step: drill into the key ranges that differ, down to rows. A range of ordinary size is read
 * row by row on every node (an index range scan when the key's order is setting-free; else all
 * such ranges in one scan). A range much larger than --block-rows on some node (a node with
 * many extra rows there, or a stale sample) is first split by a hash of the key into pieces of
 * about --block-rows rows, hashed like the ranges, and only the pieces that differ are read:
 * memory stays proportional to the differences, not to the table.
 */
import {escapeIdentifier as qi} from '../../db/quote.js'
import type {Session} from './session.js'
import {boundsArrayExpr, keyOrderExpr, rowHashExpr, type TableShape} from './shape.js'
import {boundsParams, differingRanges, type Bounds, type RangeSum} from './ranges.js'
import {differingKeys, readWhere, type RowVersion, type Versions} from './rows.js'

const SPLIT_ABOVE = 4
const MAX_PIECES = 4096

export interface Filter {
  where: string
  params: unknown[]
}

/** Rows of range r: key >= bounds[r-1] AND key < bounds[r] (index-friendly), or its range number. */
export function rangeFilter(sh: TableShape, bounds: Bounds, r: number | number[]): Filter {
  if (bounds.length === 0) return {where: 'true', params: []}
  if (!sh.indexable || Array.isArray(r)) {
    const p = boundsParams(sh, bounds)
    const rs = Array.isArray(r) ? r : [r]
    return {where: `pg_catalog.width_bucket(${keyOrderExpr(sh)}, ${boundsArrayExpr(sh, 1)}) = ANY($${p.length + 1}::pg_catalog.int4[])`, params: [...p, rs]}
  }
  const lhs = sh.key.length === 1 ? `t.${qi(sh.key[0].name)}` : `(${sh.key.map(k => `t.${qi(k.name)}`).join(', ')})`
  const rhs = (first: number) => (sh.key.length === 1 ? `$${first}::${sh.key[0].type}` : `(${sh.key.map((k, i) => `$${first + i}::${k.type}`).join(', ')})`)
  const conds: string[] = []
  const params: string[] = []
  if (r > 0) {
    conds.push(`${lhs} >= ${rhs(params.length + 1)}`)
    params.push(...bounds[r - 1])
  }
  if (r < bounds.length) {
    conds.push(`${lhs} < ${rhs(params.length + 1)}`)
    params.push(...bounds[r])
  }
  return {where: conds.join(' AND '), params}
}

/** Rows of ranges 0 < r < bounds.length: a list of [lo, hi) joined laterally to index range scans. */
async function readInnerRanges(s: Session, sh: TableShape, names: string[], bounds: Bounds, ranges: number[]): Promise<Versions> {
  const n = sh.key.length
  const lo = sh.key.map((_, i) => ranges.map(r => bounds[r - 1][i]))
  const hi = sh.key.map((_, i) => ranges.map(r => bounds[r][i]))
  const cols = sh.key.flatMap((_, i) => [`l${i}`, `h${i}`])
  const arrays = sh.key.flatMap((_, i) => [`pg_catalog.unnest($${2 * i + 1}::pg_catalog.text[])`, `pg_catalog.unnest($${2 * i + 2}::pg_catalog.text[])`])
  const lhs = n === 1 ? `t.${qi(sh.key[0].name)}` : `(${sh.key.map(k => `t.${qi(k.name)}`).join(', ')})`
  const side = (p: string) => (n === 1 ? `r.${p}0::${sh.key[0].type}` : `(${sh.key.map((k, i) => `r.${p}${i}::${k.type}`).join(', ')})`)
  const where = `${lhs} >= ${side('l')} AND ${lhs} < ${side('h')}`
  const params = sh.key.flatMap((_, i) => [lo[i], hi[i]])
  return readWhere(s, sh, names, where, params, `ROWS FROM (${arrays.join(', ')}) AS r(${cols.join(', ')}) CROSS JOIN LATERAL`)
}

const pieceExpr = (sh: TableShape, pieces: number) =>
  `((pg_catalog.hashtext(ROW(${sh.key.map(k => `t.${qi(k.name)}`).join(', ')})::pg_catalog.text) & 2147483647) % ${pieces})`

type OnAll = <T>(fn: (s: Session, sh: TableShape) => Promise<T>) => Promise<T[]>

async function readSplit(on: OnAll, names: string[], f: Filter, pieces: number): Promise<Versions[]> {
  const sums = await on(async (s, sh) => {
    const rows = await s.q<{p: number; n: string; h: string}>(
      `SELECT ${pieceExpr(sh, pieces)} AS p, pg_catalog.count(*)::pg_catalog.text AS n, pg_catalog.sum(${rowHashExpr(names)})::pg_catalog.text AS h FROM ${sh.table.qualified} AS t WHERE ${f.where} GROUP BY 1`,
      f.params,
    )
    return new Map<number, RangeSum>(rows.map(r => [Number(r.p), {count: r.n, sum: r.h}]))
  })
  const differ = differingRanges(sums)
  if (differ.length === 0) return sums.map(() => new Map())
  return on((s, sh) => readWhere(s, sh, names, `${f.where} AND ${pieceExpr(sh, pieces)} = ANY($${f.params.length + 1}::pg_catalog.int4[])`, [...f.params, differ]))
}

/** The keys that differ in the given ranges, with every node's version (undefined = absent). */
export async function drill(on: OnAll, ref: TableShape, names: string[], bounds: Bounds, ranges: number[], sums: Map<number, RangeSum>[], blockRows: number): Promise<Map<string, Array<RowVersion | undefined>>> {
  const out = new Map<string, Array<RowVersion | undefined>>()
  const add = (versions: Versions[]) => {
    for (const k of differingKeys(versions)) out.set(k, versions.map(v => v.get(k)))
  }
  const size = (r: number) => Math.max(...sums.map(m => Number(m.get(r)?.count ?? 0)))
  const big = ranges.filter(r => size(r) > SPLIT_ABOVE * blockRows)
  const small = ranges.filter(r => !big.includes(r))
  if (small.length && !ref.indexable) add(await on((s, sh) => readWhere(s, sh, names, rangeFilter(sh, bounds, small).where, rangeFilter(sh, bounds, small).params)))
  else if (small.length) {
    // the inner ranges in one query (an index range scan each), the open-ended ones alone
    const inner = small.filter(r => r > 0 && r < bounds.length)
    if (inner.length) add(await on((s, sh) => readInnerRanges(s, sh, names, bounds, inner)))
    for (const r of small.filter(x => !inner.includes(x))) add(await on((s, sh) => readWhere(s, sh, names, rangeFilter(sh, bounds, r).where, rangeFilter(sh, bounds, r).params)))
  }
  for (const r of big) add(await readSplit(on, names, rangeFilter(ref, bounds, r), Math.min(MAX_PIECES, Math.ceil(size(r) / blockRows))))
  return out
}
