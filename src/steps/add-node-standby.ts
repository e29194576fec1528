/**
 * `add-node --strategy standby`: the new node X starts as a physical standby of the source S
 * (made by the operator, e.g. `pg_basebackup -R -X stream -C -S <slot>`), is promoted at a
 * WAL position P_X that mmlite controls, and is then wired into the mesh so that every
 * transaction of every node reaches X exactly once, while every existing node keeps taking
 * writes. Nothing is fenced; only S's *inbound* apply pauses, from step 2 to step 6.
 *
 * Notation: S = source, X = new node, P = each other existing node. Step ids in brackets.
 *
 *  1 [source-slot]      On S: logical slot S→X. Its consistent point C is before P_X (below).
 *  2 [pause-source]     On S: DISABLE every inbound subscription P→S and wait until its workers
 *                       are gone (recorded first in the journal as `pausedSubscriptions`, which
 *                       `mmlite status` shows as paused). From here S's replication origins
 *                       are static: R_P = what S applied from P.
 *  3 [copy-slots]       On each P: pg_copy_logical_replication_slot(P→S, P→X): same restart_lsn,
 *                       confirmed_flush, catalog_xmin and plugin as P→S now.
 *  4 [catch-up]         L = pg_current_wal_insert_lsn() on S; wait until X has replayed L; then
 *                       check on X that the inbound subscriptions it inherited (same oids as on
 *                       S) are disabled.
 *  5 [promote]          pg_promote() on X; P_X = the switch point of X's new timeline.
 *  5b [rollback-inherited-prepared] On X: ROLLBACK PREPARED what X inherited prepared from S
 *                       (S→X delivers it when S commits it; add-node/rollback-inherited-prepared.ts).
 *  6 [resume-source]    On S: ENABLE the paused subscriptions (reported: pause duration).
 *  7 [drop-inherited-slots] On X: drop S's slots that a file-level copy may have brought along.
 *  8 [new-node-slots]   On X: slots X→S and X→P.
 *  9 [repoint-subscriptions] On X: the inherited subscription <c>_P_S is renamed <c>_P_X,
 *                       pointed at slot P→X and enabled.
 * 10 [source-subscription] On X: subscription S→X on slot S→X, created disabled, its origin
 *                       advanced to P_X (only while it has applied nothing: add-node/origin.ts),
 *                       then enabled.
 * 11 [drop-feed-slot]   On S: the physical slot that fed X (X's primary_slot_name), if any.
 * 12 [peer-subscriptions] Subscriptions X→S on S and X→P on each P (copy_data = false).
 * 13 [wait-streaming]   Every link of X, and S's inbound links, stream.
 *
 * Why this is exact (checked against PostgreSQL's sources, see also the tests):
 *
 *  - S's own transactions. X holds exactly the WAL prefix of S up to P_X = the end of the
 *    last record X replayed (the switch point written to X's timeline history file; the same
 *    value as pg_last_wal_replay_lsn() right after promotion). Logical decoding skips a
 *    transaction whose commit record *starts* before the requested start point
 *    (decode.c DecodeTXNNeedSkip → SnapBuildXactNeedsSkip(origptr) : origptr <
 *    start_decoding_at), and the walsender starts at max(requested, confirmed_flush)
 *    (logical.c CreateDecodingContext). The subscription S→X requests its origin's
 *    progress, P_X; slot S→X has confirmed_flush = C ≤ L ≤ P_X (checked before enabling), so
 *    decoding starts at P_X: every commit that starts before P_X ended at or before P_X and is
 *    on X already; every later one is sent. Transactions still open at P_X commit after C, so
 *    they decode in full. Only S-local changes are sent (origin filter), as on every link.
 *  - P's transactions. Commit records carry the replication origin and its LSN and standbys
 *    replay them into their own origin state (xact_redo_commit → replorigin_advance), so X's
 *    copy of S's subscription P→S has the origin progress R_P and exactly the data S applied
 *    from P: both come from the same WAL prefix. S's apply of P was stopped before L (its
 *    worker exited; its last commits may have been asynchronous, which is why L is S's
 *    *insert* position, not the write position pg_current_wal_lsn() that the issue
 *    suggested), and P_X ≥ L, so X has everything S applied from P and nothing more. Slot
 *    P→X is a copy of P→S taken while S could not consume it: restarting X's inherited
 *    subscription at R_P on that copy is therefore exactly S re-enabling its own paused
 *    subscription, which PostgreSQL guarantees loses and repeats nothing (confirmed_flush
 *    only ever covers transactions S had flushed before reporting, so it never skips what X
 *    lacks; anything between R_P and confirmed_flush was not for S, hence not for X).
 *  - X's own changes. X takes no writes before its outbound slots exist (step 8); what X
 *    applies from S and P carries an origin and is never sent on.
 *
 *    The copy may be taken at any moment while S is paused, as long as it is taken before L
 *    is read (a copy cannot cover more than S had flushed before it stopped applying): a
 *    resumed run keeps L only while the same pause lasts, and takes a new one after a new pause.
 *
 * Safety: after promotion, an *enabled* inherited subscription would start an apply worker
 * on X that connects to P with slot P→S and consumes S's changes (tested: the source then
 * loses them). That is why S's subscriptions are disabled before X's replay target, and why
 * step 4 verifies, on X itself, that the inherited subscriptions are disabled before promoting
 * (a DISABLE committed with synchronous_commit = off could otherwise still be missing from X).
 * Every step that touches a subscription on X checks it is disabled and pointed at a P→X slot
 * before enabling it. A killed or failed run re-enables S's subscriptions (recover/cleanup)
 * only when that cannot reach X's catalog: X already out of recovery, or still a standby with
 * no promotion requested (the next run pauses again). Between pg_promote() and the end of
 * recovery they stay paused: X could still replay the ENABLE.
 *
 * Flaws found in the issue's procedure and fixed here:
 *  - "P_X = pg_last_wal_replay_lsn(), static after recovery ends" holds only until X restarts:
 *    after a restart it is NULL (or the end of crash recovery). A run killed between
 *    pg_promote() and recording P_X would then resume with a wrong value. P_X is read from X's
 *    timeline history file (durable, written at promotion) and cross-checked with
 *    pg_last_wal_replay_lsn() when X has not restarted since.
 *  - "S's current WAL LSN" (pg_current_wal_lsn) is the *write* position; asynchronous commits
 *    (subscriptions apply with synchronous_commit = off, and an operator may set it for the
 *    DISABLE's session too) can be inserted but not yet written, so X could be promoted
 *    before replaying them. L is the insert position, and the disabled state is verified on X.
 *  - pg_promote() may return false (timeout) with promotion still under way: S's
 *    subscriptions are re-enabled only once X reports it is out of recovery, never before
 *    (X would replay the ENABLE and steal the slots).
 *  - "streaming from S" cannot be decided by the system identifier: nodes restored from one
 *    backup (init --no-copy) share it. Preflight also matches the WAL receiver's sender with
 *    S and requires S's inbound subscriptions with S's oids on X; step 4 verifies on X the
 *    DISABLE that only S's WAL carries.
 *
 * Nothing about the operation is kept on S (the journal lives next to mmlite.yaml), so the
 * clone carries no mmlite state that could make X take itself for S; the only S-named objects
 * it inherits (subscriptions <c>_P_S, S's slots in a file-level copy) are renamed or dropped
 * here, and nodes are never identified by system identifier (X keeps S's).
 */
