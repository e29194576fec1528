/**
 * What blocks a link, read without disturbing it.
 *
 * A link A→B is subscription S on B reading slot S on A. S's replication origin (`pg_<oid of S>`,
 * remote_lsn = end LSN of the last remote commit B applied) says where B stands. The transaction
 * that blocks the link is the first one A's walsender would send after that position: we copy A's
 * slot as a temporary slot (`pg_copy_logical_replication_slot(..., temporary => true)`, allowed
 * while the subscription holds the original), peek it with the subscription's own output options
 * (same plugin, its publications, `origin` on 16+), parse the pgoutput messages and drop what the
 * walsender would drop when started at the origin position: transactions whose commit record
 * starts before it. Nothing on either node changes; the copy goes away with its session.
 *
 * A link is stuck when such a transaction is pending, the origin does not move past it, and the
 * subscriber shows that applying fails: on 15+ `apply_error_count` rises (or the subscription was
 * disabled by `disable_on_error` after an error); on 14 and older, where no error counter exists,
 * the apply worker is seen exiting and restarting. A healthy worker busy with a long transaction
 * keeps its pid and counts no error, so it is never taken for stuck.
 */
import type pg from 'pg'
import type {NodeConn} from '../db/node.js'
import {escapeIdentifier as qi, escapeLiteral as ql} from '../db/quote.js'
import {redactText} from '../db/redact.js'
import {compareLsn} from '../db/lsn.js'
import {errorMessage} from '../errors.js'
import {sleep} from '../util/poll.js'
import {PgoutputDecoder, type Change, type DecodedTx} from './pgoutput-decode.js'
import {streamingMode, type StreamingMode} from './streaming.js'

export const NATIVE_ORIGIN_OPTION_MIN = 160000
export const SKIP_LSN_MIN = 150000

// ------------------------------------------------------------------------------------ state

/** The subscription of a link, on its subscriber. */
export interface SubscriptionState {
  oid: number
  enabled: boolean
  /** 15+; null before */
  disableOnError: boolean | null
  /** 15+: ALTER SUBSCRIPTION ... SKIP position waiting to be used; null when none */
  skipLsn: string | null
  publications: string[]
  /** 16+: the subscription's origin option ('none' / 'any'); null before */
  origin: string | null
  slotName: string | null
  /** leader apply worker; null when not running */
  workerPid: number | null
  /** 15+ pg_stat_subscription_stats.apply_error_count; null before */
  applyErrors: number | null
  /** origin progress (end LSN of the last applied remote commit); null before the first one */
  originLsn: string | null
  /** 14+: the subscription's streaming mode; null before */
  streaming: StreamingMode | null
  /** wal_retrieve_retry_interval of the subscriber: how soon a failed worker is restarted */
  retryIntervalMs: number
  versionNum: number
}

export function subscriptionStateSql(v: number): string {
  const leaderOnly = v >= 160000 ? ' AND st.leader_pid IS NULL' : ''
  return `SELECT s.oid::int8 AS oid, s.subenabled AS enabled,
       ${v >= 150000 ? 's.subdisableonerr' : 'NULL::bool'} AS disable_on_error,
       ${v >= 150000 ? "NULLIF(s.subskiplsn, '0/0')::text" : 'NULL::text'} AS skip_lsn,
       s.subpublications AS publications,
       ${v >= 140000 ? 's.substream::text' : 'NULL::text'} AS streaming,
       ${v >= 160000 ? 's.suborigin' : 'NULL::text'} AS origin,
       s.subslotname::text AS slot_name,
       (SELECT st.pid FROM pg_stat_subscription st WHERE st.subid = s.oid AND st.relid IS NULL${leaderOnly} LIMIT 1) AS worker_pid,
       ${v >= 150000 ? '(SELECT ss.apply_error_count FROM pg_stat_subscription_stats ss WHERE ss.subid = s.oid)' : 'NULL::int8'} AS apply_errors,
       (SELECT NULLIF(o.remote_lsn, '0/0')::text FROM pg_replication_origin_status o WHERE o.external_id = 'pg_' || s.oid) AS origin_lsn,
       (SELECT setting::int FROM pg_settings WHERE name = 'wal_retrieve_retry_interval') AS retry_ms
  FROM pg_subscription s
 WHERE s.subname = $1 AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`
}

