/** remove-node steps that take X's links apart: subscriptions, slots, publication, the file. */
import path from 'node:path'
import {editConfigNodes, loadConfig} from '../../config/config.js'
import type {Action, Step, StepContext} from '../../engine/types.js'
import {dropPublicationAction, dropSlotAction, dropSubscriptionDetachedAction} from '../mesh.js'
import {STEP, type RemoveStepsContext} from './context.js'
import {dropSyncSlotsAction, sysidOf} from './sync-slots.js'

/** System identifier of `node` and oid of its subscription `sub` (which names its tablesync slots). */
async function subscriptionIdentity(ctx: StepContext, node: string, sub: string): Promise<{sysid: string; oid: string}> {
  const r = await ctx.cluster.node(node).one<{oid: string}>(
    'SELECT oid::pg_catalog.text AS oid FROM pg_catalog.pg_subscription WHERE subname = $1::pg_catalog.name AND subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())',
    [sub],
  )
  return {sysid: await sysidOf(ctx, node), oid: r?.oid ?? '0'}
}

/** the recorded identities of the subscriptions on `who` (their tablesync slots), if any */
function recorded(ctx: StepContext, key: 'subsOnX' | 'subsOnPeers', who: string[]) {
  const m = ctx.journal.get<Record<string, {sysid: string; oid: string}>>(key) ?? {}
  const subs = who.map(n => m[n]).filter(Boolean)
  return subs.length ? subs : undefined
}

export function peerSubscriptionsStep({input: {x, peers}, rec, wait, graceMs, edge}: RemoveStepsContext): Step {
  return {
    id: STEP.peerSubscriptions,
    title: `Drop the peers' subscriptions from ${x} (without contacting ${x})`,
    actions: peers.map(p =>
      dropSubscriptionDetachedAction(p, edge(x, p), {
        timeoutMs: wait,
        graceMs,
        label: `drop subscription ${edge(x, p)} from ${x} (origin progress recorded first)`,
        beforeDrop: async (ctx, lsn) => {
          await rec.setFor(ctx, 'originProgress', p, lsn)
          await rec.setFor(ctx, 'subsOnPeers', p, await subscriptionIdentity(ctx, p, edge(x, p)))
        },
      }),
    ),
  }
}

export function ownSubscriptionsStep({input: {x, peers}, rec, wait, graceMs, edge}: RemoveStepsContext): Step {
  return {
    id: STEP.ownSubscriptions,
    title: `Drop ${x}'s subscriptions from the peers`,
    actions: peers.map(p =>
      dropSubscriptionDetachedAction(x, edge(p, x), {
        timeoutMs: wait,
        graceMs,
        beforeDrop: async ctx => rec.setFor(ctx, 'subsOnX', p, await subscriptionIdentity(ctx, x, edge(p, x))),
      }),
    ),
  }
}

/** The peers' slots for X, and the table-synchronization slots that served X's subscriptions. */
export function peerSlotsStep({input: {x, peers, force}, rec, wait, graceMs, edge}: RemoveStepsContext): Step {
  return {
    id: STEP.peerSlots,
    title: `Drop the peers' slots for ${x}`,
    actions: [
      ...peers.map(p =>
        dropSlotAction(p, edge(p, x), {
          timeoutMs: wait,
          graceMs,
          label: `drop slot ${edge(p, x)} for ${x} (retained WAL recorded first)`,
          beforeDrop: (ctx, bytes) => rec.setFor(ctx, 'retainedBytes', p, bytes),
        }),
      ),
      ...peers.map(p => dropSyncSlotsAction(p, x, {members: peers, subs: force ? undefined : async ctx => recorded(ctx, 'subsOnX', [p])}, {timeoutMs: wait})),
    ],
  }
}

export function ownSlotsStep({input: {x, peers}, wait, graceMs, edge}: RemoveStepsContext): Step {
  return {
    id: STEP.ownSlots,
    title: `Drop ${x}'s slots for the peers`,
    actions: [
      ...peers.map(p => dropSlotAction(x, edge(x, p), {timeoutMs: wait, graceMs})),
      dropSyncSlotsAction(x, peers.join(', '), {members: [], subs: async ctx => recorded(ctx, 'subsOnPeers', peers) ?? []}, {timeoutMs: wait}),
    ],
  }
}

export function ownPublicationStep({cfg, input: {x}}: RemoveStepsContext): Step {
  return {id: STEP.ownPublication, title: `Drop ${x}'s publication`, actions: [dropPublicationAction(cfg, x)]}
}

/** The file is local: the action's "node" is the file's name (it touches no server). */
function configAction(file: string, x: string): Action {
  const listed = () => loadConfig(file).nodes.some(n => n.name === x)
  return {
    node: path.basename(file),
    label: `remove ${x} from ${file}`,
    sql: [],
    check: async () => !listed(),
    run: async () => {
      if (listed()) await editConfigNodes(file, {remove: x})
    },
  }
}

export function configStep({cfg, input}: RemoveStepsContext): Step {
  return {id: STEP.config, title: `Remove ${input.x} from mmlite.yaml`, actions: [configAction(input.configFile ?? cfg.file, input.x)]}
}
