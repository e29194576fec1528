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
  const negotiation = ci.get('sslnegotiation')
  if (negotiation) cfg.sslnegotiation = negotiation
  refuseUnsupported(ci)
  return cfg
}

/**
 * Keys libpq knows that change who we talk to or how we authenticate, which the CLI's own
 * connections (node-postgres) cannot honour: refused rather than silently ignored.
 */
function refuseUnsupported(ci: ConnInfo): void {
  const no = (key: string, why: string) => {
    throw new MmliteError(`connection keyword "${key}" is not supported by mmlite's own connections: ${why}`, {
      code: ExitCode.Config,
      suggestions: ['Remove it from the DSN (a peer_dsn may still carry it for the subscriptions).'],
    })
  }
  const v = (k: string) => ci.get(k)
  if (v('channel_binding') === 'require') no('channel_binding', 'channel binding cannot be required')
  if (v('require_auth')) no('require_auth', 'the authentication method cannot be restricted')
  if (v('gssencmode') === 'require') no('gssencmode', 'GSSAPI encryption is not available')
  for (const k of ['requirepeer', 'krbsrvname', 'gsslib', 'gssdelegation', 'sslcrldir', 'sslkeylogfile', 'oauth_issuer', 'oauth_client_id', 'oauth_client_secret', 'oauth_scope', 'min_protocol_version', 'max_protocol_version', 'replication'])
    if (ci.has(k)) no(k, 'not implemented')
  if (ci.has('passfile')) no('passfile', 'set PGPASSFILE instead')
  if (v('sslcertmode') === 'require') no('sslcertmode', 'sslcertmode=require is not implemented')
  const tsa = v('target_session_attrs')
  if (tsa && tsa !== 'any') no('target_session_attrs', 'one host per node, so only "any"')
  const lbh = v('load_balance_hosts')
  if (lbh && lbh !== 'disable') no('load_balance_hosts', 'one host per node')
}

// ---------------------------------------------------------------------------------------- TLS

export const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const
export type SslMode = (typeof SSL_MODES)[number]

export interface TlsOptions {
  rejectUnauthorized: boolean
  ca?: string
  cert?: string
  key?: string
  passphrase?: string
  crl?: string
  servername?: string
  minVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3'
  maxVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3'
  checkServerIdentity?: () => undefined
}

/**
 * How the CLI connects, following libpq's sslmode exactly: the TLS settings of each attempt in
 * order (false = no TLS) and when to move on to the next one.
 *  - disable: no TLS. allow: no TLS, then TLS if the server refuses. prefer (libpq's default):
 *    TLS, then no TLS if the server does not support it. require: TLS; verified like verify-ca
 *    when a root certificate file exists. verify-ca: the chain must lead to sslrootcert.
 *    verify-full: and the certificate must name the host. sslrootcert=system: the system's CAs,
 *    verify-full only.
 *  - sslrootcert (PGSSLROOTCERT, ~/.postgresql/root.crt), sslcert/sslkey (PGSSLCERT/PGSSLKEY,
 *    ~/.postgresql/postgresql.crt/.key), sslpassword, sslcrl, ssl_min/max_protocol_version, sslsni.
 *  - Unix-domain sockets never use TLS (as in libpq).
 */
export function tlsAttempts(ci: ConnInfo, env: NodeJS.ProcessEnv = process.env): {mode: SslMode; attempts: Array<TlsOptions | false>} {
  const raw = ci.get('sslmode') ?? env.PGSSLMODE ?? 'prefer'
  if (!(SSL_MODES as readonly string[]).includes(raw)) bad(`invalid sslmode "${raw}" (one of: ${SSL_MODES.join(', ')})`)
  const mode = raw as SslMode
  const negotiation = ci.get('sslnegotiation') ?? env.PGSSLNEGOTIATION
  if (negotiation !== undefined && negotiation !== 'postgres' && negotiation !== 'direct') bad(`invalid sslnegotiation "${negotiation}" (postgres or direct)`)
  if (negotiation === 'direct' && !['require', 'verify-ca', 'verify-full'].includes(mode)) bad(`sslnegotiation=direct requires sslmode require, verify-ca or verify-full (not ${mode})`)
  const host = ci.get('host') ?? ci.get('hostaddr') ?? env.PGHOST ?? 'localhost'
  if (mode === 'disable' || host.startsWith('/')) return {mode, attempts: [false]}
  const home = path.join(os.homedir(), '.postgresql')
  const file = (what: string, explicit: string | undefined, dflt: string): string | undefined => {
    if (explicit !== undefined && explicit !== '') {
      try {
        return readFileSync(explicit, 'utf8')
      } catch (e) {
        bad(`cannot read ${what} ${explicit}: ${(e as Error).message}`)
      }
    }
    const d = path.join(home, dflt)
    return existsSync(d) ? readFileSync(d, 'utf8') : undefined
  }
  const rootName = ci.get('sslrootcert') ?? env.PGSSLROOTCERT
  const system = rootName === 'system'
  if (system && mode !== 'verify-full') bad(`weak sslmode "${mode}" may not be used with sslrootcert=system (use "verify-full")`)
  const ca = system ? undefined : file('root certificate file (sslrootcert)', rootName, 'root.crt')
  const cert = file('client certificate (sslcert)', ci.get('sslcert') ?? env.PGSSLCERT, 'postgresql.crt')
  const key = cert !== undefined ? file('client key (sslkey)', ci.get('sslkey') ?? env.PGSSLKEY, 'postgresql.key') : undefined
  if (cert !== undefined && key === undefined) bad('a client certificate (sslcert) was found but no key: set sslkey')
  const verify = mode === 'verify-ca' || mode === 'verify-full' || (mode === 'require' && ca !== undefined)
  if (verify && ca === undefined && !system) {
    bad(
      `sslmode=${mode}: root certificate file "${rootName ?? path.join(home, 'root.crt')}" does not exist; provide it (sslrootcert), use the system's trusted roots with sslrootcert=system, or change sslmode to disable server certificate verification`,
    )
  }
  const version = (k: string): TlsOptions['minVersion'] => {
    const v = ci.get(k)
    if (v === undefined || v === '') return undefined
    if (!['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'].includes(v)) bad(`invalid ${k} "${v}"`)
    return v as TlsOptions['minVersion']
  }
  const tls: TlsOptions = {rejectUnauthorized: verify, minVersion: version('ssl_min_protocol_version') ?? 'TLSv1.2'}
  const maxV = version('ssl_max_protocol_version')
  if (maxV) tls.maxVersion = maxV
  if (ca !== undefined) tls.ca = ca
  if (cert !== undefined && ci.get('sslcertmode') !== 'disable') {
    tls.cert = cert
    tls.key = key
    if (ci.has('sslpassword')) tls.passphrase = ci.get('sslpassword')
  }
  const crl = ci.get('sslcrl')
  if (crl) tls.crl = file('certificate revocation list (sslcrl)', crl, 'root.crl')
  if (ci.get('sslsni') !== '0' && !/^[\d.]+$|:/.test(host)) tls.servername = host
  // verify-ca: the chain only; verify-full: also the host name (node's default check)
  if (mode !== 'verify-full') tls.checkServerIdentity = () => undefined
  switch (mode) {
    case 'allow':
      return {mode, attempts: [false, tls]}
    case 'prefer':
      return {mode, attempts: [tls, false]}
    default:
      return {mode, attempts: [tls]}
  }
}
