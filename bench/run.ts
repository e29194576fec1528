/**
 * mmlite benchmark (not run in CI). One run measures:
 *
 *  1. cold start: `node bin/run.js --version`, N times after warm-ups (median, p90), target ≤ 0.35 s,
 *     next to the floor it cannot beat: `node -e 0` and `node` + `import('@oclif/core')`.
 *  2. for 2..6 nodes (real local servers, PG 18 by default): `mmlite init --yes --json` wall time
 *     (with init's own per-step times), then `mmlite status --json` wall time (median of 7), and the
 *     same status collection in-process (dist/cluster/status.js, no process start) to split the
 *     status time into process start-up and querying. Target: status(6 nodes) ÷ status(2) ≤ 1.3.
 *  3. the machine, the PostgreSQL version and the git commit.
 *
 * Prints a report and writes bench/results/<timestamp>.json and bench/results/latest.md.
 *
 * Usage: npm run build && npm run bench [-- --pg 16] [-- --no-build] [-- --nodes 2,3,4,5,6]
 *   --no-build   do not run `npm run build` first (then dist/ must exist and not be older than src/)
 *   --runs N     cold-start samples (default 15)
 *   --status-runs N  status samples per cluster size (default 7)
 *
 * Every server is a LocalServer (src/local/server.ts): destroyed after its cluster size, and
 * stopAllStarted() in a finally (plus LocalServer's own exit/signal hooks) so nothing is left behind.
 */
import {spawn, spawnSync} from 'node:child_process'
import {existsSync, readdirSync, statSync} from 'node:fs'
import {mkdir, mkdtemp, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {performance} from 'node:perf_hooks'
import {fileURLToPath, pathToFileURL} from 'node:url'
import {parseArgs} from 'node:util'
import pg from 'pg'
import {LocalServer, stopAllStarted, type PgMajor} from '../src/local/server.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const RESULTS = path.join(ROOT, 'bench', 'results')
const CLI = path.join(ROOT, 'bin', 'run.js')

const VERSION_TARGET_S = 0.35
const RATIO_TARGET = 1.3
const WARMUPS = 2
const CLUSTER = 'bench'
const SEED_ROWS = 1000

// ------------------------------------------------------------------------------ options

const {values: args} = parseArgs({
  options: {
    pg: {type: 'string', default: '18'},
    'no-build': {type: 'boolean', default: false},
    nodes: {type: 'string', default: '2,3,4,5,6'},
    runs: {type: 'string', default: '15'},
    'status-runs': {type: 'string', default: '7'},
  },
  strict: true,
})
const MAJOR = Number(args.pg) as PgMajor
if (![14, 15, 16, 17, 18].includes(MAJOR)) throw new Error(`--pg ${args.pg}: expected 14, 15, 16, 17 or 18`)
const NODE_COUNTS = args.nodes!.split(',').map(Number)
if (NODE_COUNTS.some(n => !Number.isInteger(n) || n < 2 || n > 9)) throw new Error(`--nodes ${args.nodes}: expected a list of 2..9`)
const VERSION_RUNS = Number(args.runs)
const STATUS_RUNS = Number(args['status-runs'])

// ------------------------------------------------------------------------------ helpers

interface Proc {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  /** wall time from spawn() to 'close', seconds */
  s: number
}

function runProc(cmd: string, argv: string[], opts: {timeoutMs?: number; env?: NodeJS.ProcessEnv} = {}): Promise<Proc> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    const child = spawn(cmd, argv, {cwd: ROOT, env: {...process.env, CI: '1', ...opts.env}, stdio: ['ignore', 'pipe', 'pipe']})
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 300_000)
    child.on('error', e => {
      clearTimeout(timer)
      reject(e)
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({code, signal, stdout, stderr, s: (performance.now() - t0) / 1000})
    })
  })
}

const node = (argv: string[], opts?: {timeoutMs?: number}) => runProc(process.execPath, argv, opts)
const mmlite = (argv: string[], opts?: {timeoutMs?: number}) => node([CLI, ...argv], opts)

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b)
  // nearest-rank
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]
}
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
const r3 = (x: number) => Math.round(x * 1000) / 1000
const fmtS = (x: number) => `${x.toFixed(3)} s`
const passFail = (ok: boolean) => (ok ? 'PASS' : 'FAIL')

function log(line = ''): void {
  process.stdout.write(line + '\n')
}

