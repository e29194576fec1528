/**
 * `mmlite remove-node X`: take node X out of the mesh; the remaining nodes keep replicating
 * among themselves throughout (nothing of theirs is touched but their links with X).
 *
 * X reachable (default):
 *   drain              wait until every peer has received everything X committed: each of X's
 *                      outbound slots confirms X's pg_current_wal_lsn() taken when the wait
 *                      starts (an idle walsender's keepalive advances confirmed_flush without
 *                      new transactions). Timeout: fail, nothing else changed.
 *   peer-subscriptions on every peer, its subscription from X: DISABLE, SET (slot_name = NONE),
 *                      DROP (never connects to X; X's slots are dropped by us below). The
 *                      origin progress (remote_lsn) is read first and kept in the journal.
 *   own-subscriptions  on X, its subscriptions from the peers, the same way
 *   peer-slots         on every peer, its slot for X (retained WAL measured first, journal)
 *   own-slots          on X, its outbound slots
 *   own-publication    on X, the publication
 *   config             X leaves mmlite.yaml
 * --force (X dead, or the operator says so): X is never contacted, nothing is drained:
 *   peer-subscriptions, peer-slots (a walsender still serving X's dead subscription is
 *   terminated), config. The peers' origin progress in X's changes is compared: when they
 *   differ, the cluster may have diverged and the report says which peer got further.
 *
 * Every action checks the catalogs first, so a run killed at any point finishes when re-run
 * (operation key `remove-node:<X>` in the journal). Once X has left mmlite.yaml, a re-run
 * still finds the unfinished operation and completes it without X's connection details.
 */
import type {Config, NodeConfig} from '../config/config.js'
import {Cluster} from '../cluster/cluster.js'
import {edgeName, publicationName} from '../cluster/naming.js'
import {escapeIdentifier as qi} from '../db/quote.js'
import {parseLsn} from '../db/lsn.js'
import {Journal, type Operation} from '../engine/journal.js'
import {ClusterLock} from '../engine/lock.js'
import {planSteps, runSteps} from '../engine/runner.js'
import type {ProcedureOptions, StepReport} from '../engine/types.js'
import {MmliteError, ExitCode} from '../errors.js'
import {didYouMean} from '../util/text.js'
import {detachSubscriptionSql, disableSubscriptionSql, dropPublicationSql, dropSlotSql, dropSubscriptionSql} from './mesh.js'
import {journalRecorder, operationKey, WAIT_TIMEOUT_MS, type RemoveValues} from './remove-node/context.js'
import {DrainTimeoutError} from './remove-node/drain.js'
import {buildRemoveNodeSteps} from './remove-node/procedure.js'
import {buildAbandonedJoinSteps, type JoinValues} from './remove-node/abandoned-join.js'
import {otherOperationsProblems, preflightError} from './preflight.js'
import {checkOriginStatusPrivileges} from './remove-node/privileges.js'

const addNodeKey = (x: string) => `add-node:${x}`

// ---------------------------------------------------------------- pure helpers

/** moved to src/util/duration.ts (one parser for every duration flag); re-exported for existing importers */
export {parseDurationMs} from '../util/duration.js'

export interface ProgressComparison {
  /** peers whose progress differs: some got changes of X that others lack */
  diverged: boolean
  /** the peers that got furthest in X's changes (all known peers when they agree) */
  furthest: string[]
  /** the peers behind them */
  behind: string[]
  /** peers whose progress is unknown (their subscription from X was already gone) */
  unknown: string[]
}

/** Compare how far each peer got in X's changes (origin remote_lsn). Pure. */
export function compareProgress(progress: Array<{node: string; lsn: string | null}>): ProgressComparison {
  const known = progress.filter((p): p is {node: string; lsn: string} => p.lsn !== null)
  const unknown = progress.filter(p => p.lsn === null).map(p => p.node)
  if (known.length === 0) return {diverged: false, furthest: [], behind: [], unknown}
  const max = known.reduce((a, p) => (parseLsn(p.lsn) > a ? parseLsn(p.lsn) : a), 0n)
  const furthest = known.filter(p => parseLsn(p.lsn) === max).map(p => p.node)
  const behind = known.filter(p => parseLsn(p.lsn) < max).map(p => p.node)
  return {diverged: behind.length > 0, furthest, behind, unknown}
}

