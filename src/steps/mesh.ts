/**
 * Building blocks of every procedure that changes the mesh: publication, slot and
 * subscription actions (each idempotent: check the catalogs, then act) and the waits.
 * The SQL each one runs is built here, next to the check that guards it.
 */
import {escapeIdentifier as qi, escapeLiteral as ql} from '../db/quote.js'
import {renderConnInfo} from '../db/conninfo.js'
import type {Config, NodeConfig} from '../config/config.js'
import {edgeName, publicationName} from '../cluster/naming.js'
import {edgeMechanism, slotPlugin, type Mechanism} from '../cluster/capabilities.js'
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
