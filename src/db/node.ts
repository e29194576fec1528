/**
 * One connection per node for the CLI. Connection failures are classified so that
 * preflight and status can say why (refused / DNS / auth / timeout).
 */
import pg from 'pg'
import {describeTarget, tlsAttempts, toClientConfig} from './conninfo.js'
import {sessionOptions, type SessionTimeouts} from './session.js'
import {redactText} from './redact.js'
import {MmliteError, ExitCode} from '../errors.js'
import type {NodeConfig} from '../config/config.js'

export type ConnectFailure = 'refused' | 'dns' | 'auth' | 'timeout' | 'database' | 'other'

export function classifyConnectError(e: unknown): {kind: ConnectFailure; message: string} {
  const err = e as {code?: string; message?: string}
  const msg = redactText(err?.message ?? String(e))
  switch (err?.code) {
    case 'ECONNREFUSED':
      return {kind: 'refused', message: `connection refused (${msg}): is the server running and listening there?`}
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return {kind: 'dns', message: `host name could not be resolved (${msg})`}
    case 'ETIMEDOUT':
      return {kind: 'timeout', message: `connection timed out (${msg})`}
    case '28P01':
    case '28000':
      return {kind: 'auth', message: `authentication failed (${msg}): check user, password, ~/.pgpass and pg_hba.conf`}
    case '3D000':
      return {kind: 'database', message: `database does not exist (${msg})`}
    case '57P03':
      return {kind: 'other', message: `the server is starting up or shutting down (${msg})`}
  }
  if (/timeout/i.test(msg)) return {kind: 'timeout', message: `connection timed out (${msg})`}
  if (/password|SASL|auth/i.test(msg)) return {kind: 'auth', message: `authentication failed (${msg})`}
  return {kind: 'other', message: msg}
}

let sessionGuard: (() => void) | undefined

/**
 * A check run before every query and every new session (the cluster lock installs one that
 * throws once a lock session is lost, so nothing goes on unlocked).
 */
export function setSessionGuard(fn: (() => void) | undefined): void {
  sessionGuard = fn
}

export interface QueryLogger {
  (node: string, sql: string): void
}

export class NodeConn {
  readonly name: string
  readonly target: string
  private client?: pg.Client
  private connecting?: Promise<pg.Client>
  /** queries on the shared session run one at a time (actions of one step may share a node) */
  private queue: Promise<unknown> = Promise.resolve()
  serverVersion = 0

  constructor(
    readonly node: NodeConfig,
    private readonly opts: {connectTimeoutMs?: number; logger?: QueryLogger; applicationName?: string} = {},
  ) {
    this.name = node.name
    this.target = describeTarget(node.conn)
  }

  /**
   * A fresh, separate session to the same node (for locks, exported snapshots, COPY, ...), with
   * this node's connect timeout. `replication`: a logical replication connection
   * (replication=database), which accepts replication commands besides SQL.
   */
  async newSession(appName = 'mmlite', opts: {replication?: boolean} & SessionTimeouts = {}): Promise<pg.Client> {
    sessionGuard?.()
    const cfg = toClientConfig(this.node.conn, this.opts.connectTimeoutMs) as pg.ClientConfig & {replication?: string}
    if (!this.node.conn.has('application_name')) cfg.application_name = appName
    if (opts.replication) cfg.replication = 'database'
    // search_path pinned and timeouts set in the startup packet: they beat role and database settings
    cfg.options = sessionOptions(this.node.conn, opts)
    const {mode, attempts} = tlsAttempts(this.node.conn)
    let c: pg.Client
    for (let i = 0; ; i++) {
      c = new pg.Client({...cfg, ssl: attempts[i]})
      c.on('error', () => {
        /* reported through the failing query */
      })
      try {
        await c.connect()
        break
      } catch (e) {
        await c.end().catch(() => {})
        const err = e as {code?: string; message?: string}
        // libpq: prefer falls back to no TLS when the server has none; allow tries TLS when the server refuses a plain connection
        const next =
          i + 1 < attempts.length &&
          ((mode === 'prefer' && /does not support SSL/i.test(err.message ?? '')) || (mode === 'allow' && (err.code === '28000' || err.code === '28P01')))
        if (next) continue
        const {kind, message} = classifyConnectError(e)
        throw new MmliteError(`node ${this.name} (${this.target}${opts.replication ? ', replication connection' : ''}): ${message}`, {
          code: ExitCode.Unreachable,
          details: [`failure: ${kind}`, `sslmode: ${mode}`],
          suggestions: opts.replication
            ? [
                `A logical replication connection to ${this.name} (replication=database) needs a role with REPLICATION (or a superuser); pg_hba.conf matches it by its database, like an ordinary connection.`,
              ]
            : [],
        })
      }
    }
    try {
      // a session mmlite keeps open may sit idle for a long time (the lock session always does)
      await c.query(NO_IDLE_TIMEOUT_SQL)
    } catch (e) {
      await c.end().catch(() => {})
      throw new MmliteError(`node ${this.name} (${this.target}): ${redactText((e as Error).message)}`, {code: ExitCode.Unreachable})
    }
    return c
  }

  async connect(): Promise<pg.Client> {
    if (this.client) return this.client
    if (!this.connecting) {
      this.connecting = (async () => {
        const c = await this.newSession(this.opts.applicationName)
        const r = await c.query<{v: string}>("SELECT pg_catalog.current_setting('server_version_num'::pg_catalog.text) AS v")
        this.serverVersion = Number(r.rows[0].v)
        this.client = c
        return c
      })()
      this.connecting.catch(() => {
        this.connecting = undefined
      })
    }
    return this.connecting
  }

  async query<T extends pg.QueryResultRow = Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<T[]> {
    sessionGuard?.()
    const c = await this.connect()
    this.opts.logger?.(this.name, sql)
    const run = this.queue.then(() => c.query<T>(sql, params))
    this.queue = run.catch(() => {})
    try {
      const r = await run
      return r.rows
    } catch (e) {
      const err = e as Error & {code?: string; detail?: string; hint?: string}
      throw new MmliteError(`node ${this.name}: ${err.message}`, {
        code: ExitCode.Failed,
        details: [err.detail, err.hint, `while running: ${firstLine(sql)}`].filter(Boolean) as string[],
      })
    }
  }

  async one<T extends pg.QueryResultRow = Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<T | undefined> {
    return (await this.query<T>(sql, params))[0]
  }

  async close(): Promise<void> {
    const c = this.client
    this.client = undefined
    this.connecting = undefined
    if (c) await c.end().catch(() => {})
  }
}

/** idle_session_timeout (14+) and idle_in_transaction_session_timeout off for this session only */
const NO_IDLE_TIMEOUT_SQL = `SELECT pg_catalog.set_config('idle_in_transaction_session_timeout'::pg_catalog.text, '0'::pg_catalog.text, false),
       (SELECT pg_catalog.set_config('idle_session_timeout'::pg_catalog.text, '0'::pg_catalog.text, false)
         WHERE pg_catalog.current_setting('server_version_num'::pg_catalog.text)::pg_catalog.int4 >= 140000)`

function firstLine(sql: string): string {
  const l = sql.trim().split('\n')[0]
  return redactText(l.length > 120 ? l.slice(0, 117) + '...' : l)
}