export type RemovalMode =
  /** X is in mmlite.yaml */
  | {kind: 'remove'}
  /** X already left mmlite.yaml in a run that was interrupted: finish that operation */
  | {kind: 'finish'}

/**
 * Whether `x` can be removed from `cfg`; throws the refusal. `pending` is the unfinished
 * journal operation `remove-node:<x>`, if any.
 */
export function checkRemoval(cfg: Config, x: string, pending?: Operation): RemovalMode {
  const names = cfg.nodes.map(n => n.name)
  if (!names.includes(x)) {
    if (pending) return {kind: 'finish'}
    const dym = didYouMean(x, names)
    throw new MmliteError(`unknown node "${x}": ${cfg.file} has no node of that name; nothing was changed`, {
      code: ExitCode.Config,
      suggestions: [`${dym ? `Did you mean "${dym}"? ` : ''}Known nodes: ${names.join(', ')}`],
    })
  }
  if (names.length === 1) {
    throw new MmliteError(`node "${x}" is the last node of cluster "${cfg.cluster}"; removing it would leave no cluster, so it is refused`, {
      code: ExitCode.Config,
      suggestions: [`To take the cluster apart instead, drop its publication on ${x}: ${dropPublicationSql(cfg)};`],
    })
  }
  return {kind: 'remove'}
}

/** The SQL that removes X's own objects from X (for a node removed with --force that may run again). */
export function leftoverSqlOnRemoved(cfg: Config, x: string, peers: string[]): string[] {
  return [
    ...peers.flatMap(p => {
      const sub = edgeName(cfg.cluster, p, x)
      return [disableSubscriptionSql(sub), detachSubscriptionSql(sub), dropSubscriptionSql(sub)]
    }),
    ...peers.map(p => dropSlotSql(edgeName(cfg.cluster, x, p))),
    `DROP PUBLICATION ${qi(publicationName(cfg.cluster))}`,
  ]
}

// ---------------------------------------------------------------- steps (src/steps/remove-node/)

export {STEP, WAIT_TIMEOUT_MS, operationKey, type RemovePlanInput, type RemoveValues} from './remove-node/context.js'
export {DrainTimeoutError} from './remove-node/drain.js'
export {buildRemoveNodeSteps} from './remove-node/procedure.js'

// ---------------------------------------------------------------- the whole procedure

export interface RemoveNodeOptions extends ProcedureOptions<{force: boolean; finishing: boolean}> {
  force: boolean
  drainTimeoutMs: number
}

export interface PeerReport {
  node: string
  /** bytes of WAL the peer's slot for X retained when it was dropped (null: unknown / not dropped) */
  retainedWalFreedBytes: number | null
  /** how far the peer got in X's changes: remote_lsn of its subscription from X (null: unknown) */
  originProgress: string | null
}

export interface RemoveNodeResult {
  cluster: string
  removed: string
  force: boolean
  dryRun: boolean
  changed: boolean
  /** an interrupted run was completed */
  resumed: boolean
  remaining: string[]
  /** X's WAL position every peer confirmed before its subscription was dropped (null with --force / dry-run) */
  drainLsn: string | null
  peers: PeerReport[]
  /** with --force: the peers got different amounts of X's changes */
  diverged: boolean
  /** with --force: the peers that got furthest in X's changes */
  furthest: string[]
  /** with --force: the peers that got less of X's changes than `furthest` */
  behind: string[]
  /** with --force, when the peers differ: what that means, which peer has more */
  divergence: string | null
  /** SQL for X itself when it was not contacted (--force): drop them there if X ever runs again */
  leftOnRemoved: string[]
  notes: string[]
  steps: StepReport[]
}