interface SubRowRaw {
  oid: string
  enabled: boolean
  disable_on_error: boolean | null
  skip_lsn: string | null
  publications: string[]
  origin: string | null
  slot_name: string | null
  worker_pid: number | null
  apply_errors: string | number | null
  origin_lsn: string | null
  retry_ms: number | null
  streaming: string | null
}

export async function readSubscription(c: NodeConn, name: string): Promise<SubscriptionState | undefined> {
  await c.connect()
  const v = c.serverVersion
  const r = await c.one<SubRowRaw>(subscriptionStateSql(v), [name])
  if (!r) return undefined
  return {
    oid: Number(r.oid),
    enabled: r.enabled,
    disableOnError: r.disable_on_error,
    skipLsn: r.skip_lsn,
    publications: r.publications,
    origin: r.origin,
    slotName: r.slot_name,
    workerPid: r.worker_pid,
    applyErrors: r.apply_errors === null ? null : Number(r.apply_errors),
    originLsn: r.origin_lsn,
    streaming: streamingMode(r.streaming),
    retryIntervalMs: r.retry_ms ?? 5000,
    versionNum: v,
  }
}

export interface SlotState {
  plugin: string
  active: boolean
  confirmedFlush: string | null
  versionNum: number
}

export async function readSlot(c: NodeConn, name: string): Promise<SlotState | undefined> {
  await c.connect()
  const r = await c.one<{plugin: string; active: boolean; confirmed_flush: string | null; slot_type: string}>(
    `SELECT plugin, active, confirmed_flush_lsn::text AS confirmed_flush, slot_type FROM pg_replication_slots
      WHERE slot_name = $1 AND database = current_database()`,
    [name],
  )
  if (!r || r.slot_type !== 'logical') return undefined
  return {plugin: r.plugin, active: r.active, confirmedFlush: r.confirmed_flush, versionNum: c.serverVersion}
}

// ------------------------------------------------------------------------------------ decode

export interface DecodeInput {
  slot: string
  plugin: string
  publications: string[]
  /** the subscription's origin option (16+ subscribers) */
  origin: string | null
  publisherVersion: number
  /** the subscription's origin progress: transactions whose commit starts before it were applied */
  after: string | null
  /** how many pending transactions to return (default 1) */
  limit?: number
}

/** The output plugin options a subscription's walsender gets, for a SQL peek. */
export function peekOptions(i: Pick<DecodeInput, 'publications' | 'origin' | 'publisherVersion'>): string[] {
  const opts = ['proto_version', '1', 'publication_names', i.publications.map(qi).join(',')]
  // the subscriber sends origin only to 16+ publishers (pgoutput before 16 rejects the option)
  if (i.origin && i.publisherVersion >= NATIVE_ORIGIN_OPTION_MIN) opts.push('origin', i.origin)
  return opts
}

/** Transactions the subscription would still apply: commit at or after `after`, and not empty. */
export function pendingAfter(txs: DecodedTx[], after: string | null): DecodedTx[] {
  return txs.filter(t => t.changeCount > 0 && (after === null || compareLsn(t.finalLsn, after) >= 0))
}

/** Changes kept per decoded transaction (its preview); the rest are only counted. */
export const PREVIEW_CHANGES = 20
/** Rows fetched from the peek at a time: what the CLI holds of the decoded stream at once. */
export const FETCH_ROWS = 200

let copySeq = 0

async function withSlotCopy<T>(session: pg.Client, slot: string, fn: (tmp: string) => Promise<T>): Promise<T> {
  const tmp = `mmlite_peek_${process.pid}_${++copySeq}_${Math.random().toString(16).slice(2, 10)}`
  await session.query('SELECT pg_catalog.pg_copy_logical_replication_slot($1::pg_catalog.name, $2::pg_catalog.name, true)', [slot, tmp])
  try {
    return await fn(tmp)
  } finally {
    await session.query('SELECT pg_catalog.pg_drop_replication_slot($1::pg_catalog.name)', [tmp]).catch(() => {})
  }
}

/**
 * One peek of the temporary slot `tmp` through a cursor: the server keeps the decoded output
 * (spilling to disk), the CLI fetches FETCH_ROWS rows at a time and keeps per transaction only
 * its header, change count and PREVIEW_CHANGES changes — memory stays bounded whatever the
 * transaction's size. `each` sees every complete transaction; returning true stops early.
 * `capture` gets every change of one transaction, a batch at a time.
 */
