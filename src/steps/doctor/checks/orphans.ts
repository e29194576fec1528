/**
 * Objects that belong to no node of mmlite.yaml: slots and subscriptions named like this
 * cluster's that no configured link uses, tablesync slots (pg_<subid>_sync_<relid>_<sysid>)
 * whose subscription no longer copies that table, origins of dropped subscriptions; and
 * operations the journal says are unfinished. Orphan slots keep WAL forever.
 */
import {edgeName} from '../../../cluster/naming.js'
import {escapeLiteral, escapeIdentifier} from '../../../db/quote.js'
import type {DoctorInput, Finding, NodeFacts} from '../types.js'

const TABLESYNC_RE = /^pg_(\d+)_sync_(\d+)_(\d+)$/

export function dropSlotSql(slot: string): string {
  return `SELECT pg_catalog.pg_drop_replication_slot(${escapeLiteral(slot)}::pg_catalog.name);`
}

/** Names of nodes that unfinished operations are adding or removing (their objects are not orphans yet). */
function nodesInFlight(input: DoctorInput): Set<string> {
  return new Set(input.unfinished.map(u => u.key.split(':')[1]).filter((x): x is string => Boolean(x)))
}

function expectedEdges(input: DoctorInput): Set<string> {
  const names = [...input.cfg.nodes.map(n => n.name), ...nodesInFlight(input)]
  const out = new Set<string>()
  for (const a of names) for (const b of names) if (a !== b) out.add(edgeName(input.cfg.cluster, a, b))
  return out
}

/** Is a tablesync slot still used: its subscriber (by system identifier) has that subscription syncing that table. */
function tablesyncInUse(facts: NodeFacts[], subid: number, relid: number, sysid: string): boolean | undefined {
  const owners = facts.filter(f => f.systemIdentifier === sysid)
  if (owners.length === 0) return undefined
  return owners.some(f => f.subscriptions.some(s => s.oid === subid && s.syncing_relids.includes(relid)))
}

export function checkOrphans(input: DoctorInput): Finding[] {
  const out: Finding[] = []
  const prefix = `${input.cfg.cluster}_`
  const expected = expectedEdges(input)
  const facts = input.nodes.filter(n => n.facts).map(n => n.facts!)
  const allReachable = input.nodes.every(n => n.reachable)
  for (const f of facts) {
    for (const s of f.slots) {
      const base = {check: 'orphans', node: f.name, object: `slot ${s.slot_name}`}
      const drop = s.active ? `SELECT pg_catalog.pg_terminate_backend(a.active_pid) FROM pg_catalog.pg_replication_slots a WHERE a.slot_name = ${escapeLiteral(s.slot_name)}; ${dropSlotSql(s.slot_name)}` : dropSlotSql(s.slot_name)
      if (s.slot_name.startsWith(prefix) && !expected.has(s.slot_name)) {
        out.push({...base, severity: 'warning', message: `slot ${s.slot_name} on ${f.name} is named like cluster "${input.cfg.cluster}" but serves no link of mmlite.yaml; it retains ${s.retained_bytes ?? 0} bytes of WAL and keeps more forever`, fix: drop, ...(s.active ? {} : {autoFix: 'drop-orphan-slot' as const})})
        continue
      }
      const m = TABLESYNC_RE.exec(s.slot_name)
      if (!m) continue
      const used = tablesyncInUse(facts, Number(m[1]), Number(m[2]), m[3])
      if (used) continue
      if (used === undefined && !allReachable) {
        out.push({...base, severity: 'info', message: `tablesync slot ${s.slot_name} on ${f.name}: its subscriber (system ${m[3]}) is not among the reachable nodes, so whether it is still copying cannot be told`, fix: `When no node copies a table any more: ${drop}`})
        continue
      }
      out.push({...base, severity: 'warning', message: `tablesync slot ${s.slot_name} on ${f.name} belongs to no table copy in progress (its subscription or node is gone); it keeps WAL forever`, fix: drop, ...(s.active ? {} : {autoFix: 'drop-orphan-slot' as const})})
    }
    for (const sub of f.subscriptions) {
      if (!sub.subname.startsWith(prefix) || expected.has(sub.subname)) continue
      const q = escapeIdentifier(sub.subname)
      out.push({check: 'orphans', severity: 'warning', node: f.name, object: `subscription ${sub.subname}`, message: `subscription ${sub.subname} on ${f.name} is named like cluster "${input.cfg.cluster}" but is no link of mmlite.yaml`, fix: `ALTER SUBSCRIPTION ${q} DISABLE; ALTER SUBSCRIPTION ${q} SET (slot_name = NONE); DROP SUBSCRIPTION ${q};  -- then drop its slot on the publisher (not done by --fix: it may still be someone's)`})
    }
    const subOrigins = new Set(f.subscriptions.map(s => `pg_${s.oid}`))
    for (const o of f.origins) {
      if (!/^pg_\d+$/.test(o) || subOrigins.has(o)) continue
      out.push({check: 'orphans', severity: 'info', node: f.name, object: `origin ${o}`, message: `replication origin ${o} on ${f.name} belongs to no subscription of any database there (left by a subscription that is gone)`, fix: `SELECT pg_catalog.pg_replication_origin_drop(${escapeLiteral(o)});`})
    }
  }
  for (const u of input.unfinished) {
    const node = u.key.split(':')[1]
    const how = u.command.startsWith('add-node') && node ? `Re-run it to finish it, or, to abandon the join: mmlite remove-node ${node}` : `Re-run \`mmlite ${u.command}\` with the same arguments to finish it.`
    out.push({check: 'journal', severity: 'warning', node: null, object: `operation ${u.key}`, message: `mmlite operation ${u.key} (${u.command}, started ${u.startedAt}) is unfinished: what it paused stays paused and what it created may hold WAL`, fix: how})
  }
  return out
}
