/**
 * Building blocks of every procedure that changes the mesh: publication, slot and
 * subscription actions (each idempotent: check the catalogs, then act) and the waits.
 * The SQL each one runs is built here, next to the check that guards it.
 */
import {escapeIdentifier as qi, escapeLiteral as ql} from '../db/quote.js'
import {compareLsn, parseLsn} from '../db/lsn.js'
import {renderConnInfo} from '../db/conninfo.js'
import type {Config, NodeConfig} from '../config/config.js'
import {edgeName, publicationName} from '../cluster/naming.js'
import {edgeMechanism, slotPlugin, type Mechanism} from '../cluster/capabilities.js'
import {streamingMode, subscriptionStreamingOption} from '../cluster/streaming.js'
import type {Action, StepContext} from '../engine/types.js'
import {MmliteError, ExitCode} from '../errors.js'
import {pollUntil} from '../util/poll.js'

export interface Edge {
  from: string
  to: string
  name: string
  mechanism: Mechanism
  plugin: string
}

export function makeEdge(cfg: Config, from: string, to: string, versions: Map<string, number>): Edge {
  const mechanism = edgeMechanism(versions.get(from)!, versions.get(to)!)
  return {from, to, name: edgeName(cfg.cluster, from, to), mechanism, plugin: slotPlugin(mechanism)}
}

// ---------------------------------------------------------------- publication

export function createPublicationSql(cfg: Config): string {
  return `CREATE PUBLICATION ${qi(publicationName(cfg.cluster))} FOR TABLE ${cfg.tables.map(t => t.qualified).join(', ')}`
}

export function setPublicationTablesSql(cfg: Config): string {
  return `ALTER PUBLICATION ${qi(publicationName(cfg.cluster))} SET TABLE ${cfg.tables.map(t => t.qualified).join(', ')}`
}

const PUB_TABLES_SQL = `SELECT p.pubname, pt.schemaname, pt.tablename
  FROM pg_publication p LEFT JOIN pg_publication_tables pt ON pt.pubname = p.pubname
 WHERE p.pubname = $1`

/** Publication of the replicated tables on `node`; an existing one with other tables is brought in line. */
export function publicationAction(cfg: Config, node: string): Action {
  const pub = publicationName(cfg.cluster)
  const want = new Set(cfg.tables.map(t => `${t.schema}.${t.name}`))
  const state = async (ctx: StepContext): Promise<'missing' | 'ok' | 'differs'> => {
    const rows = await ctx.cluster.node(node).query<{schemaname: string | null; tablename: string | null}>(PUB_TABLES_SQL, [pub])
    if (rows.length === 0) return 'missing'
    const have = new Set(rows.filter(r => r.tablename).map(r => `${r.schemaname}.${r.tablename}`))
    return have.size === want.size && [...want].every(t => have.has(t)) ? 'ok' : 'differs'
  }
  return {
    node,
    label: `publication ${pub}`,
    sql: [createPublicationSql(cfg)],
    check: async ctx => (await state(ctx)) === 'ok',
    run: async ctx => {
      const s = await state(ctx)
      if (s === 'missing') await ctx.cluster.node(node).query(createPublicationSql(cfg))
      else if (s === 'differs') await ctx.cluster.node(node).query(setPublicationTablesSql(cfg))
    },
  }
}

// ---------------------------------------------------------------- slots

export function createSlotSql(edge: Edge): string {
  return `SELECT pg_create_logical_replication_slot(${ql(edge.name)}, ${ql(edge.plugin)})`
}

const SLOT_SQL = `SELECT slot_name, plugin, slot_type, database FROM pg_replication_slots WHERE slot_name = $1`