async function peekStream(
  session: pg.Client,
  tmp: string,
  i: Pick<DecodeInput, 'publications' | 'origin' | 'publisherVersion'>,
  o: {uptoLsn?: string; uptoChanges?: number; each: (tx: DecodedTx) => boolean; capture?: {finalLsn: string; onChanges: (chs: Change[]) => Promise<void>}},
): Promise<{rows: number}> {
  const sink: Change[] = []
  const dec = new PgoutputDecoder({keepChanges: PREVIEW_CHANGES, ...(o.capture ? {capture: {finalLsn: o.capture.finalLsn, sink}} : {})})
  const opts = peekOptions(i).map(x => `${ql(x)}::pg_catalog.text`).join(', ')
  const upto = o.uptoLsn ? `${ql(o.uptoLsn)}::pg_catalog.pg_lsn` : 'NULL::pg_catalog.pg_lsn'
  const n = o.uptoChanges ? `${o.uptoChanges}::pg_catalog.int4` : 'NULL::pg_catalog.int4'
  let rows = 0
  await session.query('BEGIN')
  try {
    await session.query(
      `DECLARE mmlite_peek NO SCROLL CURSOR FOR SELECT lsn::pg_catalog.text AS lsn, data
         FROM pg_catalog.pg_logical_slot_peek_binary_changes(${ql(tmp)}::pg_catalog.name, ${upto}, ${n}, VARIADIC ARRAY[${opts}])`,
    )
    for (;;) {
      const r = await session.query<{lsn: string; data: Buffer}>(`FETCH ${FETCH_ROWS} FROM mmlite_peek`)
      rows += r.rows.length
      let stop = false
      for (const row of r.rows) {
        const tx = dec.push(row.data, row.lsn)
        if (tx && o.each(tx)) {
          stop = true
          break
        }
      }
      if (o.capture && sink.length) await o.capture.onChanges(sink.splice(0))
      if (stop || r.rows.length < FETCH_ROWS) break
    }
  } finally {
    await session.query('ROLLBACK').catch(() => {})
  }
  return {rows}
}

/**
 * The first `limit` transactions the link would apply next, decoded from a temporary copy of
 * the publisher's slot (each with its change count and a bounded preview of its changes).
 * `session` is a dedicated connection to the publisher (the temporary slot lives as long as
 * it; the caller ends it).
 */
export async function decodePending(session: pg.Client, i: DecodeInput): Promise<DecodedTx[]> {
  const limit = i.limit ?? 1
  return withSlotCopy(session, i.slot, async tmp => {
    // the copy starts at the slot's confirmed_flush, which may lie behind the origin: decode a
    // growing number of changes until `limit` pending transactions are complete, or the end
    for (let n = 256; ; n *= 4) {
      const pending: DecodedTx[] = []
      const {rows} = await peekStream(session, tmp, i, {
        uptoChanges: n,
        each: tx => {
          if (pendingAfter([tx], i.after).length) pending.push(tx)
          return pending.length >= limit
        },
      })
      if (pending.length >= limit || rows < n) return pending
    }
  })
}

/**
 * Every change of the pending transaction `tx` (identified by its final LSN), a batch at a time,
 * in order; returns its header as decoded now, or undefined when it is no longer in the slot.
 */
export async function streamTxChanges(
  session: pg.Client,
  i: DecodeInput,
  tx: Pick<DecodedTx, 'finalLsn' | 'endLsn'>,
  onChanges: (chs: Change[]) => Promise<void>,
): Promise<DecodedTx | undefined> {
  return withSlotCopy(session, i.slot, async tmp => {
    let found: DecodedTx | undefined
    await peekStream(session, tmp, i, {
      uptoLsn: tx.endLsn,
      capture: {finalLsn: tx.finalLsn, onChanges},
      each: t => {
        if (t.finalLsn === tx.finalLsn) found = t
        return found !== undefined
      },
    })
    return found
  })
}

// ------------------------------------------------------------------------------------ collisions

export interface Collision {
  /** the local unique index the change collides on, e.g. "users_pkey" */
  index: string
  columns: string[]
  /** the existing local row (to_jsonb) */
  row: Record<string, unknown>
}

