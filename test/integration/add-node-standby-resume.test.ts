/**
 * `add-node --strategy standby` killed with SIGKILL after every step (the steps are read from
 * `add-node --dry-run --json`), and after single actions, then re-run: it completes, every
 * node converges exactly under continuous writes (the hard load of test/helpers/load.ts: every
 * acknowledged write once with its last value, deletes absent, identical full contents of both
 * tables on every node, the source included), and nothing stays paused. Also a run that
 * died between two statements of one action (inherited subscription renamed, not yet pointed
 * at its own slot).
 */
import assert from 'node:assert/strict'
import {existsSync, readFileSync} from 'node:fs'
import path from 'node:path'
import {stopAllStarted, type LocalServer, type PgMajor} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'
import {WriteLoad, verifyLoad} from '../helpers/load.js'
import {SourceSlotGuard, createStandby, detachNode} from '../helpers/standby.js'
import {STANDBY_STEP_IDS} from '../../src/steps/add-node-standby.js'

function journalOps(dir: string): Record<string, {steps: Record<string, string>; values: Record<string, unknown>}> {
  const f = path.join(dir, '.mmlite/journal.json')
  return existsSync(f) ? JSON.parse(readFileSync(f, 'utf8')).operations : {}
}

const STEPS: string[] = [...STANDBY_STEP_IDS]

const SOURCE_SUBS = ['shop_node2_node1', 'shop_node3_node1']

function rounds(major: PgMajor): string[] {
  // every step on both; on PostgreSQL 15 also two single actions
  return major === 15 ? [...STEPS, 'copy-slots/1', 'repoint-subscriptions/0'] : STEPS
}