/** The slot for edge.from → edge.to, on the publisher (edge.from). */
export function slotAction(edge: Edge): Action {
  const exists = async (ctx: StepContext): Promise<boolean> => {
    const c = ctx.cluster.node(edge.from)
    const r = await c.one<{plugin: string; slot_type: string; database: string}>(SLOT_SQL, [edge.name])
    if (!r) return false
    const db = (await c.one<{db: string}>('SELECT current_database() AS db'))!.db
    if (r.slot_type !== 'logical' || r.plugin !== edge.plugin || r.database !== db) {
      throw new MmliteError(
        `node ${edge.from}: slot "${edge.name}" exists but is ${r.slot_type} with plugin ${r.plugin ?? '-'} in database ${r.database ?? '-'}; mmlite needs a logical slot with plugin ${edge.plugin} in ${db}`,
        {code: ExitCode.Preflight, suggestions: [`If nothing else uses it, drop it on ${edge.from}: SELECT pg_drop_replication_slot(${ql(edge.name)});`]},
      )
    }
    return true
  }
  return {
    node: edge.from,
    label: `slot ${edge.name} (${edge.plugin})`,
    sql: [createSlotSql(edge)],
    check: exists,
    run: async ctx => {
      if (!(await exists(ctx))) await ctx.cluster.node(edge.from).query(createSlotSql(edge))
    },
  }
}

// ---------------------------------------------------------------- subscriptions

export function peerConnInfo(n: NodeConfig, redact: boolean): string {
  return renderConnInfo(n.peerConn, {redact})
}

export function createSubscriptionSql(
  cfg: Config,
  edge: Edge,
  opts: {copyData: boolean; enabled?: boolean; subscriberVersion: number},
  redact: boolean,
): string {
  const publisher = cfg.nodes.find(n => n.name === edge.from)
  if (!publisher) throw new Error(`unknown node ${edge.from}`)
  const withs = [
    `create_slot = false`,
    `slot_name = ${ql(edge.name)}`,
    `copy_data = ${opts.copyData}`,
    `enabled = ${opts.enabled ?? true}`,
  ]
  if (edge.mechanism === 'native') withs.push(`origin = none`)
  if (cfg.disableOnError && opts.subscriberVersion >= 150000) withs.push(`disable_on_error = true`)
  const streaming = subscriptionStreamingOption({subscriberVersion: opts.subscriberVersion, mechanism: edge.mechanism})
  if (streaming) withs.push(`streaming = ${streaming}`)
  return (
    `CREATE SUBSCRIPTION ${qi(edge.name)}\n` +
    `  CONNECTION ${ql(peerConnInfo(publisher, redact))}\n` +
    `  PUBLICATION ${qi(publicationName(cfg.cluster))}\n` +
    `  WITH (${withs.join(', ')})`
  )
}

const SUB_SQL = `SELECT s.subname, s.subenabled, s.subslotname FROM pg_subscription s
  WHERE s.subname = $1 AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`

/** The subscription for edge.from → edge.to, on the subscriber (edge.to). */
export function subscriptionAction(cfg: Config, edge: Edge, opts: {copyData: boolean; subscriberVersion: number}): Action {
  const exists = async (ctx: StepContext): Promise<boolean> => {
    const r = await ctx.cluster.node(edge.to).one<{subslotname: string | null}>(SUB_SQL, [edge.name])
    if (!r) return false
    if (r.subslotname !== edge.name) {
      throw new MmliteError(`node ${edge.to}: subscription "${edge.name}" exists but uses slot ${r.subslotname ?? 'NONE'}, not ${edge.name}`, {
        code: ExitCode.Preflight,
      })
    }
    return true
  }
  return {
    node: edge.to,
    label: `subscription ${edge.name} from ${edge.from}${opts.copyData ? ' (copy_data)' : ''}`,
    sql: [createSubscriptionSql(cfg, edge, opts, true)],
    check: exists,
    run: async ctx => {
      if (!(await exists(ctx))) await ctx.cluster.node(edge.to).query(createSubscriptionSql(cfg, edge, opts, false))
    },
  }
}

// ---------------------------------------------------------------- waits

export const SYNC_STATE_SQL = `SELECT count(*)::int AS total,
       count(*) FILTER (WHERE sr.srsubstate = 'r')::int AS ready,
       string_agg(CASE WHEN sr.srsubstate <> 'r' THEN sr.srrelid::regclass::text || ':' || sr.srsubstate::text END, ', ') AS pending
  FROM pg_subscription s JOIN pg_subscription_rel sr ON sr.srsubid = s.oid
 WHERE s.subname = $1`

