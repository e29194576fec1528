/** Result of `mmlite verify` (also what --json prints; schemaVersion bumps on any breaking change). */
import type {Cluster} from '../../cluster/cluster.js'
import type {TableName} from '../../config/tables.js'
import type {Session} from './session.js'
import type {TableShape} from './shape.js'
import type {RowVersion} from './rows.js'

export const VERIFY_SCHEMA_VERSION = 1

export type TableStatus = 'consistent' | 'unsettled' | 'divergent' | 'error'

export interface KeyReport {
  /** primary-key column → value as text */
  key: Record<string, string>
  /** node → the row (column → text, null = NULL), or null when the row is absent there */
  versions: Record<string, Record<string, string | null> | null>
  /** node → commit timestamp of its version (only with commit timestamps asked, e.g. repair --policy newest) */
  committed?: Record<string, string | null>
}

export interface TableReport {
  table: string
  status: TableStatus
  /** nodes compared for this table */
  nodes: string[]
  /** rows per node, from the hash pass */
  rows: Record<string, number>
  ranges: number
  differingRanges: number
  divergentCount: number
  unsettledCount: number
  /** the first ones (all of them are in reportFile when cut) */
  divergent: KeyReport[]
  unsettled: KeyReport[]
  notes: string[]
  error?: string
}

export interface VerifyResult {
  schemaVersion: number
  cluster: string
  status: TableStatus
  nodes: Array<{name: string; reachable: boolean; error?: string}>
  /** each reachable node's WAL insert position when the first read began */
  startLsn: Record<string, string>
  settle: {rounds: number; lagging: string[]}
  tables: TableReport[]
  /** full lists when the printed ones were cut */
  reportFile?: string
  elapsedMs: number
}

export interface VerifyOptions {
  tables: TableName[]
  blockRows: number
  jobs: number
  settleRounds: number
  settleTimeoutMs: number
  commitTs?: boolean
  progress?: (line: string) => void
}

/** Per table, while running (not printed). */
export interface TableWork {
  table: TableName
  report: TableReport
  shapes: Map<string, TableShape>
  /** columns compared (present on every node), sorted by name */
  names: string[]
  /** key id → per-node version (undefined = absent), in ctx.live order */
  candidates: Map<string, Array<RowVersion | undefined>>
  /** settled keys with their final versions */
  divergent: Map<string, Array<RowVersion | undefined>>
}

export interface VerifyContext {
  cluster: Cluster
  opts: VerifyOptions
  /** reachable nodes, in configuration order */
  live: string[]
  /** pinned sessions: pool[job][node] */
  pool: Array<Map<string, Session>>
  result: VerifyResult
  work: TableWork[]
}
