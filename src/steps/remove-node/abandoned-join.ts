/**
 * `remove-node X` for a node whose join never finished (issue #7.4): X is not in mmlite.yaml,
 * but an unfinished `add-node:X` is in the journal, or the members hold objects named for X's
 * links. X is never contacted (it may be gone; what is left on X is listed for the operator).
 *
 *   undo-pause          re-enable the subscriptions the join paused (journal `pausedSubscriptions`)
 *   peer-subscriptions  on every member, its subscription from X (detached, origin progress kept)
 *   peer-slots          on every member, its slot for X and the table-synchronization slots
 *                       that served X
 *   feed-slot           on the source, the physical slot that fed X as a standby (standby strategy)
 * The `add-node:X` operation is then closed as abandoned (runRemoveNode), so later joins run.
 */
import type {Config} from '../../config/config.js'
import {edgeName} from '../../cluster/naming.js'
import type {Action, Step, StepContext} from '../../engine/types.js'
import type {PausedSub} from '../pause.js'
import {enableDisabled} from '../pause.js'
import {dropSlotAction, dropSubscriptionDetachedAction, resumeSubscriptionSql, SUBSCRIPTION_WORKERS_SQL} from '../mesh.js'
import {dropSyncSlotsAction} from './sync-slots.js'

/** What the unfinished add-node of X recorded that matters here. */
export interface JoinValues {
  pausedSubscriptions?: PausedSub[]
  source?: string
  feedSlot?: string | null
}

export const ABANDONED_STEPS = ['undo-pause', 'peer-subscriptions', 'peer-slots', 'feed-slot'] as const

function undoPauseAction(node: string, subs: string[]): Action {
  const disabled = async (ctx: StepContext) => {
    const rows = await ctx.cluster.node(node).query<{subname: string; enabled: boolean}>(SUBSCRIPTION_WORKERS_SQL, [subs])
    return rows.filter(r => !r.enabled).map(r => r.subname)
  }
  return {
    node,
    label: `re-enable ${subs.join(', ')} (paused by the unfinished join)`,
    sql: subs.map(resumeSubscriptionSql),
    check: async ctx => (await disabled(ctx)).length === 0,
    run: async ctx => {
      const d = await disabled(ctx)
      if (d.length) ctx.note(`${node}: re-enabling ${d.join(', ')}, paused by the unfinished join`)
      await enableDisabled(ctx.cluster.node(node), subs)
    },
  }
}

function dropPhysicalSlotAction(node: string, slot: string, timeoutMs: number): Action {
  const base = dropSlotAction(node, slot, {timeoutMs, graceMs: 0, label: `drop the physical slot ${slot} that fed the abandoned standby`})
  const physical = async (ctx: StepContext) =>
    (await ctx.cluster.node(node).one<{t: string}>('SELECT slot_type::pg_catalog.text AS t FROM pg_catalog.pg_replication_slots WHERE slot_name = $1::pg_catalog.name', [slot]))?.t === 'physical'
  return {...base, check: async ctx => !(await physical(ctx)), run: async ctx => (await physical(ctx)) ? base.run(ctx) : undefined}
}

export function buildAbandonedJoinSteps(
  cfg: Config,
  input: {x: string; peers: string[]; join: JoinValues; waitTimeoutMs: number; graceMs?: number; recordProgress: (ctx: StepContext, peer: string, lsn: string) => Promise<void>},
): Step[] {
  const {x, peers, join} = input
  const edge = (from: string, to: string) => edgeName(cfg.cluster, from, to)
  const paused = new Map<string, string[]>()
  for (const p of join.pausedSubscriptions ?? []) if (peers.includes(p.node)) paused.set(p.node, [...(paused.get(p.node) ?? []), p.subscription])
  const steps: Step[] = [
    {id: 'undo-pause', title: `Re-enable what the unfinished join of ${x} paused`, actions: [...paused].map(([n, subs]) => undoPauseAction(n, subs))},
    {
      id: 'peer-subscriptions',
      title: `Drop the members' subscriptions from ${x} (without contacting ${x})`,
      actions: peers.map(p =>
        dropSubscriptionDetachedAction(p, edge(x, p), {
          timeoutMs: input.waitTimeoutMs,
          graceMs: input.graceMs,
          label: `drop subscription ${edge(x, p)} from ${x} (origin progress recorded first)`,
          beforeDrop: (ctx, lsn) => input.recordProgress(ctx, p, lsn),
        }),
      ),
    },
    {
      id: 'peer-slots',
      title: `Drop the members' slots for ${x}`,
      actions: peers.flatMap(p => [
        dropSlotAction(p, edge(p, x), {timeoutMs: input.waitTimeoutMs, graceMs: input.graceMs}),
        dropSyncSlotsAction(p, x, {members: peers}, {timeoutMs: input.waitTimeoutMs}),
      ]),
    },
  ]
  if (join.feedSlot && join.source && peers.includes(join.source)) {
    steps.push({id: 'feed-slot', title: `Drop the physical slot that fed ${x}`, actions: [dropPhysicalSlotAction(join.source, join.feedSlot, input.waitTimeoutMs)]})
  }
  return steps.filter(s => s.actions.length > 0)
}
