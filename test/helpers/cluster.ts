/**
 * Integration-test helpers: real servers (src/local/server.ts), the real CLI as a child
 * process, SQL on a node, convergence checks. Every wait polls.
 */
import {spawn} from 'node:child_process'
import {existsSync, readdirSync, statSync} from 'node:fs'
import {mkdtemp, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import pg from 'pg'
import {LocalServer, type PgMajor} from '../../src/local/server.js'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')

export async function withClient<T>(s: LocalServer, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({connectionString: s.dsn()})
  await c.connect()
  try {
    return await fn(c)
  } finally {
    await c.end()
  }
}

export async function sql<T extends pg.QueryResultRow = Record<string, unknown>>(s: LocalServer, q: string, params: unknown[] = []): Promise<T[]> {
  return withClient(s, async c => (await c.query<T>(q, params)).rows)
}

/** `settings`: extra postgresql.conf settings for every server (e.g. max_prepared_transactions for adding tables). */
export async function startServers(majors: PgMajor[], prefix = 'node', settings: Record<string, string | number> = {}): Promise<LocalServer[]> {
  const servers = await Promise.all(
    majors.map((major, i) =>
      LocalServer.start({major, name: `${prefix}${i + 1}`, settings: {wal_retrieve_retry_interval: '200ms', ...settings}}),
    ),
  )
  await Promise.all(servers.filter(s => s.major === 15).map(allowPlugin))
  return servers
}

/**
 * PostgreSQL minors with output_plugin_libraries (15.19+, ...) only load listed plugins:
 * list mmlite where the setting exists (list syntax: one literal per name).
 */
export async function allowPlugin(s: LocalServer): Promise<void> {
  const row = (await sql<{setting: string}>(s, "SELECT setting FROM pg_settings WHERE name = 'output_plugin_libraries'"))[0]
  if (!row) return
  const libs = row.setting.split(',').map(x => x.trim()).filter(Boolean)
  if (libs.includes('mmlite')) return
  const value = [...libs, 'mmlite'].map(l => `'${l}'`).join(', ')
  await sql(s, `ALTER SYSTEM SET output_plugin_libraries = ${value}`)
  await reloadConf(s)
}

/**
 * pg_reload_conf() only signals the postmaster: wait until new sessions run with the reloaded
 * configuration (pg_conf_load_time() of a fresh session moves past its value before the reload).
 */
export async function reloadConf(s: LocalServer): Promise<void> {
  const before = (await sql<{t: Date}>(s, 'SELECT pg_conf_load_time() AS t'))[0].t.getTime()
  await sql(s, 'SELECT pg_reload_conf()')
  await waitFor(async () => (await sql<{t: Date}>(s, 'SELECT pg_conf_load_time() AS t'))[0].t.getTime() > before, `configuration reload on ${s.name}`)
}

export const SCHEMA = `
CREATE TABLE IF NOT EXISTS public.departments (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE IF NOT EXISTS public.users (id bigint PRIMARY KEY, dept int, name text, updated_by text);
`

export async function createSchema(servers: LocalServer[], ddl = SCHEMA): Promise<void> {
  await Promise.all(servers.map(s => sql(s, ddl)))
}

export async function tempDir(prefix = 'mmlite-test-'): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix))
}

/** A new temp dir with a config for `servers`, and `mmlite init --yes` on it, which must succeed. */
export async function initCluster(servers: LocalServer[], opts: Parameters<typeof writeConfig>[2] = {}): Promise<{dir: string; cfg: string}> {
  const dir = await tempDir()
  const cfg = await writeConfig(dir, servers, opts)
  const r = await runCli(['init', '-c', cfg, '--yes'])
  if (r.code !== 0) throw new Error(`mmlite init exited ${r.code}:\n${r.stderr}${r.stdout}`)
  return {dir, cfg}
}

export async function writeConfig(
  dir: string,
  servers: LocalServer[],
  opts: {cluster?: string; tables?: string[]; names?: string[]; extra?: string} = {},
): Promise<string> {
  const file = path.join(dir, 'mmlite.yaml')
  const tables = opts.tables ?? ['public.departments', 'public.users']
  const lines = [
    `cluster: ${opts.cluster ?? 'shop'}`,
    'tables:',
    ...tables.map(t => `  - ${t}`),
    'nodes:',
    ...servers.flatMap((s, i) => [`  - name: ${opts.names?.[i] ?? `node${i + 1}`}`, `    dsn: ${s.dsn()}`]),
  ]
  if (opts.extra) lines.push(opts.extra)
  await writeFile(file, lines.join('\n') + '\n')
  return file
}