export interface LocalFacts {
  /** insert / update: existing local rows with the same unique key as the new row */
  collisions: Collision[]
  /** update / delete: the local row the change targets (by its key); null when there is none */
  target?: Record<string, unknown> | null
  /** why nothing could be looked up */
  note?: string
}

interface UniqueIndex {
  index: string
  columns: string[]
}

const UNIQUE_INDEXES_SQL = `SELECT (SELECT ic.relname::text FROM pg_catalog.pg_class ic WHERE ic.oid = i.indexrelid) AS index,
       array_agg(a.attname::text ORDER BY k.ord) AS columns
  FROM pg_index i
  CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
 WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indisvalid
   AND i.indpred IS NULL AND i.indexprs IS NULL AND k.ord <= i.indnkeyatts
 GROUP BY i.indexrelid, i.indisprimary
 ORDER BY i.indisprimary DESC, 1`

function tableSql(ch: Change): string {
  return `${qi(ch.schema)}.${qi(ch.name)}`
}

/** `"a" = $1 AND "b" = $2`; parameters are untyped, so each takes its column's type. */
function match(cols: string[], values: Record<string, string | null>, params: unknown[]): string {
  return cols
    .map(c => {
      if (values[c] === null) return `${qi(c)} IS NULL`
      params.push(values[c])
      return `${qi(c)} = $${params.length}`
    })
    .join(' AND ')
}

/**
 * Read-only look-ups on the subscriber for the first `max` changes of a transaction: the local
 * rows an insert or update collides with (same value in a unique index), and the row an update
 * or delete targets.
 */
export async function localFacts(c: NodeConn, tx: DecodedTx, max = 20): Promise<LocalFacts[]> {
  const indexes = new Map<string, UniqueIndex[]>()
  const out: LocalFacts[] = []
  for (const ch of tx.changes.slice(0, max)) {
    if (ch.op === 'truncate') {
      out.push({collisions: []})
      continue
    }
    try {
      const table = tableSql(ch)
      if (!indexes.has(table)) indexes.set(table, await c.query<UniqueIndex>(UNIQUE_INDEXES_SQL, [table]))
      const facts: LocalFacts = {collisions: []}
      const keyCols = Object.keys(ch.key)
      let target: Record<string, unknown> | undefined
      if ((ch.op === 'update' || ch.op === 'delete') && keyCols.length) {
        const params: unknown[] = []
        const r = await c.one<{row: Record<string, unknown>}>(`SELECT to_jsonb(t) AS row FROM ${table} t WHERE ${match(keyCols, ch.key, params)} LIMIT 1`, params)
        target = r?.row
        facts.target = target ?? null
      }
      if (ch.new) {
        const nw = ch.new
        for (const ix of indexes.get(table)!) {
          if (!ix.columns.every(col => col in nw.values && nw.values[col] !== null)) continue
          const params: unknown[] = []
          let where = match(ix.columns, nw.values, params)
          // an update may keep its own key: the row it updates is no collision
          if (ch.op === 'update' && keyCols.length) where += ` AND NOT (${match(keyCols, ch.key, params)})`
          const r = await c.one<{row: Record<string, unknown>}>(`SELECT to_jsonb(t) AS row FROM ${table} t WHERE ${where} LIMIT 1`, params)
          if (r) facts.collisions.push({index: ix.index, columns: ix.columns, row: r.row})
        }
      }
      out.push(facts)
    } catch (e) {
      out.push({collisions: [], note: `could not look up local rows: ${errorMessage(e)}`})
    }
  }
  return out
}

// ------------------------------------------------------------------------------------ error text

/**
 * The subscriber's last logged error for the blocking transaction, when the server log can be
 * read over SQL (logging_collector on, and pg_read_server_files or superuser): on 15+ the
 * error's CONTEXT names the origin and the final LSN; before, the error is matched by the pid of
 * the worker that logged "apply worker for subscription ... has started".
 */
export async function lastApplyError(c: NodeConn, sub: {name: string; oid: number}, tx: {finalLsn: string; xid: number}): Promise<string | null> {
  const text = await readServerLog(c)
  return text ? findApplyError(text, sub, tx) : null
}

