/**
 * `mmlite init`: build the echo-free full mesh.
 *
 * Order (this is what makes the initial copy exact):
 *   1. publications on every node
 *   2. slots for every directed edge, before any data moves. Changes a node commits after
 *      its outbound slot exists are streamed to that peer, so nothing written during init is
 *      lost. Rows that reach a non-seed node through the initial copy or the apply of the
 *      seed's changes carry a replication origin (PostgreSQL 14+ sets the tablesync worker's
 *      origin before its COPY), so origin filtering keeps them from being sent on.
 *      On PostgreSQL 12/13 the tablesync COPY is not origin-tagged: when a non-seed node is
 *      older than 14 its outbound slots are created after the copy instead (step 5), and that
 *      node must not take writes until init has finished.
 *   3. subscriptions seed → every other node with copy_data = true
 *   4. wait until every table is synchronized (pg_subscription_rel state 'r')
 *   5. (only for non-seed nodes older than 14) their outbound slots
 *   6. every remaining subscription with copy_data = false
 *   7. wait until every link streams
 * With --no-copy (nodes already identical) there is no seed: all slots, then every
 * subscription with copy_data = false.
 */
import type {Config} from '../config/config.js'
import type {Step} from '../engine/types.js'
import {disableOnErrorAction, makeEdge, streamingAction, publicationAction, slotAction, subscriptionAction, waitStreamingActions, waitSyncAction, type Edge} from './mesh.js'
import {MmliteError, ExitCode} from '../errors.js'
import {Cluster} from '../cluster/cluster.js'
import {Journal} from '../engine/journal.js'
import {ClusterLock} from '../engine/lock.js'
import {runSteps, planSteps, type RenderMode} from '../engine/runner.js'
import type {StepReport} from '../engine/types.js'
import {preflight, preflightError} from './preflight.js'
import {pollUntil} from '../util/poll.js'
import type {PreflightResult, Problem} from './preflight.js'
import {withTableReconcile} from './tables/index.js'

export const TABLESYNC_ORIGIN_MIN = 140000

export interface InitPlanInput {
  seed?: string
  noCopy: boolean
  timeoutMs: number
}

/** Which node seeds the others; problems when that is ambiguous. */
export function chooseSeed(
  cfg: Config,
  pf: Pick<PreflightResult, 'tables' | 'subscribed'>,
  opts: {seed?: string; journalSeed?: string; noCopy: boolean},
): {seed?: string; problems: Problem[]} {
  const problems: Problem[] = []
  if (opts.seed && !cfg.nodes.some(n => n.name === opts.seed)) {
    problems.push({check: 'seed', message: `--seed ${opts.seed} is not a node of the configuration`, fix: `Use one of: ${cfg.nodes.map(n => n.name).join(', ')}`})
    return {problems}
  }
  if (opts.noCopy) return {problems}
  if (opts.journalSeed && opts.seed && opts.journalSeed !== opts.seed) {
    problems.push({
      check: 'seed',
      message: `an unfinished init is copying from ${opts.journalSeed}; --seed ${opts.seed} disagrees`,
      fix: `Re-run without --seed (or with --seed ${opts.journalSeed}) to finish it.`,
    })
    return {problems}
  }
  // Nodes that already hold a subscription of this cluster got their data from it.
  const withData = cfg.nodes
    .map(n => n.name)
    .filter(n => !pf.subscribed.has(n) && (pf.tables.get(n)?.hasData ?? []).some(Boolean))
  const seed = opts.journalSeed ?? opts.seed ?? (withData.length === 1 ? withData[0] : withData.length === 0 ? cfg.nodes[0].name : undefined)
  const others = withData.filter(n => n !== seed)
  if (!seed || others.length) {
    const tablesWithData = (n: string) =>
      cfg.tables.filter((_, i) => pf.tables.get(n)?.hasData[i]).map(t => t.display).join(', ')
    problems.push({
      check: 'data',
      message: `replicated tables hold data on more than one node (${withData.map(n => `${n}: ${tablesWithData(n)}`).join('; ')}); init copies from one seed node into empty tables`,
      fix: `Empty the tables on all nodes but one (then --seed <that node>), or, if the nodes are already identical (restored from one backup), pass --no-copy.`,
    })
  }
  return {seed, problems}
}

