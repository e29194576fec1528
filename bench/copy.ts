/**
 * Benchmark of the add-node copy (issue #11), not run in CI. One run, same source, same data:
 *
 *   native   CREATE SUBSCRIPTION … (copy_data = true) on an empty node Y until every table is
 *            ready (pg_subscription_rel srsubstate = 'r'): PostgreSQL's own tablesync.
 *   pipes    plain serial `COPY t TO STDOUT (FORMAT binary) | COPY t FROM STDIN (FORMAT binary)`
 *            per table in this process (no snapshot, no join): the floor of a streamed copy.
 *   mmlite   `mmlite add-node X --strategy copy --yes --json`, the whole join (process start,
 *            slots, pause, copy, subscriptions, catch-up), wall time of the process.
 *
 * Data: 4 tables of ~MB/4 each shape (primary keys, one secondary index on the two big ones),
 * generated identically on node1 and node2 (cluster made with `init --no-copy`); X, Y and the
 * pipes target are empty servers with the same schema. The goal: native ÷ mmlite ≥ 1.2.
 *
 * Usage: npm run build && node --import tsx/esm bench/copy.ts [--pg 18] [--mb 400] [--jobs 4] [--order native,pipes,mmlite]
 * Prints a report and writes bench/results/copy-<timestamp>.json. Every server is stopped at the end.
 */
import {spawn, spawnSync} from 'node:child_process'
import {mkdtemp, mkdir, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {performance} from 'node:perf_hooks'
import {pipeline} from 'node:stream/promises'
import {fileURLToPath} from 'node:url'
import {parseArgs} from 'node:util'
import pg from 'pg'
import {to as copyTo, from as copyFrom} from 'pg-copy-streams'
import {LocalServer, stopAllStarted, type PgMajor} from '../src/local/server.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const RESULTS = path.join(ROOT, 'bench', 'results')
const CLI = path.join(ROOT, 'bin', 'run.js')

const {values: args} = parseArgs({
  options: {
    pg: {type: 'string', default: '18'},
    mb: {type: 'string', default: '400'},
    jobs: {type: 'string', default: '4'},
    order: {type: 'string', default: 'native,pipes,mmlite'},
  },
  strict: true,
})
const MAJOR = Number(args.pg) as PgMajor
const MB = Number(args.mb)
const ORDER = args.order!.split(',')

// ~100 bytes per row in orders, ~180 in events, ~120 in items (heap size per row incl. header)
const ORDERS = Math.round((MB * 0.45 * 1e6) / 110)
const EVENTS = Math.round((MB * 0.35 * 1e6) / 190)
const ITEMS = Math.round((MB * 0.19 * 1e6) / 130)
const TAGS = 20_000

const SCHEMA = `
CREATE TABLE public.orders (id bigint PRIMARY KEY, customer int NOT NULL, amount numeric(12,2), created timestamptz, note text);
CREATE INDEX orders_customer ON public.orders (customer);
CREATE TABLE public.events (id bigint PRIMARY KEY, kind int, at timestamptz, payload jsonb);
CREATE INDEX events_at ON public.events (at);
CREATE TABLE public.items (id int PRIMARY KEY, name text, price float8, tags text[]);
CREATE TABLE public.tags (id int PRIMARY KEY, label text NOT NULL);
`
const TABLES = ['public.orders', 'public.events', 'public.items', 'public.tags']

const DATA = `
INSERT INTO public.orders SELECT g, (g::bigint * 7919 % 100000)::int, (g % 100000) / 100.0, '2024-01-01'::timestamptz + g * interval '1 s', 'order note ' || md5(g::text) FROM generate_series(1, ${ORDERS}) g;
INSERT INTO public.events SELECT g, g % 17, '2024-01-01'::timestamptz + (g::bigint * 104729 % 10000000) * interval '1 s', jsonb_build_object('user', g % 5000, 'page', '/p/' || (g % 997), 'ref', md5(g::text), 'ms', g % 1000) FROM generate_series(1, ${EVENTS}) g;
INSERT INTO public.items SELECT g, 'item ' || g || ' ' || md5(g::text), g * 1.07, ARRAY['t' || g % 10, 't' || g % 13, 'tag ' || g % 101] FROM generate_series(1, ${ITEMS}) g;
INSERT INTO public.tags SELECT g, 'label ' || g FROM generate_series(1, ${TAGS}) g;
`

function log(line = ''): void {
  process.stdout.write(line + '\n')
}

async function sql<T extends pg.QueryResultRow = pg.QueryResultRow>(s: LocalServer, q: string): Promise<T[]> {
  const c = new pg.Client({connectionString: s.dsn()})
  c.on('error', e => log(`${s.name}: ${e.message}`))
  await c.connect()
  try {
    return (await c.query<T>(q)).rows
  } finally {
    await c.end()
  }
}

function run(cmd: string, argv: string[], timeoutMs = 3_600_000): Promise<{code: number | null; stdout: string; stderr: string; s: number}> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    const child = spawn(cmd, argv, {cwd: ROOT, env: {...process.env, CI: '1'}, stdio: ['ignore', 'pipe', 'pipe']})
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('error', reject)
    child.on('close', code => {
      clearTimeout(timer)
      resolve({code, stdout, stderr, s: (performance.now() - t0) / 1000})
    })
  })
}

