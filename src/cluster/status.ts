/**
 * `mmlite status`: collect what every node knows about the mesh and classify its health.
 *
 * Collect: every node concurrently, a dedicated short-lived NodeConn each (connect timeout =
 * --timeout), and exactly ONE status query per node (built for its server version) returning
 * everything about it as a publisher (its outbound slots, current WAL position) and as a
 * subscriber (its inbound subscriptions, apply worker, error/conflict counters). An unreachable
 * node is reported with the classified reason; collecting never throws for a node.
 *
 * Stuck links: a link whose subscription looks like it fails to apply (disabled by
 * disable_on_error after errors, apply worker not running, apply errors counted) gets a second,
 * read-only look (cluster/link-probe.ts): the transaction it would apply next is decoded from a
 * temporary copy of the publisher's slot and watched for a moment; when applying it fails, the
 * link is stuck (critical) with that transaction's final LSN and, when the subscriber's log is
 * readable over SQL, the error. Healthy links cost nothing more than the one query.
 *
 * Evaluate (pure, unit-tested): per directed link from→to, ok / warning / critical / paused with
 * reasons; overall health = worst, `unknown` when no node could be reached.
 */
import {collectClusterDrift, withDrift, type Drift} from './drift.js'
import type {Config, HealthThresholds} from '../config/config.js'
import {NodeConn, classifyConnectError, type ConnectFailure} from '../db/node.js'
import {describeTarget} from '../db/conninfo.js'
import {redactText} from '../db/redact.js'
import {MmliteError, ExitCode, errorMessage} from '../errors.js'
import {Journal} from '../engine/journal.js'
import {formatBytes, formatSeconds} from '../util/text.js'
import {edgeName, publicationName} from './naming.js'
import {edgeMechanism, type Mechanism} from './capabilities.js'
import {Cluster} from './cluster.js'
import {lastApplyError, observeLink} from './link-probe.js'
import {advanceHistory, readHistory, recentRise, writeHistory, type ErrorCounts} from './error-history.js'

// ------------------------------------------------------------------------------------ types

export type Health = 'ok' | 'warning' | 'critical' | 'unknown'
/** unknown: neither end of the link could be read, so nothing is known about it */
export type LinkState = 'ok' | 'warning' | 'critical' | 'paused' | 'unknown'

/** One slot of this cluster on a publisher, as read by the status query. */
export interface SlotRow {
  slot_name: string
  active: boolean
  /** PG 13+; null before */
  wal_status: string | null
  confirmed_flush_lsn: string | null
  restart_lsn: string | null
  /** pg_current_wal_lsn() - confirmed_flush_lsn; null on a standby or before the first confirmation */
  lag_bytes: number | null
  /** pg_current_wal_lsn() - restart_lsn: WAL the slot keeps on disk */
  retained_bytes: number | null
  /**
   * seconds: flush_lag of the slot's walsender (pg_stat_replication): how long ago the newest
   * commit the subscriber has applied and flushed was sent; null when the link is caught up
   * (PostgreSQL clears it) or no walsender runs
   */
  lag_s?: number | null
}

/** One subscription of this cluster on a subscriber, as read by the status query. */
export interface SubRow {
  subname: string
  enabled: boolean
  /** apply (leader) worker pid; null when it does not run */
  worker_pid: number | null
  /** seconds since the apply worker last received anything from the publisher */
  last_msg_age_s: number | null
  latest_end_lsn: string | null
  /** PG 15+ (pg_stat_subscription_stats); null before */
  apply_error_count: number | null
  sync_error_count: number | null
  /** PG 18+: the confl_* counters of pg_stat_subscription_stats; null before */
  conflicts: Record<string, number> | null
  /** pg_subscription oid */
  oid?: number
  /** PG 15+: subdisableonerr; null before */
  disable_on_error?: boolean | null
  /** origin progress: end LSN of the last applied remote commit; null before the first */
  origin_lsn?: string | null
}

/** The transaction a stuck link fails to apply (see cluster/link-probe.ts). */
export interface StuckInfo {
  xid: number
  /** what `mmlite skip-tx` / ALTER SUBSCRIPTION ... SKIP (lsn = ...) would skip */
  finalLsn: string
  commitTime: string
  /** why the link counts as stuck (errors counted, worker restarting, disabled by disable_on_error) */
  evidence: string
  /** the subscriber's logged error, when its log is readable over SQL */
  error: string | null
  /** set when applying fails but which transaction fails cannot be told (xid / finalLsn are then the first pending one's) */
  unsure?: string
}

