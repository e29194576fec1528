/**
 * `mmlite demo` end to end: the real CLI in a child process (compiled bin/run.js),
 * real PostgreSQL servers from the npm packages.
 *
 *  1. default demo (3 × PG 18): converges, identical counts and checksums (as the CLI reports
 *     them: its servers are gone when it exits), nothing left behind
 *  2. --keep (2 × PG 16): the test reads every node itself (same full rows; the CLI's checksums
 *     recomputed from the servers), the kept mesh really replicates (both directions); --stop removes it
 *  3. a kept demo is never deleted by the next demo (it refuses, exit 12, the kept servers keep
 *     running with their rows); after --stop the next demo succeeds
 */
import assert from 'node:assert/strict'
import {existsSync, readFileSync} from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import pg from 'pg'

import {CONFIG_FILE, PASS_FILE, STATE_FILE, demoDir} from '../../src/local/demo.js'
import {pollUntil} from '../../src/util/poll.js'
import {runCli, type CliResult} from '../helpers/cluster.js'

// a demo directory of the tests' own: never touch a demo the developer kept running
process.env.MMLITE_DEMO_DIR = path.join(os.tmpdir(), `mmlite-demo-test-${process.pid}`)
const DIR = demoDir()
const STATE = path.join(DIR, STATE_FILE)

type Run = CliResult

/** The compiled CLI (npm test builds first), without a config from the environment. */
function cli(args: string[], timeoutMs = 240_000): Promise<Run> {
  return runCli(args, {env: {MMLITE_CONFIG: undefined}, timeoutMs})
}

function explain(r: Run): string {
  return `exit ${r.code}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`
}

async function cliJson<T>(args: string[]): Promise<T> {
  const r = await cli([...args, '--json'])
  assert.equal(r.code, 0, explain(r))
  try {
    return JSON.parse(r.stdout) as T
  } catch {
    assert.fail(`stdout is not one JSON document\n${explain(r)}`)
  }
}

/** true when nothing listens on 127.0.0.1:port */
function portClosed(port: number): Promise<boolean> {
  return new Promise(resolve => {
    const s = net.connect({host: '127.0.0.1', port})
    s.setTimeout(5000)
    s.once('connect', () => {
      s.destroy()
      resolve(false)
    })
    s.once('timeout', () => {
      s.destroy()
      resolve(false)
    })
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'))
  })
}

async function assertPortsClosed(ports: number[]): Promise<void> {
  for (const p of ports) assert.equal(await portClosed(p), true, `port ${p} still accepts connections`)
}

/** The demo's servers require their random password, kept in <demo dir>/pgpass (0600). */
function demoPassword(port: number): string {
  const line = readFileSync(path.join(DIR, PASS_FILE), 'utf8').split('\n').find(l => l.startsWith(`127.0.0.1:${port}:`))
  assert.ok(line, `a password for port ${port} in ${PASS_FILE}`)
  return line.split(':').slice(4).join(':').replace(/\\(.)/g, '$1')
}

async function query<T extends pg.QueryResultRow>(port: number, sql: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({host: '127.0.0.1', port, user: 'postgres', database: 'postgres', password: demoPassword(port)})
  await c.connect()
  try {
    return (await c.query<T>(sql, params)).rows
  } finally {
    await c.end()
  }
}

interface DemoJson {
  cluster: string
  nodes: Array<{name: string; port: number; version: string}>
  rows: {perNode: Array<{node: string; customers: number; orders: number; checksum: string}>; converged: boolean}
  kept: boolean
  config: string
  leftovers: Array<{name: string; port: number | null}>
}

interface StopJson {
  stopped: Array<{name: string; port: number | null}>
  dir: string
}

function assertConverged(d: DemoJson, n: number): void {
  assert.equal(d.cluster, 'demo')
  assert.deepEqual(d.nodes.map(x => x.name), Array.from({length: n}, (_, i) => `node${i + 1}`))
  assert.equal(new Set(d.nodes.map(x => x.port)).size, n, 'distinct ports')
  assert.equal(d.rows.converged, true)
  assert.equal(d.rows.perNode.length, n)
  for (const r of d.rows.perNode) {
    assert.equal(r.customers, 50 * n, `${r.node} customers`)
    assert.equal(r.orders, 100 * n, `${r.node} orders`)
    assert.match(r.checksum, /^[0-9a-f]{32}$/)
  }
  assert.equal(new Set(d.rows.perNode.map(r => r.checksum)).size, 1, 'identical checksums')
  assert.equal(d.config, path.join(DIR, CONFIG_FILE))
}

