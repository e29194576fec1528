/**
 * `mmlite skip-tx`: find links that an apply error stopped, show the transaction that blocks
 * each one (decoded from a temporary copy of the publisher's slot, see cluster/link-probe.ts),
 * skip exactly that transaction, watch the link, and record what was thrown away.
 *
 *   1. detect: every link (or those into --node / from --from) is observed concurrently;
 *      stuck = a pending transaction that the subscriber fails to apply (link-probe.ts).
 *   2. preview: the blocking transaction (xid, commit time, final LSN, changes, the local rows
 *      it collides with, the logged error when readable), the SQL that skips it.
 *   3. skip exactly it: on 15+ `ALTER SUBSCRIPTION ... SKIP (lsn = <final LSN>)` (plus ENABLE when
 *      disable_on_error stopped it); on 14 and older disable, `pg_replication_origin_advance` to
 *      the transaction's commit end (only after checking, with the worker gone, that it is still
 *      the next transaction), enable. Then wait until the origin is past it.
 *   4. audit: `.mmlite/skipped.jsonl` gets the transaction with every change; a SQL file next
 *      to it re-applies them on the subscriber only (origin-tagged, so not sent on).
 *   5. watch: the link streams again → recovered; the next transaction fails too → shown and
 *      skipped the same way, at most --max per link.
 *
 * The journal (operation `skip-tx`) holds the transaction being skipped and the subscription
 * disabled for the origin advance, so a killed run is finished by re-running skip-tx, and
 * `status` shows the link as paused meanwhile.
 */
import {constants, existsSync, createReadStream} from 'node:fs'
import {open, rm} from 'node:fs/promises'
import {atomicWritePrivate, privateDir} from '../util/private-files.js'
import {createInterface} from 'node:readline'
import path from 'node:path'
import type {Config} from '../config/config.js'
import {Cluster} from '../cluster/cluster.js'
import {edgeName} from '../cluster/naming.js'
import {pausedSubscriptions, readUnfinished} from '../cluster/status.js'
import {
  captureTx,
  lastApplyError,
  localFacts,
  nextPending,
  passed,
  readSubscription,
  SKIP_LSN_MIN,
  type Collision,
  type LinkEnds,
  type SubscriptionState,
  type Verdict,
  watchLink,
} from '../cluster/link-probe.js'
import type {Change, DecodedTx} from '../cluster/pgoutput-decode.js'
import {escapeIdentifier as qi, escapeLiteral as ql, lsnLiteral} from '../db/quote.js'
import {Journal, stateDir} from '../engine/journal.js'
import {ClusterLock} from '../engine/lock.js'
import type {PlannedSql} from '../engine/types.js'
import {MmliteError, ExitCode, errorMessage} from '../errors.js'
import {pollUntil} from '../util/poll.js'

/** a private file of ours, created or truncated, never through a symbolic link */
const NEW_PRIVATE = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW

export type SkipMethod = 'skip-lsn' | 'origin-advance'

export const JOURNAL_KEY = 'skip-tx'
/** changes shown (and looked up on the subscriber) per transaction */
export const SHOW_CHANGES = 20
/** characters of a value kept in previews and JSON (the audit file keeps everything) */
export const VALUE_CHARS = 200

// ------------------------------------------------------------------------------------ views

export interface ChangeView {
  op: Change['op']
  table: string
  key: Record<string, string | null>
  new?: Record<string, string | null>
  old?: Record<string, string | null>
  /** columns whose (TOASTed) value the change did not carry: unchanged */
  unchanged?: string[]
  /** existing local rows with the same unique key (insert / update) */
  collisions?: Collision[]
  /** update / delete: the local row the change targets; null when there is none */
  target?: Record<string, unknown> | null
  note?: string
}

export interface TxView {
  from: string
  to: string
  subscription: string
  xid: number
  finalLsn: string
  endLsn: string
  commitTime: string
  changeCount: number
  /** the first SHOW_CHANGES changes, values cut at VALUE_CHARS */
  changes: ChangeView[]
  /** why the link counts as stuck */
  evidence: string
  /** the subscriber's logged error, when its log is readable over SQL */
  error: string | null
}

export interface SkippedView extends TxView {
  method: SkipMethod
  skippedAt: string
  sqlFile: string
}

/** unsure: applying fails, but which transaction fails cannot be told; nothing skipped (see message) */
export type LinkOutcome = 'would-skip' | 'recovered' | 'still-stuck' | 'moved-on' | 'unsure'

