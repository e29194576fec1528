/**
 * `mmlite add-node --strategy copy` on real servers, 3 existing nodes → 4, while every existing
 * node keeps writing with the hard load (test/helpers/load.ts: several writers per node,
 * INSERT/UPDATE/DELETE in transactions spanning both tables, every acknowledged write logged):
 * after the load stops and lag drains, every node, the source included, holds every
 * acknowledged write exactly once with its last value, no deleted row, and identical full
 * contents of both tables. The source's inbound pause is reported, and no client stalled
 * beyond it. PostgreSQL 15 (our plugin) and 18 (native).
 */
import assert from 'node:assert/strict'
import {readFile} from 'node:fs/promises'
import path from 'node:path'
import {stopAllStarted, type LocalServer, type PgMajor} from '../../src/local/server.js'
import {compareLsn} from '../../src/db/lsn.js'
import * as h from '../helpers/cluster.js'
import {LockWaitSampler, WriteLoad, mergeReports, verifyLoad, type LoadReport} from '../helpers/load.js'

interface AddJson {
  node: string
  source: string
  strategy: string
  changed: boolean
  links: Array<{from: string; to: string; mechanism: string}>
  steps: Array<{id: string; status: string; ms: number}>
  sourcePause: {node: string; subscriptions: string[]; ms: number; pauses: Array<{ms: number | null}>}
  copy: {attempts: number; originProgress: Array<{node: string; lsn: string}>; peerSlots: Array<{node: string; lsn: string}>; tables: Array<{table: string; rows: number}>}
  status: {health: string; links: Array<{from: string; to: string; status: string}>}
}

const SEED_USERS = 20_000

