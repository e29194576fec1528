/**
 * Plain-text rendering of `mmlite status` (patronictl style bordered tables; chalk colours
 * for statuses only). Pure: result in, lines out. Never sees a DSN: targets are
 * host:port/db and errors were redacted when collected.
 */
import {driftLine} from '../cluster/drift.js'
import chalk from 'chalk'
import type {Health, LinkState, LinkStatus, NodeStatus, StatusResult} from '../cluster/status.js'
import {formatBytes, formatSeconds} from '../util/text.js'

export interface Cell {
  text: string
  /** colour applied after padding */
  color?: (s: string) => string
}

const STATUS_COLOR: Record<Health | LinkState, (s: string) => string> = {
  ok: chalk.green,
  warning: chalk.yellow,
  critical: chalk.red,
  paused: chalk.magenta,
  unknown: chalk.gray,
}

export function statusCell(s: Health | LinkState, text: string = s): Cell {
  return {text, color: STATUS_COLOR[s]}
}

const cell = (v: string | Cell): Cell => (typeof v === 'string' ? {text: v} : v)

/** Width of a table line: 4 for the outer borders and padding, 3 per column beyond the first. */
export function tableWidth(widths: number[]): number {
  return widths.reduce((a, w) => a + w, 0) + 3 * widths.length + 1
}

/**
 * Fit a table into `maxWidth` columns: drop columns in `dropOrder` (header names) until it fits,
 * then shorten the widest left-aligned column with an ellipsis. Returns the kept column indexes.
 */
export function fitColumns(headers: string[], rows: Cell[][], maxWidth: number | undefined, dropOrder: string[]): number[] {
  let keep = headers.map((_, i) => i)
  if (!maxWidth) return keep
  const width = () => tableWidth(keep.map(i => Math.max(headers[i].length, ...rows.map(r => r[i]?.text.length ?? 0))))
  for (const name of dropOrder) {
    if (width() <= maxWidth) break
    keep = keep.filter(i => headers[i] !== name)
  }
  return keep
}

