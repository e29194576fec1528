/**
 * `mmlite remove-node` on real servers, through the compiled CLI:
 *  - PG 18 (native): refusals and dry-run change nothing; a drain that cannot finish fails
 *    and changes nothing; a live node leaves under continuous writes on every node (the hard
 *    load of test/helpers/load.ts: all its acknowledged writes, updates and deletes reach the
 *    peers with their last values, the others keep replicating, both tables' full contents
 *    identical on the remaining nodes); SIGKILL after every step (and inside two), re-run:
 *    same end state.
 *  - PG 15 (our plugin): --force on a stopped node; --force on a frozen node (SIGSTOP: no
 *    goodbye, the peers' walsenders for it linger) after one peer stopped receiving from it:
 *    the report names the peer that has more.
 */
import assert from 'node:assert/strict'
import {existsSync, readdirSync, readFileSync} from 'node:fs'
import path from 'node:path'
import pg from 'pg'
import {loadConfig} from '../../src/config/config.js'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import type {RemoveNodeResult} from '../../src/steps/remove-node.js'
import type {StatusResult} from '../../src/cluster/status.js'
import * as h from '../helpers/cluster.js'
import {WriteLoad, mergeReports, verifyLoad} from '../helpers/load.js'

const LIVE_STEPS = ['drain', 'peer-subscriptions', 'own-subscriptions', 'peer-slots', 'own-slots', 'own-publication', 'config']
const FORCE_STEPS = ['peer-subscriptions', 'peer-slots', 'config']

function journalOps(dir: string): Record<string, {steps: Record<string, string>; values: Record<string, unknown>}> {
  const f = path.join(dir, '.mmlite/journal.json')
  return existsSync(f) ? JSON.parse(readFileSync(f, 'utf8')).operations : {}
}

function history(dir: string): Array<{key: string; result: string; values: Record<string, unknown>}> {
  const f = path.join(dir, '.mmlite/history.jsonl')
  return existsSync(f) ? readFileSync(f, 'utf8').trim().split('\n').map(l => JSON.parse(l)) : []
}

function configNodes(cfg: string): string[] {
  return loadConfig(cfg).nodes.map(n => n.name)
}

/** Every object of the cluster on every server, to compare before/after a refused run. */
async function allObjects(servers: LocalServer[]) {
  return Promise.all(servers.filter(s => s.running).map(s => h.meshObjects(s)))
}

/**
 * Nothing on the remaining nodes refers to X any more, and their own links are all there:
 * slots, subscriptions and replication origins exactly those of the remaining mesh.
 */
async function assertGone(remaining: Array<{name: string; server: LocalServer}>, x: string): Promise<void> {
  for (const {name, server} of remaining) {
    const others = remaining.filter(o => o.name !== name).map(o => o.name)
    const o = await h.meshObjects(server)
    assert.deepEqual(o.pubs, ['shop'], `publication on ${name}`)
    assert.deepEqual(o.slots, others.map(p => `shop_${name}_${p}`).sort(), `slots on ${name}`)
    assert.deepEqual(o.subs, others.map(p => `shop_${p}_${name}`).sort(), `subscriptions on ${name}`)
    // nothing at all mentions X, whatever its name or prefix
    const slots = await h.sql<{n: number}>(server, 'SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name LIKE $1', [`%${x}%`])
    const subs = await h.sql<{n: number}>(server, 'SELECT count(*)::int AS n FROM pg_subscription WHERE subname LIKE $1 OR subslotname LIKE $1', [`%${x}%`])
    assert.equal(slots[0].n, 0, `a slot for ${x} is left on ${name}`)
    assert.equal(subs[0].n, 0, `a subscription from ${x} is left on ${name}`)
    const origins = await h.sql<{n: number}>(server, 'SELECT count(*)::int AS n FROM pg_replication_origin')
    assert.equal(origins[0].n, others.length, `replication origins on ${name}`)
  }
}