export interface LinkReport {
  from: string
  to: string
  subscription: string
  method: SkipMethod
  state: LinkOutcome
  /** dry-run: what would be skipped; still-stuck: the transaction that fails now */
  blocking: TxView | null
  skipped: SkippedView[]
  /** what ran (or, with --dry-run, would run), per node */
  sql: PlannedSql[]
  message: string
}

export interface SkipTxResult {
  cluster: string
  dryRun: boolean
  /** links examined */
  checked: number
  links: LinkReport[]
  /** links not stuck but worth a word (pending without failure, unreadable, paused) */
  notes: string[]
  skipped: number
  auditFile: string
}

function cut(v: string | null, n = VALUE_CHARS): string | null {
  return v !== null && v.length > n ? `${v.slice(0, n)}…` : v
}

function cutAll(r: Record<string, string | null>): Record<string, string | null> {
  return Object.fromEntries(Object.entries(r).map(([k, v]) => [k, cut(v)]))
}

export function changeView(ch: Change, facts?: {collisions: Collision[]; target?: Record<string, unknown> | null; note?: string}): ChangeView {
  const v: ChangeView = {op: ch.op, table: ch.table, key: cutAll(ch.key)}
  if (ch.new) v.new = cutAll(ch.new.values)
  if (ch.old) v.old = cutAll(ch.old.values)
  const unchanged = ch.new?.unchanged ?? []
  if (unchanged.length) v.unchanged = unchanged
  if (facts) {
    if (ch.op === 'insert' || ch.op === 'update') v.collisions = facts.collisions
    if (facts.target !== undefined) v.target = facts.target
    if (facts.note) v.note = facts.note
  }
  return v
}

// ------------------------------------------------------------------------------------ rendering (pure)

function val(v: string | null, n = 60): string {
  if (v === null) return 'NULL'
  const s = v.length > n ? `${v.slice(0, n)}…` : v
  return /^-?\d+(\.\d+)?$/.test(s) ? s : `'${s}'`
}

function pairs(r: Record<string, string | null>): string {
  return Object.entries(r)
    .map(([k, v]) => `${k}=${val(v)}`)
    .join(', ')
}

function keyText(k: Record<string, string | null>): string {
  const cols = Object.keys(k)
  if (!cols.length) return '(no key)'
  return `(${cols.join(', ')})=(${cols.map(c => val(k[c], 40)).join(', ')})`
}

function rowText(r: Record<string, unknown>): string {
  const s = JSON.stringify(r)
  return s.length > 160 ? `${s.slice(0, 160)}…` : s
}

/** Lines describing one transaction (preview and follow-ups). */
export function formatTx(t: TxView): string[] {
  const out = [
    `  transaction ${t.xid} from ${t.from}, committed ${t.commitTime}, final LSN ${t.finalLsn} (ends ${t.endLsn}), ${t.changeCount} change(s)`,
  ]
  if (t.error) out.push(`  error on ${t.to}: ${t.error}`)
  for (const c of t.changes) {
    if (c.op === 'truncate') {
      out.push(`    TRUNCATE ${c.table}`)
      continue
    }
    const head = `    ${c.op.toUpperCase()} ${c.table} ${keyText(c.key)}`
    out.push(c.new ? `${head}: ${pairs(c.new)}${c.unchanged?.length ? ` (unchanged: ${c.unchanged.join(', ')})` : ''}` : head)
    for (const x of c.collisions ?? []) out.push(`      collides on ${x.index} with local row ${rowText(x.row)}`)
    if (c.target !== undefined) out.push(c.target ? `      local row: ${rowText(c.target)}` : '      no local row with this key')
    if (c.note) out.push(`      (${c.note})`)
  }
  if (t.changeCount > t.changes.length) out.push(`    … ${t.changeCount - t.changes.length} more change(s) (all of them go to the audit file)`)
  return out
}

// ------------------------------------------------------------------------------------ SQL

/** What skipping `tx` runs on the subscriber. */
export function skipSql(method: SkipMethod, sub: {name: string; oid: number; enabled: boolean}, tx: Pick<DecodedTx, 'finalLsn' | 'endLsn'>): string[] {
  const s = qi(sub.name)
  if (method === 'skip-lsn') return [`ALTER SUBSCRIPTION ${s} SKIP (lsn = ${ql(tx.finalLsn)})`, ...(sub.enabled ? [] : [`ALTER SUBSCRIPTION ${s} ENABLE`])]
  return [
    ...(sub.enabled ? [`ALTER SUBSCRIPTION ${s} DISABLE`] : []),
    `SELECT pg_replication_origin_advance(${ql(`pg_${sub.oid}`)}, ${lsnLiteral(tx.endLsn)})`,
    `ALTER SUBSCRIPTION ${s} ENABLE`,
  ]
}

