/**
 * `mmlite add-node NAME --dsn DSN`: the driver shared by both join strategies.
 *
 *   1. the new node X and the configuration with X appended (names, collisions)
 *   2. the cluster lock on every node, X included
 *   3. resuming an unfinished `add-node:<X>` run: the strategy's recover() first (e.g. re-enable
 *      subscriptions the killed run paused), before anything else
 *   4. preflight as in init for every node and every edge X will have (capacity for N+1 nodes,
 *      plugin where an edge of X needs it, same columns on X), plus the driver's own checks
 *      (X not a member, no leftover objects for X, no other unfinished run) and the strategy's
 *   5. the strategy's steps (plan, confirmation, run), journaled under `add-node:<X>`
 *   6. X appended to mmlite.yaml, then the journal operation closed
 *
 * Strategies: copy (add-node-copy.ts, default) and standby (add-node-standby.ts).
 */
import type {Config, NodeConfig} from '../config/config.js'
import {checkName, editConfigNodes} from '../config/config.js'
import {parseConnInfo, describeTarget} from '../db/conninfo.js'
import {edgeName, objectNameCollisions, publicationName} from '../cluster/naming.js'
import {Cluster} from '../cluster/cluster.js'
import {Journal} from '../engine/journal.js'
import {ClusterLock} from '../engine/lock.js'
import {planSteps, runSteps} from '../engine/runner.js'
import type {ProcedureOptions, StepReport} from '../engine/types.js'
import {MmliteError, ExitCode} from '../errors.js'
import {preflight, preflightError, type Problem} from './preflight.js'
import {edgesOfNode} from './mesh.js'
import {opKey, type AddNodeContext, type AddStrategy, type StrategyModule} from './add-node-context.js'
import {copyStrategy} from './add-node-copy.js'
import {standbyStrategy} from './add-node-standby.js'
import {waitRunningXactsEnd} from './add-node/source-xacts.js'

export const STRATEGIES: Record<AddStrategy, StrategyModule> = {copy: copyStrategy, standby: standbyStrategy}

export interface AddNodeOptions extends ProcedureOptions {
  name: string
  dsn: string
  peerDsn?: string
  source?: string
  strategy?: AddStrategy
  timeoutMs: number
  jobs: number
}

export interface AddNodeResult {
  cluster: string
  node: string
  target: string
  source: string
  strategy: AddStrategy
  dryRun: boolean
  changed: boolean
  resumed: boolean
  /** lines about what a resumed run repaired first */
  recovered: string[]
  nodes: Array<{name: string; version: string; versionNum: number}>
  links: Array<{from: string; to: string; mechanism: string; plugin: string; slot: string; subscription: string}>
  steps: StepReport[]
  /** strategy-specific (copy: sourcePause, copy) */
  [extra: string]: unknown
}

/** The new node's configuration entry from the flags (the DSN may hold a password: never printed). */
export function newNodeConfig(name: string, dsn: string, peerDsn?: string): NodeConfig {
  const problems: string[] = []
  checkName(name, `node name "${name}"`, m => problems.push(m))
  if (problems.length) throw new MmliteError(problems[0], {code: ExitCode.Config})
  const conn = parseConnInfo(dsn)
  const peerConn = peerDsn ? parseConnInfo(peerDsn) : conn
  return {name, dsn, peerDsn, conn, peerConn}
}

/** The configuration as on disk without X, and with X appended. */
export function joinConfigs(cfg: Config, x: NodeConfig): {base: Config; full: Config} {
  const base: Config = {...cfg, nodes: cfg.nodes.filter(n => n.name !== x.name)}
  const full: Config = {...base, nodes: [...base.nodes, x]}
  const collisions = objectNameCollisions(full)
  if (collisions.length) throw new MmliteError(`node name "${x.name}" does not fit this cluster: ${collisions.join('; ')}`, {code: ExitCode.Config})
  return {base, full}
}

/** Objects named for X's links that already exist on the existing nodes (a fresh run refuses them). */
async function leftovers(cluster: Cluster, base: Config, x: string): Promise<Problem[]> {
  const problems: Problem[] = []
  // on an existing node n: the slot of link n→X and the subscription of link X→n
  const found = await cluster.each(async c => {
    const slots = await c.query<{n: string}>('SELECT slot_name AS n FROM pg_replication_slots WHERE slot_name = $1', [edgeName(base.cluster, c.name, x)])
    const subs = await c.query<{n: string}>(
      'SELECT subname AS n FROM pg_subscription WHERE subname = $1 AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())',
      [edgeName(base.cluster, x, c.name)],
    )
    return [...slots.map(r => `slot ${r.n}`), ...subs.map(r => `subscription ${r.n}`)]
  }, base.nodes.map(n => n.name))
  for (const [node, r] of found) {
    if (!r.ok || r.value.length === 0) continue
    problems.push({
      node,
      check: 'leftover',
      message: `objects for ${x} already exist (${r.value.join(', ')}) but no add-node run of ${x} is unfinished`,
      fix: `They are leftovers of an earlier attempt: remove them (\`mmlite remove-node ${x}\`, or drop them by hand on ${node}), then re-run.`,
    })
  }
  return problems
}

