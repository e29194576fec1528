/**
 * libpq connection strings: parse (URI or key=value), render (libpq-quoted key=value),
 * redact (never print a password), and map onto node-postgres client options.
 *
 * We parse every DSN into an ordered key/value map so that we can
 *  - render the conninfo that goes into CREATE SUBSCRIPTION with every value libpq-quoted,
 *  - print it with the password replaced,
 *  - connect from the CLI with the same semantics as libpq (PG* env and ~/.pgpass are
 *    applied by node-postgres when a key is absent).
 */
import {existsSync, readFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {MmliteError, ExitCode} from '../errors.js'
import {didYouMean} from '../util/text.js'
import {REDACTED} from './redact.js'

export {redactText} from './redact.js'

export type ConnInfo = Map<string, string>

/** Keys whose value must never be printed. */
const SECRET_KEYS = new Set(['password', 'sslpassword', 'sslkey'])

/** libpq's connection keywords (PostgreSQL 18); anything else is refused. */
export const LIBPQ_KEYWORDS = [
  'host', 'hostaddr', 'port', 'dbname', 'user', 'password', 'passfile', 'require_auth', 'channel_binding',
  'connect_timeout', 'client_encoding', 'options', 'application_name', 'fallback_application_name',
  'keepalives', 'keepalives_idle', 'keepalives_interval', 'keepalives_count', 'tcp_user_timeout', 'replication',
  'gssencmode', 'sslmode', 'sslnegotiation', 'sslcompression', 'sslcert', 'sslkey', 'sslkeylogfile', 'sslpassword',
  'sslcertmode', 'sslrootcert', 'sslcrl', 'sslcrldir', 'sslsni', 'requirepeer', 'ssl_min_protocol_version',
  'ssl_max_protocol_version', 'min_protocol_version', 'max_protocol_version', 'krbsrvname', 'gsslib', 'gssdelegation',
  'service', 'target_session_attrs', 'load_balance_hosts', 'oauth_issuer', 'oauth_client_id', 'oauth_client_secret', 'oauth_scope',
]
const KEYWORDS = new Set(LIBPQ_KEYWORDS)

export interface ParseOptions {
  /** applied to every parsed value (config ${VAR} substitution): never to the DSN text */
  expandValue?: (value: string, key: string) => string
  /** environment for PGSERVICE / PGSERVICEFILE / PGSYSCONFDIR (process.env by default) */
  env?: NodeJS.ProcessEnv
}

/**
 * Parse a libpq conninfo: `postgresql://` / `postgres://` URI or `key=value` list. Keys must be
 * libpq keywords; `service=` (or PGSERVICE) is resolved from the service file into explicit keys
 * (keys written in the DSN win), so the subscriptions built from it do not depend on this host.
 */
export function parseConnInfo(dsn: string, opts: ParseOptions = {}): ConnInfo {
  const s = dsn.trim()
  const ci = /^postgres(ql)?:\/\//i.test(s) ? parseUri(s) : parseKeyValue(s)
  if (opts.expandValue) for (const [k, v] of ci) ci.set(k, opts.expandValue(v, k))
  return resolveService(ci, opts.env ?? process.env)
}

function checkKey(key: string, afterPassword: boolean): void {
  if (KEYWORDS.has(key)) return
  // text after a password may be part of it (an unquoted space or &): never echo it
  if (afterPassword) bad('unknown connection keyword after the password: if the password holds spaces, quotes, & or =, quote it (key=value) or percent-encode it (URI)')
  const dym = didYouMean(key, LIBPQ_KEYWORDS)
  bad(`unknown connection keyword "${key}"${dym ? ` (did you mean "${dym}"?)` : ''}`)
}

/** pg_service.conf: PGSERVICEFILE or ~/.pg_service.conf, then PGSYSCONFDIR/pg_service.conf. */
function resolveService(ci: ConnInfo, env: NodeJS.ProcessEnv): ConnInfo {
  const name = ci.get('service') ?? env.PGSERVICE
  if (name === undefined) return ci
  const files = [env.PGSERVICEFILE ?? path.join(os.homedir(), '.pg_service.conf')]
  if (env.PGSYSCONFDIR) files.push(path.join(env.PGSYSCONFDIR, 'pg_service.conf'))
  for (const file of files) {
    if (!existsSync(file)) continue
    const section = readServiceSection(file, name)
    if (!section) continue
    const out: ConnInfo = new Map()
    for (const [k, v] of section) out.set(k, v)
    for (const [k, v] of ci) if (k !== 'service') out.set(k, v)
    return out
  }
  bad(`service "${name}" not found in ${files.join(' or ')}${ci.has('service') ? '' : ' (from PGSERVICE)'}`)
}

function readServiceSection(file: string, name: string): ConnInfo | undefined {
  let current: string | undefined
  let out: ConnInfo | undefined
  for (const [i, raw] of readFileSync(file, 'utf8').split(/\r?\n/).entries()) {
    const line = raw.trim()
    if (!line || line.startsWith('#')) continue
    const sec = /^\[(.*)\]$/.exec(line)
    if (sec) {
      if (out) return out
      current = sec[1]
      if (current === name) out = new Map()
      continue
    }
    if (current !== name || !out) continue
    const eq = line.indexOf('=')
    if (eq <= 0) bad(`${file}:${i + 1}: syntax error in service file (expected key=value)`)
    const key = line.slice(0, eq).trim().toLowerCase()
    if (key === 'service') bad(`${file}:${i + 1}: nested service specifications are not supported`)
    if (!KEYWORDS.has(key)) bad(`${file}:${i + 1}: unknown connection keyword "${key}" in service "${name}"`)
    out.set(key, line.slice(eq + 1).trim())
  }
  return out
}

function bad(message: string): never {
  throw new MmliteError(message, {
    code: ExitCode.Config,
    suggestions: [
      'Use a libpq URI (postgresql://user@host:5432/db) or key=value pairs (host=... dbname=...).',
    ],
  })
}

function parseKeyValue(s: string): ConnInfo {
  const out: ConnInfo = new Map()
  let i = 0
  const n = s.length
  const isSpace = (c: string) => c === ' ' || c === '\t' || c === '\n' || c === '\r'
  let afterPassword = false
  while (i < n) {
    while (i < n && isSpace(s[i])) i++
    if (i >= n) break
    let key = ''
    while (i < n && s[i] !== '=' && !isSpace(s[i])) key += s[i++]
    while (i < n && isSpace(s[i])) i++
    if (s[i] !== '=') {
      if (afterPassword || !KEYWORDS.has(key.toLowerCase())) checkKey(key.toLowerCase(), afterPassword)
      bad(`missing "=" after "${key}" in connection string`)
    }
    i++
    while (i < n && isSpace(s[i])) i++
    let value = ''
    if (s[i] === "'") {
      i++
      let closed = false
      while (i < n) {
        const c = s[i]
        if (c === '\\' && i + 1 < n) {
          value += s[i + 1]
          i += 2
          continue
        }
        if (c === "'") {
          closed = true
          i++
          break
        }
        value += c
        i++
      }
      if (!closed) bad(`unterminated quoted value for "${key}" in connection string`)
    } else {
      while (i < n && !isSpace(s[i])) {
        if (s[i] === '\\' && i + 1 < n) {
          value += s[i + 1]
          i += 2
          continue
        }
        value += s[i++]
      }
    }
    if (!key) bad('empty key in connection string')
    checkKey(key.toLowerCase(), afterPassword)
    out.set(key.toLowerCase(), value)
    if (key.toLowerCase() === 'password' || key.toLowerCase() === 'sslpassword') afterPassword = true
  }
  return out
}

function parseUri(s: string): ConnInfo {
  const out: ConnInfo = new Map()
  const rest = s.replace(/^postgres(ql)?:\/\//i, '')
  const qIdx = rest.indexOf('?')
  const main = qIdx >= 0 ? rest.slice(0, qIdx) : rest
  const query = qIdx >= 0 ? rest.slice(qIdx + 1) : ''
  const slash = main.indexOf('/')
  const authority = slash >= 0 ? main.slice(0, slash) : main
  const dbname = slash >= 0 ? main.slice(slash + 1) : ''
  const at = authority.lastIndexOf('@')
  const userinfo = at >= 0 ? authority.slice(0, at) : ''
  const hostport = at >= 0 ? authority.slice(at + 1) : authority
  const dec = (x: string) => {
    try {
      return decodeURIComponent(x)
    } catch {
      bad('invalid percent-encoding in connection URI')
    }
  }
  if (userinfo) {
    const colon = userinfo.indexOf(':')
    if (colon >= 0) {
      out.set('user', dec(userinfo.slice(0, colon)))
      out.set('password', dec(userinfo.slice(colon + 1)))
    } else out.set('user', dec(userinfo))
  }
  if (hostport) {
    // host[:port][,host[:port]...]; IPv6 in brackets
    const hosts: string[] = []
    const ports: string[] = []
    for (const part of hostport.split(',')) {
      let host = part
      let port = ''
      const m = /^\[([^\]]*)\](?::(\d*))?$/.exec(part)
      if (m) {
        host = m[1]
        port = m[2] ?? ''
      } else {
        const c = part.lastIndexOf(':')
        if (c >= 0) {
          host = part.slice(0, c)
          port = part.slice(c + 1)
        }
      }
      hosts.push(dec(host))
      ports.push(port)
    }
    if (hosts.some(h => h)) out.set('host', hosts.join(','))
    if (ports.some(p => p)) out.set('port', ports.join(','))
  }
  if (dbname) out.set('dbname', dec(dbname))
  if (query) {
    let afterPassword = false
    for (const kv of query.split('&')) {
      if (!kv) continue
      const eq = kv.indexOf('=')
      if (eq < 0) {
        if (afterPassword || /password/i.test(kv)) bad('missing "=" in URI parameter (in or after the password: percent-encode &, = and # inside a password)')
        bad(`missing "=" in URI parameter "${kv}"`)
      }
      let k = dec(kv.slice(0, eq)).toLowerCase()
      if (k === 'ssl' && kv.slice(eq + 1) === 'true') {
        out.set('sslmode', 'require')
        continue
      }
      if (k === 'database') k = 'dbname'
      checkKey(k, afterPassword)
      out.set(k, dec(kv.slice(eq + 1)))
      if (k === 'password' || k === 'sslpassword') afterPassword = true
    }
  }
  return out
}

/** Quote one value for a libpq key=value string: always single-quoted, `\` and `'` escaped. */
export function quoteConnValue(v: string): string {
  return "'" + v.replace(/\\/g, '\\\\').replace(/'/g, "\\'") + "'"
}

/** Render a conninfo as libpq key=value with every value quoted. */
export function renderConnInfo(ci: ConnInfo, opts: {redact?: boolean} = {}): string {
  const parts: string[] = []
  for (const [k, v] of ci) {
    const val = opts.redact && SECRET_KEYS.has(k) ? REDACTED : v
    parts.push(`${k}=${quoteConnValue(val)}`)
  }
  return parts.join(' ')
}

/** host:port/dbname for display (no user, no password). */
export function describeTarget(ci: ConnInfo): string {
  const host = ci.get('host') ?? process.env.PGHOST ?? 'localhost'
  const port = ci.get('port') ?? process.env.PGPORT ?? '5432'
  const db = ci.get('dbname') ?? process.env.PGDATABASE ?? ci.get('user') ?? process.env.PGUSER ?? ''
  return `${host}:${port}/${db}`
}

/** Options for node-postgres. Keys it does not know are ignored; PG* env vars and ~/.pgpass fill gaps. */
export function toClientConfig(ci: ConnInfo, connectTimeoutMs?: number): Record<string, unknown> {
  const cfg: Record<string, unknown> = {}
  const host = ci.get('host') ?? ci.get('hostaddr')
  if (host) {
    if (host.includes(',')) bad('multiple hosts in one DSN are not supported by mmlite; list one host per node')
    cfg.host = host
  }
  const port = ci.get('port')
  if (port) {
    const p = Number(port)
    if (!Number.isInteger(p) || p <= 0 || p > 65535) bad(`invalid port "${port}" in connection string`)
    cfg.port = p
  }
  if (ci.has('user')) cfg.user = ci.get('user')
  if (ci.has('password')) cfg.password = ci.get('password')
  if (ci.has('dbname')) cfg.database = ci.get('dbname')
  if (ci.has('application_name')) cfg.application_name = ci.get('application_name')
  else cfg.application_name = 'mmlite'
  const ct = ci.get('connect_timeout')
  if (connectTimeoutMs !== undefined) cfg.connectionTimeoutMillis = connectTimeoutMs
  else if (ct && Number(ct) > 0) cfg.connectionTimeoutMillis = Number(ct) * 1000
  const sslmode = ci.get('sslmode') ?? process.env.PGSSLMODE
  if (sslmode && sslmode !== 'disable' && sslmode !== 'allow' && sslmode !== 'prefer') {
    cfg.ssl = sslmode === 'verify-full' || sslmode === 'verify-ca' ? {rejectUnauthorized: true} : {rejectUnauthorized: false}
  }
  return cfg
}
