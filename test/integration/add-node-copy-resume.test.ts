/**
 * `add-node --strategy copy` killed with SIGKILL after every step (and inside the copy), then
 * re-run, while both existing nodes keep writing (the hard load of test/helpers/load.ts): it completes, every acknowledged write is on
 * every node exactly once, and nothing stays paused. A run killed while the source's inbound
 * subscriptions are paused shows them as `paused` in `status`, and the next run re-enables them
 * first. Also: an idle link confirms past a new slot's consistent point without any new
 * transaction (the keepalive path wait-peer-flush relies on). PostgreSQL 15 (our plugin).
 *
 * The servers are reused between rounds: the new node's objects are removed and its tables
 * emptied (resetX), the existing mesh stays as it is.
 */
import assert from 'node:assert/strict'
import {existsSync, readFileSync} from 'node:fs'
import {rm} from 'node:fs/promises'
import path from 'node:path'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import {COPY_STEP_IDS} from '../../src/steps/add-node-copy.js'
import {compareLsn} from '../../src/db/lsn.js'
import * as h from '../helpers/cluster.js'
import {WriteLoad, verifyLoad} from '../helpers/load.js'

const X = 'node3'

function journalOps(dir: string): Record<string, {values: Record<string, unknown>}> {
  const f = path.join(dir, '.mmlite/journal.json')
  return existsSync(f) ? JSON.parse(readFileSync(f, 'utf8')).operations : {}
}

async function dropSubscription(s: LocalServer, sub: string): Promise<void> {
  await h.sql(s, `ALTER SUBSCRIPTION "${sub}" DISABLE`)
  await h.sql(s, `ALTER SUBSCRIPTION "${sub}" SET (slot_name = NONE)`)
  await h.sql(s, `DROP SUBSCRIPTION "${sub}"`)
}

async function dropSlot(s: LocalServer, slot: string): Promise<void> {
  await h.waitFor(async () => {
    const r = await h.sql<{active: boolean}>(s, 'SELECT active FROM pg_replication_slots WHERE slot_name = $1', [slot])
    if (r.length === 0) return true
    if (r[0].active) {
      await h.sql(s, 'SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL', [slot])
      return false
    }
    await h.sql(s, 'SELECT pg_drop_replication_slot($1)', [slot])
    return true
  }, `slot ${slot} dropped on ${s.name}`)
}

