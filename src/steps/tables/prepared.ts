/**
 * Two-phase commit of the per-node transactions of the table activation and of `mmlite ddl`
 * (./together.ts), and the re-run's recovery of a run killed between the nodes' commits.
 *
 * Every participant's transaction is PREPAREd under one gid, then COMMIT PREPARED node by node.
 * A prepared transaction survives the death of mmlite with its locks: a node that has not
 * committed yet keeps the table locked, so its apply workers wait (they never apply a change of
 * the table, nor fail on a column they lack) and its writers wait, until the re-run commits it.
 *
 * The gid names every participant's transaction id: `mmlite:<op>:<cluster>:<i>-<xid>.<j>-<xid>`
 * (i = index of the node in mmlite.yaml). The decision needs no journal: a participant no
 * longer holding the gid either committed it (txid_status = committed: every participant had
 * prepared, so all commit) or never prepared (aborted: none committed, so all roll back); when
 * every participant still holds it, all prepared and nothing failed: commit.
 */
import {escapeLiteral as ql} from '../../db/quote.js'
import type {Cluster} from '../../cluster/cluster.js'
import type {Config} from '../../config/config.js'
import {MmliteError, ExitCode} from '../../errors.js'
import {pollUntil} from '../../util/poll.js'

export type Op = 'tables' | 'ddl'

export function gidPrefix(cluster: string, op: Op): string {
  return `mmlite:${op}:${cluster}:`
}

export function makeGid(cfg: Config, op: Op, xids: Map<string, string>): string {
  const idx = (n: string) => cfg.nodes.findIndex(x => x.name === n)
  return gidPrefix(cfg.cluster, op) + [...xids].map(([n, x]) => `${idx(n)}-${x}`).join('.')
}

/** participant node -> its transaction id (undefined: not one of ours or not parseable) */
export function parseGid(cfg: Config, op: Op, gid: string): Map<string, string> | undefined {
  const p = gidPrefix(cfg.cluster, op)
  if (!gid.startsWith(p)) return undefined
  const out = new Map<string, string>()
  for (const part of gid.slice(p.length).split('.')) {
    const m = /^(\d+)-(\d+)$/.exec(part)
    const node = m ? cfg.nodes[Number(m[1])] : undefined
    if (!m || !node) return undefined
    out.set(node.name, m[2])
  }
  return out
}

export const prepareSql = (gid: string) => `PREPARE TRANSACTION ${ql(gid)}`
export const commitPreparedSql = (gid: string) => `COMMIT PREPARED ${ql(gid)}`
export const rollbackPreparedSql = (gid: string) => `ROLLBACK PREPARED ${ql(gid)}`
/** what --dry-run shows for the gid, unknown before the run (transaction ids) */
export const plannedGid = (cluster: string, op: Op) => `${gidPrefix(cluster, op)}<index>-<xid> of each node`

export const XID_SQL = 'SELECT pg_catalog.txid_current()::pg_catalog.text AS xid'
// every database's prepared transactions count against the server's max_prepared_transactions
const CAPACITY_SQL = `SELECT pg_catalog.current_setting('max_prepared_transactions')::pg_catalog.int4 AS max,
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_xacts)::pg_catalog.int4 AS held`
const PREPARED_SQL = `SELECT x.gid::pg_catalog.text AS gid FROM pg_catalog.pg_prepared_xacts x
 WHERE x.database = pg_catalog.current_database() AND pg_catalog.starts_with(x.gid, $1::pg_catalog.text)`
// txid_status exists from PostgreSQL 10 on; starts_with from 11
const STATUS_SQL = 'SELECT pg_catalog.txid_status($1::pg_catalog.int8)::pg_catalog.text AS status'

export interface PreparedCapacity {
  /** max_prepared_transactions */
  max: number
  /** prepared transactions the server holds now (every database) */
  held: number
}

