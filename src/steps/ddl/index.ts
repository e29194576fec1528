/**
 * `mmlite ddl`: run DDL on every node so that the links stay healthy.
 *
 * The danger: a subscriber applies a change only if it knows every column the publisher's
 * relation message carries ("logical replication target relation ... is missing replicated
 * column"), so once node A has a new column, every change A commits to that table breaks A's
 * links into nodes that do not have it yet (the apply worker fails and retries, or is disabled
 * with disable_on_error). The column must exist on B before B applies any change that A
 * committed after adding it.
 *
 * The procedure (step ids as in --dry-run):
 *   ddl-apply   one session per node: BEGIN; SET LOCAL lock_timeout; the statements. ALTER
 *       TABLE holds an ACCESS EXCLUSIVE lock on its table until COMMIT, so on every node the
 *       table's writers and the apply workers that reach a change of it wait. Only when every
 *       node has run every statement are the transactions committed. Let C_A be A's commit: a
 *       change of A committed after C_A has the new column; it reaches B's apply worker,
 *       which opens the table before it applies anything and so waits for B's lock until B
 *       has committed C_B; it then sees the column. A change committed before C_A lacks the
 *       column, which is always fine (missing columns get their default). A statement that
 *       fails on any node rolls every node back: nothing changed anywhere, every link keeps
 *       streaming.
 *       Killed between two nodes' commits: when every node allows prepared transactions
 *       (max_prepared_transactions >= 1) the transactions are PREPAREd everywhere first and
 *       committed node by node (../tables/together.ts), so a node that has not committed
 *       still holds its prepared transaction and the table's lock: B's apply worker waits on
 *       it (no "missing replicated column" error, the link stays up, nothing is skipped) and
 *       the re-run commits it (../tables/prepared.ts decides commit or rollback from the
 *       participants' transaction status). Without prepared transactions the COMMITs are sent
 *       at once and such a kill breaks the links from the committed nodes until the re-run,
 *       which finishes the other nodes (statements already applied on a node, by catalog
 *       check or journal, are not run there again); refused when the re-run could not finish
 *       (a link with disable_on_error, a statement without a catalog check: ./one-phase.ts).
 *   ddl-wait-streaming   every link streams.
 * Destructive statements (see ./classify.ts) are refused unless --force; with --force they run
 * the same way, and what the other nodes still send with the old shape may stop a link until
 * you fix it (the refusal explains the safe sequence).
 */
import type {Config} from '../../config/config.js'
import {Cluster} from '../../cluster/cluster.js'
import {Journal} from '../../engine/journal.js'
import {ClusterLock} from '../../engine/lock.js'
import {runSteps, planSteps} from '../../engine/runner.js'
import type {Action, ProcedureOptions, Step, StepContext, StepReport} from '../../engine/types.js'
import {MmliteError, ExitCode, errorMessage} from '../../errors.js'
import {makeEdge, waitStreamingActions} from '../mesh.js'
import {readState} from '../tables/state.js'
import type {DdlStatement} from './classify.js'
import {onePhaseNote, refuseUnfinishableOnePhase} from './one-phase.js'
import {commitTogether, lockTimeoutSql} from '../tables/together.js'
import {XID_SQL, commitPreparedSql, finishLeftovers, hasLeftovers, leftovers, noTwoPhase, plannedGid, prepareSql, resolveSql, type Leftover} from '../tables/prepared.js'

export interface DdlContext {
  cfg: Config
  statements: DdlStatement[]
  timeoutMs: number
  /** values an unfinished run recorded */
  recorded: Record<string, unknown>
  /** every node allows prepared transactions: commit two-phase */
  twoPhase: boolean
  noTwoPhase: string[]
  /** prepared transactions a killed run left, and what becomes of them */
  leftovers: Leftover[]
}

