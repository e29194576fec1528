/**
 * What the standby strategy's step builders (this folder, add-node-standby.ts) share: its
 * journal values, the names of the objects it touches, and the catalog reads of subscriptions
 * and slots on a node.
 */
import type {StepContext} from '../../engine/types.js'
import type {AddNodeContext} from '../add-node-context.js'
import {makeEdge, type Edge} from '../mesh.js'
import type {PausedSub, PauseRecord} from '../pause.js'
import {edgeName} from '../../cluster/naming.js'
import {escapeLiteral as ql} from '../../db/quote.js'
import {isLsn} from '../../db/lsn.js'

/** Journal values of a standby run (operation `add-node:<X>`). */
export interface StandbyValues {
  /** read by `mmlite status`: subscriptions this run disabled on purpose (recorded before the DISABLE) */
  pausedSubscriptions?: PausedSub[]
  /** every pause of S's inbound replication, finished or interrupted */
  pauses?: PauseRecord[]
  /** S's WAL insert position after the pause; X is promoted only once it has replayed it */
  replayTarget?: string
  /** X's primary_slot_name (the physical slot on S that fed it), null when none */
  feedSlot?: string | null
  promoteRequestedAt?: string
  /** P_X: where X left S's WAL (switch point of its new timeline) */
  promotedLsn?: string
  /** origin start positions set on X's inbound subscriptions (recorded before the advance; see add-node/origin.ts) */
  originsSet?: Record<string, string>
}

export const J = {
  paused: 'pausedSubscriptions',
  pauses: 'pauses',
  replayTarget: 'replayTarget',
  feedSlot: 'feedSlot',
  promoteRequestedAt: 'promoteRequestedAt',
  promotedLsn: 'promotedLsn',
  originsSet: 'originsSet',
} as const

export interface StandbyNames {
  cluster: string
  s: string
  x: string
  others: string[]
  /** on S: subscription P→S for each P (inherited by X) */
  inbound: Array<{p: string; sub: string; newSub: string}>
  sourceEdge: Edge
  /** P→X for each P */
  peerInEdges: Edge[]
  /** X→S and X→P */
  outEdges: Edge[]
}

export function standbyNames(ctx: Pick<AddNodeContext, 'full' | 'x' | 'source' | 'others' | 'versions'>): StandbyNames {
  const c = ctx.full.cluster
  const s = ctx.source
  const x = ctx.x.name
  return {
    cluster: c,
    s,
    x,
    others: [...ctx.others],
    inbound: ctx.others.map(p => ({p, sub: edgeName(c, p, s), newSub: edgeName(c, p, x)})),
    sourceEdge: makeEdge(ctx.full, s, x, ctx.versions),
    peerInEdges: ctx.others.map(p => makeEdge(ctx.full, p, x, ctx.versions)),
    outEdges: [s, ...ctx.others].map(n => makeEdge(ctx.full, x, n, ctx.versions)),
  }
}

export const SUBS_SQL = `SELECT s.oid::text AS oid, s.subname, s.subenabled AS enabled, s.subslotname AS slot,
       (SELECT count(*)::int FROM pg_stat_subscription st WHERE st.subid = s.oid AND st.pid IS NOT NULL) AS workers
  FROM pg_subscription s
 WHERE s.subname = ANY($1::text[]) AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`

export interface SubRow {
  oid: string
  subname: string
  enabled: boolean
  slot: string | null
  workers: number
}

export async function subs(sctx: StepContext, node: string, names: string[]): Promise<Map<string, SubRow>> {
  return subsOn(sctx.cluster, node, names)
}

const SLOT_SQL = `SELECT slot_name, slot_type, plugin, active, database, confirmed_flush_lsn::text AS confirmed_flush
  FROM pg_replication_slots WHERE slot_name = ANY($1::text[])`

export interface SlotRow {
  slot_name: string
  slot_type: string
  plugin: string | null
  active: boolean
  database: string | null
  confirmed_flush: string | null
}

export async function slots(sctx: StepContext, node: string, names: string[]): Promise<Map<string, SlotRow>> {
  const rows = await sctx.cluster.node(node).query<SlotRow & Record<string, unknown>>(SLOT_SQL, [names])
  return new Map(rows.map(r => [r.slot_name, r]))
}

export async function inRecovery(sctx: StepContext, node: string): Promise<boolean> {
  return (await sctx.cluster.node(node).one<{r: boolean}>('SELECT pg_is_in_recovery() AS r'))!.r
}

export const terminateWorkersSql = (sub: string) =>
  `SELECT pg_terminate_backend(st.pid) FROM pg_stat_subscription st JOIN pg_subscription s ON s.oid = st.subid` +
  ` WHERE s.subname = ${ql(sub)} AND NOT s.subenabled AND st.pid IS NOT NULL` +
  ` AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`
export const advanceOriginSql = (sub: string, lsn: string) =>
  `SELECT pg_replication_origin_advance('pg_' || (SELECT oid FROM pg_subscription WHERE subname = ${ql(sub)}` +
  ` AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()))::text, ${isLsn(lsn) ? `${ql(lsn)}::pg_lsn` : lsn})`
export async function subsOn(cluster: AddNodeContext['cluster'], node: string, names: string[]): Promise<Map<string, SubRow>> {
  const rows = await cluster.node(node).query<SubRow & Record<string, unknown>>(SUBS_SQL, [names])
  return new Map(rows.map(r => [r.subname, r]))
}

