/**
 * `mmlite status` end to end: two real PostgreSQL 16 servers, a two-way mesh built by hand
 * (publication, pgoutput slots, `origin = none` subscriptions named by edgeName), and the real
 * CLI run as a child process (compiled `bin/run.js status ...`).
 *
 * Checks: healthy → JSON shape + exit 0; the mesh it reports really replicates; an unfinished
 * journal entry that paused a subscription → `paused`, exit 2; a stopped server → unreachable,
 * links critical, exit 2, quickly; a configuration error keeps exit 10; and a password in
 * the DSNs never appears in any output.
 */
import assert from 'node:assert/strict'
import {mkdir, mkdtemp, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import pg from 'pg'

import {LocalServer, stopAllStarted} from '../../src/local/server.js'
import {edgeName} from '../../src/cluster/naming.js'
import type {StatusResult} from '../../src/cluster/status.js'
import {runCli} from '../helpers/cluster.js'

const CLUSTER = 'itest'
const SECRET = 's3cr3t'

interface CliRun {
  code: number | null
  stdout: string
  stderr: string
  ms: number
}

async function cli(args: string[]): Promise<CliRun> {
  const t0 = Date.now()
  const r = await runCli(args, {env: {NO_COLOR: '1', FORCE_COLOR: '0'}, timeoutMs: 60_000})
  return {code: r.code, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - t0}
}

function parse(r: CliRun): StatusResult {
  try {
    return JSON.parse(r.stdout) as StatusResult
  } catch {
    throw new Error(`status --json printed no JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`)
  }
}

function noSecret(r: CliRun): void {
  assert.ok(!r.stdout.includes(SECRET), `password in stdout:\n${r.stdout}`)
  assert.ok(!r.stderr.includes(SECRET), `password in stderr:\n${r.stderr}`)
}

async function sql<T extends pg.QueryResultRow = Record<string, unknown>>(s: LocalServer, text: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({connectionString: s.dsn()})
  await c.connect()
  try {
    return (await c.query<T>(text, params)).rows
  } finally {
    await c.end()
  }
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await probe()
    if (v !== undefined) return v
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise(r => setTimeout(r, 200))
  }
}

