/**
 * Rows of the ranges that differ (drill-down) and re-reads of single keys (settling, final
 * versions). A row version is its digest and xmin (a new xmin = a new version, even with the
 * same content); the full row as text per column when asked.
 */
import {escapeIdentifier as qi} from '../../db/quote.js'
import type {Session} from './session.js'
import {keyColumnsParams, keyInExpr, keyTextExprs, rowDigestExpr, type TableShape} from './shape.js'

export interface RowVersion {
  digest: string
  xmin: string
  /** column → text (null = SQL NULL), when read with full rows */
  row?: Record<string, string | null>
  /** commit timestamp of the version (ISO), when asked */
  committed?: string | null
}

/** key (JSON of the key columns' text) → version */
export type Versions = Map<string, RowVersion>

const keyId = (k: string[]) => JSON.stringify(k)
export const parseKeyId = (id: string) => JSON.parse(id) as string[]

function selectList(sh: TableShape, names: string[], full: boolean, commitTs: boolean): string {
  const parts = [...keyTextExprs(sh).map((e, i) => `${e} AS k${i}`), `${rowDigestExpr(names)} AS d`, 't.xmin::pg_catalog.text AS x']
  if (full) parts.push(`ARRAY[${names.map(n => `t.${qi(n)}::pg_catalog.text`).join(', ')}]::pg_catalog.text[] AS v`)
  if (commitTs) parts.push(`pg_catalog.to_char(pg_catalog.pg_xact_commit_timestamp(t.xmin) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS ts`)
  return parts.join(', ')
}

function collect(sh: TableShape, names: string[], rows: Record<string, unknown>[], into: Versions): void {
  for (const r of rows) {
    const key = sh.key.map((_, i) => r[`k${i}`] as string)
    const v: RowVersion = {digest: r.d as string, xmin: r.x as string}
    if (r.v) v.row = Object.fromEntries(names.map((n, i) => [n, (r.v as (string | null)[])[i]]))
    if ('ts' in r) v.committed = (r.ts as string | null) ?? null
    into.set(keyId(key), v)
  }
}

/** Every row matching `where` (over alias t), as versions. */
export async function readWhere(s: Session, sh: TableShape, names: string[], where: string, params: unknown[], lateralFrom?: string): Promise<Versions> {
  const out: Versions = new Map()
  const inner = `SELECT ${selectList(sh, names, false, false)} FROM ${sh.table.qualified} AS t WHERE ${where}`
  collect(sh, names, await s.q(lateralFrom ? `SELECT x.* FROM ${lateralFrom} (${inner}) AS x` : inner, params), out)
  return out
}

const KEY_BATCH = 1000

/** Read the given keys (absent keys are missing from the result). */
export async function readKeys(s: Session, sh: TableShape, names: string[], keys: string[], opts: {full?: boolean; commitTs?: boolean} = {}): Promise<Versions> {
  const out: Versions = new Map()
  for (let i = 0; i < keys.length; i += KEY_BATCH) {
    const batch = keys.slice(i, i + KEY_BATCH).map(parseKeyId)
    const sql = `SELECT ${selectList(sh, names, opts.full ?? false, opts.commitTs ?? false)} FROM ${sh.table.qualified} AS t WHERE ${keyInExpr(sh, 1)}`
    collect(sh, names, await s.q(sql, keyColumnsParams(sh, batch)), out)
  }
  return out
}

/** Keys whose version differs between the nodes (absent on some node counts as different). */
export function differingKeys(perNode: Versions[]): string[] {
  const all = new Set<string>()
  for (const m of perNode) for (const k of m.keys()) all.add(k)
  return [...all].filter(k => {
    const d0 = perNode[0].get(k)?.digest
    return perNode.some(m => m.get(k)?.digest !== d0)
  })
}