/** Wall times of `times` runs after `warmups` discarded ones; throws if a run fails. */
async function sample(what: string, times: number, warmups: number, fn: () => Promise<Proc>, ok = (p: Proc) => p.code === 0): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < warmups + times; i++) {
    const p = await fn()
    if (!ok(p)) throw new Error(`${what} failed (exit ${p.code ?? p.signal}):\n${p.stdout}\n${p.stderr}`)
    if (i >= warmups) out.push(p.s)
  }
  return out
}

function git(...argv: string[]): string {
  const r = spawnSync('git', argv, {cwd: ROOT, encoding: 'utf8'})
  return r.status === 0 ? r.stdout.trim() : 'unknown'
}

function newestMtime(dir: string, ext: string): number {
  let newest = 0
  if (!existsSync(dir)) return newest
  for (const e of readdirSync(dir, {withFileTypes: true, recursive: true})) {
    if (!e.isFile() || !e.name.endsWith(ext)) continue
    newest = Math.max(newest, statSync(path.join(e.parentPath ?? (e as unknown as {path: string}).path, e.name)).mtimeMs)
  }
  return newest
}

/** Build (default) or check that dist/ is not older than src/. */
async function ensureBuilt(): Promise<string> {
  if (!args['no-build']) {
    log('$ npm run build')
    const r = await runProc('npm', ['run', 'build'], {timeoutMs: 600_000})
    if (r.code !== 0) throw new Error(`npm run build failed (exit ${r.code}):\n${r.stdout}\n${r.stderr}`)
    return 'built by the bench (npm run build)'
  }
  if (!existsSync(path.join(ROOT, 'dist', 'commands')) || !existsSync(path.join(ROOT, 'oclif.manifest.json'))) {
    throw new Error('dist/ or oclif.manifest.json is missing: run `npm run build` first (or drop --no-build)')
  }
  const src = newestMtime(path.join(ROOT, 'src'), '.ts')
  const dist = Math.min(newestMtime(path.join(ROOT, 'dist'), '.js'), statSync(path.join(ROOT, 'oclif.manifest.json')).mtimeMs)
  if (src > dist) throw new Error('dist/ is older than src/: run `npm run build` first (or drop --no-build)')
  return 'existing dist/ (--no-build), not older than src/'
}

// ------------------------------------------------------------------------------ 1. cold start

interface ColdStart {
  runs: number
  warmups: number
  version: string
  mmliteVersion: {median: number; p90: number; min: number; max: number; samples: number[]}
  /** `node -e 0`: the floor of any Node CLI */
  nodeBaseline: {median: number; p90: number}
  /** `node` + `await import('@oclif/core')`: the floor of any oclif CLI */
  oclifImport: {median: number; p90: number}
  /** `node` + import of @oclif/core and dist/commands/status.js (what `mmlite status` loads before querying) */
  statusImport: {median: number; p90: number}
  target: number
  pass: boolean
}

async function coldStart(): Promise<ColdStart> {
  const v = await mmlite(['--version'])
  const samples = await sample('mmlite --version', VERSION_RUNS, WARMUPS, () => mmlite(['--version']))
  const base = await sample('node -e 0', VERSION_RUNS, WARMUPS, () => node(['-e', '0']))
  const oclif = await sample('import @oclif/core', VERSION_RUNS, WARMUPS, () =>
    node(['--input-type=module', '-e', "await import('@oclif/core')"]),
  )
  const statusMods = await sample('import status command', VERSION_RUNS, WARMUPS, () =>
    node(['--input-type=module', '-e', "await import('@oclif/core'); await import('./dist/commands/status.js')"]),
  )
  const med = median(samples)
  const p90 = quantile(samples, 0.9)
  return {
    runs: VERSION_RUNS,
    warmups: WARMUPS,
    version: v.stdout.trim(),
    mmliteVersion: {median: r3(med), p90: r3(p90), min: r3(Math.min(...samples)), max: r3(Math.max(...samples)), samples: samples.map(r3)},
    nodeBaseline: {median: r3(median(base)), p90: r3(quantile(base, 0.9))},
    oclifImport: {median: r3(median(oclif)), p90: r3(quantile(oclif, 0.9))},
    statusImport: {median: r3(median(statusMods)), p90: r3(quantile(statusMods, 0.9))},
    target: VERSION_TARGET_S,
    // both the typical and the slow-tail run must be within the target
    pass: med <= VERSION_TARGET_S && p90 <= VERSION_TARGET_S,
  }
}

// ------------------------------------------------------------------------------ 2. clusters

const SCHEMA = `
CREATE TABLE public.departments (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE public.users (id bigint PRIMARY KEY, dept int, name text, updated_by text);
`