import type {Action, Step, StepContext} from '../engine/types.js'
import {unfinishedValues, type AddNodeContext, type StrategyModule} from './add-node-context.js'
import type {Problem} from './preflight.js'
import {
  makeEdge,
  pauseSubscriptionSql,
  resumeSubscriptionSql,
  slotAction,
  subscriptionAction,
  waitStreamingActions,
} from './mesh.js'
import {enableDisabled, type PauseRecord} from './pause.js'
import {J, SUBS_SQL, inRecovery, slots, standbyNames, subs, type SlotRow, type StandbyNames, type StandbyValues, type SubRow} from './add-node/standby-common.js'
export {J, standbyNames, terminateWorkersSql, advanceOriginSql, type StandbyNames, type StandbyValues} from './add-node/standby-common.js'
import {slotStartProblems} from './slot-guard.js'
import {joinResidueStep} from './doctor/join-residue.js'
import {rollbackInheritedPreparedStep} from './add-node/rollback-inherited-prepared.js'
import {pauseSourceStep} from './add-node/standby-pause-source.js'
import {sourceSubscriptionStep} from './add-node/standby-source-subscription.js'
import {edgeName} from '../cluster/naming.js'
import {escapeIdentifier as qi, escapeLiteral as ql} from '../db/quote.js'
import {parseLsn} from '../db/lsn.js'
import {MmliteError, ExitCode, errorMessage} from '../errors.js'
import {pollUntil} from '../util/poll.js'

// ------------------------------------------------------------------------------ journal values

/** The standby procedure's step ids, in order (journal, MMLITE_FAULT_KILL_AFTER, tests). */
export const STANDBY_STEP_IDS = [
  'source-slot',
  'pause-source',
  'copy-slots',
  'catch-up',
  'promote',
  'rollback-inherited-prepared',
  'resume-source',
  'drop-inherited-slots',
  'new-node-slots',
  'repoint-subscriptions',
  'source-subscription',
  'drop-feed-slot',
  'peer-subscriptions',
  'sequence-residue',
  'wait-streaming',
] as const

// ------------------------------------------------------------------------------ names, LSNs

/**
 * The switch point of the newest timeline from the contents of its history file
 * (`<parentTLI>\t<switchpoint>\t<reason>` per line; the last line is the newest switch).
 */
export function parseHistorySwitchpoint(history: string): {parentTli: number; lsn: string} | undefined {
  const lines = history
    .split('\n')
    .map(l => l.trim())
    .filter(l => l && !l.startsWith('#'))
  const last = lines.at(-1)
  if (!last) return undefined
  const m = /^(\d+)\s+([0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8})\b/.exec(last)
  return m ? {parentTli: Number(m[1]), lsn: m[2].toUpperCase()} : undefined
}

/** Hosts that are the same machine (loopback). */
function isLoopback(h: string): boolean {
  return h === 'localhost' || h === '::1' || /^127\./.test(h)
}

/**
 * Whether the WAL receiver's sender (host, port as X sees them) is S, given the ways S is
 * known: the hosts/ports of its DSNs and what S says about itself. A unix socket directory is
 * matched against S's unix_socket_directories.
 */
export function senderIsSource(
  sender: {host: string | null; port: number | null},
  source: {hosts: string[]; ports: number[]; socketDirs: string[]},
): boolean {
  if (sender.host === null || sender.port === null) return false
  if (!source.ports.includes(sender.port)) return false
  const h = sender.host
  if (h.startsWith('/')) return source.socketDirs.includes(h)
  const hosts = source.hosts.filter(Boolean)
  if (hosts.includes(h)) return true
  return isLoopback(h) && hosts.some(isLoopback)
}

// ------------------------------------------------------------------------------ SQL

export const renameSql = (from: string, to: string) => `ALTER SUBSCRIPTION ${qi(from)} RENAME TO ${qi(to)}`
export const setSlotSql = (sub: string, slot: string) => `ALTER SUBSCRIPTION ${qi(sub)} SET (slot_name = ${ql(slot)})`
export const copySlotSql = (from: string, to: string, plugin: string) =>
  `SELECT pg_copy_logical_replication_slot(${ql(from)}, ${ql(to)}, false, ${ql(plugin)})`
export const dropSlotSql = (slot: string) => `SELECT pg_drop_replication_slot(${ql(slot)})`
export const PROMOTE_SQL = 'SELECT pg_promote(true, 60) AS promoted'