/** Wait until every table of the subscription `edge` is synchronized (pg_subscription_rel state 'r'). */
export function waitSyncAction(edges: Edge[], timeoutMs: number): Action[] {
  return edges.map(edge => {
    const state = async (ctx: StepContext) =>
      (await ctx.cluster.node(edge.to).one<{total: number; ready: number; pending: string | null}>(SYNC_STATE_SQL, [edge.name]))!
    return {
      node: edge.to,
      label: `wait for initial copy ${edge.from}→${edge.to}`,
      sql: [],
      check: async ctx => {
        const s = await state(ctx)
        return s.total > 0 && s.ready === s.total
      },
      run: async ctx => {
        await pollUntil(
          async () => {
            const s = await state(ctx)
            ctx.progress(`${edge.from}→${edge.to}: ${s.ready}/${s.total} tables synchronized${s.pending ? ` (pending: ${s.pending})` : ''}`)
            return s.total > 0 && s.ready === s.total
          },
          {timeoutMs, what: `initial copy ${edge.from}→${edge.to}`, hint: errorHint(edge)},
        )
      },
    }
  })
}

export const SUB_WORKER_SQL = `SELECT s.subenabled AS enabled, st.pid IS NOT NULL AS running
  FROM pg_subscription s LEFT JOIN pg_stat_subscription st ON st.subid = s.oid AND st.relid IS NULL
 WHERE s.subname = $1`

export const SLOT_ACTIVE_SQL = `SELECT active FROM pg_replication_slots WHERE slot_name = $1`

/** Wait until the subscription's apply worker runs and the publisher's slot is active. */
export function waitStreamingActions(edges: Edge[], timeoutMs: number): Action[] {
  return edges.map(edge => {
    const streaming = async (ctx: StepContext) => {
      const [w, s] = await Promise.all([
        ctx.cluster.node(edge.to).one<{enabled: boolean; running: boolean}>(SUB_WORKER_SQL, [edge.name]),
        ctx.cluster.node(edge.from).one<{active: boolean}>(SLOT_ACTIVE_SQL, [edge.name]),
      ])
      return Boolean(w?.enabled && w.running && s?.active)
    }
    return {
      node: edge.to,
      label: `wait until ${edge.from}→${edge.to} streams`,
      sql: [],
      check: streaming,
      run: async ctx => {
        await pollUntil(
          async () => {
            const ok = await streaming(ctx)
            if (!ok) ctx.progress(`waiting for ${edge.from}→${edge.to} to stream`)
            return ok
          },
          {timeoutMs, what: `link ${edge.from}→${edge.to} to start streaming`, hint: errorHint(edge)},
        )
      },
    }
  })
}

function errorHint(edge: Edge): string {
  return `Check the server log of ${edge.to} (apply/tablesync worker errors) and of ${edge.from}; run \`mmlite status\`. Re-running the command continues from here.`
}

// ---------------------------------------------------------------- removal (remove-node)
//
// Taking links apart without contacting the other end: a subscription is disabled, detached
// from its slot (slot_name = NONE) and dropped, so DROP SUBSCRIPTION never connects to the
// publisher; slots are dropped explicitly on their own node once no walsender uses them.

export function disableSubscriptionSql(sub: string): string {
  return `ALTER SUBSCRIPTION ${qi(sub)} DISABLE`
}

export function detachSubscriptionSql(sub: string): string {
  return `ALTER SUBSCRIPTION ${qi(sub)} SET (slot_name = NONE)`
}

export function dropSubscriptionSql(sub: string): string {
  return `DROP SUBSCRIPTION ${qi(sub)}`
}

export function dropSlotSql(slot: string): string {
  return `SELECT pg_drop_replication_slot(${ql(slot)})`
}

/** Ends the walsender that holds the slot (if any). */
export function terminateSlotSenderSql(slot: string): string {
  return `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = ${ql(slot)} AND active_pid IS NOT NULL`
}

/** Ends the (apply / table sync) workers of a subscription that is already disabled. */
export function terminateSubscriptionWorkersSql(sub: string): string {
  return (
    `SELECT pg_terminate_backend(st.pid) FROM pg_stat_subscription st JOIN pg_subscription s ON s.oid = st.subid` +
    ` WHERE s.subname = ${ql(sub)} AND st.pid IS NOT NULL AND NOT s.subenabled` +
    ` AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`
  )
}

export function dropPublicationSql(cfg: Config): string {
  return `DROP PUBLICATION ${qi(publicationName(cfg.cluster))}`
}

