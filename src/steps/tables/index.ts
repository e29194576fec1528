/**
 * Reconcile the replicated tables with `tables:` of mmlite.yaml on an initialized mesh
 * (`mmlite init` on a cluster whose every publication and subscription exists).
 *
 * Why the obvious way loses writes. `ALTER PUBLICATION <cluster> ADD TABLE t` on node A commits
 * at some LSN P_A; from then on A's walsenders send t's changes (pgoutput looks publications up
 * with the catalog as of each change). A subscriber B applies a change only for a relation its
 * subscription knows (pg_subscription_rel; an unknown relation's changes are skipped by the
 * apply worker without a word, see should_apply_changes_for_rel in worker.c), and it learns the
 * table only from `ALTER SUBSCRIPTION ... REFRESH PUBLICATION`, which reads the publisher's
 * publications, so only after P_A. Every change to t that A commits after P_A and that B's apply
 * worker reaches before its REFRESH commits is lost on B, and rows written before P_A are never
 * sent at all.
 *
 * The procedure (step ids as in --dry-run):
 *   tables-unpublish, tables-drain   (only when tables leave the file, or are re-added because
 *       an older run published them without refreshing the subscriptions) they leave
 *       `<cluster>` on every node at D_A; every link then applies its publisher's WAL up to a
 *       position after D_A, so writes made while the table was replicated arrive everywhere
 *       and none is still in flight; it then stops; the data stays.
 *   tables-stage   on every node the announce publication `<cluster>_stage` lists the new
 *       tables with publish = '': a walsender naming it sends nothing for them (pubactions
 *       all false), but REFRESH on a subscriber can read it.
 *   tables-subscriptions   every subscription names `<cluster>, <cluster>_stage` and is
 *       refreshed with copy_data = false: the new tables are in pg_subscription_rel as ready
 *       (and the removed ones are gone) BEFORE any of their changes can be sent. A
 *       subscription that names the announce publication for the first time first waits until
 *       its slot confirmed a position after the publication was created (a walsender decoding
 *       from before it would fail on the missing publication on PostgreSQL <= 17).
 *   tables-activate   one session per node: BEGIN; LOCK TABLE t IN EXCLUSIVE MODE. Once all
 *       locks are held, t is static on every node: no session but ours can change it, and no
 *       change of t is in flight on any link (none was ever published). Each node's rows are
 *       read in its own session (committed data: its own writes so far, plus nothing from the
 *       others); each node receives, in its locked transaction, the rows the others hold and it
 *       lacks, tagged with the replication origin `mmlite_copy` so that its walsenders never
 *       send them (origin = none / the mmlite plugin drop changes with an origin); then
 *       `ALTER PUBLICATION <cluster> ADD TABLE t` and COMMIT, at K_A on node A.
 *   tables-unstage   the announce publication is emptied (t is in `<cluster>` from K_A on).
 *
 * Why it is exact, for a change w to t committed on node A at LSN c:
 *   - c < K_A: then w committed before A's lock was granted (the lock waits for every
 *     transaction holding t, and nothing else writes t while it is held), so w is in A's rows
 *     read under the lock; it reaches every other node B exactly once, through the copy into
 *     B (B lacks the key, else the keys' rows are equal and B already holds w's result). It
 *     is never sent: t was in no publication that publishes, up to K_A.
 *   - c > K_A: t is in `<cluster>` as of c, so every walsender of A sends w; every subscriber
 *     knows t since tables-subscriptions, which finished before any lock was taken, so it
 *     applies w. If B has not committed its own activation yet, B's apply worker waits on B's
 *     lock (it opens t before deciding anything) and applies w after B's copy, which never
 *     contains w (w was not among A's rows when they were read).
 *   - the copied rows carry an origin, so no node forwards them: each node gets every other
 *     node's rows directly, once.
 * Writers of t on every node wait while the locks are held (the copy of the rows a node lacks);
 * writers of every other table never wait, and links never stop. A key held by two nodes with
 * different rows cannot be merged exactly: it is refused before anything commits, unless a
 * source is named (`init --source NODE`, alias of --seed) and holds the key: then its row is
 * written on the other nodes (in the same locked transaction, under the same origin), so all
 * end with the source's row; rows of keys the source lacks still come from their node.
 *
 * Killed: before tables-activate prepares, every change so far is idempotent and nothing of t
 * flows (the locks die with the sessions, their transactions roll back); the re-run redoes the
 * activation from the nodes' current rows. The activation's transactions are two-phase:
 * PREPAREd on every node, then COMMIT PREPARED node by node (./together.ts, ./prepared.ts);
 * planning refuses (exit 11, nothing changed) unless every node can prepare one
 * (max_prepared_transactions >= 1 and a slot free, ./two-phase.ts). Killed between two
 * commits, the nodes that have not committed keep their prepared transaction and its lock on
 * t, so the mesh is in the state the argument above covers, only with their K_B later: every
 * change committed since on a committed node A waits at B's apply worker for B's lock (t is
 * known to B), B's writers of t wait too, nothing of t is applied or written on B before B's
 * copy commits. The re-run commits the prepared transactions that are left (or rolls them
 * back when no node had committed yet, then activates again from the current rows). One-phase
 * commits cannot be finished so: a kill between them would leave t in `<cluster>` on some nodes
 * only, the others' writes to t since never sent and their deletes untraceable, hence the
 * requirement. Such a state (left by an mmlite that still committed one-phase, or by a prepared
 * transaction finished by hand) is refused, naming the table (./activate.ts partialError).
 */
