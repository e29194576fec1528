/**
 * `mmlite add-node --strategy standby` on real servers: PostgreSQL 15 (our output plugin, the
 * standby made with pg_basebackup -R -X stream -C -S) and 18 (native origin = none, the
 * standby made with pg_backup_start + file copy that keeps the source's slot files).
 *
 *  - under continuous writes on every existing node for the whole join (the hard load of
 *    test/helpers/load.ts: several writers per node, INSERT/UPDATE/DELETE in transactions over
 *    both tables), 3 nodes → 4: every acknowledged write is on every node exactly once, with its
 *    last value, deleted rows absent, full contents of both tables identical everywhere (the
 *    source included); clients on every node keep committing; the source's inbound pause and
 *    its duration are reported;
 *  - the promoted standby never uses the source's slots: sampled on the new node, and from the
 *    logs (the new node never starts an apply worker for a subscription named for the source;
 *    the other nodes see no START_REPLICATION on the source's slots beyond the source's own);
 *  - a server that is not a standby of the source is refused and nothing changes;
 *  - and the danger the procedure avoids is real: a naively promoted clone does consume the
 *    source's slot and the source loses changes (which also shows the checks above can fail).
 */
import assert from 'node:assert/strict'
import {existsSync, readFileSync} from 'node:fs'
import path from 'node:path'
import {LocalServer, stopAllStarted, type PgMajor} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'
import {LockWaitSampler, WriteLoad, mergeReports, verifyLoad} from '../helpers/load.js'
import {SourceSlotGuard, applyWorkerStarts, createStandby, logReplicationCommands, replicationStarts} from '../helpers/standby.js'

interface AddJson {
  node: string
  strategy: string
  source: string
  changed: boolean
  sourcePause: {node: string; subscriptions: string[]; ms: number | null; pauses: Array<{ms: number | null}>} | null
  promotedLsn: string | null
  steps: Array<{id: string; status: string}>
}

function journalOps(dir: string): Record<string, unknown> {
  const f = path.join(dir, '.mmlite/journal.json')
  return existsSync(f) ? JSON.parse(readFileSync(f, 'utf8')).operations : {}
}

function history(dir: string): Array<{key: string; values: Record<string, unknown>}> {
  const f = path.join(dir, '.mmlite/history.jsonl')
  return existsSync(f) ? readFileSync(f, 'utf8').trim().split('\n').map(l => JSON.parse(l)) : []
}

const SEED = 500