const SUB_STATE_SQL = `SELECT s.subenabled AS enabled, s.subslotname AS slot,
       (SELECT count(*)::int FROM pg_stat_subscription st WHERE st.subid = s.oid AND st.pid IS NOT NULL) AS workers,
       (SELECT os.remote_lsn::text FROM pg_replication_origin_status os WHERE os.external_id = 'pg_' || s.oid::text) AS remote_lsn
  FROM pg_subscription s
 WHERE s.subname = $1 AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`

interface SubState {
  enabled: boolean
  slot: string | null
  workers: number
  remote_lsn: string | null
}

/** The subscription `sub` on `node` (current database), or undefined. */
export async function subscriptionState(ctx: StepContext, node: string, sub: string): Promise<SubState | undefined> {
  return ctx.cluster.node(node).one<SubState & Record<string, unknown>>(SUB_STATE_SQL, [sub])
}

/** Same as subscriptionState(...) !== undefined. */
export async function subscriptionExists(ctx: StepContext, node: string, sub: string): Promise<boolean> {
  return (await subscriptionState(ctx, node, sub)) !== undefined
}

export interface DropSubscriptionOptions {
  /** bound for waiting until its workers have exited after DISABLE */
  timeoutMs: number
  /** after this long, still-running workers of the disabled subscription are terminated */
  graceMs?: number
  label?: string
  /**
   * Called once the subscription is disabled and no worker of it runs any more (so its origin
   * progress is final), right before it is detached and dropped, with the origin's remote_lsn
   * (`0/0` when nothing was ever applied). Record what must survive the drop here.
   */
  beforeDrop?: (ctx: StepContext, remoteLsn: string) => Promise<void>
}

/**
 * Drop subscription `sub` on `node` without contacting its publisher: DISABLE, wait until its
 * workers are gone, SET (slot_name = NONE), DROP. Each statement only if the catalogs say it
 * is still needed, so a run killed between two of them finishes the job when re-run.
 */
export function dropSubscriptionDetachedAction(node: string, sub: string, opts: DropSubscriptionOptions): Action {
  const grace = opts.graceMs ?? 5000
  return {
    node,
    label: opts.label ?? `drop subscription ${sub} (without contacting its publisher)`,
    sql: [disableSubscriptionSql(sub), detachSubscriptionSql(sub), dropSubscriptionSql(sub)],
    check: async ctx => !(await subscriptionExists(ctx, node, sub)),
    run: async ctx => {
      const c = ctx.cluster.node(node)
      let s = await subscriptionState(ctx, node, sub)
      if (!s) return
      if (s.enabled) await c.query(disableSubscriptionSql(sub))
      const t0 = Date.now()
      let terminated = false
      await pollUntil(
        async () => {
          s = await subscriptionState(ctx, node, sub)
          if (!s || s.workers === 0) return true
          if (!terminated && Date.now() - t0 >= grace) {
            ctx.progress(`${node}: workers of ${sub} still running after DISABLE; terminating them`)
            await c.query(terminateSubscriptionWorkersSql(sub))
            terminated = true
          } else ctx.progress(`${node}: waiting for the workers of ${sub} to stop`)
          return false
        },
        {timeoutMs: opts.timeoutMs, what: `the workers of subscription ${sub} on ${node} to stop`, maxIntervalMs: 500},
      )
      if (!s) return
      if (opts.beforeDrop) await opts.beforeDrop(ctx, s.remote_lsn ?? '0/0')
      if (s.slot !== null) await c.query(detachSubscriptionSql(sub))
      await c.query(dropSubscriptionSql(sub))
    },
  }
}

const SLOT_STATE_SQL = `SELECT active, active_pid,
       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text AS retained_bytes
  FROM pg_replication_slots WHERE slot_name = $1`

export interface DropSlotOptions {
  /** bound for the whole wait (inactive, then dropped) */
  timeoutMs: number
  /** how long an active walsender may linger before it is terminated */
  graceMs?: number
  label?: string
  /**
   * Called with the WAL the slot retains (pg_current_wal_lsn() − restart_lsn, null when the
   * slot has no restart_lsn) right before it is dropped.
   */
  beforeDrop?: (ctx: StepContext, retainedBytes: number | null) => Promise<void>
}

/**
 * Drop slot `slot` on `node`: wait until no walsender uses it (terminating one that lingers
 * longer than graceMs, e.g. one serving a subscriber that is gone and that would otherwise
 * stay until wal_sender_timeout), then drop it. A subscriber that reconnects in between only
 * makes the drop fail with "is active"; it is retried.
 */
