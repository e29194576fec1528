/**
 * The other figures of issue #11 (not run in CI), each a ratio measured within one run:
 *
 *   --part standby  PostgreSQL 18, cluster node1+node2 holding ~MB of data: `add-node --strategy
 *                   standby` of a physical standby of node1 (made beforehand, as the operator
 *                   does; its making is reported too) ÷ `add-node --strategy copy` of an empty
 *                   node. Goal ≤ 0.5.
 *   --part plugin   PostgreSQL 15: node1 publishes to node2 through the mmlite plugin (an mmlite
 *                   cluster) and to node3 through plain pgoutput (CREATE SUBSCRIPTION). Both
 *                   subscriptions disabled, the same write load (ROWS rows inserted in
 *                   transactions of 1000, then updated) runs on node1; then each subscription
 *                   alone is enabled and timed until its slot has confirmed node1's WAL end.
 *                   mmlite ÷ pgoutput, goal ≤ 1.05.
 *   --part init     PostgreSQL 18: `mmlite init` of a cluster whose seed holds ~MB (one empty
 *                   node) ÷ native tablesync of the same tables into another empty node.
 *
 * Usage: npm run build && node --import tsx/esm bench/figures.ts --part standby|plugin|init [--mb 1000] [--rows 1000000]
 * Prints one JSON line per part and appends it to bench/results/figures-<timestamp>.json.
 */
import {spawn} from 'node:child_process'
import {mkdtemp, mkdir, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {performance} from 'node:perf_hooks'
import {fileURLToPath} from 'node:url'
import {parseArgs} from 'node:util'
import pg from 'pg'
import {LocalServer, stopAllStarted, type PgMajor} from '../src/local/server.js'
import {createStandby} from '../test/helpers/standby.js'
import {allowPlugin} from '../test/helpers/cluster.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const CLI = path.join(ROOT, 'bin', 'run.js')
const {values: args} = parseArgs({
  options: {part: {type: 'string'}, mb: {type: 'string', default: '1000'}, rows: {type: 'string', default: '1000000'}},
  strict: true,
})
const MB = Number(args.mb)
const ROWS = Number(args.rows)
const TABLES = ['public.orders', 'public.events']
const SCHEMA = `
CREATE TABLE public.orders (id bigint PRIMARY KEY, customer int NOT NULL, amount numeric(12,2), created timestamptz, note text);
CREATE INDEX orders_customer ON public.orders (customer);
CREATE TABLE public.events (id bigint PRIMARY KEY, kind int, at timestamptz, payload jsonb);
`
const data = (mb: number) => `
INSERT INTO public.orders SELECT g, (g::bigint * 7919 % 100000)::int, (g % 100000) / 100.0, '2024-01-01'::timestamptz + g * interval '1 s', 'order note ' || md5(g::text) FROM generate_series(1, ${Math.round((mb * 0.55 * 1e6) / 110)}) g;
INSERT INTO public.events SELECT g, g % 17, '2024-01-01'::timestamptz + g * interval '1 s', jsonb_build_object('user', g % 5000, 'ref', md5(g::text)) FROM generate_series(1, ${Math.round((mb * 0.45 * 1e6) / 150)}) g;
`
const SETTINGS = {wal_retrieve_retry_interval: '200ms', max_wal_size: '4GB', checkpoint_timeout: '30min'}

const log = (l = '') => process.stdout.write(l + '\n')
const load = () => os.loadavg()[0].toFixed(2)

async function sql<T extends pg.QueryResultRow = pg.QueryResultRow>(s: LocalServer, q: string): Promise<T[]> {
  const c = new pg.Client({connectionString: s.dsn()})
  c.on('error', () => {})
  await c.connect()
  try {
    return (await c.query<T>(q)).rows
  } finally {
    await c.end()
  }
}

function cli(argv: string[]): Promise<{code: number | null; out: string; s: number}> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    const child = spawn(process.execPath, [CLI, ...argv], {cwd: ROOT, env: {...process.env, CI: '1'}, stdio: ['ignore', 'pipe', 'pipe']})
    let out = ''
    child.stdout.on('data', d => (out += d))
    child.stderr.on('data', d => (out += d))
    child.on('error', reject)
    child.on('close', code => resolve({code, out, s: (performance.now() - t0) / 1000}))
  })
}

