/**
 * Transactions a new logical slot waits for (issues #7.6, #7.7).
 *
 * Creating a logical slot (CREATE_REPLICATION_SLOT, pg_create_logical_replication_slot)
 * builds its snapshot from the running-transactions records and reaches its consistent point
 * only once every transaction that held an xid when it started (then those running when it
 * had a full snapshot) has ended — prepared transactions included, since they stay in the
 * procarray until COMMIT/ROLLBACK PREPARED (snapbuild.c; test_decoding/specs/
 * ondisk_startup). It has no deadline: one idle-in-transaction session or one forgotten
 * prepared transaction holds it for as long as it lives.
 *
 * add-node therefore waits, before a fresh run changes anything, on every existing node (it
 * creates a slot on each), and the copy strategy again right BEFORE pausing S's inbound
 * subscriptions (its exported-snapshot slot is created while they are paused): until every transaction running at that
 * moment has ended (the sessions of pg_stat_activity with an xid, in every database, and
 * pg_prepared_xacts, as the slot sees them), bounded by --timeout and
 * naming the holders; a transaction that takes an xid after that and before the slot is made
 * is caught by the bounded slot creation itself (createSlotWatched in add-node-copy.ts).
 */
import type {NodeConn} from '../../db/node.js'
import {MmliteError, ExitCode} from '../../errors.js'
import {sleep} from '../../util/poll.js'
import {formatSeconds} from '../../util/text.js'

/** One key per transaction holding an xid now: pid:xid for sessions, prepared:xid for prepared ones. */
const HOLDER_KEYS_SQL = `SELECT a.pid::pg_catalog.text || ':' || a.backend_xid::pg_catalog.text AS k
  FROM pg_catalog.pg_stat_activity a WHERE a.backend_xid IS NOT NULL AND a.pid <> pg_catalog.pg_backend_pid()
UNION ALL
SELECT 'prepared:' || p.transaction::pg_catalog.text FROM pg_catalog.pg_prepared_xacts p`

/** Sessions holding an xid (but `exclude`) and prepared transactions, oldest first. */
export const XID_HOLDERS_SQL = `SELECT a.pid::pg_catalog.text AS pid, NULL::pg_catalog.text AS gid,
       coalesce(nullif(a.application_name, ''::pg_catalog.text), a.backend_type) AS app,
       a.usename::pg_catalog.text AS usr, a.datname::pg_catalog.text AS db, a.client_addr::pg_catalog.text AS client,
       a.state, a.xact_start::pg_catalog.text AS since,
       pg_catalog.date_part('epoch'::pg_catalog.text, pg_catalog.clock_timestamp() - a.xact_start)::pg_catalog.int4 AS age_s,
       pg_catalog."left"(a.query, 200) AS query
  FROM pg_catalog.pg_stat_activity a
 WHERE a.backend_xid IS NOT NULL AND a.pid <> pg_catalog.pg_backend_pid() AND a.pid <> ALL ($1::pg_catalog.int4[])
UNION ALL
SELECT NULL, p.gid, 'prepared transaction', p.owner::pg_catalog.text, p.database::pg_catalog.text, NULL, 'prepared',
       p.prepared::pg_catalog.text, pg_catalog.date_part('epoch'::pg_catalog.text, pg_catalog.clock_timestamp() - p.prepared)::pg_catalog.int4, NULL
  FROM pg_catalog.pg_prepared_xacts p
 ORDER BY age_s DESC LIMIT 10`

export interface XidHolder {
  pid: string | null
  gid: string | null
  app: string
  usr: string | null
  db: string | null
  client: string | null
  state: string | null
  since: string | null
  age_s: number | null
  query: string | null
}

/** One line naming a transaction that holds up a slot. */
export function describeHolder(r: XidHolder): string {
  const age = r.age_s !== null ? `, running ${formatSeconds(r.age_s)}` : ''
  if (r.gid !== null) return `prepared transaction ${r.gid} (owner ${r.usr ?? '?'}, database ${r.db ?? '?'}, prepared at ${r.since ?? '?'}${age})`
  const from = r.client ? ` from ${r.client}` : ''
  const q = r.query ? `; last query: ${r.query.replace(/\s+/g, ' ').trim()}` : ''
  return `pid ${r.pid} (${r.app}, user ${r.usr ?? '?'}, database ${r.db ?? '?'}${from}) ${r.state ?? '-'} since ${r.since ?? '?'}${age}${q}`
}

/** How to end what describeHolder named. */
export function holderFixes(node: string, rows: XidHolder[]): string[] {
  const out: string[] = []
  const gids = rows.filter(r => r.gid !== null)
  const pids = rows.filter(r => r.pid !== null)
  if (pids.length) out.push(`On ${node}, let those transactions finish, or end them: SELECT pg_terminate_backend(pid) for pid ${pids.map(r => r.pid).join(', ')}.`)
  if (gids.length) out.push(`On ${node}, resolve the prepared transaction(s) in their database: ${gids.map(r => `COMMIT PREPARED '${r.gid}' (or ROLLBACK PREPARED)`).join('; ')}.`)
  return out
}

export async function xidHolders(conn: NodeConn, exclude: number[] = []): Promise<XidHolder[]> {
  return conn.query<XidHolder & Record<string, unknown>>(XID_HOLDERS_SQL, [exclude])
}

/**
 * Wait until every transaction that holds an xid on `node` now (prepared ones included) has
 * ended, at most `timeoutMs`; on timeout a Timeout error naming them. `note` is told once
 * about each holder still running after a moment.
 */
export async function waitRunningXactsEnd(
  conn: NodeConn,
  node: string,
  opts: {timeoutMs: number; why: string; progress: (t: string) => void; note: (t: string) => void; nothingDone: string},
): Promise<void> {
  // the transactions holding an xid now (the snapshot's xmax is no bound: a running xid above
  // the latest completed one is not listed in it), then until none of them is still there
  const keys = async () => new Set((await conn.query<{k: string}>(HOLDER_KEYS_SQL)).map(r => r.k))
  const first = await keys()
  const t0 = Date.now()
  const seen = new Set<string>()
  let interval = 50
  for (;;) {
    const now = await keys()
    if (![...first].some(k => now.has(k))) return
    const waited = Date.now() - t0
    if (waited >= opts.timeoutMs) {
      const rows = await xidHolders(conn)
      throw new MmliteError(
        `timed out after ${Math.round(opts.timeoutMs / 1000)} s waiting for transactions on ${node} to end (${opts.why}); ${opts.nothingDone}`,
        {code: ExitCode.Timeout, details: rows.map(describeHolder), suggestions: [...holderFixes(node, rows), 'Then re-run the command (or give it a longer --timeout).']},
      )
    }
    if (waited > 2000) {
      const rows = await xidHolders(conn)
      opts.progress(`${node}: waiting for ${rows.length} transaction(s) to end (${Math.round(waited / 1000)} s)`)
      for (const h of rows) {
        const k = h.gid ?? h.pid ?? ''
        if (seen.has(k)) continue
        seen.add(k)
        opts.note(`${node}: waiting for ${describeHolder(h)}`)
      }
    }
    await sleep(interval)
    interval = Math.min(500, Math.ceil(interval * 1.5))
  }
}