export function dropSlotAction(node: string, slot: string, opts: DropSlotOptions): Action {
  const grace = opts.graceMs ?? 2000
  const state = (ctx: StepContext) =>
    ctx.cluster.node(node).one<{active: boolean; active_pid: number | null; retained_bytes: string | null}>(SLOT_STATE_SQL, [slot])
  return {
    node,
    label: opts.label ?? `drop slot ${slot}`,
    sql: [terminateSlotSenderSql(slot), dropSlotSql(slot)],
    check: async ctx => (await state(ctx)) === undefined,
    run: async ctx => {
      const c = ctx.cluster.node(node)
      let activeSince: number | undefined
      await pollUntil(
        async () => {
          const r = await state(ctx)
          if (!r) return true
          if (r.active) {
            activeSince ??= Date.now()
            if (Date.now() - activeSince >= grace) {
              ctx.progress(`${node}: slot ${slot} still used by walsender pid ${r.active_pid ?? '?'}; terminating it`)
              await c.query(terminateSlotSenderSql(slot))
            } else ctx.progress(`${node}: waiting until no walsender uses slot ${slot}`)
            return false
          }
          if (opts.beforeDrop) await opts.beforeDrop(ctx, r.retained_bytes === null ? null : Number(r.retained_bytes))
          try {
            await c.query(dropSlotSql(slot))
          } catch (e) {
            // a walsender took it again between our read and the drop: wait and retry
            if (e instanceof MmliteError && /is active for PID|does not exist/i.test(e.message)) return false
            throw e
          }
          return true
        },
        {timeoutMs: opts.timeoutMs, what: `slot ${slot} on ${node} to be released and dropped`, maxIntervalMs: 500},
      )
    },
  }
}

/** Drop this cluster's publication on `node` (if it is there). */
export function dropPublicationAction(cfg: Config, node: string): Action {
  const pub = publicationName(cfg.cluster)
  const exists = async (ctx: StepContext) =>
    (await ctx.cluster.node(node).one('SELECT 1 AS x FROM pg_publication WHERE pubname = $1', [pub])) !== undefined
  return {
    node,
    label: `drop publication ${pub}`,
    sql: [dropPublicationSql(cfg)],
    check: async ctx => !(await exists(ctx)),
    run: async ctx => {
      if (await exists(ctx)) await ctx.cluster.node(node).query(dropPublicationSql(cfg))
    },
  }
}

// ---------------------------------------------------------------- joins (add-node)
//
// Slots whose consistent point a join must remember, waits on a slot's
// confirmed_flush_lsn, pausing/resuming subscriptions, origin progress, catch-up waits.

/** Every directed edge between `node` and each other node of cfg. */
export function edgesOfNode(cfg: Config, node: string, versions: Map<string, number>): {inbound: Edge[]; outbound: Edge[]} {
  const others = cfg.nodes.map(n => n.name).filter(n => n !== node)
  return {
    inbound: others.map(o => makeEdge(cfg, o, node, versions)),
    outbound: others.map(o => makeEdge(cfg, node, o, versions)),
  }
}

export function createSlotReturningLsnSql(edge: Edge): string {
  return `SELECT lsn::text AS lsn FROM pg_create_logical_replication_slot(${ql(edge.name)}, ${ql(edge.plugin)})`
}

export const SLOT_CONFIRMED_SQL = `SELECT confirmed_flush_lsn::text AS lsn, active FROM pg_replication_slots WHERE slot_name = $1`

/**
 * The slot for `edge` on its publisher, remembering its consistent point: the LSN
 * pg_create_logical_replication_slot returns, which is also the slot's confirmed_flush_lsn
 * until a subscriber confirms something. A run killed between creating the slot and recording
 * the LSN reads it back from confirmed_flush_lsn; that is exact only while no subscription
 * has used the slot, which the caller guarantees by creating the subscription later.
 */
