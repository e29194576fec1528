/**
 * What the remove-node step builders share: the plan input, the values the operation records
 * in the journal, and a recorder that serializes concurrent journal writes.
 */
import type {Config} from '../../config/config.js'
import {edgeName} from '../../cluster/naming.js'
import type {StepContext} from '../../engine/types.js'

export const STEP = {
  drain: 'drain',
  peerSubscriptions: 'peer-subscriptions',
  ownSubscriptions: 'own-subscriptions',
  peerSlots: 'peer-slots',
  ownSlots: 'own-slots',
  ownPublication: 'own-publication',
  config: 'config',
} as const

/** waits other than the drain (workers stopping, walsenders releasing slots) */
export const WAIT_TIMEOUT_MS = 60_000

export const operationKey = (x: string) => `remove-node:${x}`

export interface RemovePlanInput {
  /** the node to remove */
  x: string
  /** every other node of the configuration */
  peers: string[]
  /** do not contact X: no drain, X's own objects are left alone */
  force: boolean
  drainTimeoutMs: number
  waitTimeoutMs?: number
  /** how long a walsender / worker may linger before it is terminated (default: the actions' own) */
  graceMs?: number
  /** config file to edit; default cfg.file */
  configFile?: string
}

/** Values of the operation (from the journal when the run resumes). */
export interface RemoveValues {
  drainLsn?: string
  /** peer → remote_lsn of its subscription from X, read before it was dropped */
  originProgress?: Record<string, string>
  /** peer → WAL its slot for X retained when it was dropped (null: no restart_lsn) */
  retainedBytes?: Record<string, number | null>
  force?: boolean
  /** subscriber → {system identifier, oid} of its subscription on the link with X, read before the drop (its table-synchronization slots) */
  subsOnX?: Record<string, {sysid: string; oid: string}>
  subsOnPeers?: Record<string, {sysid: string; oid: string}>
  /** X's join never finished (add-node:X unfinished, or leftovers of it): removed without contacting X */
  abandoned?: boolean
}

/**
 * Journal writes of concurrent actions, one after another: each write rewrites the whole
 * file atomically, and a per-peer entry is merged into its map at the moment it is written.
 */
export function journalRecorder() {
  let chain: Promise<unknown> = Promise.resolve()
  const enqueue = (fn: (ctx: StepContext) => Promise<void>, ctx: StepContext): Promise<void> => {
    const p = chain.then(() => fn(ctx))
    chain = p.catch(() => {})
    return p
  }
  return {
    set: (ctx: StepContext, key: keyof RemoveValues, value: unknown) => enqueue(c => c.journal.set(key, value), ctx),
    setFor: (ctx: StepContext, key: keyof RemoveValues, peer: string, value: unknown) =>
      enqueue(c => c.journal.set(key, {...(c.journal.get<Record<string, unknown>>(key) ?? {}), [peer]: value}), ctx),
  }
}

export type Recorder = ReturnType<typeof journalRecorder>

/** Everything a step builder of remove-node needs. */
export interface RemoveStepsContext {
  cfg: Config
  input: RemovePlanInput
  rec: Recorder
  /** bound for waits other than the drain */
  wait: number
  graceMs?: number
  /** name of the link from → to */
  edge(from: string, to: string): string
}

export function removeStepsContext(cfg: Config, input: RemovePlanInput): RemoveStepsContext {
  return {cfg, input, rec: journalRecorder(), wait: input.waitTimeoutMs ?? WAIT_TIMEOUT_MS, graceMs: input.graceMs, edge: (a, b) => edgeName(cfg.cluster, a, b)}
}