export function buildInitSteps(cfg: Config, versions: Map<string, number>, input: InitPlanInput): Step[] {
  const names = cfg.nodes.map(n => n.name)
  const edges: Edge[] = names.flatMap(a => names.filter(b => b !== a).map(b => makeEdge(cfg, a, b, versions)))
  const seed = input.noCopy ? undefined : input.seed
  if (!input.noCopy && !seed) throw new MmliteError('internal: init without a seed', {code: ExitCode.Failed})
  const v = (n: string) => versions.get(n)!
  const seedEdges = seed ? edges.filter(e => e.from === seed) : []
  const lateSlot = (e: Edge) => Boolean(seed) && e.from !== seed && v(e.from) < TABLESYNC_ORIGIN_MIN
  const earlySlots = edges.filter(e => !lateSlot(e))
  const lateSlots = edges.filter(lateSlot)
  const restEdges = edges.filter(e => !seedEdges.includes(e))

  const steps: Step[] = [
    {id: 'publications', title: 'Create publications on every node', actions: names.map(n => publicationAction(cfg, n))},
    {id: 'slots', title: 'Create replication slots for every directed link', actions: earlySlots.map(slotAction)},
  ]
  if (seed) {
    steps.push(
      {
        id: 'seed-subscriptions',
        title: `Subscribe every node to ${seed} with the initial copy`,
        actions: seedEdges.map(e => subscriptionAction(cfg, e, {copyData: true, subscriberVersion: v(e.to)})),
      },
      {id: 'wait-initial-copy', title: `Wait until every table is copied from ${seed}`, actions: waitSyncAction(seedEdges, input.timeoutMs)},
    )
  }
  if (lateSlots.length) steps.push({id: 'late-slots', title: 'Create the remaining slots (nodes older than PostgreSQL 14)', actions: lateSlots.map(slotAction)})
  steps.push(
    {
      id: 'mesh-subscriptions',
      title: 'Create the remaining subscriptions (no copy)',
      actions: restEdges.map(e => subscriptionAction(cfg, e, {copyData: false, subscriberVersion: v(e.to)})),
    },
  )
  if (cfg.disableOnError) {
    // subscriptions created above already have it; this converges ones made before it was set
    const doe = edges.filter(e => v(e.to) >= 150000)
    if (doe.length) steps.push({id: 'disable-on-error', title: 'Stop links on apply errors (disable_on_error, PostgreSQL 15+)', actions: doe.map(disableOnErrorAction)})
  }
  // subscriptions created above already have it; this converges ones made before mmlite chose it
  const streaming = edges.map(e => streamingAction(e, v(e.to))).filter((a): a is NonNullable<typeof a> => a !== undefined)
  steps.push({id: 'streaming', title: 'Streaming of large transactions (streaming = on / off, never parallel)', actions: streaming})
  steps.push({id: 'wait-streaming', title: 'Wait until every link streams', actions: waitStreamingActions(edges, input.timeoutMs)})
  return steps.filter(s => s.actions.length > 0)
}

export function initEdges(cfg: Config, versions: Map<string, number>): Edge[] {
  const names = cfg.nodes.map(n => n.name)
  return names.flatMap(a => names.filter(b => b !== a).map(b => makeEdge(cfg, a, b, versions)))
}


// ---------------------------------------------------------------- the whole procedure


export interface InitOptions {
  seed?: string
  noCopy: boolean
  fixSettings: boolean
  dryRun: boolean
  timeoutMs: number
  connectTimeoutMs: number
  mode: RenderMode
  write?: (line: string) => void
  /** called with the plan before anything changes; throw to cancel */
  confirm: (plan: StepReport[]) => Promise<void>
}

export interface InitResult {
  cluster: string
  dryRun: boolean
  changed: boolean
  seed: string | null
  copy: boolean
  nodes: Array<{name: string; version: string; versionNum: number}>
  links: Array<{from: string; to: string; mechanism: string; slot: string; subscription: string; plugin: string}>
  steps: StepReport[]
  fixedSettings: Array<{node: string; sql: string}>
}