/** The last 256 kB of the server's current log file, when readable over SQL; else null. */
export async function readServerLog(c: NodeConn): Promise<string | null> {
  try {
    const r = await c.one<{text: string | null}>(
      `SELECT pg_catalog.pg_read_file(l.f, GREATEST(0::pg_catalog.int8, s.size - 262144), 262144::pg_catalog.int8) AS text
         FROM (SELECT pg_catalog.pg_current_logfile() AS f) l CROSS JOIN LATERAL pg_catalog.pg_stat_file(l.f) s
        WHERE l.f IS NOT NULL`,
    )
    return r?.text ?? null
  } catch {
    return null
  }
}

/** What the subscriber's log says about the last apply failure on the subscription's origin. */
export interface LoggedFailure {
  xid: number
  /** the transaction's final LSN, when the apply worker knew it (not in a parallel apply worker) */
  finishLsn: string | null
}

/**
 * Pure: the last apply error context for origin pg_<oid> in a log text that names a transaction
 * (worker.c apply_error_callback: "... replication origin "pg_16390" during message type
 * "INSERT" ... in transaction 755[, finished at 0/1BF6E48]").
 */
export function findLoggedFailure(log: string, oid: number): LoggedFailure | null {
  const re = new RegExp(`replication origin "pg_${oid}" during message type .* in transaction (\\d+)(?:, finished at ([0-9A-F]+/[0-9A-F]+))?`)
  const lines = log.split('\n')
  for (let i = lines.length - 1; i >= 0; i--) {
    if (!lines[i].includes('CONTEXT:')) continue
    const m = re.exec(lines[i])
    if (m) return {xid: Number(m[1]), finishLsn: m[2] ?? null}
  }
  return null
}

/**
 * Pure: which pending transaction the apply worker fails on.
 *
 * Without parallel apply (streaming off or on) the worker applies transactions one by one in
 * commit order (a streamed one is spooled and applied at its commit), so the failing one is the
 * first pending after the origin. With `streaming = parallel` a streamed transaction is applied
 * while it arrives, before transactions that committed during it are even sent: it can fail
 * while those stay pending ahead of it. Only the server's report of the failure (its log)
 * names it then; and even named, it can be skipped only once it is the first one applied
 * (ALTER SUBSCRIPTION ... SKIP is cleared by the first transaction the worker finishes).
 * A logged failure that names a pending transaction other than the first one is a
 * contradiction in any mode: not sure either.
 */
export function identifyFailing(
  pending: DecodedTx[],
  o: {parallel: boolean; logged: LoggedFailure | null; subscription: string; node: string},
): {tx: DecodedTx; unsure?: string} {
  const first = pending[0]
  const logged = o.logged
  const named = logged ? pending.find(t => t.xid === logged.xid && (logged.finishLsn === null || logged.finishLsn === t.finalLsn)) : undefined
  if (named === first && logged) return {tx: first}
  const fix =
    `Nothing was skipped. Run \`mmlite init\` (it sets streaming = on on every link), or on ${o.node}: ALTER SUBSCRIPTION ${qi(o.subscription)} SET (streaming = on); ` +
    `the link then applies what committed first and stops on exactly the failing transaction: run \`mmlite skip-tx\` again.`
  const ahead = `transaction ${first.xid} (final LSN ${first.finalLsn})`
  if (named) {
    return {
      tx: first,
      unsure:
        `the subscriber's log names transaction ${named.xid} (final LSN ${named.finalLsn}) as the failing one, while ${ahead} is pending ahead of it` +
        `${o.parallel ? ' (streaming = parallel applies a streamed transaction while it arrives)' : ''}: ALTER SUBSCRIPTION ... SKIP only skips the first transaction applied, so it cannot reach transaction ${named.xid} now. ${fix}`,
    }
  }
  if (!o.parallel) return {tx: first}
  const streamedBefore = pending.slice(1).filter(t => t.firstLsn !== undefined && compareLsn(t.firstLsn, first.finalLsn) < 0)
  const candidates = streamedBefore.map(t => `transaction ${t.xid} (final LSN ${t.finalLsn}, ${t.changeCount} change(s))`)
  return {
    tx: first,
    unsure:
      `the link uses streaming = parallel: a streamed transaction can fail ahead of the first pending one, ${ahead}, ` +
      `and the subscriber's log ${logged ? `names transaction ${logged.xid}, not pending` : 'is not readable over SQL (logging_collector and pg_read_server_files)'}, so mmlite cannot tell which one fails: ` +
      `transaction ${first.xid}${candidates.length ? `, ${candidates.join(', ')}` : ''} or one still in progress on the publisher. ${fix}`,
  }
}