export function slotWithConsistentPointAction(
  edge: Edge,
  opts: {recorded: (ctx: StepContext) => string | undefined; record: (ctx: StepContext, lsn: string) => Promise<void>},
): Action {
  const base = slotAction(edge)
  return {
    node: edge.from,
    label: `slot ${edge.name} (${edge.plugin}), remembering its consistent point`,
    sql: [createSlotReturningLsnSql(edge)],
    check: async ctx => Boolean(opts.recorded(ctx)) && (await base.check(ctx)),
    run: async ctx => {
      const c = ctx.cluster.node(edge.from)
      if (!(await base.check(ctx))) {
        const r = await c.one<{lsn: string}>(createSlotReturningLsnSql(edge))
        await opts.record(ctx, r!.lsn)
        return
      }
      if (!opts.recorded(ctx)) {
        const r = await c.one<{lsn: string | null}>(SLOT_CONFIRMED_SQL, [edge.name])
        if (!r?.lsn) throw new MmliteError(`node ${edge.from}: slot ${edge.name} has no confirmed_flush_lsn`, {code: ExitCode.Failed})
        await opts.record(ctx, r.lsn)
      }
    },
  }
}

/** confirmed_flush_lsn of `slot` on `node` (undefined when the slot is missing or has none). */
export async function slotConfirmedFlush(ctx: StepContext, node: string, slot: string): Promise<string | undefined> {
  const r = await ctx.cluster.node(node).one<{lsn: string | null}>(SLOT_CONFIRMED_SQL, [slot])
  return r?.lsn ?? undefined
}

/**
 * Wait until the subscriber of `edge` has confirmed (flushed) everything up to `target` on the
 * publisher's slot. A subscriber that is idle still confirms: the walsender sends keepalives
 * carrying the position it has decoded up to, and an apply worker with no transaction pending
 * reports that position as flushed, so no new transaction is needed for this to finish.
 */
export function waitSlotConfirmedAction(edge: Edge, target: (ctx: StepContext) => string | undefined, timeoutMs: number, label?: string): Action {
  const reached = async (ctx: StepContext): Promise<{ok: boolean; at?: string; want?: string}> => {
    const want = target(ctx)
    if (!want) return {ok: false}
    const at = await slotConfirmedFlush(ctx, edge.from, edge.name)
    return {ok: Boolean(at) && compareLsn(at!, want) >= 0, at, want}
  }
  return {
    node: edge.from,
    label: label ?? `wait until ${edge.to} has confirmed ${edge.from}'s WAL up to the recorded position`,
    sql: [],
    check: async ctx => (await reached(ctx)).ok,
    run: async ctx => {
      if (!target(ctx)) throw new MmliteError(`internal: no target LSN recorded for ${edge.from}→${edge.to}`, {code: ExitCode.Failed})
      await pollUntil(
        async () => {
          const r = await reached(ctx)
          if (!r.ok) ctx.progress(`${edge.from}→${edge.to}: confirmed ${r.at ?? '-'} of ${r.want}`)
          return r.ok
        },
        {timeoutMs, what: `${edge.to} to confirm ${edge.from}'s changes up to ${target(ctx)}`, hint: errorHint(edge), maxIntervalMs: 500},
      )
    },
  }
}

export function pauseSubscriptionSql(sub: string): string {
  return `ALTER SUBSCRIPTION ${qi(sub)} DISABLE`
}

export function resumeSubscriptionSql(sub: string): string {
  return `ALTER SUBSCRIPTION ${qi(sub)} ENABLE`
}

const SUBS_OF_DB = `s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`

/** enabled flag and running workers (apply, parallel apply, table sync) of each named subscription. */
export const SUBSCRIPTION_WORKERS_SQL = `SELECT s.subname, s.subenabled AS enabled,
       (SELECT count(*)::int FROM pg_stat_subscription st WHERE st.subid = s.oid AND st.pid IS NOT NULL) AS workers
  FROM pg_subscription s WHERE s.subname = ANY($1::text[]) AND ${SUBS_OF_DB}`

/**
 * Origin progress of a subscription: remote_lsn of its replication origin `pg_<oid>`, the END
 * LSN of the last remote commit it applied ('0/0' when none yet).
 */
export const SUBSCRIPTION_ORIGIN_SQL = `SELECT s.subname, 'pg_' || s.oid::text AS origin, s.subenabled AS enabled,
       coalesce((SELECT os.remote_lsn::text FROM pg_replication_origin_status os WHERE os.external_id = 'pg_' || s.oid::text), '0/0') AS remote_lsn
  FROM pg_subscription s WHERE s.subname = ANY($1::text[]) AND ${SUBS_OF_DB}`