export async function runInit(cfg: Config, opts: InitOptions): Promise<InitResult> {
  const cluster = new Cluster(cfg, {connectTimeoutMs: opts.connectTimeoutMs})
  let lock: ClusterLock | undefined
  try {
    if (cfg.nodes.length < 2) {
      throw new MmliteError(`a mesh needs at least two nodes; ${cfg.file} lists ${cfg.nodes.length}`, {code: ExitCode.Config})
    }
    const journal = Journal.open(cfg.file, cfg.cluster)
    if (!opts.dryRun) lock = await ClusterLock.acquire(cluster, 'init', cluster.names, {skipUnreachable: true})

    let pf = await preflight(cfg, cluster)
    const fixedSettings: Array<{node: string; sql: string}> = []
    if (opts.fixSettings && !opts.dryRun && pf.problems.some(p => p.autoFix)) {
      for (const p of pf.problems.filter(q => q.autoFix && q.node)) {
        for (const stmt of p.autoFix!.split(';').map(s => s.trim()).filter(Boolean)) await cluster.node(p.node!).query(stmt)
        fixedSettings.push({node: p.node!, sql: p.autoFix!})
      }
      // pg_reload_conf() only signals: a session sees the new value once it has processed
      // the reload, so check again until the fixed problems are gone (or give up and report)
      const fixed = new Set(pf.problems.filter(q => q.autoFix).map(q => `${q.node}/${q.check}`))
      await pollUntil(
        async () => {
          pf = await preflight(cfg, cluster, {probePlugin: false})
          return !pf.problems.some(q => fixed.has(`${q.node}/${q.check}`))
        },
        {timeoutMs: 10_000, what: 'the fixed settings to take effect'},
      ).catch(() => {})
      pf = await preflight(cfg, cluster)
    }
    const resuming = journal.unfinished().find(u => u.key === 'init')
    const journalSeed = resuming?.op.values.seed as string | undefined
    const seedChoice = chooseSeed(cfg, pf, {seed: opts.seed, journalSeed, noCopy: opts.noCopy})
    const problems = [...pf.problems, ...seedChoice.problems]
    if (problems.length) throw preflightError(problems)

    const initSteps = buildInitSteps(cfg, pf.versions, {seed: seedChoice.seed, noCopy: opts.noCopy, timeoutMs: opts.timeoutMs})
    // schema hook: on a complete mesh, tables added to / removed from mmlite.yaml (src/steps/tables/)
    const steps = await withTableReconcile(cfg, cluster, initSteps, opts.timeoutMs, opts.seed)
    const base = {cfg, cluster, journal}
    const plan = await planSteps(steps, base)
    const edges = initEdges(cfg, pf.versions)
    const result: InitResult = {
      cluster: cfg.cluster,
      dryRun: opts.dryRun,
      changed: false,
      seed: seedChoice.seed ?? null,
      copy: !opts.noCopy,
      nodes: cfg.nodes.map(n => ({name: n.name, version: pf.facts.get(n.name)!.version, versionNum: pf.versions.get(n.name)!})),
      links: edges.map(e => ({from: e.from, to: e.to, mechanism: e.mechanism, plugin: e.plugin, slot: e.name, subscription: e.name})),
      steps: plan,
      fixedSettings,
    }
    const pending = plan.filter(s => s.status === 'planned')
    if (opts.dryRun || pending.length === 0) {
      if (!opts.dryRun && resuming) await journal.begin('init', 'init').then(() => journal.finish())
      return result
    }
    await opts.confirm(plan)
    await journal.begin('init', 'init')
    // (schema: a complete mesh has no seed to remember; --seed/--source then only picks the rows that win for added tables)
    if (seedChoice.seed && plan.some(s => s.id === 'seed-subscriptions' && s.status === 'planned')) await journal.set('seed', seedChoice.seed)
    result.steps = await runSteps(steps, base, {dryRun: false, mode: opts.mode, write: opts.write})
    result.changed = true
    await journal.finish()
    return result
  } finally {
    await lock?.release()
    await cluster.close()
  }
}