/** Pure: search a server log text (stderr format) for the apply error of `tx` on `sub`. */
export function findApplyError(log: string, sub: {name: string; oid: number}, tx: {finalLsn: string; xid: number}): string | null {
  const lines = log.split('\n')
  const pidOf = (l: string) => /\[(\d+)\]/.exec(l)?.[1]
  const message = (i: number): string => {
    const err = lines[i].replace(/^.*?ERROR:\s+/, '')
    const detail = lines[i + 1]?.includes('DETAIL:') ? lines[i + 1].replace(/^.*?DETAIL:\s+/, '') : ''
    const more = detail && lines[i + 2]?.startsWith('\t') ? ` ${lines[i + 2].trim()}` : ''
    return redactText(detail ? `${err} (${detail}${more})` : err).slice(0, 500)
  }
  const ctx = new RegExp(`replication origin "pg_${sub.oid}".*finished at ${tx.finalLsn.replace('/', '\\/')}\\b`)
  for (let i = lines.length - 1; i >= 0; i--) {
    if (!lines[i].includes('CONTEXT:') || !ctx.test(lines[i])) continue
    for (let j = i - 1; j >= Math.max(0, i - 6); j--) if (lines[j].includes('ERROR:')) return message(j)
  }
  // before 15: the last error of a worker that started for this subscription
  const workers = new Set<string>()
  const started = `apply worker for subscription "${sub.name}" has started`
  let last: string | null = null
  for (let i = 0; i < lines.length; i++) {
    const pid = pidOf(lines[i])
    if (!pid) continue
    if (lines[i].includes(started)) workers.add(pid)
    else if (workers.has(pid) && lines[i].includes('ERROR:')) last = message(i)
  }
  return last
}

// ------------------------------------------------------------------------------------ verdict

export interface LinkSample {
  at: number
  enabled: boolean
  workerPid: number | null
  applyErrors: number | null
  originLsn: string | null
}

export function sampleOf(s: SubscriptionState, at = Date.now()): LinkSample {
  return {at, enabled: s.enabled, workerPid: s.workerPid, applyErrors: s.applyErrors, originLsn: s.originLsn}
}

/** The origin moved past the transaction: it was applied (or skipped). */
export function passed(originLsn: string | null, tx: Pick<DecodedTx, 'endLsn'>): boolean {
  return originLsn !== null && compareLsn(originLsn, tx.endLsn) >= 0
}

/**
 * Why the samples show that applying fails, or undefined. Pure.
 * `snapshot` also accepts a single observation (status: a worker that is not running after
 * apply errors, a 14- worker not running at all); skip-tx wants to see a failure happen.
 */
export function failureEvidence(
  samples: LinkSample[],
  opts: {versionNum: number; disableOnError: boolean | null; snapshot?: boolean},
): string | undefined {
  if (samples.length === 0) return undefined
  const first = samples[0]
  const last = samples[samples.length - 1]
  const secs = ((last.at - first.at) / 1000).toFixed(1)
  if (!last.enabled) {
    if (opts.versionNum >= SKIP_LSN_MIN && opts.disableOnError && (last.applyErrors ?? 0) > 0)
      return `subscription disabled by disable_on_error after ${last.applyErrors} apply error(s)`
    return undefined
  }
  if (samples.some(s => !s.enabled)) return undefined
  if (opts.versionNum >= SKIP_LSN_MIN) {
    const rose = (last.applyErrors ?? 0) - (first.applyErrors ?? 0)
    if (rose > 0) return `apply worker failed ${rose} time(s) in ${secs} s (apply_error_count ${last.applyErrors})`
    if (opts.snapshot && first.workerPid === null && (first.applyErrors ?? 0) > 0)
      return `apply worker not running after ${first.applyErrors} apply error(s)`
    return undefined
  }
  const pids = new Set(samples.map(s => s.workerPid).filter((p): p is number => p !== null))
  if (pids.size >= 2) return `apply worker restarted ${pids.size - 1} time(s) in ${secs} s`
  const seenUp = samples.findIndex(s => s.workerPid !== null)
  if (seenUp >= 0 && samples.slice(seenUp + 1).some(s => s.workerPid === null)) return `apply worker exited (pid ${samples[seenUp].workerPid})`
  if (opts.snapshot && first.workerPid === null) return 'apply worker not running'
  return undefined
}