export async function runRemoveNode(cfg: Config, x: string, opts: RemoveNodeOptions): Promise<RemoveNodeResult> {
  const journal = Journal.open(cfg.file, cfg.cluster)
  const key = operationKey(x)
  const unfinished = journal.unfinished()
  const pendingOp = unfinished.find(u => u.key === key)?.op
  const joinOp = unfinished.find(u => u.key === addNodeKey(x))?.op
  // like add-node: one operation at a time (an unfinished init may be left: removing a dead
  // node can be what lets it finish; the unfinished join of X is what this run removes)
  const blocking = otherOperationsProblems(unfinished, [key, addNodeKey(x), 'init'])
  if (blocking.length) throw preflightError(blocking)
  const inConfig = cfg.nodes.some(n => n.name === x)
  if (!inConfig && (joinOp || pendingOp?.values.abandoned === true)) {
    return runRemoveAbandoned(cfg, x, opts, {journal, key, pendingOp, joinOp})
  }
  if (!inConfig && !pendingOp && (await joinLeftovers(cfg, x, opts.connectTimeoutMs)).length) {
    return runRemoveAbandoned(cfg, x, opts, {journal, key, pendingOp, joinOp})
  }
  const mode = checkRemoval(cfg, x, pendingOp)
  const finishing = mode.kind === 'finish'
  // once X has left mmlite.yaml (an interrupted run), only the peers and the file are left to check
  const force = opts.force || finishing
  const peers = cfg.nodes.map(n => n.name).filter(n => n !== x)
  // X keeps its place in the configuration for naming; without --force it is connected to
  const stub: NodeConfig = {name: x, dsn: '', conn: new Map(), peerConn: new Map()}
  const full: Config = finishing ? {...cfg, nodes: [...cfg.nodes, stub]} : cfg
  const cluster = new Cluster(full, {connectTimeoutMs: opts.connectTimeoutMs})
  let lock: ClusterLock | undefined
  try {
    // conventions hook: privileges on every node the steps contact, before the lock and the plan
    await checkOriginStatusPrivileges(cluster, force ? peers : [...peers, x])
    if (!opts.dryRun) {
      try {
        lock = await ClusterLock.acquire(cluster, 'remove-node', force ? peers : [...peers, x])
      } catch (e) {
        if (e instanceof MmliteError && e.code === ExitCode.Unreachable && !force && e.message.startsWith(`node ${x} `)) {
          throw new MmliteError(e.message, {
            code: e.code,
            details: e.details,
            suggestions: [`If ${x} is gone for good, \`mmlite remove-node ${x} --force\` removes it without contacting it (its unsent changes are lost).`],
          })
        }
        throw e
      }
    }
    const steps = buildRemoveNodeSteps(full, {x, peers, force, drainTimeoutMs: opts.drainTimeoutMs, configFile: cfg.file})
    const base = {cfg: full, cluster, journal}
    let plan: StepReport[]
    try {
      plan = await planSteps(steps, base)
    } catch (e) {
      if (e instanceof MmliteError && e.code === ExitCode.Unreachable && !force && e.message.startsWith(`node ${x} `)) {
        throw new MmliteError(e.message, {code: e.code, details: e.details, suggestions: [`If ${x} is gone for good, use --force (it is then not contacted).`]})
      }
      throw e
    }
    // values of the operation: the journal's once this run has begun it, else the interrupted run's
    const values = (): RemoveValues => {
      const get = <T>(k: keyof RemoveValues) => journal.get<T>(k) ?? (pendingOp?.values[k] as T | undefined)
      return {drainLsn: get('drainLsn'), originProgress: get('originProgress'), retainedBytes: get('retainedBytes'), force: get('force')}
    }
    const result = (changed: boolean, stepReports: StepReport[]): RemoveNodeResult => {
      const v = values()
      // finishing: the interrupted run decided whether X was contacted
      const forcedRun = finishing ? (v.force ?? true) : opts.force
      return buildResult(full, x, peers, {force: forcedRun, dryRun: opts.dryRun, changed, resumed: Boolean(pendingOp), finishing, steps: stepReports, values: v})
    }

    const pending = plan.filter(s => s.status === 'planned')
    if (opts.dryRun) return result(false, plan)
    if (pending.length === 0) {
      await journal.begin(key, 'remove-node')
      const r = result(false, plan)
      await journal.finish()
      return r
    }
    await opts.confirm(plan, {force, finishing})
    await journal.begin(key, 'remove-node')
    if (!finishing) await journal.set('force', opts.force)
    let reports: StepReport[]
    try {
      reports = await runSteps(steps, base, {dryRun: false, mode: opts.mode, write: opts.write})
    } catch (e) {
      // a failed drain changed nothing: leave no unfinished operation behind
      const op = journal.unfinished().find(u => u.key === key)?.op
      if (e instanceof DrainTimeoutError && op && Object.keys(op.steps).length === 0) await journal.finish('abandoned')
      throw e
    }
    const r = result(true, reports)
    await journal.finish()
    // X was in mmlite.yaml while its add-node was still unfinished: that join is over too
    if (joinOp) {
      await journal.begin(addNodeKey(x), joinOp.command)
      await journal.finish('abandoned')
    }
    return r
  } finally {
    await lock?.release()
    await cluster.close()
  }
}

