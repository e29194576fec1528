/**
 * Faults under the hard write load on every node (issue #7 "Faults"): every acknowledged write
 * must end up exactly once, with its last value, on every node.
 *  - a node crashes (immediate stop) while every node writes, and restarts: `status` goes
 *    critical, then ok with no action (once the apply errors the outage counted are older than
 *    health.error_window_seconds);
 *  - a link is cut for 30 s (the subscription's connection points at a closed port) and
 *    restored: same;
 *  - a node stays down longer than max_slot_wal_keep_size allows: its peers' slots for it are
 *    lost; `status` says so with the way back (remove-node --force, then add-node), and that way
 *    works end to end.
 */
import assert from 'node:assert/strict'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'
import {WriteLoad, verifyLoad, mergeReports} from '../helpers/load.js'

interface Status {
  health: string
  links: Array<{from: string; to: string; status: string; reasons: string[]}>
}

async function status(cfg: string): Promise<{code: number | null; st: Status}> {
  const r = await h.runCli(['status', '-c', cfg, '--json'])
  return {code: r.code, st: h.parseJson<Status>(r)}
}

async function waitHealth(cfg: string, want: string, timeoutMs = 120_000): Promise<Status> {
  let last: Status | undefined
  try {
    await h.waitFor(async () => {
      last = (await status(cfg)).st
      return last.health === want
    }, `status ${want}`, timeoutMs)
  } catch (e) {
    throw new Error(`${(e as Error).message}: ${JSON.stringify(last?.links.filter(l => l.status !== 'ok'))}`)
  }
  return last!
}