export const REAPPLY_ORIGIN = 'mmlite_reapply'

function lit(v: string | null): string {
  return v === null ? 'NULL' : ql(v)
}

function where(key: Record<string, string | null>): string {
  const cols = Object.keys(key)
  if (!cols.length) return 'false /* no replica identity: find the row by hand */'
  return cols.map(c => (key[c] === null ? `${qi(c)} IS NULL` : `${qi(c)} = ${lit(key[c])}`)).join(' AND ')
}

function tableRef(ch: Change): string {
  return `${qi(ch.schema)}.${qi(ch.name)}`
}

/** One statement per change that re-applies it (insert: ON CONFLICT DO NOTHING; update/delete by key). */
export function reapplyStatement(ch: Change): string {
  switch (ch.op) {
    case 'insert': {
      const cols = Object.keys(ch.new!.values)
      return `INSERT INTO ${tableRef(ch)} (${cols.map(qi).join(', ')}) VALUES (${cols.map(c => lit(ch.new!.values[c])).join(', ')}) ON CONFLICT DO NOTHING;`
    }
    case 'update': {
      const cols = Object.keys(ch.new!.values)
      return `UPDATE ${tableRef(ch)} SET ${cols.map(c => `${qi(c)} = ${lit(ch.new!.values[c])}`).join(', ')} WHERE ${where(ch.key)};`
    }
    case 'delete':
      return `DELETE FROM ${tableRef(ch)} WHERE ${where(ch.key)};`
    case 'truncate': {
      const t = ch.truncate!
      const names = t.tables.map(x => {
        const dot = x.indexOf('.')
        return `${qi(x.slice(0, dot))}.${qi(x.slice(dot + 1))}`
      })
      return `-- TRUNCATE ${names.join(', ')}${t.restartIdentity ? ' RESTART IDENTITY' : ''}${t.cascade ? ' CASCADE' : ''};  -- uncomment to re-apply`
    }
  }
}

/**
 * A SQL file that re-applies the skipped transaction's changes on the subscriber `to` only:
 * the session's replication origin tags them, so no node sends them on (the others already
 * have them). Review it before running it: it is the operator's reconciliation.
 */
export function reapplySql(tx: DecodedTx, link: {from: string; to: string; subscription: string; cluster: string}, skippedAt: string): string {
  return [...reapplyHeader(tx, link, skippedAt), ...tx.changes.map(reapplyStatement), ...REAPPLY_FOOTER].join('\n')
}

/** The re-apply file's lines before the statements (tx.changeCount changes follow). */
export function reapplyHeader(tx: Pick<DecodedTx, 'xid' | 'commitTime' | 'finalLsn' | 'endLsn' | 'changeCount'>, link: {from: string; to: string; subscription: string; cluster: string}, skippedAt: string): string[] {
  const o = ql(REAPPLY_ORIGIN)
  return [
    `-- mmlite skip-tx: transaction ${tx.xid} from ${link.from}, skipped on ${link.to} (subscription ${link.subscription}, cluster ${link.cluster})`,
    `-- committed ${tx.commitTime}, final LSN ${tx.finalLsn}, end LSN ${tx.endLsn}; skipped ${skippedAt}; ${tx.changeCount} change(s)`,
    `-- Run on ${link.to} only, after reviewing: it re-applies the changes ${link.to} did not get.`,
    `-- The replication origin ${REAPPLY_ORIGIN} keeps them from being sent on to the other nodes.`,
    'BEGIN;',
    `SELECT pg_replication_origin_create(${o}) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = ${o});`,
    `SELECT pg_replication_origin_session_setup(${o});`,
  ]
}

export const REAPPLY_FOOTER = ['SELECT pg_replication_origin_session_reset();', 'COMMIT;', '']

// ------------------------------------------------------------------------------------ audit

export function auditFile(cfgFile: string): string {
  return path.join(stateDir(cfgFile), 'skipped.jsonl')
}

interface InFlight {
  from: string
  to: string
  subscription: string
  method: SkipMethod
  /** header, change count and the first changes (every change is in changesFile) */
  tx: DecodedTx
  view: TxView
  /** the subscription must be enabled once the skip is armed (it was disabled by an error) */
  enable: boolean
  /** every change of tx, one JSON per line, written before the skip (moved into the audit line after it) */
  changesFile?: string
  /** the re-apply SQL, written before the skip */
  sqlFile?: string
}

