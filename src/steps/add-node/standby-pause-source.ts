/**
 * add-node --strategy standby, step `pause-source` (2): S's inbound subscriptions P→S are
 * disabled (journaled first as `pausedSubscriptions`, which `status` shows, and which a run
 * killed right after the DISABLE needs to re-enable them) and their workers gone (terminated
 * after a grace period): from here S's replication origins are static. Done once X is out of
 * recovery (the pause has done its job). See add-node-standby.ts for why.
 */
import type {Step, StepContext} from '../../engine/types.js'
import type {AddNodeContext} from '../add-node-context.js'
import {pauseSubscriptionSql} from '../mesh.js'
import {waitWorkersGone} from '../pause.js'
import {J, inRecovery, subs, terminateWorkersSql, type StandbyNames, type StandbyValues} from './standby-common.js'

const WORKER_GRACE_MS = 10_000

export function pauseSourceStep(ctx: AddNodeContext, n: StandbyNames): Step {
  const {s, x} = n
  const timeoutMs = ctx.timeoutMs
  const jget = <T>(sctx: StepContext, k: string) => sctx.journal.get<T>(k)
  const pauseState = async (sctx: StepContext): Promise<boolean> => {
    if (!(await inRecovery(sctx, x))) return true // promoted: the pause has done its job
    const recorded = new Set((jget<Array<{subscription: string}>>(sctx, J.paused) ?? []).map(p => p.subscription))
    const rows = await subs(sctx, s, n.inbound.map(i => i.sub))
    return n.inbound.every(i => recorded.has(i.sub) && rows.get(i.sub) && !rows.get(i.sub)!.enabled && rows.get(i.sub)!.workers === 0)
  }
  return {
    id: 'pause-source',
    title: `Pause ${s}'s inbound replication (its subscriptions reach ${x} disabled)`,
    actions: [
      {
        node: s,
        label: `disable ${n.inbound.map(i => i.sub).join(', ')} and wait for their workers to exit`,
        sql: n.inbound.map(i => pauseSubscriptionSql(i.sub)),
        check: pauseState,
        run: async sctx => {
          if (!(await inRecovery(sctx, x))) return
          const c = sctx.cluster.node(s)
          const before = await subs(sctx, s, n.inbound.map(i => i.sub))
          const toDisable = n.inbound.filter(i => before.get(i.sub)?.enabled)
          const recorded = jget<StandbyValues['pausedSubscriptions']>(sctx, J.paused) ?? []
          if (toDisable.length > 0 || recorded.length === 0) {
            // recorded BEFORE the DISABLE: `status` shows the pause, and a run killed right
            // after it still knows what to re-enable
            const since = recorded[0]?.since ?? new Date().toISOString()
            await sctx.journal.set(J.paused, n.inbound.map(i => ({node: s, subscription: i.sub, since})))
            // a new pause needs a new replay target (an older one may precede its DISABLE)
            if (toDisable.length > 0) await sctx.journal.set(J.replayTarget, undefined)
          }
          for (const i of toDisable) await c.query(pauseSubscriptionSql(i.sub))
          const t0 = Date.now()
          const terminated = new Set<string>()
          await waitWorkersGone(c, n.inbound.map(i => i.sub), {
            timeoutMs,
            what: `the apply workers of ${s} to exit`,
            maxIntervalMs: 200,
            onBusy: async busy => {
              for (const sub of busy) {
                if (Date.now() - t0 >= WORKER_GRACE_MS && !terminated.has(sub)) {
                  sctx.progress(`${s}: workers of ${sub} still running; terminating them`)
                  await c.query(terminateWorkersSql(sub))
                  terminated.add(sub)
                }
              }
              sctx.progress(`${s}: waiting for the workers of ${busy.join(', ')} to exit`)
            },
          })
          // fault injection for the tests: keep the pause a while before the next step
          const hold = Number(process.env.MMLITE_FAULT_HOLD_AFTER_PAUSE_MS ?? 0)
          if (hold > 0) await new Promise(res => setTimeout(res, hold))
        },
      },
    ],
  }
}