/**
 * The test's own digest of a kept demo, read from the servers (not from the CLI's report):
 * every node holds the same full rows of both tables, with the expected counts; and the
 * checksum the CLI printed for each node is the md5 over the sorted ids it claims to be.
 */
async function assertServersIdentical(ports: number[], n: number, reported?: DemoJson['rows']['perNode']): Promise<void> {
  assert.equal(ports.length, n)
  const digests = await Promise.all(
    ports.map(async port =>
      (
        await query<{customers: number; orders: number; rows: string; ids: string}>(
          port,
          `SELECT (SELECT count(*)::int FROM public.customers) AS customers, (SELECT count(*)::int FROM public.orders) AS orders,
                  md5(coalesce((SELECT string_agg(c::text, '|' ORDER BY c.id) FROM public.customers c), '') || '#' ||
                      coalesce((SELECT string_agg(o::text, '|' ORDER BY o.id) FROM public.orders o), '')) AS rows,
                  md5(coalesce((SELECT string_agg(id::text, ',' ORDER BY id) FROM public.customers), '') || '|' ||
                      coalesce((SELECT string_agg(id::text, ',' ORDER BY id) FROM public.orders), '')) AS ids`,
        )
      )[0],
    ),
  )
  for (const d of digests) {
    assert.equal(d.customers, 50 * n)
    assert.equal(d.orders, 100 * n)
    assert.deepEqual(d, digests[0], 'every node holds the same rows')
  }
  if (reported) assert.deepEqual(reported.map(r => r.checksum), digests.map(d => d.ids), "the CLI's checksums are the servers' own")
}