export interface NodeData {
  in_recovery: boolean
  current_lsn: string | null
  publication: boolean
  slots: SlotRow[]
  subscriptions: SubRow[]
}

/** What collecting learned about one node. */
export interface NodeProbe {
  name: string
  target: string
  reachable: boolean
  /** why it could not be reached (classified, redacted), or why the status query failed */
  error?: string
  errorKind?: ConnectFailure | 'query'
  version: string | null
  versionNum: number | null
  /** present when the status query succeeded */
  data?: NodeData
}

export interface UnfinishedOp {
  key: string
  command: string
  startedAt: string
  values?: Record<string, unknown>
}

export interface NodeStatus {
  name: string
  target: string
  reachable: boolean
  error?: string
  version: string | null
  versionNum: number | null
}

export interface LinkStatus {
  from: string
  to: string
  mechanism: Mechanism | null
  status: LinkState
  reasons: string[]
  subscriptionEnabled: boolean | null
  workerRunning: boolean | null
  slotActive: boolean | null
  walStatus: string | null
  lagBytes: number | null
  retainedBytes: number | null
  lastMsgAgeSeconds: number | null
  /** seconds the subscriber is behind (walsender flush_lag); 0 when caught up; null when unknown */
  lagSeconds: number | null
  applyErrorCount: number | null
  syncErrorCount: number | null
  /** seconds since status last saw the error counts rise, when within health.error_window_seconds */
  errorsRecentSeconds?: number
  /** PG 18+: pg_stat_subscription_stats' confl_* counters, camelCased without the prefix (confl_insert_exists → insertExists) */
  conflicts?: Record<string, number>
  /** present when the link is stuck on a transaction that fails to apply */
  stuck?: StuckInfo
}

export interface StatusResult {
  cluster: string
  health: Health
  checkedAt: string
  nodes: NodeStatus[]
  links: LinkStatus[]
  unfinished: Array<{key: string; command: string; startedAt: string}>
  /** replicated tables whose definition differs between nodes (src/cluster/drift.ts) */
  drift?: Drift[]
}

// ------------------------------------------------------------------------------------ SQL

/** The one status query of a node, for its server version. $1 publication, $2 slot names, $3 subscription names. */
export function statusSql(versionNum: number): string {
  const walStatus = versionNum >= 130000 ? 's.wal_status' : 'NULL::text'
  // PG 16+: parallel apply workers also have relid NULL; the leader has leader_pid NULL
  const leaderOnly = versionNum >= 160000 ? ' AND st.leader_pid IS NULL' : ''
  const hasStats = versionNum >= 150000
  const statsJoin = hasStats ? '\n         LEFT JOIN pg_stat_subscription_stats ss ON ss.subid = s.oid' : ''
  const errors = hasStats
    ? `'apply_error_count', ss.apply_error_count, 'sync_error_count', ss.sync_error_count`
    : `'apply_error_count', NULL, 'sync_error_count', NULL`
  const conflicts =
    versionNum >= 180000
      ? `(SELECT json_object_agg(e.key, e.value) FROM jsonb_each(to_jsonb(ss)) e WHERE starts_with(e.key, 'confl_'))`
      : 'NULL'
  return `SELECT json_build_object(
  'version', current_setting('server_version'),
  'version_num', current_setting('server_version_num')::int,
  'in_recovery', pg_is_in_recovery(),
  'current_lsn', w.lsn::text,
  'publication', EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1),
  'slots', COALESCE((
    SELECT json_agg(json_build_object(
             'slot_name', s.slot_name, 'active', s.active, 'wal_status', ${walStatus},
             'confirmed_flush_lsn', s.confirmed_flush_lsn::text, 'restart_lsn', s.restart_lsn::text,
             'lag_bytes', pg_wal_lsn_diff(w.lsn, s.confirmed_flush_lsn)::bigint,
             'retained_bytes', pg_wal_lsn_diff(w.lsn, s.restart_lsn)::bigint,
             'lag_s', (SELECT extract(epoch FROM r.flush_lag)::float8 FROM pg_stat_replication r WHERE r.pid = s.active_pid)))
      FROM pg_replication_slots s
     WHERE s.slot_name = ANY($2::text[])), '[]'::json),
  'subscriptions', COALESCE((
    SELECT json_agg(json_build_object(
             'subname', s.subname, 'enabled', s.subenabled, 'worker_pid', st.pid,
             'last_msg_age_s', extract(epoch FROM clock_timestamp() - st.last_msg_receipt_time)::float8,
             'latest_end_lsn', st.latest_end_lsn::text,
             'oid', s.oid, 'disable_on_error', ${hasStats ? 's.subdisableonerr' : 'NULL'},
             'origin_lsn', (SELECT NULLIF(o.remote_lsn, '0/0')::text FROM pg_replication_origin_status o WHERE o.external_id = 'pg_' || s.oid),
             ${errors},
             'conflicts', ${conflicts}))
      FROM pg_subscription s
           LEFT JOIN pg_stat_subscription st ON st.subid = s.oid AND st.relid IS NULL${leaderOnly}${statsJoin}
     WHERE s.subname = ANY($3::text[])
       AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())), '[]'::json)
) AS status
FROM (SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn() END AS lsn) w`
}

