/**
 * init step `slots`, for a non-seed node Y (copy mode): Y's outbound slots are created while Y's
 * replicated tables are locked (SHARE: writers wait, nothing else does) and proven empty.
 *
 * Why: a row Y commits before its outbound slot exists is never decoded by that slot, so it
 * would stay on Y alone; a row committed after it is streamed to the peer. Under the lock,
 * no transaction writes Y's tables between the emptiness check and the slots' consistent
 * points (the slot creation waits for running transactions, the lock keeps new writes out).
 * So once every outbound slot of Y exists, every row on Y was written after them: a resumed
 * init accepts data on such a node (legal writes during init), and refuses data on a non-seed
 * node whose slots are missing (those rows would never reach the peers).
 *
 * Deadlocks: a writer holding an xid (from some other table) that waits for our lock, while
 * the slot creation waits for its transaction, is a cycle; our session sets a short
 * deadlock_timeout where allowed so that we are the one aborted, and retries.
 */
import {escapeLiteral as ql} from '../../db/quote.js'
import type {Config} from '../../config/config.js'
import type {Action, StepContext} from '../../engine/types.js'
import {MmliteError, ExitCode, errorMessage} from '../../errors.js'
import {sleep} from '../../util/poll.js'
import {createSlotSql, slotAction, type Edge} from '../mesh.js'

export function lockTablesSql(cfg: Config): string {
  return `LOCK TABLE ${cfg.tables.map(t => t.qualified).join(', ')} IN SHARE MODE`
}

export function anyRowSql(cfg: Config): string {
  return `SELECT ${cfg.tables.map(t => `EXISTS (SELECT 1 FROM ${t.qualified})`).join(' OR ')} AS has`
}

/** The refusal when non-seed node `node` holds rows its outbound slots (missing) would never send. */
export function dataBeforeSlotsError(node: string, seed: string, existing: string[]): MmliteError {
  return new MmliteError(`node ${node} holds rows in the replicated tables although its slots do not exist yet: they would never reach the other nodes; nothing was created on ${node}`, {
    code: ExitCode.Preflight,
    suggestions: [
      `A node other than the seed (${seed}) may take writes only once init has created its slots.`,
      existing.length
        ? `Drop the partial slots first (nothing subscribes to them yet): ${existing.map(s => `SELECT pg_catalog.pg_drop_replication_slot(${ql(s)});`).join(' ')} Then save those rows, remove them from ${node} (no slot captures it once the slots are gone), re-run init, and write them again afterwards.`
        : `Save those rows, remove them from ${node} (no slot of the cluster exists on ${node}, so this stays local), re-run init, and write them again once it has finished.`,
    ],
  })
}

/** Create every missing outbound slot of non-seed node `node` under a SHARE lock of its tables, proven empty. */
export function guardedSlotsAction(cfg: Config, node: string, seed: string, edges: Edge[]): Action {
  const plain = edges.map(slotAction)
  const missing = async (ctx: StepContext) => {
    const have = await Promise.all(plain.map(a => a.check(ctx)))
    return edges.filter((_, i) => !have[i])
  }
  return {
    node,
    label: `slots ${edges.map(e => e.name).join(', ')} (tables locked and checked empty)`,
    sql: ['BEGIN', lockTablesSql(cfg), anyRowSql(cfg), ...edges.map(createSlotSql), 'COMMIT'],
    check: async ctx => (await missing(ctx)).length === 0,
    run: async ctx => {
      for (let attempt = 1; ; attempt++) {
        const todo = await missing(ctx)
        if (todo.length === 0) return
        const s = await ctx.cluster.node(node).newSession('mmlite init slots')
        try {
          await s.query(`SET lock_timeout = '2s'`)
          await s.query(`SET deadlock_timeout = '100ms'`).catch(() => {})
          await s.query('BEGIN')
          await s.query(lockTablesSql(cfg))
          const has = (await s.query<{has: boolean}>(anyRowSql(cfg))).rows[0].has
          if (has) {
            await s.query('ROLLBACK')
            throw dataBeforeSlotsError(node, seed, edges.filter(e => !todo.includes(e)).map(e => e.name))
          }
          for (const e of todo) await s.query(createSlotSql(e))
          await s.query('COMMIT')
          return
        } catch (e) {
          if (e instanceof MmliteError) throw e
          const msg = errorMessage(e)
          // lock not granted in time, or we were the victim of a deadlock: try again
          if (attempt < 30 && /lock timeout|deadlock detected/i.test(msg)) {
            ctx.progress(`${node}: ${msg}; retrying (${attempt})`)
            await sleep(200)
            continue
          }
          throw new MmliteError(`node ${node}: ${msg}`, {code: ExitCode.Failed, details: ['while creating its slots under a lock of its replicated tables']})
        } finally {
          await s.end().catch(() => {})
        }
      }
    },
  }
}