import type {Config} from '../../config/config.js'
import type {Cluster} from '../../cluster/cluster.js'
import type {Step} from '../../engine/types.js'
import {MmliteError, ExitCode} from '../../errors.js'
import {classify, keyOf, readState, tableOf, type NodeState, type TableWork} from './state.js'
import {stageStep, unpublishStep, unstageStep} from './publications.js'
import {drainStep, subscriptionsStep} from './subscriptions.js'
import {activateStep, partialError, type ActivationReport} from './activate.js'
import {leftovers, type Leftover} from './prepared.js'
import {requireTwoPhase} from './two-phase.js'

export interface TablesCtx {
  cfg: Config
  state: Map<string, NodeState>
  work: TableWork
  timeoutMs: number
  /** where nodes hold different rows under one key, this node's row wins (init --source/--seed) */
  source?: string
  activation?: ActivationReport
  /** prepared transactions a killed run left, and what becomes of them */
  leftovers: Leftover[]
}

export function buildTableSteps(t: TablesCtx): Step[] {
  const steps: Step[] = []
  const {work} = t
  if (work.removes.length || work.broken.length) steps.push(unpublishStep(t))
  if (work.removes.length || work.broken.length) steps.push(drainStep(t))
  if (work.adds.length) steps.push(stageStep(t))
  if (work.adds.length || work.removes.length) steps.push(subscriptionsStep(t))
  if (work.adds.length || t.leftovers.length) steps.push(activateStep(t))
  if (work.adds.length || work.stageLeft) steps.push(unstageStep(t))
  return steps
}

export interface TablePlan {
  ctx: TablesCtx
  steps: Step[]
}

/** undefined when the mesh is not complete (init builds it with the tables of the file). */
export async function planTables(cfg: Config, cluster: Cluster, timeoutMs: number, source?: string): Promise<TablePlan | undefined> {
  const state = await readState(cfg, cluster)
  const work = classify(cfg.tables.map(keyOf), state)
  if (!work.meshComplete) return undefined
  const left = await leftovers(cfg, cluster, 'tables', timeoutMs)
  if (work.partial.length) {
    // killed between the commits: the prepared transactions left finish it
    if (!left.some(l => l.decision === 'commit')) throw partialError(work.partial.map(k => tableOf(k).display))
    work.adds.push(...work.partial)
    work.partial = []
  }
  const disabled = [...state.values()].flatMap(s => s.subs).filter(s => !s.enabled)
  if ((work.adds.length || work.removes.length) && disabled.length) {
    throw new MmliteError(`changing the replicated tables needs every subscription enabled; disabled: ${disabled.map(s => `${s.name} on ${s.to}`).join(', ')}`, {
      code: ExitCode.Preflight,
      suggestions: ['Run `mmlite status`; finish or re-run the operation that paused it, or `mmlite skip-tx` for a stuck link, then re-run.'],
    })
  }
  if (work.adds.length) await requireTwoPhase(cluster, cfg.nodes.map(n => n.name), work.adds.map(k => tableOf(k).display).join(', '), left)
  const ctx: TablesCtx = {cfg, state, work, timeoutMs, source, leftovers: left}
  return {ctx, steps: buildTableSteps(ctx)}
}

/**
 * The hook `mmlite init` calls: on a complete mesh, its `publications` step (which would
 * only rewrite the publication) is replaced by this procedure's steps.
 */
export async function withTableReconcile(cfg: Config, cluster: Cluster, initSteps: Step[], timeoutMs: number, source?: string): Promise<Step[]> {
  const plan = await planTables(cfg, cluster, timeoutMs, source)
  if (!plan || plan.steps.length === 0) return initSteps
  const i = initSteps.findIndex(s => s.id === 'publications')
  const rest = initSteps.filter(s => s.id !== 'publications')
  return [...rest.slice(0, Math.max(i, 0)), ...plan.steps, ...rest.slice(Math.max(i, 0))]
}