// ------------------------------------------------------------------------------------ collect

export interface CollectOptions {
  /** connect timeout per node (the status query gets the same budget again) */
  timeoutMs: number
  thresholds: HealthThresholds
  /** aborting closes every connection at once (Ctrl-C in --watch) */
  signal?: AbortSignal
}

/** Connect + one query on one node. Never throws. */
export async function probeNode(cfg: Config, name: string, opts: {timeoutMs: number; signal?: AbortSignal}): Promise<NodeProbe> {
  const node = cfg.nodes.find(n => n.name === name)
  if (!node) throw new Error(`unknown node ${name}`)
  const others = cfg.nodes.filter(n => n.name !== name).map(n => n.name)
  const probe: NodeProbe = {name, target: describeTarget(node.conn), reachable: false, version: null, versionNum: null}
  const conn = new NodeConn(node, {connectTimeoutMs: opts.timeoutMs, applicationName: 'mmlite status'})
  const abort = () => void conn.close()
  opts.signal?.addEventListener('abort', abort, {once: true})
  let timer: NodeJS.Timeout | undefined
  let timedOut = false
  // connect (bounded by the driver's connect timeout) and query, both bounded by this deadline
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      timedOut = true
      reject(Object.assign(new Error(`no answer within ${Math.round((2 * opts.timeoutMs) / 1000)} s`), {code: 'ETIMEDOUT'}))
    }, 2 * opts.timeoutMs)
  })
  deadline.catch(() => {})
  let stage: 'connect' | 'query' = 'connect'
  try {
    if (opts.signal?.aborted) throw new Error('interrupted')
    await Promise.race([conn.connect(), deadline])
    probe.reachable = true
    probe.versionNum = conn.serverVersion
    stage = 'query'
    const row = await Promise.race([
      conn.one<{status: RawStatus}>(statusSql(conn.serverVersion), [
        publicationName(cfg.cluster),
        others.map(o => edgeName(cfg.cluster, name, o)),
        others.map(o => edgeName(cfg.cluster, o, name)),
      ]),
      deadline,
    ])
    const s = row!.status
    probe.version = s.version.split(' ')[0]
    probe.versionNum = s.version_num
    probe.data = {
      in_recovery: s.in_recovery,
      current_lsn: s.current_lsn,
      publication: s.publication,
      slots: s.slots.map(x => ({...x, lag_bytes: num(x.lag_bytes), retained_bytes: num(x.retained_bytes), lag_s: x.lag_s == null ? null : Math.round(Number(x.lag_s) * 10) / 10})),
      subscriptions: s.subscriptions.map(x => ({
        ...x,
        last_msg_age_s: x.last_msg_age_s === null ? null : Math.max(0, Math.round(x.last_msg_age_s * 10) / 10),
        apply_error_count: num(x.apply_error_count),
        sync_error_count: num(x.sync_error_count),
        conflicts: x.conflicts ? Object.fromEntries(Object.entries(x.conflicts).map(([k, v]) => [k, Number(v)])) : null,
        ...(x.oid === undefined ? {} : {oid: Number(x.oid)}),
      })),
    }
  } catch (e) {
    if (stage === 'connect') {
      const {kind, message} = connectFailure(e, `node ${name} (${probe.target}): `)
      probe.reachable = false
      probe.errorKind = kind
      probe.error = message
    } else {
      probe.errorKind = 'query'
      probe.error = `status query failed: ${errorMessage(e).replace(`node ${name}: `, '')}`
    }
  } finally {
    clearTimeout(timer)
    opts.signal?.removeEventListener('abort', abort)
    // never wait on a connection that stopped answering
    const closing = conn.close()
    if (!timedOut && !opts.signal?.aborted) await closing
  }
  return probe
}

