/**
 * Progress of the copy: percent and ETA from a real size estimate of each source table
 * (pg_table_size and reltuples, summed over the partitions of a partitioned table), rows and
 * bytes as they flow (bytes counted per chunk on the stream; rows from pg_stat_progress_copy
 * on X, 14+, and exactly from the COPY command tag at the end of each table).
 */
import {formatBytes, formatSeconds} from '../../util/text.js'

export interface TableProgress {
  table: string
  /** on-disk size of the source table (heap + TOAST) */
  estBytes: number
  /** reltuples of the source table; 0 = unknown */
  estRows: number
  bytes: number
  rows: number
  done: boolean
  /** 0 = not started */
  t0: number
  ms: number
  format: string
}

/** The fraction of one table already copied, from rows when the row estimate exists, else from bytes; < 1 until done. */
export function tableFraction(p: TableProgress): number {
  if (p.done) return 1
  if (p.t0 === 0) return 0
  const f = p.estRows > 0 && p.rows > 0 ? p.rows / p.estRows : p.estBytes > 0 ? p.bytes / p.estBytes : 0
  return Math.min(0.99, Math.max(0, f))
}

export interface Overall {
  fraction: number
  bytes: number
  rows: number
  estBytes: number
  bytesPerS: number
  rowsPerS: number
  /** seconds, undefined while unknown */
  eta?: number
}

/** Everything together, tables weighted by their estimated size (an empty table weighs as 8 kB). */
export function overall(ps: TableProgress[], elapsedMs: number): Overall {
  const w = (p: TableProgress) => Math.max(p.estBytes, 8192)
  const total = ps.reduce((s, p) => s + w(p), 0)
  const fraction = total > 0 ? ps.reduce((s, p) => s + tableFraction(p) * w(p), 0) / total : 0
  const bytes = ps.reduce((s, p) => s + p.bytes, 0)
  const rows = ps.reduce((s, p) => s + p.rows, 0)
  const secs = elapsedMs / 1000
  return {
    fraction,
    bytes,
    rows,
    estBytes: ps.reduce((s, p) => s + p.estBytes, 0),
    bytesPerS: secs > 0 ? bytes / secs : 0,
    rowsPerS: secs > 0 ? rows / secs : 0,
    eta: fraction >= 1 ? 0 : fraction > 0.005 && secs > 0 ? (secs * (1 - fraction)) / fraction : undefined,
  }
}

const pct = (f: number) => `${Math.floor(100 * f)}%`
const rate = (n: number) => (n >= 10_000 ? `${Math.round(n / 1000)}k` : `${Math.round(n)}`)

/** First line: everything; then one line per table that has started. */
export function formatProgress(ps: TableProgress[], elapsedMs: number): string {
  const o = overall(ps, elapsedMs)
  const head = `copied ${formatBytes(o.bytes)} of ~${formatBytes(o.estBytes)} (${pct(o.fraction)}), ${rate(o.rowsPerS)} rows/s, ${formatBytes(Math.round(o.bytesPerS))}/s, ETA ${o.eta === undefined ? '?' : formatSeconds(o.eta)}`
  const lines = ps
    .filter(p => p.t0 > 0)
    .map(p => {
      const of = p.estRows > 0 ? ` of ~${Math.round(p.estRows)}` : ''
      return `${p.table}: ${p.done ? '✔' : pct(tableFraction(p))} ${p.rows}${p.done ? '' : of} rows, ${formatBytes(p.bytes)} (${p.format})${p.done ? ` in ${formatSeconds(p.ms / 1000)}` : ''}`
    })
  return [head, ...lines].join('\n')
}

/** The closing line: totals and rates. */
export function formatSummary(ps: TableProgress[], elapsedMs: number): string {
  const o = overall(ps, elapsedMs)
  return `copied ${o.rows} rows (${formatBytes(o.bytes)}) in ${formatSeconds(elapsedMs / 1000)}, ${rate(o.rowsPerS)} rows/s, ${formatBytes(Math.round(o.bytesPerS))}/s: ${ps.map(p => `${p.table} ${p.rows} (${p.format})`).join(', ')}`
}
