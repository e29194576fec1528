/** `doctor --fix`: drop orphan slots (they keep WAL forever) and reset counters of links that apply again. */
import {escapeLiteral} from '../../db/quote.js'
import {MmliteError, ExitCode} from '../../errors.js'
import type {Action, Step} from '../../engine/types.js'
import {dropSlotSql} from './checks/orphans.js'
import {resetCountersSql} from './checks/subscriptions.js'
import type {Finding} from './types.js'

function dropOrphanSlot(node: string, slot: string): Action {
  const sql = dropSlotSql(slot)
  return {
    node,
    label: `drop orphan slot ${slot}`,
    sql: [sql],
    async check(ctx) {
      const r = await ctx.cluster.node(node).one(`SELECT 1 AS x FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = ${escapeLiteral(slot)}::pg_catalog.name`)
      return !r
    },
    async run(ctx) {
      const r = await ctx.cluster.node(node).one<{active: boolean}>(`SELECT s.active FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = ${escapeLiteral(slot)}::pg_catalog.name`)
      if (r?.active) {
        throw new MmliteError(`slot ${slot} on ${node} became active since doctor looked: it is in use, not dropped`, {code: ExitCode.Failed, suggestions: ['Run mmlite doctor again to see who uses it.']})
      }
      await ctx.cluster.node(node).query(sql)
    },
  }
}

function resetCounters(node: string, subscription: string): Action {
  const find = `SELECT s.oid::pg_catalog.int8 AS oid FROM pg_catalog.pg_subscription s WHERE s.subname = ${escapeLiteral(subscription)}::pg_catalog.name
                   AND s.subdbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())`
  let oid: number | undefined
  return {
    node,
    label: `reset the error/conflict counters of ${subscription}`,
    sql: [`SELECT pg_catalog.pg_stat_reset_subscription_stats(s.oid) FROM pg_catalog.pg_subscription s WHERE s.subname = ${escapeLiteral(subscription)};`],
    async check(ctx) {
      const r = await ctx.cluster.node(node).one<{oid: string}>(find)
      if (!r) return true
      oid = Number(r.oid)
      const z = await ctx.cluster.node(node).one<{n: string}>(
        `SELECT (SELECT pg_catalog.sum((e.value #>> '{}')::pg_catalog.numeric) FROM pg_catalog.jsonb_each(pg_catalog.to_jsonb(ss)) e
                  WHERE e.key IN ('apply_error_count', 'sync_error_count') OR pg_catalog.starts_with(e.key, 'confl_'))::pg_catalog.int8 AS n
           FROM pg_catalog.pg_stat_subscription_stats ss WHERE ss.subid = ${oid}::pg_catalog.oid`,
      )
      return !z || Number(z.n) === 0
    },
    async run(ctx) {
      if (oid !== undefined) await ctx.cluster.node(node).query(resetCountersSql(oid))
    },
  }
}

export function dropOrphanSlotsStep(findings: Finding[]): Step | undefined {
  const fs = findings.filter(f => f.autoFix === 'drop-orphan-slot' && f.node)
  if (!fs.length) return undefined
  return {id: 'drop-orphan-slots', title: 'Drop orphan slots (they keep WAL forever)', actions: fs.map(f => dropOrphanSlot(f.node!, f.object.replace(/^slot /, '')))}
}

export function resetCountersStep(findings: Finding[]): Step | undefined {
  const fs = findings.filter(f => f.autoFix === 'reset-counters' && f.node)
  if (!fs.length) return undefined
  return {id: 'reset-counters', title: 'Reset the error and conflict counters of links that apply again', actions: fs.map(f => resetCounters(f.node!, f.object.replace(/^subscription /, '')))}
}
