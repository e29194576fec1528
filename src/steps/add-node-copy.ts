/**
 * add-node strategy `copy` (default): an online logical copy of the source S into the new
 * node X, with no pause for clients anywhere. Notation: S = source, X = new node, P = every
 * other existing node. With origin filtering each node sends only its own local changes, so X
 * needs exactly one stream per existing node: a copy of S, plus from each P exactly the
 * P-transactions the copy does not contain.
 *
 * Steps (ids are stable: journal, MMLITE_FAULT_KILL_AFTER):
 *   prepare             publication on X; on each P the slot P→X, its consistent point L_P journaled
 *   wait-peer-flush     slot P→S on P has confirmed_flush_lsn ≥ L_P
 *   pause-source        S's inbound subscriptions P→S disabled (journaled BEFORE the DISABLE), their
 *                       workers gone; S's origin progress R_P read (journaled)
 *   source-snapshot     slot S→X created on a replication connection with an exported snapshot,
 *                       imported by the K copy sessions; S's subscriptions re-enabled at once
 *   copy                every table S→X inside that snapshot (K parallel COPY pipes), X sessions
 *                       with session_replication_role = replica; X's tables truncated first
 *   subscribe-source    subscription S→X on slot S→X (copy_data = false)
 *   subscribe-peers     subscriptions P→X on slot P→X, created disabled, origin advanced to R_P
 *                       when R_P > L_P, then enabled
 *   node-slots          slots X→N on X for every other node (after the copy committed)
 *   node-subscriptions  subscriptions X→N on every other node (copy_data = false)
 *   wait-streaming      every link of X streams
 *   wait-caught-up      every link into X has confirmed its publisher's WAL position of that moment
 *
 * Why it is exact (checked against PostgreSQL's logical decoding and apply code):
 *
 *  (a) A logical slot's consistent point L splits a node's transactions exactly: a transaction
 *      whose commit record starts at or after the decoding start is decoded and sent, an earlier
 *      one never (DecodeTXNNeedSkip → SnapBuildXactNeedsSkip(commit origptr < start_decoding_at)).
 *      START_REPLICATION from origin progress R starts decoding at max(R, confirmed_flush)
 *      (CreateDecodingContext), and R is the END lsn of the last remote commit the subscriber
 *      applied (apply_handle_commit: replorigin_session_origin_lsn = end_lsn), so streaming
 *      resumes exactly after the last applied transaction.
 *  (b) S-local transactions: slot S→X and the exported snapshot come from the same consistent
 *      point L_S: committed before L_S → in the snapshot (copied), after → streamed by S→X.
 *      Changes S applied from others carry an origin and are never sent on S→X.
 *  (c) P-transactions: the copy holds exactly those S applied before the pause, i.e. the
 *      P-commits ending at or before R_P (S applies P's commits in P's commit order; the pause
 *      waits until every apply/parallel-apply worker of P→S is gone, so nothing commits between
 *      reading R_P and creating the snapshot, whose consistent point lies after the pause).
 *      Slot P→X sends the P-commits starting at or after max(L_P, R_P) — the origin advance
 *      makes it R_P when R_P > L_P. For this to be exactly the complement, every P-commit
 *      before L_P must be in the copy: that is wait-peer-flush. confirmed_flush_lsn of P→S is
 *      what S's apply worker reports as flushed; it reports the received position only with no
 *      transaction pending (send_feedback / get_flush_position), and it receives a position
 *      ≥ L_P only after every message of the earlier commits (one ordered stream), so
 *      confirmed_flush ≥ L_P ⇒ every P-commit before L_P is applied on S ⇒ it ends ≤ R_P.
 *      Idle links get there too: the walsender's keepalive carries the position it has decoded
 *      up to, and the idle apply worker reports it as flushed (test: add-node-copy-resume).
 *  (d) X's own slots X→N are created after the copy committed (the copy rows carry no origin
 *      and would otherwise be sent back); everything X applies from S and P carries an origin.
 *
 * Flaws of the procedure as first written, fixed here:
 *  - R_P belongs to ONE snapshot. A run that dies after pausing (or during the copy) must read
 *    R_P again under the new pause; reusing the old value would skip (R_P too big: impossible)
 *    or duplicate (R_P too small) the P-transactions S applied between the two pauses. R_P is
 *    therefore journaled inside the copy attempt and only used once that attempt is 'done'.
 *  - "Record which subscriptions this run paused" must happen BEFORE the DISABLE: recorded
 *    after, a kill in between would leave S's subscriptions disabled with nobody to re-enable them.
 *  - L_P read back from a leftover slot P→X is only exact if nothing ever consumed that slot;
 *    a fresh run therefore refuses leftover X objects on the existing nodes (driver preflight).
 *  - (a) does not hold on every server: before PostgreSQL 12.20/13.16/14.13/15.8/16.4 a slot
 *    created without exporting a snapshot could restore another slot's serialized snapshot and
 *    put its consistent point in the middle of a running transaction, which would then reach X
 *    only in part (commit bb19b700, test_decoding/specs/skip_snapshot_restore). Slot S→X exports
 *    a snapshot (never restored); for the P→X slots preflight refuses such minor releases.
 *  - Slots X→N left on X by an earlier attempt would predate the copy and send it back:
 *    preflight refuses them until the copy is done.
 *  - Re-setting an origin: a re-run that found P→X disabled (by hand, disable_on_error) after
 *    it had applied past R_P advanced it back to R_P; the origin is now set only while the
 *    subscription has applied nothing (add-node/origin.ts).
 *  - Creating slot S→X waits, without deadline, for every transaction running on S (prepared
 *    ones too) while S is paused: the run first waits for those before pausing, then bounds the
 *    creation by --timeout, names the holders, cancels it and undoes the pause
 *    (add-node/source-xacts.ts, createSlotWatched).
 *  - The snapshot is fixed when the slot is created, so S's subscriptions could be re-enabled
 *    even before the copy sessions import it; we import first (a few ms) so that a failing
 *    import is noticed while nothing has moved on yet, as the issue asks.
 *
 * X must not take client writes until add-node has finished: a write before its slots exist
 * would never reach the other nodes.
 */
