/**
 * remove-node: the table-synchronization slots that served the removed node's links.
 *
 * A subscription's tablesync workers create permanent slots on the publisher named
 * `pg_<suboid>_sync_<relid>_<subscriber system identifier>` (tablesync.c,
 * ReplicationSlotNameForTablesync) and drop them when the table is synchronized. If the
 * subscriber dies during an initial copy, or its subscription is dropped with
 * slot_name = NONE (as remove-node does, never contacting the other end), they stay on the
 * publisher and keep WAL forever. So, on each node that published to the removed node X:
 * every such slot whose system identifier is X's goes. When X's identifier is unknown (X is
 * not contacted and no journal recorded it), the slots whose identifier belongs to no
 * remaining node of the cluster go (they can only have served a node that is no longer a
 * member).
 */
import {escapeLiteral as ql} from '../../db/quote.js'
import type {Action, StepContext} from '../../engine/types.js'
import {dropSlotAction} from '../mesh.js'

export const SYNC_SLOT_RE = /^pg_(\d+)_sync_\d+_(\d+)$/

const SYNC_SLOTS_SQL = `SELECT slot_name::pg_catalog.text AS n FROM pg_catalog.pg_replication_slots
 WHERE slot_name::pg_catalog.text ~ '^pg_[0-9]+_sync_[0-9]+_[0-9]+$'::pg_catalog.text
   AND database = pg_catalog.current_database()`

export const SYSID_SQL = `SELECT system_identifier::pg_catalog.text AS id FROM pg_catalog.pg_control_system()`

export interface SyncSlotTarget {
  /**
   * the subscriptions whose slots go, when known: subscriber system identifier and subscription
   * oid (a node joined as a standby clone shares its source's system identifier: the oid
   * tells them apart)
   */
  subs?: (ctx: StepContext) => Promise<Array<{sysid: string; oid: string}> | undefined>
  /** else: the nodes whose slots stay (their identifiers are read); every other subscriber's go */
  members: string[]
}

/** Which of `names` go: those of the subscriptions `subs`, else those of subscribers that are no member (pure). */
export function syncSlotsOf(names: string[], x: {subs?: Array<{sysid: string; oid: string}>; memberSysids: string[]}): string[] {
  return names.filter(n => {
    const m = SYNC_SLOT_RE.exec(n)
    if (!m) return false
    return x.subs ? x.subs.some(s => s.oid === m[1] && s.sysid === m[2]) : !x.memberSysids.includes(m[2])
  })
}

/** The system identifier of `node`. */
export async function sysidOf(ctx: StepContext, node: string): Promise<string> {
  return (await ctx.cluster.node(node).one<{id: string}>(SYSID_SQL))!.id
}

export function dropSyncSlotsAction(node: string, x: string, target: SyncSlotTarget, opts: {timeoutMs: number; graceMs?: number}): Action {
  const find = async (ctx: StepContext): Promise<string[]> => {
    const names = (await ctx.cluster.node(node).query<{n: string}>(SYNC_SLOTS_SQL)).map(r => r.n)
    if (names.length === 0) return []
    const subs = await target.subs?.(ctx)
    const memberSysids = subs ? [] : await Promise.all(target.members.map(m => sysidOf(ctx, m)))
    return syncSlotsOf(names, {subs, memberSysids})
  }
  return {
    node,
    label: `drop the table-synchronization slots that served ${x}`,
    sql: [`SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots WHERE slot_name::pg_catalog.text ~ ${ql(`^pg_[0-9]+_sync_[0-9]+_<system identifier of the subscriber ${x}>$`)}`],
    check: async ctx => (await find(ctx)).length === 0,
    run: async ctx => {
      for (const slot of await find(ctx)) {
        ctx.progress(`${node}: dropping ${slot} (table synchronization for ${x})`)
        await dropSlotAction(node, slot, {timeoutMs: opts.timeoutMs, graceMs: opts.graceMs ?? 0}).run(ctx)
      }
    },
  }
}
