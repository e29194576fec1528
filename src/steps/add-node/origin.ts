/**
 * Setting the replication origin of a new node's inbound subscription, once (issue #7.3).
 *
 * Both add-node strategies start a subscription into X at a position of their choosing by
 * creating it disabled and advancing its origin `pg_<oid>` (copy: P→X to R_P; standby: S→X
 * to P_X) before the first ENABLE. An origin is the END lsn of the last remote commit the
 * subscription applied; the walsender starts at max(origin, slot's confirmed_flush). Setting
 * it again after the subscription has applied something moves it backwards: whatever was
 * applied but not yet confirmed to the publisher (the apply worker reports a commit flushed
 * only after its asynchronous local commit reached disk) is then sent and applied again —
 * duplicate inserts, older updates over newer ones — and the origin no longer says what was
 * applied. A re-run finds the subscription disabled in exactly this state when it was
 * disabled after the run that enabled it died (by hand, or by disable_on_error).
 *
 * Rule: the origin is set only while the subscription has never applied anything (its
 * progress is still 0/0), or is already exactly the value we set; the value is recorded in
 * the journal BEFORE the advance, so a later run can tell "applied since we set it" (progress
 * past the recorded value: keep it) from "applied without our start position" (refuse: X may
 * already hold transactions twice).
 */
import type {NodeConn} from '../../db/node.js'
import {compareLsn} from '../../db/lsn.js'
import {MmliteError, ExitCode} from '../../errors.js'
import {originAdvanceSql, SUBSCRIPTION_ORIGIN_SQL} from '../mesh.js'
import {waitWorkersGone} from '../pause.js'

export type OriginDecision = {kind: 'set'} | {kind: 'keep'; why: string} | {kind: 'refuse'; why: string}

/**
 * What to do with the origin of a disabled subscription whose progress is `current`, when the
 * procedure wants it at `target` and the journal says it set `recorded` (undefined: never).
 */
export function originDecision(current: string, target: string, recorded: string | undefined): OriginDecision {
  if (compareLsn(current, target) === 0) return {kind: 'keep', why: `already at ${target}`}
  if (compareLsn(current, '0/0') === 0) return {kind: 'set'}
  if (recorded !== undefined && compareLsn(recorded, target) === 0 && compareLsn(current, target) > 0)
    return {kind: 'keep', why: `applied up to ${current} since it was set to ${target}; an origin never moves backwards`}
  return {
    kind: 'refuse',
    why:
      recorded === undefined || compareLsn(recorded, target) !== 0
        ? `it has applied transactions up to ${current} although mmlite never set its start position ${target}`
        : `its progress ${current} is before the start position ${target} mmlite set`,
  }
}

/**
 * Set the origin of the disabled subscription `sub` on `node` to `target` if, and only if,
 * originDecision allows it; `recorded` / `record` keep the value in the journal (record is
 * called before the advance). Returns the decision taken.
 */
export async function setOriginOnce(
  conn: NodeConn,
  node: string,
  sub: string,
  target: string,
  opts: {
    recorded: string | undefined
    record: (lsn: string) => Promise<void>
    timeoutMs: number
    /** checks that must hold before the origin is set (not when it is kept); throw to refuse */
    beforeSet?: () => Promise<void>
  },
): Promise<OriginDecision> {
  // a worker that is still exiting (DISABLE is asynchronous) could apply one more transaction
  await waitWorkersGone(conn, [sub], {timeoutMs: opts.timeoutMs, what: `the workers of ${sub} on ${node} to exit`, maxIntervalMs: 200})
  const row = (await conn.query<{subname: string; enabled: boolean; remote_lsn: string}>(SUBSCRIPTION_ORIGIN_SQL, [[sub]]))[0]
  if (!row) throw new MmliteError(`internal: subscription ${sub} is missing on ${node}`, {code: ExitCode.Failed})
  if (row.enabled) throw new MmliteError(`internal: subscription ${sub} on ${node} is enabled; its origin is only set while it is disabled`, {code: ExitCode.Failed})
  const d = originDecision(row.remote_lsn, target, opts.recorded)
  if (d.kind === 'refuse') {
    throw new MmliteError(`node ${node}: refusing to set the origin of subscription ${sub} to ${target}: ${d.why}`, {
      code: ExitCode.Failed,
      suggestions: [
        `Something enabled ${sub} before add-node had set where it starts, so ${node} may hold some transactions twice: remove ${node} (\`mmlite remove-node ${node}\`), empty or rebuild it, and add it again.`,
      ],
    })
  }
  if (d.kind === 'set') {
    await opts.beforeSet?.()
    if (opts.recorded === undefined || compareLsn(opts.recorded, target) !== 0) await opts.record(target)
    await conn.query(originAdvanceSql(sub, target))
  }
  return d
}
