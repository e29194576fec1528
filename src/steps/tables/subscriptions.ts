/**
 * Subscription steps of the table reconcile procedure (see ./index.ts):
 *   drain          every link has applied what its publisher committed before the tables left
 *   subscriptions  every subscription names `<cluster>` and `<cluster>_stage` and knows exactly
 *                  the tables that are (or are about to be) replicated
 */
import {escapeIdentifier as qi} from '../../db/quote.js'
import {compareLsn} from '../../db/lsn.js'
import {publicationName} from '../../cluster/naming.js'
import type {Action, Step, StepContext} from '../../engine/types.js'
import {pollUntil} from '../../util/poll.js'
import {readNodeState, stageName, type SubState} from './state.js'
import type {TablesCtx} from './index.js'

const CONFIRMED_SQL = `SELECT s.confirmed_flush_lsn::pg_catalog.text AS confirmed, pg_catalog.pg_current_wal_lsn()::pg_catalog.text AS current
  FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = $1::pg_catalog.text`

/** Wait until slot `slot` on `from` has confirmed `from`'s WAL insert position taken when the wait starts. */
async function waitConfirmed(ctx: StepContext, from: string, slot: string, timeoutMs: number): Promise<void> {
  const c = ctx.cluster.node(from)
  const target = (await c.one<{current: string}>(CONFIRMED_SQL, [slot]))?.current
  if (!target) return
  await pollUntil(
    async () => {
      const r = await c.one<{confirmed: string | null}>(CONFIRMED_SQL, [slot])
      const ok = !r || (r.confirmed !== null && compareLsn(r.confirmed, target) >= 0)
      if (!ok) ctx.progress(`${slot}: confirmed ${r?.confirmed ?? '-'} of ${target}`)
      return ok
    },
    {timeoutMs, what: `slot ${slot} on ${from} to confirm ${target}`, maxIntervalMs: 500, hint: 'Run `mmlite status`; re-running continues from here.'},
  )
}

/**
 * After the removed (or broken) tables left the publications: every subscriber applies what
 * was committed before (so writes made while a table was replicated arrive everywhere, and no
 * change of a table being re-added is still in flight when it is locked), then its
 * subscription forgets a removed table (next step).
 */
export function drainStep(t: TablesCtx): Step {
  const edges = t.cfg.nodes.flatMap(n => t.state.get(n.name)!.subs)
  const actions: Action[] = edges.map(e => ({
    node: e.from,
    label: `wait until ${e.to} has applied ${e.from}'s changes up to now`,
    sql: [],
    // a table being re-added (broken) stays known: its drain is simply waited for again
    check: async ctx => {
      if (t.work.broken.length) return false
      const s = (await readNodeState(ctx.cfg, ctx.cluster, e.to)).subs.find(x => x.name === e.name)!
      return t.work.removes.every(k => !s.rels.has(k))
    },
    run: ctx => waitConfirmed(ctx, e.from, e.name, t.timeoutMs),
  }))
  return {id: 'tables-drain', title: 'Wait until every link has applied the changes made before the tables left', actions}
}

export function setPublicationsSql(cluster: string, sub: string): string {
  return `ALTER SUBSCRIPTION ${qi(sub)} SET PUBLICATION ${qi(publicationName(cluster))}, ${qi(stageName(cluster))} WITH (copy_data = false)`
}

export function refreshSql(sub: string): string {
  return `ALTER SUBSCRIPTION ${qi(sub)} REFRESH PUBLICATION WITH (copy_data = false)`
}

/**
 * Every subscription names both publications and knows the added tables (state ready, no
 * copy) and no removed one. A subscription that does not name the announce publication yet
 * first waits until its slot has confirmed a position after that publication was created:
 * a walsender that decodes from before it (PostgreSQL 17 and older) fails on the missing
 * publication.
 */
export function subscriptionsStep(t: TablesCtx): Step {
  const stage = stageName(t.cfg.cluster)
  const edges = t.cfg.nodes.flatMap(n => t.state.get(n.name)!.subs)
  const done = (s: SubState) => s.pubs.includes(stage) && t.work.adds.every(k => s.rels.has(k)) && t.work.removes.every(k => !s.rels.has(k))
  const actions: Action[] = edges.map(e => ({
    node: e.to,
    label: `subscription ${e.name} learns the table changes`,
    sql: [e.pubs.includes(stage) ? refreshSql(e.name) : setPublicationsSql(t.cfg.cluster, e.name)],
    check: async ctx => done((await readNodeState(ctx.cfg, ctx.cluster, e.to)).subs.find(x => x.name === e.name)!),
    run: async ctx => {
      const s = (await readNodeState(ctx.cfg, ctx.cluster, e.to)).subs.find(x => x.name === e.name)!
      if (done(s)) return
      if (!s.pubs.includes(stage)) {
        await waitConfirmed(ctx, e.from, e.name, t.timeoutMs)
        await ctx.cluster.node(e.to).query(setPublicationsSql(t.cfg.cluster, e.name))
      } else await ctx.cluster.node(e.to).query(refreshSql(e.name))
    },
  }))
  return {id: 'tables-subscriptions', title: 'Every subscription learns the added and removed tables (no copy, nothing is sent yet)', actions}
}
