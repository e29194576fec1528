/**
 * One transaction per node, committed on every node only once the work succeeded on all of
 * them; a failure anywhere rolls every node back (so does a kill before the commits: the
 * sessions die with the process). Used by the table activation (./activate.ts) and by
 * `mmlite ddl` (../ddl/index.ts).
 *
 * With `twoPhase` (always for the table activation; for `ddl` when every node allows prepared
 * transactions) the transactions are PREPAREd on every node, then COMMIT PREPARED one node
 * after the other: a kill between two commits leaves the other nodes prepared, locks held,
 * and the re-run commits them (./prepared.ts). Without it (`ddl` only) they are committed at
 * once, and a kill between two COMMITs leaves the nodes disagreeing until the re-run
 * (README "Two-phase commit").
 */
import type pg from 'pg'
import {escapeLiteral as ql} from '../../db/quote.js'
import type {StepContext} from '../../engine/types.js'
import {MmliteError, ExitCode, errorMessage} from '../../errors.js'
import {XID_SQL, commitPreparedSql, makeGid, prepareSql, rollbackPreparedSql, type Op} from './prepared.js'

export function lockTimeoutSql(ms: number): string {
  return `SET LOCAL lock_timeout = ${ql(`${ms}ms`)}`
}

/** Tests: SIGKILL ourselves inside the commit loop (MMLITE_FAULT_KILL_AFTER=<op step>:prepared-1 / prepared-all / committed-1 ...). */
function maybeDie(point: string): void {
  if (process.env.MMLITE_FAULT_KILL_AFTER === point) process.kill(process.pid, 'SIGKILL')
}

export interface TogetherOptions {
  appName: string
  lockTimeoutMs: number
  setup?: string[]
  /** prepare, then commit node by node; `fault` names the step for the test kill points */
  twoPhase?: {op: Op; fault: string}
}

export async function commitTogether<T>(ctx: StepContext, nodes: string[], opts: TogetherOptions, body: (sessions: Map<string, pg.Client>) => Promise<T>): Promise<T> {
  const sessions = new Map<string, pg.Client>()
  const xids = new Map<string, string>()
  const prepared: string[] = []
  let gid = ''
  let decided = false
  try {
    await Promise.all(
      nodes.map(async n => {
        const s = await ctx.cluster.node(n).newSession(opts.appName)
        sessions.set(n, s)
        await s.query('BEGIN')
        if (opts.twoPhase) xids.set(n, (await s.query<{xid: string}>(XID_SQL)).rows[0].xid)
        await s.query(lockTimeoutSql(opts.lockTimeoutMs))
        for (const q of opts.setup ?? []) await s.query(q)
      }),
    )
    const r = await body(sessions)
    if (!opts.twoPhase) {
      // every node is ready: commit everywhere at once
      await Promise.all(nodes.map(n => sessions.get(n)!.query('COMMIT')))
      decided = true
      return r
    }
    const {op, fault} = opts.twoPhase
    gid = makeGid(ctx.cfg, op, new Map(nodes.map(n => [n, xids.get(n)!])))
    for (const [i, n] of nodes.entries()) {
      try {
        await sessions.get(n)!.query(prepareSql(gid))
      } catch (e) {
        throw new MmliteError(`PREPARE TRANSACTION failed on ${n}: ${errorMessage(e)}; rolled back on every node, nothing was changed`, {
          code: ExitCode.Failed,
          suggestions: ['Check max_prepared_transactions and the prepared transactions already held on that node (pg_prepared_xacts), then run the command again.'],
        })
      }
      prepared.push(n)
      maybeDie(`${fault}:prepared-${i + 1}`)
    }
    maybeDie(`${fault}:prepared-all`)
    decided = true
    await commitPrepared(sessions, nodes, gid, fault)
    return r
  } finally {
    await Promise.all(
      [...sessions].map(async ([n, s]) => {
        if (!decided) {
          if (prepared.includes(n)) await s.query(rollbackPreparedSql(gid)).catch(() => {})
          else await s.query('ROLLBACK').catch(() => {})
        }
        await s.end().catch(() => {})
      }),
    )
  }
}

/** Every node prepared: commit each; a failure leaves the rest prepared for the re-run. */
async function commitPrepared(sessions: Map<string, pg.Client>, nodes: string[], gid: string, fault: string): Promise<void> {
  for (const [i, n] of nodes.entries()) {
    try {
      await sessions.get(n)!.query(commitPreparedSql(gid))
    } catch (e) {
      throw new MmliteError(`COMMIT PREPARED failed on ${n}: ${errorMessage(e)}; the nodes before it committed, ${nodes.slice(i).join(', ')} still hold the prepared transaction ${gid}`, {
        code: ExitCode.Failed,
        suggestions: ['Run the same command again: it commits the prepared transactions that are left, then finishes.'],
      })
    }
    maybeDie(`${fault}:committed-${i + 1}`)
  }
}
