/**
 * Pausing a node's inbound subscriptions for a join (add-node, both strategies): what the
 * journal keeps about a pause, waiting until the disabled subscriptions' workers are gone, and
 * re-enabling them.
 *
 * Journal values (operation `add-node:<X>`):
 *   pausedSubscriptions  PausedSub[]   written BEFORE the DISABLE, cleared once re-enabled;
 *                                      `mmlite status` shows these links as paused on purpose
 *                                      (src/cluster/status.ts, pausedSubscriptions()), and a
 *                                      later run knows what to re-enable
 *   pauses               PauseRecord[] every pause, finished or interrupted (the command's report)
 *
 * When to pause and resume stays with each strategy: the copy strategy resumes right after its
 * exported snapshot, and waits for the workers to finish their transaction; the standby
 * strategy keeps the pause until X is promoted (X would replay the ENABLE) and terminates
 * workers that do not exit.
 */
import type {NodeConn} from '../db/node.js'
import {pollUntil} from '../util/poll.js'
import {resumeSubscriptionSql, SUBSCRIPTION_WORKERS_SQL} from './mesh.js'

/** One subscription a run disabled on purpose (journal `pausedSubscriptions`). */
export interface PausedSub {
  node: string
  subscription: string
  /** when the pause began (ISO time) */
  since: string
}

/** One pause of a node's inbound subscriptions (journal `pauses`). */
export interface PauseRecord {
  node: string
  subscriptions: string[]
  startedAt: string
  /** how long they were disabled; null when a run died while they were paused */
  ms: number | null
  /** set when a later run (or the failing run's cleanup) re-enabled them: how long they had stayed paused */
  recoveredAfterMs?: number
}

interface WorkersRow {
  subname: string
  enabled: boolean
  workers: number
}

async function workersOf(conn: NodeConn, subs: string[]): Promise<Map<string, WorkersRow>> {
  const rows = await conn.query<WorkersRow & Record<string, unknown>>(SUBSCRIPTION_WORKERS_SQL, [subs])
  return new Map(rows.map(r => [r.subname, r]))
}

/**
 * Poll until none of `subs` on `conn` has a running worker (apply, parallel apply, table sync);
 * a subscription that does not exist has none. `onBusy` gets, on each poll that still finds
 * some, those subscriptions (in the order of `subs`).
 */
export async function waitWorkersGone(
  conn: NodeConn,
  subs: string[],
  opts: {timeoutMs: number; what: string; maxIntervalMs: number; onBusy?: (busy: string[]) => Promise<void> | void},
): Promise<void> {
  await pollUntil(
    async () => {
      const rows = await workersOf(conn, subs)
      const busy = subs.filter(s => (rows.get(s)?.workers ?? 0) > 0)
      if (busy.length === 0) return true
      await opts.onBusy?.(busy)
      return false
    },
    {timeoutMs: opts.timeoutMs, what: opts.what, maxIntervalMs: opts.maxIntervalMs},
  )
}

/** ENABLE those of `subs` that exist on `conn` and are disabled. */
export async function enableDisabled(conn: NodeConn, subs: string[]): Promise<void> {
  if (subs.length === 0) return
  const rows = await workersOf(conn, subs)
  for (const s of subs) if (rows.get(s) && !rows.get(s)!.enabled) await conn.query(resumeSubscriptionSql(s))
}
