/**
 * remove-node of what a node left behind when it never became (or stopped being) a member:
 *  - #7.4: add-node X killed after pausing the source, X then gone: `remove-node X` (X is not
 *    in mmlite.yaml) removes every trace of the join, re-enables the paused subscriptions and
 *    closes the unfinished add-node so later joins run; writes on every member replicate.
 *  - #7.9: X dies during init's initial copy (its tablesync slots exist on the seed):
 *    `remove-node X --force` drops them too; the remaining init then finishes exactly.
 */
import assert from 'node:assert/strict'
import {existsSync, readFileSync} from 'node:fs'
import path from 'node:path'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'
import {WriteLoad, verifyLoad} from '../helpers/load.js'

function journalOps(dir: string): Record<string, unknown> {
  const f = path.join(dir, '.mmlite/journal.json')
  return existsSync(f) ? JSON.parse(readFileSync(f, 'utf8')).operations : {}
}

const syncSlots = async (s: LocalServer) =>
  (await h.sql<{n: string}>(s, "SELECT slot_name AS n FROM pg_replication_slots WHERE slot_name ~ '^pg_[0-9]+_sync_'")).map(r => r.n)

describe('remove-node: an abandoned join', function () {
  this.timeout(300_000)
  after(() => stopAllStarted())

  it('add-node killed after pausing the source, the new node gone: remove-node NAME removes every trace, undoes the pause, unblocks later joins', async () => {
    const servers = await h.startServers([16, 16, 16])
    await h.createSchema(servers)
    await h.sql(servers[0], "INSERT INTO public.departments SELECT g, 'dept ' || g FROM generate_series(1, 10) g")
    const dir = await h.tempDir()
    const cfg = await h.writeConfig(dir, servers.slice(0, 2))
    const init = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(init.code, 0, init.stderr + init.stdout)
    const x = servers[2]
    const killed = await h.runCli(['add-node', 'node3', '--dsn', x.dsn(), '-c', cfg, '--yes'], {env: {MMLITE_FAULT_KILL_AFTER: 'pause-source'}})
    assert.equal(killed.signal, 'SIGKILL', killed.stdout + killed.stderr)
    assert.ok(journalOps(dir)['add-node:node3'])
    const disabled = await h.sql(servers[0], 'SELECT subname FROM pg_subscription WHERE NOT subenabled')
    assert.equal(disabled.length, 1, 'the killed join left the source paused')
    await x.stop('immediate')

    const r = await h.runCli(['remove-node', 'node3', '-c', cfg, '--yes', '--json'])
    assert.equal(r.code, 0, r.stderr + r.stdout)
    const out = h.parseJson<{removed: string; notes: string[]}>(r)
    assert.match(out.notes.join(' '), /never finished joining/)
    for (const s of servers.slice(0, 2)) {
      const o = await h.meshObjects(s)
      assert.ok(!o.slots.some(n => n.endsWith('_node3')), `${s.name}: no slot for node3 (${o.slots})`)
      assert.ok(!o.subs.some(n => n.startsWith('shop_node3_')), `${s.name}: no subscription from node3`)
      assert.deepEqual(await h.sql(s, 'SELECT subname FROM pg_subscription WHERE NOT subenabled'), [], `${s.name}: nothing left paused`)
    }
    assert.deepEqual(journalOps(dir), {}, 'the unfinished add-node is closed: later joins are not blocked')
    const again = await h.runCli(['remove-node', 'node3', '-c', cfg, '--yes'])
    assert.equal(again.code, 10, 'a second time: unknown node (nothing left)')

    // the members replicate both ways, with the hard load
    const load = new WriteLoad().start(servers.slice(0, 2).map((s, i) => ({label: `n${i + 1}`, server: s, index: i + 1})), {hard: true})
    await h.withCleanup(() => h.waitFor(async () => load.report.commits > 150, 'writes'), () => load.stop())
    await verifyLoad(servers.slice(0, 2), await load.stop())
  })

  it('a node dies during init\'s initial copy: remove-node --force drops its table-synchronization slots on the seed; init then finishes', async () => {
    const servers = await h.startServers([16, 16, 16])
    await h.createSchema(servers)
    await h.sql(servers[0], "INSERT INTO public.departments SELECT g, 'dept ' || g FROM generate_series(1, 10) g")
    await h.sql(servers[0], "INSERT INTO public.users SELECT g, 1, 'u' || g, 'node1' FROM generate_series(1, 500) g")
    const dir = await h.tempDir()
    const cfg = await h.writeConfig(dir, servers)
    // node3's initial copy hangs after its tablesync slot exists (a trigger that fires on the copy)
    await h.sql(
      servers[2],
      `CREATE FUNCTION public.slow() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN PERFORM pg_sleep(3600); RETURN NEW; END$$;
       CREATE TRIGGER slow BEFORE INSERT ON public.users FOR EACH ROW EXECUTE FUNCTION public.slow();
       ALTER TABLE public.users ENABLE ALWAYS TRIGGER slow;`,
    )
    const run = h.runCli(['init', '-c', cfg, '--yes', '--timeout', '20'])
    const sysid3 = (await h.sql<{id: string}>(servers[2], 'SELECT system_identifier::text AS id FROM pg_control_system()'))[0].id
    await h.waitFor(async () => (await syncSlots(servers[0])).some(n => n.endsWith(`_${sysid3}`)), "node3's tablesync slot on node1")
    await servers[2].stop('immediate')
    const r = await run
    assert.notEqual(r.code, 0, 'init cannot finish: node3 is gone')
    const rm = await h.runCli(['remove-node', 'node3', '--force', '-c', cfg, '--yes'])
    assert.equal(rm.code, 0, rm.stderr + rm.stdout)
    const sysids = await Promise.all(servers.slice(0, 2).map(async s => (await h.sql<{id: string}>(s, 'SELECT system_identifier::text AS id FROM pg_control_system()'))[0].id))
    for (const s of servers.slice(0, 2)) {
      const left = (await syncSlots(s)).filter(n => !sysids.some(id => n.endsWith(`_${id}`)))
      assert.deepEqual(left, [], `${s.name}: no table-synchronization slot of node3 left`)
      assert.ok(!(await h.meshObjects(s)).slots.some(n => n.endsWith('_node3')))
    }
    const fin = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(fin.code, 0, fin.stderr + fin.stdout)
    assert.deepEqual(journalOps(dir), {})
    // the two members replicate both ways exactly, with the hard load
    const load = new WriteLoad().start(servers.slice(0, 2).map((s, i) => ({label: `m${i + 1}`, server: s, index: i + 1})), {hard: true})
    await h.withCleanup(() => h.waitFor(async () => load.report.commits > 150, 'writes'), () => load.stop())
    await verifyLoad(servers.slice(0, 2), await load.stop(), 500)
    for (const s of servers.slice(0, 2)) assert.deepEqual(await syncSlots(s), [])
  })
})