/** Objects named for the links of X (not a member) on the members: slots for X, subscriptions from X. */
async function joinLeftovers(cfg: Config, x: string, connectTimeoutMs: number): Promise<string[]> {
  if (!cfg.nodes.length) return []
  const cluster = new Cluster(cfg, {connectTimeoutMs})
  try {
    const found = await cluster.each(async c => {
      const slots = await c.query<{n: string}>('SELECT slot_name::pg_catalog.text AS n FROM pg_catalog.pg_replication_slots WHERE slot_name = $1::pg_catalog.name', [edgeName(cfg.cluster, c.name, x)])
      const subs = await c.query<{n: string}>(
        'SELECT subname::pg_catalog.text AS n FROM pg_catalog.pg_subscription WHERE subname = $1::pg_catalog.name AND subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())',
        [edgeName(cfg.cluster, x, c.name)],
      )
      return [...slots, ...subs].map(r => `${c.name}: ${r.n}`)
    })
    return [...found.values()].flatMap(r => (r.ok ? r.value : []))
  } finally {
    await cluster.close()
  }
}

/** remove-node of a node whose join never finished (see remove-node/abandoned-join.ts). */
async function runRemoveAbandoned(
  cfg: Config,
  x: string,
  opts: RemoveNodeOptions,
  j: {journal: Journal; key: string; pendingOp?: Operation; joinOp?: Operation},
): Promise<RemoveNodeResult> {
  const {journal, key} = j
  const peers = cfg.nodes.map(n => n.name)
  const stub: NodeConfig = {name: x, dsn: '', conn: new Map(), peerConn: new Map()}
  const full: Config = {...cfg, nodes: [...cfg.nodes, stub]}
  const cluster = new Cluster(full, {connectTimeoutMs: opts.connectTimeoutMs})
  let lock: ClusterLock | undefined
  try {
    // conventions hook: the peers' subscriptions from X are dropped with their origin progress recorded
    await checkOriginStatusPrivileges(cluster, peers)
    if (!opts.dryRun) lock = await ClusterLock.acquire(cluster, 'remove-node', peers)
    const rec = journalRecorder()
    const steps = buildAbandonedJoinSteps(full, {
      x,
      peers,
      join: (j.joinOp?.values ?? {}) as JoinValues,
      waitTimeoutMs: WAIT_TIMEOUT_MS,
      recordProgress: (ctx, p, lsn) => rec.setFor(ctx, 'originProgress', p, lsn),
    })
    const base = {cfg: full, cluster, journal}
    const plan = await planSteps(steps, base)
    const values = (): RemoveValues => {
      const get = <T>(k: keyof RemoveValues) => journal.get<T>(k) ?? (j.pendingOp?.values[k] as T | undefined)
      return {originProgress: get('originProgress')}
    }
    const result = (changed: boolean, reports: StepReport[]): RemoveNodeResult => {
      const r = buildResult(full, x, peers, {force: true, dryRun: opts.dryRun, changed, resumed: Boolean(j.pendingOp), finishing: false, steps: reports, values: values()})
      r.notes = [
        `${x} never finished joining (${j.joinOp ? `unfinished add-node:${x} in the journal` : 'objects named for its links were found'}): it was not contacted; what it holds must not be used as a member.`,
        ...r.notes.filter(n => !n.startsWith('--force')),
      ]
      return r
    }
    if (opts.dryRun) return result(false, plan)
    const pending = plan.filter(s => s.status === 'planned')
    if (pending.length) await opts.confirm(plan, {force: true, finishing: false})
    await journal.begin(key, 'remove-node')
    await journal.set('abandoned', true)
    await journal.set('force', true)
    const reports = pending.length ? await runSteps(steps, base, {dryRun: false, mode: opts.mode, write: opts.write}) : plan
    const r = result(pending.length > 0, reports)
    await journal.finish()
    // the join is over: later add-node runs are no longer blocked by it
    if (j.joinOp) {
      await journal.begin(addNodeKey(x), j.joinOp.command)
      await journal.finish('abandoned')
    }
    return r
  } finally {
    await lock?.release()
    await cluster.close()
  }
}