/** Set the origin progress of subscription `sub` (disabled: its worker must not run) to `lsn`. */
export function originAdvanceSql(sub: string, lsn: string): string {
  parseLsn(lsn) // validates
  return (
    `SELECT pg_replication_origin_advance('pg_' || s.oid::text, ${ql(lsn)}::pg_lsn) FROM pg_subscription s` +
    ` WHERE s.subname = ${ql(sub)} AND ${SUBS_OF_DB}`
  )
}

/**
 * Wait until every link into a node has caught up: for each inbound edge, the publisher's
 * slot has confirmed the WAL position the publisher had when the wait started.
 */
export function waitCaughtUpActions(edges: Edge[], timeoutMs: number): Action[] {
  return edges.map(edge => {
    const lag = async (ctx: StepContext) =>
      (await ctx.cluster.node(edge.from).one<{confirmed: string | null; current: string}>(
        `SELECT confirmed_flush_lsn::text AS confirmed, pg_current_wal_lsn()::text AS current FROM pg_replication_slots WHERE slot_name = $1`,
        [edge.name],
      )) ?? {confirmed: null, current: '0/0'}
    return {
      node: edge.to,
      label: `wait until ${edge.to} has caught up with ${edge.from}`,
      sql: [],
      check: async ctx => {
        const r = await lag(ctx)
        return r.confirmed !== null && compareLsn(r.confirmed, r.current) >= 0
      },
      run: async ctx => {
        const target = (await lag(ctx)).current
        await pollUntil(
          async () => {
            const r = await lag(ctx)
            const ok = r.confirmed !== null && compareLsn(r.confirmed, target) >= 0
            if (!ok) {
              const behind = r.confirmed === null ? '?' : String(parseLsn(target) - parseLsn(r.confirmed))
              ctx.progress(`${edge.from}→${edge.to}: ${behind} bytes behind ${target}`)
            }
            return ok
          },
          {timeoutMs, what: `${edge.to} to catch up with ${edge.from} (up to ${target})`, hint: errorHint(edge), maxIntervalMs: 500},
        )
      },
    }
  })
}

// ---------------------------------------------------------------- subscription options

export function setDisableOnErrorSql(edge: Edge): string {
  return `ALTER SUBSCRIPTION ${qi(edge.name)} SET (disable_on_error = true)`
}

/**
 * `disable_on_error: true` in mmlite.yaml for a subscription that exists already (PostgreSQL
 * 15+ subscriber): created before the setting was recorded, or by hand.
 */
export function disableOnErrorAction(edge: Edge): Action {
  const state = async (ctx: StepContext) =>
    (await ctx.cluster.node(edge.to).one<{on: boolean}>('SELECT subdisableonerr AS on FROM pg_subscription WHERE subname = $1', [edge.name]))?.on
  return {
    node: edge.to,
    label: `disable_on_error on subscription ${edge.name}`,
    sql: [setDisableOnErrorSql(edge)],
    check: async ctx => (await state(ctx)) === true,
    run: async ctx => {
      if ((await state(ctx)) === false) await ctx.cluster.node(edge.to).query(setDisableOnErrorSql(edge))
    },
  }
}

// ---------------------------------------------------------------- streaming (cluster/streaming.ts)

/**
 * The `streaming` mode mmlite chose (cluster/streaming.ts) on a subscription that exists already:
 * made before mmlite set it (PostgreSQL 18 defaults to parallel), or changed by hand.
 */
export function streamingAction(edge: Edge, subscriberVersion: number): Action | undefined {
  const want = subscriptionStreamingOption({subscriberVersion, mechanism: edge.mechanism})
  if (!want) return undefined
  const sql = `ALTER SUBSCRIPTION ${qi(edge.name)} SET (streaming = ${want})`
  const state = async (ctx: StepContext) =>
    streamingMode((await ctx.cluster.node(edge.to).one<{m: string}>('SELECT substream::text AS m FROM pg_catalog.pg_subscription WHERE subname = $1::pg_catalog.name', [edge.name]))?.m)
  return {
    node: edge.to,
    label: `streaming = ${want} on subscription ${edge.name}`,
    sql: [sql],
    check: async ctx => (await state(ctx)) === want,
    run: async ctx => {
      const m = await state(ctx)
      if (m !== null && m !== want) await ctx.cluster.node(edge.to).query(sql)
    },
  }
}