async function sql(s: LocalServer, q: string): Promise<pg.QueryResultRow[]> {
  const c = new pg.Client({connectionString: s.dsn()})
  await c.connect()
  try {
    return (await c.query(q)).rows
  } finally {
    await c.end()
  }
}

interface ClusterRun {
  nodes: number
  links: number
  /** LocalServer.start of all nodes (parallel), seconds */
  serversStartS: number
  initS: number
  /** init's own report: ms per step */
  initSteps: Array<{id: string; ms: number}>
  statusSamples: number[]
  statusMedianS: number
  statusHealth: string
  /** collectStatus() in this process (compiled dist/), median of the same number of runs, seconds */
  statusInProcessMedianS: number
}

let pgVersion = 'unknown'

async function benchCluster(n: number): Promise<ClusterRun> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `mmlite-bench-${n}-`))
  let servers: LocalServer[] = []
  try {
    const t0 = performance.now()
    const settled = await Promise.allSettled(
      Array.from({length: n}, (_, i) =>
        LocalServer.start({major: MAJOR, name: `node${i + 1}`, settings: {wal_retrieve_retry_interval: '200ms'}}),
      ),
    )
    servers = settled.flatMap(r => (r.status === 'fulfilled' ? [r.value] : []))
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed) throw failed.reason
    const serversStartS = (performance.now() - t0) / 1000
    if (MAJOR === 15) for (const s of servers) await allowPlugin(s)
    if (pgVersion === 'unknown') pgVersion = String((await sql(servers[0], 'SELECT version() AS v'))[0].v)

    await Promise.all(servers.map(s => sql(s, SCHEMA)))
    await sql(
      servers[0],
      `INSERT INTO public.users (id, dept, name, updated_by)
       SELECT g, g % 10, 'user ' || g, 'node1' FROM generate_series(1, ${SEED_ROWS}) g`,
    )

    const file = path.join(dir, 'mmlite.yaml')
    const yaml = [
      `cluster: ${CLUSTER}`,
      'tables:',
      '  - public.departments',
      '  - public.users',
      'nodes:',
      ...servers.flatMap((s, i) => [`  - name: node${i + 1}`, `    dsn: ${s.dsn()}`]),
    ]
    await writeFile(file, yaml.join('\n') + '\n')

    const init = await mmlite(['init', '-c', file, '--yes', '--json'], {timeoutMs: 600_000})
    let initJson: {links?: unknown[]; steps?: Array<{id: string; ms: number}>}
    try {
      initJson = JSON.parse(init.stdout)
    } catch {
      throw new Error(`init (${n} nodes) did not print JSON (exit ${init.code}):\n${init.stdout}\n${init.stderr}`)
    }
    if (init.code !== 0) throw new Error(`init (${n} nodes) failed (exit ${init.code}):\n${init.stdout}\n${init.stderr}`)
    const links = initJson.links?.length ?? 0
    if (links !== n * (n - 1)) throw new Error(`init (${n} nodes) reported ${links} links, expected ${n * (n - 1)}`)
    // the copy really arrived everywhere
    for (const s of servers) {
      const c = Number((await sql(s, 'SELECT count(*) AS c FROM public.users'))[0].c)
      if (c !== SEED_ROWS) throw new Error(`after init, ${s.name} holds ${c} users, expected ${SEED_ROWS}`)
    }

    let health = 'unknown'
    const statusSamples = await sample(`status (${n} nodes)`, STATUS_RUNS, 1, () => mmlite(['status', '-c', file, '--json']), p => {
      try {
        health = (JSON.parse(p.stdout) as {health: string}).health
      } catch {
        return false
      }
      return health === 'ok' || health === 'warning' // exit 0 / 1: every node answered
    })

    const inProc = await statusInProcess(file, STATUS_RUNS)

    return {
      nodes: n,
      links,
      serversStartS: r3(serversStartS),
      initS: r3(init.s),
      initSteps: (initJson.steps ?? []).map(s => ({id: s.id, ms: s.ms})),
      statusSamples: statusSamples.map(r3),
      statusMedianS: r3(median(statusSamples)),
      statusHealth: health,
      statusInProcessMedianS: r3(median(inProc)),
    }
  } finally {
    await Promise.allSettled(servers.map(s => s.destroy()))
    await rm(dir, {recursive: true, force: true})
  }
}

/** PostgreSQL 15 minors with output_plugin_libraries only load listed plugins (see test/helpers). */
async function allowPlugin(s: LocalServer): Promise<void> {
  const row = (await sql(s, "SELECT setting FROM pg_settings WHERE name = 'output_plugin_libraries'"))[0]
  if (!row) return
  const libs = String(row.setting).split(',').map(x => x.trim()).filter(Boolean)
  if (libs.includes('mmlite')) return
  await sql(s, `ALTER SYSTEM SET output_plugin_libraries = ${[...libs, 'mmlite'].map(l => `'${l}'`).join(', ')}`)
  await sql(s, 'SELECT pg_reload_conf()')
}