function buildResult(
  cfg: Config,
  x: string,
  peers: string[],
  o: {force: boolean; dryRun: boolean; changed: boolean; resumed: boolean; finishing: boolean; steps: StepReport[]; values: RemoveValues},
): RemoveNodeResult {
  const v = o.values
  const peerReports: PeerReport[] = peers.map(p => ({
    node: p,
    retainedWalFreedBytes: v.retainedBytes?.[p] ?? null,
    originProgress: v.originProgress?.[p] ?? null,
  }))
  const notes: string[] = []
  let cmp: ProgressComparison = {diverged: false, furthest: [], behind: [], unknown: []}
  // the drain proved every peer received all of X's changes; only a forced removal can diverge
  const forced = o.force && !o.dryRun
  if (forced) cmp = compareProgress(peerReports.map(p => ({node: p.node, lsn: p.originProgress})))
  if (forced && !o.finishing) {
    notes.push(`--force: ${x} was not contacted and nothing was drained; its own subscriptions, slots and publication are left on it.`)
  }
  if (o.finishing) notes.push(`${x} had already left mmlite.yaml: the interrupted removal was completed.`)
  let divergence: string | null = null
  if (cmp.diverged) {
    const at = (n: string) => peerReports.find(p => p.node === n)!.originProgress
    divergence =
      `the peers got different amounts of ${x}'s changes: ${cmp.furthest.map(n => `${n} (up to ${at(n)})`).join(', ')} got more than ` +
        `${cmp.behind.map(n => `${n} (up to ${at(n)})`).join(', ')}; the cluster may have diverged: ${cmp.furthest.join(', ')} ` +
        `${cmp.furthest.length > 1 ? 'hold' : 'holds'} changes from ${x} that ${cmp.behind.join(', ')} ${cmp.behind.length > 1 ? 'lack' : 'lacks'}.`
  }
  if (cmp.unknown.length && forced) notes.push(`origin progress unknown for ${cmp.unknown.join(', ')} (no subscription from ${x} was found there).`)
  return {
    cluster: cfg.cluster,
    removed: x,
    force: o.force,
    dryRun: o.dryRun,
    changed: o.changed,
    resumed: o.resumed,
    remaining: peers,
    drainLsn: o.force ? null : (v.drainLsn ?? null),
    peers: peerReports,
    diverged: cmp.diverged,
    furthest: forced ? cmp.furthest : [],
    behind: cmp.behind,
    divergence,
    leftOnRemoved: o.force ? leftoverSqlOnRemoved(cfg, x, peers) : [],
    notes,
    steps: o.steps,
  }
}