import pg from 'pg'
import type {StepContext, Action, Step} from '../engine/types.js'
import {copyDataAction, copyPreflight, copySessions, type TableCopyReport} from './add-node/copy-data.js'
import {unfinishedValues, type AddNodeContext, type StrategyModule} from './add-node-context.js'
import type {Problem} from './preflight.js'
import {
  createSubscriptionSql,
  edgesOfNode,
  makeEdge,
  pauseSubscriptionSql,
  publicationAction,
  resumeSubscriptionSql,
  slotAction,
  slotWithConsistentPointAction,
  subscriptionAction,
  SUBSCRIPTION_ORIGIN_SQL,
  SUBSCRIPTION_WORKERS_SQL,
  waitCaughtUpActions,
  waitSlotConfirmedAction,
  waitStreamingActions,
  type Edge,
} from './mesh.js'
import {escapeIdentifier as qi, escapeLiteral as ql} from '../db/quote.js'
import {compareLsn} from '../db/lsn.js'
import {enableDisabled, waitWorkersGone, type PausedSub, type PauseRecord} from './pause.js'
import {setOriginOnce} from './add-node/origin.js'
import {slotStartProblems} from './slot-guard.js'
import {joinResidueStep} from './doctor/join-residue.js'
import {describeHolder, holderFixes, waitRunningXactsEnd, xidHolders, type XidHolder} from './add-node/source-xacts.js'
import {MmliteError, ExitCode, errorMessage} from '../errors.js'
import {pollUntil, sleep} from '../util/poll.js'
import {formatSeconds} from '../util/text.js'

export const COPY_STEP_IDS = [
  'prepare',
  'wait-peer-flush',
  'pause-source',
  'source-snapshot',
  'copy',
  'subscribe-source',
  'subscribe-peers',
  'node-slots',
  'node-subscriptions',
  'sequence-residue',
  'wait-streaming',
  'wait-caught-up',
] as const

// ------------------------------------------------------------------------------ journal values

export type {TableCopyReport} from './add-node/copy-data.js'

export interface CopyAttempt {
  attempt: number
  state: 'paused' | 'snapshot' | 'done'
  /** S's origin progress for each P, read under this attempt's pause */
  originProgress: Record<string, string>
  /** consistent point of slot S→X */
  sourceLsn?: string
  tables?: TableCopyReport[]
}


/** What a copy run keeps in the journal (operation `add-node:<X>`). */
export interface CopyValues {
  /** consistent point L_P of slot P→X, per P */
  peerSlots?: Record<string, string>
  /** read by `status`: subscriptions an unfinished run disabled on purpose */
  pausedSubscriptions?: PausedSub[]
  pauses?: PauseRecord[]
  copy?: CopyAttempt
  /** origin start positions set on X's inbound subscriptions (recorded before the advance; see add-node/origin.ts) */
  originsSet?: Record<string, string>
}

function values(ctx: {journal: AddNodeContext['journal']}, x: string): CopyValues {
  return unfinishedValues<CopyValues>(ctx.journal, x)
}

// ------------------------------------------------------------------------------ in-process state

const PHASE = {none: 0, paused: 1, snapshot: 2, done: 3} as const

interface Live {
  phase: number
  /** replication connection that exported the snapshot (kept open and idle until the copy is done) */
  repl?: pg.Client
  /** sessions on S inside the imported snapshot */
  readers: pg.Client[]
  /** sessions on X writing the copy */
  writers: pg.Client[]
  paused?: {subs: string[]; t0: number; startedAt: string}
  /** serializes journal writes of concurrent actions */
  jq: Promise<unknown>
}

const lives = new WeakMap<AddNodeContext, Live>()

function live(ctx: AddNodeContext): Live {
  let l = lives.get(ctx)
  if (!l) {
    l = {phase: PHASE.none, readers: [], writers: [], jq: Promise.resolve()}
    lives.set(ctx, l)
  }
  return l
}

