/**
 * Settings every session mmlite opens gets in its startup packet (libpq `options`), which
 * PostgreSQL applies after role and database settings (`ALTER ROLE/DATABASE ... SET`) and so
 * wins over them:
 *
 *  - `search_path = pg_catalog, pg_temp`, always last so nothing can override it: mmlite runs
 *    as a privileged role, and an unqualified function or operator resolved through a schema a
 *    less privileged role can create in (`public`) would run that role's code with mmlite's
 *    privileges (a planted `public.pg_create_logical_replication_slot(text, text)` wins over the
 *    built-in for untyped literals). With pg_catalog first and pg_temp last, built-ins always win
 *    and temporary objects never shadow anything.
 *  - `statement_timeout` and `lock_timeout` defaults, so a lock held on a replicated table (or a
 *    stuck statement) cannot hang a command forever while it holds the cluster lock. They come
 *    before the user's own `options` (DSN or PGOPTIONS) and can be overridden there, or with
 *    MMLITE_STATEMENT_TIMEOUT / MMLITE_LOCK_TIMEOUT; waits that are long on purpose (COPY of a
 *    whole table) pass their own (0 = none) to NodeConn.newSession.
 */
import {MmliteError, ExitCode} from '../errors.js'
import type {ConnInfo} from './conninfo.js'

export const PINNED_SEARCH_PATH = 'pg_catalog,pg_temp'
export const DEFAULT_STATEMENT_TIMEOUT = '10min'
export const DEFAULT_LOCK_TIMEOUT = '60s'

export interface SessionTimeouts {
  /** PostgreSQL duration ('30s', '10min', '0' = none), or milliseconds */
  statementTimeout?: string | number
  lockTimeout?: string | number
}

const DURATION = /^\d+(\s*(us|ms|s|min|h|d))?$/

function duration(v: string | number, what: string): string {
  const s = String(v).trim()
  if (!DURATION.test(s)) {
    throw new MmliteError(`invalid ${what} "${s}"`, {
      code: ExitCode.Config,
      suggestions: ['Use a PostgreSQL duration: a number of milliseconds, or with a unit (500ms, 30s, 5min, 1h); 0 turns it off.'],
    })
  }
  return s.replace(/\s+/g, '')
}

/** `options` for the startup packet: mmlite's defaults, then the user's, then the pinned search_path. */
export function sessionOptions(ci: ConnInfo, t: SessionTimeouts = {}, env: NodeJS.ProcessEnv = process.env): string {
  const st = duration(t.statementTimeout ?? env.MMLITE_STATEMENT_TIMEOUT ?? DEFAULT_STATEMENT_TIMEOUT, 'statement timeout (MMLITE_STATEMENT_TIMEOUT)')
  const lt = duration(t.lockTimeout ?? env.MMLITE_LOCK_TIMEOUT ?? DEFAULT_LOCK_TIMEOUT, 'lock timeout (MMLITE_LOCK_TIMEOUT)')
  const user = ci.get('options') ?? env.PGOPTIONS ?? ''
  return [`-c statement_timeout=${st}`, `-c lock_timeout=${lt}`, user.trim(), `-c search_path=${PINNED_SEARCH_PATH}`]
    .filter(Boolean)
    .join(' ')
}