/** The newest timeline's history file on a promoted server and the timeline it switched to. */
const HISTORY_SQL = `SELECT substr(f, 1, 8) AS tli_hex, pg_read_file('pg_wal/' || substr(f, 1, 8) || '.history') AS history
  FROM (SELECT pg_walfile_name(pg_current_wal_lsn()) AS f) w`

// ------------------------------------------------------------------------------ preflight

const X_FACTS_SQL = `SELECT pg_is_in_recovery() AS in_recovery,
       (SELECT system_identifier::text FROM pg_control_system()) AS sysid,
       current_setting('server_version_num')::int AS version_num,
       current_database() AS database,
       current_setting('primary_slot_name') AS primary_slot_name,
       (SELECT to_jsonb(w) - 'conninfo' FROM pg_stat_wal_receiver w LIMIT 1) AS receiver`

const S_FACTS_SQL = `SELECT (SELECT system_identifier::text FROM pg_control_system()) AS sysid,
       current_setting('server_version_num')::int AS version_num,
       current_database() AS database,
       current_setting('port')::int AS port,
       host(inet_server_addr()) AS server_addr,
       current_setting('unix_socket_directories') AS socket_dirs,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS tli`

/** Enabled subscriptions on S (any database: pg_subscription is shared) other than mmlite's inbound ones. */
const OTHER_ENABLED_SUBS_SQL = `SELECT s.subname, d.datname
  FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid
 WHERE s.subenabled AND NOT (d.datname = current_database() AND s.subname = ANY($1::text[]))
 ORDER BY 1`

const NOT_READY_SQL = `SELECT s.subname, string_agg(sr.srrelid::regclass::text || ':' || sr.srsubstate::text, ', ') AS pending
  FROM pg_subscription s JOIN pg_subscription_rel sr ON sr.srsubid = s.oid
 WHERE s.subname = ANY($1::text[]) AND sr.srsubstate <> 'r'
   AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
 GROUP BY s.subname`

const PLUGIN_FILE_SQL = `SELECT (pg_stat_file(setting || '/' || $1 || '.so', true)).size IS NOT NULL AS present
  FROM pg_config WHERE name = 'PKGLIBDIR'`

interface XFacts {
  in_recovery: boolean
  sysid: string
  version_num: number
  database: string
  primary_slot_name: string
  receiver: {status?: string; sender_host?: string | null; sender_port?: number | null; received_tli?: number; slot_name?: string | null} | null
}

interface SFacts {
  sysid: string
  version_num: number
  database: string
  port: number
  server_addr: string | null
  socket_dirs: string
  tli: number | null
}

/** What preflight learned that the plan's SQL can show (the slot that feeds X). */
const planFacts = new WeakMap<AddNodeContext, {feedSlot: string | null}>()

function hostsOf(ci: Map<string, string>): string[] {
  return (ci.get('host') ?? ci.get('hostaddr') ?? '').split(',').filter(Boolean)
}
function portsOf(ci: Map<string, string>): number[] {
  return (ci.get('port') ?? '').split(',').filter(Boolean).map(Number)
}

