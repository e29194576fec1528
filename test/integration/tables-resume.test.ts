/**
 * The table reconcile procedure killed (SIGKILL) after every step and after single actions,
 * then re-run: it finishes, and the mesh is exact. Each round removes the table added by the
 * previous round and adds a new one that holds rows on node3, while every node writes to the
 * new table and to public.users. PostgreSQL 16/17/18: native origin = none links.
 */
import assert from 'node:assert/strict'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'
import {WriteLoad} from '../helpers/load.js'
import {TableLoad, rerunUnderLoad, setTables} from '../helpers/table-load.js'

describe('tables: SIGKILL after each step of the reconcile, then re-run', function () {
  let servers: LocalServer[]
  let cfg: string
  let prev: string | undefined
  let round = 0
  before(async () => {
    // adding a table to a running mesh commits two-phase (refused without prepared transactions)
    servers = await h.startServers([16, 17, 18], 'node', {max_prepared_transactions: 10})
    await h.createSchema(servers)
    const dir = await h.tempDir()
    cfg = await h.writeConfig(dir, servers)
    const r = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(r.code, 0, r.stderr + r.stdout)
  })
  after(() => stopAllStarted())

  it('plans every step of both directions', async () => {
    await Promise.all(servers.map(s => h.sql(s, 'CREATE TABLE public.plan_a (id bigint PRIMARY KEY, node text, v int)')))
    await setTables(cfg, ['public.departments', 'public.users', 'public.plan_a'])
    const r = await h.runCli(['init', '-c', cfg, '--dry-run', '--json'])
    const plan = h.parseJson<{steps: Array<{id: string; status: string}>}>(r)
    assert.deepEqual(
      plan.steps.filter(s => s.status === 'planned').map(s => s.id),
      ['tables-stage', 'tables-subscriptions', 'tables-activate', 'tables-unstage'],
    )
    const done = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(done.code, 0, done.stderr + done.stdout)
    prev = 'public.plan_a'
  })

  const killPoints = [
    'tables-unpublish/1',
    'tables-unpublish',
    'tables-drain',
    'tables-stage/0',
    'tables-stage',
    'tables-subscriptions/2',
    'tables-subscriptions',
    'tables-activate/0',
    'tables-activate',
    'tables-unstage/1',
    'tables-unstage',
  ]
  for (const point of killPoints) {
    it(`killed after ${point}: the re-run finishes; the new table converges, the old one stays put`, async () => {
      round++
      const table = `public.items_${round}`
      await Promise.all(servers.map(s => h.sql(s, `CREATE TABLE ${table} (id bigint PRIMARY KEY, node text, v int)`)))
      await h.sql(servers[2], `INSERT INTO ${table} SELECT g, 'seed', g FROM generate_series(1, 2000) g`)
      const writers = servers.map((s, i) => ({label: `node${i + 1}`, server: s, index: i + 1}))
      const oldDigest = await Promise.all(servers.map(s => h.tableDigest(s, prev!)))
      const usersBefore = (await h.tableDigest(servers[0], 'public.users')).count
      const users = new WriteLoad().start(writers.map(w => ({...w, index: round * 10 + w.index})))
      const items = new TableLoad(table).start(writers)
      await rerunUnderLoad(servers, {users, usersBefore, items, baseRows: 2000}, async () => {
        await items.progress(5)
        await setTables(cfg, ['public.departments', 'public.users', table])
        const killed = await h.runCli(['init', '-c', cfg, '--yes'], {env: {MMLITE_FAULT_KILL_AFTER: point}})
        assert.equal(killed.signal, 'SIGKILL', `expected the run to die at ${point}\n${killed.stdout}\n${killed.stderr}`)
        await items.progress(5)
      }, ['init', '-c', cfg, '--yes'])
      assert.deepEqual(await Promise.all(servers.map(s => h.tableDigest(s, prev!))), oldDigest, `${prev} keeps its data`)
      for (const s of servers) assert.equal(await h.applyErrors(s), 0, `apply errors on ${s.name}`)
      for (const s of servers) {
        const o = await h.sql<{n: number}>(s, "SELECT count(*)::int AS n FROM pg_publication_tables WHERE pubname = 'shop_stage'")
        assert.equal(o[0].n, 0, 'announce publication empty')
      }
      const idle = await h.runCli(['init', '-c', cfg, '--yes'])
      assert.match(idle.stdout, /already initialized/)
      prev = table
    })
  }
})
