/**
 * Sessions for verify/repair: one pinned session per node and job. Every setting that changes
 * how a value is printed as text is fixed, so the canonical row text (ROW(...)::text) is
 * bit-identical on every node whatever its postgresql.conf says.
 */
import type pg from 'pg'
import type {NodeConn} from '../../db/node.js'

export const PINNED_SETTINGS: Array<[string, string]> = [
  ['search_path', 'pg_catalog, pg_temp'],
  ['DateStyle', 'ISO, YMD'],
  ['IntervalStyle', 'postgres'],
  ['extra_float_digits', '3'],
  ['TimeZone', 'UTC'],
  ['bytea_output', 'hex'],
  ['lc_monetary', 'C'],
  ['xmloption', 'content'],
  ['statement_timeout', '0'],
  ['jit', 'off'],
]

export function pinSql(): string {
  return PINNED_SETTINGS.map(([k, v]) => `SET ${k} = ${v.includes(',') ? v : `'${v}'`}`).join('; ')
}

export interface Session {
  node: string
  client: pg.Client
  q<T extends pg.QueryResultRow = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>
  close(): Promise<void>
}

export async function openSession(conn: NodeConn, app = 'mmlite verify'): Promise<Session> {
  const client = await conn.newSession(app)
  await client.query(pinSql())
  // one query at a time on the session (callers may ask concurrently)
  let queue: Promise<unknown> = Promise.resolve()
  const trace = Boolean(process.env.MMLITE_TRACE_SQL)
  return {
    node: conn.name,
    client,
    q: async (sql, params = []) => {
      const run = queue.then(() => client.query(sql, params))
      queue = run.catch(() => {})
      try {
        const t0 = trace ? Date.now() : 0
        const rows = (await run).rows
        if (trace) process.stderr.write(`[${conn.name}] ${Date.now() - t0} ms ${rows.length} rows: ${sql.replace(/\s+/g, ' ').slice(0, 160)}\n`)
        return rows
      } catch (e) {
        const err = e as Error
        err.message = `node ${conn.name}: ${err.message}`
        throw err
      }
    },
    close: async () => {
      await client.end().catch(() => {})
    },
  }
}