export async function standbyPreflight(ctx: AddNodeContext): Promise<Problem[]> {
  const problems: Problem[] = []
  const n = standbyNames(ctx)
  const {s, x} = n
  const values = journalValues(ctx.journal, x) as Record<string, unknown>
  const promotedByUs = values[J.promoteRequestedAt] !== undefined || values[J.promotedLsn] !== undefined
  const sNode = ctx.cluster.node(s)
  const xNode = ctx.cluster.node(x)
  let xf: XFacts
  let sf: SFacts
  try {
    ;[xf, sf] = await Promise.all([xNode.one<XFacts & Record<string, unknown>>(X_FACTS_SQL).then(r => r!), sNode.one<SFacts & Record<string, unknown>>(S_FACTS_SQL).then(r => r!)])
  } catch (e) {
    return [{node: x, check: 'standby', message: `cannot read the standby state of ${x} and ${s}: ${errorMessage(e)}`}]
  }
  const fixBuild =
    `Make ${x} a physical standby of ${s}, e.g. on ${x}'s host: pg_basebackup -h <${s} host> -p <${s} port> -U <replication user> -D <empty data dir> -R -X stream -C -S ${x}_feed, ` +
    `then start it with hot_standby = on; or add the node with --strategy copy.`
  const major = (v: number) => Math.floor(v / 10000)

  if (xf.sysid !== sf.sysid) {
    problems.push({node: x, check: 'standby', message: `${x} is not a copy of ${s}: its system identifier ${xf.sysid} differs from ${s}'s ${sf.sysid}`, fix: fixBuild})
  }
  if (major(xf.version_num) !== major(sf.version_num)) {
    problems.push({node: x, check: 'standby', message: `${x} runs PostgreSQL ${major(xf.version_num)}, ${s} runs ${major(sf.version_num)}; a physical standby needs the same major version`, fix: fixBuild})
  }
  if (xf.database !== sf.database) {
    problems.push({node: x, check: 'standby', message: `${x}'s dsn connects to database "${xf.database}", ${s}'s to "${sf.database}"; the standby holds ${s}'s databases, so use "${sf.database}"`, fix: `Point the dsn of ${x} at database ${sf.database}.`})
  }

  if (!xf.in_recovery && !promotedByUs) {
    problems.push({node: x, check: 'standby', message: `${x} is not in recovery (it accepts writes): the standby strategy needs ${x} to be a streaming physical standby of ${s}`, fix: fixBuild})
  }
  if (!xf.in_recovery && promotedByUs) {
    // X keeps S's system identifier: tell them apart by X's own timeline (it must be the one
    // this run's promotion created), never by the system identifier
    const h = await xNode.one<{tli_hex: string; history: string}>(HISTORY_SQL).catch(() => undefined)
    const xTli = h ? parseInt(h.tli_hex, 16) : undefined
    const sp = h ? parseHistorySwitchpoint(h.history) : undefined
    const journaled = values[J.promotedLsn] as string | undefined
    if (xTli !== undefined && sf.tli !== null && xTli === sf.tli) {
      problems.push({node: x, check: 'identity', message: `${x} is on ${s}'s timeline ${sf.tli}: it is not the standby this run promoted (is --dsn pointing at ${s}?)`, fix: 'Re-run with the --dsn of the first run.'})
    } else if (journaled && sp && parseLsn(sp.lsn) !== parseLsn(journaled)) {
      problems.push({node: x, check: 'identity', message: `${x}'s timeline began at ${sp.lsn}, but this run promoted its standby at ${journaled}: it is another server`, fix: 'Re-run with the --dsn of the first run.'})
    }
  }
  if (xf.in_recovery) {
    const r = xf.receiver
    const source = {
      hosts: [...hostsOf(ctx.cluster.node(s).node.conn), ...hostsOf(ctx.cluster.node(s).node.peerConn), sf.server_addr ?? ''],
      ports: [...portsOf(ctx.cluster.node(s).node.conn), ...portsOf(ctx.cluster.node(s).node.peerConn), sf.port],
      socketDirs: sf.socket_dirs.split(',').map(d => d.trim()).filter(Boolean),
    }
    if (!r || r.status !== 'streaming') {
      problems.push({
        node: x,
        check: 'standby',
        message: `${x} is in recovery but not streaming from a primary (WAL receiver: ${r?.status ?? 'none'})`,
        fix: `Set primary_conninfo on ${x} to reach ${s} (pg_basebackup -R does) and check both server logs.`,
      })
    } else {
      const sender = {host: r.sender_host ?? null, port: r.sender_port ?? null}
      if (!senderIsSource(sender, source)) {
        problems.push({
          node: x,
          check: 'standby',
          message: `${x} streams from ${sender.host ?? '?'}:${sender.port ?? '?'}, which is not ${s} (${[...new Set(source.hosts.filter(Boolean))].join('/')}:${[...new Set(source.ports)].join('/')})`,
          fix: `${x} must stream directly from ${s} (not through another standby): set its primary_conninfo to ${s}'s host and port.`,
        })
      }
      if (sf.tli !== null && r.received_tli !== undefined && r.received_tli !== sf.tli) {
        problems.push({node: x, check: 'standby', message: `${x} follows timeline ${r.received_tli}, ${s} is on timeline ${sf.tli}`, fix: fixBuild})
      }
    }
  }
  // slot S→X is created with pg_create_logical_replication_slot while S takes writes
  if (!promotedByUs) problems.push(...slotStartProblems([s], ctx.versions, () => `the slot ${n.sourceEdge.name} (${s}→${x})`))
  planFacts.set(ctx, {feedSlot: (values[J.feedSlot] as string | null | undefined) ?? (xf.primary_slot_name || null)})

  // S's inbound links: present, healthy, and (before promotion) inherited by X with the same oids
  const inboundNames = n.inbound.map(i => i.sub)
  const paused = new Set(((values[J.paused] as Array<{subscription: string}> | undefined) ?? []).map(p => p.subscription))
  const [sSubs, xSubs, notReady, otherEnabled] = await Promise.all([
    sNode.query<SubRow & Record<string, unknown>>(SUBS_SQL, [inboundNames]),
    xf.in_recovery ? xNode.query<SubRow & Record<string, unknown>>(SUBS_SQL, [inboundNames]) : Promise.resolve([] as SubRow[]),
    sNode.query<{subname: string; pending: string}>(NOT_READY_SQL, [inboundNames]),
    promotedByUs ? Promise.resolve([] as Array<{subname: string; datname: string}>) : sNode.query<{subname: string; datname: string}>(OTHER_ENABLED_SUBS_SQL, [inboundNames]),
  ])
  for (const i of n.inbound) {
    const sr = sSubs.find(r => r.subname === i.sub)
    if (!sr) {
      problems.push({node: s, check: 'mesh', message: `subscription ${i.sub} (${i.p}→${s}) is missing on ${s}`, fix: 'Run `mmlite init` to finish the mesh first.'})
      continue
    }
    if (sr.slot !== i.sub) problems.push({node: s, check: 'mesh', message: `subscription ${i.sub} on ${s} uses slot ${sr.slot ?? 'NONE'}, not ${i.sub}`})
    if (!sr.enabled && !paused.has(i.sub)) {
      problems.push({node: s, check: 'mesh', message: `subscription ${i.sub} (${i.p}→${s}) is disabled`, fix: `Enable it (ALTER SUBSCRIPTION ${qi(i.sub)} ENABLE) and let it catch up, or find out why it was disabled; \`mmlite status\` shows the links.`})
    }
    if (xf.in_recovery) {
      const xr = xSubs.find(r => r.subname === i.sub)
      if (!xr || xr.oid !== sr.oid) {
        problems.push({node: x, check: 'standby', message: `${x} does not hold ${s}'s subscription ${i.sub} (oid ${sr.oid}${xr ? `; ${x} has oid ${xr.oid}` : ''}): it is not a current copy of ${s}`, fix: fixBuild})
      }
    }
  }
  for (const r of notReady) {
    problems.push({node: s, check: 'mesh', message: `tables of ${r.subname} are not synchronized yet (${r.pending})`, fix: 'Wait for `mmlite init` to finish (mmlite status).'})
  }
  for (const r of otherEnabled) {
    problems.push({
      node: s,
      check: 'subscriptions',
      message: `${s} has the enabled subscription "${r.subname}" (database ${r.datname}) that mmlite does not manage: once promoted, ${x} would start its copy of it and consume its publisher's slot`,
      fix: `Disable it on ${s} for the duration of the join (ALTER SUBSCRIPTION ${qi(r.subname)} DISABLE), or use --strategy copy.`,
    })
  }

  // the output plugin on X (a standby cannot try a temporary slot before PostgreSQL 16)
  if (xf.in_recovery && n.outEdges.some(e => e.mechanism === 'plugin')) {
    const plugin = n.outEdges.find(e => e.mechanism === 'plugin')!.plugin
    try {
      const r = await xNode.one<{present: boolean}>(PLUGIN_FILE_SQL, [plugin])
      if (r && !r.present) {
        problems.push({
          node: x,
          check: 'plugin',
          message: `the output plugin "${plugin}" is not installed on ${x} (its slots need it)`,
          fix: `Install it on ${x}'s server: make -C extension install PG_CONFIG=<pg_config of that server>.`,
        })
      }
    } catch {
      /* pg_config / pg_stat_file not permitted for this role: the slot creation will tell */
    }
  }
  return problems
}