/** Written at most this many bytes at a time while streaming changes into the audit files. */
const WRITE_CHUNK = 1 << 20

/**
 * Before anything is skipped: every change of `tx` decoded once more from a temporary slot copy,
 * streamed into `<base>.changes.jsonl` and the re-apply SQL `<base>.sql` a batch at a time, so
 * memory stays bounded whatever the transaction's size.
 */
async function captureAudit(cfg: Config, ends: LinkEnds, sub: SubscriptionState, tx: DecodedTx): Promise<{changesFile: string; sqlFile: string}> {
  const dir = path.join(stateDir(cfg.file), 'skipped')
  await privateDir(dir)
  const at = new Date().toISOString()
  const base = path.join(dir, `${at.replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}-${ends.from}-${ends.to}-xid${tx.xid}`)
  const files = {changesFile: `${base}.changes.jsonl`, sqlFile: `${base}.sql`}
  const changes = await open(files.changesFile, NEW_PRIVATE, 0o600)
  const sql = await open(files.sqlFile, NEW_PRIVATE, 0o600)
  try {
    await sql.write(reapplyHeader(tx, {from: ends.from, to: ends.to, subscription: ends.name, cluster: cfg.cluster}, at).join('\n') + '\n')
    const got = await captureTx(ends, sub, tx, async chs => {
      await changes.write(chs.map(c => JSON.stringify(c) + '\n').join(''))
      await sql.write(chs.map(c => reapplyStatement(c) + '\n').join(''))
    })
    if (got === undefined || 'unavailable' in got) {
      throw new MmliteError(`${linkLabel(ends)}: cannot read transaction ${tx.xid} from the slot to record it: ${got ? got.unavailable : 'no longer in the slot'}; nothing was skipped`, {
        code: ExitCode.Failed,
        suggestions: ['Re-run `mmlite skip-tx` to see what blocks the link now.'],
      })
    }
    await sql.write(REAPPLY_FOOTER.join('\n'))
  } finally {
    await changes.close()
    await sql.close()
  }
  return files
}

async function recordSkip(cfg: Config, f: InFlight, skippedAt: string, note?: string): Promise<SkippedView> {
  let sqlFile = f.sqlFile
  if (!sqlFile) {
    // a journal written before the changes were streamed to files: the transaction is inline
    const dir = path.join(stateDir(cfg.file), 'skipped')
    const stamp = skippedAt.replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')
    sqlFile = path.join(dir, `${stamp}-${f.from}-${f.to}-xid${f.tx.xid}.sql`)
    await atomicWritePrivate(sqlFile, reapplySql(f.tx, {from: f.from, to: f.to, subscription: f.subscription, cluster: cfg.cluster}, skippedAt), {privateDir: true})
  }
  const head = {
    skippedAt,
    cluster: cfg.cluster,
    from: f.from,
    to: f.to,
    subscription: f.subscription,
    method: f.method,
    xid: f.tx.xid,
    finalLsn: f.tx.finalLsn,
    endLsn: f.tx.endLsn,
    commitTime: f.tx.commitTime,
    evidence: f.view.evidence,
    error: f.view.error,
  }
  const haveFile = f.changesFile !== undefined && existsSync(f.changesFile)
  const tail = {
    localRows: f.view.changes.map(c => ({collisions: c.collisions ?? [], target: c.target ?? null})),
    reapplySql: sqlFile,
    ...(note || (f.changesFile && !haveFile) ? {note: [note, f.changesFile && !haveFile ? `changes file ${f.changesFile} missing: only the first ${f.tx.changes.length} of ${f.tx.changeCount} change(s) recorded; the re-apply SQL has them all` : ''].filter(Boolean).join('; ')} : {}),
  }
  // one JSON line, the changes streamed from their file (never all in memory)
  await privateDir(path.dirname(auditFile(cfg.file)))
  const out = await open(auditFile(cfg.file), constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW, 0o600)
  try {
    let buf = JSON.stringify(head).slice(0, -1) + ',"changes":['
    if (haveFile) {
      let first = true
      for await (const line of createInterface({input: createReadStream(f.changesFile!), crlfDelay: Infinity})) {
        if (!line) continue
        buf += (first ? '' : ',') + line
        first = false
        if (buf.length >= WRITE_CHUNK) {
          await out.write(buf)
          buf = ''
        }
      }
    } else buf += f.tx.changes.map(c => JSON.stringify(c)).join(',')
    await out.write(buf + '],' + JSON.stringify(tail).slice(1) + '\n')
  } finally {
    await out.close()
  }
  if (haveFile) await rm(f.changesFile!, {force: true})
  return {...f.view, method: f.method, skippedAt, sqlFile}
}

