/**
 * `mmlite repair`: make the other nodes match the kept version of every row verify finds
 * divergent, without echo.
 *
 *   preflight   every node reachable, --from is a node, --policy newest needs
 *               track_commit_timestamp = on everywhere; the cluster lock (not with --dry-run)
 *   verify      the rows that differ for good (unsettled rows are never repaired)
 *   plan        per node: INSERT / UPDATE / DELETE, with a guard per row
 *   apply       (not with --dry-run) under origin mmlite_repair, replica role, small
 *               transactions, audited in .mmlite/repair-<time>.jsonl
 *   re-verify   the same tables: must be consistent
 */
import {Cluster} from '../../cluster/cluster.js'
import {ClusterLock} from '../../engine/lock.js'
import type {Config} from '../../config/config.js'
import {MmliteError, ExitCode, errorMessage} from '../../errors.js'
import {verifyDetailed} from '../verify/verify.js'
import type {VerifyOptions, VerifyResult} from '../verify/types.js'
import {applyOnNode, nodeScript, REPAIR_ORIGIN} from './apply.js'
import {Audit} from './audit.js'
import {planRepair, type Change, type Policy} from './plan.js'

export const REPAIR_SCHEMA_VERSION = 1

export interface RepairOptions extends VerifyOptions {
  policy: Policy
  from?: string
  dryRun: boolean
  stateDir: string
  /** asked once the plan is known (not with --dry-run or when there is nothing to do) */
  confirm: (summary: string) => Promise<void>
}

export interface RepairResult {
  schemaVersion: number
  cluster: string
  policy: Policy
  from: string | null
  dryRun: boolean
  origin: string
  /** every planned change (node, table, key, action, source, before, after, sql) */
  changes: Change[]
  /** dry-run: node → the exact statements, in order */
  script?: Record<string, string[]>
  applied: number
  /** rows changed since verify read them: left alone (re-run repair) */
  skipped: Change[]
  unsettled: number
  auditFile?: string
  before: VerifyResult
  after?: VerifyResult
}

async function preflight(cfg: Config, cluster: Cluster, o: RepairOptions): Promise<void> {
  if (o.policy === 'from' && !cfg.nodes.some(n => n.name === o.from)) {
    throw new MmliteError(`--from ${o.from}: no such node`, {code: ExitCode.Config, suggestions: [`Nodes: ${cfg.nodes.map(n => n.name).join(', ')}`]})
  }
  const st = await cluster.each(c => c.one<{v: string}>("SELECT pg_catalog.current_setting('track_commit_timestamp') AS v"))
  const down = [...st].filter(([, r]) => !r.ok).map(([n, r]) => `${n}: ${errorMessage((r as {error: unknown}).error)}`)
  if (down.length) throw new MmliteError(`repair needs every node, and ${down.length === 1 ? 'one is' : 'some are'} unreachable; nothing was changed`, {code: ExitCode.Unreachable, details: down})
  const off = [...st].filter(([, r]) => r.ok && r.value?.v !== 'on').map(([n]) => n)
  if (o.policy === 'newest' && off.length) {
    throw new MmliteError(`--policy newest needs track_commit_timestamp = on on every node; it is off on ${off.join(', ')}; nothing was changed`, {
      code: ExitCode.Preflight,
      suggestions: ['ALTER SYSTEM SET track_commit_timestamp = on, then restart those nodes (rows written before have no commit timestamp), or use --from NODE.'],
    })
  }
}

export async function runRepair(cfg: Config, o: RepairOptions): Promise<RepairResult> {
  const cluster = new Cluster(cfg)
  let lock: ClusterLock | undefined
  try {
    await preflight(cfg, cluster, o)
    // not alongside another mutating mmlite run (join, leave, skip-tx, another repair)
    if (!o.dryRun) lock = await ClusterLock.acquire(cluster, 'repair')
    return await repairLocked(cfg, o)
  } finally {
    await lock?.release()
    await cluster.close()
  }
}

async function repairLocked(cfg: Config, o: RepairOptions): Promise<RepairResult> {
  const ctx = await verifyDetailed(cfg, {...o, commitTs: o.policy === 'newest'})
  const errors = ctx.result.tables.filter(t => t.status === 'error')
  if (errors.length || ctx.live.length < cfg.nodes.length) {
    throw new MmliteError('verify could not compare every table on every node; nothing was changed', {code: ExitCode.Unknown, details: errors.map(t => `${t.table}: ${t.error}`)})
  }
  const changes = planRepair(ctx, o.policy, o.from ?? '')
  const byNode = new Map<string, Change[]>()
  for (const c of changes) byNode.set(c.node, [...(byNode.get(c.node) ?? []), c])
  const res: RepairResult = {
    schemaVersion: REPAIR_SCHEMA_VERSION,
    cluster: cfg.cluster,
    policy: o.policy,
    from: o.from ?? null,
    dryRun: o.dryRun,
    origin: REPAIR_ORIGIN,
    changes,
    applied: 0,
    skipped: [],
    unsettled: ctx.result.tables.reduce((a, t) => a + t.unsettledCount, 0),
    before: ctx.result,
  }
  if (o.dryRun) {
    res.script = Object.fromEntries([...byNode].map(([n, cs]) => [n, nodeScript(cs)]))
    return res
  }
  if (changes.length === 0) return res
  await o.confirm(`change ${changes.length} row(s) on ${[...byNode.keys()].join(', ')}`)
  const audit = await Audit.create(o.stateDir, {cluster: cfg.cluster, policy: o.policy, from: o.from ?? null, origin: REPAIR_ORIGIN, planned: changes.length})
  res.auditFile = audit.file
  const apply = new Cluster(cfg)
  try {
    const outcomes = await Promise.all([...byNode].map(([n, cs]) => applyOnNode(apply.node(n), cs, audit)))
    for (const oc of outcomes) {
      res.applied += oc.applied.length
      res.skipped.push(...oc.skipped)
    }
  } finally {
    await apply.close()
  }
  res.after = (await verifyDetailed(cfg, {...o, commitTs: false})).result
  return res
}