// ------------------------------------------------------------------------------ steps

export function buildStandbySteps(ctx: AddNodeContext): Step[] {
  const n = standbyNames(ctx)
  const {s, x} = n
  const timeoutMs = ctx.timeoutMs
  const v = (node: string) => ctx.versions.get(node)!
  const feedSlotForPlan = planFacts.get(ctx)?.feedSlot

  const jget = <T>(sctx: StepContext, k: string) => sctx.journal.get<T>(k)

  /** On X: S's inbound subscriptions as inherited (same oids as on S) are all disabled. */
  const inheritedDisabled = async (sctx: StepContext): Promise<{ok: boolean; fatal?: boolean; why?: string}> => {
    const names = n.inbound.map(i => i.sub)
    const [onS, onX] = await Promise.all([subs(sctx, s, names), subs(sctx, x, names)])
    for (const i of n.inbound) {
      const a = onS.get(i.sub)
      const b = onX.get(i.sub)
      if (!a || !b || a.oid !== b.oid) return {ok: false, fatal: true, why: `${x} does not show ${s}'s subscription ${i.sub} (oid ${a?.oid ?? '?'}); it is not following ${s}`}
      if (a.enabled) return {ok: false, fatal: true, why: `${i.sub} was enabled again on ${s} during the join (it must stay paused until ${x} is promoted)`}
      if (b.enabled) return {ok: false, why: `${x} has not replayed the DISABLE of ${i.sub} yet`}
    }
    return {ok: true}
  }

  // 1 ---------------------------------------------------------------------------------------
  const sourceSlot: Step = {id: 'source-slot', title: `Create the slot ${s}→${x} on ${s}`, actions: [slotAction(n.sourceEdge)]}

  // 2 ---------------------------------------------------------------------------------------
  const pause = pauseSourceStep(ctx, n)

  // 3 ---------------------------------------------------------------------------------------
  const copyActions: Action[] = n.inbound.map((i, k) => {
    const edge = n.peerInEdges[k]
    const exists = async (sctx: StepContext): Promise<boolean> => {
      const r = (await slots(sctx, i.p, [edge.name])).get(edge.name)
      if (!r) return false
      if (r.slot_type !== 'logical' || r.plugin !== edge.plugin) {
        throw new MmliteError(`node ${i.p}: slot ${edge.name} exists but is ${r.slot_type} with plugin ${r.plugin ?? '-'}; expected a logical slot with plugin ${edge.plugin}`, {
          code: ExitCode.Preflight,
          suggestions: [`If nothing uses it, drop it on ${i.p}: ${dropSlotSql(edge.name)};`],
        })
      }
      return true
    }
    return {
      node: i.p,
      label: `copy slot ${i.sub} to ${edge.name}`,
      sql: [copySlotSql(i.sub, edge.name, edge.plugin)],
      check: exists,
      run: async sctx => {
        if (await exists(sctx)) return
        // Only a copy taken while S cannot consume P→S and before X's cut is exact (see top).
        if (!(await inRecovery(sctx, x))) {
          throw new MmliteError(`${x} was promoted before slot ${edge.name} was copied on ${i.p}; a copy taken now would miss what ${s} applied since`, {
            suggestions: [`Remove ${x} (drop its subscriptions/slots), rebuild it as a standby of ${s} and run add-node again.`],
          })
        }
        const sub = (await subs(sctx, s, [i.sub])).get(i.sub)
        if (!sub || sub.enabled || sub.workers > 0) {
          throw new MmliteError(`internal: ${i.sub} on ${s} is not paused; refusing to copy ${i.sub} on ${i.p}`)
        }
        const src = (await slots(sctx, i.p, [i.sub])).get(i.sub)
        if (!src || src.slot_type !== 'logical' || src.plugin !== edge.plugin) {
          throw new MmliteError(`node ${i.p}: slot ${i.sub} (${i.p}→${s}) is ${src ? `${src.slot_type} with plugin ${src.plugin ?? '-'}` : 'missing'}; expected a logical slot with plugin ${edge.plugin}`, {
            code: ExitCode.Preflight,
          })
        }
        await sctx.cluster.node(i.p).query(copySlotSql(i.sub, edge.name, edge.plugin))
      },
    }
  })
  const copy: Step = {id: 'copy-slots', title: `Copy each slot P→${s} to P→${x} on the other nodes`, actions: copyActions}

  // 4 ---------------------------------------------------------------------------------------
  const replayed = async (sctx: StepContext, target: string): Promise<{ok: boolean; lag: string}> => {
    const r = (await sctx.cluster.node(x).one<{ok: boolean | null; lag: string | null}>(
      'SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok, pg_wal_lsn_diff($1::pg_lsn, pg_last_wal_replay_lsn())::bigint::text AS lag',
      [target],
    ))!
    return {ok: Boolean(r.ok), lag: r.lag ?? '?'}
  }
  const catchUp: Step = {
    id: 'catch-up',
    title: `Wait until ${x} has replayed ${s}'s WAL past the pause`,
    actions: [
      {
        node: x,
        label: `wait until ${x} replays ${s}'s current WAL insert position`,
        sql: [],
        check: async sctx => {
          if (!(await inRecovery(sctx, x))) return true
          const target = jget<string>(sctx, J.replayTarget)
          return Boolean(target) && (await replayed(sctx, target!)).ok && (await inheritedDisabled(sctx)).ok
        },
        run: async sctx => {
          if (!(await inRecovery(sctx, x))) return
          let target = jget<string>(sctx, J.replayTarget)
          if (!target) {
            target = (await sctx.cluster.node(s).one<{l: string}>('SELECT pg_current_wal_insert_lsn()::text AS l'))!.l
            await sctx.journal.set(J.replayTarget, target)
          }
          if (jget(sctx, J.feedSlot) === undefined) {
            const r = await sctx.cluster.node(x).one<{slot: string}>("SELECT current_setting('primary_slot_name') AS slot")
            await sctx.journal.set(J.feedSlot, r?.slot ? r.slot : null)
          }
          let why = ''
          await pollUntil(
            async () => {
              const r = await replayed(sctx, target!)
              if (!r.ok) {
                sctx.progress(`${x} is ${r.lag} bytes behind ${s}`)
                return false
              }
              const d = await inheritedDisabled(sctx)
              if (d.fatal) throw new MmliteError(`refusing to promote ${x}: ${d.why}`, {suggestions: [`${x} must be a streaming standby of ${s}: rebuild it from ${s}.`]})
              why = d.why ?? ''
              if (!d.ok) sctx.progress(why)
              return d.ok
            },
            {
              timeoutMs,
              what: `${x} to replay ${s}'s WAL up to ${target}${why ? ` (${why})` : ''}`,
              hint: `Check that ${x} streams from ${s} (pg_stat_wal_receiver on ${x}) and both server logs. Re-running continues from here.`,
            },
          )
        },
      },
    ],
  }

  // 5 ---------------------------------------------------------------------------------------
  const readPromotedLsn = async (sctx: StepContext, justPromoted: boolean): Promise<string> => {
    const c = sctx.cluster.node(x)
    const replay = (await c.one<{r: string | null; started: Date}>('SELECT pg_last_wal_replay_lsn()::text AS r, pg_postmaster_start_time() AS started'))!
    let fromHistory: string | undefined
    let historyError: string | undefined
    try {
      const h = (await c.one<{tli_hex: string; history: string}>(HISTORY_SQL))!
      fromHistory = parseHistorySwitchpoint(h.history)?.lsn
      if (!fromHistory) historyError = `timeline history file ${h.tli_hex}.history has no switch point`
    } catch (e) {
      historyError = errorMessage(e)
    }
    const requested = jget<string>(sctx, J.promoteRequestedAt)
    const notRestarted = justPromoted || (requested !== undefined && replay.started.getTime() < Date.parse(requested))
    if (fromHistory) {
      if (notRestarted && replay.r && parseLsn(replay.r) !== parseLsn(fromHistory)) {
        throw new MmliteError(`${x}: the timeline switch point ${fromHistory} differs from pg_last_wal_replay_lsn() ${replay.r}; refusing to guess where ${x} left ${s}'s WAL`)
      }
      return fromHistory
    }
    if (notRestarted && replay.r) return replay.r
    throw new MmliteError(`cannot tell at which WAL position ${x} was promoted (${historyError ?? 'no history'})`, {
      suggestions: [`Grant the connecting role pg_read_server_files on ${x} (to read pg_wal/*.history) and re-run.`],
    })
  }
  const promote: Step = {
    id: 'promote',
    title: `Promote ${x} and record where it left ${s}'s WAL`,
    actions: [
      {
        node: x,
        label: `pg_promote() on ${x}`,
        sql: [PROMOTE_SQL, "SELECT pg_last_wal_replay_lsn()  -- with pg_wal/<timeline>.history: the promotion LSN P_X"],
        check: async sctx => !(await inRecovery(sctx, x)) && jget(sctx, J.promotedLsn) !== undefined,
        run: async sctx => {
          const c = sctx.cluster.node(x)
          let justPromoted = false
          if (await inRecovery(sctx, x)) {
            // the same guards as catch-up, right before the point of no return
            const target = jget<string>(sctx, J.replayTarget)
            if (!target || !(await replayed(sctx, target)).ok) throw new MmliteError(`internal: ${x} has not replayed the pause yet`)
            const d = await inheritedDisabled(sctx)
            if (!d.ok) throw new MmliteError(`refusing to promote ${x}: ${d.why}`, {suggestions: ['Re-run the command; it waits until the pause has reached the standby.']})
            if (!jget(sctx, J.promoteRequestedAt)) await sctx.journal.set(J.promoteRequestedAt, new Date().toISOString())
            await c.query(PROMOTE_SQL)
            await pollUntil(async () => !(await inRecovery(sctx, x)), {timeoutMs, what: `${x} to finish promotion`})
            justPromoted = true
          }
          const px = await readPromotedLsn(sctx, justPromoted)
          const target = jget<string>(sctx, J.replayTarget)
          if (target && parseLsn(px) < parseLsn(target)) {
            throw new MmliteError(`${x} was promoted at ${px}, before ${s}'s pause reached it (${target}); it may have started ${s}'s subscriptions`, {
              suggestions: [`Check ${x}'s subscriptions (they must be disabled) and rebuild ${x} from ${s}.`],
            })
          }
          await sctx.journal.set(J.promotedLsn, px)
          sctx.note(`${x} promoted at ${px}`)
        },
      },
    ],
  }

  // 5b --------------------------------------------------------------------------------------
  const rollbackPrepared = rollbackInheritedPreparedStep(ctx)

  // 6 ---------------------------------------------------------------------------------------
  const resume: Step = {
    id: 'resume-source',
    title: `Resume ${s}'s inbound replication`,
    actions: [
      {
        node: s,
        label: `enable ${n.inbound.map(i => i.sub).join(', ')}`,
        sql: n.inbound.map(i => resumeSubscriptionSql(i.sub)),
        check: async sctx => {
          if ((jget<unknown[]>(sctx, J.paused) ?? []).length > 0) return false
          const rows = await subs(sctx, s, n.inbound.map(i => i.sub))
          return n.inbound.every(i => rows.get(i.sub)?.enabled)
        },
        run: async sctx => {
          // X must be out of recovery first: it would replay the ENABLE and start them too
          if (await inRecovery(sctx, x)) throw new MmliteError(`internal: ${x} is still in recovery; not resuming ${s}'s subscriptions`)
          const ms = await resumeSource(sctx.journal, sctx.cluster, n)
          if (ms !== undefined) sctx.note(`${s}'s inbound replication (${n.inbound.map(i => i.sub).join(', ')}) was paused for ${ms} ms; clients on every node kept committing`)
        },
      },
    ],
  }

  // 7 ---------------------------------------------------------------------------------------
  const inheritedSlotNames = ctx.full.nodes.map(m => m.name).filter(m => m !== s).map(m => edgeName(n.cluster, s, m))
  const toDrop = async (sctx: StepContext): Promise<string[]> => {
    const feed = jget<string | null>(sctx, J.feedSlot)
    const rows = await slots(sctx, x, [...inheritedSlotNames, ...(feed ? [feed] : [])])
    return [...rows.values()]
      .filter(r => (inheritedSlotNames.includes(r.slot_name) && r.slot_type === 'logical') || (r.slot_name === feed && r.slot_type === 'physical' && !r.active))
      .map(r => r.slot_name)
  }
  const dropInherited: Step = {
    id: 'drop-inherited-slots',
    title: `Drop ${s}'s slots that ${x} inherited`,
    actions: [
      {
        node: x,
        label: `drop ${inheritedSlotNames.join(', ')} on ${x} if present`,
        sql: inheritedSlotNames.map(dropSlotSql),
        check: async sctx => (await toDrop(sctx)).length === 0,
        run: async sctx => {
          for (const name of await toDrop(sctx)) await sctx.cluster.node(x).query(dropSlotSql(name))
        },
      },
    ],
  }

  // 8 ---------------------------------------------------------------------------------------
  const newSlots: Step = {id: 'new-node-slots', title: `Create ${x}'s outbound slots`, actions: n.outEdges.map(slotAction)}

  // 9 ---------------------------------------------------------------------------------------
  const repointActions: Action[] = n.inbound.map((i, k) => {
    const edge = n.peerInEdges[k]
    const state = async (sctx: StepContext) => {
      const rows = await subs(sctx, x, [i.sub, i.newSub])
      return {old: rows.get(i.sub), cur: rows.get(i.newSub)}
    }
    return {
      node: x,
      label: `subscription ${i.sub} → ${i.newSub} on slot ${edge.name}`,
      sql: [renameSql(i.sub, i.newSub), setSlotSql(i.newSub, edge.name), resumeSubscriptionSql(i.newSub)],
      check: async sctx => {
        const st = await state(sctx)
        return Boolean(st.cur && !st.old && st.cur.slot === edge.name && st.cur.enabled)
      },
      run: async sctx => {
        const c = sctx.cluster.node(x)
        let st = await state(sctx)
        if (st.old && st.cur) throw new MmliteError(`${x} has both ${i.sub} and ${i.newSub}; expected one (the inherited subscription)`)
        if (st.old) {
          // never enabled on X with the slot of S (refused by the guards before promotion)
          if (st.old.enabled) throw new MmliteError(`${x}: inherited subscription ${i.sub} is enabled; it would consume ${s}'s slot on ${i.p}`, {
            suggestions: [`Disable it at once on ${x}: ${pauseSubscriptionSql(i.sub)}; then check ${s} for missing changes from ${i.p}.`],
          })
          await c.query(renameSql(i.sub, i.newSub))
          st = await state(sctx)
        }
        const cur = st.cur
        if (!cur) throw new MmliteError(`${x} has neither ${i.sub} nor ${i.newSub}: the subscription inherited from ${s} is gone`)
        if (cur.slot !== edge.name) {
          if (cur.enabled) throw new MmliteError(`${x}: ${i.newSub} is enabled on slot ${cur.slot ?? 'NONE'}; expected ${edge.name}`)
          await c.query(setSlotSql(i.newSub, edge.name))
        }
        if (!cur.enabled) {
          const sl = (await slots(sctx, i.p, [edge.name])).get(edge.name)
          if (!sl) throw new MmliteError(`internal: slot ${edge.name} is missing on ${i.p}`)
          await c.query(resumeSubscriptionSql(i.newSub))
        }
      },
    }
  })
  const repoint: Step = {id: 'repoint-subscriptions', title: `Point ${x}'s inherited subscriptions at their own slots and start them`, actions: repointActions, sequential: true}

  // 10 --------------------------------------------------------------------------------------
  const se = n.sourceEdge
  const sourceSub = sourceSubscriptionStep(ctx, n)

  // 11 --------------------------------------------------------------------------------------
  /** recorded in catch-up; before that (plans) what preflight read from X */
  const feedName = (sctx: StepContext): string | null => {
    const j = jget<string | null>(sctx, J.feedSlot)
    return j !== undefined ? j : (feedSlotForPlan ?? null)
  }
  const feedState = async (sctx: StepContext): Promise<SlotRow | undefined> => {
    const feed = feedName(sctx)
    if (!feed) return undefined
    const r = (await slots(sctx, s, [feed])).get(feed)
    return r && r.slot_type === 'physical' ? r : undefined
  }
  const dropFeed: Step = {
    id: 'drop-feed-slot',
    title: `Drop the physical slot on ${s} that fed ${x}`,
    actions: [
      {
        node: s,
        label: `drop ${feedSlotForPlan ?? `${x}'s primary_slot_name`} on ${s} (if any)`,
        sql: [dropSlotSql(feedSlotForPlan ?? `<primary_slot_name of ${x}>`)],
        check: async sctx => (await feedState(sctx)) === undefined,
        run: async sctx => {
          const feed = feedName(sctx)
          if (!feed) return
          await pollUntil(
            async () => {
              const r = await feedState(sctx)
              if (!r) return true
              if (r.active) {
                sctx.progress(`${s}: waiting for the walsender of ${feed} to exit`)
                return false
              }
              try {
                await sctx.cluster.node(s).query(dropSlotSql(feed))
              } catch (e) {
                if (e instanceof MmliteError && /is active for PID|does not exist/i.test(e.message)) return false
                throw e
              }
              return true
            },
            {timeoutMs, what: `slot ${feed} on ${s} to be released`},
          )
        },
      },
    ],
  }

  // 12, 13 ----------------------------------------------------------------------------------
  const peerSubs: Step = {
    id: 'peer-subscriptions',
    title: `Subscribe every other node to ${x}`,
    actions: n.outEdges.map(e => subscriptionAction(ctx.full, e, {copyData: false, subscriberVersion: v(e.to)})),
  }
  const sourceInEdges = n.others.map(p => makeEdge(ctx.full, p, s, ctx.versions))
  const wait: Step = {
    id: 'wait-streaming',
    title: `Wait until every link of ${x} (and ${s}'s resumed links) streams`,
    actions: waitStreamingActions([se, ...n.peerInEdges, ...n.outEdges, ...sourceInEdges], timeoutMs),
  }

  // staggered sequences (doctor --fix): X, a clone of S, would draw S's values; it gets a class of its own
  const residue = joinResidueStep(ctx.full, x, () => [s, ...n.others])
  const steps = [sourceSlot, pause, copy, catchUp, promote, rollbackPrepared, resume, dropInherited, newSlots, repoint, sourceSub, dropFeed, peerSubs, residue, wait]
  // remember that this process really ran something (cleanup acts only then, never after a dry run)
  for (const st of steps)
    for (const a of st.actions) {
      const run = a.run
      a.run = async sctx => {
        ranHere.add(ctx)
        await run(sctx)
      }
    }
  return steps.filter(st => st.actions.length > 0)
}

