/**
 * The step engine's vocabulary.
 *
 * A procedure is an ordered list of steps. A step is a group of actions that may run
 * concurrently (typically one per node). Every action is idempotent: `check` asks the
 * catalogs whether it is already done, `run` does it, `sql` is exactly what `run` executes
 * (rendered with passwords redacted) for --dry-run and for the plan shown before confirming.
 */
import type {Cluster} from '../cluster/cluster.js'
import type {Config} from '../config/config.js'
import type {Journal} from './journal.js'

export interface PlannedSql {
  node: string
  sql: string
}

export interface StepContext {
  cfg: Config
  cluster: Cluster
  journal: Journal
  /** progress text for the running step (listr output line / plain line) */
  progress(text: string): void
  /** a line that must be shown even in plain mode (warnings, notes) */
  note(text: string): void
}

export interface Action {
  node: string
  /** what it does, for plans */
  label: string
  /** the SQL it runs (redacted rendering); empty for waits that only read */
  sql: string[]
  /** true when already done (read-only) */
  check(ctx: StepContext): Promise<boolean>
  run(ctx: StepContext): Promise<void>
}

export interface Step {
  /** stable id: recorded in the journal and used by tests to kill after a given step */
  id: string
  title: string
  actions: Action[]
  /** run actions one after another instead of concurrently */
  sequential?: boolean
}

export type StepStatus = 'done' | 'already-done' | 'planned'

export interface StepReport {
  id: string
  title: string
  status: StepStatus
  nodes: string[]
  sql: PlannedSql[]
  ms: number
}

/**
 * What every mutating procedure (init, add-node, remove-node, ddl) takes from its command:
 * dry run, connect timeout, how progress is rendered, and the confirmation seam.
 */
export interface ProcedureOptions<Info = never> {
  dryRun: boolean
  connectTimeoutMs: number
  mode: 'tty' | 'plain' | 'silent'
  write?: (line: string) => void
  /** called with the plan before anything changes; throw to cancel */
  confirm: [Info] extends [never] ? (plan: StepReport[]) => Promise<void> : (plan: StepReport[], info: Info) => Promise<void>
}
