/**
 * Cluster-wide lock: on every node, a dedicated session creates a TEMPORARY physical replication
 * slot named after the cluster (`mmlite_lock_<hash of the cluster name>`, no WAL reserved) and
 * holds it for the whole run. A second mutating run fails at once and is told who holds it.
 *
 * Why a slot and not an advisory lock: any role that can connect can take any advisory lock
 * and so block every mmlite operation forever. Creating a replication slot needs the
 * REPLICATION attribute (or superuser): only the roles that can already create, use and drop
 * mmlite's slots (the admin; a dedicated replication role) can take or hold this lock.
 * A temporary slot is dropped by the server when its session ends, so the lock goes when the
 * process exits, even if it is killed. release() drops it explicitly first.
 *
 * Losing a lock session (terminated backend, idle_session_timeout, network) stops the run: from
 * then on every query mmlite makes through NodeConn fails with "lost the cluster lock" instead
 * of going on unlocked. Re-running the command resumes where it stopped.
 *
 * The configuration and the journal must not have changed between the moment this process read
 * them and the moment it holds the lock (another run may have finished in between): if they
 * did, acquire() refuses and asks for a re-run, so no decision rests on a stale read.
 */
import type pg from 'pg'
import type {Cluster} from '../cluster/cluster.js'
import {lockKey} from '../cluster/naming.js'
import {setSessionGuard} from '../db/node.js'
import {MmliteError, ExitCode} from '../errors.js'
import {changedSinceRead} from '../util/state-files.js'

/** The lock slot's name on every node of a cluster. */
export function lockSlotName(cluster: string): string {
  return `mmlite_lock_${BigInt.asUintN(64, lockKey(cluster)).toString(16).padStart(16, '0')}`
}

const TAKE_SQL = `SELECT pg_catalog.pg_create_physical_replication_slot($1::pg_catalog.name, false, true)`
const HOLDER_SQL = `SELECT s.active_pid AS pid, a.application_name, a.usename::pg_catalog.text AS usename, a.backend_start
  FROM pg_catalog.pg_replication_slots s LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = s.active_pid
 WHERE s.slot_name = $1::pg_catalog.name`
const DROP_SQL = `SELECT pg_catalog.pg_drop_replication_slot(s.slot_name) FROM pg_catalog.pg_replication_slots s
 WHERE s.slot_name = $1::pg_catalog.name AND s.active_pid = pg_catalog.pg_backend_pid()`

const live = new Set<ClusterLock>()

setSessionGuard(() => {
  for (const l of live) if (l.lost) throw l.lostError()
})

/**
 * A node without peer_dsn is reached by its peers' subscriptions through its dsn: a password in
 * it is stored in pg_subscription on every peer (and in server logs with log_statement = ddl).
 * Said loudly whenever subscriptions may be created; README "Security model" has the fix.
 */
function warnPeerPasswords(cluster: Cluster): void {
  const risky = cluster.names.map(n => cluster.node(n).node).filter(n => n.peerDsn === undefined && n.conn.has('password'))
  if (!risky.length) return
  process.stderr.write(
    `warning: ${risky.map(n => n.name).join(', ')}: no peer_dsn, so the subscriptions on the other nodes connect with the dsn, whose password ` +
      'is then stored in pg_subscription on every peer (readable by superusers, logged with log_statement = ddl).\n' +
      '  Give each node a peer_dsn with a dedicated replication role and no password in it (use ~/.pgpass of the server OS user), see README "Security model and privileges".\n',
  )
}

export class ClusterLock {
  /** set when a lock session ended while the lock was meant to be held */
  lost?: string
  private released = false

  private constructor(
    private readonly cluster: string,
    private readonly slot: string,
    private readonly sessions: Array<{node: string; s: pg.Client}>,
  ) {
    for (const {node, s} of sessions) {
      const gone = (why: string) => {
        if (!this.released && !this.lost) this.lost = `node ${node}: ${why}`
      }
      s.on('error', e => gone(e.message))
      s.on('end', () => gone('the lock session ended'))
    }
  }