const ranHere = new WeakSet<AddNodeContext>()

// ------------------------------------------------------------------------------ pause bookkeeping

type Journal = AddNodeContext['journal']
type ClusterConns = AddNodeContext['cluster']

/** Values of this run's unfinished journal operation (read without beginning it: preflight changes nothing). */
function journalValues(journal: Journal, x: string): StandbyValues {
  return unfinishedValues<StandbyValues>(journal, x)
}

/**
 * Re-enable the subscriptions this run paused on S, record how long, clear the pause.
 * Returns the pause's duration (undefined when nothing was paused).
 */
async function resumeSource(journal: Journal, cluster: ClusterConns, n: StandbyNames, how: 'resumed' | 'recovered' = 'resumed'): Promise<number | undefined> {
  const v = journalValues(journal, n.x)
  const paused = v.pausedSubscriptions ?? []
  await enableDisabled(cluster.node(n.s), n.inbound.map(i => i.sub))
  if (paused.length === 0) return undefined
  const since = paused[0].since
  const ms = Date.now() - Date.parse(since)
  const rec: PauseRecord =
    how === 'resumed'
      ? {node: n.s, subscriptions: paused.map(p => p.subscription), startedAt: since, ms}
      : {node: n.s, subscriptions: paused.map(p => p.subscription), startedAt: since, ms: null, recoveredAfterMs: ms}
  await journal.set(J.pauses, [...(v.pauses ?? []), rec])
  await journal.set(J.paused, [])
  return ms
}

