/**
 * add-node --strategy standby, step `source-subscription` (10): X's subscription S→X on slot
 * S→X, created disabled, its origin set to the promotion point P_X, then enabled. The
 * walsender starts at max(origin, confirmed_flush); confirmed_flush of the slot is its
 * consistent point C ≤ P_X (checked before the origin is set), so decoding starts at P_X:
 * exactly the S-commits X does not hold. The origin is set only while the subscription has
 * applied nothing (./origin.ts): a re-run that finds it disabled after it applied past P_X
 * keeps the origin and enables it again.
 */
import type {Step, StepContext} from '../../engine/types.js'
import type {AddNodeContext} from '../add-node-context.js'
import {createSubscriptionSql, resumeSubscriptionSql} from '../mesh.js'
import {parseLsn} from '../../db/lsn.js'
import {MmliteError} from '../../errors.js'
import {setOriginOnce} from './origin.js'
import {J, advanceOriginSql, slots, subs, type StandbyNames} from './standby-common.js'

export function sourceSubscriptionStep(ctx: AddNodeContext, n: StandbyNames): Step {
  const {s, x} = n
  const se = n.sourceEdge
  const timeoutMs = ctx.timeoutMs
  const v = (node: string) => ctx.versions.get(node)!
  const jget = <T>(sctx: StepContext, k: string) => sctx.journal.get<T>(k)
  return {
    id: 'source-subscription',
    title: `Subscribe ${x} to ${s} from where it was promoted`,
    actions: [
      {
        node: x,
        label: `subscription ${se.name} from ${s}, origin advanced to the promotion LSN`,
        sql: [
          createSubscriptionSql(ctx.full, se, {copyData: false, enabled: false, subscriberVersion: v(x)}, true),
          advanceOriginSql(se.name, '<promotion LSN>'),
          resumeSubscriptionSql(se.name),
        ],
        check: async sctx => {
          const r = (await subs(sctx, x, [se.name])).get(se.name)
          return Boolean(r?.enabled)
        },
        run: async sctx => {
          const c = sctx.cluster.node(x)
          const px = jget<string>(sctx, J.promotedLsn)
          if (!px) throw new MmliteError('internal: the promotion LSN was not recorded')
          let r = (await subs(sctx, x, [se.name])).get(se.name)
          if (!r) {
            await c.query(createSubscriptionSql(ctx.full, se, {copyData: false, enabled: false, subscriberVersion: v(x)}, false))
            r = (await subs(sctx, x, [se.name])).get(se.name)!
          }
          if (r.slot !== se.name) throw new MmliteError(`${x}: subscription ${se.name} uses slot ${r.slot ?? 'NONE'}, not ${se.name}`)
          if (r.enabled) return
          // only if it has never applied anything: a re-run may find it disabled after it
          // applied past P_X (by hand, disable_on_error), and an origin never moves back
          const originsSet = jget<Record<string, string>>(sctx, J.originsSet) ?? {}
          const d = await setOriginOnce(c, x, se.name, px, {
            recorded: originsSet[se.name],
            record: lsn => sctx.journal.set(J.originsSet, {...(jget<Record<string, string>>(sctx, J.originsSet) ?? {}), [se.name]: lsn}),
            timeoutMs,
            // before the first start: the slot must still be at its consistent point, at or before P_X
            beforeSet: async () => {
              const sl = (await slots(sctx, s, [se.name])).get(se.name)
              if (!sl?.confirmed_flush) throw new MmliteError(`internal: slot ${se.name} is missing on ${s}`)
              if (parseLsn(sl.confirmed_flush) > parseLsn(px)) {
                throw new MmliteError(`slot ${se.name} on ${s} starts at ${sl.confirmed_flush}, after ${x}'s promotion point ${px}: changes in between would be lost`, {
                  suggestions: [`Drop slot ${se.name} on ${s}, rebuild ${x} from ${s} and run add-node again.`],
                })
              }
            },
          })
          if (d.kind === 'keep') sctx.note(`${x}: origin of ${se.name} kept (${d.why}); enabling it`)
          await c.query(resumeSubscriptionSql(se.name))
        },
      },
    ],
  }
}