describe('mmlite status (real PostgreSQL 16 mesh, real CLI)', function () {
  this.timeout(180_000)
  let n1: LocalServer
  let n2: LocalServer
  let dir: string
  let config: string
  let last: CliRun | undefined

  before(async () => {
    ;[n1, n2] = await Promise.all([LocalServer.start({major: 16, name: 'n1'}), LocalServer.start({major: 16, name: 'n2'})])
    const nodes = [
      {name: 'n1', server: n1},
      {name: 'n2', server: n2},
    ]
    for (const {name, server} of nodes) {
      await sql(server, 'CREATE TABLE public.t (id int PRIMARY KEY, v text)')
      await sql(server, `CREATE PUBLICATION ${CLUSTER} FOR TABLE public.t`)
      for (const o of nodes) if (o.name !== name) await sql(server, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [edgeName(CLUSTER, name, o.name)])
    }
    for (const {name, server} of nodes) {
      for (const o of nodes) {
        if (o.name === name) continue
        const edge = edgeName(CLUSTER, o.name, name)
        await sql(
          server,
          `CREATE SUBSCRIPTION ${edge} CONNECTION 'host=127.0.0.1 port=${o.server.port} dbname=postgres user=postgres' ` +
            `PUBLICATION ${CLUSTER} WITH (create_slot = false, slot_name = '${edge}', copy_data = false, origin = none)`,
        )
      }
    }
    dir = await mkdtemp(path.join(os.tmpdir(), 'mmlite-status-'))
    config = path.join(dir, 'mmlite.yaml')
    // the servers check passwords (scram-sha-256): give them this one; it must never be printed
    await Promise.all([n1, n2].map(s => s.setPassword(SECRET)))
    await writeFile(
      config,
      [
        `cluster: ${CLUSTER}`,
        'tables:',
        '  - public.t',
        'nodes:',
        '  - name: n1',
        `    dsn: postgresql://postgres:${SECRET}@127.0.0.1:${n1.port}/postgres`,
        '  - name: n2',
        `    dsn: "host=127.0.0.1 port=${n2.port} dbname=postgres user=postgres password=${SECRET}"`,
        '',
      ].join('\n'),
    )
  })

  after(async () => {
    await stopAllStarted()
    if (dir) await rm(dir, {recursive: true, force: true})
  })

  afterEach(function () {
    if (this.currentTest?.state === 'failed' && last) {
      console.error(`last CLI run (exit ${last.code}, ${last.ms} ms):\n${last.stdout}\n${last.stderr}`)
    }
  })

  it('reports the healthy mesh as JSON with exit 0', async () => {
    const r = await waitFor('status to report health ok', async () => {
      last = await cli(['status', '-c', config, '--json'])
      noSecret(last)
      return parse(last).health === 'ok' ? last : undefined
    })
    assert.equal(r.code, 0)
    const s = parse(r)
    assert.equal(s.cluster, CLUSTER)
    assert.equal(s.health, 'ok')
    assert.ok(!Number.isNaN(Date.parse(s.checkedAt)))
    assert.deepEqual(s.unfinished, [])
    assert.deepEqual(
      s.nodes.map(n => [n.name, n.reachable, n.target, Math.floor((n.versionNum ?? 0) / 10000)]),
      [
        ['n1', true, `127.0.0.1:${n1.port}/postgres`, 16],
        ['n2', true, `127.0.0.1:${n2.port}/postgres`, 16],
      ],
    )
    assert.deepEqual(
      s.links.map(l => [l.from, l.to, l.mechanism, l.status]),
      [
        ['n1', 'n2', 'native', 'ok'],
        ['n2', 'n1', 'native', 'ok'],
      ],
    )
    for (const l of s.links) {
      assert.deepEqual(l.reasons, [])
      assert.equal(l.subscriptionEnabled, true)
      assert.equal(l.workerRunning, true)
      assert.equal(l.slotActive, true)
      assert.equal(l.walStatus, 'reserved')
      assert.equal(typeof l.lagBytes, 'number')
      assert.equal(typeof l.retainedBytes, 'number')
      assert.ok(l.lagBytes! >= 0 && l.retainedBytes! >= l.lagBytes!)
      assert.equal(typeof l.lastMsgAgeSeconds, 'number')
      assert.equal(l.applyErrorCount, 0)
      assert.equal(l.syncErrorCount, 0)
      assert.equal('conflicts' in l, false, 'confl_* only on 18+')
    }
  })

  it('the mesh it reports replicates both ways', async () => {
    await sql(n1, `INSERT INTO public.t VALUES (1, 'from n1')`)
    await sql(n2, `INSERT INTO public.t VALUES (2, 'from n2')`)
    for (const s of [n1, n2]) {
      await waitFor(`both rows on ${s.name}`, async () => {
        const rows = await sql<{id: number; v: string}>(s, 'SELECT id, v FROM public.t ORDER BY id')
        return rows.length === 2 ? rows : undefined
      }, 30_000)
      assert.deepEqual(await sql(s, 'SELECT id, v FROM public.t ORDER BY id'), [
        {id: 1, v: 'from n1'},
        {id: 2, v: 'from n2'},
      ])
    }
  })

  it('plain output: tables, exit 0, no password; --matrix draws the lag matrix', async () => {
    last = await cli(['status', '-c', config])
    noSecret(last)
    assert.equal(last.code, 0, last.stderr)
    assert.match(last.stdout, /Cluster itest: OK/)
    assert.match(last.stdout, /\| n1 +\| 127\.0\.0\.1:\d+\/postgres +\| 16\.\d+ +\| reachable +\| native +\|/)
    assert.match(last.stdout, /\| n1 → n2 +\| native +\| enabled +\| running +\| active +\| reserved +\|.*\| ok +\|/)
    last = await cli(['status', '-c', config, '--matrix'])
    noSecret(last)
    assert.equal(last.code, 0)
    assert.match(last.stdout, /Lag: from/)
    assert.doesNotMatch(last.stdout, /\| Link /)
  })

  it('an unfinished run that paused a subscription: listed, link paused, exit 2', async () => {
    const edge = edgeName(CLUSTER, 'n1', 'n2')
    await mkdir(path.join(dir, '.mmlite'))
    const journal = path.join(dir, '.mmlite', 'journal.json')
    await writeFile(
      journal,
      JSON.stringify({
        version: 1,
        cluster: CLUSTER,
        operations: {
          'add-node:n3': {
            command: 'add-node',
            startedAt: '2025-01-01T00:00:00.000Z',
            updatedAt: '2025-01-01T00:00:00.000Z',
            steps: {},
            values: {pausedSubscriptions: [{node: 'n2', subscription: edge}]},
          },
        },
      }),
    )
    try {
      last = await cli(['status', '-c', config, '--json'])
      assert.equal(last.code, 2)
      const s = parse(last)
      assert.equal(s.health, 'critical')
      assert.deepEqual(s.unfinished, [{key: 'add-node:n3', command: 'add-node', startedAt: '2025-01-01T00:00:00.000Z'}])
      const l = s.links.find(x => x.from === 'n1' && x.to === 'n2')!
      assert.equal(l.status, 'paused')
      assert.deepEqual(l.reasons, ['paused by unfinished mmlite add-node run; re-run it to finish'])
      assert.equal(s.links.find(x => x.from === 'n2')!.status, 'ok')
      last = await cli(['status', '-c', config])
      assert.equal(last.code, 2)
      assert.match(last.stdout, /unfinished mmlite add-node run/)
    } finally {
      await rm(journal)
    }
  })

  it('a configuration error keeps exit code 10', async () => {
    last = await cli(['status', '-c', path.join(dir, 'missing.yaml'), '--json'])
    assert.equal(last.code, 10)
    assert.match(last.stdout, /not found/)
  })

  it('a stopped server: unreachable with the reason, links critical, exit 2, quickly, no password', async () => {
    await n2.stop()
    last = await cli(['status', '-c', config, '--json', '--timeout', '2'])
    noSecret(last)
    assert.ok(last.ms < 10_000, `status took ${last.ms} ms`)
    assert.equal(last.code, 2, last.stderr)
    const s = parse(last)
    assert.equal(s.health, 'critical')
    const [a, b] = s.nodes
    assert.equal(a.reachable, true)
    assert.equal(b.name, 'n2')
    assert.equal(b.reachable, false)
    assert.match(b.error ?? '', /refused/)
    assert.equal(b.target, `127.0.0.1:${n2.port}/postgres`)
    for (const l of s.links) {
      assert.equal(l.status, 'critical', `${l.from}→${l.to}`)
      assert.ok(l.reasons.includes('n2 unreachable'), l.reasons.join('; '))
    }
    // n1 still answers for its side: the slot n1→n2 lost its walsender
    const out = s.links.find(l => l.from === 'n1')!
    assert.equal(out.subscriptionEnabled, null)
    last = await cli(['status', '-c', config, '--timeout', '2'])
    noSecret(last)
    assert.equal(last.code, 2)
    assert.match(last.stdout, /\| n2 +\|.*\| unreachable +\|/)
    assert.match(last.stdout, /n2: connection refused/)
  })
})
