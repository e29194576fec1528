/**
 * add-node --strategy standby, step `rollback-inherited-prepared` (issue #7.6), right after
 * the promotion and before the subscription S→X starts.
 *
 * A transaction S prepared (PREPARE TRANSACTION) and had not resolved at the promotion point
 * P_X is inherited by X: the prepare record is in the WAL prefix X replayed, and a promoted
 * standby keeps prepared transactions. S resolves it later, after P_X, and:
 *  - commits it: slot S→X (two_phase off, as every mmlite subscription) decodes the WHOLE
 *    transaction at COMMIT PREPARED, whose record lies after P_X, so S→X sends it to X as an
 *    ordinary transaction. Its changes are all after the slot's consistent point C: creating
 *    the slot waited for every transaction running then, prepared ones included, so one still
 *    unresolved at P_X began after C and is decoded in full. X's inherited copy would hold the
 *    row locks the applied copy needs: the link would wait forever;
 *  - rolls it back: nothing is sent; X's copy would stay prepared forever, holding its locks
 *    and X's xmin.
 * So X's inherited copies are rolled back: S→X delivers the commit when there is one, once.
 * (Prepared transactions never come from S's own subscriptions: with two_phase off the apply
 * worker applies a prepared transaction only at COMMIT PREPARED, as a plain commit.)
 *
 * Which ones: X takes no writes before add-node has finished, so every prepared transaction on
 * X at this point is inherited; the list is journaled (`inheritedPrepared`) the first time,
 * and only those are rolled back. Prepared transactions in other databases of X (inherited
 * too, outside the mesh) cannot be resolved from this database's connection: refused with
 * the exact command.
 */
import type {Step, StepContext} from '../../engine/types.js'
import {escapeLiteral as ql} from '../../db/quote.js'
import {MmliteError, ExitCode} from '../../errors.js'
import type {AddNodeContext} from '../add-node-context.js'

const KEY = 'inheritedPrepared'

const PREPARED_SQL = `SELECT p.gid, p.database::pg_catalog.text AS db, p.database = pg_catalog.current_database() AS here
  FROM pg_catalog.pg_prepared_xacts p ORDER BY p.prepared`

const TWO_PHASE_SUBS_SQL = `SELECT s.subname::pg_catalog.text AS subname FROM pg_catalog.pg_subscription s
 WHERE s.subtwophasestate <> 'd' AND s.subdbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())`

export const rollbackPreparedSql = (gid: string) => `ROLLBACK PREPARED ${ql(gid)}`

export function rollbackInheritedPreparedStep(ctx: AddNodeContext): Step {
  const x = ctx.x.name
  const s = ctx.source
  const state = async (sctx: StepContext) => {
    const c = sctx.cluster.node(x)
    if ((await c.one<{r: boolean}>('SELECT pg_catalog.pg_is_in_recovery() AS r'))!.r) return {promoted: false, rows: []}
    return {promoted: true, rows: await c.query<{gid: string; db: string; here: boolean}>(PREPARED_SQL)}
  }
  return {
    id: 'rollback-inherited-prepared',
    title: `Roll back the prepared transactions ${x} inherited from ${s} (${s}→${x} delivers them if ${s} commits them)`,
    actions: [
      {
        node: x,
        label: `ROLLBACK PREPARED each transaction ${x} inherited prepared from ${s}`,
        sql: [`${rollbackPreparedSql('<gid>')}   -- for each row of pg_prepared_xacts on ${x} after the promotion`],
        check: async sctx => {
          const st = await state(sctx)
          if (!st.promoted) return false
          const recorded = sctx.journal.get<string[]>(KEY)
          return recorded !== undefined && !st.rows.some(r => recorded.includes(r.gid))
        },
        run: async sctx => {
          const st = await state(sctx)
          if (!st.promoted) throw new MmliteError(`internal: ${x} is still in recovery`, {code: ExitCode.Failed})
          let recorded = sctx.journal.get<string[]>(KEY)
          if (recorded === undefined) {
            recorded = st.rows.map(r => r.gid)
            await sctx.journal.set(KEY, recorded)
          }
          const mine = st.rows.filter(r => recorded!.includes(r.gid))
          // exact only while no subscription of X decodes two-phase: with two_phase on, S could
          // hold a transaction it applied PREPARED from a peer, whose COMMIT PREPARED the
          // inherited link would later deliver to X (mmlite never enables two_phase)
          if (mine.length && (ctx.versions.get(x) ?? 0) >= 150000) {
            const tp = await sctx.cluster.node(x).query<{subname: string}>(TWO_PHASE_SUBS_SQL)
            if (tp.length) {
              throw new MmliteError(`${x} inherited prepared transaction(s) (${mine.map(r => r.gid).join(', ')}) and subscription(s) with two_phase enabled (${tp.map(r => r.subname).join(', ')}): rolling them back could lose a peer's transaction`, {
                code: ExitCode.Failed,
                suggestions: [`Resolve them by hand on ${x} once ${s} has resolved its own (COMMIT PREPARED / ROLLBACK PREPARED), then re-run.`],
              })
            }
          }
          const elsewhere = mine.filter(r => !r.here)
          for (const r of mine.filter(r => r.here)) {
            await sctx.cluster.node(x).query(rollbackPreparedSql(r.gid))
            sctx.note(`${x}: rolled back the prepared transaction ${r.gid} inherited from ${s} (if ${s} commits it, ${s}→${x} delivers it)`)
          }
          if (elsewhere.length) {
            throw new MmliteError(`${x} inherited prepared transaction(s) of ${s} in other databases, which would hold locks and ${x}'s xmin forever: ${elsewhere.map(r => `${r.gid} (database ${r.db})`).join(', ')}`, {
              code: ExitCode.Failed,
              suggestions: [`On ${x}, connected to each of those databases: ${elsewhere.map(r => rollbackPreparedSql(r.gid)).join('; ')}; then re-run.`],
            })
          }
        },
      },
    ],
  }
}