interface RawStatus {
  version: string
  version_num: number
  in_recovery: boolean
  current_lsn: string | null
  publication: boolean
  slots: SlotRow[]
  subscriptions: SubRow[]
}

/** A PG 18 conflict counter's name in --json: confl_insert_exists → insertExists. */
export function conflictKey(column: string): string {
  return column.replace(/^confl_/, '').replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase())
}

function num(v: unknown): number | null {
  return v === null || v === undefined ? null : Number(v)
}

/** The classified reason from NodeConn's connect error (an MmliteError with "failure: kind"), or from a raw error. */
function connectFailure(e: unknown, prefix: string): {kind: ConnectFailure; message: string} {
  if (e instanceof MmliteError) {
    const d = e.details.find(x => x.startsWith('failure: '))
    if (d) {
      const msg = e.message.startsWith(prefix) ? e.message.slice(prefix.length) : e.message
      return {kind: d.slice('failure: '.length) as ConnectFailure, message: redactText(msg)}
    }
  }
  return classifyConnectError(e)
}

/** Operations the journal says are unfinished (with their values, for paused subscriptions). */
export function readUnfinished(cfg: Config): UnfinishedOp[] {
  return Journal.open(cfg.file, cfg.cluster)
    .unfinished()
    .map(({key, op}) => ({key, command: op.command, startedAt: op.startedAt, values: op.values}))
}

/** Query every node concurrently and evaluate. Never throws for a node; a bad journal is a config error. */
export async function collectStatus(cfg: Config, opts: CollectOptions): Promise<StatusResult> {
  const unfinished = readUnfinished(cfg)
  // schema hook: drift is collected on its own connections, next to the probes
  const [probes, drift] = await Promise.all([Promise.all(cfg.nodes.map(n => probeNode(cfg, n.name, opts))), collectClusterDrift(cfg, opts.timeoutMs)])
  const stuck = await probeStuck(cfg, probes, unfinished, opts)
  const now = new Date()
  const errorsRecent = await recentErrors(cfg, probes, now, opts.thresholds.errorWindowSeconds)
  const result = evaluate({
    cluster: cfg.cluster,
    probes,
    thresholds: opts.thresholds,
    unfinished,
    checkedAt: now,
    edgeName: (from, to) => edgeName(cfg.cluster, from, to),
    stuck,
    errorsRecent,
  })
  return withDrift(result, drift)
}

/** Remember the error counts seen (cluster/error-history.ts); the links whose counts rose recently. */
async function recentErrors(cfg: Config, probes: NodeProbe[], now: Date, windowS: number): Promise<Map<string, number>> {
  const seen = new Map<string, ErrorCounts>()
  for (const to of probes)
    for (const sub of to.data?.subscriptions ?? []) {
      if (sub.apply_error_count === null && sub.sync_error_count === null) continue
      const from = probes.find(p => p.name !== to.name && edgeName(cfg.cluster, p.name, to.name) === sub.subname)
      if (from) seen.set(`${from.name}->${to.name}`, {apply: sub.apply_error_count ?? 0, sync: sub.sync_error_count ?? 0})
    }
  const prev = await readHistory(cfg.file)
  const next = advanceHistory(prev, seen, now)
  // nothing counted anywhere and nothing remembered: no file (status stays read-only on a healthy cluster)
  const worth = Object.keys(prev).length > 0 || Object.values(next).some(e => e.apply + e.sync > 0)
  if (worth && JSON.stringify(next) !== JSON.stringify(prev)) await writeHistory(cfg.file, next)
  const out = new Map<string, number>()
  for (const key of seen.keys()) {
    const ago = recentRise(next[key], now, windowS)
    const [from, to] = key.split('->')
    if (ago !== undefined) out.set(linkKey(from, to), ago)
  }
  return out
}