// ------------------------------------------------------------------------------------ the procedure

/** Fault injection for tests (as in the step runner): SIGKILL ourselves right after `skip-tx/<point>`. */
function maybeDie(point: string): void {
  if (process.env.MMLITE_FAULT_KILL_AFTER === `skip-tx/${point}`) process.kill(process.pid, 'SIGKILL')
}

export interface SkipTxOptions {
  /** only links into this node */
  node?: string
  /** only links from this node */
  from?: string
  /** transactions skipped per link without asking again */
  max: number
  dryRun: boolean
  /** internal: force a method (tests prove the origin advance on 15+ servers) */
  method?: SkipMethod
  /** waits: the skip taking effect, the worker coming back */
  timeoutMs: number
  connectTimeoutMs: number
  /** progress and preview lines (not with --json) */
  write: (line: string) => void
  /** called with the stuck links and their blocking transactions before anything changes; throw to cancel */
  confirm: (stuck: LinkReport[]) => Promise<void>
}

interface Stuck {
  ends: LinkEnds
  verdict: Extract<Verdict, {state: 'stuck'}>
  view: TxView
  method: SkipMethod
}

function methodFor(sub: SubscriptionState, forced: SkipMethod | undefined, to: string): SkipMethod {
  if (forced === 'skip-lsn' && sub.versionNum < SKIP_LSN_MIN) {
    throw new MmliteError(`node ${to} runs PostgreSQL ${Math.floor(sub.versionNum / 10000)}: ALTER SUBSCRIPTION ... SKIP needs 15 or newer`, {code: ExitCode.Config})
  }
  return forced ?? (sub.versionNum >= SKIP_LSN_MIN ? 'skip-lsn' : 'origin-advance')
}

async function txView(ends: LinkEnds, sub: SubscriptionState, tx: DecodedTx, evidence: string): Promise<TxView> {
  const facts = await localFacts(ends.sub, tx, SHOW_CHANGES)
  const error = await lastApplyError(ends.sub, {name: ends.name, oid: sub.oid}, tx)
  return {
    from: ends.from,
    to: ends.to,
    subscription: ends.name,
    xid: tx.xid,
    finalLsn: tx.finalLsn,
    endLsn: tx.endLsn,
    commitTime: tx.commitTime,
    changeCount: tx.changeCount,
    changes: tx.changes.slice(0, SHOW_CHANGES).map((c, i) => changeView(c, facts[i])),
    evidence,
    error,
  }
}

function linkLabel(e: {from: string; to: string}): string {
  return `${e.from} → ${e.to}`
}