export type Verdict =
  /** nothing left to apply after the origin */
  | {state: 'idle'; sub: SubscriptionState}
  /** a transaction was pending and got applied while we watched */
  | {state: 'progressing'; sub: SubscriptionState; tx: DecodedTx}
  /** the pending transaction fails to apply; `unsure`: applying fails, but which transaction fails cannot be told (tx is only the first pending) */
  | {state: 'stuck'; sub: SubscriptionState; tx: DecodedTx; evidence: string; unsure?: string}
  /** pending, but no failure seen within the window */
  | {state: 'pending'; sub: SubscriptionState; tx: DecodedTx; note: string}
  /** cannot tell: a node, the subscription or the slot is missing */
  | {state: 'unavailable'; reason: string; sub?: SubscriptionState}

export interface LinkEnds {
  /** subscription and slot name */
  name: string
  from: string
  to: string
  pub: NodeConn
  sub: NodeConn
}

export interface ObserveOptions {
  /** how long to watch for a failure (ends early on evidence or progress); default: observeWindowMs */
  windowMs?: number | ((sub: SubscriptionState) => number)
  pollMs?: number
  snapshot?: boolean
}

/** Observation window for skip-tx: two restarts of a failed worker, plus slack; 2..30 s. */
export function observeWindowMs(retryIntervalMs: number): number {
  return Math.min(30_000, Math.max(2_000, 2 * retryIntervalMs + 2_000))
}

/** One temporary slot copy at a time per publisher: the spare slots preflight asks for are few. */
const copyQueues = new WeakMap<NodeConn, Promise<unknown>>()

function oneAtATime<T>(c: NodeConn, fn: () => Promise<T>): Promise<T> {
  const run = (copyQueues.get(c) ?? Promise.resolve()).then(fn, fn)
  copyQueues.set(c, run.catch(() => {}))
  return run
}

/** Decode what the link would apply next (using the subscription's own options). */
/** A dedicated publisher session for decoding the link's slot (one at a time per publisher). */
async function withDecodeSession<T>(link: LinkEnds, sub: SubscriptionState, fn: (session: pg.Client, input: DecodeInput) => Promise<T>): Promise<T | {unavailable: string}> {
  const slotName = sub.slotName ?? link.name
  const slot = await readSlot(link.pub, slotName)
  if (!slot) return {unavailable: `slot ${slotName} missing on ${link.from}`}
  return oneAtATime(link.pub, async () => {
    const session = await link.pub.newSession('mmlite skip-tx peek')
    try {
      return await fn(session, {
        slot: slotName,
        plugin: slot.plugin,
        publications: sub.publications,
        origin: sub.origin,
        publisherVersion: slot.versionNum,
        after: sub.originLsn,
      })
    } catch (e) {
      return {unavailable: `cannot decode slot ${slotName} on ${link.from}: ${errorMessage(e)}`}
    } finally {
      await session.end().catch(() => {})
    }
  })
}

/** Decode what the link would apply next (using the subscription's own options). */
export async function nextPending(link: LinkEnds, sub: SubscriptionState, limit = 1): Promise<DecodedTx[] | {unavailable: string}> {
  return withDecodeSession(link, sub, (session, input) => decodePending(session, {...input, limit}))
}

/** Every change of the pending transaction `tx`, a batch at a time (see streamTxChanges). */
export async function captureTx(
  link: LinkEnds,
  sub: SubscriptionState,
  tx: Pick<DecodedTx, 'finalLsn' | 'endLsn'>,
  onChanges: (chs: Change[]) => Promise<void>,
): Promise<DecodedTx | undefined | {unavailable: string}> {
  return withDecodeSession(link, sub, (session, input) => streamTxChanges(session, input, tx, onChanges))
}

/** Transactions looked at after the first pending one when telling which one fails. */
export const CANDIDATES = 8