/** Journal writes one at a time (the journal rewrites one file); `value` sees the values of the writes before it. */
function jset<K extends keyof CopyValues>(a: AddNodeContext, name: K, value: CopyValues[K] | ((cur: CopyValues) => CopyValues[K])): Promise<void> {
  const l = live(a)
  const run = l.jq.then(() => a.journal.set(name, typeof value === 'function' ? (value as (cur: CopyValues) => CopyValues[K])(values(a, a.x.name)) : value))
  l.jq = run.catch(() => {})
  return run
}

async function closeAll(l: Live): Promise<void> {
  const all = [...l.readers, ...l.writers, ...(l.repl ? [l.repl] : [])]
  l.readers = []
  l.writers = []
  l.repl = undefined
  await Promise.all(all.map(c => c.end().catch(() => {})))
}

// ------------------------------------------------------------------------------ sessions

const APP = 'mmlite add-node copy'

/** A separate session to node `name` (a logical replication connection with `replication`). */
function openSession(a: AddNodeContext, name: string, replication = false): Promise<pg.Client> {
  return a.cluster.node(name).newSession(APP, {replication, statementTimeout: 0}) // COPY of a whole table: no statement timeout
}

/** The replication-protocol command that creates slot S→X and exports its snapshot. */
export function createSlotExportSnapshotCommand(edge: Edge, sourceVersion: number): string {
  const head = `CREATE_REPLICATION_SLOT ${qi(edge.name)} LOGICAL ${qi(edge.plugin)}`
  return sourceVersion >= 150000 ? `${head} (SNAPSHOT 'export')` : `${head} EXPORT_SNAPSHOT`
}

// ------------------------------------------------------------------------------ pause / resume

/** Re-enable what a killed run paused (journal `pausedSubscriptions`) and say so. */
async function recoverPaused(a: AddNodeContext): Promise<string[]> {
  const v = values(a, a.x.name)
  const paused = v.pausedSubscriptions ?? []
  if (paused.length === 0) return []
  const byNode = new Map<string, string[]>()
  for (const p of paused) byNode.set(p.node, [...(byNode.get(p.node) ?? []), p.subscription])
  for (const [node, subs] of byNode) await enableDisabled(a.cluster.node(node), subs)
  const since = paused[0].since
  const after = since ? Date.now() - Date.parse(since) : undefined
  await jset(a, 'pauses', cur => [
    ...(cur.pauses ?? []),
    {node: paused[0].node, subscriptions: paused.map(p => p.subscription), startedAt: since, ms: null, recoveredAfterMs: after},
  ])
  await jset(a, 'pausedSubscriptions', [])
  live(a).paused = undefined
  return [...byNode].map(
    ([node, subs]) =>
      `re-enabled on ${node} the subscription(s) an interrupted run had paused${after !== undefined ? ` ${formatSeconds(after / 1000)} ago` : ''}: ${subs.join(', ')}`,
  )
}

// ------------------------------------------------------------------------------ steps

