/**
 * Cluster-wide lock: a session-level advisory lock (key derived from the cluster name)
 * taken with pg_try_advisory_lock on every node, held by a dedicated session for the
 * whole run. A second mutating run fails at once and is told who holds the lock.
 * Sessions end (and the locks go) when the process exits, even if it is killed.
 */
import type pg from 'pg'
import type {Cluster} from '../cluster/cluster.js'
import {lockKey} from '../cluster/naming.js'
import {MmliteError, ExitCode} from '../errors.js'

export class ClusterLock {
  private constructor(private readonly sessions: pg.Client[]) {}

  /**
   * With skipUnreachable, nodes that cannot be reached are left out (the caller's preflight
   * reports them and refuses to go on); otherwise they fail the acquisition.
   */
  static async acquire(cluster: Cluster, command: string, nodes = cluster.names, opts: {skipUnreachable?: boolean} = {}): Promise<ClusterLock> {
    const key = lockKey(cluster.cfg.cluster).toString()
    const held: pg.Client[] = []
    const refusals: string[] = []
    await Promise.all(
      nodes.map(async n => {
        let s: pg.Client
        try {
          s = await cluster.node(n).newSession(`mmlite ${command}`.slice(0, 63))
        } catch (e) {
          if (opts.skipUnreachable && e instanceof MmliteError && e.code === ExitCode.Unreachable) return
          throw e
        }
        const r = await s.query<{ok: boolean}>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [key])
        if (r.rows[0].ok) {
          held.push(s)
          return
        }
        const who = await s.query<{pid: number; application_name: string; backend_start: Date}>(
          `SELECT a.pid, a.application_name, a.backend_start
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted
              AND l.objsubid = 1 AND ((l.classid::bigint << 32) | l.objid::bigint) = $1::bigint
            LIMIT 1`,
          [key],
        ).catch(() => ({rows: []}))
        const h = who.rows[0]
        refusals.push(h ? `node ${n}: held by "${h.application_name}" (pid ${h.pid}, since ${h.backend_start.toISOString()})` : `node ${n}: held by another session`)
        await s.end().catch(() => {})
      }),
    ).catch(async e => {
      await Promise.all(held.map(s => s.end().catch(() => {})))
      throw e
    })
    if (refusals.length) {
      await Promise.all(held.map(s => s.end().catch(() => {})))
      throw new MmliteError(`another mmlite run holds the lock of cluster "${cluster.cfg.cluster}"`, {
        code: ExitCode.Locked,
        details: refusals,
        suggestions: ['Wait for it to finish; if that process is gone, its sessions end with it and the lock is released.'],
      })
    }
    return new ClusterLock(held)
  }

  async release(): Promise<void> {
    await Promise.all(this.sessions.map(s => s.end().catch(() => {})))
  }
}