export async function runSkipTx(cfg: Config, opts: SkipTxOptions): Promise<SkipTxResult> {
  const names = cfg.nodes.map(n => n.name)
  for (const [flag, v] of [['--node', opts.node], ['--from', opts.from]] as const) {
    if (v !== undefined && !names.includes(v)) {
      throw new MmliteError(`${flag} ${v} is not a node of the configuration`, {code: ExitCode.Config, suggestions: [`Known nodes: ${names.join(', ')}`]})
    }
  }
  if (!(opts.max >= 1)) throw new MmliteError('--max must be at least 1', {code: ExitCode.Config})
  const cluster = new Cluster(cfg, {connectTimeoutMs: opts.connectTimeoutMs})
  const result: SkipTxResult = {cluster: cfg.cluster, dryRun: opts.dryRun, checked: 0, links: [], notes: [], skipped: 0, auditFile: auditFile(cfg.file)}
  let lock: ClusterLock | undefined
  let journal: Journal | undefined
  try {
    const unfinished = readUnfinished(cfg)
    const own = unfinished.find(u => u.key === JOURNAL_KEY)
    const paused = pausedSubscriptions(unfinished.filter(u => u.key !== JOURNAL_KEY))
    if (!opts.dryRun) {
      lock = await ClusterLock.acquire(cluster, 'skip-tx', cluster.names, {skipUnreachable: true})
      journal = Journal.open(cfg.file, cfg.cluster)
      if (own) await finishInterrupted(cfg, cluster, journal, opts, result)
    } else if (own) {
      result.notes.push('an earlier skip-tx run was interrupted; run skip-tx without --dry-run to finish it')
    }

    const pairs = names.flatMap(a => names.filter(b => b !== a).map(b => ({from: a, to: b})))
    const wanted = pairs.filter(p => (!opts.node || p.to === opts.node) && (!opts.from || p.from === opts.from))
    const ends: LinkEnds[] = []
    for (const p of wanted) {
      const name = edgeName(cfg.cluster, p.from, p.to)
      const by = paused.get(`${p.to}/${name}`)
      if (by) result.notes.push(`${linkLabel(p)}: paused by an unfinished mmlite ${by} run; left alone`)
      else ends.push({...p, name, pub: cluster.node(p.from), sub: cluster.node(p.to)})
    }
    result.checked = ends.length

    // 1. detect, every link at once
    const verdicts = await Promise.all(ends.map(e => watchLink(e)))
    const stuck: Stuck[] = []
    const unsure: LinkReport[] = []
    for (const [i, v] of verdicts.entries()) {
      const e = ends[i]
      if (v.state === 'stuck' && v.unsure) {
        const method = methodFor(v.sub, opts.method, e.to)
        unsure.push({from: e.from, to: e.to, subscription: e.name, method, state: 'unsure', blocking: null, skipped: [], sql: [], message: `fails to apply (${v.evidence}), but ${v.unsure}`})
      } else if (v.state === 'stuck') {
        const view = await txView(e, v.sub, v.tx, v.evidence)
        stuck.push({ends: e, verdict: v, view, method: methodFor(v.sub, opts.method, e.to)})
      } else if (v.state === 'pending') result.notes.push(`${linkLabel(e)}: transaction ${v.tx.xid} (final LSN ${v.tx.finalLsn}) pending; ${v.note}`)
      else if (v.state === 'unavailable') result.notes.push(`${linkLabel(e)}: cannot tell (${v.reason})`)
    }
    for (const u of unsure) opts.write(`${linkLabel(u)}  not sure which transaction fails: ${u.message}`)
    if (stuck.length === 0) {
      result.links = unsure
      return result
    }

    // 2. preview
    result.links = stuck.map(s => ({
      from: s.ends.from,
      to: s.ends.to,
      subscription: s.ends.name,
      method: s.method,
      state: 'would-skip' as LinkOutcome,
      blocking: s.view,
      skipped: [],
      sql: skipSql(s.method, {name: s.ends.name, oid: s.verdict.sub.oid, enabled: s.verdict.sub.enabled}, s.verdict.tx).map(sql => ({node: s.ends.to, sql})),
      message: `stuck: ${s.verdict.evidence}`,
    }))
    for (const [i, s] of stuck.entries()) {
      opts.write(`${linkLabel(s.ends)}  stuck: ${s.verdict.evidence}`)
      for (const l of formatTx(s.view)) opts.write(l)
      for (const q of result.links[i].sql) opts.write(`  ${opts.dryRun ? 'would run' : 'to run'} on ${q.node}: ${q.sql}`)
    }
    if (opts.dryRun) {
      result.links.push(...unsure)
      return result
    }
    await opts.confirm(result.links)

    // 3.-5. skip, record, watch; per link, step by step
    await journal!.begin(JOURNAL_KEY, 'skip-tx')
    for (const [i, s] of stuck.entries()) {
      const report = result.links[i]
      report.sql = []
      await skipLink(cfg, journal!, s, report, opts)
      result.skipped += report.skipped.length
    }
    result.links.push(...unsure)
    await journal!.finish()
    return result
  } finally {
    await lock?.release()
    await cluster.close()
  }
}