function buildSteps(a: AddNodeContext): Step[] {
  const X = a.x.name
  const S = a.source
  const v = (n: string) => a.versions.get(n)!
  const edge = (from: string, to: string) => makeEdge(a.full, from, to, a.versions)
  const existing = a.cfg.nodes.map(n => n.name)
  const inbound = existing.map(n => edge(n, X))
  const outbound = existing.map(n => edge(X, n))
  const toSource = a.others.map(p => edge(p, S))
  const sourceSubs = toSource.map(e => e.name)
  const sx = edge(S, X)
  const l = live(a)
  const vals = () => values(a, X)
  const copyDone = () => vals().copy?.state === 'done'

  const prepare: Step = {
    id: 'prepare',
    title: `Publication on ${X}; slots for ${X} on ${a.others.length ? a.others.join(', ') : '(no other node)'}, remembering their consistent points`,
    actions: [
      publicationAction(a.full, X),
      ...a.others.map(p =>
        slotWithConsistentPointAction(edge(p, X), {
          recorded: () => vals().peerSlots?.[p],
          record: (_c, lsn) => jset(a, 'peerSlots', cur => ({...(cur.peerSlots ?? {}), [p]: lsn})),
        }),
      ),
    ],
  }

  const waitPeerFlush: Step = {
    id: 'wait-peer-flush',
    title: `Wait until ${S} has applied everything the other nodes committed before their slots for ${X}`,
    actions: toSource.map(e =>
      waitSlotConfirmedAction(e, () => vals().peerSlots?.[e.from], a.timeoutMs, `wait until ${S} has confirmed ${e.from}'s changes up to the consistent point of slot ${edge(e.from, X).name}`),
    ),
  }

  const pauseSource: Action = {
    node: S,
    label: `pause ${S}'s inbound subscriptions and read their origin progress`,
    sql: [
      ...sourceSubs.map(pauseSubscriptionSql),
      ...sourceSubs.map(s => `SELECT remote_lsn FROM pg_replication_origin_status WHERE external_id = 'pg_' || <oid of ${s}>   -- after its workers are gone`),
    ],
    check: async () => copyDone() || l.phase >= PHASE.paused,
    run: async c => {
      await recoverPaused(a)
      await closeAll(l)
      const S_ = a.cluster.node(S)
      // a slot S→X left by an attempt whose copy did not finish: its snapshot is gone
      await dropStaleSourceSlot(a, c, sx)
      // sessions first, so that the pause is as short as possible
      const k = copySessions(a)
      l.repl = await openSession(a, S, true)
      for (let i = 0; i < k; i++) l.readers.push(await openSession(a, S))
      const state = await S_.query<{subname: string; enabled: boolean; workers: number}>(SUBSCRIPTION_WORKERS_SQL, [sourceSubs])
      const missing = sourceSubs.filter(s => !state.some(r => r.subname === s))
      const disabled = state.filter(r => !r.enabled).map(r => r.subname)
      if (missing.length || disabled.length) {
        throw new MmliteError(
          `node ${S}: inbound subscription(s) ${[...missing.map(m => `${m} (missing)`), ...disabled.map(d => `${d} (disabled)`)].join(', ')}: the source must be a streaming member`,
          {code: ExitCode.Failed, suggestions: [`Repair the links into ${S} (see \`mmlite status\`), then re-run.`]},
        )
      }
      // the slot below waits for every transaction running on S when it starts (prepared ones
      // too), with S's inbound replication paused meanwhile: wait for those BEFORE pausing
      await waitRunningXactsEnd(S_, S, {
        timeoutMs: a.timeoutMs,
        why: `slot ${sx.name} with its exported snapshot would wait for them while ${S}'s inbound subscriptions are paused`,
        progress: t => c.progress(t),
        note: t => c.note(t),
        nothingDone: 'nothing was paused',
      })
      const prev = vals()
      const attempt = (prev.copy?.attempt ?? 0) + 1
      const startedAt = new Date().toISOString()
      // recorded BEFORE the DISABLE: a run killed right after it must find what to re-enable
      await jset(a, 'pausedSubscriptions', sourceSubs.map(s => ({node: S, subscription: s, since: startedAt})))
      const t0 = Date.now()
      l.paused = {subs: sourceSubs, t0, startedAt}
      try {
        for (const s of sourceSubs) await S_.query(pauseSubscriptionSql(s))
        let noted = false
        await waitWorkersGone(S_, sourceSubs, {
          timeoutMs: a.timeoutMs,
          what: `the apply workers of ${sourceSubs.join(', ')} on ${S} to stop`,
          maxIntervalMs: 100,
          onBusy: busy => {
            if (!noted && Date.now() - t0 > 2000) {
              noted = true
              c.note(`${S}: waiting for the apply workers of ${busy.join(', ')} to finish their current transaction (inbound pause of ${S} continues meanwhile)`)
            }
            c.progress(`${S}: waiting for the workers of ${busy.join(', ')} to stop`)
          },
        })
        const origins = await S_.query<{subname: string; remote_lsn: string}>(SUBSCRIPTION_ORIGIN_SQL, [sourceSubs])
        const originProgress: Record<string, string> = {}
        for (const e of toSource) originProgress[e.from] = origins.find(o => o.subname === e.name)?.remote_lsn ?? '0/0'
        await jset(a, 'copy', {attempt, state: 'paused', originProgress} satisfies CopyAttempt)
        l.phase = PHASE.paused
        // fault injection for the tests: keep the pause a while before the slot is created
        const hold = Number(process.env.MMLITE_FAULT_HOLD_AFTER_PAUSE_MS ?? 0)
        if (hold > 0) await sleep(hold)
      } catch (e) {
        await endPause(a, c, true).catch(() => {})
        await closeAll(l)
        throw e
      }
    },
  }

  const sourceSnapshot: Action = {
    node: S,
    label: `slot ${sx.name} (${sx.plugin}) with an exported snapshot, imported by the copy sessions; resume ${S}'s subscriptions`,
    sql: [createSlotExportSnapshotCommand(sx, v(S)) + '   -- replication connection', `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '<exported>'   -- in each copy session`, ...sourceSubs.map(resumeSubscriptionSql)],
    check: async () => copyDone() || l.phase >= PHASE.snapshot,
    run: async c => {
      if (l.phase !== PHASE.paused || !l.repl) throw new MmliteError('internal: the source pause was not taken by this run', {code: ExitCode.Failed})
      try {
        const res = await createSlotWatched(a, c, l.repl, createSlotExportSnapshotCommand(sx, v(S)))
        await jset(a, 'copy', cur => ({...cur.copy!, state: 'snapshot', sourceLsn: res.consistent_point}))
        for (const r of l.readers) {
          await r.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY')
          await r.query(`SET TRANSACTION SNAPSHOT ${ql(res.snapshot_name)}`)
        }
      } catch (e) {
        await endPause(a, c, true).catch(() => {})
        await closeAll(l)
        throw e
      }
      await endPause(a, c, false)
      l.phase = PHASE.snapshot
    },
  }

  const copy = copyDataAction(a, {
    live: l,
    openSession: name => openSession(a, name),
    ready: () => l.phase === PHASE.snapshot,
    done: copyDone,
    finish: async tables => {
      await jset(a, 'copy', cur => ({...cur.copy!, state: 'done', tables}))
      l.phase = PHASE.done
    },
    close: () => closeAll(l),
  })

  const subscribePeers: Action[] = a.others.map(p => {
    const e = edge(p, X)
    const state = async (c: StepContext) => (await c.cluster.node(X).query<{subname: string; enabled: boolean; remote_lsn: string}>(SUBSCRIPTION_ORIGIN_SQL, [[e.name]]))[0]
    return {
      node: X,
      label: `subscription ${e.name} from ${p}: created disabled, origin advanced to ${S}'s progress for ${p} if past the slot's consistent point, enabled`,
      sql: [
        createSubscriptionSql(a.full, e, {copyData: false, enabled: false, subscriberVersion: v(X)}, true),
        `SELECT pg_replication_origin_advance('pg_' || s.oid::text, '<R_${p}>'::pg_lsn) FROM pg_subscription s WHERE s.subname = ${ql(e.name)}   -- only if R_${p} > L_${p}`,
        resumeSubscriptionSql(e.name),
      ],
      check: async c => Boolean((await state(c))?.enabled),
      run: async c => {
        const vv = vals()
        const R = vv.copy?.state === 'done' ? vv.copy.originProgress[p] : undefined
        const L = vv.peerSlots?.[p]
        if (!R || !L) throw new MmliteError(`internal: no recorded origin progress / consistent point for ${p}`, {code: ExitCode.Failed})
        const xc = c.cluster.node(X)
        let s = await state(c)
        if (!s) {
          await xc.query(createSubscriptionSql(a.full, e, {copyData: false, enabled: false, subscriberVersion: v(X)}, false))
          s = (await state(c))!
        }
        if (s.enabled) return
        // disabled: set its origin where S's copy left off for p, only if it has never applied
        // anything (a re-run may find it disabled after it applied past R: never move it back)
        if (compareLsn(R, L) > 0) {
          const d = await setOriginOnce(xc, X, e.name, R, {
            recorded: vals().originsSet?.[e.name],
            record: lsn => jset(a, 'originsSet', cur => ({...(cur.originsSet ?? {}), [e.name]: lsn})),
            timeoutMs: a.timeoutMs,
          })
          if (d.kind === 'keep') c.note(`${X}: origin of ${e.name} kept (${d.why}); enabling it`)
        }
        await xc.query(resumeSubscriptionSql(e.name))
      },
    }
  })

  const steps: Step[] = [
    prepare,
    waitPeerFlush,
    {id: 'pause-source', title: `Pause ${S}'s inbound subscriptions and read their origin progress`, actions: [pauseSource]},
    {id: 'source-snapshot', title: `Create the slot ${S}→${X} with an exported snapshot; resume ${S}'s subscriptions`, actions: [sourceSnapshot]},
    {id: 'copy', title: `Copy every table ${S}→${X} within the snapshot`, actions: [copy]},
    {
      id: 'subscribe-source',
      title: `Subscribe ${X} to ${S} on the slot of the snapshot (no copy)`,
      actions: [subscriptionAction(a.full, sx, {copyData: false, subscriberVersion: v(X)})],
    },
    {id: 'subscribe-peers', title: `Subscribe ${X} to the other nodes from where the copy left off`, actions: subscribePeers},
    {id: 'node-slots', title: `Create the slots on ${X} for every other node`, actions: outbound.map(slotAction)},
    {
      id: 'node-subscriptions',
      title: `Subscribe every other node to ${X} (no copy)`,
      actions: outbound.map(e => subscriptionAction(a.full, e, {copyData: false, subscriberVersion: v(e.to)})),
    },
    // staggered sequences (doctor --fix): X draws from a residue class of its own
    joinResidueStep(a.full, X, () => existing),
    {id: 'wait-streaming', title: `Wait until every link of ${X} streams`, actions: waitStreamingActions([...inbound, ...outbound], a.timeoutMs)},
    {id: 'wait-caught-up', title: `Wait until ${X} has caught up`, actions: waitCaughtUpActions(inbound, a.timeoutMs)},
  ]
  // a step without actions (wait-peer-flush, subscribe-peers when S is the only other node) is left out
  return steps.filter(s => s.actions.length > 0)
}