describe('mmlite demo (real CLI, real PostgreSQL)', function () {
  this.timeout(300_000)

  before(async () => {
    const r = await cli(['demo', '--stop']) // a demo kept by someone else is not ours to fail on
    assert.equal(r.code, 0, explain(r))
  })

  after(async () => {
    const r = await cli(['demo', '--stop'])
    assert.equal(r.code, 0, explain(r))
    assert.equal(existsSync(DIR), false, `${DIR} removed`)
  })

  it('rejects bad flags before starting anything (exit 10)', async () => {
    for (const args of [
      ['--stop', '--keep'],
      ['--nodes', '1'],
      ['--nodes', '10'],
      ['--pg', '15'],
    ]) {
      const r = await cli(['demo', ...args, '--json'])
      assert.equal(r.code, 10, `${args.join(' ')}: ${explain(r)}`)
      assert.equal(existsSync(DIR), false)
    }
  })

  it('3 × PG 18: every node holds every row, then nothing is left behind', async () => {
    const t0 = Date.now()
    const d = await cliJson<DemoJson>(['demo'])
    assertConverged(d, 3)
    for (const n of d.nodes) assert.match(n.version, /^18\b/)
    assert.equal(d.kept, false)
    assert.deepEqual(d.leftovers, [])
    assert.equal(existsSync(STATE), false, 'state file removed')
    assert.equal(existsSync(DIR), false, 'demo directory removed')
    await assertPortsClosed(d.nodes.map(n => n.port))
    console.log(`      (3-node demo: ${Date.now() - t0} ms including CLI start-up)`)
  })

  it('--keep: the kept mesh replicates; --stop removes it', async () => {
    const d = await cliJson<DemoJson>(['demo', '--keep', '--nodes', '2', '--pg', '16'])
    assertConverged(d, 2)
    for (const n of d.nodes) assert.match(n.version, /^16\b/)
    assert.equal(d.kept, true)
    assert.equal(existsSync(STATE), true, 'state file kept')
    await assertServersIdentical(d.nodes.map(x => x.port), 2, d.rows.perNode)
    const [a, b] = d.nodes

    for (const [from, to] of [
      [a, b],
      [b, a],
    ]) {
      const [row] = await query<{id: string}>(from.port, `INSERT INTO public.customers (name) VALUES ($1) RETURNING id`, [`written on ${from.name}`])
      await pollUntil(async () => (await query(to.port, 'SELECT 1 FROM public.customers WHERE id = $1', [row.id])).length === 1, {
        timeoutMs: 30_000,
        what: `the row written on ${from.name} to reach ${to.name}`,
      })
    }
    const counts = await Promise.all(d.nodes.map(n => query<{n: number}>(n.port, 'SELECT count(*)::int AS n FROM public.customers')))
    assert.deepEqual(counts.map(c => c[0].n), [102, 102])

    const s = await cliJson<StopJson>(['demo', '--stop'])
    assert.deepEqual(s.stopped, d.nodes.map(n => ({name: n.name, port: n.port})))
    assert.equal(s.dir, DIR)
    assert.equal(existsSync(DIR), false, 'demo directory removed')
    await assertPortsClosed(d.nodes.map(n => n.port))

    const again = await cliJson<StopJson>(['demo', '--stop'])
    assert.deepEqual(again.stopped, [], 'a second --stop has nothing to do')
  })

  it('a kept demo is never deleted by a second demo; after --stop the next demo succeeds', async () => {
    const k = await cli(['demo', '--keep', '--nodes', '2'])
    assert.equal(k.code, 0, explain(k))
    const out = k.stdout
    assert.match(out, /node\s+customers\s+orders\s+checksum/)
    assert.ok(out.includes(`export MMLITE_CONFIG=${path.join(DIR, CONFIG_FILE)}`), out)
    assert.match(out, /mmlite status/)
    assert.match(out, /mmlite demo --stop/)
    assert.doesNotMatch(out + k.stderr, /postgres(?:ql)?:\/\/[^@\s/]*:[^@\s/]*@/, 'no password in any DSN')
    const oldPorts = [...out.matchAll(/psql "postgresql:\/\/postgres@127\.0\.0\.1:(\d+)\/postgres"/g)].map(m => Number(m[1]))
    assert.equal(oldPorts.length, 2, out)
    for (const p of oldPorts) assert.equal(await portClosed(p), false, `kept server on ${p} runs`)
    await assertServersIdentical(oldPorts, 2)
    const oldState = JSON.parse(readFileSync(STATE, 'utf8')) as {status: string; servers: Array<{name: string; port: number; dataDir: string}>}
    assert.equal(oldState.status, 'kept')
    assert.deepEqual(oldState.servers.map(s => s.port), oldPorts)

    const [before] = await query<{n: number}>(oldPorts[0], 'SELECT count(*)::int AS n FROM public.customers')
    assert.equal(before.n, 100) // 50 customers written on each of the 2 nodes

    const second = await cli(['demo', '--nodes', '2', '--json'])
    assert.equal(second.code, 12, explain(second))
    const err = JSON.parse(second.stdout) as {code: string; message: string; fix: string}
    assert.equal(err.code, 'locked')
    assert.match(err.message, /a demo you kept is still running/)
    assert.match(err.fix, /mmlite demo --stop/)
    // untouched: same state, servers running, rows there
    assert.deepEqual(JSON.parse(readFileSync(STATE, 'utf8')), oldState)
    for (const p of oldPorts) assert.equal(await portClosed(p), false, `kept server on ${p} still runs`)
    for (const p of oldPorts) assert.equal((await query<{n: number}>(p, 'SELECT count(*)::int AS n FROM public.customers'))[0].n, 100)

    const stop = await cliJson<StopJson>(['demo', '--stop'])
    assert.deepEqual(stop.stopped.map(s => s.port), oldPorts)
    const d = await cliJson<DemoJson>(['demo', '--nodes', '2'])
    assertConverged(d, 2)
    assert.deepEqual(d.leftovers, [])
    assert.equal(d.kept, false)
    for (const s of oldState.servers) assert.equal(existsSync(s.dataDir), false, `${s.dataDir} removed`)
    assert.equal(existsSync(DIR), false, 'demo directory removed')
    // old ports: closed (whether or not the new servers happened to reuse them, those are gone too)
    await assertPortsClosed([...oldPorts, ...d.nodes.map(n => n.port)])
  })
})
