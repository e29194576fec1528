/**
 * Adding tables to a running mesh requires two-phase commit (checked before anything changes).
 *
 * The activation (./activate.ts) commits one transaction per node: each publishes the new
 * tables on its node. Committed one-phase, a kill between two nodes' commits would leave a
 * table published by some nodes only, and no re-run could finish that exactly: the other
 * nodes' writes to it since were never sent, and their deletes left no trace to merge. With
 * PREPARE TRANSACTION on every node first, the nodes that have not committed keep their
 * transaction (and its lock) and the re-run commits it (./prepared.ts). So every node must be
 * able to prepare one more transaction: max_prepared_transactions >= 1 (a restart setting,
 * default 0), not all of them held by other prepared transactions.
 */
import type {Cluster} from '../../cluster/cluster.js'
import {preflightError, type Problem} from '../preflight.js'
import {preparedCapacity, type Leftover, type PreparedCapacity} from './prepared.js'

export const TWO_PHASE_WHY = "the nodes' commits must be two-phase: a kill between one-phase commits would leave the tables published by some nodes only, which no re-run can finish"

/**
 * Pure: one problem per node that cannot prepare the activation's transaction. `own` counts,
 * per node, the prepared transactions of a killed activation that the run finishes first
 * (their slots become free again).
 */
export function twoPhaseProblems(what: string, caps: Map<string, PreparedCapacity>, own: Map<string, number> = new Map()): Problem[] {
  const out: Problem[] = []
  for (const [node, c] of caps) {
    const restart = `then restart PostgreSQL on ${node} (a restart setting) and re-run \`mmlite init\``
    if (c.max === 0) {
      out.push({
        node,
        check: 'two-phase',
        message: `max_prepared_transactions = 0; adding ${what} needs it: ${TWO_PHASE_WHY}`,
        fix: `ALTER SYSTEM SET max_prepared_transactions = 10; ${restart}`,
      })
    } else if (c.max - c.held + (own.get(node) ?? 0) < 1) {
      out.push({
        node,
        check: 'two-phase',
        message: `all ${c.max} prepared-transaction slots (max_prepared_transactions) are held by other prepared transactions; adding ${what} needs one: ${TWO_PHASE_WHY}`,
        fix: `Finish them (SELECT gid, database, prepared FROM pg_catalog.pg_prepared_xacts; then COMMIT PREPARED or ROLLBACK PREPARED '<gid>' in its database), or raise it: ALTER SYSTEM SET max_prepared_transactions = ${c.max + 10}; ${restart}`,
      })
    }
  }
  return out
}

/** Refuses (exit 11, nothing changed) unless every node can prepare the activation's transaction. */
export async function requireTwoPhase(cluster: Cluster, nodes: string[], what: string, left: Leftover[]): Promise<void> {
  const own = new Map<string, number>()
  for (const l of left) for (const n of l.holders) own.set(n, (own.get(n) ?? 0) + 1)
  const problems = twoPhaseProblems(what, await preparedCapacity(cluster, nodes), own)
  if (problems.length) throw preflightError(problems)
}