for (const major of [15, 18] as PgMajor[]) {
  describe(`add-node --strategy standby on PostgreSQL ${major}: SIGKILL after each step, then re-run`, function () {
    this.timeout(300_000)
    let servers: LocalServer[]
    let dir: string
    let cfg: string
    let round = 0
    const members = () => servers.map((s, i) => ({name: `node${i + 1}`, server: s}))
    const args = (x: LocalServer) => ['add-node', 'node4', '--dsn', x.dsn(), '--strategy', 'standby', '--source', 'node1', '--yes', '-c', cfg]

    before(async () => {
      servers = await h.startServers([major, major, major])
      await h.createSchema(servers)
      await h.sql(servers[0], "INSERT INTO public.users SELECT g, g % 10 + 1, 'seed ' || g, 'node1' FROM generate_series(1, 200) g")
      ;({dir, cfg} = await h.initCluster(servers))
      await h.waitConverged(servers, 'public.users', 200)
    })
    after(() => stopAllStarted())

    if (major === 15) {
      it('enumerates the steps of the real procedure', async () => {
        const x = await createStandby(servers[0], {name: 'node4'})
        await h.withCleanup(async () => {
          const r = await h.runCli(['add-node', 'node4', '--dsn', x.dsn(), '--strategy', 'standby', '--source', 'node1', '--dry-run', '--json', '-c', cfg])
          const plan = h.parseJson<{steps: Array<{id: string; status: string}>}>(r)
          assert.deepEqual(plan.steps.map(s => s.id), STEPS)
          for (const id of ['source-slot', 'pause-source', 'copy-slots', 'catch-up', 'promote', 'drop-feed-slot']) {
            assert.equal(plan.steps.find(s => s.id === id)?.status, 'planned', id)
          }
          assert.match(r.stdout, /ALTER SUBSCRIPTION \\"shop_node2_node1\\" DISABLE/)
          assert.match(r.stdout, /pg_copy_logical_replication_slot\('shop_node2_node1', 'shop_node2_node4', false, 'mmlite'\)/)
          assert.match(r.stdout, /SELECT pg_drop_replication_slot\('node4_feed'\)/)
          assert.deepEqual(journalOps(dir), {})
        }, () => detachNode(members(), x, 'node4', cfg))
      })
    }

    for (const point of rounds(major)) {
      it(`killed after ${point}: re-run completes, every node converges, nothing stays paused`, async () => {
        round++
        const base = (await h.tableDigest(servers[0], 'public.users')).count
        const load = new WriteLoad().start(servers.map((s, i) => ({label: `r${round}n${i + 1}`, server: s, index: round * 10 + i + 1})), {hard: true})
        let x: LocalServer | undefined
        // the load stops and node4 is detached even when the round fails; their errors never hide its own
        await h.withCleanup(async () => {
          x = await createStandby(servers[0], {name: 'node4'})
          const guard = new SourceSlotGuard(x, SOURCE_SUBS).start()
          const killed = await h.runCli(args(x), {env: {MMLITE_FAULT_KILL_AFTER: point}})
          assert.equal(killed.signal, 'SIGKILL', `expected the run to die at ${point}\n${killed.stdout}\n${killed.stderr}`)
          const op = journalOps(dir)['add-node:node4']
          assert.ok(op, 'the killed run left its journal entry')
          assert.ok(op.steps[point.split('/')[0]] || point.includes('/'), `step ${point} recorded`)

          const paused = (op.values.pausedSubscriptions as unknown[] | undefined) ?? []
          // from the end of pause-source until resume-source has run, node1's inbound subscriptions are paused
          const at = STEPS.indexOf(point.split('/')[0])
          assert.ok(at >= 0, `kill point ${point} is a step of the procedure`)
          const inPause = at >= STEPS.indexOf('pause-source') && at < STEPS.indexOf('resume-source')
          assert.equal(paused.length, inPause ? 2 : 0, `journaled pause after ${point}`)
          if (point === 'pause-source') {
            const st = h.parseJson<{links: Array<{from: string; to: string; status: string}>}>(await h.runCli(['status', '--json', '-c', cfg]))
            for (const from of ['node2', 'node3']) assert.equal(st.links.find(l => l.from === from && l.to === 'node1')?.status, 'paused')
          }

          const again = await h.runCli(args(x))
          assert.equal(again.code, 0, again.stderr + again.stdout)
          if (inPause) assert.match(again.stdout, /recovered: (re-enabled on node1|node1's subscriptions)/)
          else assert.doesNotMatch(again.stdout, /recovered: (re-enabled on node1|node1's subscriptions)/)
          assert.deepEqual(journalOps(dir), {}, 'journal closed after the resumed run')

          // nothing stays paused
          const subs = await h.sql<{subname: string; subenabled: boolean}>(servers[0], 'SELECT subname, subenabled FROM pg_subscription ORDER BY 1')
          assert.deepEqual(subs.map(s => [s.subname, s.subenabled]), [['shop_node2_node1', true], ['shop_node3_node1', true], ['shop_node4_node1', true]])
          const st = h.parseJson<{links: Array<{status: string}>; unfinished: unknown[]}>(await h.runCli(['status', '--json', '-c', cfg]))
          assert.equal(st.links.length, 12)
          assert.ok(st.links.every(l => l.status !== 'paused' && l.status !== 'critical'), JSON.stringify(st.links))

          const report = await load.stop()
          await verifyLoad([...servers, x], report, base)
          await guard.stop()
          assert.deepEqual(guard.violations, [])
          assert.deepEqual(guard.errors, [], 'the guard could sample node4 throughout')
          assert.ok(guard.evaluated > 0, `guard sampled the promoted node4 ${guard.evaluated} times (${guard.samples} samples in all)`)
          assert.deepEqual(await h.meshObjects(x), {
            pubs: ['shop'],
            slots: ['shop_node4_node1', 'shop_node4_node2', 'shop_node4_node3'],
            subs: ['shop_node1_node4', 'shop_node2_node4', 'shop_node3_node4'],
          })
          assert.deepEqual(await h.sql(servers[0], "SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'physical'"), [])
          for (const s of [...servers, x]) assert.equal(await h.applyErrors(s), 0, `apply errors on ${s.name}`)
        },
          () => load.stop(),
          () => detachNode(members(), x, 'node4', cfg),
        )
      })
    }

    if (major === 15) {
      it('a run that fails while the source is paused (the standby stops replaying) re-enables it; the re-run completes', async () => {
        round++
        const base = (await h.tableDigest(servers[0], 'public.users')).count
        const load = new WriteLoad().start(servers.map((s, i) => ({label: `r${round}n${i + 1}`, server: s, index: round * 10 + i + 1})), {hard: true})
        let x: LocalServer | undefined
        // the load stops and node4 is detached even when the round fails; their errors never hide its own
        await h.withCleanup(async () => {
          x = await createStandby(servers[0], {name: 'node4'})
          await h.sql(x, 'SELECT pg_wal_replay_pause()')
          // --timeout is the whole wait of the run: long enough for the waits before the replay one
          const failed = await h.runCli([...args(x), '--timeout', '20s'])
          assert.equal(failed.code, 15, failed.stderr + failed.stdout)
          assert.match(failed.stderr, /timed out after \d+ s waiting for node4 to replay node1's WAL/)
          // not left paused, though the operation is unfinished
          const subs = await h.sql<{subname: string; subenabled: boolean}>(servers[0], 'SELECT subname, subenabled FROM pg_subscription ORDER BY 1')
          assert.deepEqual(subs.map(s => [s.subname, s.subenabled]), [['shop_node2_node1', true], ['shop_node3_node1', true]])
          const op = journalOps(dir)['add-node:node4']
          assert.deepEqual(op.values.pausedSubscriptions, [])
          assert.equal(op.values.replayTarget, undefined)
          assert.equal((op.values.pauses as Array<{ms: null}>)[0].ms, null)
          assert.equal((await h.sql<{r: boolean}>(x, 'SELECT pg_is_in_recovery() AS r'))[0].r, true, 'not promoted')

          await h.sql(x, 'SELECT pg_wal_replay_resume()')
          const again = await h.runCli(args(x))
          assert.equal(again.code, 0, again.stderr + again.stdout)
          assert.match(again.stdout, /paused for \d+ ms; clients were never paused\. \(2 pauses in all, 1 by an interrupted run\)/)
          const report = await load.stop()
          await verifyLoad([...servers, x], report, base)
        },
          () => load.stop(),
          () => detachNode(members(), x, 'node4', cfg),
        )
      })

      it('a run that died between two statements of one action (renamed, not yet repointed) is finished by the re-run', async () => {
        round++
        const base = (await h.tableDigest(servers[0], 'public.users')).count
        const load = new WriteLoad().start(servers.map((s, i) => ({label: `r${round}n${i + 1}`, server: s, index: round * 10 + i + 1})), {hard: true})
        let x: LocalServer | undefined
        // the load stops and node4 is detached even when the round fails; their errors never hide its own
        await h.withCleanup(async () => {
          x = await createStandby(servers[0], {name: 'node4'})
          const killed = await h.runCli(args(x), {env: {MMLITE_FAULT_KILL_AFTER: 'new-node-slots'}})
          assert.equal(killed.signal, 'SIGKILL')
          // what the next statement of repoint-subscriptions would have done, then the kill
          await h.sql(x, 'ALTER SUBSCRIPTION "shop_node2_node1" RENAME TO "shop_node2_node4"')
          const again = await h.runCli(args(x))
          assert.equal(again.code, 0, again.stderr + again.stdout)
          const subs = await h.sql<{subname: string; subslotname: string; subenabled: boolean}>(x, 'SELECT subname, subslotname, subenabled FROM pg_subscription ORDER BY 1')
          assert.deepEqual(
            subs.map(s => [s.subname, s.subslotname, s.subenabled]),
            [
              ['shop_node1_node4', 'shop_node1_node4', true],
              ['shop_node2_node4', 'shop_node2_node4', true],
              ['shop_node3_node4', 'shop_node3_node4', true],
            ],
          )
          const report = await load.stop()
          await verifyLoad([...servers, x], report, base)
        },
          () => load.stop(),
          () => detachNode(members(), x, 'node4', cfg),
        )
      })
    }
  })
}