/** Shorten `text` to `max` characters with an ellipsis. */
export function abbreviate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, Math.max(1, max - 1))}…`
}

/**
 * A bordered table, title in the top border like patronictl:
 *   + Cluster: shop -+------+
 *   | Node | Target   | ... |
 *   +------+----------+-----+
 */
export function renderTable(
  title: string,
  headers: string[],
  rows: Array<Array<string | Cell>>,
  align: Array<'l' | 'r'> = [],
  fit: {maxWidth?: number; dropOrder?: string[]; columns?: string[]} = {},
): string[] {
  let cells = rows.map(r => r.map(cell))
  // --columns: exactly those (first column always); else drop what does not fit
  let keep = fit.columns
    ? headers.map((h, i) => i).filter(i => i === 0 || fit.columns!.some(c => c.toLowerCase() === headers[i].toLowerCase()))
    : fitColumns(headers, cells, fit.maxWidth, fit.dropOrder ?? [])
  headers = keep.map(i => headers[i])
  align = keep.map(i => align[i] ?? 'l')
  cells = cells.map(r => keep.map(i => r[i] ?? {text: ''}))
  keep = headers.map((_, i) => i)
  let widths = headers.map((h, i) => Math.max(h.length, ...cells.map(r => r[i]?.text.length ?? 0)))
  // still too wide: shorten the widest left-aligned plain column (targets, link names) with an ellipsis
  if (fit.maxWidth) {
    for (let guard = 0; tableWidth(widths) > fit.maxWidth && guard < 50; guard++) {
      const i = widths.map((w, j) => ({w, j})).filter(x => align[x.j] !== 'r' && x.w > headers[x.j].length && x.w > 8).sort((a, b) => b.w - a.w)[0]?.j
      if (i === undefined) break
      const max = Math.max(8, headers[i].length, widths[i] - (tableWidth(widths) - fit.maxWidth))
      cells = cells.map(r => r.map((c, j) => (j === i ? {...c, text: abbreviate(c.text, max)} : c)))
      widths = headers.map((h, k) => Math.max(h.length, ...cells.map(r => r[k]?.text.length ?? 0)))
    }
  }
  const sep = '+' + widths.map(w => '-'.repeat(w + 2)).join('+') + '+'
  let top = sep
  if (title) {
    const t = `+ ${title} `
    top = t.length < sep.length ? t + sep.slice(t.length) : t + '+'
  }
  const line = (r: Cell[]) =>
    '|' +
    widths
      .map((w, i) => {
        const c = r[i] ?? {text: ''}
        const padded = align[i] === 'r' ? c.text.padStart(w) : c.text.padEnd(w)
        return ` ${c.color ? c.color(padded) : padded} `
      })
      .join('|') +
    '|'
  return [top, line(headers.map(h => ({text: h}))), sep, ...cells.map(line), sep]
}

/** "native", "plugin", "native 2, plugin 1" or "-" for a node's outbound links. */
export function mechanismSummary(node: string, links: LinkStatus[]): string {
  const out = links.filter(l => l.from === node)
  const native = out.filter(l => l.mechanism === 'native').length
  const plugin = out.filter(l => l.mechanism === 'plugin').length
  if (native === 0 && plugin === 0) return '-'
  if (plugin === 0) return 'native'
  if (native === 0) return 'plugin'
  return `native ${native}, plugin ${plugin}`
}

function nodeState(n: NodeStatus): Cell {
  if (!n.reachable) return statusCell('critical', 'unreachable')
  if (n.error) return statusCell('critical', 'query failed')
  return statusCell('ok', 'reachable')
}

export function renderNodes(r: StatusResult, opts: RenderOptions = {}): string[] {
  const rows = r.nodes.map(n => [n.name, n.target, n.version ?? '-', nodeState(n), mechanismSummary(n.name, r.links)])
  const lines = renderTable(`Cluster: ${r.cluster}`, ['Node', 'Target', 'Version', 'State', 'Outbound'], rows, [], {maxWidth: opts.width, dropOrder: ['Outbound', 'Version']})
  for (const n of r.nodes) if (n.error) lines.push(`  ${n.name}: ${n.error}`)
  return lines
}

function yesNo(v: boolean | null, known: boolean, yes: string, no: string): Cell {
  if (v === null) return {text: known ? 'missing' : '?'}
  return {text: v ? yes : no}
}

function sumConflicts(c: Record<string, number> | undefined): number | undefined {
  return c ? Object.values(c).reduce((a, b) => a + b, 0) : undefined
}

/** Link columns dropped first when the terminal is too narrow (Link and Status always stay). */
export const LINK_DROP_ORDER = ['Retained', 'WAL', 'Mech', 'Conflicts', 'Worker', 'Sub', 'Slot', 'Last msg', 'Errors', 'Lag', 'Stuck at']

export function renderLinks(r: StatusResult, opts: RenderOptions = {}): string[] {
  const ok = new Set(r.nodes.filter(n => n.reachable && !n.error).map(n => n.name))
  const withConflicts = r.links.some(l => l.conflicts)
  const withStuck = r.links.some(l => l.stuck)
  const headers = ['Link', 'Mech', 'Sub', 'Worker', 'Slot', 'WAL', 'Lag', 'Retained', 'Last msg', 'Errors']
  const align: Array<'l' | 'r'> = ['l', 'l', 'l', 'l', 'l', 'l', 'r', 'r', 'r', 'r']
  if (withConflicts) {
    headers.push('Conflicts')
    align.push('r')
  }
  // only when a link is stuck: the final LSN of the transaction it fails to apply
  if (withStuck) {
    headers.push('Stuck at')
    align.push('l')
  }
  headers.push('Status')
  const rows = r.links.map(l => {
    const sub = ok.has(l.to)
    const pub = ok.has(l.from)
    const row: Array<string | Cell> = [
      `${l.from} → ${l.to}`,
      l.mechanism ?? '-',
      yesNo(l.subscriptionEnabled, sub, 'enabled', 'disabled'),
      yesNo(l.workerRunning, sub, 'running', 'stopped'),
      yesNo(l.slotActive, pub, 'active', 'inactive'),
      l.walStatus ?? '-',
      formatBytes(l.lagBytes),
      formatBytes(l.retainedBytes),
      formatSeconds(l.lastMsgAgeSeconds),
      l.applyErrorCount === null ? '-' : `${l.applyErrorCount}/${l.syncErrorCount ?? 0}`,
    ]
    if (withConflicts) row.push(String(sumConflicts(l.conflicts) ?? '-'))
    if (withStuck) row.push(l.stuck ? statusCell('critical', l.stuck.finalLsn) : '-')
    row.push(statusCell(l.status))
    return row
  })
  return [...renderTable('Links', headers, rows, align, {maxWidth: opts.width, dropOrder: LINK_DROP_ORDER, columns: opts.columns}), ...reasonLines(r.links)]
}

function reasonLines(links: LinkStatus[]): string[] {
  return links.filter(l => l.reasons.length).map(l => `  ${l.from} → ${l.to}: ${STATUS_COLOR[l.status](l.status)}: ${l.reasons.join('; ')}`)
}

/** Lag matrix: rows = publisher (from), columns = subscriber (to); a cell is the lag, or the status when not ok/warning. */
export function renderMatrix(r: StatusResult): string[] {
  const names = r.nodes.map(n => n.name)
  const byEdge = new Map(r.links.map(l => [`${l.from}\u0000${l.to}`, l]))
  const rows = names.map(from => [
    from,
    ...names.map((to): Cell => {
      if (from === to) return {text: '·'}
      const l = byEdge.get(`${from}\u0000${to}`)
      if (!l) return {text: '?'}
      if (l.status === 'ok' || l.status === 'warning') return statusCell(l.status, formatBytes(l.lagBytes))
      return statusCell(l.status)
    }),
  ])
  const lines = renderTable('Lag: from ↓ to →', ['', ...names], rows, ['l', ...names.map(() => 'r' as const)])
  return [...lines, ...reasonLines(r.links)]
}

export interface RenderOptions {
  /** show the lag matrix instead of the links table */
  matrix?: boolean
  /** terminal width: tables drop columns (then abbreviate) to fit; undefined = no limit (not a terminal) */
  width?: number
  /** link table columns to show (by header name, case-insensitive); Link is always shown */
  columns?: string[]
}

/** The whole screen. The matrix replaces the links table with --matrix or when there are more than 4 nodes. */
export function renderStatus(r: StatusResult, opts: RenderOptions = {}): string[] {
  const lines: string[] = []
  lines.push(`Cluster ${r.cluster}: ${STATUS_COLOR[r.health](r.health.toUpperCase())}  (checked ${r.checkedAt})`)
  for (const u of r.unfinished) {
    lines.push(chalk.yellow(`! unfinished mmlite ${u.command} run (${u.key}, started ${u.startedAt}): re-run \`mmlite ${u.command}\` to finish it`))
  }
  for (const d of r.drift ?? []) lines.push(chalk.yellow(`! schema drift: ${driftLine(d)}`))
  lines.push(...renderNodes(r, opts))
  if (r.nodes.length > 1) {
    lines.push('')
    lines.push(...(opts.matrix || r.nodes.length > 4 ? renderMatrix(r) : renderLinks(r, opts)))
  }
  return lines
}