describe('add-node copy: SIGKILL after each step, then re-run (PostgreSQL 15)', function () {
  this.timeout(900_000)
  let servers: LocalServer[]
  let x: LocalServer
  let dir: string
  let cfg: string
  let round = 0

  before(async () => {
    const all = await h.startServers([15, 15, 15])
    servers = all.slice(0, 2)
    x = all[2]
    await h.createSchema(all)
    await h.sql(servers[0], "INSERT INTO public.departments SELECT g, 'dept ' || g FROM generate_series(1, 10) g")
    await h.sql(servers[0], "INSERT INTO public.users SELECT g, g % 10 + 1, 'seed ' || g, 'node1' FROM generate_series(1, 20000) g")
    ;({dir, cfg} = await h.initCluster(servers))
    await h.waitConverged(servers, 'public.users', 20000)
    // node1 has applied something from node2 (its origin progress exists)
    await h.writeOnEveryNode(servers, 5)
    await h.waitConverged(servers, 'public.users', 20010)
  })
  after(() => stopAllStarted())

  /** Remove everything of X from the mesh, empty X, forget the run; the existing mesh stays. */
  async function resetX(): Promise<void> {
    for (const s of [...servers, x]) {
      for (const sub of (await h.meshObjects(s)).subs) if (s === x || sub.endsWith(`_${X}`) || sub.includes(`_${X}_`)) await dropSubscription(s, sub)
    }
    for (const s of [...servers, x]) {
      for (const slot of (await h.meshObjects(s)).slots) if (s === x || slot.endsWith(`_${X}`)) await dropSlot(s, slot)
    }
    for (const p of (await h.meshObjects(x)).pubs) await h.sql(x, `DROP PUBLICATION "${p}"`)
    await h.sql(x, 'TRUNCATE public.users, public.departments')
    for (const s of servers) {
      for (const r of await h.sql<{subname: string}>(s, "SELECT subname FROM pg_subscription WHERE NOT subenabled AND subname LIKE 'shop%'")) {
        await h.sql(s, `ALTER SUBSCRIPTION "${r.subname}" ENABLE`)
      }
    }
    await h.writeConfig(dir, servers)
    await rm(path.join(dir, '.mmlite'), {recursive: true, force: true})
  }

  const addNode = (env: NodeJS.ProcessEnv = {}) => h.runCli(['add-node', X, '--dsn', x.dsn(), '-c', cfg, '--yes', '--jobs', '1'], {env, timeoutMs: 300_000})

  async function assertJoined(): Promise<void> {
    assert.deepEqual(journalOps(dir), {}, 'journal closed')
    assert.match(readFileSync(cfg, 'utf8'), new RegExp(`name: ${X}`))
    for (const s of [...servers, x]) {
      const o = await h.meshObjects(s)
      assert.equal(o.pubs.length, 1, `publication on ${s.name}`)
      assert.equal(o.slots.length, 2, `slots on ${s.name}: ${o.slots.join(', ')}`)
      assert.equal(o.subs.length, 2, `subscriptions on ${s.name}: ${o.subs.join(', ')}`)
      const off = await h.sql<{subname: string}>(s, "SELECT subname FROM pg_subscription WHERE NOT subenabled AND subname LIKE 'shop%'")
      assert.deepEqual(off, [], `disabled subscriptions on ${s.name}`)
      assert.equal(await h.applyErrors(s), 0, `apply errors on ${s.name}`)
    }
  }

  it('enumerates the steps of the real procedure', async () => {
    const r = await h.runCli(['add-node', X, '--dsn', x.dsn(), '-c', cfg, '--dry-run', '--json'])
    assert.equal(r.code, 0, r.stderr)
    const plan = h.parseJson<{steps: Array<{id: string; status: string}>}>(r)
    assert.deepEqual(plan.steps.map(s => s.id), [...COPY_STEP_IDS])
    // every step has work to do, but sequence-residue: this cluster's sequences are not staggered
    for (const s of plan.steps) assert.equal(s.status, s.id === 'sequence-residue' ? 'already-done' : 'planned', s.id)
  })

  it('an idle link confirms past a new slot\'s consistent point without any new transaction (keepalive path)', async () => {
    await resetX()
    const originOf = async () =>
      (
        await h.sql<{lsn: string}>(
          servers[0],
          "SELECT os.remote_lsn::text AS lsn FROM pg_replication_origin_status os JOIN pg_subscription s ON os.external_id = 'pg_' || s.oid WHERE s.subname = 'shop_node2_node1'",
        )
      )[0].lsn
    const before = await originOf()
    const killed = await addNode({MMLITE_FAULT_KILL_AFTER: 'prepare'})
    assert.equal(killed.signal, 'SIGKILL', killed.stdout + killed.stderr)
    const L = (journalOps(dir)[`add-node:${X}`].values.peerSlots as Record<string, string>).node2
    assert.equal(compareLsn(before, L), -1, `origin progress ${before} is before the consistent point ${L}`)
    let confirmed = ''
    await h.waitFor(async () => {
      confirmed = (await h.sql<{lsn: string}>(servers[1], "SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = 'shop_node2_node1'"))[0].lsn
      return compareLsn(confirmed, L) >= 0
    }, 'slot node2→node1 to confirm past the consistent point of node2→node3')
    // node1 applied nothing from node2 meanwhile: only keepalives moved the confirmation
    assert.equal(await originOf(), before)
    const again = await addNode()
    assert.equal(again.code, 0, again.stderr + again.stdout)
    await assertJoined()
    await h.waitConverged([...servers, x], 'public.users', (await h.tableDigest(servers[0], 'public.users')).count)
  })

  const killPoints = ['prepare/1', ...COPY_STEP_IDS, 'copy:first-table', 'subscribe-peers/0', 'node-subscriptions/1']
  for (const point of killPoints) {
    it(`killed after ${point} under writes on every node: re-run completes exactly, nothing stays paused`, async () => {
      await resetX()
      round++
      const base = (await h.tableDigest(servers[0], 'public.users')).count
      // the hard load (several writers per node, INSERT/UPDATE/DELETE over both tables); it
      // stops even when the round fails, and a writer's error never hides the round's
      const load = new WriteLoad().start(servers.map((s, i) => ({label: `node${i + 1}-r${round}`, server: s, index: round * 2 + i})), {hard: true})
      await h.withCleanup(() => runRound(point, load), () => load.stop())
      await assertJoined()
      // every acknowledged write once with its last value, deletes absent, full contents of
      // both tables identical on the three nodes (the source included)
      await verifyLoad([...servers, x], load.report, base)
    })
  }

  async function runRound(point: string, load: WriteLoad): Promise<void> {
    await h.waitFor(async () => load.report.commits >= 40, 'the load to get going')

    const killed = await addNode({MMLITE_FAULT_KILL_AFTER: point})
    assert.equal(killed.signal, 'SIGKILL', `expected the run to die at ${point}\n${killed.stdout}\n${killed.stderr}`)
    assert.ok(journalOps(dir)[`add-node:${X}`], 'the killed run left its journal entry')
    if (point === 'pause-source') {
      // killed while node1's inbound subscriptions are paused: status says so
      const off = await h.sql<{subname: string}>(servers[0], "SELECT subname FROM pg_subscription WHERE NOT subenabled ORDER BY 1")
      assert.deepEqual(off.map(r => r.subname), ['shop_node2_node1'])
      const st = h.parseJson<{links: Array<{from: string; to: string; status: string; reasons: string[]}>}>(await h.runCli(['status', '-c', cfg, '--json']))
      const link = st.links.find(l => l.from === 'node2' && l.to === 'node1')!
      assert.equal(link.status, 'paused')
      assert.match(link.reasons[0], /paused by unfinished mmlite add-node run/)
    }

    const again = await addNode()
    assert.equal(again.code, 0, again.stderr + again.stdout)
    if (point === 'pause-source') assert.match(again.stdout, /re-enabled on node1 the subscription\(s\) an interrupted run had paused.*shop_node2_node1/)
    if (['source-snapshot', 'copy:first-table'].includes(point)) assert.match(again.stdout, /dropping slot shop_node1_node3 of an interrupted copy/)
    await h.waitFor(async () => load.report.commits >= 80, 'more writes after the join')
  }
})