export async function preparedCapacity(cluster: Cluster, nodes: string[]): Promise<Map<string, PreparedCapacity>> {
  const caps = await Promise.all(nodes.map(async x => (await cluster.node(x).one<PreparedCapacity>(CAPACITY_SQL))!))
  return new Map(nodes.map((x, i) => [x, caps[i]]))
}

/** nodes among `nodes` that cannot prepare transactions (max_prepared_transactions = 0) */
export async function noTwoPhase(cluster: Cluster, nodes: string[]): Promise<string[]> {
  const caps = await preparedCapacity(cluster, nodes)
  return nodes.filter(x => caps.get(x)!.max === 0)
}

/** some node still holds a prepared transaction of `op` of this cluster */
export async function hasLeftovers(cfg: Config, cluster: Cluster, op: Op): Promise<boolean> {
  for (const n of cfg.nodes) if ((await cluster.node(n.name).query(PREPARED_SQL, [gidPrefix(cfg.cluster, op)])).length) return true
  return false
}

export interface Leftover {
  gid: string
  decision: 'commit' | 'rollback'
  /** nodes still holding the prepared transaction */
  holders: string[]
  /** participants that end with the transaction committed (decision commit) */
  participants: string[]
}

/** A prepared transaction of an earlier run, with what the re-run does with it. */
export async function leftovers(cfg: Config, cluster: Cluster, op: Op, timeoutMs: number): Promise<Leftover[]> {
  const held = new Map<string, string[]>()
  for (const n of cfg.nodes) {
    for (const r of await cluster.node(n.name).query<{gid: string}>(PREPARED_SQL, [gidPrefix(cfg.cluster, op)])) {
      held.set(r.gid, [...(held.get(r.gid) ?? []), n.name])
    }
  }
  const out: Leftover[] = []
  for (const [gid, holders] of held) {
    const parts = parseGid(cfg, op, gid)
    if (!parts) throw new MmliteError(`prepared transaction ${gid} on ${holders.join(', ')} does not name nodes of mmlite.yaml`, {code: ExitCode.Preflight, suggestions: [`Commit or roll it back by hand (COMMIT PREPARED / ROLLBACK PREPARED ${ql(gid)}), then re-run.`]})
    let decision: Leftover['decision'] = 'commit'
    for (const [node, xid] of parts) {
      if (holders.includes(node)) continue
      const status = await settledStatus(cluster, node, xid, timeoutMs)
      if (status === 'aborted') decision = 'rollback'
      else if (status === 'committed') {
        decision = 'commit'
        break
      } else throw new MmliteError(`cannot tell whether transaction ${xid} of ${gid} committed on ${node} (status ${status})`, {code: ExitCode.Failed, suggestions: [`Decide by hand: COMMIT PREPARED (or ROLLBACK PREPARED) ${ql(gid)} on ${holders.join(', ')}, then re-run.`]})
    }
    out.push({gid, decision, holders, participants: [...parts.keys()]})
  }
  return out
}

async function settledStatus(cluster: Cluster, node: string, xid: string, timeoutMs: number): Promise<string> {
  let status = ''
  // a killed run's session may not be gone yet: its transaction is still in progress
  await pollUntil(
    async () => {
      status = (await cluster.node(node).one<{status: string | null}>(STATUS_SQL, [xid]))?.status ?? 'unknown'
      return status !== 'in progress'
    },
    {timeoutMs, what: `transaction ${xid} on ${node} to end`, maxIntervalMs: 500, hint: 'A session of an earlier mmlite run still holds it; re-run once it has ended.'},
  )
  return status
}

export function resolveSql(l: Leftover): string {
  return l.decision === 'commit' ? commitPreparedSql(l.gid) : rollbackPreparedSql(l.gid)
}

/** Finish every leftover; returns the nodes on which a leftover ended committed. */
export async function finishLeftovers(cluster: Cluster, ls: Leftover[]): Promise<Set<string>> {
  const committed = new Set<string>()
  for (const l of ls) {
    for (const n of l.holders) await cluster.node(n).query(resolveSql(l))
    if (l.decision === 'commit') for (const n of l.participants) committed.add(n)
  }
  return committed
}