async function assertStatusOk(cfg: string, nodes: string[]): Promise<void> {
  const r = await h.runCli(['status', '-c', cfg, '--json'])
  const st = h.parseJson<StatusResult>(r)
  assert.equal(r.code, 0, `status: ${JSON.stringify(st.links.filter(l => l.status !== 'ok'))}`)
  assert.deepEqual(st.nodes.map(n => n.name), nodes)
  assert.equal(st.links.length, nodes.length * (nodes.length - 1))
  assert.deepEqual(st.unfinished, [])
}

async function countIds(s: LocalServer, ids: number[]): Promise<number> {
  return (await h.sql<{n: number}>(s, 'SELECT count(*)::int AS n FROM public.users WHERE id = ANY($1::bigint[])', [ids]))[0].n
}

/** Build the mesh of every server afresh from `seed` (the others' tables emptied). */
async function rebuild(servers: LocalServer[], dir: string, seed: number): Promise<string> {
  await h.resetMesh(servers, 'shop', [seed])
  const cfg = await h.writeConfig(dir, servers)
  const r = await h.runCli(['init', '-c', cfg, '--yes', '--seed', `node${seed + 1}`])
  assert.equal(r.code, 0, r.stderr + r.stdout)
  return cfg
}

describe('remove-node: a live node of a 3-node PostgreSQL 18 mesh', function () {
  this.timeout(300_000)
  let servers: LocalServer[]
  let dir: string
  let cfg: string

  before(async () => {
    servers = await h.startServers([18, 18, 18])
    await h.createSchema(servers)
    await h.sql(servers[0], "INSERT INTO public.departments SELECT g, 'dept ' || g FROM generate_series(1, 10) g")
    ;({dir, cfg} = await h.initCluster(servers))
  })
  after(() => stopAllStarted())

  it('refuses an unknown node with exit 10, naming the known nodes, and changes nothing', async () => {
    const before = await allObjects(servers)
    const text = readFileSync(cfg, 'utf8')
    const r = await h.runCli(['remove-node', 'node9', '-c', cfg, '--yes'])
    assert.equal(r.code, 10, r.stderr)
    assert.match(r.stderr, /unknown node "node9"/)
    assert.match(r.stderr, /Known nodes: node1, node2, node3/)
    const j = await h.runCli(['remove-node', 'nod2', '-c', cfg, '--yes', '--json'])
    assert.equal(j.code, 10)
    const err = h.parseJson<{exitCode: number; code: string; message: string; fix: string}>(j) // README "JSON output"
    assert.equal(err.exitCode, 10)
    assert.equal(err.code, 'config')
    assert.match(err.fix, /Did you mean "node2"\?.*Known nodes: node1, node2, node3/)
    assert.deepEqual(await allObjects(servers), before)
    assert.equal(readFileSync(cfg, 'utf8'), text)
    assert.deepEqual(journalOps(dir), {})
  })

  it('--dry-run prints the SQL per node and changes nothing', async () => {
    const before = await allObjects(servers)
    const r = await h.runCli(['remove-node', 'node1', '-c', cfg, '--dry-run', '--json'])
    assert.equal(r.code, 0, r.stderr)
    const plan = h.parseJson<RemoveNodeResult>(r)
    assert.equal(plan.dryRun, true)
    assert.deepEqual(plan.steps.map(s => s.id), LIVE_STEPS)
    assert.ok(plan.steps.length > 0 && plan.steps.every(s => s.status === 'planned'))
    const sqlOf = (id: string) => plan.steps.find(s => s.id === id)!.sql
    assert.deepEqual(sqlOf('peer-subscriptions'), [
      {node: 'node2', sql: 'ALTER SUBSCRIPTION "shop_node1_node2" DISABLE'},
      {node: 'node2', sql: 'ALTER SUBSCRIPTION "shop_node1_node2" SET (slot_name = NONE)'},
      {node: 'node2', sql: 'DROP SUBSCRIPTION "shop_node1_node2"'},
      {node: 'node3', sql: 'ALTER SUBSCRIPTION "shop_node1_node3" DISABLE'},
      {node: 'node3', sql: 'ALTER SUBSCRIPTION "shop_node1_node3" SET (slot_name = NONE)'},
      {node: 'node3', sql: 'DROP SUBSCRIPTION "shop_node1_node3"'},
    ])
    assert.deepEqual(
      sqlOf('own-slots').filter(s => s.sql.startsWith('SELECT pg_drop')),
      [
        {node: 'node1', sql: "SELECT pg_drop_replication_slot('shop_node1_node2')"},
        {node: 'node1', sql: "SELECT pg_drop_replication_slot('shop_node1_node3')"},
      ],
    )
    assert.deepEqual(sqlOf('own-publication'), [{node: 'node1', sql: 'DROP PUBLICATION "shop"'}])

    const text = await h.runCli(['remove-node', 'node1', '-c', cfg, '--dry-run'])
    assert.equal(text.code, 0, text.stderr)
    assert.match(text.stdout, /\[node3\] SELECT pg_drop_replication_slot\('shop_node3_node1'\)/)
    assert.match(text.stdout, /nothing was changed/)

    const forced = h.parseJson<RemoveNodeResult>(await h.runCli(['remove-node', 'node1', '-c', cfg, '--dry-run', '--force', '--json']))
    assert.deepEqual(forced.steps.map(s => s.id), FORCE_STEPS)
    assert.ok(forced.steps.flatMap(s => s.sql).length > 0, '--force plans SQL on the peers')
    assert.notEqual(forced.steps.flatMap(s => s.sql).length, 0, '--force plans SQL on the other nodes')
    assert.ok(forced.steps.flatMap(s => s.sql).every(s => s.node !== 'node1'), '--force plans nothing on node1')
    assert.ok(forced.steps.every(s => !s.nodes.includes('node1')), '--force plans nothing on node1')

    assert.deepEqual(await allObjects(servers), before)
    assert.deepEqual(configNodes(cfg), ['node1', 'node2', 'node3'])
    assert.deepEqual(journalOps(dir), {})
  })

  it('a drain that cannot finish fails with exit 15, names the lagging peer and changes nothing', async () => {
    // node2 stops receiving from node1; node1 commits more
    await h.sql(servers[1], 'ALTER SUBSCRIPTION "shop_node1_node2" DISABLE')
    await h.withCleanup(
      async () => {
        await h.sql(servers[0], "INSERT INTO public.departments VALUES (100, 'undelivered')")
        const before = await allObjects(servers)
        const t0 = Date.now()
        const r = await h.runCli(['remove-node', 'node1', '-c', cfg, '--yes', '--drain-timeout', '2s'])
        assert.equal(r.code, 15, r.stderr + r.stdout)
        assert.ok(Date.now() - t0 < 90_000, 'the 2 s drain timeout ended the run (not a wait without end)')
        assert.match(r.stderr, /node1's changes did not reach every peer within 2 s .*nothing was removed/)
        assert.match(r.stderr, /node2: .*slot shop_node1_node2 INACTIVE/)
        assert.doesNotMatch(r.stderr, /^\s+node3:/m, 'node3 had received everything')
        assert.deepEqual(await allObjects(servers), before)
        assert.deepEqual(configNodes(cfg), ['node1', 'node2', 'node3'])
        assert.deepEqual(journalOps(dir), {}, 'no unfinished operation is left behind')
        assert.equal(history(dir).at(-1)?.result, 'abandoned')
      },
      () => h.sql(servers[1], 'ALTER SUBSCRIPTION "shop_node1_node2" ENABLE'),
    )
    await h.waitConverged(servers, 'public.departments', 11)
  })

  it('removes node1 under continuous writes: everything it committed arrives, the others keep replicating', async () => {
    const loadX = new WriteLoad().start([{label: 'node1', server: servers[0], index: 1}], {hard: true})
    const loadRest = new WriteLoad().start(
      [
        {label: 'node2', server: servers[1], index: 2},
        {label: 'node3', server: servers[2], index: 3},
      ],
      {hard: true},
    )
    await h.waitFor(async () => loadX.report.commits > 100 && loadRest.report.commits > 200, 'writes on every node')
    await loadX.stop()
    // node1's last transaction is held up on node2 (an uncommitted row with one of its keys
    // blocks the apply) until the removal is draining: only the drain gets it there
    const blocker = new pg.Client({connectionString: servers[1].dsn()})
    await blocker.connect()
    let r!: h.CliResult
    let ms!: number
    const before = loadRest.report.commits
    await h.withCleanup(
      async () => {
        await blocker.query('BEGIN')
        await blocker.query("INSERT INTO public.users (id, name) VALUES (1900000001, 'blocker')")
        await h.sql(servers[0], "INSERT INTO public.users SELECT g, 1, 'last ' || g, 'node1' FROM generate_series(1900000001, 1900001000) g")
        await h.waitFor(
          async () => (await h.sql(servers[1], "SELECT 1 FROM pg_stat_activity WHERE backend_type = 'logical replication apply worker' AND wait_event_type = 'Lock'")).length > 0,
          "node2's apply of node1's last transaction to wait",
        )
        const t0 = Date.now()
        let finished = false
        const run = h.runCli(['remove-node', 'node1', '-c', cfg, '--yes', '--json']).finally(() => (finished = true))
        await h.waitFor(async () => finished || journalOps(dir)['remove-node:node1']?.values.drainLsn !== undefined, 'the drain to start')
        await blocker.query('ROLLBACK')
        r = await run
        ms = Date.now() - t0
      },
      () => blocker.end(),
    )
    assert.equal(r.code, 0, r.stderr + r.stdout)
    assert.ok(loadRest.report.commits > before, 'the remaining nodes took writes during the removal')
    await h.waitFor(async () => loadRest.report.commits > before + 100, 'writes after the removal')
    const rest = await loadRest.stop()
    const out = h.parseJson<RemoveNodeResult>(r)
    console.log(`      remove-node of a live node: ${ms} ms; ${rest.commits} commits on the others meanwhile`)

    assert.equal(out.removed, 'node1')
    assert.equal(out.force, false)
    assert.equal(out.changed, true)
    assert.deepEqual(out.remaining, ['node2', 'node3'])
    assert.match(out.drainLsn ?? '', /^[0-9A-F]+\/[0-9A-F]+$/)
    assert.deepEqual(out.steps.map(s => [s.id, s.status]), LIVE_STEPS.map(id => [id, 'done']))
    assert.deepEqual(out.peers.map(p => p.node), ['node2', 'node3'])
    for (const p of out.peers) {
      assert.equal(typeof p.retainedWalFreedBytes, 'number', `retained WAL of ${p.node}'s slot for node1`)
      assert.ok(p.retainedWalFreedBytes! >= 0)
    }
    assert.equal(out.diverged, false)
    assert.deepEqual(out.leftOnRemoved, [])

    // every acknowledged write of every writer, node1's included, on both remaining nodes
    await verifyLoad([servers[1], servers[2]], mergeReports(loadX.report, rest), 1000)
    await assertGone(
      [
        {name: 'node2', server: servers[1]},
        {name: 'node3', server: servers[2]},
      ],
      'node1',
    )
    assert.deepEqual(await h.meshObjects(servers[0]), {pubs: [], slots: [], subs: []}, 'node1 keeps nothing of the mesh')
    assert.deepEqual(configNodes(cfg), ['node2', 'node3'])
    assert.deepEqual(journalOps(dir), {})
    const done = history(dir).at(-1)!
    assert.equal(done.key, 'remove-node:node1')
    assert.equal(done.result, 'completed')
    assert.equal(done.values.drainLsn, out.drainLsn)
    await assertStatusOk(cfg, ['node2', 'node3'])
    // node1 no longer receives anything (the loads are stopped: nothing else changes)
    const onX = await h.tableDigest(servers[0], 'public.departments')
    await h.sql(servers[1], "INSERT INTO public.departments VALUES (200, 'after removal')")
    await h.waitFor(async () => (await h.sql(servers[2], 'SELECT 1 FROM public.departments WHERE id = 200')).length === 1, 'the new row on node3')
    assert.deepEqual(await h.tableDigest(servers[0], 'public.departments'), onX)
  })

  const killPoints = [...LIVE_STEPS, 'peer-subscriptions/0', 'peer-slots/1']
  let round = 0
  for (const point of killPoints) {
    it(`SIGKILL after ${point}, re-run: completes with the same end state`, async () => {
      // a fresh 3-node mesh from node2's data
      cfg = await rebuild(servers, dir, 1)
      round++
      const base = 100_000_000 * round
      const before = (await h.tableDigest(servers[1], 'public.users')).count
      // the hard load on every node (several writers, INSERT/UPDATE/DELETE over both tables),
      // stopped before the removal as the README asks
      const load = new WriteLoad().start(servers.map((s, i) => ({label: `k${round}n${i + 1}`, server: s, index: 100 + round * 3 + i})), {hard: true})
      await h.waitFor(async () => load.report.commits >= 90, 'writes on every node')
      const report = await load.stop()
      const written = [...report.acked.values()].reduce((a, m) => a + m.size, 0)
      const expected = before + written
      const killed = await h.runCli(['remove-node', 'node1', '-c', cfg, '--yes'], {env: {MMLITE_FAULT_KILL_AFTER: point}})
      assert.equal(killed.signal, 'SIGKILL', `expected the run to die at ${point}\n${killed.stdout}\n${killed.stderr}`)
      assert.ok(journalOps(dir)['remove-node:node1'], 'the killed run left its journal entry')

      const again = await h.runCli(['remove-node', 'node1', '-c', cfg, '--yes', '--json'])
      assert.equal(again.code, 0, again.stderr + again.stdout)
      const out = h.parseJson<RemoveNodeResult>(again)
      assert.equal(out.resumed, true)
      assert.equal(out.removed, 'node1')
      assert.deepEqual(journalOps(dir), {})
      assert.deepEqual(configNodes(cfg), ['node2', 'node3'])
      const remaining = [
        {name: 'node2', server: servers[1]},
        {name: 'node3', server: servers[2]},
      ]
      await assertGone(remaining, 'node1')
      assert.deepEqual(await h.meshObjects(servers[0]), {pubs: [], slots: [], subs: []})
      // every acknowledged write of every node, node1's included, with its last value, and the
      // full content of both tables identical on the remaining nodes
      await verifyLoad([servers[1], servers[2]], report, before)
      // the remaining two still replicate both ways
      await h.writeOnEveryNode([servers[1], servers[2]], 5, base + 50_000_000)
      await h.waitConverged([servers[1], servers[2]], 'public.users', expected + 10)
      for (const s of servers) assert.equal(await h.applyErrors(s), 0)
    })
  }
})

// ---------------------------------------------------------------------------------------------

/** Freeze a server (postmaster and every child): dead without saying goodbye; its TCP peers linger. */
function processTree(s: LocalServer): number[] {
  const pm = Number(readFileSync(path.join(s.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0])
  const children = readdirSync('/proc')
    .filter(d => /^\d+$/.test(d))
    .filter(d => {
      try {
        // pid (comm) state ppid ...: comm may contain spaces, so split after the last ')'
        const stat = readFileSync(`/proc/${d}/stat`, 'utf8')
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pm
      } catch {
        return false
      }
    })
    .map(Number)
  return [pm, ...children]
}

describe('remove-node --force: a dead node of a 3-node PostgreSQL 15 mesh (plugin)', function () {
  this.timeout(300_000)
  let servers: LocalServer[]
  let dir: string
  let cfg: string
  let frozen: number[] = []

  before(async () => {
    servers = await h.startServers([15, 15, 15])
    await h.createSchema(servers)
    await h.sql(servers[0], "INSERT INTO public.departments SELECT g, 'dept ' || g FROM generate_series(1, 10) g")
    ;({dir, cfg} = await h.initCluster(servers))
  })
  after(async () => {
    for (const pid of frozen) {
      try {
        process.kill(pid, 'SIGCONT')
      } catch {
        /* gone */
      }
    }
    await stopAllStarted()
  })

  it('removes a stopped node3 without contacting it; equal origin progress on both peers', async () => {
    const loadX = new WriteLoad().start([{label: 'node3', server: servers[2], index: 3}], {hard: true})
    const loadRest = new WriteLoad().start(
      [
        {label: 'node1', server: servers[0], index: 1},
        {label: 'node2', server: servers[1], index: 2},
      ],
      {hard: true},
    )
    await h.waitFor(async () => loadX.report.commits > 100 && loadRest.report.commits > 200, 'writes on every node')
    const x = await loadX.stop()
    // node3's writes reached both peers before it died (nothing of it is lost): both peers have
    // confirmed node3's WAL up to its end as it stood when its writers stopped
    const end = (await h.sql<{lsn: string}>(servers[2], 'SELECT pg_current_wal_lsn()::text AS lsn'))[0].lsn
    await h.waitFor(
      async () =>
        (
          await h.sql<{n: number}>(
            servers[2],
            "SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name IN ('shop_node3_node1', 'shop_node3_node2') AND confirmed_flush_lsn >= $1::pg_lsn",
            [end],
          )
        )[0].n === 2,
      `both peers to confirm node3's WAL up to ${end}`,
    )
    await servers[2].stop('fast')
    const before = loadRest.report.commits
    const r = await h.runCli(['remove-node', 'node3', '-c', cfg, '--force', '--yes', '--json'])
    assert.equal(r.code, 0, r.stderr + r.stdout)
    assert.ok(loadRest.report.commits > before, 'the remaining nodes took writes during the removal')
    const rest = await loadRest.stop()
    const out = h.parseJson<RemoveNodeResult>(r)

    assert.equal(out.force, true)
    assert.equal(out.drainLsn, null)
    assert.deepEqual(out.steps.map(s => [s.id, s.status]), FORCE_STEPS.map(id => [id, 'done']))
    assert.deepEqual(out.peers.map(p => p.node), ['node1', 'node2'])
    const [p1, p2] = out.peers
    assert.match(p1.originProgress ?? '', /^[0-9A-F]+\/[0-9A-F]+$/)
    assert.notEqual(p1.originProgress, '0/0')
    assert.equal(p1.originProgress, p2.originProgress, 'both peers got all of node3')
    for (const p of out.peers) assert.ok((p.retainedWalFreedBytes ?? -1) >= 0)
    assert.equal(out.diverged, false)
    assert.equal(out.divergence, null)
    assert.deepEqual(out.furthest, ['node1', 'node2'])
    assert.ok(out.leftOnRemoved.includes('DROP PUBLICATION "shop"'))
    // the progress was recorded in the journal before the subscriptions were dropped
    const done = history(dir).at(-1)!
    assert.deepEqual(done.values.originProgress, {node1: p1.originProgress, node2: p2.originProgress})

    await verifyLoad([servers[0], servers[1]], mergeReports(x, rest))
    await assertGone(
      [
        {name: 'node1', server: servers[0]},
        {name: 'node2', server: servers[1]},
      ],
      'node3',
    )
    assert.deepEqual(configNodes(cfg), ['node1', 'node2'])
    assert.deepEqual(journalOps(dir), {})
    await assertStatusOk(cfg, ['node1', 'node2'])
  })

  it('a frozen node3 that one peer stopped receiving from: the report says which peer has more', async () => {
    // independent of the test before (which stops node3 for good): start it only if it is down
    if (!servers[2].running) await servers[2].start()
    cfg = await rebuild(servers, dir, 0)
    // node1 stops receiving from node3; node3 commits more, which only node2 gets
    await h.sql(servers[0], 'ALTER SUBSCRIPTION "shop_node3_node1" DISABLE')
    await h.sql(servers[2], "INSERT INTO public.users SELECT g, 1, 'late ' || g, 'node3' FROM generate_series(900000001, 900000020) g")
    const late = Array.from({length: 20}, (_, i) => 900000001 + i)
    await h.waitFor(async () => (await countIds(servers[1], late)) === 20, "node3's late writes on node2")
    // dead without goodbye: the peers' walsenders serving node3's subscriptions stay active
    frozen = processTree(servers[2])
    for (const pid of frozen) process.kill(pid, 'SIGSTOP')
    const logs = await Promise.all([servers[0].readLog(), servers[1].readLog()])

    const t0 = Date.now()
    const r = await h.runCli(['remove-node', 'node3', '-c', cfg, '--force', '--yes', '--connect-timeout', '2'])
    assert.equal(r.code, 0, r.stderr + r.stdout)
    assert.ok(Date.now() - t0 < 45_000, 'did not wait for wal_sender_timeout')
    assert.match(r.stdout, /node1: .*got node3's changes up to [0-9A-F]+\/[0-9A-F]+/)
    assert.match(r.stdout, /WARNING: the peers got different amounts of node3's changes: node2 \(up to [0-9A-F/]+\) got more than node1 \(up to [0-9A-F/]+\); the cluster may have diverged: node2 holds changes from node3 that node1 lacks/)
    const values = history(dir).at(-1)!.values.originProgress as Record<string, string>
    const lsn = (s: string) => s.split('/').reduce((a, x) => a * 2 ** 32 + parseInt(x, 16), 0)
    assert.ok(lsn(values.node2) > lsn(values.node1), JSON.stringify(values))
    // the walsenders that served the frozen node were terminated, not waited out
    const after = await Promise.all([servers[0].readLog(), servers[1].readLog()])
    const terminated = after.map((l, i) => (l.slice(logs[i].length).match(/terminating connection due to administrator command/g) ?? []).length)
    assert.ok(terminated[0] + terminated[1] >= 1, `no walsender was terminated: ${terminated}`)

    // the divergence is real: node2 has node3's late rows, node1 does not
    assert.equal(await countIds(servers[0], late), 0)
    assert.equal(await countIds(servers[1], late), 20)
    await assertGone(
      [
        {name: 'node1', server: servers[0]},
        {name: 'node2', server: servers[1]},
      ],
      'node3',
    )
    assert.deepEqual(configNodes(cfg), ['node1', 'node2'])
    assert.deepEqual(journalOps(dir), {})
    // the remaining two replicate both ways
    const w = await h.writeOnEveryNode([servers[0], servers[1]], 5, 700_000_000)
    for (const s of [servers[0], servers[1]]) {
      await h.waitFor(async () => (await countIds(s, [...w.get(0)!, ...w.get(1)!])) === 10, `new writes on ${s.name}`)
    }
    await assertStatusOk(cfg, ['node1', 'node2'])
  })
})

describe('remove-node: the last node', function () {
  it('is refused with exit 10 (no server needed: nothing is contacted)', async () => {
    const dir = await h.tempDir()
    const cfg = path.join(dir, 'mmlite.yaml')
    const {writeFile} = await import('node:fs/promises')
    await writeFile(cfg, 'cluster: shop\ntables: [public.users]\nnodes:\n  - name: only\n    dsn: postgresql://postgres@127.0.0.1:1/postgres\n')
    const r = await h.runCli(['remove-node', 'only', '-c', cfg, '--yes'])
    assert.equal(r.code, 10, r.stderr)
    assert.match(r.stderr, /node "only" is the last node of cluster "shop"/)
    assert.deepEqual(configNodes(cfg), ['only'])
  })
})
