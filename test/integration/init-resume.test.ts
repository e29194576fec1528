/**
 * `init` killed with SIGKILL after every step (and after single actions inside steps), then
 * re-run: it finishes, and the mesh is exact under the hard load on every node. A second concurrent init is refused at once.
 */
import assert from 'node:assert/strict'
import {existsSync, readFileSync} from 'node:fs'
import path from 'node:path'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'
import {WriteLoad, verifyLoad} from '../helpers/load.js'

function journalOps(dir: string): Record<string, {steps: Record<string, string>}> {
  const f = path.join(dir, '.mmlite/journal.json')
  return existsSync(f) ? JSON.parse(readFileSync(f, 'utf8')).operations : {}
}

describe('init: SIGKILL after each step, then re-run', function () {
  let servers: LocalServer[]
  let dir: string
  let cfg: string
  let round = 0
  before(async () => {
    servers = await h.startServers([15, 15, 15])
    await h.createSchema(servers)
    await h.sql(servers[0], "INSERT INTO public.departments SELECT g, 'dept ' || g FROM generate_series(1, 10) g")
    await h.sql(servers[0], "INSERT INTO public.users SELECT g, g % 10 + 1, 'seed ' || g, 'node1' FROM generate_series(1, 200) g")
    dir = await h.tempDir()
    cfg = await h.writeConfig(dir, servers)
  })
  after(() => stopAllStarted())

  it('enumerates the steps of the real procedure', async () => {
    const r = await h.runCli(['init', '-c', cfg, '--dry-run', '--json'])
    const plan = h.parseJson<{steps: Array<{id: string}>}>(r)
    assert.deepEqual(
      plan.steps.map(s => s.id),
      ['publications', 'slots', 'seed-subscriptions', 'wait-initial-copy', 'mesh-subscriptions', 'streaming', 'wait-streaming'],
    )
  })

  const killPoints = [
    'publications/1',
    'publications',
    'slots/2',
    'slots',
    'seed-subscriptions/0',
    'seed-subscriptions',
    'wait-initial-copy',
    'mesh-subscriptions/1',
    'mesh-subscriptions',
    'wait-streaming',
  ]
  for (const point of killPoints) {
    it(`killed after ${point}: re-run completes and every node converges`, async () => {
      await h.resetMesh(servers)
      const base = (await h.tableDigest(servers[0], 'public.users')).count
      const killed = await h.runCli(['init', '-c', cfg, '--yes'], {env: {MMLITE_FAULT_KILL_AFTER: point}})
      assert.equal(killed.signal, 'SIGKILL', `expected the run to die at ${point}\n${killed.stdout}\n${killed.stderr}`)
      assert.ok(journalOps(dir).init, 'the killed run left its journal entry')

      const again = await h.runCli(['init', '-c', cfg, '--yes'])
      assert.equal(again.code, 0, again.stderr + again.stdout)
      assert.deepEqual(journalOps(dir), {}, 'journal closed after the resumed run')
      for (const s of servers) {
        const o = await h.meshObjects(s)
        assert.equal(o.pubs.length, 1)
        assert.equal(o.slots.length, 2)
        assert.equal(o.subs.length, 2)
      }
      round++
      // the hard load on every node (several writers, INSERT/UPDATE/DELETE over both tables):
      // every acknowledged write once with its last value, full contents identical everywhere
      const load = new WriteLoad().start(servers.map((s, i) => ({label: `r${round}n${i + 1}`, server: s, index: round * 10 + i + 1})), {hard: true})
      await h.withCleanup(() => h.waitFor(async () => load.report.commits >= 90, 'writes on every node'), () => load.stop())
      await verifyLoad(servers, await load.stop(), base)
      for (const s of servers) assert.equal(await h.applyErrors(s), 0)
    })
  }
})

describe('init: a concurrent second run is refused', function () {
  after(() => stopAllStarted())

  it('fails at once with exit 12 naming the holder, while the first run finishes', async () => {
    const servers = await h.startServers([16, 16])
    await h.createSchema(servers)
    await h.sql(servers[0], "INSERT INTO public.departments VALUES (1, 'a'), (2, 'b')")
    const dir = await h.tempDir()
    const cfg = await h.writeConfig(dir, servers)
    // no table-sync workers on node2: the first run waits in its initial-copy step
    await h.sql(servers[1], 'ALTER SYSTEM SET max_sync_workers_per_subscription = 0')
    await h.reloadConf(servers[1])
    let firstDone = false
    const first = h.runCli(['init', '-c', cfg, '--yes']).finally(() => (firstDone = true))
    await h.withCleanup(
      async () => {
        await h.waitFor(async () => (await h.meshObjects(servers[1])).subs.length === 1, 'first run to reach the copy')
        const second = await h.runCli(['init', '-c', cfg, '--yes'])
        assert.equal(second.code, 12, second.stderr)
        assert.match(second.stderr, /another mmlite run holds the lock of cluster "shop"/)
        assert.match(second.stderr, /held by "mmlite init"/)
        // refused at once, not after waiting for the holder: the first run cannot finish before
        // the copy is allowed to start (below), whatever the machine's speed
        assert.equal(firstDone, false, 'the second run was refused while the first still ran')
      },
      () => h.sql(servers[1], 'ALTER SYSTEM RESET max_sync_workers_per_subscription'),
      () => h.reloadConf(servers[1]),
    )
    const r = await first
    assert.equal(r.code, 0, r.stderr)
    await h.sql(servers[1], "INSERT INTO public.departments VALUES (3, 'c')")
    await h.waitConverged(servers, 'public.departments', 3)
  })
})