/**
 * A run that died (or failed) while S was paused: re-enable S's subscriptions unless that is
 * unsafe. It is safe once X is out of recovery (it no longer replays S's WAL), and while X is
 * in recovery if no promotion was requested (the next run pauses again, with a new replay
 * target). Between pg_promote() and the end of recovery X could still replay the ENABLE and
 * start its inherited copies of the subscriptions, so they stay paused until the next run has
 * seen the promotion through.
 */
async function releasePause(ctx: AddNodeContext, how: 'recovered'): Promise<string[]> {
  const n = standbyNames(ctx)
  const v = journalValues(ctx.journal, n.x)
  const paused = v.pausedSubscriptions ?? []
  if (paused.length === 0) return []
  let xInRecovery: boolean
  try {
    xInRecovery = (await ctx.cluster.node(n.x).one<{r: boolean}>('SELECT pg_is_in_recovery() AS r'))!.r
  } catch {
    return [`${n.s}'s subscriptions ${paused.map(p => p.subscription).join(', ')} stay paused: ${n.x} cannot be reached to tell whether it was promoted`]
  }
  if (xInRecovery && v.promoteRequestedAt) {
    return [`${n.s}'s subscriptions ${paused.map(p => p.subscription).join(', ')} stay paused until the promotion of ${n.x} has finished`]
  }
  if (xInRecovery) await ctx.journal.set(J.replayTarget, undefined)
  const ms = await resumeSource(ctx.journal, ctx.cluster, n, how)
  return [`re-enabled on ${n.s} the subscription(s) an interrupted run had paused ${ms !== undefined ? `${Math.round(ms / 100) / 10} s ago` : ''}: ${paused.map(p => p.subscription).join(', ')}`]
}

export function standbyReport(ctx: AddNodeContext): Record<string, unknown> {
  const v = journalValues(ctx.journal, ctx.x.name)
  const pauses = v.pauses ?? []
  const last = pauses.at(-1)
  return {
    sourcePause: last
      ? {node: ctx.source, subscriptions: last.subscriptions, ms: last.ms, totalMs: pauses.reduce((a, p) => a + (p.ms ?? p.recoveredAfterMs ?? 0), 0), pauses}
      : null,
    promotedLsn: v.promotedLsn ?? null,
    replayTarget: v.replayTarget ?? null,
    feedSlot: v.feedSlot ?? null,
  }
}

export const standbyStrategy: StrategyModule = {
  preflight: standbyPreflight,
  buildSteps: buildStandbySteps,
  recover: ctx => releasePause(ctx, 'recovered'),
  report: standbyReport,
  async cleanup(ctx) {
    // after a failure: never leave S paused when that is safe (see releasePause)
    if (ranHere.has(ctx)) await releasePause(ctx, 'recovered').catch(() => [])
  },
}