for (const major of [15, 18] as PgMajor[]) {
  describe(`add-node copy: 3 → 4 nodes under continuous writes on every node (PostgreSQL ${major})`, function () {
    this.timeout(600_000)
    let servers: LocalServer[]
    let x: LocalServer
    let dir: string
    let cfg: string

    before(async () => {
      const all = await h.startServers([major, major, major, major])
      servers = all.slice(0, 3)
      x = all[3]
      await h.createSchema(all)
      await h.sql(servers[0], "INSERT INTO public.departments SELECT g, 'dept ' || g FROM generate_series(1, 10) g")
      await h.sql(servers[0], `INSERT INTO public.users SELECT g, g % 10 + 1, repeat('seed ', 20) || g, 'node1' FROM generate_series(1, ${SEED_USERS}) g`)
      ;({dir, cfg} = await h.initCluster(servers))
      await h.waitConverged(servers, 'public.users', SEED_USERS)
    })
    after(() => stopAllStarted())

    it('joins node4 exactly while every node writes; the source pause is reported and no client stalls beyond it', async () => {
      const load = new WriteLoad().start(servers.map((s, i) => ({label: `node${i + 1}`, server: s, index: i + 1})), {hard: true})
      const locks = new LockWaitSampler(servers)
      let load4: WriteLoad | undefined
      let out!: AddJson
      let joinMs!: number
      // the loads stop even when the join fails; a writer's error then never hides the join's
      const report: LoadReport = await h.withCleanup(
        async () => {
          await h.waitFor(async () => load.report.commits >= 150, 'the load to get going')
          const t0 = Date.now()
          locks.start()
          const r = await h.runCli(['add-node', 'node4', '--dsn', x.dsn(), '-c', cfg, '--yes', '--json', '--jobs', '2', '--timeout', '120'], {timeoutMs: 400_000})
          joinMs = Date.now() - t0
          await locks.stop()
          assert.equal(r.code, 0, r.stderr + r.stdout)
          out = h.parseJson<AddJson>(r)
          if (process.env.MMLITE_TEST_VERBOSE) console.log(JSON.stringify({steps: out.steps, pause: out.sourcePause, copy: out.copy, joinMs}, null, 1))
          // the new node takes writes too once it has joined, and they reach everyone
          load4 = new WriteLoad().start([{label: 'node4', server: x, index: 4}], {hard: true})
          await h.waitFor(async () => load4!.report.commits >= 100, 'writes on node4')
          return mergeReports(await load.stop(), await load4.stop())
        },
        () => load.stop(),
        async () => load4?.stop(),
        () => locks.stop(),
      )

      assert.equal(out.node, 'node4')
      assert.equal(out.source, 'node1')
      assert.equal(out.strategy, 'copy')
      assert.equal(out.links.length, 6)
      for (const l of out.links) assert.equal(l.mechanism, major >= 16 ? 'native' : 'plugin')
      assert.deepEqual(
        out.steps.map(s => s.id),
        ['prepare', 'wait-peer-flush', 'pause-source', 'source-snapshot', 'copy', 'subscribe-source', 'subscribe-peers', 'node-slots', 'node-subscriptions', 'sequence-residue', 'wait-streaming', 'wait-caught-up'],
      )
      assert.equal(out.copy.attempts, 1)
      // the hard load writes departments too: at least the seed's 10 rows were copied
      assert.ok(out.copy.tables.find(t => t.table === 'public.departments')!.rows >= 10)
      assert.ok(out.copy.tables.find(t => t.table === 'public.users')!.rows >= SEED_USERS)
      // under load S applied more of every P after P's slot for node4 existed: the origin
      // advance past the slot's consistent point was exercised
      for (const p of ['node2', 'node3']) {
        const lsn = (list: Array<{node: string; lsn: string}>) => list.find(x => x.node === p)!.lsn
        assert.equal(compareLsn(lsn(out.copy.originProgress), lsn(out.copy.peerSlots)), 1, `R_${p} > L_${p}: ${JSON.stringify(out.copy)}`)
      }

      // the pause: reported, in JSON and in words
      assert.equal(out.sourcePause.node, 'node1')
      assert.deepEqual([...out.sourcePause.subscriptions].sort(), ['shop_node2_node1', 'shop_node3_node1'])
      assert.equal(typeof out.sourcePause.ms, 'number')
      assert.ok(out.sourcePause.ms < joinMs)
      // clients on every node kept committing: no client session ever waited for a lock on the
      // replicated tables during the join (sampled on every node; the writers' keys are
      // disjoint, so a wait could only be the join's), and no writer's longest gap between two
      // commits exceeds the reported pause by more than scheduling on a loaded test box explains
      assert.deepEqual(locks.errors, [], 'the lock sampler could read every node')
      assert.ok(locks.evaluated > 5, `lock waits sampled ${locks.evaluated} times on every node`)
      assert.deepEqual(locks.waits, [], 'client sessions waited for a lock during the join')
      for (const [label, gap] of report.maxGapMs) {
        assert.ok(gap <= out.sourcePause.ms + 5000, `${label} stalled ${gap} ms (source pause ${out.sourcePause.ms} ms, join ${joinMs} ms)`)
      }

      // every acknowledged write once with its last value, deletes absent, full contents of
      // users and departments identical on all four nodes (the source included)
      await verifyLoad([...servers, x], report, SEED_USERS)
      const seedDepts = await h.sql<{n: number}>(x, 'SELECT count(*)::int AS n FROM public.departments WHERE id BETWEEN 1 AND 10')
      assert.equal(seedDepts[0].n, 10, "the seed's departments on node4")
      for (const s of [...servers, x]) {
        assert.equal(await h.applyErrors(s), 0, `apply errors on ${s.name}`)
        assert.doesNotMatch(await s.readLog(), /duplicate key|ERROR: .*conflict/, `errors in the log of ${s.name}`)
        const o = await h.meshObjects(s)
        assert.equal(o.slots.length, 3)
        assert.equal(o.subs.length, 3)
      }
      // every subscription is enabled again (nothing stays paused), node4 is in mmlite.yaml
      for (const s of [...servers, x]) {
        const off = await h.sql<{subname: string}>(s, "SELECT subname FROM pg_subscription WHERE NOT subenabled AND subname LIKE 'shop%'")
        assert.deepEqual(off, [])
      }
      const yaml = await readFile(cfg, 'utf8')
      assert.match(yaml, /name: node4/)
      const journal = JSON.parse(await readFile(path.join(dir, '.mmlite/journal.json'), 'utf8'))
      assert.deepEqual(journal.operations, {})
      assert.equal(out.status.links.length, 12)

      const st = await h.runCli(['status', '-c', cfg, '--json'])
      const status = h.parseJson<{health: string; links: Array<{status: string}>}>(st)
      assert.equal(status.links.length, 12)
      for (const l of status.links) assert.notEqual(l.status, 'critical')

      // the words for humans
      const again = await h.runCli(['add-node', 'node4', '--dsn', x.dsn(), '-c', cfg, '--yes'])
      assert.equal(again.code, 11, again.stderr)
      assert.match(again.stderr, /already a member/)
    })
  })
}