/** The failing transaction of a link that fails to apply (see identifyFailing). */
async function identify(link: LinkEnds, sub: SubscriptionState, first: DecodedTx): Promise<{tx: DecodedTx; unsure?: string}> {
  await link.pub.connect()
  const parallel = sub.streaming === 'parallel' && link.pub.serverVersion >= 160000
  const log = await readServerLog(link.sub)
  const logged = log ? findLoggedFailure(log, sub.oid) : null
  let pending = [first]
  if (parallel || (logged && logged.xid !== first.xid)) {
    const more = await nextPending(link, sub, CANDIDATES + 1)
    if (!Array.isArray(more)) return {tx: first, unsure: `cannot tell which transaction fails: ${more.unavailable}`}
    if (more[0]?.finalLsn === first.finalLsn) pending = more
  }
  return identifyFailing(pending, {parallel, logged, subscription: link.name, node: link.to})
}

/**
 * Watch one link: decode its next transaction and see whether it gets applied, fails, or
 * neither within the window.
 */
export async function observeLink(link: LinkEnds, o: ObserveOptions): Promise<Verdict> {
  try {
    const sub0 = await readSubscription(link.sub, link.name)
    if (!sub0) return {state: 'unavailable', reason: `subscription ${link.name} missing on ${link.to}`}
    const decoded = await nextPending(link, sub0)
    if (!Array.isArray(decoded)) return {state: 'unavailable', reason: decoded.unavailable, sub: sub0}
    const tx = decoded[0]
    if (!tx) return {state: 'idle', sub: sub0}
    const samples = [sampleOf(sub0)]
    const opts = {versionNum: sub0.versionNum, disableOnError: sub0.disableOnError, snapshot: o.snapshot}
    let sub = sub0
    const w = o.windowMs ?? ((x: SubscriptionState) => observeWindowMs(x.retryIntervalMs))
    let deadline = Date.now() + (typeof w === 'number' ? w : w(sub0))
    let extended = o.snapshot === true || o.windowMs !== undefined
    for (;;) {
      if (passed(sub.originLsn, tx)) return {state: 'progressing', sub, tx}
      const ev = failureEvidence(samples, opts)
      if (ev) return {state: 'stuck', sub, evidence: ev, ...(await identify(link, sub, tx))}
      // PostgreSQL 14 and older count no apply errors: a failure shows only as the worker
      // exiting and being restarted. After a failure the publisher's walsender for the slot can
      // linger until its wal_sender_timeout; meanwhile every new worker dies at once ("slot is
      // active"), too fast to be seen. A worker never seen running all window long therefore
      // gets one longer look, until that walsender must be gone and a restart can be seen.
      if (
        !extended &&
        Date.now() >= deadline &&
        sub.versionNum < SKIP_LSN_MIN &&
        sub.enabled &&
        samples.every(x => x.workerPid === null)
      ) {
        extended = true
        const t = await link.pub.one<{ms: number}>("SELECT setting::int AS ms FROM pg_settings WHERE name = 'wal_sender_timeout'")
        deadline = Date.now() + Math.min(120_000, (t?.ms ?? 60_000) + 2 * sub.retryIntervalMs + 2_000)
      }
      // disabled by hand (disable_on_error off): nothing will happen while we watch
      if (Date.now() >= deadline || (!sub.enabled && !sub.disableOnError)) {
        const note = !sub.enabled
          ? 'subscription disabled (not by an apply error)'
          : sub.workerPid === null
            ? 'apply worker not running, no failure seen'
            : 'apply worker running, no failure seen (a long transaction may be in progress)'
        return {state: 'pending', sub, tx, note}
      }
      await sleep(o.pollMs ?? (sub.versionNum >= SKIP_LSN_MIN ? 100 : 25))
      const next = await readSubscription(link.sub, link.name)
      if (!next) return {state: 'unavailable', reason: `subscription ${link.name} dropped on ${link.to}`}
      sub = next
      samples.push(sampleOf(sub))
    }
  } catch (e) {
    return {state: 'unavailable', reason: errorMessage(e)}
  }
}

/**
 * Observe until the link is idle, stuck, or pending without a failure. A transaction applied
 * while watching (`progressing`) only means the link moved: the next one may fail, so it is
 * observed again, for up to `budgetMs` (default: two observation windows); a link still moving
 * then is reported as progressing.
 */
export async function watchLink(link: LinkEnds, o: ObserveOptions & {budgetMs?: number} = {}): Promise<Verdict> {
  const start = Date.now()
  for (;;) {
    const v = await observeLink(link, o)
    if (v.state !== 'progressing') return v
    if (Date.now() - start >= (o.budgetMs ?? 2 * observeWindowMs(v.sub.retryIntervalMs))) return v
  }
}