async function waitFor(cond: () => Promise<boolean>, what: string, timeoutMs = 3_600_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`)
    await new Promise(r => setTimeout(r, 100))
  }
}

const load = () => os.loadavg()[0].toFixed(2)

async function digest(s: LocalServer): Promise<string> {
  const parts: string[] = []
  for (const t of TABLES) parts.push(String((await sql<{d: string}>(s, `SELECT count(*) || ':' || md5(string_agg(md5(x::text), '' ORDER BY id)) AS d FROM ${t} x`))[0].d))
  return parts.join(' ')
}

async function main(): Promise<void> {
  const startLoad = load()
  log(`mmlite copy bench: PostgreSQL ${MAJOR}, ~${MB} MB in 4 tables (${ORDERS} orders, ${EVENTS} events, ${ITEMS} items, ${TAGS} tags), jobs ${args.jobs}, load ${startLoad}`)
  const names = ['node1', 'node2', 'xmm', 'ynative', 'zpipes']
  const settings = {wal_retrieve_retry_interval: '200ms', max_wal_size: '4GB', checkpoint_timeout: '30min'}
  const [n1, n2, x, y, z] = await Promise.all(names.map(name => LocalServer.start({major: MAJOR, name, settings})))
  try {
    log('servers started')
    await Promise.all([n1, n2, x, y, z].map(s => sql(s, SCHEMA)))
    let t0 = performance.now()
    await Promise.all([n1, n2].map(async s => {
      await sql(s, DATA)
      await sql(s, 'VACUUM ANALYZE')
    }))
    const genS = (performance.now() - t0) / 1000
    const size = Number((await sql<{b: string}>(n1, `SELECT sum(pg_table_size(t::regclass))::text AS b FROM unnest(ARRAY['${TABLES.join("','")}']) t`))[0].b)
    log(`data generated on node1 and node2 in ${genS.toFixed(1)} s: ${(size / 2 ** 20).toFixed(0)} MB of tables (without indexes)`)
    await sql(n1, `CHECKPOINT`)

    const dir = await mkdtemp(path.join(os.tmpdir(), 'mmlite-bench-copy-'))
    const cfg = path.join(dir, 'mmlite.yaml')
    await writeFile(cfg, ['cluster: bench', 'tables:', ...TABLES.map(t => `  - ${t}`), 'nodes:', `  - name: node1`, `    dsn: ${n1.dsn()}`, `  - name: node2`, `    dsn: ${n2.dsn()}`].join('\n') + '\n')
    const init = await run(process.execPath, [CLI, 'init', '-c', cfg, '--no-copy', '--yes'])
    if (init.code !== 0) throw new Error(`init failed: ${init.stdout}\n${init.stderr}`)
    const expected = await digest(n1)

    const results: Record<string, number> = {}
    const details: Record<string, unknown> = {}
    for (const what of ORDER) {
      await sql(n1, 'CHECKPOINT')
      const l0 = load()
      if (what === 'native') {
        await sql(n1, `CREATE PUBLICATION bench_native FOR TABLE ${TABLES.join(', ')}`)
        t0 = performance.now()
        await sql(y, `CREATE SUBSCRIPTION bench_native CONNECTION '${n1.dsn().replace(/'/g, "''")}' PUBLICATION bench_native WITH (copy_data = true)`)
        await waitFor(async () => {
          const r = await sql<{n: number; ready: number}>(y, "SELECT count(*)::int AS n, count(*) FILTER (WHERE srsubstate = 'r')::int AS ready FROM pg_subscription_rel")
          return r[0].n === TABLES.length && r[0].ready === TABLES.length
        }, 'native tablesync')
        results.native = (performance.now() - t0) / 1000
        if ((await digest(y)) !== expected) throw new Error('native copy differs from the source')
      } else if (what === 'pipes') {
        t0 = performance.now()
        const a = new pg.Client({connectionString: n1.dsn()})
        const b = new pg.Client({connectionString: z.dsn()})
        await a.connect()
        await b.connect()
        for (const t of TABLES) await pipeline(a.query(copyTo(`COPY ${t} TO STDOUT (FORMAT binary)`)), b.query(copyFrom(`COPY ${t} FROM STDIN (FORMAT binary)`)))
        await a.end()
        await b.end()
        results.pipes = (performance.now() - t0) / 1000
        if ((await digest(z)) !== expected) throw new Error('pipes copy differs from the source')
      } else if (what === 'mmlite') {
        const r = await run(process.execPath, [CLI, 'add-node', 'xmm', '--dsn', x.dsn(), '-c', cfg, '--yes', '--json', '--jobs', String(args.jobs)])
        if (r.code !== 0) throw new Error(`add-node failed: ${r.stdout}\n${r.stderr}`)
        results.mmlite = r.s
        const j = JSON.parse(r.stdout) as {steps: Array<{id: string; ms: number}>; copy: {tables: unknown}}
        details.mmliteSteps = j.steps.map(s => ({id: s.id, ms: s.ms}))
        details.mmliteTables = j.copy.tables
        if ((await digest(x)) !== expected) throw new Error('mmlite copy differs from the source')
      } else throw new Error(`--order: unknown ${what}`)
      log(`${what}: ${results[what].toFixed(2)} s (load ${l0} → ${load()})`)
    }
    const ratio = results.native !== undefined && results.mmlite !== undefined ? results.native / results.mmlite : undefined
    const cpu = os.cpus()
    const out = {
      at: new Date().toISOString(),
      commit: spawnSync('git', ['rev-parse', '--short', 'HEAD'], {cwd: ROOT, encoding: 'utf8'}).stdout.trim(),
      dirty: spawnSync('git', ['status', '--porcelain'], {cwd: ROOT, encoding: 'utf8'}).stdout.trim() !== '',
      machine: `${cpu.length} × ${cpu[0]?.model ?? '?'}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, ${os.platform()} ${os.release()}, Node ${process.version}`,
      pg: (await sql<{v: string}>(n1, 'SELECT version() AS v'))[0].v,
      load: {start: startLoad, end: load()},
      mb: MB,
      tableBytes: size,
      rows: {orders: ORDERS, events: EVENTS, items: ITEMS, tags: TAGS},
      jobs: Number(args.jobs),
      order: ORDER,
      seconds: results,
      nativeOverMmlite: ratio,
      goal: 1.2,
      pass: ratio !== undefined && ratio >= 1.2,
      details,
    }
    log()
    log(`native ÷ mmlite = ${ratio?.toFixed(2) ?? '-'} (goal ≥ 1.2: ${out.pass ? 'PASS' : 'FAIL'}); pipes ${results.pipes?.toFixed(2) ?? '-'} s`)
    log(JSON.stringify(details))
    await mkdir(RESULTS, {recursive: true})
    await writeFile(path.join(RESULTS, `copy-${out.at.replace(/[:.]/g, '-')}.json`), JSON.stringify(out, null, 1) + '\n')
    process.exitCode = out.pass ? 0 : 1
  } finally {
    await stopAllStarted()
  }
}

main().catch(async e => {
  console.error(e)
  await stopAllStarted()
  process.exit(2)
})
