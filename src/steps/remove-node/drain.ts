/** remove-node step `drain`: every peer has received everything X committed. */
import {edgeName} from '../../cluster/naming.js'
import type {Action, Step, StepContext} from '../../engine/types.js'
import {MmliteError, ExitCode} from '../../errors.js'
import {formatBytes} from '../../util/text.js'
import {sleep} from '../../util/poll.js'
import {subscriptionExists} from '../mesh.js'
import {STEP, type RemoveStepsContext} from './context.js'

export class DrainTimeoutError extends MmliteError {}

const DRAIN_SQL = `SELECT slot_name, active, confirmed_flush_lsn::text AS confirmed,
       pg_wal_lsn_diff($1::pg_lsn, confirmed_flush_lsn)::bigint::text AS behind
  FROM pg_replication_slots WHERE slot_name = ANY($2::text[])`

/**
 * Wait until every peer that still subscribes to X has confirmed X's current WAL position.
 * Done (nothing to wait for) once no peer subscribes to X any more: then the subscriptions
 * from X are already being dropped and there is nothing left to deliver.
 */
function drainAction({cfg, input, rec}: RemoveStepsContext): Action {
  const {x, peers} = input
  const slotOf = (p: string) => edgeName(cfg.cluster, x, p)
  const pendingPeers = async (ctx: StepContext) => {
    const subscribed = await Promise.all(peers.map(p => subscriptionExists(ctx, p, slotOf(p))))
    return peers.filter((_, i) => subscribed[i])
  }
  return {
    node: x,
    label: `wait until ${peers.join(', ')} received everything ${x} committed`,
    sql: [],
    check: async ctx => (await pendingPeers(ctx)).length === 0,
    run: async ctx => {
      const pending = await pendingPeers(ctx)
      if (!pending.length) return
      const c = ctx.cluster.node(x)
      const target = (await c.one<{lsn: string}>('SELECT pg_current_wal_lsn()::text AS lsn'))!.lsn
      await rec.set(ctx, 'drainLsn', target)
      const deadline = Date.now() + input.drainTimeoutMs
      let interval = 50
      for (;;) {
        const rows = await c.query<{slot_name: string; active: boolean; confirmed: string | null; behind: string | null}>(DRAIN_SQL, [
          target,
          pending.map(slotOf),
        ])
        const lagging: string[] = []
        for (const p of pending) {
          const r = rows.find(s => s.slot_name === slotOf(p))
          if (!r) {
            throw new DrainTimeoutError(`cannot drain ${x}: its slot ${slotOf(p)} for ${p} is missing, so ${p} cannot receive what ${x} committed; nothing was removed in this run`, {
              code: ExitCode.Failed,
              suggestions: [`Check the link ${x}→${p} with \`mmlite status\`. To remove ${x} anyway (${p} may lack some of ${x}'s changes), re-run with --force.`],
            })
          }
          if (r.confirmed === null || Number(r.behind) > 0) {
            lagging.push(
              `${p}: ${r.confirmed === null ? 'nothing confirmed yet' : `${formatBytes(Number(r.behind))} behind (confirmed ${r.confirmed})`}, slot ${slotOf(p)} ${r.active ? 'active' : 'INACTIVE (no walsender: is the subscription on ' + p + ' enabled and its worker running?)'}`,
            )
          }
        }
        if (!lagging.length) return
        ctx.progress(`draining ${x} up to ${target}: ${lagging.join('; ')}`)
        if (Date.now() >= deadline) {
          throw new DrainTimeoutError(
            `${x}'s changes did not reach every peer within ${Math.round(input.drainTimeoutMs / 100) / 10} s (target ${target}); nothing was removed in this run`,
            {
              code: ExitCode.Timeout,
              details: lagging,
              suggestions: [
                `Check the links from ${x} with \`mmlite status\`, then re-run (perhaps with a longer --drain-timeout).`,
                `To remove ${x} without waiting (the lagging peers then lack some of ${x}'s changes), re-run with --force.`,
              ],
            },
          )
        }
        await sleep(Math.min(interval, Math.max(0, deadline - Date.now())))
        interval = Math.min(500, Math.ceil(interval * 1.5))
      }
    },
  }
}

export function drainStep(sc: RemoveStepsContext): Step {
  return {id: STEP.drain, title: `Wait until every peer has received everything ${sc.input.x} committed`, actions: [drainAction(sc)]}
}