/** Re-enable the subscriptions this run paused and journal how long they were paused. */
async function endPause(a: AddNodeContext, c: StepContext, failed: boolean): Promise<void> {
  const l = live(a)
  const p = l.paused
  if (!p) return
  await enableDisabled(a.cluster.node(a.source), p.subs)
  const ms = Date.now() - p.t0
  l.paused = undefined
  const rec: PauseRecord = {node: a.source, subscriptions: p.subs, startedAt: p.startedAt, ms}
  await jset(a, 'pauses', cur => [...(cur.pauses ?? []), rec])
  await jset(a, 'pausedSubscriptions', [])
  if (!failed) c.note(`source ${a.source}: inbound subscriptions ${p.subs.length ? p.subs.join(', ') : '(none)'} paused for ${ms} ms; clients were not paused`)
}

async function dropStaleSourceSlot(a: AddNodeContext, c: StepContext, sx: Edge): Promise<void> {
  const S_ = a.cluster.node(a.source)
  const r = await S_.one<{active: boolean}>('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [sx.name])
  if (!r) return
  c.note(`${a.source}: dropping slot ${sx.name} of an interrupted copy (its snapshot is gone); the copy starts over`)
  await pollUntil(
    async () => {
      const s = await S_.one<{active: boolean}>('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [sx.name])
      if (!s) return true
      if (s.active) return false
      try {
        await S_.query(`SELECT pg_drop_replication_slot(${ql(sx.name)})`)
        return true
      } catch (e) {
        if (/is active for PID|does not exist/i.test(errorMessage(e))) return false
        throw e
      }
    },
    {timeoutMs: a.timeoutMs, what: `slot ${sx.name} on ${a.source} to be released`, maxIntervalMs: 500},
  )
}

/**
 * CREATE_REPLICATION_SLOT, noting the transactions on S that hold it up (the inbound pause
 * lasts meanwhile), at most --timeout: then the command is cancelled on S (the half-made
 * slot is ephemeral and goes with the error) and a Timeout error names who blocked; the
 * caller undoes the pause.
 */
async function createSlotWatched(
  a: AddNodeContext,
  c: StepContext,
  repl: pg.Client,
  cmd: string,
): Promise<{slot_name: string; consistent_point: string; snapshot_name: string; output_plugin: string}> {
  const S = a.source
  const S_ = a.cluster.node(S)
  const replPid = (repl as unknown as {processID: number | null}).processID
  let settled = false
  const pending = repl.query(cmd).finally(() => (settled = true))
  pending.catch(() => {})
  const t0 = Date.now()
  const seen = new Set<string>()
  while (!settled) {
    await Promise.race([pending.catch(() => {}), sleep(Math.min(1000, Math.max(50, t0 + a.timeoutMs - Date.now())))])
    if (settled) break
    const rows = await xidHolders(S_, replPid ? [replPid] : []).catch(() => [] as XidHolder[])
    const waited = Date.now() - t0
    if (waited >= a.timeoutMs) {
      if (replPid) await S_.query('SELECT pg_catalog.pg_cancel_backend($1::pg_catalog.int4)', [replPid]).catch(() => {})
      // the slot may have been made just before the cancel arrived: then use it
      if (await pending.then(() => true, () => false)) break
      throw new MmliteError(
        `timed out after ${Math.round(a.timeoutMs / 1000)} s creating slot ${edgeSlotName(cmd)} on ${S}: it waits for running transactions to end; ${S}'s inbound subscriptions were paused meanwhile and are re-enabled now`,
        {code: ExitCode.Timeout, details: rows.map(describeHolder), suggestions: [...holderFixes(S, rows), 'Then re-run the command: the copy starts over.']},
      )
    }
    c.progress(`${S}: creating the slot waits for ${rows.length} running transaction(s) (${Math.round(waited / 1000)}s)`)
    for (const r of rows) {
      const k = r.gid ?? r.pid ?? ''
      if (seen.has(k)) continue
      seen.add(k)
      c.note(`warning: ${S}: the slot waits for ${describeHolder(r)}; ${S}'s inbound subscriptions stay paused until it ends (at most --timeout)`)
    }
  }
  // the session's lock_timeout / statement_timeout (src/db/session.ts) may end the wait first
  const res = await pending.catch(async e => {
    const rows = await xidHolders(S_, replPid ? [replPid] : []).catch(() => [] as XidHolder[])
    const msg = errorMessage(e)
    throw new MmliteError(`creating slot ${edgeSlotName(cmd)} on ${S} failed: ${msg}; ${S}'s inbound subscriptions were paused meanwhile and are re-enabled now`, {
      code: /timeout/i.test(msg) ? ExitCode.Timeout : ExitCode.Failed,
      details: rows.map(describeHolder),
      suggestions: [...holderFixes(S, rows), 'Then re-run the command: the copy starts over.'],
    })
  })
  const row = res.rows[0] as {slot_name: string; consistent_point: string; snapshot_name: string; output_plugin: string}
  if (!row?.snapshot_name) throw new MmliteError(`node ${S}: CREATE_REPLICATION_SLOT returned no snapshot`, {code: ExitCode.Failed})
  return row
}

function edgeSlotName(cmd: string): string {
  return /CREATE_REPLICATION_SLOT\s+("(?:[^"]|"")*"|\S+)/.exec(cmd)?.[1] ?? 'the slot'
}

// ------------------------------------------------------------------------------ preflight

/** has_parameter_privilege exists from 15 on; before, only a superuser may SET session_replication_role */
const privsSql = (version: number) => `SELECT r.rolsuper AS superuser, r.rolreplication AS replication,
       (has_table_privilege('pg_catalog.pg_replication_origin_status', 'SELECT')
        AND has_function_privilege('pg_catalog.pg_show_replication_origin_status()', 'EXECUTE')) AS origin_status,
       has_function_privilege('pg_catalog.pg_replication_origin_advance(text, pg_lsn)', 'EXECUTE') AS origin_advance,
       ${version >= 150000 ? `has_parameter_privilege('session_replication_role', 'SET')` : 'r.rolsuper'} AS set_replication_role
  FROM pg_roles r WHERE r.rolname = current_user`

/** the view pg_replication_origin_status calls pg_show_replication_origin_status(): both are superuser-only by default */
const ORIGIN_STATUS_FIX =
  'Connect as a superuser, or: GRANT SELECT ON pg_catalog.pg_replication_origin_status TO <role>; GRANT EXECUTE ON FUNCTION pg_catalog.pg_show_replication_origin_status() TO <role>;'

async function preflight(a: AddNodeContext): Promise<Problem[]> {
  const problems: Problem[] = []
  const X = a.x.name
  const S = a.source
  const vals = values(a, X)
  const copyStarted = vals.copy !== undefined
  const done = vals.copy?.state === 'done'
  const S_ = a.cluster.node(S)
  const X_ = a.cluster.node(X)

  // X: empty replicated tables (unless an unfinished copy of ours put rows there: truncated again)
  if (!copyStarted) {
    const sql = `SELECT ARRAY[${a.cfg.tables.map(t => `(SELECT EXISTS (SELECT 1 FROM ${t.qualified}))`).join(', ')}] AS has`
    const has = await X_.one<{has: boolean[]}>(sql).catch(() => undefined)
    const full = has ? a.cfg.tables.filter((_, i) => has.has[i]) : []
    if (full.length) {
      problems.push({
        node: X,
        check: 'data',
        message: `replicated table(s) ${full.map(t => t.display).join(', ')} hold rows; the copy strategy fills empty tables`,
        fix: `Empty them on ${X} (TRUNCATE ${full.map(t => t.qualified).join(', ')}), or use --strategy standby for a standby of ${S}.`,
      })
    }
    // X is not a member of this cluster already, nor the same server as a member
    const subs = await X_.query<{subname: string}>(
      `SELECT subname FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND subname = ANY($1)`,
      [a.full.nodes.filter(n => n.name !== X).map(n => makeEdge(a.full, n.name, X, a.versions).name)],
    ).catch(() => [])
    if (subs.length) {
      problems.push({
        node: X,
        check: 'member',
        message: `${X} already subscribes to this cluster (${subs.map(s => s.subname).join(', ')}): it is already a member or a leftover of one`,
        fix: 'If it is a leftover, drop those subscriptions on it first; to rebuild a member, remove it with `mmlite remove-node` first.',
      })
    }
  }
  const ident = await a.cluster.each(
    c => c.one<{sysid: string; db: string; port: string}>(`SELECT (SELECT system_identifier::text FROM pg_control_system()) AS sysid, current_database() AS db, current_setting('port') AS port`),
    a.full.nodes.map(n => n.name),
  )
  const xi = ident.get(X)
  if (xi?.ok && xi.value) {
    for (const n of a.cfg.nodes) {
      const o = ident.get(n.name)
      if (o?.ok && o.value && o.value.sysid === xi.value.sysid && o.value.db === xi.value.db) {
        problems.push({
          node: X,
          check: 'identity',
          message: `${X} is the same database (system identifier ${xi.value.sysid}, database ${xi.value.db}) as member ${n.name}, or a physical copy of it`,
          fix: 'Point --dsn at the new server; for a standby of the source use --strategy standby.',
        })
      }
    }
  }

  // privileges: replication connection + origin status on S; replication role + origin advance on X
  const privs = await a.cluster.each(
    c => c.one<{superuser: boolean; replication: boolean; origin_status: boolean; origin_advance: boolean; set_replication_role: boolean}>(privsSql(a.versions.get(c.name) ?? 0)),
    [S, X],
  )
  const ps = privs.get(S)
  if (ps?.ok && ps.value && !done) {
    if (!ps.value.superuser && !ps.value.replication)
      problems.push({node: S, check: 'privileges', message: 'the connecting role lacks REPLICATION (the copy uses a replication connection to export a snapshot)', fix: 'ALTER ROLE <role> REPLICATION;'})
    if (!ps.value.origin_status)
      problems.push({node: S, check: 'privileges', message: 'the connecting role cannot read pg_replication_origin_status', fix: ORIGIN_STATUS_FIX})
  }
  const px = privs.get(X)
  if (px?.ok && px.value) {
    // X's subscriptions are positioned and checked through their origin progress
    if (!px.value.superuser && !px.value.origin_status)
      problems.push({node: X, check: 'privileges', message: 'the connecting role cannot read pg_replication_origin_status', fix: ORIGIN_STATUS_FIX})
    if (!px.value.origin_advance)
      problems.push({node: X, check: 'privileges', message: 'the connecting role cannot execute pg_replication_origin_advance', fix: 'Connect as a superuser, or: GRANT EXECUTE ON FUNCTION pg_replication_origin_advance(text, pg_lsn) TO <role>;'})
    if (!px.value.set_replication_role && !done)
      problems.push({node: X, check: 'privileges', message: 'the connecting role cannot SET session_replication_role (the copy writes like the apply worker)', fix: 'Connect as a superuser, or (15+): GRANT SET ON PARAMETER session_replication_role TO <role>;'})
  }

  // slots of X's own links on X before the copy is done would send the copy back: leftovers
  if (!done) {
    const mine = a.cfg.nodes.map(n => makeEdge(a.full, X, n.name, a.versions).name)
    const left = await X_.query<{slot_name: string}>('SELECT slot_name FROM pg_replication_slots WHERE slot_name = ANY($1)', [mine]).catch(() => [])
    if (left.length) {
      problems.push({
        node: X,
        check: 'leftover',
        message: `slot(s) ${left.map(r => r.slot_name).join(', ')} already exist on ${X}; created before the copy they would send the copied rows back to the other nodes`,
        fix: `Drop them on ${X} (SELECT pg_drop_replication_slot('<name>');), then re-run.`,
      })
    }
    // P→X slots are created with pg_create_logical_replication_slot while P takes writes
    problems.push(...slotStartProblems(a.others, a.versions, p => `the slot ${makeEdge(a.full, p, X, a.versions).name} (${p}→${X})`))
  }

  // the load would run code of other roles as the admin (copy-speed: add-node/copy-data.ts)
  if (!done) problems.push(...(await copyPreflight(a)))

  if (!done) {
    // S must be a streaming member: every P→S subscription enabled, every slot P→S there
    const sourceSubs = a.others.map(p => makeEdge(a.full, p, S, a.versions))
    const rows = await S_.query<{subname: string; enabled: boolean}>(SUBSCRIPTION_WORKERS_SQL, [sourceSubs.map(e => e.name)]).catch(() => undefined)
    const pausedByUs = new Set((vals.pausedSubscriptions ?? []).map(p => p.subscription))
    if (rows) {
      for (const e of sourceSubs) {
        const r = rows.find(x => x.subname === e.name)
        if (!r) problems.push({node: S, check: 'mesh', message: `subscription ${e.name} (${e.from}→${S}) is missing`, fix: 'The source must be a working member: run `mmlite init` / check `mmlite status`.'})
        else if (!r.enabled && !pausedByUs.has(e.name))
          problems.push({node: S, check: 'mesh', message: `subscription ${e.name} (${e.from}→${S}) is disabled`, fix: `Enable it on ${S} once its problem is solved (ALTER SUBSCRIPTION ${qi(e.name)} ENABLE), or choose another --source.`})
      }
    }
    const slots = await a.cluster.each(
      c => c.one<{n: number}>('SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name = $1', [makeEdge(a.full, c.name, S, a.versions).name]),
      a.others,
    )
    for (const [p, r] of slots) {
      if (r.ok && r.value?.n === 0) problems.push({node: p, check: 'mesh', message: `slot ${makeEdge(a.full, p, S, a.versions).name} (${p}→${S}) is missing`, fix: 'The source must be a working member: see `mmlite status`.'})
    }
    // the replication connection the copy needs
    try {
      const r = await openSession(a, S, true)
      try {
        await r.query('IDENTIFY_SYSTEM')
      } finally {
        await r.end().catch(() => {})
      }
    } catch (e) {
      problems.push({
        node: S,
        check: 'replication connection',
        message: errorMessage(e),
        fix: `The copy opens a logical replication connection (replication=database) to ${S} from this host: the role needs REPLICATION (or superuser), and max_wal_senders a free sender.`,
      })
    }
  }
  return problems
}

// ------------------------------------------------------------------------------ module

export const copyStrategy: StrategyModule = {
  preflight,
  buildSteps,
  recover: recoverPaused,
  report(a) {
    const v = values(a, a.x.name)
    const pauses = v.pauses ?? []
    const last = pauses[pauses.length - 1]
    return {
      sourcePause: last
        ? {node: a.source, subscriptions: last.subscriptions, ms: last.ms, pauses}
        : null,
      // --json: per-node values as arrays of {node, lsn} (keys are never node names: README "JSON output")
      copy: v.copy
        ? {
            attempts: v.copy.attempt,
            sourceLsn: v.copy.sourceLsn ?? null,
            originProgress: Object.entries(v.copy.originProgress).map(([node, lsn]) => ({node, lsn})),
            peerSlots: Object.entries(v.peerSlots ?? {}).map(([node, lsn]) => ({node, lsn})),
            tables: v.copy.tables ?? [],
          }
        : null,
    }
  },
  async cleanup(a) {
    const l = lives.get(a)
    if (!l) return
    // a failure between pause and snapshot: never leave S's subscriptions paused
    if (l.paused) {
      const p = l.paused
      // only a successful re-enable clears the journal's record of the pause: otherwise status
      // keeps showing the links as paused and the next run re-enables them first
      const resumed = await enableDisabled(a.cluster.node(a.source), p.subs).then(
        () => true,
        () => false,
      )
      if (resumed) {
        l.paused = undefined
        await jset(a, 'pauses', cur => [...(cur.pauses ?? []), {node: a.source, subscriptions: p.subs, startedAt: p.startedAt, ms: Date.now() - p.t0}]).catch(() => {})
        await jset(a, 'pausedSubscriptions', []).catch(() => {})
      }
    }
    await closeAll(l)
  },
}