/** The status collection without the process start: the compiled collectStatus in this process. */
async function statusInProcess(file: string, times: number): Promise<number[]> {
  const {loadConfig} = (await import(pathToFileURL(path.join(ROOT, 'dist/config/config.js')).href)) as {
    loadConfig(f: string): {health: {lagWarningBytes: number; lagWarningSeconds: number}}
  }
  const {collectStatus} = (await import(pathToFileURL(path.join(ROOT, 'dist/cluster/status.js')).href)) as {
    collectStatus(cfg: unknown, o: {timeoutMs: number; thresholds: unknown}): Promise<{health: string}>
  }
  const out: number[] = []
  for (let i = 0; i < times + 1; i++) {
    const t0 = performance.now()
    const cfg = loadConfig(file)
    const r = await collectStatus(cfg, {timeoutMs: 5000, thresholds: cfg.health})
    const s = (performance.now() - t0) / 1000
    if (r.health !== 'ok' && r.health !== 'warning') throw new Error(`in-process status: health ${r.health}`)
    if (i > 0) out.push(s)
  }
  return out
}

// ------------------------------------------------------------------------------ report

interface Results {
  date: string
  commit: string
  dirty: boolean
  build: string
  machine: {cpuModel: string; cpus: number; memoryGiB: number; os: string; node: string; postgres: string}
  /** 1-minute load average at start and end: other work on the machine makes the numbers noisy */
  loadavg: {start: number; end: number}
  pgMajor: number
  coldStart: ColdStart
  clusters: ClusterRun[]
  statusRatio: {from: number; to: number; ratio: number | null; target: number; pass: boolean | null}
  inProcessStatusRatio: number | null
  totalS: number
}

function markdown(r: Results): string {
  const c = r.coldStart
  const L: string[] = []
  L.push(`# mmlite benchmark — ${r.date}`)
  L.push('')
  L.push(`- commit \`${r.commit}\`${r.dirty ? ' (with uncommitted changes)' : ''}; ${r.build}`)
  L.push(`- machine: ${r.machine.cpus} × ${r.machine.cpuModel}, ${r.machine.memoryGiB} GiB, ${r.machine.os}, Node ${r.machine.node}`)
  L.push(`- PostgreSQL: ${r.machine.postgres}`)
  L.push(`- 1-min load average: ${r.loadavg.start} at start, ${r.loadavg.end} at end`)
  L.push('')
  L.push(`## Cold start (\`mmlite --version\`, ${c.runs} runs after ${c.warmups} warm-ups)`)
  L.push('')
  L.push('| what | median | p90 |')
  L.push('|---|---:|---:|')
  L.push(`| \`mmlite --version\` | ${fmtS(c.mmliteVersion.median)} | ${fmtS(c.mmliteVersion.p90)} |`)
  L.push(`| \`node -e 0\` (Node floor) | ${fmtS(c.nodeBaseline.median)} | ${fmtS(c.nodeBaseline.p90)} |`)
  L.push(`| \`node\` + \`import('@oclif/core')\` (oclif floor) | ${fmtS(c.oclifImport.median)} | ${fmtS(c.oclifImport.p90)} |`)
  L.push(`| \`node\` + oclif + \`dist/commands/status.js\` (what \`status\` loads) | ${fmtS(c.statusImport.median)} | ${fmtS(c.statusImport.p90)} |`)
  L.push('')
  L.push(`Target median and p90 ≤ ${c.target} s: **${passFail(c.pass)}**`)
  L.push('')
  L.push(`## Clusters (PostgreSQL ${r.pgMajor}, cluster \`${CLUSTER}\`, ${SEED_ROWS} seed rows on node1)`)
  L.push('')
  L.push('| nodes | links | servers start | `init` | `status` median | status in-process | init steps (ms) |')
  L.push('|---:|---:|---:|---:|---:|---:|---|')
  for (const k of r.clusters) {
    const steps = k.initSteps.map(s => `${s.id} ${s.ms}`).join(', ')
    L.push(
      `| ${k.nodes} | ${k.links} | ${fmtS(k.serversStartS)} | ${fmtS(k.initS)} | ${fmtS(k.statusMedianS)} | ${fmtS(k.statusInProcessMedianS)} | ${steps} |`,
    )
  }
  L.push('')
  const sr = r.statusRatio
  L.push(
    sr.ratio === null
      ? `status ratio: not measured (needs ${sr.from} and ${sr.to} nodes)`
      : `status(${sr.to} nodes) ÷ status(${sr.from} nodes) = **${sr.ratio.toFixed(2)}** (target ≤ ${sr.target}): **${passFail(sr.pass!)}**` +
          (r.inProcessStatusRatio === null ? '' : `; in-process collection alone: ${r.inProcessStatusRatio.toFixed(2)}`),
  )
  L.push('')
  L.push(`Total bench time ${r.totalS.toFixed(0)} s.`)
  return L.join('\n') + '\n'
}