/** Per node: what finishes a killed run's prepared transactions, then the statements (if still to run there). */
function nodeSql(d: DdlContext, node: string): string[] {
  const finish = d.leftovers.filter(l => l.holders.includes(node)).map(resolveSql)
  if (d.leftovers.some(l => l.decision === 'commit' && l.participants.includes(node))) return finish
  const gid = plannedGid(d.cfg.cluster, 'ddl')
  const end = d.twoPhase ? [prepareSql(gid), '-- once every node has prepared, node by node:', commitPreparedSql(gid)] : ['COMMIT']
  return [...finish, 'BEGIN', ...(d.twoPhase ? [XID_SQL] : []), lockTimeoutSql(d.timeoutMs), ...d.statements.map(s => s.sql), ...end]
}

/** every statement already applied on `node` (catalog checks; the journal for those without one) */
async function applied(d: DdlContext, ctx: StepContext, node: string): Promise<boolean> {
  if (ctx.journal.get(`applied.${node}`) === true || d.recorded[`applied.${node}`] === true) return true
  if (d.statements.some(s => !s.doneSql)) return false
  for (const s of d.statements) {
    const r = await ctx.cluster.node(node).one<{done: boolean}>(s.doneSql!)
    if (!r?.done) return false
  }
  return true
}

async function applyAll(d: DdlContext, ctx: StepContext): Promise<void> {
  // a killed run's prepared transactions first: committed where one node had committed
  const committed = await finishLeftovers(ctx.cluster, await leftovers(d.cfg, ctx.cluster, 'ddl', d.timeoutMs))
  for (const n of committed) await ctx.journal.set(`applied.${n}`, true)
  const todo: string[] = []
  for (const n of d.cfg.nodes) if (!(await applied(d, ctx, n.name))) todo.push(n.name)
  if (!todo.length) return
  if (!d.twoPhase) ctx.note(onePhaseNote(d.noTwoPhase))
  const twoPhase = d.twoPhase ? {op: 'ddl' as const, fault: 'ddl-apply'} : undefined
  await commitTogether(ctx, todo, {appName: 'mmlite ddl', lockTimeoutMs: d.timeoutMs, twoPhase}, async sessions => {
    await Promise.all(
      todo.map(async n => {
        for (const stmt of d.statements.map(x => x.sql)) {
          ctx.progress(`${n}: ${stmt.split('\n')[0]}`)
          try {
            await sessions.get(n)!.query(stmt)
          } catch (e) {
            throw new MmliteError(`node ${n}: ${errorMessage(e)}; rolled back on every node, nothing was changed`, {
              code: ExitCode.Failed,
              details: [`while running: ${stmt}`],
              suggestions: ['Fix the statement (or the node) and run the command again; every link kept streaming.'],
            })
          }
        }
      }),
    )
  })
  for (const n of todo) await ctx.journal.set(`applied.${n}`, true)
}

export function applyStep(d: DdlContext): Step {
  let once: Promise<void> | undefined
  const actions: Action[] = d.cfg.nodes.map(n => ({
    node: n.name,
    label: `run ${d.statements.length} statement(s), committed together with the other nodes`,
    sql: nodeSql(d, n.name),
    check: async ctx => !(await hasLeftovers(ctx.cfg, ctx.cluster, 'ddl')) && (await applied(d, ctx, n.name)),
    run: async ctx => {
      once ??= applyAll(d, ctx)
      await once
    },
  }))
  return {id: 'ddl-apply', title: 'Run the statements on every node, commit them everywhere at once', actions}
}

export interface DdlOptions extends ProcedureOptions {
  statements: DdlStatement[]
  force: boolean
  timeoutMs: number
}

export interface DdlResult {
  cluster: string
  dryRun: boolean
  changed: boolean
  statements: Array<{sql: string; kind: string; reason?: string; safe?: string}>
  steps: StepReport[]
}

export function refusal(statements: DdlStatement[]): MmliteError | undefined {
  const bad = statements.filter(s => s.kind === 'destructive')
  if (!bad.length) return undefined
  return new MmliteError(`${bad.length} statement${bad.length > 1 ? 's are' : ' is'} not additive; refused without --force, nothing was changed`, {
    code: ExitCode.Preflight,
    details: bad.flatMap(s => [`${s.sql.split('\n')[0]}`, `  why: ${s.reason}`, `  safe sequence: ${s.safe}`]),
    suggestions: ['Follow the safe sequence, or pass --force if you accept that links may stop until every node has the change.'],
  })
}

