/**
 * The `copy` step of add-node --strategy copy: every replicated table S→X inside the snapshot
 * exported with slot S→X (see the argument at the top of ../add-node-copy.ts, whose guarantees
 * this step keeps). The sessions on S have already imported the snapshot (step source-snapshot);
 * this step opens the sessions on X, empties X's tables and streams each table through.
 */
import {Transform} from 'node:stream'
import {pipeline} from 'node:stream/promises'
import type pg from 'pg'
import {to as copyTo, from as copyFrom} from 'pg-copy-streams'
import type {StepContext, Action} from '../../engine/types.js'
import type {AddNodeContext} from '../add-node-context.js'
import {escapeIdentifier as qi} from '../../db/quote.js'
import type {TableName} from '../../config/tables.js'
import {MmliteError, ExitCode, errorMessage} from '../../errors.js'
import {formatBytes, formatSeconds} from '../../util/text.js'

export interface TableCopyReport {
  table: string
  rows: number
  bytes: number
  ms: number
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

export function copyDataAction(a: AddNodeContext, d: CopyDataDeps): Action {
  const X = a.x.name
  const S = a.source
  return {
    node: X,
    label: `copy ${a.cfg.tables.length} table(s) ${S}→${X} inside the snapshot (${Math.max(1, Math.min(a.jobs, a.cfg.tables.length))} in parallel)`,
    sql: [
      `TRUNCATE ${a.cfg.tables.map(t => t.qualified).join(', ')}   -- on ${X}, session_replication_role = replica`,
      ...a.cfg.tables.map(t => `COPY ${t.qualified} TO STDOUT (on ${S}) | COPY ${t.qualified} FROM STDIN (on ${X})`),
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

interface TableInfo {
  t: TableName
  cols: string[]
  partitioned: boolean
  estBytes: number
  estRows: number
}

const TABLE_INFO_SQL = `SELECT c.relkind::text AS relkind,
       (SELECT json_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '') AS cols,
       (SELECT coalesce(sum(pg_relation_size(pt.relid)), 0)::float8 FROM pg_partition_tree(c.oid) pt) AS est_bytes,
       (SELECT coalesce(sum(greatest(pc.reltuples, 0)), 0)::float8 FROM pg_partition_tree(c.oid) pt JOIN pg_class pc ON pc.oid = pt.relid) AS est_rows
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = $1 AND c.relname = $2`

interface Progress {
  table: string
  rows: number
  bytes: number
  est: number
  done: boolean
  t0: number
  ms: number
}

function countNewlines(b: Buffer): number {
  let n = 0
  for (let i = b.indexOf(10); i !== -1; i = b.indexOf(10, i + 1)) n++
  return n
}

async function copyTables(a: AddNodeContext, c: StepContext, l: CopySessions, openSession: (node: string) => Promise<pg.Client>): Promise<TableCopyReport[]> {
  const reader0 = l.readers[0]
  // table definitions as the snapshot sees them
  const infos: TableInfo[] = []
  for (const t of a.cfg.tables) {
    const r = (await reader0.query<{relkind: string; cols: string[] | null; est_bytes: number; est_rows: number}>(TABLE_INFO_SQL, [t.schema, t.name])).rows[0]
    if (!r) throw new MmliteError(`node ${a.source}: table ${t.display} does not exist`, {code: ExitCode.Failed})
    infos.push({t, cols: r.cols ?? [], partitioned: r.relkind === 'p', estBytes: Number(r.est_bytes), estRows: Number(r.est_rows)})
  }
  for (let i = 0; i < l.readers.length; i++) {
    const w = await openSession(a.x.name)
    l.writers.push(w)
    // like the apply worker: no user triggers, no FK checks (tables are filled in any order)
    await w.query('SET session_replication_role = replica')
  }
  // a previous attempt may have copied part of the data: start from empty tables
  await l.writers[0].query(`TRUNCATE ${a.cfg.tables.map(t => t.qualified).join(', ')}`)

  const progress: Progress[] = infos.map(i => ({table: i.t.display, rows: 0, bytes: 0, est: i.estBytes, done: false, t0: 0, ms: 0}))
  const queue = infos.map((info, idx) => ({info, idx})).sort((x, y) => y.info.estBytes - x.info.estBytes)
  const start = Date.now()
  const show = () => {
    const bytes = progress.reduce((s, p) => s + p.bytes, 0)
    const est = progress.reduce((s, p) => s + Math.max(p.est, p.bytes), 0)
    const secs = (Date.now() - start) / 1000
    const rate = secs > 0 ? bytes / secs : 0
    const eta = rate > 0 && est > bytes ? formatSeconds((est - bytes) / rate) : '-'
    const per = progress
      .filter(p => p.t0 > 0)
      .map(p => `${p.table} ${p.rows} rows ${formatBytes(p.bytes)}${p.done ? ' ✔' : p.est > 0 ? ` (~${Math.min(99, Math.round((100 * p.bytes) / p.est))}%)` : ''}`)
    c.progress(`copied ${formatBytes(bytes)} of ~${formatBytes(est)} at ${formatBytes(Math.round(rate))}/s, ETA ${eta}: ${per.join('; ')}`)
  }
  const ticker = setInterval(show, 500)
  try {
    await Promise.all(
      l.readers.map(async (reader, i) => {
        const writer = l.writers[i]
        for (let job = queue.shift(); job; job = queue.shift()) {
          const {info, idx} = job
          const p = progress[idx]
          p.t0 = Date.now()
          const cols = info.cols.map(qi).join(', ')
          const from = `${info.partitioned ? '' : 'ONLY '}${info.t.qualified}`
          await writer.query('BEGIN')
          const src = reader.query(copyTo(`COPY (SELECT ${cols} FROM ${from}) TO STDOUT`))
          const dst = writer.query(copyFrom(`COPY ${info.t.qualified} (${cols}) FROM STDIN`))
          const counter = new Transform({
            transform(chunk: Buffer, _enc, cb) {
              p.bytes += chunk.length
              p.rows += countNewlines(chunk)
              cb(null, chunk)
            },
          })
          try {
            await pipeline(src, counter, dst)
          } catch (e) {
            throw new MmliteError(`copying ${info.t.display} ${a.source}→${a.x.name} failed: ${errorMessage(e)}`, {
              code: ExitCode.Failed,
              suggestions: ['Re-run the command: the copy starts over with a fresh snapshot.'],
            })
          }
          await writer.query('COMMIT')
          p.done = true
          p.ms = Date.now() - p.t0
          // fault injection for the resume tests: die with part of the tables copied
          if (process.env.MMLITE_FAULT_KILL_AFTER === 'copy:first-table') process.kill(process.pid, 'SIGKILL')
        }
      }),
    )
  } finally {
    clearInterval(ticker)
  }
  show()
  for (const r of l.readers) await r.query('COMMIT').catch(() => {})
  const total = progress.reduce((s, p) => s + p.rows, 0)
  c.note(`copied ${total} rows (${formatBytes(progress.reduce((s, p) => s + p.bytes, 0))}) in ${formatSeconds((Date.now() - start) / 1000)}: ${progress.map(p => `${p.table} ${p.rows}`).join(', ')}`)
  return progress.map(p => ({table: p.table, rows: p.rows, bytes: p.bytes, ms: p.ms}))
}

