/**
 * `mmlite doctor`: what will break next, found read-only on every node, each finding with the
 * exact fix. The vocabulary shared by the collectors, the checks and the fixes.
 */
import type {Config} from '../../config/config.js'
import type {TableShape} from '../../cluster/drift.js'

export type Severity = 'critical' | 'warning' | 'info'

/** What `--fix` can do about a finding (the rest it only explains). */
export type AutoFix = 'stagger-sequences' | 'drop-orphan-slot' | 'reset-counters'

export interface Finding {
  /** stable id of the check that produced it (tables, sequences, wal, slots, subscriptions, settings, minors, orphans, journal, prepared) */
  check: string
  severity: Severity
  /** the node it is about; null for cluster-wide findings */
  node: string | null
  /** the object it is about (table, slot, subscription, setting, ...) */
  object: string
  message: string
  /** the exact SQL (per node in `node`) or configuration change that fixes it */
  fix: string
  /** set when `--fix` applies this fix */
  autoFix?: AutoFix
}

export interface SlotFact {
  slot_name: string
  plugin: string | null
  slot_type: string
  active: boolean
  /** 13+; null before */
  wal_status: string | null
  /** 13+: bytes that can still be written before the slot is in danger of invalidation; null when unlimited */
  safe_wal_size: number | null
  /** bytes of WAL the slot keeps */
  retained_bytes: number | null
}

export interface SubFact {
  oid: number
  subname: string
  enabled: boolean
  worker_running: boolean
  /** 15+ */
  apply_error_count: number | null
  sync_error_count: number | null
  /** 18+: confl_* counters */
  conflicts: Record<string, number> | null
  /** relids still being synchronized (pg_subscription_rel state not 'r') */
  syncing_relids: number[]
}

export interface TableFact {
  /** as in mmlite.yaml */
  table: string
  /** schema.name, quoted for SQL */
  qualified: string
  exists: boolean
  /** d = default (primary key), n = nothing, f = full, i = index */
  replident: string | null
  has_pk: boolean
  /** replica identity index (relreplident = 'i') exists and is valid */
  has_identity_index: boolean
}

export interface SequenceFact {
  /** the replicated table and column it feeds */
  table: string
  /** schema.name of the table, quoted for SQL */
  qualified: string
  column: string
  /** schema-qualified, quoted */
  sequence: string
  increment: number
  min_value: string
  max_value: string
  /** next value nextval() would hand out (last_value + increment when is_called, else last_value) */
  next_value: string
  /** the column's maximum on this node, read only when a fix is planned */
  column_max?: string | null
}

export interface PreparedFact {
  gid: string
  /** the database it was prepared in (pg_prepared_xacts lists every database's) */
  database: string
  owner: string
  /** seconds since PREPARE TRANSACTION */
  age_seconds: number
}

export interface NodeFacts {
  name: string
  versionNum: number
  version: string
  systemIdentifier: string
  inRecovery: boolean
  /** max_slot_wal_keep_size in bytes; -1 = unlimited (13+), null before 13 */
  maxSlotWalKeepSize: number | null
  trackCommitTimestamp: boolean
  /** null when the server has no such setting */
  outputPluginLibraries: string[] | null
  /** WAL bytes per second measured over the sampling window */
  walRate: number | null
  slots: SlotFact[]
  subscriptions: SubFact[]
  publications: string[]
  /** replication origins named like a subscription's (pg_<oid>) whose subscription no database of the server has */
  origins: string[]
  tables: TableFact[]
  /** columns, primary key and replica identity of each replicated table (null: missing), for drift */
  shapes: (TableShape | null)[]
  sequences: SequenceFact[]
  /** max_prepared_transactions */
  maxPreparedTransactions: number
  /** prepared transactions of the server (every database), oldest first */
  prepared: PreparedFact[]
}

export interface NodeResult {
  name: string
  reachable: boolean
  error?: string
  facts?: NodeFacts
}

export interface DoctorInput {
  cfg: Config
  nodes: NodeResult[]
  /** unfinished operations from the journal */
  unfinished: Array<{key: string; command: string; startedAt: string; values?: Record<string, unknown>}>
}
