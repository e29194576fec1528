/**
 * Settling: a difference caused only by replication lag is not a divergence.
 *
 * Each round records every node's WAL insert position L (pg_current_wal_insert_lsn(): with
 * synchronous_commit = off a commit is visible before its WAL is written, so the write
 * position could be behind a commit we have already read), then waits until every link A→B
 * has applied everything A committed before L_A: the origin progress of B's subscription
 * (remote_lsn of origin pg_<suboid>, the end of the last applied commit) has reached L_A, or,
 * for an idle publisher, the slot's confirmed_flush_lsn has (an apply worker with nothing
 * pending confirms the position the walsender's keepalive carries). Then the differing keys
 * are read again.
 */
import {edgeName} from '../../cluster/naming.js'
import {compareLsn, formatLsn, parseLsn} from '../../db/lsn.js'
import {sleep} from '../../util/poll.js'
import type {Session} from './session.js'

/**
 * The insert position points past the page header when the last record ended exactly at a
 * page boundary: 24 bytes into a page (short header; no record or continuation ends there),
 * 40 into the first page of a segment (long header). The decoder never gets past the
 * boundary on an idle node, so use the boundary.
 */
export function recordEnd(lsn: string, blockSize: number, segmentSize: number): string {
  const v = parseLsn(lsn)
  const off = v % BigInt(blockSize)
  if (off === 24n || (off === 40n && v % BigInt(segmentSize) === 40n)) return formatLsn(v - off)
  return lsn
}

/** Every node's position: every commit visible now ends at or before it. */
export async function currentLsns(sessions: Session[]): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  await Promise.all(
    sessions.map(async s => {
      const r = await s.q<{l: string; b: number; seg: string}>(
        `SELECT pg_catalog.pg_current_wal_insert_lsn()::pg_catalog.text AS l, pg_catalog.current_setting('wal_block_size')::pg_catalog.int4 AS b,
                (SELECT g.setting::pg_catalog.int8 FROM pg_catalog.pg_settings g WHERE g.name = 'wal_segment_size')::pg_catalog.text AS seg`,
      )
      out.set(s.node, recordEnd(r[0].l, r[0].b, Number(r[0].seg)))
    }),
  )
  return out
}

interface LinkState {
  link: string
  applied: boolean
  detail: string
}

async function linkStates(cluster: string, sessions: Session[], target: Map<string, string>): Promise<LinkState[]> {
  const byNode = new Map(sessions.map(s => [s.node, s]))
  const out: LinkState[] = []
  const names = sessions.map(s => s.node)
  await Promise.all(
    names.flatMap(from =>
      names
        .filter(to => to !== from)
        .map(async to => {
          const name = edgeName(cluster, from, to)
          const want = target.get(from)!
          const [sub, slot] = await Promise.all([
            byNode.get(to)!.q<{r: string}>(
              `SELECT coalesce(os.remote_lsn, '0/0'::pg_catalog.pg_lsn)::pg_catalog.text AS r FROM pg_catalog.pg_subscription s
                 LEFT JOIN pg_catalog.pg_replication_origin_status os ON os.external_id = 'pg_' || s.oid::pg_catalog.text
                WHERE s.subname = $1::pg_catalog.name AND s.subdbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())`,
              [name],
            ),
            byNode.get(from)!.q<{c: string | null}>('SELECT confirmed_flush_lsn::pg_catalog.text AS c FROM pg_catalog.pg_replication_slots WHERE slot_name = $1::pg_catalog.name', [name]),
          ])
          const link = `${from}→${to}`
          if (!sub[0]) return out.push({link, applied: false, detail: `no subscription ${name} on ${to}`})
          const origin = sub[0].r
          const confirmed = slot[0]?.c ?? null
          const applied = compareLsn(origin, want) >= 0 || (confirmed !== null && compareLsn(confirmed, want) >= 0)
          out.push({link, applied, detail: `applied up to ${origin} (slot confirmed ${confirmed ?? '-'}), needs ${want}`})
        }),
    ),
  )
  return out
}

/** Wait until every link between the given nodes has applied its publisher's changes up to `target`. */
export async function waitApplied(cluster: string, sessions: Session[], target: Map<string, string>, timeoutMs: number): Promise<{ok: boolean; lagging: string[]}> {
  const deadline = Date.now() + timeoutMs
  let interval = 20
  for (;;) {
    const st = await linkStates(cluster, sessions, target)
    const lagging = st.filter(s => !s.applied)
    if (lagging.length === 0) return {ok: true, lagging: []}
    if (Date.now() >= deadline) return {ok: false, lagging: lagging.map(l => `${l.link}: ${l.detail}`)}
    await sleep(interval)
    interval = Math.min(500, interval * 2)
  }
}
