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
  unknown: chalk.red,
}

export function statusCell(s: Health | LinkState, text: string = s): Cell {
  return {text, color: STATUS_COLOR[s]}
}

const cell = (v: string | Cell): Cell => (typeof v === 'string' ? {text: v} : v)

/**
 * A bordered table, title in the top border like patronictl:
 *   + Cluster: shop -+------+
 *   | Node | Target   | ... |
 *   +------+----------+-----+
 */
export function renderTable(title: string, headers: string[], rows: Array<Array<string | Cell>>, align: Array<'l' | 'r'> = []): string[] {
  const cells = rows.map(r => r.map(cell))
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map(r => r[i]?.text.length ?? 0)))
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

export function renderNodes(r: StatusResult): string[] {
  const rows = r.nodes.map(n => [n.name, n.target, n.version ?? '-', nodeState(n), mechanismSummary(n.name, r.links)])
  const lines = renderTable(`Cluster: ${r.cluster}`, ['Node', 'Target', 'Version', 'State', 'Outbound'], rows)
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

export function renderLinks(r: StatusResult): string[] {
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
      yesNo(l.subscription_enabled, sub, 'enabled', 'disabled'),
      yesNo(l.worker_running, sub, 'running', 'stopped'),
      yesNo(l.slot_active, pub, 'active', 'inactive'),
      l.wal_status ?? '-',
      formatBytes(l.lag_bytes),
      formatBytes(l.retained_bytes),
      formatSeconds(l.last_msg_age_s),
      l.apply_error_count === null ? '-' : `${l.apply_error_count}/${l.sync_error_count ?? 0}`,
    ]
    if (withConflicts) row.push(String(sumConflicts(l.conflicts) ?? '-'))
    if (withStuck) row.push(l.stuck ? statusCell('critical', l.stuck.final_lsn) : '-')
    row.push(statusCell(l.status))
    return row
  })
  return [...renderTable('Links', headers, rows, align), ...reasonLines(r.links)]
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
      if (l.status === 'ok' || l.status === 'warning') return statusCell(l.status, formatBytes(l.lag_bytes))
      return statusCell(l.status)
    }),
  ])
  const lines = renderTable('Lag: from ↓ to →', ['', ...names], rows, ['l', ...names.map(() => 'r' as const)])
  return [...lines, ...reasonLines(r.links)]
}

export interface RenderOptions {
  /** show the lag matrix instead of the links table */
  matrix?: boolean
}

/** The whole screen. The matrix replaces the links table with --matrix or when there are more than 4 nodes. */
export function renderStatus(r: StatusResult, opts: RenderOptions = {}): string[] {
  const lines: string[] = []
  lines.push(`Cluster ${r.cluster}: ${STATUS_COLOR[r.health](r.health.toUpperCase())}  (checked ${r.checkedAt})`)
  for (const u of r.unfinished) {
    lines.push(chalk.yellow(`! unfinished mmlite ${u.command} run (${u.key}, started ${u.startedAt}): re-run \`mmlite ${u.command}\` to finish it`))
  }
  for (const d of r.drift ?? []) lines.push(chalk.yellow(`! schema drift: ${driftLine(d)}`))
  lines.push(...renderNodes(r))
  if (r.nodes.length > 1) {
    lines.push('')
    lines.push(...(opts.matrix || r.nodes.length > 4 ? renderMatrix(r) : renderLinks(r)))
  }
  return lines
}
