/** Helpers for the verify/repair tests: divergence injection, catch-up, "node unchanged" snapshots. */
import type {LocalServer} from '../../src/local/server.js'
import * as h from './cluster.js'

/** Run statements under a replication origin: the subscriptions do not send them on. */
export async function asOrigin(s: LocalServer, stmts: string[]): Promise<void> {
  await h.withClient(s, async c => {
    await c.query("SELECT pg_replication_origin_create('test_inject') WHERE NOT EXISTS (SELECT FROM pg_replication_origin WHERE roname = 'test_inject')")
    await c.query("SELECT pg_replication_origin_session_setup('test_inject')")
    for (const q of stmts) await c.query(q)
    await c.query('SELECT pg_replication_origin_session_reset()')
  })
}

/** Every node has applied everything every other node has committed up to now. */
export async function caughtUp(servers: LocalServer[], cluster = 'shop'): Promise<void> {
  const lsns = await Promise.all(servers.map(s => h.sql<{l: string}>(s, 'SELECT pg_current_wal_lsn()::text AS l').then(r => r[0].l)))
  await h.waitFor(async () => {
    for (let i = 0; i < servers.length; i++) {
      const r = await h.sql<{ok: boolean}>(servers[i], 'SELECT bool_and(confirmed_flush_lsn >= $1::pg_lsn) AS ok FROM pg_replication_slots WHERE slot_name LIKE $2', [lsns[i], `${cluster}%`])
      if (!r[0].ok) return false
    }
    return true
  }, 'every link to catch up')
}

/** xmin + content of every row of every table: a node "not changed" keeps all of them. */
export async function snapshot(s: LocalServer, tables: string[]): Promise<string> {
  const parts: string[] = []
  for (const t of tables) {
    const r = await h.sql<{x: string}>(s, `SELECT md5(coalesce(string_agg(t.xmin::text || ':' || t::text, '|' ORDER BY t::text), '')) AS x FROM ${t} t`)
    parts.push(r[0].x)
  }
  return parts.join(',')
}
