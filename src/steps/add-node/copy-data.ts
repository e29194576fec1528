/**
 * The `copy` step of add-node --strategy copy: every replicated table S→X inside the snapshot
 * exported with slot S→X (see the argument at the top of ../add-node-copy.ts, whose guarantees
 * this step keeps: every reader on S has imported that one snapshot, so X receives exactly the
 * rows committed before the slot's consistent point). The sessions on S were opened and put
 * into the snapshot by step source-snapshot; this step opens the sessions on X and streams
 * each table through (the biggest first, K tables at a time).
 *
 * Exactness of the values: binary COPY where both ends read the same bytes the same way, else
 * text COPY under pinned settings (copy-plan.ts). The row count read on S (COPY command tag)
 * must equal the row count loaded on X, or the copy fails.
 * No code of a table owner runs as the admin: copy-guard.ts.
 * Speed: COPY of the table, not of a query; no per-row work in Node (streams piped; rows from the
 * command tags and pg_stat_progress_copy); per table one transaction that truncates, loads with
 * FREEZE and rebuilds secondary indexes after the load where that is exact (copy-plan.ts).
 */
import {pipeline} from 'node:stream/promises'
import type pg from 'pg'
import {from as copyFrom} from 'pg-copy-streams'
import {copyOut} from './copy-out.js'
import type {StepContext, Action} from '../../engine/types.js'
import type {AddNodeContext} from '../add-node-context.js'
import {MmliteError, ExitCode, errorMessage} from '../../errors.js'
import type {Problem} from '../preflight.js'
import {
  afterLoadSql,
  beforeLoadSql,
  copyInSql,
  copyOutSql,
  lockSql,
  pinSql,
  planTable,
  SOURCE_TABLE_SQL,
  TARGET_TABLE_SQL,
  type SourceTable,
  type TablePlan,
  type TargetTable,
} from './copy-plan.js'
import {findOwnerCode, ownerCodeMessage} from './copy-guard.js'
import {formatProgress, formatSummary, type TableProgress} from './copy-progress.js'

export interface TableCopyReport {
  table: string
  rows: number
  bytes: number
  ms: number
  format?: string
}

/** Sessions of the run: on S inside the imported snapshot (readers), on X (writers, opened here). */
export interface CopySessions {
  readers: pg.Client[]
  writers: pg.Client[]
}

/** What the procedure gives the copy step. */
export interface CopyDataDeps {
  live: CopySessions
  /** a new session to a node */
  openSession(node: string): Promise<pg.Client>
  /** the readers hold the snapshot of this run */
  ready(): boolean
  /** the copy of this attempt is journaled as done */
  done(): boolean
  /** journal the copy as done */
  finish(tables: TableCopyReport[]): Promise<void>
  /** close every session of the run */
  close(): Promise<void>
}

/** How many sessions on S the copy uses (the procedure opens them before the pause). */
export function copySessions(a: AddNodeContext): number {
  return Math.max(1, Math.min(a.jobs, a.cfg.tables.length))
}

export function copyDataAction(a: AddNodeContext, d: CopyDataDeps): Action {
  const X = a.x.name
  const S = a.source
  const all = a.cfg.tables.map(t => t.qualified).join(', ')
  return {
    node: X,
    label: `copy ${a.cfg.tables.length} table(s) ${S}→${X} inside the snapshot (${copySessions(a)} in parallel)`,
    sql: [
      `${pinSql()}   -- every copy session on ${S} and ${X}; on ${X} also SET session_replication_role = replica`,
      `BEGIN; LOCK TABLE ${all} IN ACCESS EXCLUSIVE MODE; <refuse code of other roles that the load would run>; TRUNCATE ${all}; COMMIT   -- on ${X}`,
      ...a.cfg.tables.map(
        t =>
          `BEGIN; LOCK TABLE ${t.qualified}; [TRUNCATE ONLY ${t.qualified}; DROP INDEX <secondary>]; COPY ${t.qualified} (<columns>) FROM STDIN (FORMAT binary|text[, FREEZE true]) (on ${X}) ← COPY ${t.qualified} (<columns>) TO STDOUT (FORMAT binary|text) (on ${S}); [CREATE INDEX <as before>]; COMMIT`,
      ),
    ],
    check: async () => d.done(),
    run: async c => {
      if (!d.ready()) throw new MmliteError('internal: no snapshot of the source in this run', {code: ExitCode.Failed})
      try {
        const tables = await copyTables(a, c, d.live, d.openSession)
        await d.finish(tables)
      } finally {
        await d.close()
      }
    },
  }
}