export interface CliResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

let distChecked = false

/**
 * Integration tests run the compiled CLI (dist/) but import helpers and step lists from src/:
 * both must be the same code. Fails (once per process, before the first CLI run) when a source
 * file is newer than its compiled output or has none: run `npm run build` (`npm test` does).
 */
export function assertDistFresh(): void {
  if (distChecked) return
  const stale: string[] = []
  const walk = (rel: string): void => {
    for (const e of readdirSync(path.join(ROOT, 'src', rel), {withFileTypes: true})) {
      const r = path.join(rel, e.name)
      if (e.isDirectory()) walk(r)
      else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) {
        const js = path.join(ROOT, 'dist', r.replace(/\.ts$/, '.js'))
        if (!existsSync(js) || statSync(js).mtimeMs < statSync(path.join(ROOT, 'src', r)).mtimeMs) stale.push(`src/${r}`)
      }
    }
  }
  walk('')
  if (stale.length) {
    throw new Error(`dist/ is older than src/ (${stale.slice(0, 5).join(', ')}${stale.length > 5 ? ', …' : ''}): run \`npm run build\` first (npm test does)`)
  }
  distChecked = true
}

/**
 * Run cleanups after a test body without hiding its error: every cleanup runs; a cleanup error
 * is thrown only when the body succeeded, else it is printed and the body's error is kept.
 */
export async function withCleanup<T>(body: () => Promise<T>, ...cleanups: Array<() => Promise<unknown>>): Promise<T> {
  let failed = false
  try {
    return await body()
  } catch (e) {
    failed = true
    throw e
  } finally {
    const errors: unknown[] = []
    for (const c of cleanups) {
      try {
        await c()
      } catch (e) {
        errors.push(e)
      }
    }
    if (errors.length) {
      if (failed) for (const e of errors) console.error(`cleanup failed too (the test's own error is reported): ${(e as Error).message}`)
      else throw errors[0] // eslint-disable-line no-unsafe-finally
    }
  }
}

/** The real CLI (compiled: `npm test` builds first, checked by assertDistFresh) as a child process. */
export function runCli(args: string[], opts: {env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number} = {}): Promise<CliResult> {
  assertDistFresh()
  return runProgram(process.execPath, [path.join(ROOT, 'bin/run.js'), ...args], {...opts, timeoutMs: opts.timeoutMs ?? 180_000})
}

/** Any program as a child process (no stdin), its output collected; killed after timeoutMs. */
export function runProgram(cmd: string, args: string[], opts: {env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number} = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd ?? ROOT,
      env: {...process.env, CI: '1', ...opts.env},
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', d => (stdout += d))
    child.stderr.on('data', d => (stderr += d))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`${path.basename(cmd)} ${args.join(' ')} timed out\nstdout:\n${stdout}\nstderr:\n${stderr}`))
    }, opts.timeoutMs ?? 300_000)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({code, signal, stdout, stderr})
    })
  })
}

export function parseJson<T = Record<string, unknown>>(r: CliResult): T {
  try {
    return JSON.parse(r.stdout) as T
  } catch {
    throw new Error(`not JSON (exit ${r.code}):\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`)
  }
}

export async function waitFor(cond: () => Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let interval = 50
  for (;;) {
    if (await cond()) return
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(r => setTimeout(r, interval))
    interval = Math.min(500, interval * 2)
  }
}

/** md5 over the whole ordered table: equal on every node = identical contents. */
export async function tableDigest(s: LocalServer, table: string, orderBy = 'id'): Promise<{count: number; md5: string}> {
  const r = await sql<{count: number; md5: string}>(
    s,
    `SELECT count(*)::int AS count, md5(coalesce(string_agg(t::text, '|' ORDER BY ${orderBy}), '')) AS md5 FROM ${table} t`,
  )
  return r[0]
}