/** How long status watches a suspect link for a failure. */
export const STUCK_WINDOW_MS = 1500

/** A link worth the second look: its subscription may be failing to apply. Pure. */
export function stuckSuspect(sub: SubRow | undefined, pausedBy?: string): boolean {
  if (!sub || pausedBy !== undefined) return false
  if (!sub.enabled) return Boolean(sub.disable_on_error) && (sub.apply_error_count ?? 0) > 0
  return sub.worker_pid === null || (sub.apply_error_count ?? 0) > 0
}

export const linkKey = (from: string, to: string) => `${from}\u0000${to}`

/** Decode and watch the suspect links (both ends answered); never throws. */
async function probeStuck(cfg: Config, probes: NodeProbe[], unfinished: UnfinishedOp[], opts: CollectOptions): Promise<Map<string, StuckInfo>> {
  const out = new Map<string, StuckInfo>()
  const paused = pausedSubscriptions(unfinished)
  const suspects: Array<{from: string; to: string; name: string}> = []
  for (const from of probes)
    for (const to of probes) {
      if (from === to || !from.data || !to.data || opts.signal?.aborted) continue
      const name = edgeName(cfg.cluster, from.name, to.name)
      if (stuckSuspect(to.data.subscriptions.find(s => s.subname === name), paused.get(`${to.name}/${name}`))) suspects.push({from: from.name, to: to.name, name})
    }
  if (suspects.length === 0) return out
  const cluster = new Cluster(cfg, {connectTimeoutMs: opts.timeoutMs})
  const abort = () => void cluster.close()
  opts.signal?.addEventListener('abort', abort, {once: true})
  try {
    await Promise.all(
      suspects.map(async l => {
        try {
          const ends = {...l, pub: cluster.node(l.from), sub: cluster.node(l.to)}
          const v = await observeLink(ends, {windowMs: STUCK_WINDOW_MS, snapshot: true})
          if (v.state !== 'stuck') return
          const error = await lastApplyError(ends.sub, {name: l.name, oid: v.sub.oid}, v.tx)
          out.set(linkKey(l.from, l.to), {xid: v.tx.xid, finalLsn: v.tx.finalLsn, commitTime: v.tx.commitTime, evidence: v.evidence, error, ...(v.unsure ? {unsure: v.unsure} : {})})
        } catch {
          /* status never fails for one link: the link keeps its other reasons */
        }
      }),
    )
  } finally {
    opts.signal?.removeEventListener('abort', abort)
    await cluster.close()
  }
  return out
}

// ------------------------------------------------------------------------------------ evaluate (pure)

export interface EvaluateInput {
  cluster: string
  /** one per configured node, in configuration order */
  probes: NodeProbe[]
  thresholds: HealthThresholds
  unfinished: UnfinishedOp[]
  checkedAt: Date
  /** defaults to naming.ts edgeName */
  edgeName?: (from: string, to: string) => string
  /** stuck links (linkKey(from, to)) found by the second look */
  stuck?: Map<string, StuckInfo>
  /** linkKey(from, to) → seconds since its error counts last rose, for links where that is recent */
  errorsRecent?: Map<string, number>
}

/** Subscriptions an unfinished operation disabled on purpose: "node/subscription" → command. */
export function pausedSubscriptions(unfinished: UnfinishedOp[]): Map<string, string> {
  const out = new Map<string, string>()
  for (const op of unfinished) {
    const list = op.values?.pausedSubscriptions
    if (!Array.isArray(list)) continue
    for (const p of list as Array<{node?: unknown; subscription?: unknown}>) {
      if (typeof p?.node === 'string' && typeof p.subscription === 'string') out.set(`${p.node}/${p.subscription}`, op.command)
    }
  }
  return out
}

export const PAUSED_REASON = (command: string) => `paused by unfinished mmlite ${command} run; re-run it to finish`

/** Reasons implied by a pause (the subscription was disabled on purpose): not repeated when paused. */
const PAUSE_IMPLIED = new Set(['subscription disabled', 'apply worker not running', 'slot inactive'])