/** The member whose database X's DSN reaches (same server instance and database), if any. */
async function sameServerAsMember(cluster: Cluster, base: Config, x: string): Promise<string | undefined> {
  const sql = `SELECT (SELECT system_identifier::text FROM pg_control_system()) || '/' || pg_postmaster_start_time()::text || '/' || current_database() AS id`
  const ids = await cluster.each(c => c.one<{id: string}>(sql), [...base.nodes.map(n => n.name), x])
  const xi = ids.get(x)
  if (!xi?.ok || !xi.value) return undefined
  return base.nodes.map(n => n.name).find(n => {
    const r = ids.get(n)
    return r?.ok && r.value?.id === xi.value!.id
  })
}

export async function runAddNode(cfg: Config, opts: AddNodeOptions): Promise<AddNodeResult> {
  const journal = Journal.open(cfg.file, cfg.cluster)
  const key = opKey(opts.name)
  const unfinished = journal.unfinished()
  const mine = unfinished.find(u => u.key === key)
  const x = newNodeConfig(opts.name, opts.dsn, opts.peerDsn)

  // already a member: in mmlite.yaml and not an add-node of it that is still finishing
  if (cfg.nodes.some(n => n.name === x.name) && !mine) {
    throw preflightError([
      {node: x.name, check: 'member', message: `${x.name} is already a member of cluster "${cfg.cluster}" (listed in ${cfg.file})`, fix: 'Choose another name, or remove the node first (`mmlite remove-node`).'},
    ])
  }
  const {base, full} = joinConfigs(cfg, x)
  // one node left (e.g. after remove-node down to one) is a mesh to grow again: its publication is kept
  if (base.nodes.length < 1) {
    throw new MmliteError(`cluster "${cfg.cluster}" has no node; add-node joins an existing mesh (build one with \`mmlite init\`)`, {code: ExitCode.Config})
  }
  const recorded = (mine?.op.values ?? {}) as {strategy?: AddStrategy; source?: string; x?: {target: string; systemIdentifier: string; database: string}}
  const early: Problem[] = []
  if (mine && opts.strategy && recorded.strategy && opts.strategy !== recorded.strategy)
    early.push({check: 'strategy', message: `an unfinished add-node of ${x.name} uses --strategy ${recorded.strategy}; --strategy ${opts.strategy} disagrees`, fix: `Re-run with --strategy ${recorded.strategy} (or without) to finish it.`})
  if (mine && opts.source && recorded.source && opts.source !== recorded.source)
    early.push({check: 'source', message: `an unfinished add-node of ${x.name} copies from ${recorded.source}; --source ${opts.source} disagrees`, fix: `Re-run with --source ${recorded.source} (or without) to finish it.`})
  const strategy: AddStrategy = recorded.strategy ?? opts.strategy ?? 'copy'
  const source = recorded.source ?? opts.source ?? base.nodes[0].name
  if (source === x.name || !base.nodes.some(n => n.name === source))
    early.push({check: 'source', message: `--source ${source} is not an existing node of the cluster`, fix: `Use one of: ${base.nodes.map(n => n.name).join(', ')}`})
  for (const u of unfinished.filter(u => u.key !== key)) {
    early.push({
      check: 'journal',
      message: `another mmlite operation is unfinished: ${u.key} (started ${u.op.startedAt})`,
      fix: `Finish it first by re-running \`mmlite ${u.op.command}\` from this directory.`,
    })
  }
  if (early.length) throw preflightError(early)

  const mod = STRATEGIES[strategy]
  const cluster = new Cluster(full, {connectTimeoutMs: opts.connectTimeoutMs})
  const versions = new Map<string, number>()
  const ctx: AddNodeContext = {
    cfg: base,
    full,
    x,
    source,
    others: base.nodes.map(n => n.name).filter(n => n !== source),
    versions,
    cluster,
    journal,
    timeoutMs: opts.timeoutMs,
    jobs: opts.jobs,
  }
  let lock: ClusterLock | undefined
  try {
    // X must not be one of the members itself (the lock below would then refuse us to ourselves)
    const same = await sameServerAsMember(cluster, base, x.name)
    if (same) {
      throw preflightError([
        {node: x.name, check: 'identity', message: `--dsn of ${x.name} reaches the same database as member ${same} (${describeTarget(x.conn)})`, fix: 'Point --dsn at the new server.'},
      ])
    }
    if (!opts.dryRun) lock = await ClusterLock.acquire(cluster, 'add-node', cluster.names, {skipUnreachable: true})

    // a killed run may have left something that must not stay so (paused subscriptions): first
    const recovered: string[] = []
    if (mine && !opts.dryRun) {
      await journal.begin(key, 'add-node')
      if (mod.recover) recovered.push(...(await mod.recover(ctx)))
    }

    // every logical slot a run creates on an existing node (and the plugin probe of preflight)
    // waits for the transactions running there when it starts, prepared ones included: wait
    // for those first, bounded by --timeout, naming them (steps/add-node/source-xacts.ts)
    if (!mine && !opts.dryRun) {
      await Promise.all(
        base.nodes.map(async n => {
          const conn = cluster.node(n.name)
          // an unreachable node is preflight's to report
          if (!(await conn.connect().then(() => true, () => false))) return
          await waitRunningXactsEnd(conn, n.name, {
            timeoutMs: opts.timeoutMs,
            why: `the slots for ${x.name} created there would wait for them`,
            progress: () => {},
            note: line => opts.write?.(`  ! ${line}`),
            nothingDone: 'nothing was changed',
          })
        }),
      )
    }

    const pf = await preflight(full, cluster, {allowRecovery: strategy === 'standby' ? [x.name] : [], checkData: false})
    for (const [n, v] of pf.versions) versions.set(n, v)
    const problems = [...pf.problems]
    const reachable = full.nodes.every(n => pf.facts.has(n.name))
    if (reachable) {
      const xf = pf.facts.get(x.name)!
      // a standby clone keeps its source's system identifier: compare where --dsn points as well
      if (recorded.x && (recorded.x.systemIdentifier !== xf.systemIdentifier || recorded.x.database !== xf.database || recorded.x.target !== describeTarget(x.conn))) {
        problems.push({
          node: x.name,
          check: 'identity',
          message: `the unfinished add-node of ${x.name} was run against another server (${recorded.x.target}, system identifier ${recorded.x.systemIdentifier}); --dsn now points at ${describeTarget(x.conn)} (system identifier ${xf.systemIdentifier})`,
          fix: 'Re-run with the --dsn of the first run.',
        })
      }
      // the existing mesh must exist: every node has the cluster's publication
      const pubs = await cluster.each(c => c.one<{n: number}>('SELECT count(*)::int AS n FROM pg_publication WHERE pubname = $1', [publicationName(cfg.cluster)]), base.nodes.map(n => n.name))
      for (const [n, r] of pubs) {
        if (r.ok && r.value?.n === 0) problems.push({node: n, check: 'mesh', message: `publication ${publicationName(cfg.cluster)} is missing: the cluster is not initialized`, fix: 'Run `mmlite init` first.'})
      }
      if (!mine) problems.push(...(await leftovers(cluster, base, x.name)))
      problems.push(...(await mod.preflight(ctx)))
    }
    if (problems.length) throw preflightError(problems)

    const steps = mod.buildSteps(ctx)
    const runBase = {cfg: full, cluster, journal}
    const plan = await planSteps(steps, runBase)
    const {inbound, outbound} = edgesOfNode(full, x.name, versions)
    const result: AddNodeResult = {
      cluster: cfg.cluster,
      node: x.name,
      target: describeTarget(x.conn),
      source,
      strategy,
      dryRun: opts.dryRun,
      changed: false,
      resumed: Boolean(mine),
      recovered,
      nodes: full.nodes.map(n => ({name: n.name, version: pf.facts.get(n.name)!.version, versionNum: versions.get(n.name)!})),
      links: [...inbound, ...outbound].map(e => ({from: e.from, to: e.to, mechanism: e.mechanism, plugin: e.plugin, slot: e.name, subscription: e.name})),
      steps: plan,
    }
    if (opts.dryRun) return result

    const pending = plan.filter(s => s.status === 'planned')
    if (pending.length) await opts.confirm(plan)
    if (!mine) {
      await journal.begin(key, 'add-node')
      await journal.set('strategy', strategy)
      await journal.set('source', source)
      const xf = pf.facts.get(x.name)!
      await journal.set('x', {target: describeTarget(x.conn), systemIdentifier: xf.systemIdentifier, database: xf.database})
    }
    result.steps = await runSteps(steps, runBase, {dryRun: false, mode: opts.mode, write: opts.write})
    result.changed = result.steps.some(s => s.status === 'done') || recovered.length > 0
    await editConfigNodes(cfg.file, {add: {name: x.name, dsn: x.dsn, ...(x.peerDsn ? {peer_dsn: x.peerDsn} : {})}})
    Object.assign(result, mod.report?.(ctx) ?? {})
    await journal.finish()
    return result
  } finally {
    await mod.cleanup?.(ctx).catch(() => {})
    await lock?.release()
    await cluster.close()
  }
}