async function waitFor(cond: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 3_600_000
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`)
    await new Promise(r => setTimeout(r, 100))
  }
}

async function config(dir: string, nodes: Array<[string, LocalServer]>): Promise<string> {
  const f = path.join(dir, 'mmlite.yaml')
  await writeFile(f, ['cluster: bench', 'tables:', ...TABLES.map(t => `  - ${t}`), 'nodes:', ...nodes.flatMap(([n, s]) => [`  - name: ${n}`, `    dsn: ${s.dsn()}`])].join('\n') + '\n')
  return f
}

async function must(p: Promise<{code: number | null; out: string; s: number}>, what: string): Promise<number> {
  const r = await p
  if (r.code !== 0) throw new Error(`${what} failed:\n${r.out}`)
  return r.s
}

async function partStandby(): Promise<Record<string, unknown>> {
  const [n1, n2, xc] = await Promise.all(['node1', 'node2', 'xcopy'].map(name => LocalServer.start({major: 18 as PgMajor, name, settings: SETTINGS})))
  await Promise.all([n1, n2, xc].map(s => sql(s, SCHEMA)))
  await Promise.all([n1, n2].map(s => sql(s, data(MB))))
  const dir = await mkdtemp(path.join(os.tmpdir(), 'mmlite-bench-fig-'))
  const cfg = await config(dir, [['node1', n1], ['node2', n2]])
  await must(cli(['init', '-c', cfg, '--no-copy', '--yes']), 'init')
  let t0 = performance.now()
  const standby = await createStandby(n1, {name: 'xstandby', slot: null})
  const makeStandbyS = (performance.now() - t0) / 1000
  const l0 = load()
  const standbyS = await must(cli(['add-node', 'xstandby', '--dsn', standby.dsn(), '-c', cfg, '--strategy', 'standby', '--source', 'node1', '--yes']), 'add-node standby')
  const copyS = await must(cli(['add-node', 'xcopy', '--dsn', xc.dsn(), '-c', cfg, '--strategy', 'copy', '--source', 'node1', '--yes']), 'add-node copy')
  return {part: 'standby', mb: MB, makeStandbyS, standbyS, copyS, ratio: standbyS / copyS, goal: '≤ 0.5', pass: standbyS / copyS <= 0.5, load: [l0, load()]}
}

async function partPlugin(): Promise<Record<string, unknown>> {
  const [n1, n2, n3] = await Promise.all(['node1', 'node2', 'node3'].map(name => LocalServer.start({major: 15 as PgMajor, name, settings: SETTINGS})))
  await Promise.all([n1, n2, n3].map(allowPlugin))
  await Promise.all([n1, n2, n3].map(s => sql(s, SCHEMA)))
  const dir = await mkdtemp(path.join(os.tmpdir(), 'mmlite-bench-fig-'))
  const cfg = await config(dir, [['node1', n1], ['node2', n2]])
  await must(cli(['init', '-c', cfg, '--yes']), 'init')
  await sql(n1, `CREATE PUBLICATION plain FOR TABLE ${TABLES.join(', ')}`)
  await sql(n3, `CREATE SUBSCRIPTION plain CONNECTION '${n1.dsn()}' PUBLICATION plain WITH (copy_data = false)`)
  const mm = (await sql<{subname: string}>(n2, "SELECT subname FROM pg_subscription WHERE subname LIKE 'bench%'"))[0].subname
  const slotOf = async (s: LocalServer, sub: string) => (await sql<{s: string}>(s, `SELECT subslotname AS s FROM pg_subscription WHERE subname = '${sub}'`))[0].s
  const mmSlot = await slotOf(n2, mm)
  const plainSlot = await slotOf(n3, 'plain')
  await sql(n2, `ALTER SUBSCRIPTION ${mm} DISABLE`)
  await sql(n3, 'ALTER SUBSCRIPTION plain DISABLE')
  await waitFor(async () => (await sql<{n: number}>(n1, `SELECT count(*)::int AS n FROM pg_replication_slots WHERE active AND slot_name IN ('${mmSlot}', '${plainSlot}')`))[0].n === 0, 'slots released')
  // the write load: ROWS inserts in transactions of 1000, then every 10th row updated
  const c = new pg.Client({connectionString: n1.dsn()})
  await c.connect()
  for (let i = 0; i < ROWS; i += 1000) await c.query(`INSERT INTO public.orders SELECT g, g % 1000, g / 100.0, now(), 'n' || g FROM generate_series(${i + 1}, ${Math.min(ROWS, i + 1000)}) g`)
  for (let i = 0; i < ROWS; i += 10_000) await c.query(`UPDATE public.orders SET amount = amount + 1 WHERE id > ${i} AND id <= ${i + 10_000} AND id % 10 = 0`)
  const end = (await c.query<{l: string}>('SELECT pg_current_wal_lsn()::text AS l')).rows[0].l
  await c.end()
  const timeApply = async (sub: LocalServer, name: string, slot: string) => {
    const t0 = performance.now()
    await sql(sub, `ALTER SUBSCRIPTION ${name} ENABLE`)
    await waitFor(async () => (await sql<{ok: boolean}>(n1, `SELECT confirmed_flush_lsn >= '${end}'::pg_lsn AS ok FROM pg_replication_slots WHERE slot_name = '${slot}'`))[0]?.ok === true, `${name} caught up`)
    return (performance.now() - t0) / 1000
  }
  const l0 = load()
  const mmliteS = await timeApply(n2, mm, mmSlot)
  const pgoutputS = await timeApply(n3, 'plain', plainSlot)
  const same = (await sql<{n: number}>(n2, 'SELECT count(*)::int AS n FROM public.orders'))[0].n === (await sql<{n: number}>(n3, 'SELECT count(*)::int AS n FROM public.orders'))[0].n
  return {part: 'plugin', rows: ROWS, mmliteS, pgoutputS, ratio: mmliteS / pgoutputS, goal: '≤ 1.05', pass: mmliteS / pgoutputS <= 1.05, sameRows: same, load: [l0, load()]}
}

async function partInit(): Promise<Record<string, unknown>> {
  const [n1, n2, n3] = await Promise.all(['node1', 'node2', 'node3'].map(name => LocalServer.start({major: 18 as PgMajor, name, settings: SETTINGS})))
  await Promise.all([n1, n2, n3].map(s => sql(s, SCHEMA)))
  await sql(n1, data(MB))
  const dir = await mkdtemp(path.join(os.tmpdir(), 'mmlite-bench-fig-'))
  const cfg = await config(dir, [['node1', n1], ['node2', n2]])
  const l0 = load()
  const initS = await must(cli(['init', '-c', cfg, '--yes']), 'init')
  await sql(n1, `CREATE PUBLICATION plain FOR TABLE ${TABLES.join(', ')}`)
  const t0 = performance.now()
  await sql(n3, `CREATE SUBSCRIPTION plain CONNECTION '${n1.dsn()}' PUBLICATION plain WITH (copy_data = true)`)
  await waitFor(async () => (await sql<{n: number}>(n3, "SELECT count(*) FILTER (WHERE srsubstate <> 'r')::int AS n FROM pg_subscription_rel"))[0].n === 0, 'native tablesync')
  const nativeS = (performance.now() - t0) / 1000
  return {part: 'init', mb: MB, initS, nativeS, ratio: initS / nativeS, load: [l0, load()]}
}

async function main(): Promise<void> {
  const parts: Record<string, () => Promise<Record<string, unknown>>> = {standby: partStandby, plugin: partPlugin, init: partInit}
  const fn = parts[args.part ?? '']
  if (!fn) throw new Error('--part standby|plugin|init')
  const cpu = os.cpus()
  const r = {at: new Date().toISOString(), machine: `${cpu.length} × ${cpu[0]?.model}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`, loadStart: load(), ...(await fn())}
  log(JSON.stringify(r))
  await mkdir(path.join(ROOT, 'bench', 'results'), {recursive: true})
  await writeFile(path.join(ROOT, 'bench', 'results', `figures-${args.part}-${r.at.replace(/[:.]/g, '-')}.json`), JSON.stringify(r, null, 1) + '\n')
}

main()
  .catch(e => {
    console.error(e)
    process.exitCode = 2
  })
  .finally(() => stopAllStarted())
