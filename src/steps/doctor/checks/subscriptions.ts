/**
 * Every link of the mesh: its slot on the publisher and its subscription on the subscriber
 * exist, the subscription is enabled and applying; apply/sync errors and (PG 18) conflicts
 * counted since the counters were last reset, with the reset once they are handled.
 */
import {edgeName} from '../../../cluster/naming.js'
import type {DoctorInput, Finding, NodeFacts} from '../types.js'

/** Nodes that an unfinished mmlite operation may legitimately have paused or half-built. */
export function busyNodes(input: DoctorInput): Set<string> {
  const out = new Set<string>()
  for (const u of input.unfinished) {
    const [, node] = u.key.split(':')
    if (node) out.add(node)
    if (u.command === 'init' || u.command.startsWith('add-node')) input.cfg.nodes.forEach(n => out.add(n.name))
  }
  return out
}

export function resetCountersSql(oid: number): string {
  return `SELECT pg_catalog.pg_stat_reset_subscription_stats(${oid}::pg_catalog.oid);`
}

export function checkSubscriptions(input: DoctorInput): Finding[] {
  const out: Finding[] = []
  const facts = new Map<string, NodeFacts>(input.nodes.filter(n => n.facts).map(n => [n.name, n.facts!]))
  const busy = busyNodes(input)
  for (const a of input.cfg.nodes) {
    for (const b of input.cfg.nodes) {
      if (a.name === b.name) continue
      const name = edgeName(input.cfg.cluster, a.name, b.name)
      const pub = facts.get(a.name)
      const sub = facts.get(b.name)
      const link = `${a.name}→${b.name}`
      const sev = busy.has(a.name) || busy.has(b.name) ? 'info' : 'critical'
      if (pub && !pub.slots.some(s => s.slot_name === name)) {
        out.push({check: 'links', severity: sev, node: a.name, object: `slot ${name}`, message: `link ${link}: slot ${name} is missing on ${a.name}${sev === 'info' ? ' (an unfinished mmlite operation is under way)' : ''}`, fix: sev === 'info' ? 'Re-run the unfinished command (mmlite status lists it).' : `The link cannot be repaired in place: mmlite remove-node ${b.name} --force, then mmlite add-node ${b.name}.`})
      }
      if (!sub) continue
      const s = sub.subscriptions.find(x => x.subname === name)
      if (!s) {
        out.push({check: 'links', severity: sev, node: b.name, object: `subscription ${name}`, message: `link ${link}: subscription ${name} is missing on ${b.name}`, fix: sev === 'info' ? 'Re-run the unfinished command (mmlite status lists it).' : `mmlite init (it creates what is missing), or mmlite remove-node ${b.name} --force then add-node.`})
        continue
      }
      if (!s.enabled) {
        out.push({
          check: 'links',
          severity: sev,
          node: b.name,
          object: `subscription ${name}`,
          message: `link ${link}: subscription ${name} is disabled on ${b.name}${sev === 'info' ? ' (paused by an unfinished mmlite operation)' : ': nothing from ' + a.name + ' is applied'}`,
          fix: sev === 'info' ? 'Re-run the unfinished command (mmlite status lists it).' : `If it was disabled after an apply error: mmlite skip-tx --from ${a.name} --to ${b.name}; otherwise ALTER SUBSCRIPTION ${name} ENABLE;`,
        })
      }
      const errors = (s.apply_error_count ?? 0) + (s.sync_error_count ?? 0)
      const conflicts = Object.entries(s.conflicts ?? {}).filter(([, v]) => v > 0)
      if (errors > 0 || conflicts.length > 0) {
        const what = [
          errors > 0 ? `${s.apply_error_count ?? 0} apply and ${s.sync_error_count ?? 0} sync errors` : '',
          conflicts.length ? `conflicts ${conflicts.map(([k, v]) => `${k.replace(/^confl_/, '')}=${v}`).join(', ')}` : '',
        ].filter(Boolean).join('; ')
        const healthy = s.enabled && s.worker_running
        out.push({
          check: 'counters',
          severity: 'warning',
          node: b.name,
          object: `subscription ${name}`,
          message: `link ${link}: ${what} counted since the counters were last reset${healthy ? ' (the link applies now)' : ''}; conflicts may have left rows different (mmlite verify finds them)`,
          fix: `Once handled: ${resetCountersSql(s.oid)}  -- on ${b.name}${healthy ? ' (mmlite doctor --fix does it)' : ''}`,
          ...(healthy ? {autoFix: 'reset-counters' as const} : {}),
        })
      }
    }
  }
  return out
}