/** Skip, record, watch one link; repeat while the next transaction fails, up to opts.max. */
async function skipLink(cfg: Config, journal: Journal, first: Stuck, report: LinkReport, opts: SkipTxOptions): Promise<void> {
  const {ends} = first
  let cur: {sub: SubscriptionState; tx: DecodedTx; view: TxView} = {sub: first.verdict.sub, tx: first.verdict.tx, view: first.view}
  for (;;) {
    const method = first.method
    const outcome = await skipOne(cfg, journal, ends, cur, method, report, opts)
    if (outcome === 'moved-on') {
      report.state = 'moved-on'
      report.blocking = null
      report.message = `transaction ${cur.tx.xid} was applied meanwhile; nothing skipped`
      opts.write(`${linkLabel(ends)}: ${report.message}`)
      return
    }
    const skipped = await recordSkip(cfg, {from: ends.from, to: ends.to, subscription: ends.name, method, tx: cur.tx, view: cur.view, enable: false, ...outcome}, new Date().toISOString())
    await journal.set('inFlight', null)
    report.skipped.push(skipped)
    opts.write(`${linkLabel(ends)}: skipped transaction ${cur.tx.xid} (final LSN ${cur.tx.finalLsn}); changes in ${auditFile(cfg.file)}, re-apply SQL in ${skipped.sqlFile}`)

    // watch the link
    const v = await watchLink(ends)
    if (v.state === 'stuck' && v.unsure) {
      report.state = 'unsure'
      report.blocking = null
      report.message = `the link fails again (${v.evidence}), but ${v.unsure}`
      opts.write(`${linkLabel(ends)}: ${report.message}`)
      return
    }
    if (v.state === 'stuck') {
      const view = await txView(ends, v.sub, v.tx, v.evidence)
      opts.write(`${linkLabel(ends)}  the next transaction fails too: ${v.evidence}`)
      for (const l of formatTx(view)) opts.write(l)
      if (report.skipped.length >= opts.max) {
        report.state = 'still-stuck'
        report.blocking = view
        report.message = `still stuck after skipping ${report.skipped.length} transaction(s) (--max ${opts.max}): transaction ${v.tx.xid} fails now`
        opts.write(`${linkLabel(ends)}: ${report.message}; run skip-tx again to see and skip it`)
        return
      }
      cur = {sub: v.sub, tx: v.tx, view}
      continue
    }
    if (v.state === 'unavailable') throw new MmliteError(`${linkLabel(ends)}: cannot watch the link after the skip: ${v.reason}`, {code: ExitCode.Failed})
    await pollUntil(
      async () => {
        const s = await readSubscription(ends.sub, ends.name)
        return Boolean(s?.enabled && s.workerPid !== null)
      },
      {timeoutMs: opts.timeoutMs, what: `the apply worker of ${ends.name} on ${ends.to} to run again`, hint: 'Check the server log of the subscriber; `mmlite status` shows the link.'},
    )
    report.state = 'recovered'
    report.blocking = null
    report.message =
      v.state === 'pending'
        ? `streams again (transaction ${v.tx.xid} pending: ${v.note})`
        : v.state === 'progressing'
          ? 'streams again (applying the following transactions)'
          : 'streams again (caught up)'
    // the errors were this transaction's: reset the subscription's error counters (15+) so that
    // `status` does not keep warning about a link that is healthy again; the counts before the
    // reset are in the report and the audit log
    const after = await readSubscription(ends.sub, ends.name)
    if (after && (after.applyErrors ?? 0) > 0) {
      const sql = `SELECT pg_stat_reset_subscription_stats(${after.oid})`
      await ends.sub.query(sql)
      report.message += `; its ${after.applyErrors} apply error(s) were counted, then its statistics reset (${sql})`
    }
    opts.write(`${linkLabel(ends)}: ${report.message}`)
    return
  }
}

