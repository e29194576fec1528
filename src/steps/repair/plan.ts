/**
 * Step: plan the repair. For every divergent row, the version to keep (--from NODE: NODE's;
 * --policy newest: the present version with the latest commit timestamp), and for every other
 * node whose version differs the statement that makes it equal: INSERT when the row is absent
 * there, DELETE when the kept version is "absent", else UPDATE of the columns that differ.
 * Values are literals of the exact text each node printed under the pinned settings, cast to
 * the column's type: the same statement text is shown by --dry-run and run.
 */
import {escapeIdentifier as qi, escapeLiteral as ql} from '../../db/quote.js'
import {keyEqualsLiteral, rowDigestExpr, type TableShape} from '../verify/shape.js'
import type {RowVersion} from '../verify/rows.js'
import type {VerifyContext} from '../verify/types.js'

export type Policy = 'from' | 'newest'

export interface Change {
  node: string
  table: string
  key: Record<string, string>
  action: 'insert' | 'update' | 'delete'
  /** the source of the kept version */
  source: string
  /** the row this change replaces on `node` (null: absent), and its digest (the guard) */
  before: Record<string, string | null> | null
  beforeDigest: string | null
  after: Record<string, string | null> | null
  /** locks the row and returns its digest: must equal beforeDigest (else the row changed since verify) */
  guard: string
  sql: string
}

const lit = (v: string | null, type: string) => (v === null ? 'NULL' : `${ql(v)}::${type}`)

function statement(sh: TableShape, names: string[], key: string[], before: RowVersion | undefined, after: RowVersion | undefined): {action: Change['action']; sql: string} {
  const t = sh.table.qualified
  const where = keyEqualsLiteral(sh, key)
  if (!after) return {action: 'delete', sql: `DELETE FROM ${t} WHERE ${where}`}
  const cols = sh.columns.filter(c => names.includes(c.name) && !c.generated)
  if (!before) {
    const vals = cols.map(c => lit(after.row![c.name], c.type))
    return {action: 'insert', sql: `INSERT INTO ${t} (${cols.map(c => qi(c.name)).join(', ')}) OVERRIDING SYSTEM VALUE VALUES (${vals.join(', ')})`}
  }
  const keyNames = sh.key.map(k => k.name)
  const set = cols.filter(c => !keyNames.includes(c.name) && before.row![c.name] !== after.row![c.name])
  return {action: 'update', sql: `UPDATE ${t} SET ${set.map(c => `${qi(c.name)} = ${lit(after.row![c.name], c.type)}`).join(', ')} WHERE ${where}`}
}

function keep(live: string[], versions: Array<RowVersion | undefined>, policy: Policy, from: string): number {
  if (policy === 'from') return live.indexOf(from)
  let best = -1
  versions.forEach((v, i) => {
    if (!v) return
    if (best < 0 || (v.committed ?? '') > (versions[best]!.committed ?? '')) best = i
  })
  return best
}

export function planRepair(ctx: VerifyContext, policy: Policy, from: string): Change[] {
  const out: Change[] = []
  for (const w of ctx.work) {
    for (const [id, versions] of w.divergent) {
      const key = JSON.parse(id) as string[]
      const src = keep(ctx.live, versions, policy, from)
      const after = versions[src]
      ctx.live.forEach((node, i) => {
        const before = versions[i]
        if (i === src || (before?.digest ?? null) === (after?.digest ?? null)) return
        const sh = w.shapes.get(node)!
        const {action, sql} = statement(sh, w.names, key, before, after)
        out.push({
          node,
          table: w.report.table,
          key: Object.fromEntries(sh.key.map((k, j) => [k.name, key[j]])),
          action,
          source: ctx.live[src],
          before: before?.row ?? null,
          beforeDigest: before?.digest ?? null,
          after: after?.row ?? null,
          guard: `SELECT ${rowDigestExpr(w.names)} AS d FROM ${sh.table.qualified} AS t WHERE ${keyEqualsLiteral(sh, key, 't')} FOR UPDATE`,
          sql,
        })
      })
    }
  }
  return out
}