/** Preflight of the copy on X (read-only): code of other roles the load would run as the admin. */
export async function copyPreflight(a: AddNodeContext): Promise<Problem[]> {
  const X = a.x.name
  const s = await a.cluster.node(X).newSession('mmlite add-node copy preflight')
  try {
    const code = await findOwnerCode(s, a.cfg.tables)
    return code.length ? [{node: X, check: 'owner code', ...ownerCodeMessage(X, code)}] : []
  } finally {
    await s.end().catch(() => {})
  }
}

function refuseOwnerCode(X: string, code: Awaited<ReturnType<typeof findOwnerCode>>): MmliteError {
  const m = ownerCodeMessage(X, code)
  return new MmliteError(`node ${X}: ${m.message}`, {code: ExitCode.Failed, suggestions: [m.fix]})
}

async function copyTables(a: AddNodeContext, c: StepContext, l: CopySessions, openSession: (node: string) => Promise<pg.Client>): Promise<TableCopyReport[]> {
  const X = a.x.name
  const S = a.source
  const reader0 = l.readers[0]
  for (const r of l.readers) await r.query(pinSql([['row_security', 'off']]))
  for (let i = 0; i < l.readers.length; i++) {
    const w = await openSession(X)
    l.writers.push(w)
    // like the apply worker: no user triggers, no FK checks (tables are filled in any order)
    await w.query(`SET session_replication_role = replica; ${pinSql([['maintenance_work_mem', '128MB']])}`)
  }
  const w0 = l.writers[0]
  const sameMajor = Math.floor((a.versions.get(S) ?? 0) / 10000) === Math.floor((a.versions.get(X) ?? 1) / 10000)
  const plans: TablePlan[] = []
  for (const t of a.cfg.tables) {
    const s = (await reader0.query<{relkind: string; cols: SourceTable['cols'] | null; est_bytes: number; est_rows: number}>(SOURCE_TABLE_SQL, [t.schema, t.name])).rows[0]
    if (!s) throw new MmliteError(`node ${S}: table ${t.display} does not exist`, {code: ExitCode.Failed})
    const x = (await w0.query<{oid: string; relkind: string; types: Record<string, string>; referenced: boolean; indexes: TargetTable['indexes'] | null}>(TARGET_TABLE_SQL, [t.schema, t.name])).rows[0]
    if (!x) throw new MmliteError(`node ${X}: table ${t.display} does not exist`, {code: ExitCode.Failed})
    const src: SourceTable = {relkind: s.relkind, cols: s.cols ?? [], estBytes: Number(s.est_bytes), estRows: Number(s.est_rows)}
    const dst: TargetTable = {oid: Number(x.oid), relkind: x.relkind, types: x.types ?? {}, referenced: x.referenced, indexes: x.indexes ?? []}
    plans.push(planTable(t, src, dst, sameMajor))
  }
  for (const p of plans) if (!p.binary) c.note(`${p.t.display}: text COPY with pinned settings (${p.textReason})`)

  // a previous attempt may have copied part of the data: start from empty tables, after
  // checking, under the locks, that no other role's code would run during the load
  await w0.query('BEGIN')
  await w0.query(`LOCK TABLE ${a.cfg.tables.map(t => t.qualified).join(', ')} IN ACCESS EXCLUSIVE MODE`)
  const code = await findOwnerCode(w0, a.cfg.tables)
  if (code.length) {
    await w0.query('ROLLBACK')
    throw refuseOwnerCode(X, code)
  }
  await w0.query(`TRUNCATE ${a.cfg.tables.map(t => t.qualified).join(', ')}`)
  await w0.query('COMMIT')

  const progress: TableProgress[] = plans.map(p => ({table: p.t.display, estBytes: p.estBytes, estRows: p.estRows, bytes: 0, rows: 0, done: false, t0: 0, ms: 0, format: p.binary ? 'binary' : 'text'}))
  const queue = plans.map((plan, idx) => ({plan, idx})).sort((x, y) => y.plan.estBytes - x.plan.estBytes)
  const start = Date.now()
  const show = () => c.progress(formatProgress(progress, Date.now() - start))
  // rows while a table loads (14+): pg_stat_progress_copy of the writers on X
  const monitor = (a.versions.get(X) ?? 0) >= 140000 ? await openSession(X).catch(() => undefined) : undefined
  let polling = false
  const poll = async () => {
    if (!monitor || polling) return
    polling = true
    try {
      const rows = await monitor.query<{relid: string; n: string}>(
        'SELECT relid::pg_catalog.int8::pg_catalog.text AS relid, tuples_processed::pg_catalog.text AS n FROM pg_catalog.pg_stat_progress_copy WHERE pid = ANY($1::pg_catalog.int4[])',
        [l.writers.map(w => (w as unknown as {processID: number}).processID)],
      )
      for (const r of rows.rows) {
        const i = plans.findIndex(p => String(p.targetOid) === r.relid)
        if (i >= 0 && !progress[i].done) progress[i].rows = Number(r.n)
      }
    } catch {
      /* progress only */
    } finally {
      polling = false
    }
  }
  show()
  const ticker = setInterval(() => {
    void poll().then(show)
  }, 1000)
  try {
    await Promise.all(
      l.readers.map(async (reader, i) => {
        const writer = l.writers[i]
        for (let job = queue.shift(); job; job = queue.shift()) {
          const {plan, idx} = job
          const p = progress[idx]
          p.t0 = Date.now()
          try {
            await writer.query('BEGIN')
            await writer.query(lockSql(plan))
            // under the lock, before TRUNCATE (whose triggers fire too): the guard again
            const code = await findOwnerCode(writer, [plan.t])
            if (code.length) throw refuseOwnerCode(X, code)
            for (const q of beforeLoadSql(plan)) await writer.query(q)
            const src = copyOut(copyOutSql(plan))
            reader.query(src)
            const dst = writer.query(copyFrom(copyInSql(plan)))
            const piped = pipeline(src, dst)
            // after pipeline attached: bytes for the progress line, one addition per chunk
            src.on('data', (chunk: Buffer) => (p.bytes += chunk.length))
            await piped
            await src.complete
            if (src.rowCount !== dst.rowCount) throw new Error(`read ${src.rowCount} rows on ${S} but loaded ${dst.rowCount} on ${X}`)
            p.rows = dst.rowCount
            for (const q of afterLoadSql(plan)) await writer.query(q)
            await writer.query('COMMIT')
          } catch (e) {
            await writer.query('ROLLBACK').catch(() => {})
            if (e instanceof MmliteError) throw e
            throw new MmliteError(`copying ${plan.t.display} ${S}→${X} failed: ${errorMessage(e)}`, {
              code: ExitCode.Failed,
              suggestions: ['Re-run the command: the copy starts over with a fresh snapshot.'],
            })
          }
          p.done = true
          p.ms = Date.now() - p.t0
          // fault injection for the resume tests: die with part of the tables copied
          if (process.env.MMLITE_FAULT_KILL_AFTER === 'copy:first-table') process.kill(process.pid, 'SIGKILL')
        }
      }),
    )
  } finally {
    clearInterval(ticker)
    await monitor?.end().catch(() => {})
  }
  show()
  for (const r of l.readers) await r.query('COMMIT').catch(() => {})
  c.note(formatSummary(progress, Date.now() - start))
  return progress.map(p => ({table: p.table, rows: p.rows, bytes: p.bytes, ms: p.ms, format: p.format}))
}