for (const major of [15, 18] as PgMajor[]) {
  const method = major === 15 ? 'pg_basebackup' : 'pg_backup_start + file copy'
  describe(`add-node --strategy standby on PostgreSQL ${major} (${major >= 16 ? 'native' : 'plugin'}, ${method})`, function () {
    this.timeout(300_000)
    let servers: LocalServer[]
    let dir: string
    let cfg: string
    const addArgs = (x: LocalServer) => ['add-node', 'node4', '--dsn', x.dsn(), '--strategy', 'standby', '--source', 'node1', '--yes', '-c', cfg]

    before(async () => {
      servers = await h.startServers([major, major, major])
      await h.createSchema(servers)
      await h.sql(servers[0], "INSERT INTO public.departments SELECT g, 'dept ' || g FROM generate_series(1, 10) g")
      await h.sql(servers[0], `INSERT INTO public.users SELECT g, g % 10 + 1, 'seed ' || g, 'node1' FROM generate_series(1, ${SEED}) g`)
      ;({dir, cfg} = await h.initCluster(servers))
      await h.waitConverged(servers, 'public.users', SEED)
      await logReplicationCommands(servers)
    })
    after(() => stopAllStarted())

    it('refuses a server that is not a standby of the source, and changes nothing', async () => {
      const state = async () => ({
        objects: await Promise.all(servers.map(s => h.meshObjects(s))),
        enabled: await h.sql(servers[0], 'SELECT subname, subenabled FROM pg_subscription ORDER BY 1'),
        slots: await h.sql(servers[0], "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'shop%' ORDER BY 1"),
        config: readFileSync(cfg, 'utf8'),
        journal: journalOps(dir),
      })
      const before = await state()

      // a primary of its own (never a standby)
      const plain = await LocalServer.start({major, name: 'plain'})
      await h.createSchema([plain])
      let r = await h.runCli(['add-node', 'node4', '--dsn', plain.dsn(), '--strategy', 'standby', '--source', 'node1', '--yes', '-c', cfg])
      assert.equal(r.code, 11, r.stderr + r.stdout)
      assert.match(r.stderr, /nothing was changed/)
      assert.match(r.stderr, /\[node4\] standby: node4 is not a copy of node1: its system identifier \d+ differs/)
      assert.match(r.stderr, /\[node4\] standby: node4 is not in recovery/)
      assert.deepEqual(await state(), before)
      await plain.destroy()

      // a streaming standby, but of node2
      const other = await createStandby(servers[1], {name: 'sb2', slot: null})
      r = await h.runCli(['add-node', 'node4', '--dsn', other.dsn(), '--strategy', 'standby', '--source', 'node1', '--yes', '-c', cfg])
      assert.equal(r.code, 11, r.stderr + r.stdout)
      assert.match(r.stderr, /node4 is not a copy of node1/)
      assert.match(r.stderr, /node4 streams from 127\.0\.0\.1:\d+, which is not node1/)
      assert.match(r.stderr, /node4 does not hold node1's subscription shop_node2_node1/)
      assert.deepEqual(await state(), before)

      // --dry-run against it is refused the same way
      r = await h.runCli(['add-node', 'node4', '--dsn', other.dsn(), '--strategy', 'standby', '--source', 'node1', '--dry-run', '-c', cfg])
      assert.equal(r.code, 11)
      await other.destroy()
      assert.deepEqual(await state(), before)
    })

    it('joins a standby of node1 under continuous writes on every node: exact, only the inbound apply of node1 pauses', async () => {
      const load = new WriteLoad().start(servers.map((s, i) => ({label: `node${i + 1}`, server: s, index: i + 1})), {hard: true})
      // the load stops even when the test fails; a writer's error then never hides the test's
      await h.withCleanup(async () => {
        const x = await createStandby(servers[0], {name: 'node4'})
        const sourceSlots = ['shop_node2_node1', 'shop_node3_node1']
        if (major === 18) {
          // the file copy kept node1's slots: the join must drop them on node4
          const inherited = await h.sql<{slot_name: string}>(x, 'SELECT slot_name FROM pg_replication_slots ORDER BY 1')
          assert.deepEqual(inherited.map(r => r.slot_name), ['node4_feed', 'shop_node1_node2', 'shop_node1_node3'])
        }
        const guard = new SourceSlotGuard(x, sourceSlots).start()
        const startsBefore = await Promise.all([
          replicationStarts(servers[1], 'shop_node2_node1'),
          replicationStarts(servers[2], 'shop_node3_node1'),
          applyWorkerStarts(servers[0], 'shop_node2_node1'),
          applyWorkerStarts(servers[0], 'shop_node3_node1'),
        ])
        // acknowledged transactions per writer (the fresh users id of each is n: the number of
        // the writer's next transaction is the size of its live + deleted users rows)
        const acked = () => [...load.report.acked.entries()].map(([l, m]) => m.size + load.report.deletedUsers!.get(l)!.size)
        const ackedBefore = acked()
        const t0 = Date.now()
        const json = major === 18
        const locks = new LockWaitSampler(servers).start()
        const r = await h.runCli([...addArgs(x), ...(json ? ['--json'] : [])])
        const joinMs = Date.now() - t0
        await locks.stop()
        const ackedAfter = acked()
        assert.equal(r.code, 0, r.stderr + r.stdout)
        assert.equal(ackedAfter.length, 9, 'three writers on each of the three nodes')
        ackedAfter.forEach((n, i) => assert.ok(n > ackedBefore[i], `writer ${[...load.report.acked.keys()][i]} kept committing during the join (${ackedBefore[i]} → ${n})`))

        // the pause of node1's inbound subscriptions, and its duration, are reported
        let pauseMs: number
        if (json) {
          const res = h.parseJson<AddJson>(r)
          assert.equal(res.strategy, 'standby')
          assert.ok(res.sourcePause, 'sourcePause reported')
          assert.equal(res.sourcePause.node, 'node1')
          assert.deepEqual(res.sourcePause.subscriptions, sourceSlots)
          assert.equal(typeof res.sourcePause.ms, 'number')
          pauseMs = res.sourcePause.ms!
          assert.match(res.promotedLsn ?? '', /^[0-9A-F]+\/[0-9A-F]+$/)
        } else {
          const m = /Source node1: inbound subscriptions \(shop_node2_node1, shop_node3_node1\) were paused for (\d+) ms; clients were never paused/.exec(r.stdout)
          assert.ok(m, r.stdout)
          pauseMs = Number(m[1])
          assert.match(r.stdout, /node4 promoted at [0-9A-F]+\/[0-9A-F]+/)
        }
        assert.ok(pauseMs > 0 && pauseMs <= joinMs, `pause ${pauseMs} ms within the join's ${joinMs} ms`)
        const hist = history(dir).filter(e => e.key === 'add-node:node4').at(-1)
        assert.ok(hist, 'the finished operation is in history.jsonl')
        assert.equal((hist.values.pauses as Array<{ms: number}>)[0].ms, pauseMs)
        // clients never pause: no writer's longest gap between two commits exceeds the reported
        // pause of the source's inbound apply (plus scheduling slack on a small test box)
        // (and no client session waited for a lock on the replicated tables during the join: the
        // writers' keys are disjoint, so a wait could only be the join's; speed-independent)
        assert.deepEqual(locks.errors, [], 'the lock sampler could read every node')
        assert.ok(locks.evaluated > 5, `lock waits sampled ${locks.evaluated} times on every node`)
        assert.deepEqual(locks.waits, [], 'client sessions waited for a lock during the join')
        for (const [label, gap] of load.report.maxGapMs) assert.ok(gap <= pauseMs + 5000, `${label}: longest gap between commits ${gap} ms (source pause ${pauseMs} ms)`)

        // writes keep flowing, now also to node4; then stop and let everything drain
        const c0 = load.report.commits
        await h.waitFor(async () => load.report.commits > c0 + 30, 'more commits after the join')
        const report = await load.stop()
        await verifyLoad([...servers, x], report, SEED)
        await guard.stop()

        // the promoted standby never touched node1's slots
        assert.deepEqual(guard.violations, [])
        assert.deepEqual(guard.errors, [], 'the guard could sample node4 throughout')
        assert.ok(guard.evaluated > 10, `guard sampled the promoted node4 ${guard.evaluated} times (${guard.samples} samples in all)`)
        for (const sub of sourceSlots) assert.equal(await applyWorkerStarts(x, sub), 0, `node4 never started ${sub}`)
        const startsAfter = await Promise.all([
          replicationStarts(servers[1], 'shop_node2_node1'),
          replicationStarts(servers[2], 'shop_node3_node1'),
          applyWorkerStarts(servers[0], 'shop_node2_node1'),
          applyWorkerStarts(servers[0], 'shop_node3_node1'),
        ])
        for (const k of [0, 1]) {
          const onPublisher = startsAfter[k] - startsBefore[k]
          const bySource = startsAfter[k + 2] - startsBefore[k + 2]
          assert.ok(onPublisher >= 1 && onPublisher <= bySource, `START_REPLICATION on ${sourceSlots[k]}: ${onPublisher}, apply worker starts on node1: ${bySource}`)
        }

        // the mesh: node4 has its own slots and subscriptions only; the feed slot is gone
        assert.deepEqual(await h.meshObjects(x), {
          pubs: ['shop'],
          slots: ['shop_node4_node1', 'shop_node4_node2', 'shop_node4_node3'],
          subs: ['shop_node1_node4', 'shop_node2_node4', 'shop_node3_node4'],
        })
        assert.deepEqual(await h.sql(x, "SELECT slot_name FROM pg_replication_slots WHERE slot_name NOT LIKE 'shop%'"), [])
        assert.deepEqual(await h.sql(servers[0], "SELECT slot_name FROM pg_replication_slots WHERE slot_name = 'node4_feed'"), [])
        for (const s of [...servers, x]) {
          assert.equal(await h.applyErrors(s), 0, `apply errors on ${s.name}`)
          assert.doesNotMatch(await s.readLog(), /duplicate key|conflict detected/, `log of ${s.name}`)
        }
        assert.deepEqual(journalOps(dir), {})
        assert.match(readFileSync(cfg, 'utf8'), /name: node4/)
        const st = await h.runCli(['status', '--json', '-c', cfg])
        const status = h.parseJson<{health: string; nodes: unknown[]; links: Array<{status: string}>; unfinished: unknown[]}>(st)
        assert.equal(status.nodes.length, 4)
        assert.equal(status.links.length, 12)
        assert.deepEqual(status.unfinished, [])
        assert.ok(status.links.every(l => l.status === 'ok' || l.status === 'warning'), JSON.stringify(status.links))

        // and node4 is a full member: its writes (the hard load, on node4 alone) reach everyone,
        // and the full contents stay identical
        const load4 = new WriteLoad().start([{label: 'node4', server: x, index: 4}], {hard: true})
        await h.waitFor(async () => load4.report.commits >= 60, 'writes on node4')
        await verifyLoad([...servers, x], mergeReports(report, await load4.stop()), SEED)
      }, () => load.stop())
    })
  })
}

describe('add-node --strategy standby: why the source pauses (a naively promoted clone steals its slots)', function () {
  this.timeout(120_000)
  after(() => stopAllStarted())

  it('a clone promoted with its inherited subscriptions enabled consumes the source slot, and the source loses a change', async () => {
    const servers = await h.startServers([18, 18])
    await h.createSchema(servers)
    const dir = await h.tempDir()
    const cfg = await h.writeConfig(dir, servers)
    assert.equal((await h.runCli(['init', '-c', cfg, '--yes'])).code, 0)
    await logReplicationCommands(servers)
    const [s, p] = servers
    const clone = await createStandby(s, {name: 'clone', keepSlotFiles: false})
    const guard = new SourceSlotGuard(clone, ['shop_node2_node1']).start()
    const before = await replicationStarts(p, 'shop_node2_node1')
    const sourceStartsBefore = await applyWorkerStarts(s, 'shop_node2_node1')
    await h.sql(clone, 'SELECT pg_promote(true, 60)')
    // the source's walsender is in the way; once it goes, the clone takes the slot
    await h.sql(s, 'ALTER SUBSCRIPTION "shop_node2_node1" DISABLE')
    await h.waitFor(async () => guard.violations.length > 0 && (await applyWorkerStarts(clone, 'shop_node2_node1')) > 0, 'the clone to start the inherited subscription')
    await h.waitFor(
      async () => (await h.sql<{n: number}>(clone, "SELECT count(*)::int AS n FROM pg_stat_subscription st JOIN pg_subscription s ON s.oid = st.subid WHERE s.subname = 'shop_node2_node1' AND st.received_lsn IS NOT NULL"))[0].n > 0,
      'the clone to stream from slot shop_node2_node1',
    )
    await h.sql(p, "INSERT INTO public.departments VALUES (1, 'consumed by the clone')")
    await h.waitFor(async () => (await h.sql(clone, 'SELECT 1 FROM public.departments WHERE id = 1')).length === 1, 'the clone to apply it')
    await h.waitFor(
      async () => (await h.sql<{ok: boolean}>(p, "SELECT confirmed_flush_lsn >= pg_current_wal_lsn() AS ok FROM pg_replication_slots WHERE slot_name = 'shop_node2_node1'"))[0].ok,
      'the clone to confirm it on the source slot',
    )
    await guard.stop()
    assert.ok((await replicationStarts(p, 'shop_node2_node1')) - before > (await applyWorkerStarts(s, 'shop_node2_node1')) - sourceStartsBefore, 'the publisher saw more START_REPLICATION than the source started workers')
    await clone.destroy()
    await h.sql(s, 'ALTER SUBSCRIPTION "shop_node2_node1" ENABLE')
    await h.sql(p, "INSERT INTO public.departments VALUES (2, 'after')")
    await h.waitFor(async () => (await h.sql(s, 'SELECT 1 FROM public.departments WHERE id = 2')).length === 1, 'the source to resume')
    assert.deepEqual(await h.sql(s, 'SELECT id FROM public.departments ORDER BY 1'), [{id: 2}], 'the row the clone consumed never reaches the source')
  })
})