export interface LinkInput {
  from: NodeProbe
  to: NodeProbe
  slot: SlotRow | undefined
  sub: SubRow | undefined
  thresholds: HealthThresholds
  /** the command of the unfinished run that paused this link's subscription */
  pausedBy?: string
  /** the transaction the link fails to apply */
  stuck?: StuckInfo
  /** seconds since the error counts last rose (see cluster/error-history.ts); undefined: not recently */
  errorsRecentS?: number
}

/** Health of one directed link from its two ends. Pure. */
export function classifyLink(i: LinkInput): LinkStatus {
  const critical: string[] = []
  const warning: string[] = []
  const {from, to, slot, sub, thresholds: th} = i
  const fromOk = Boolean(from.data)
  const toOk = Boolean(to.data)
  const down = (p: NodeProbe) => (p.reachable ? `cannot read status of ${p.name} (${p.error ?? 'query failed'})` : `${p.name} unreachable`)

  if (!fromOk) critical.push(down(from))
  else {
    if (!from.data!.publication) critical.push(`publication missing on ${from.name}`)
    if (!slot) critical.push(`slot missing on ${from.name}`)
    else {
      if (!slot.active) critical.push('slot inactive')
      if (slot.wal_status === 'lost')
        critical.push(
          `slot lost: ${from.name} removed WAL that ${to.name} had not received (max_slot_wal_keep_size), so ${to.name} can never catch up on this link; ` +
            `the way back: \`mmlite remove-node ${to.name}\` (it first delivers what ${to.name} committed; \`mmlite remove-node ${to.name} --force\` if ${to.name} cannot be reached, then run on ${to.name} the SQL it prints), ` +
            `then empty ${to.name}'s replicated tables (no slot of the cluster is left there to send that on) and \`mmlite add-node ${to.name} --dsn ...\`: its data is copied afresh`,
        )
      else if (slot.wal_status === 'unreserved') warning.push('slot wal_status unreserved (WAL about to be removed)')
      if (slot.lag_bytes !== null && slot.lag_bytes > th.lagWarningBytes)
        warning.push(`lag ${formatBytes(slot.lag_bytes)} > ${formatBytes(th.lagWarningBytes)}`)
    }
  }
  if (!toOk) critical.push(down(to))
  else if (!sub) critical.push(`subscription missing on ${to.name}`)
  else {
    const st = i.stuck
    if (st?.unsure) critical.push(`stuck: applying fails (${st.evidence}), but ${st.unsure}`)
    else if (st) {
      critical.push(
        `stuck: transaction ${st.xid} (final LSN ${st.finalLsn}) fails to apply: ${st.evidence}${st.error ? `: ${st.error}` : ''}; ` +
          `\`mmlite skip-tx --from ${from.name} --to ${to.name}\` shows it and can skip it`,
      )
    }
    if (!sub.enabled) critical.push('subscription disabled')
    if (sub.worker_pid === null) critical.push('apply worker not running')
    else if (slot?.lag_s != null && slot.lag_s > th.lagWarningSeconds) warning.push(`lag ${formatSeconds(slot.lag_s)} > ${formatSeconds(th.lagWarningSeconds)}`)
    const errs = (sub.apply_error_count ?? 0) + (sub.sync_error_count ?? 0)
    if (errs > 0 && i.errorsRecentS !== undefined) {
      const what = [
        (sub.apply_error_count ?? 0) > 0 ? `${sub.apply_error_count} apply error(s)` : '',
        (sub.sync_error_count ?? 0) > 0 ? `${sub.sync_error_count} table sync error(s)` : '',
      ].filter(Boolean)
      warning.push(`${what.join(' and ')} since stats reset, the last counted ${formatSeconds(i.errorsRecentS)} ago (\`mmlite status --reset-errors\` resets the counts)`)
    }
  }

  let status: LinkState
  let reasons: string[]
  if (i.pausedBy !== undefined) {
    status = 'paused'
    reasons = [PAUSED_REASON(i.pausedBy), ...critical.filter(r => !PAUSE_IMPLIED.has(r)), ...warning]
  } else if (!fromOk && !toOk) {
    // nothing about this link could be read: unknown, not critical (the nodes are reported as down)
    status = 'unknown'
    reasons = [...critical]
  } else {
    status = critical.length ? 'critical' : warning.length ? 'warning' : 'ok'
    reasons = [...critical, ...warning]
  }
  const link: LinkStatus = {
    from: from.name,
    to: to.name,
    mechanism: from.versionNum && to.versionNum ? edgeMechanism(from.versionNum, to.versionNum) : null,
    status,
    reasons,
    subscriptionEnabled: sub ? sub.enabled : null,
    workerRunning: sub ? sub.worker_pid !== null : null,
    slotActive: slot ? slot.active : null,
    walStatus: slot?.wal_status ?? null,
    lagBytes: slot?.lag_bytes ?? null,
    retainedBytes: slot?.retained_bytes ?? null,
    lastMsgAgeSeconds: sub?.last_msg_age_s ?? null,
    lagSeconds: slot && sub?.worker_pid != null && slot.active ? (slot.lag_s ?? 0) : null,
    applyErrorCount: sub?.apply_error_count ?? null,
    syncErrorCount: sub?.sync_error_count ?? null,
  }
  if (sub?.conflicts) link.conflicts = Object.fromEntries(Object.entries(sub.conflicts).map(([k, v]) => [conflictKey(k), v]))
  if (i.errorsRecentS !== undefined && sub && (sub.apply_error_count ?? 0) + (sub.sync_error_count ?? 0) > 0) link.errorsRecentSeconds = Math.round(i.errorsRecentS)
  if (i.stuck && sub) link.stuck = i.stuck
  return link
}