// ------------------------------------------------------------------------------ main

async function main(): Promise<void> {
  const t0 = performance.now()
  const date = new Date()
  const build = await ensureBuilt()

  const results: Results = {
    date: date.toISOString(),
    commit: git('rev-parse', '--short', 'HEAD'),
    dirty: git('status', '--porcelain', '--untracked-files=no') !== '',
    build,
    machine: {
      cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
      cpus: os.cpus().length,
      memoryGiB: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
      os: `${os.type()} ${os.release()} ${os.arch()}`,
      node: process.version,
      postgres: 'unknown',
    },
    loadavg: {start: Math.round(os.loadavg()[0] * 100) / 100, end: 0},
    pgMajor: MAJOR,
    coldStart: undefined as unknown as ColdStart,
    clusters: [],
    statusRatio: {from: 2, to: 6, ratio: null, target: RATIO_TARGET, pass: null},
    inProcessStatusRatio: null,
    totalS: 0,
  }

  log(`== cold start: mmlite --version × ${VERSION_RUNS} (after ${WARMUPS} warm-ups)`)
  results.coldStart = await coldStart()
  const c = results.coldStart
  log(`   mmlite --version   median ${fmtS(c.mmliteVersion.median)}  p90 ${fmtS(c.mmliteVersion.p90)}  (target ≤ ${VERSION_TARGET_S} s) ${passFail(c.pass)}`)
  log(`   node -e 0          median ${fmtS(c.nodeBaseline.median)}  p90 ${fmtS(c.nodeBaseline.p90)}`)
  log(`   import oclif/core  median ${fmtS(c.oclifImport.median)}  p90 ${fmtS(c.oclifImport.p90)}`)
  log(`   + status command   median ${fmtS(c.statusImport.median)}  p90 ${fmtS(c.statusImport.p90)}`)

  try {
    for (const n of NODE_COUNTS) {
      log(`== ${n} nodes (PostgreSQL ${MAJOR})`)
      const k = await benchCluster(n)
      results.clusters.push(k)
      log(
        `   servers ${fmtS(k.serversStartS)}  init ${fmtS(k.initS)}  status median ${fmtS(k.statusMedianS)} (${k.statusHealth})  ` +
          `in-process ${fmtS(k.statusInProcessMedianS)}`,
      )
      log(`   init steps: ${k.initSteps.map(s => `${s.id} ${s.ms} ms`).join(', ')}`)
    }
  } finally {
    await stopAllStarted()
  }
  results.machine.postgres = pgVersion

  const lo = results.clusters.find(k => k.nodes === 2)
  const hi = results.clusters.find(k => k.nodes === 6)
  if (lo && hi) {
    const ratio = hi.statusMedianS / lo.statusMedianS
    results.statusRatio = {from: 2, to: 6, ratio: Math.round(ratio * 100) / 100, target: RATIO_TARGET, pass: ratio <= RATIO_TARGET}
    results.inProcessStatusRatio = Math.round((hi.statusInProcessMedianS / lo.statusInProcessMedianS) * 100) / 100
  }
  results.loadavg.end = Math.round(os.loadavg()[0] * 100) / 100
  results.totalS = Math.round((performance.now() - t0) / 100) / 10

  const md = markdown(results)
  await mkdir(RESULTS, {recursive: true})
  const stamp = results.date.replace(/:/g, '-').replace(/\.\d+Z$/, 'Z')
  await writeFile(path.join(RESULTS, `${stamp}.json`), JSON.stringify(results, null, 2) + '\n')
  await writeFile(path.join(RESULTS, 'latest.md'), md)
  log('')
  log(md)
  log(`wrote bench/results/${stamp}.json and bench/results/latest.md`)
  const failed = !c.pass || results.statusRatio.pass === false
  if (failed) process.exitCode = 1
}

main().catch(async e => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`)
  await stopAllStarted().catch(() => {})
  process.exitCode = 2
})
