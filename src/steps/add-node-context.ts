/**
 * What the two add-node strategies (add-node-copy.ts, add-node-standby.ts) are given by the
 * add-node driver (add-node.ts): the cluster with the new node X, the source S, the other
 * existing nodes P, versions, and the run's journal (operation key `add-node:<X>`).
 *
 * Values a later step needs (LSNs, which subscriptions were paused, ...) go into the journal
 * with ctx.journal.set() the moment they are produced, so a killed run resumes exactly.
 */
import type {Cluster} from '../cluster/cluster.js'
import type {Config, NodeConfig} from '../config/config.js'
import type {Journal} from '../engine/journal.js'
import type {Step} from '../engine/types.js'
import type {Problem} from './preflight.js'

export type AddStrategy = 'copy' | 'standby'

/** The journal key of the add-node run for new node `node`. */
export function opKey(node: string): string {
  return `add-node:${node}`
}

/** Values of the unfinished add-node run for `node` (read without beginning it: preflight changes nothing); {} when none. */
export function unfinishedValues<T extends object>(journal: Journal, node: string): Partial<T> {
  const key = opKey(node)
  return (journal.unfinished().find(u => u.key === key)?.op.values ?? {}) as Partial<T>
}

export interface AddNodeContext {
  /** configuration as it is on disk (without X) */
  cfg: Config
  /** configuration with X appended (use for edge names, mechanisms, conninfo of X) */
  full: Config
  /** the new node */
  x: NodeConfig
  /** the source node S */
  source: string
  /** every existing node but S */
  others: string[]
  /** server_version_num of every node, X included */
  versions: Map<string, number>
  /** connections to every node, X included */
  cluster: Cluster
  journal: Journal
  /** how long a wait may take */
  timeoutMs: number
  /** parallel COPY connections (copy strategy) */
  jobs: number
}

export interface StrategyModule {
  /** strategy-specific read-only checks of X (and S); every problem at once */
  preflight(ctx: AddNodeContext): Promise<Problem[]>
  /** the ordered steps; each action idempotent (check, then act) */
  buildSteps(ctx: AddNodeContext): Step[]
  /**
   * Optional: called by the driver when it resumes an unfinished run (not with --dry-run),
   * after taking the lock and before preflight: undo what the killed run left half-done and
   * must not stay so (e.g. re-enable subscriptions it paused). Returns lines to show.
   */
  recover?(ctx: AddNodeContext): Promise<string[]>
  /** Optional: strategy-specific fields for the command's result, read after the steps ran. */
  report?(ctx: AddNodeContext): Record<string, unknown>
  /** Optional: close sessions the steps may still hold; called once at the end, also after a failure. */
  cleanup?(ctx: AddNodeContext): Promise<void>
}