  lostError(): MmliteError {
    return new MmliteError(`lost the lock of cluster "${this.cluster}" (${this.lost}); stopping instead of going on unlocked`, {
      code: ExitCode.Locked,
      suggestions: [
        'Re-run the same command: it resumes where it stopped.',
        'If the server ended the session (idle_session_timeout, pg_terminate_backend, a restart), find out why.',
      ],
    })
  }

  /** Throws if a lock session was lost. */
  assertHeld(): void {
    if (this.lost) throw this.lostError()
  }

  /**
   * With skipUnreachable, nodes that cannot be reached are left out (the caller's preflight
   * reports them and refuses to go on); otherwise they fail the acquisition.
   */
  static async acquire(cluster: Cluster, command: string, nodes = cluster.names, opts: {skipUnreachable?: boolean} = {}): Promise<ClusterLock> {
    const slot = lockSlotName(cluster.cfg.cluster)
    const held: Array<{node: string; s: pg.Client}> = []
    const refusals: string[] = []
    const endAll = () => Promise.all(held.map(({s}) => s.end().catch(() => {})))
    await Promise.all(
      nodes.map(async n => {
        let s: pg.Client
        try {
          s = await cluster.node(n).newSession(`mmlite ${command}`.slice(0, 63))
        } catch (e) {
          if (opts.skipUnreachable && e instanceof MmliteError && e.code === ExitCode.Unreachable) return
          throw e
        }
        try {
          await s.query(TAKE_SQL, [slot])
          held.push({node: n, s})
          return
        } catch (e) {
          const err = e as {code?: string; message?: string}
          if (err.code !== '42710') {
            await s.end().catch(() => {})
            const hint =
              err.code === '42501'
                ? 'The cluster lock is a temporary replication slot: the role needs REPLICATION (or superuser), like every mmlite operation.'
                : err.code === '53400'
                  ? 'The cluster lock needs one free replication slot on each node: raise max_replication_slots or drop unused slots.'
                  : 'See the server log of that node.'
            throw new MmliteError(`node ${n}: cannot take the lock of cluster "${cluster.cfg.cluster}": ${err.message}`, {
              code: err.code === '42501' || err.code === '53400' ? ExitCode.Preflight : ExitCode.Failed,
              suggestions: [hint],
            })
          }
        }
        const who = await s.query<{pid: number | null; application_name: string | null; usename: string | null; backend_start: Date | null}>(HOLDER_SQL, [slot]).catch(() => ({rows: []}))
        const h = who.rows[0]
        refusals.push(
          h?.pid
            ? `node ${n}: held by "${h.application_name ?? '?'}" (pid ${h.pid}${h.usename ? `, role ${h.usename}` : ''}${h.backend_start ? `, since ${h.backend_start.toISOString()}` : ''})`
            : `node ${n}: replication slot ${slot} exists and is held by another session`,
        )
        await s.end().catch(() => {})
      }),
    ).catch(async e => {
      await endAll()
      throw e
    })
    if (refusals.length) {
      await endAll()
      throw new MmliteError(`another mmlite run holds the lock of cluster "${cluster.cfg.cluster}"`, {
        code: ExitCode.Locked,
        details: refusals,
        suggestions: [`Wait for it to finish; if that process is gone, its sessions end with it and the lock (temporary replication slot ${slot}) is released.`],
      })
    }
    const changed = changedSinceRead(cluster.cfg.file)
    if (changed) {
      await endAll()
      throw new MmliteError(`${changed} changed while this run was starting (another mmlite run finished or wrote it meanwhile)`, {
        code: ExitCode.Locked,
        suggestions: ['Re-run the same command: it reads the current state under the lock.'],
      })
    }
    const lock = new ClusterLock(cluster.cfg.cluster, slot, held)
    live.add(lock)
    if (command === 'init' || command === 'add-node') warnPeerPasswords(cluster)
    return lock
  }

  async release(): Promise<void> {
    this.released = true
    live.delete(this)
    await Promise.all(
      this.sessions.map(async ({s}) => {
        await s.query(DROP_SQL, [this.slot]).catch(() => {})
        await s.end().catch(() => {})
      }),
    )
  }
}