export async function runDdl(cfg: Config, opts: DdlOptions): Promise<DdlResult> {
  if (!opts.statements.length) throw new MmliteError('no statement given', {code: ExitCode.Config, suggestions: ['mmlite ddl "ALTER TABLE public.t ADD COLUMN c text" or --file F']})
  const refused = opts.force ? undefined : refusal(opts.statements)
  if (refused) throw refused
  const cluster = new Cluster(cfg, {connectTimeoutMs: opts.connectTimeoutMs})
  let lock: ClusterLock | undefined
  try {
    const journal = Journal.open(cfg.file, cfg.cluster)
    const sqls = opts.statements.map(s => s.sql)
    const unfinished = journal.unfinished().find(u => u.key === 'ddl')
    if (unfinished && JSON.stringify(unfinished.op.values.statements) !== JSON.stringify(sqls)) {
      throw new MmliteError('an unfinished mmlite ddl run had other statements', {
        code: ExitCode.Config,
        details: (unfinished.op.values.statements as string[]).map(s => `unfinished: ${s}`),
        suggestions: ['Re-run it with exactly those statements to finish it first.'],
      })
    }
    if (!opts.dryRun) lock = await ClusterLock.acquire(cluster, 'ddl')
    const state = await readState(cfg, cluster)
    const problems = [...state.values()].flatMap(s => s.subs).filter(s => !s.exists || !s.enabled)
    if (problems.length) {
      throw new MmliteError(`every link must be up before DDL runs; ${problems.map(s => `${s.name} on ${s.to} is ${s.exists ? 'disabled' : 'missing'}`).join(', ')}`, {
        code: ExitCode.Preflight,
        suggestions: ['Run `mmlite status` and `mmlite init` (or finish the unfinished run) first.'],
      })
    }
    const versions = new Map<string, number>()
    for (const n of cfg.nodes) versions.set(n.name, (await cluster.node(n.name).connect(), cluster.node(n.name).serverVersion))
    const names = cfg.nodes.map(n => n.name)
    const edges = names.flatMap(a => names.filter(b => b !== a).map(b => makeEdge(cfg, a, b, versions)))
    const without = await noTwoPhase(cluster, names)
    await refuseUnfinishableOnePhase(cfg, cluster, versions, without, opts.statements)
    const left = await leftovers(cfg, cluster, 'ddl', opts.timeoutMs)
    const d: DdlContext = {cfg, statements: opts.statements, timeoutMs: opts.timeoutMs, recorded: unfinished?.op.values ?? {}, twoPhase: without.length === 0, noTwoPhase: without, leftovers: left}
    const steps: Step[] = [applyStep(d), {id: 'ddl-wait-streaming', title: 'Wait until every link streams', actions: waitStreamingActions(edges, opts.timeoutMs)}]
    const base = {cfg, cluster, journal}
    const plan = await planSteps(steps, base)
    const result: DdlResult = {
      cluster: cfg.cluster,
      dryRun: opts.dryRun,
      changed: false,
      statements: opts.statements.map(s => ({sql: s.sql, kind: s.kind, ...(s.reason ? {reason: s.reason, safe: s.safe} : {})})),
      steps: plan,
    }
    if (opts.dryRun || plan.every(s => s.status !== 'planned')) {
      if (!opts.dryRun && unfinished) await journal.begin('ddl', 'ddl').then(() => journal.finish())
      return result
    }
    await opts.confirm(plan)
    await journal.begin('ddl', 'ddl')
    await journal.set('statements', sqls)
    try {
      result.steps = await runSteps(steps, base, {dryRun: false, mode: opts.mode, write: opts.write})
    } catch (e) {
      // rolled back on every node before anything committed: nothing to finish later
      if (!cfg.nodes.some(n => journal.get(`applied.${n.name}`) === true)) await journal.finish('abandoned')
      throw e
    }
    result.changed = true
    await journal.finish()
    return result
  } finally {
    await lock?.release()
    await cluster.close()
  }
}