const RANK: Record<Health, number> = {ok: 0, warning: 1, critical: 2, unknown: 3}

/** A link's weight in the overall health: paused counts as critical; an unknown link means a node is down (critical). */
export function linkLevel(s: LinkState): Exclude<Health, 'unknown'> {
  return s === 'paused' || s === 'unknown' ? 'critical' : s
}

/** Worst of nodes and links; `unknown` when no node at all could be reached. */
export function overallHealth(probes: NodeProbe[], links: LinkStatus[]): Health {
  if (probes.length === 0 || !probes.some(p => p.reachable)) return 'unknown'
  let h: Health = 'ok'
  const worse = (x: Health) => {
    if (RANK[x] > RANK[h]) h = x
  }
  for (const p of probes) if (!p.reachable || !p.data) worse('critical')
  for (const l of links) worse(linkLevel(l.status))
  return h
}

/** Monitoring convention (Nagios): 0 ok, 1 warning, 2 critical, 3 unknown. */
export function exitCodeFor(h: Health): ExitCode {
  switch (h) {
    case 'ok':
      return ExitCode.Ok
    case 'warning':
      return ExitCode.Warning
    case 'critical':
      return ExitCode.Failed
    default:
      return ExitCode.Unknown
  }
}

/** Build the result from the probes. Pure. */
export function evaluate(input: EvaluateInput): StatusResult {
  const name = input.edgeName ?? ((f: string, t: string) => edgeName(input.cluster, f, t))
  const paused = pausedSubscriptions(input.unfinished)
  const links: LinkStatus[] = []
  for (const from of input.probes)
    for (const to of input.probes) {
      if (from.name === to.name) continue
      const edge = name(from.name, to.name)
      links.push(
        classifyLink({
          from,
          to,
          slot: from.data?.slots.find(s => s.slot_name === edge),
          sub: to.data?.subscriptions.find(s => s.subname === edge),
          thresholds: input.thresholds,
          pausedBy: paused.get(`${to.name}/${edge}`),
          stuck: input.stuck?.get(linkKey(from.name, to.name)),
          errorsRecentS: input.errorsRecent?.get(linkKey(from.name, to.name)),
        }),
      )
    }
  const nodes: NodeStatus[] = input.probes.map(p => {
    const n: NodeStatus = {
      name: p.name,
      target: p.target,
      reachable: p.reachable,
      ...(p.error ? {error: p.error} : {}),
      version: p.version,
      versionNum: p.versionNum,
    }
    return n
  })
  return {
    cluster: input.cluster,
    health: overallHealth(input.probes, links),
    checkedAt: input.checkedAt.toISOString(),
    nodes,
    links,
    unfinished: input.unfinished.map(u => ({key: u.key, command: u.command, startedAt: u.startedAt})),
  }
}
