/**
 * `mmlite doctor`: every risk to a healthy mesh, found read-only on every node concurrently,
 * each finding with the exact SQL or configuration change that fixes it. `--fix` applies the
 * fixes that are safe to automate — stagger sequences, drop orphan slots, reset handled
 * counters — as ordinary steps (checked, idempotent, --dry-run prints the SQL), under the
 * cluster lock.
 */
import type {Config} from '../../config/config.js'
import {Cluster} from '../../cluster/cluster.js'
import {Journal} from '../../engine/journal.js'
import {ClusterLock} from '../../engine/lock.js'
import {runSteps, type RenderMode} from '../../engine/runner.js'
import type {Step, StepReport} from '../../engine/types.js'
import {ExitCode} from '../../errors.js'
import {readUnfinished} from '../../cluster/status.js'
import {collectDoctor} from './collect.js'
import {checkDrift} from './checks/drift.js'
import {checkMinors} from './checks/minors.js'
import {checkOrphans} from './checks/orphans.js'
import {checkPrepared} from './checks/prepared.js'
import {checkSequences} from './checks/sequences.js'
import {checkSettings} from './checks/settings.js'
import {checkSubscriptions} from './checks/subscriptions.js'
import {checkTables} from './checks/tables.js'
import {checkWal} from './checks/wal.js'
import {planSequenceFixes, staggerStep, type SequencePlan} from './fix-sequences.js'
import {dropOrphanSlotsStep, resetCountersStep} from './fix-slots.js'
import type {DoctorInput, Finding, NodeResult, Severity} from './types.js'

export type DoctorHealth = 'ok' | 'warning' | 'critical' | 'unknown'

export interface DoctorResult {
  cluster: string
  health: DoctorHealth
  checkedAt: string
  nodes: Array<{name: string; reachable: boolean; version: string | null; error?: string}>
  findings: Finding[]
  /** with --fix / --dry-run: the steps (SQL per node) run or planned */
  fix?: {dryRun: boolean; steps: StepReport[]; sequences: SequencePlan[]; notDone: string[]}
}

const ORDER: Record<Severity, number> = {critical: 0, warning: 1, info: 2}

/** All checks over the collected facts (pure). */
export function runChecks(input: DoctorInput): Finding[] {
  const unreachable: Finding[] = input.nodes
    .filter(n => !n.reachable)
    .map(n => ({check: 'reachable', severity: 'critical', node: n.name, object: 'connection', message: n.error ?? `${n.name} could not be reached`, fix: 'Check that the server runs, the dsn in mmlite.yaml and pg_hba.conf; the other nodes were still checked.'}))
  const unreadable: Finding[] = input.nodes
    .filter(n => n.reachable && !n.facts)
    .map(n => ({check: 'reachable', severity: 'critical', node: n.name, object: 'catalogs', message: n.error ?? `${n.name} could not be read`, fix: 'Run doctor as a superuser (or a role that can read pg_control_system(), pg_replication_slots and the sequences of the replicated tables).'}))
  const findings = [
    ...unreachable,
    ...unreadable,
    ...checkSubscriptions(input),
    ...checkWal(input),
    ...checkTables(input),
    ...checkDrift(input),
    ...checkSequences(input),
    ...checkSettings(input),
    ...checkMinors(input),
    ...checkOrphans(input),
    ...checkPrepared(input),
  ]
  return findings.sort((a, b) => ORDER[a.severity] - ORDER[b.severity])
}

export function healthOf(nodes: NodeResult[], findings: Finding[]): DoctorHealth {
  if (!nodes.some(n => n.facts)) return 'unknown'
  if (findings.some(f => f.severity === 'critical')) return 'critical'
  if (findings.some(f => f.severity === 'warning')) return 'warning'
  return 'ok'
}

export function exitCodeForDoctor(h: DoctorHealth): ExitCode {
  return h === 'ok' ? ExitCode.Ok : h === 'warning' ? ExitCode.Warning : h === 'critical' ? ExitCode.Failed : ExitCode.Unknown
}

/** What --fix leaves to the operator, said plainly. */
function notAutomated(findings: Finding[]): string[] {
  const manual = findings.filter(f => !f.autoFix && f.severity !== 'info')
  if (!manual.length) return []
  return [
    `${manual.length} finding(s) need a decision mmlite does not take for you (server settings and restarts, schema changes, dropping subscriptions or active slots, upgrades): their fix is printed with each finding.`,
  ]
}

export interface DoctorOptions {
  connectTimeoutMs: number
  sampleMs: number
  fix: boolean
  dryRun: boolean
  mode: RenderMode
  write?: (line: string) => void
  /** shown the planned steps and the findings they fix; throws to decline */
  confirm(plan: StepReport[], findings: Finding[]): Promise<void>
}

export async function runDoctor(cfg: Config, opts: DoctorOptions): Promise<DoctorResult> {
  const unfinished = readUnfinished(cfg).map(u => ({key: u.key, command: u.command, startedAt: u.startedAt, values: u.values}))
  const nodes = await collectDoctor(cfg, {connectTimeoutMs: opts.connectTimeoutMs, sampleMs: opts.sampleMs})
  const input: DoctorInput = {cfg, nodes, unfinished}
  const findings = runChecks(input)
  const result: DoctorResult = {
    cluster: cfg.cluster,
    health: healthOf(nodes, findings),
    checkedAt: new Date().toISOString(),
    nodes: nodes.map(n => ({name: n.name, reachable: n.reachable, version: n.facts?.version ?? null, ...(n.error ? {error: n.error} : {})})),
    findings,
  }
  if (!opts.fix && !opts.dryRun) return result
  result.fix = await applyFixes(cfg, input, findings, opts)
  return result
}

async function applyFixes(cfg: Config, input: DoctorInput, findings: Finding[], opts: DoctorOptions): Promise<NonNullable<DoctorResult['fix']>> {
  const cluster = new Cluster(cfg, {connectTimeoutMs: opts.connectTimeoutMs})
  const journal = Journal.open(cfg.file, cfg.cluster)
  let lock: ClusterLock | undefined
  try {
    const reachable = input.nodes.filter(n => n.reachable).map(n => n.name)
    if (!opts.dryRun) lock = await ClusterLock.acquire(cluster, 'doctor --fix', reachable)
    const sequences = findings.some(f => f.autoFix === 'stagger-sequences') ? await planSequenceFixes(input, cluster) : []
    const steps = [sequences.length ? staggerStep(sequences, input) : undefined, dropOrphanSlotsStep(findings), resetCountersStep(findings)].filter((s): s is Step => Boolean(s))
    const base = {cfg, cluster, journal}
    const plan = await runSteps(steps, base, {dryRun: true, mode: 'silent'})
    const notDone = notAutomated(findings)
    if (opts.dryRun || !plan.some(s => s.status === 'planned')) return {dryRun: opts.dryRun, steps: plan, sequences, notDone}
    await opts.confirm(plan, findings)
    await journal.begin('doctor-fix', 'doctor --fix')
    const reports = await runSteps(steps, base, {dryRun: false, mode: opts.mode, write: opts.write})
    await journal.finish()
    return {dryRun: false, steps: reports, sequences, notDone}
  } finally {
    await lock?.release()
    await cluster.close()
  }
}