describe('faults under writes on every node', function () {
  this.timeout(600_000)
  let servers: LocalServer[]
  let dir: string
  let cfg: string
  let round = 0
  const SEED = 10

  before(async () => {
    servers = await h.startServers([16, 16, 16])
    await h.createSchema(servers)
    await h.sql(servers[0], `INSERT INTO public.users SELECT g, 1, 'seed ' || g, 'node1' FROM generate_series(1, ${SEED}) g`)
    dir = await h.tempDir()
    // an apply error (a lost connection to a crashed or unreachable publisher counts as one) is
    // a warning while it is recent: 30 s here instead of the default 600 s, so "ok with no action"
    // is reached within the test
    cfg = await h.writeConfig(dir, servers, {extra: 'health:\n  error_window_seconds: 30'})
    const r = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(r.code, 0, r.stderr + r.stdout)
  })
  after(() => stopAllStarted())

  const load = () => {
    round++
    return new WriteLoad().start(servers.map((s, i) => ({label: `r${round}n${i + 1}`, server: s, index: round * 10 + i + 1})), {hard: true, tolerateErrors: true})
  }
  const reports: WriteLoad[] = []

  it('a node crashes (immediate stop) and restarts: critical, then ok with no action; nothing lost or duplicated', async () => {
    const l = load()
    reports.push(l)
    await h.waitFor(async () => l.report.commits >= 150, 'writes on every node')
    await servers[1].stop('immediate')
    const down = await status(cfg)
    assert.equal(down.st.health, 'critical')
    assert.equal(down.code, 2)
    const c0 = l.report.commits
    await h.waitFor(async () => l.report.commits >= c0 + 100, 'writes while node2 is down')
    await servers[1].start()
    const c1 = l.report.commits
    await h.waitFor(async () => l.report.commits >= c1 + 100, 'writes after the restart')
    await l.stop()
    assert.ok(l.errors.some(e => e.startsWith('r1n2')), 'node2\'s writers saw the crash')
    await verifyLoad(servers, mergeReports(...reports.map(x => x.report)), SEED)
    await waitHealth(cfg, 'ok')
  })

  it('a link cut for 30 s (node2 cannot reach node1) and restored: critical, then ok; nothing lost or duplicated', async () => {
    const l = load()
    reports.push(l)
    await h.waitFor(async () => l.report.commits >= 150, 'writes on every node')
    const sub = 'shop_node1_node2'
    const orig = (await h.sql<{c: string}>(servers[1], 'SELECT subconninfo AS c FROM pg_subscription WHERE subname = $1', [sub]))[0].c
    const t0 = Date.now()
    await h.sql(servers[1], `ALTER SUBSCRIPTION "${sub}" CONNECTION 'host=127.0.0.1 port=1 dbname=postgres connect_timeout=2'`)
    try {
      await h.waitFor(async () => (await status(cfg)).st.links.some(x => x.from === 'node1' && x.to === 'node2' && x.status === 'critical'), 'the cut link to be critical')
      await h.waitFor(async () => Date.now() - t0 >= 30_000, '30 s of cut link', 60_000)
    } finally {
      await h.sql(servers[1], `ALTER SUBSCRIPTION "${sub}" CONNECTION '${orig.replace(/'/g, "''")}'`)
    }
    const c1 = l.report.commits
    await h.waitFor(async () => l.report.commits >= c1 + 100, 'writes after the link is back')
    await l.stop()
    await verifyLoad(servers, mergeReports(...reports.map(x => x.report)), SEED)
    await waitHealth(cfg, 'ok')
  })

  it('a node down longer than max_slot_wal_keep_size: status says the slots are lost and how to get back; remove-node --force then add-node works', async () => {
    const l = load()
    await h.waitFor(async () => l.report.commits >= 100, 'writes on every node')
    await l.stop()
    await verifyLoad(servers, mergeReports(...reports.map(x => x.report), l.report), SEED)
    for (const s of servers.slice(0, 2)) {
      await h.sql(s, "ALTER SYSTEM SET max_slot_wal_keep_size = '32MB'")
      await h.reloadConf(s)
    }
    await servers[2].stop('immediate')
    // the others keep writing while node3 is down
    const rest = new WriteLoad().start(servers.slice(0, 2).map((s, i) => ({label: `lost-n${i + 1}`, server: s, index: 90 + i})), {hard: true})
    await h.waitFor(async () => rest.report.commits >= 100, 'writes on node1 and node2')
    await rest.stop()
    // then WAL moves far past what the slots for node3 may keep. Only node3's slots may be lost:
    // the live links between node1 and node2 are held to the current segment before every
    // checkpoint (otherwise a lagging live link on a loaded machine loses its slot too).
    for (const [s, peer] of [[servers[0], 'node2'], [servers[1], 'node1']] as const) {
      const live = `shop_${s.name}_${peer}`
      await h.waitFor(async () => {
        const [{lsn}] = await h.sql<{lsn: string}>(s, "SELECT pg_current_wal_lsn()::text AS lsn FROM (SELECT pg_switch_wal()) x")
        await h.sql(s, "INSERT INTO public.departments VALUES (999999, 'w') ON CONFLICT (id) DO UPDATE SET name = 'w'")
        await h.sql(s, 'SELECT pg_log_standby_snapshot()')
        await h.waitFor(async () => {
          await h.sql(s, "INSERT INTO public.departments VALUES (999999, 'w') ON CONFLICT (id) DO UPDATE SET name = 'w'")
          const r = await h.sql<{ok: boolean; w: string}>(s, 'SELECT restart_lsn >= $2::pg_lsn AS ok, wal_status AS w FROM pg_replication_slots WHERE slot_name = $1', [live, lsn])
          assert.equal(r.length, 1, `${s.name} has its slot ${live}`)
          assert.notEqual(r[0].w, 'lost', `${s.name}'s live slot ${live} must not be lost`)
          return r[0].ok
        }, `${s.name}'s slot ${live} to reach ${lsn}`)
        await h.sql(s, 'CHECKPOINT')
        const r = await h.sql<{w: string}>(s, "SELECT wal_status AS w FROM pg_replication_slots WHERE slot_name LIKE 'shop_%_node3'")
        return r.length === 1 && r[0].w === 'lost'
      }, `${s.name}'s slot for node3 to be lost`)
    }
    // a lost slot stays lost; the limit goes so the rejoin under writes below cannot lose a live slot
    for (const s of servers.slice(0, 2)) {
      await h.sql(s, 'ALTER SYSTEM RESET max_slot_wal_keep_size')
      await h.reloadConf(s)
    }
    // node1 and node2 write again through the way back (remove-node, then add-node)
    const back = new WriteLoad().start(servers.slice(0, 2).map((s, i) => ({label: `back-n${i + 1}`, server: s, index: 95 + i})), {hard: true})
    await servers[2].start()
    const st = await waitHealth(cfg, 'critical')
    const lost = st.links.filter(x => x.to === 'node3' && x.reasons.some(r => /lost/.test(r)))
    assert.equal(lost.length, 2, JSON.stringify(st.links))
    for (const x of lost) assert.match(x.reasons.join(' '), /mmlite remove-node node3 --force.*mmlite add-node node3/)

    // the way back
    const rm = await h.runCli(['remove-node', 'node3', '--force', '-c', cfg, '--yes', '--json'])
    assert.equal(rm.code, 0, rm.stderr + rm.stdout)
    const leftovers = h.parseJson<{leftOnRemoved: string[]}>(rm).leftOnRemoved
    for (const q of leftovers) await h.sql(servers[2], q)
    // node3 has no slot of the cluster any more: emptying its tables stays local
    assert.deepEqual(await h.meshObjects(servers[2]), {pubs: [], slots: [], subs: []})
    await h.sql(servers[2], 'TRUNCATE public.users, public.departments')
    const add = await h.runCli(['add-node', 'node3', '--dsn', servers[2].dsn(), '-c', cfg, '--yes'])
    assert.equal(add.code, 0, add.stderr + add.stdout)
    const c1 = back.report.commits
    await h.waitFor(async () => back.report.commits >= c1 + 100, 'writes after the rejoin')
    await back.stop()
    await verifyLoad(servers, mergeReports(...reports.map(x => x.report), l.report, rest.report, back.report), SEED, 120_000)
    await waitHealth(cfg, 'ok')
  })
})