/** Skip exactly `cur.tx` on the link (its changes recorded first); returns 'moved-on' when it got applied before we could. */
async function skipOne(
  cfg: Config,
  journal: Journal,
  ends: LinkEnds,
  cur: {sub: SubscriptionState; tx: DecodedTx; view: TxView},
  method: SkipMethod,
  report: LinkReport,
  opts: SkipTxOptions,
): Promise<{changesFile: string; sqlFile: string} | 'moved-on'> {
  const c = ends.sub
  const name = qi(ends.name)
  const run = async (sql: string) => {
    report.sql.push({node: ends.to, sql})
    await c.query(sql)
  }
  const sub = await readSubscription(c, ends.name)
  if (!sub) throw new MmliteError(`subscription ${ends.name} disappeared from ${ends.to}`, {code: ExitCode.Failed})
  if (passed(sub.originLsn, cur.tx)) return 'moved-on'
  const files = await captureAudit(cfg, ends, sub, cur.tx)
  const inFlight: InFlight = {from: ends.from, to: ends.to, subscription: ends.name, method, tx: cur.tx, view: cur.view, enable: !sub.enabled, ...files}
  await journal.set('inFlight', inFlight)
  const timeout = {timeoutMs: opts.timeoutMs, hint: 'Re-run `mmlite skip-tx` to finish; `mmlite status` shows the link.'}

  if (method === 'skip-lsn') {
    await run(`ALTER SUBSCRIPTION ${name} SKIP (lsn = ${ql(cur.tx.finalLsn)})`)
    maybeDie('armed')
    if (!sub.enabled) await run(`ALTER SUBSCRIPTION ${name} ENABLE`)
    await pollUntil(async () => passed((await readSubscription(c, ends.name))?.originLsn ?? null, cur.tx), {
      ...timeout,
      what: `${ends.to} to skip transaction ${cur.tx.xid} on ${ends.name}`,
    })
    return files
  }

  // origin advance: only with the worker gone, and only if the transaction is still the next one
  await journal.set('pausedSubscriptions', [{node: ends.to, subscription: ends.name}])
  if (sub.enabled) await run(`ALTER SUBSCRIPTION ${name} DISABLE`)
  maybeDie('disabled')
  await pollUntil(
    async () => (await c.one<{n: number}>('SELECT count(*)::int AS n FROM pg_stat_subscription WHERE subid = $1 AND pid IS NOT NULL', [sub.oid]))!.n === 0,
    {...timeout, what: `the workers of ${ends.name} on ${ends.to} to exit`},
  )
  const now = await readSubscription(c, ends.name)
  const next = now ? await nextPending(ends, now) : {unavailable: 'subscription disappeared'}
  const still = Array.isArray(next) && next[0]?.finalLsn === cur.tx.finalLsn
  if (still) await run(`SELECT pg_replication_origin_advance(${ql(`pg_${sub.oid}`)}, ${lsnLiteral(cur.tx.endLsn)})`)
  maybeDie('advanced')
  await run(`ALTER SUBSCRIPTION ${name} ENABLE`)
  await journal.set('pausedSubscriptions', [])
  if (!still) {
    await journal.set('inFlight', null)
    await rm(files.changesFile, {force: true})
    await rm(files.sqlFile, {force: true})
    if (Array.isArray(next) && (next.length === 0 || passed(now!.originLsn, cur.tx))) return 'moved-on'
    throw new MmliteError(`${linkLabel(ends)}: transaction ${cur.tx.xid} is no longer the next one to apply; nothing was skipped`, {
      code: ExitCode.Failed,
      details: Array.isArray(next) ? [`next now: transaction ${next[0]?.xid} (final LSN ${next[0]?.finalLsn})`] : [next.unavailable],
      suggestions: ['Re-run `mmlite skip-tx` to see what blocks the link now.'],
    })
  }
  return files
}

/** A run killed while skipping: record what was skipped, re-enable what it disabled. */
async function finishInterrupted(cfg: Config, cluster: Cluster, journal: Journal, opts: SkipTxOptions, result: SkipTxResult): Promise<void> {
  await journal.begin(JOURNAL_KEY, 'skip-tx')
  const f = journal.get<InFlight | null>('inFlight')
  const pausedList = journal.get<Array<{node: string; subscription: string}>>('pausedSubscriptions') ?? []
  if (f) {
    const c = cluster.node(f.to)
    const sub = await readSubscription(c, f.subscription)
    if (sub && f.method === 'skip-lsn' && !passed(sub.originLsn, f.tx) && sub.skipLsn === f.tx.finalLsn) {
      if (!sub.enabled && f.enable) await c.query(`ALTER SUBSCRIPTION ${qi(f.subscription)} ENABLE`)
      await pollUntil(async () => passed((await readSubscription(c, f.subscription))?.originLsn ?? null, f.tx), {
        timeoutMs: opts.timeoutMs,
        what: `${f.to} to skip transaction ${f.tx.xid} on ${f.subscription}`,
      }).catch(() => {})
    }
    const now = await readSubscription(c, f.subscription)
    if (now && passed(now.originLsn, f.tx)) {
      const s = await recordSkip(cfg, f, new Date().toISOString(), 'recorded by the next run: the run that skipped it was interrupted')
      result.notes.push(`${linkLabel(f)}: transaction ${f.tx.xid} skipped by an interrupted run; recorded in ${s.sqlFile}`)
      result.skipped++
    } else if (f.enable && now && !now.enabled && f.method === 'skip-lsn') {
      result.notes.push(`${linkLabel(f)}: an interrupted run did not skip transaction ${f.tx.xid}`)
    }
  }
  for (const p of pausedList) {
    try {
      const s = await readSubscription(cluster.node(p.node), p.subscription)
      if (s && !s.enabled) await cluster.node(p.node).query(`ALTER SUBSCRIPTION ${qi(p.subscription)} ENABLE`)
      result.notes.push(`${p.node}: re-enabled ${p.subscription}, disabled by an interrupted skip-tx run`)
    } catch (e) {
      throw new MmliteError(`could not re-enable ${p.subscription} on ${p.node}: ${errorMessage(e)}`, {code: ExitCode.Failed, suggestions: ['Re-run `mmlite skip-tx` once the node is reachable.']})
    }
  }
  await journal.set('inFlight', null)
  await journal.set('pausedSubscriptions', [])
  await journal.finish('completed')
}
