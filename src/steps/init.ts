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
import type {ProcedureOptions, Step} from '../engine/types.js'
import {disableOnErrorAction, makeEdge, streamingAction, publicationAction, slotAction, subscriptionAction, waitStreamingActions, waitSyncAction, type Edge} from './mesh.js'
import {MmliteError, ExitCode} from '../errors.js'
import {Cluster} from '../cluster/cluster.js'
import {Journal} from '../engine/journal.js'
import {ClusterLock} from '../engine/lock.js'
import {runSteps, planSteps} from '../engine/runner.js'
import type {StepReport} from '../engine/types.js'
import {otherOperationsProblems, preflight, preflightError} from './preflight.js'
import {slotStartProblems} from './slot-guard.js'
import {pollUntil} from '../util/poll.js'
import type {PreflightResult, Problem} from './preflight.js'
import {edgeName} from '../cluster/naming.js'
import {dataBeforeSlotsError, guardedSlotsAction} from './init/guarded-slots.js'
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
  opts: {
    seed?: string
    journalSeed?: string
    /** the unfinished init recorded --no-copy */
    journalNoCopy?: boolean
    noCopy: boolean
    /** per node: this cluster's slots on it (outbound links) */
    slots?: Map<string, Set<string>>
  },
): {seed?: string; noCopy: boolean; problems: Problem[]} {
  const problems: Problem[] = []
  if (opts.seed && !cfg.nodes.some(n => n.name === opts.seed)) {
    problems.push({check: 'seed', message: `--seed ${opts.seed} is not a node of the configuration`, fix: `Use one of: ${cfg.nodes.map(n => n.name).join(', ')}`})
    return {noCopy: opts.noCopy, problems}
  }
  // an unfinished init decided how the data moves: its decision stands
  if (opts.journalSeed && opts.noCopy) {
    problems.push({
      check: 'seed',
      message: `an unfinished init is copying from ${opts.journalSeed}; --no-copy disagrees`,
      fix: `Re-run without --no-copy to finish it (it copies from ${opts.journalSeed} as it started to).`,
    })
    return {noCopy: false, problems}
  }
  if (opts.journalNoCopy) {
    if (opts.seed) {
      problems.push({check: 'seed', message: `an unfinished init runs with --no-copy; --seed ${opts.seed} disagrees`, fix: 'Re-run with --no-copy (and without --seed) to finish it.'})
    }
    return {noCopy: true, problems}
  }
  if (opts.noCopy) return {noCopy: true, problems}
  if (opts.journalSeed && opts.seed && opts.journalSeed !== opts.seed) {
    problems.push({
      check: 'seed',
      message: `an unfinished init is copying from ${opts.journalSeed}; --seed ${opts.seed} disagrees`,
      fix: `Re-run without --seed (or with --seed ${opts.journalSeed}) to finish it.`,
    })
    return {noCopy: false, problems}
  }
  const names = cfg.nodes.map(n => n.name)
  const outbound = (n: string) => names.filter(p => p !== n).map(p => edgeName(cfg.cluster, n, p))
  const slotsOn = (n: string) => outbound(n).filter(s => opts.slots?.get(n)?.has(s))
  // Nodes that already hold a subscription of this cluster got their data from it. On a
  // resumed init, a node whose outbound slots all exist was proven empty when they were created
  // (guarded-slots.ts): what it holds now was written since and is streamed to every peer.
  const withData = names.filter(n => !pf.subscribed.has(n) && (pf.tables.get(n)?.hasData ?? []).some(Boolean))
  const resumed = opts.journalSeed !== undefined
  const seed = opts.journalSeed ?? opts.seed ?? (withData.length === 1 ? withData[0] : withData.length === 0 ? names[0] : undefined)
  const tablesWithData = (n: string) => cfg.tables.filter((_, i) => pf.tables.get(n)?.hasData[i]).map(t => t.display).join(', ')
  if (resumed) {
    for (const n of withData.filter(n => n !== seed && slotsOn(n).length < outbound(n).length)) {
      const err = dataBeforeSlotsError(n, seed!, slotsOn(n))
      problems.push({node: n, check: 'data', message: `${tablesWithData(n)}: ${err.message}`, fix: err.suggestions.join(' ')})
    }
    return {seed, noCopy: false, problems}
  }
  const others = withData.filter(n => n !== seed)
  if (!seed || others.length) {
    // never advise an action that replicates: a node with a slot of this cluster would send a TRUNCATE on
    const captured = withData.filter(n => slotsOn(n).length > 0)
    problems.push({
      check: 'data',
      message: `replicated tables hold data on more than one node (${withData.map(n => `${n}: ${tablesWithData(n)}`).join('; ')}); init copies from one seed node into empty tables`,
      fix: captured.length
        ? `${captured.map(n => `${n} has slots of this cluster (${slotsOn(n).join(', ')})`).join('; ')}: whatever is deleted there would be sent to the other nodes, so do not empty tables while they exist. No unfinished init is recorded in this directory: re-run from the directory of the init that created them, or, if nothing subscribes to them, drop them (pg_drop_replication_slot) first. Then choose the node whose data the cluster keeps (--seed), or pass --no-copy if the nodes are identical.`
        : `Choose the node whose data the cluster keeps (--seed <node>) and empty the replicated tables on the others (no slot of this cluster exists there yet, so that stays local), or, if the nodes are already identical (restored from one backup), pass --no-copy.`,
    })
  }
  return {seed, noCopy: false, problems}
}

