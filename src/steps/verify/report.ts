/** Step: exit code, the human rendering, and the full lists in .mmlite/ when they are long. */
import path from 'node:path'
import {ExitCode} from '../../errors.js'
import {atomicWritePrivate} from '../../util/private-files.js'
import type {KeyReport, TableStatus, VerifyResult} from './types.js'

export function verifyExitCode(status: TableStatus): number {
  return {consistent: ExitCode.Ok, unsettled: 1, divergent: 2, error: 3}[status]
}

export const stamp = () => new Date().toISOString().replace(/[:.]/g, '-')

/** Cut every list to `limit` entries; when something was cut, the whole result goes to a private file in `dir`. */
export async function cutLists(r: VerifyResult, limit: number, dir: string): Promise<void> {
  const long = r.tables.some(t => t.divergent.length > limit || t.unsettled.length > limit)
  if (!long) return
  const file = path.join(dir, `verify-${stamp()}.json`)
  r.reportFile = file
  await atomicWritePrivate(file, JSON.stringify(r, null, 2) + '\n', {privateDir: true})
  for (const t of r.tables) {
    t.divergent = t.divergent.slice(0, limit)
    t.unsettled = t.unsettled.slice(0, limit)
  }
}

const fmtKey = (k: KeyReport) => Object.entries(k.key).map(([c, v]) => `${c}=${v}`).join(', ')
const fmtRow = (row: Record<string, string | null> | null) =>
  row === null ? 'absent' : '(' + Object.entries(row).map(([c, v]) => `${c}=${v === null ? 'NULL' : JSON.stringify(v)}`).join(', ') + ')'

export function renderVerify(r: VerifyResult): string[] {
  const out: string[] = []
  for (const n of r.nodes) if (!n.reachable) out.push(`node ${n.name} is DOWN, not compared: ${n.error}`)
  for (const t of r.tables) {
    for (const [label, list, count] of [['divergent', t.divergent, t.divergentCount], ['unsettled', t.unsettled, t.unsettledCount]] as const) {
      for (const k of list) {
        out.push(`${t.table} ${label} key (${fmtKey(k)})`)
        for (const [n, row] of Object.entries(k.versions)) out.push(`  ${n}: ${fmtRow(row)}${k.committed?.[n] ? `  committed ${k.committed[n]}` : ''}`)
      }
      if (count > list.length) out.push(`${t.table}: ... ${count - list.length} more ${label} row(s) in ${r.reportFile}`)
    }
    for (const note of t.notes) out.push(`${t.table}: note: ${note}`)
    const rows = Object.entries(t.rows).map(([n, c]) => `${n} ${c}`).join(', ')
    out.push(
      t.status === 'error'
        ? `${t.table}: COULD NOT COMPARE: ${t.error}`
        : `${t.table}: ${t.status.toUpperCase()} (${t.divergentCount} divergent, ${t.unsettledCount} unsettled; rows ${rows}; ${t.differingRanges}/${t.ranges} key ranges differed)`,
    )
  }
  if (r.settle.lagging.length) out.push(`replication did not catch up within the wait, differing rows left unsettled: ${r.settle.lagging.join('; ')}`)
  out.push(`verify: ${r.status === 'error' ? 'COULD NOT COMPARE everything' : r.status.toUpperCase()} (${r.tables.length} table(s), ${r.elapsedMs} ms)`)
  return out
}