/** Wait until every node holds `count` rows in `table` with identical contents. */
export async function waitConverged(servers: LocalServer[], table: string, count: number, timeoutMs = 60_000): Promise<void> {
  if (servers.length === 0) throw new Error(`waitConverged(${table}): no servers given`)
  let last: Array<{count: number; md5: string}> = []
  try {
    await waitFor(async () => {
      last = await Promise.all(servers.map(s => tableDigest(s, table)))
      return last.every(d => d.count === count && d.md5 === last[0].md5)
    }, `${table} to converge on ${count} rows`, timeoutMs)
  } catch (e) {
    throw new Error(`${(e as Error).message}: ${JSON.stringify(last)}`)
  }
}

/** Apply errors recorded by subscriptions (15+), summed per node. */
export async function applyErrors(s: LocalServer): Promise<number> {
  if (s.major < 15) return 0
  const r = await sql<{n: number}>(s, 'SELECT coalesce(sum(apply_error_count + sync_error_count), 0)::int AS n FROM pg_stat_subscription_stats')
  return r[0].n
}

/** What mmlite objects exist on a node (publications, slots, subscriptions) with this cluster prefix. */
export async function meshObjects(s: LocalServer, cluster = 'shop'): Promise<{pubs: string[]; slots: string[]; subs: string[]}> {
  const [pubs, slots, subs] = await Promise.all([
    sql<{n: string}>(s, 'SELECT pubname AS n FROM pg_publication WHERE pubname LIKE $1 ORDER BY 1', [`${cluster}%`]),
    sql<{n: string}>(s, 'SELECT slot_name AS n FROM pg_replication_slots WHERE slot_name LIKE $1 ORDER BY 1', [`${cluster}%`]),
    sql<{n: string}>(s, 'SELECT subname AS n FROM pg_subscription WHERE subname LIKE $1 ORDER BY 1', [`${cluster}%`]),
  ])
  return {pubs: pubs.map(r => r.n), slots: slots.map(r => r.n), subs: subs.map(r => r.n)}
}

/** Remove every mmlite object of the cluster and empty the tables on all but `keepData` nodes. */
export async function resetMesh(servers: LocalServer[], cluster = 'shop', keepData: number[] = [0]): Promise<void> {
  await Promise.all(
    servers.map(async s => {
      const {subs} = await meshObjects(s, cluster)
      for (const sub of subs) {
        await sql(s, `ALTER SUBSCRIPTION "${sub}" DISABLE`)
        await sql(s, `ALTER SUBSCRIPTION "${sub}" SET (slot_name = NONE)`)
        await sql(s, `DROP SUBSCRIPTION "${sub}"`)
      }
    }),
  )
  await Promise.all(
    servers.map(async (s, i) => {
      const {slots, pubs} = await meshObjects(s, cluster)
      for (const slot of slots) {
        await waitFor(async () => !(await sql<{active: boolean}>(s, 'SELECT active FROM pg_replication_slots WHERE slot_name = $1', [slot]))[0]?.active, `slot ${slot} inactive`)
        await sql(s, 'SELECT pg_drop_replication_slot($1)', [slot])
      }
      for (const p of pubs) await sql(s, `DROP PUBLICATION "${p}"`)
      if (!keepData.includes(i)) await sql(s, 'TRUNCATE public.users, public.departments')
    }),
  )
}

/**
 * Concurrent writers, one per node, each on its own disjoint keys: inserts then updates of
 * its own rows. Returns the ids each node committed (acknowledged writes only).
 */
export async function writeOnEveryNode(servers: LocalServer[], perNode: number, base = 1_000_000): Promise<Map<number, number[]>> {
  const out = new Map<number, number[]>()
  await Promise.all(
    servers.map(async (s, i) => {
      const ids: number[] = []
      await withClient(s, async c => {
        for (let k = 0; k < perNode; k++) {
          const id = base + i * 100_000 + k
          await c.query('INSERT INTO public.users (id, dept, name, updated_by) VALUES ($1, $2, $3, $4)', [id, k % 10, `u${id}`, `node${i + 1}`])
          ids.push(id)
          if (k % 5 === 4) await c.query("UPDATE public.users SET name = name || '*' WHERE id = $1", [id - 2])
        }
      })
      out.set(i, ids)
    }),
  )
  return out
}