/** This cluster's slots on each reachable node. */
export async function clusterSlots(cluster: Cluster, cfg: Config): Promise<Map<string, Set<string>>> {
  const names = cfg.nodes.map(n => n.name)
  const all = names.flatMap(a => names.filter(b => b !== a).map(b => edgeName(cfg.cluster, a, b)))
  const r = await cluster.each(c => c.query<{n: string}>('SELECT slot_name::pg_catalog.text AS n FROM pg_catalog.pg_replication_slots WHERE slot_name::pg_catalog.text = ANY($1::pg_catalog.text[])', [all]))
  const out = new Map<string, Set<string>>()
  for (const [n, v] of r) if (v.ok) out.set(n, new Set(v.value.map(x => x.n)))
  return out
}

/** Nodes of the configuration that are the same database (same server instance and database). */
export async function sameDatabases(cluster: Cluster, cfg: Config): Promise<Problem[]> {
  const q = `SELECT (SELECT system_identifier::pg_catalog.text FROM pg_catalog.pg_control_system()) || '/' || pg_catalog.pg_postmaster_start_time()::pg_catalog.text || '/' || pg_catalog.current_database()::pg_catalog.text AS id`
  const ids = await cluster.each(c => c.one<{id: string}>(q))
  const byId = new Map<string, string[]>()
  for (const [n, r] of ids) if (r.ok && r.value) byId.set(r.value.id, [...(byId.get(r.value.id) ?? []), n])
  const order = cfg.nodes.map(n => n.name)
  return [...byId.values()]
    .filter(ns => ns.length > 1)
    .map(ns => ns.sort((a, b) => order.indexOf(a) - order.indexOf(b)))
    .map(ns => ({
      node: ns[1],
      check: 'identity',
      message: `nodes ${ns.join(' and ')} are the same database (same server and database name)`,
      fix: 'Point each node\'s dsn at its own server (or its own database).',
    }))
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
  // copy mode: a non-seed node's outbound slots are made under a lock of its (empty) tables
  const guarded = (e: Edge) => Boolean(seed) && e.from !== seed
  const guardedNodes = names.filter(n => earlySlots.some(e => e.from === n && guarded(e)))
  const lateSlots = edges.filter(lateSlot)
  const restEdges = edges.filter(e => !seedEdges.includes(e))

  const steps: Step[] = [
    {id: 'publications', title: 'Create publications on every node', actions: names.map(n => publicationAction(cfg, n))},
    {
      id: 'slots',
      title: 'Create replication slots for every directed link',
      actions: [
        ...earlySlots.filter(e => !guarded(e)).map(slotAction),
        ...guardedNodes.map(n => guardedSlotsAction(cfg, n, seed!, earlySlots.filter(e => e.from === n))),
      ],
    },
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


export interface InitOptions extends ProcedureOptions {
  seed?: string
  noCopy: boolean
  fixSettings: boolean
  timeoutMs: number
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
    // like add-node: one operation at a time; an unfinished other one must be finished first
    const others = otherOperationsProblems(journal.unfinished(), ['init'])
    if (others.length) throw preflightError(others)
    // two entries reaching one database: refused before the lock (it would refuse us to ourselves)
    const identity = await sameDatabases(cluster, cfg)
    if (identity.length) throw preflightError(identity)
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
    const journalNoCopy = resuming?.op.values.noCopy === true
    const slots = await clusterSlots(cluster, cfg)
    const seedChoice = chooseSeed(cfg, pf, {seed: opts.seed, journalSeed, journalNoCopy, noCopy: opts.noCopy, slots})
    const noCopy = seedChoice.noCopy
    const problems = [...pf.problems, ...seedChoice.problems]
    // hook (addnode-exact, #7.8): init creates every node's slots while the nodes may take writes
    problems.push(...slotStartProblems(cfg.nodes.map(n => n.name), pf.versions, n => `the slots init creates on ${n}`))
    if (problems.length) throw preflightError(problems)

    const initSteps = buildInitSteps(cfg, pf.versions, {seed: seedChoice.seed, noCopy, timeoutMs: opts.timeoutMs})
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
      copy: !noCopy,
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
    // a complete mesh has no seed to remember (--seed/--source then only picks the rows that win for added tables)
    const seeding = seedChoice.seed && plan.some(s => s.id === 'seed-subscriptions' && s.status === 'planned')
    if (seeding) await journal.set('seed', seedChoice.seed)
    else if (noCopy) await journal.set('noCopy', true)
    result.steps = await runSteps(steps, base, {dryRun: false, mode: opts.mode, write: opts.write})
    result.changed = true
    await journal.finish()
    return result
  } finally {
    await lock?.release()
    await cluster.close()
  }
}
