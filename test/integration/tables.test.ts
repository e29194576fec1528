/**
 * Changing `tables:` of an initialized cluster and re-running `mmlite init` (the table
 * reconcile procedure, src/steps/tables/), on real servers, while every node keeps writing to
 * the replicated tables and to the table being added:
 *   - a table holding 20k rows on a non-first node becomes replicated exactly;
 *   - --dry-run shows the SQL that will run (no CREATE PUBLICATION on nodes that have it);
 *   - a table removed from the file stops being replicated, its data stays.
 */
import assert from 'node:assert/strict'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'
import {WriteLoad, verifyLoad} from '../helpers/load.js'
import {TableLoad, setTables} from '../helpers/table-load.js'

const ITEMS = 'CREATE TABLE IF NOT EXISTS public.items (id bigint PRIMARY KEY, node text, v int, note text)'

describe('tables: add and remove a replicated table under load (init reconcile)', function () {
  let servers: LocalServer[]
  let dir: string
  let cfg: string
  before(async () => {
    // adding a table to a running mesh commits two-phase (refused without prepared transactions)
    servers = await h.startServers([15, 15, 15], 'node', {max_prepared_transactions: 10})
    await h.createSchema(servers)
    await Promise.all(servers.map(s => h.sql(s, ITEMS)))
    // 100k rows on a non-first node
    await h.sql(servers[1], "INSERT INTO public.items SELECT g, 'seed', g, 'seeded' FROM generate_series(1, 100000) g")
    await h.sql(servers[0], "INSERT INTO public.departments SELECT g, 'dept ' || g FROM generate_series(1, 10) g")
    ;({dir, cfg} = await h.initCluster(servers))
  })
  after(() => stopAllStarted())

  it('adds a table that holds rows on node2 while every node writes to it and to the other tables', async () => {
    const writers = servers.map((s, i) => ({label: `node${i + 1}`, server: s, index: i + 1}))
    const users = new WriteLoad().start(writers)
    const items = new TableLoad('public.items').start(writers)
    try {
      await items.progress(20)
      await setTables(cfg, ['public.departments', 'public.users', 'public.items'])

      const dry = await h.runCli(['init', '-c', cfg, '--dry-run', '--json'])
      assert.equal(dry.code, 0, dry.stderr + dry.stdout)
      const plan = h.parseJson<{steps: Array<{id: string; status: string; sql: Array<{node: string; sql: string}>}>}>(dry)
      const sqls = plan.steps.flatMap(s => s.sql.map(x => x.sql))
      assert.ok(!sqls.some(s => /CREATE PUBLICATION "shop"/.test(s)), `no CREATE PUBLICATION of the existing publication:\n${sqls.join('\n')}`)
      assert.ok(sqls.some(s => /ALTER PUBLICATION "shop" ADD TABLE "public"\."items"/.test(s)), sqls.join('\n'))
      assert.ok(sqls.some(s => /REFRESH PUBLICATION|SET PUBLICATION/.test(s)), `subscriptions learn the table:\n${sqls.join('\n')}`)

      const r = await h.runCli(['init', '-c', cfg, '--yes'])
      assert.equal(r.code, 0, r.stderr + r.stdout)
      assert.doesNotMatch(r.stdout, /already initialized/)
      await items.progress(30)
    } finally {
      await items.stop()
      await users.stop()
    }
    await verifyLoad(servers, users.report)
    await items.verify(servers, 100000)
    for (const s of servers) assert.equal(await h.applyErrors(s), 0, `apply errors on ${s.name}`)
    const again = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(again.code, 0, again.stderr)
    assert.match(again.stdout, /already initialized/)
  })

  it('removes a table from the file: it stops being replicated and its data stays', async () => {
    const before = await Promise.all(servers.map(s => h.tableDigest(s, 'public.items')))
    await setTables(cfg, ['public.departments', 'public.users'])
    const r = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(r.code, 0, r.stderr + r.stdout)
    const after = await Promise.all(servers.map(s => h.tableDigest(s, 'public.items')))
    assert.deepEqual(after, before, 'data stays')
    // a write to items on node1 stays there; a write to users (still replicated) arrives
    await h.sql(servers[0], "INSERT INTO public.items VALUES (-1, 'after', 0, 'local')")
    await h.sql(servers[0], "INSERT INTO public.users VALUES (-1, 1, 'marker', 'node1')")
    await h.waitFor(async () => (await Promise.all(servers.map(s => h.sql(s, 'SELECT 1 FROM public.users WHERE id = -1')))).every(x => x.length === 1), 'marker everywhere')
    for (const s of servers.slice(1)) assert.equal((await h.sql(s, 'SELECT 1 FROM public.items WHERE id = -1')).length, 0, `${s.name} got a row of a removed table`)
    for (const s of servers) {
      const rels = await h.sql<{n: number}>(s, "SELECT count(*)::int AS n FROM pg_subscription_rel WHERE srrelid = 'public.items'::regclass")
      assert.equal(rels[0].n, 0, `${s.name}: subscriptions no longer list public.items`)
    }
  })

  it('a table whose nodes disagree on a key is refused; with --source the source\'s rows win, the other keys are merged', async () => {
    await Promise.all(servers.map(s => h.sql(s, 'CREATE TABLE public.items2 (id bigint PRIMARY KEY, node text, v int)')))
    await h.sql(servers[0], "INSERT INTO public.items2 SELECT g, 'n1', 1 FROM generate_series(1, 100) g")
    await h.sql(servers[2], "INSERT INTO public.items2 SELECT g, 'n3', 3 FROM generate_series(50, 150) g")
    await setTables(cfg, ['public.departments', 'public.users', 'public.items2'])
    const refused = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(refused.code, 11, refused.stderr + refused.stdout)
    assert.match(refused.stderr, /public\.items2 holds different rows under the same key on different nodes; no row was changed/)
    assert.match(refused.stderr, /--source NODE/)
    for (const s of servers) {
      assert.equal((await h.sql(s, "SELECT 1 FROM pg_publication_tables WHERE pubname = 'shop' AND tablename = 'items2'")).length, 0)
    }
    assert.deepEqual((await h.tableDigest(servers[1], 'public.items2')).count, 0)
    const r = await h.runCli(['init', '-c', cfg, '--source', 'node3', '--yes'])
    assert.equal(r.code, 0, r.stderr + r.stdout)
    await h.waitConverged(servers, 'public.items2', 150)
    const v = await h.sql<{v: number; n: number}>(servers[1], 'SELECT v, count(*)::int AS n FROM public.items2 GROUP BY v ORDER BY v')
    assert.deepEqual(v.map(x => [x.v, x.n]), [[1, 49], [3, 101]])
    await h.sql(servers[1], "UPDATE public.items2 SET v = 2 WHERE id = 1")
    await h.waitFor(async () => (await Promise.all(servers.map(s => h.sql<{v: number}>(s, 'SELECT v FROM public.items2 WHERE id = 1')))).every(x => x[0].v === 2), 'the update replicated')
  })

  it('repairs a table an older init published without refreshing the subscriptions (its writes were dropped)', async () => {
    await Promise.all(servers.map(s => h.sql(s, 'CREATE TABLE public.old (id bigint PRIMARY KEY, node text, v int)')))
    // what init did before: the table in the publication on every node, no REFRESH anywhere
    await Promise.all(servers.map(s => h.sql(s, 'ALTER PUBLICATION shop ADD TABLE public.old')))
    await Promise.all(servers.map((s, i) => h.sql(s, `INSERT INTO public.old SELECT ${i + 1} * 1000 + g, 'n${i + 1}', g FROM generate_series(1, 50) g`)))
    await h.waitFor(async () => (await h.sql<{n: number}>(servers[0], 'SELECT count(*)::int AS n FROM public.old'))[0].n === 50, 'rows on node1')
    await setTables(cfg, ['public.departments', 'public.users', 'public.items2', 'public.old'])
    const dry = await h.runCli(['init', '-c', cfg, '--dry-run', '--json'])
    const ids = h.parseJson<{steps: Array<{id: string; status: string}>}>(dry).steps.filter(x => x.status === 'planned').map(x => x.id)
    assert.deepEqual(ids, ['tables-unpublish', 'tables-drain', 'tables-stage', 'tables-subscriptions', 'tables-activate', 'tables-unstage'])
    const r = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(r.code, 0, r.stderr + r.stdout)
    await h.waitConverged(servers, 'public.old', 150)
    await h.sql(servers[2], "INSERT INTO public.old VALUES (1, 'after', 0)")
    await h.waitConverged(servers, 'public.old', 151)
  })

  it('drift: a replicated table that differs between nodes is a warning in status and a refusal in init', async () => {
    await h.sql(servers[2], 'ALTER TABLE public.departments ADD COLUMN extra int')
    await h.sql(servers[1], 'ALTER TABLE public.users REPLICA IDENTITY FULL')
    try {
      const st = await h.runCli(['status', '-c', cfg, '--json'])
      assert.equal(st.code, 1, st.stderr + st.stdout)
      const r = h.parseJson<{health: string; drift: Array<{table: string; nodes: string[]; difference: string}>}>(st)
      assert.equal(r.health, 'warning')
      assert.deepEqual(
        r.drift.map(d => [d.table, d.nodes.join('/'), d.difference]),
        [
          ['public.departments', 'node1/node3', 'node3 has extra integer'],
          ['public.users', 'node1/node2', 'replica identity default on node1 but full on node2'],
        ],
      )
      const text = await h.runCli(['status', '-c', cfg])
      assert.match(text.stdout, /schema drift: table public\.departments differs from node1: node3 has extra integer/)
      const init = await h.runCli(['init', '-c', cfg, '--dry-run'])
      assert.equal(init.code, 11, init.stderr + init.stdout)
      assert.match(init.stderr, /\[node3\] columns: table public\.departments differs from node1: node3 has extra integer/)
      assert.match(init.stderr, /\[node2\] columns: table public\.users differs from node1: replica identity default on node1 but full on node2/)
    } finally {
      await h.sql(servers[2], 'ALTER TABLE public.departments DROP COLUMN extra')
      await h.sql(servers[1], 'ALTER TABLE public.users REPLICA IDENTITY DEFAULT')
    }
    const ok = await h.runCli(['status', '-c', cfg, '--json'])
    assert.equal(ok.code, 0, ok.stdout)
    assert.deepEqual(h.parseJson<{drift: unknown[]}>(ok).drift, [])
  })

  it('ddl: creates a table everywhere, adds a column while every node writes, then the writers use it; converged', async () => {
    const create = await h.runCli(['ddl', '-c', cfg, 'CREATE TABLE public.events (id bigint PRIMARY KEY, node text, v int)', '--yes'])
    assert.equal(create.code, 0, create.stderr + create.stdout)
    await setTables(cfg, ['public.departments', 'public.users', 'public.events'])
    const init = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(init.code, 0, init.stderr + init.stdout)
    const writers = servers.map((s, i) => ({label: `node${i + 1}`, server: s, index: i + 1}))
    const events = new TableLoad('public.events').start(writers)
    try {
      await events.progress(10)
      const stmt = "ALTER TABLE public.events ADD COLUMN note text DEFAULT 'none'"
      const dry = await h.runCli(['ddl', '-c', cfg, stmt, '--dry-run', '--json'])
      const plan = h.parseJson<{steps: Array<{id: string; sql: Array<{node: string; sql: string}>}>}>(dry)
      const apply = plan.steps.find(x => x.id === 'ddl-apply')!
      for (const n of ['node1', 'node2', 'node3']) {
        // two-phase: these servers allow prepared transactions (one-phase ddl: tables-two-phase.test.ts)
        const gid = "'mmlite:ddl:shop:<index>-<xid> of each node'"
        assert.deepEqual(apply.sql.filter(x => x.node === n).map(x => x.sql), [
          'BEGIN', 'SELECT pg_catalog.txid_current()::pg_catalog.text AS xid', "SET LOCAL lock_timeout = '60000ms'", stmt,
          `PREPARE TRANSACTION ${gid}`, '-- once every node has prepared, node by node:', `COMMIT PREPARED ${gid}`,
        ])
      }
      const r = await h.runCli(['ddl', '-c', cfg, stmt, '--yes'])
      assert.equal(r.code, 0, r.stderr + r.stdout)
      events.useColumn('note', "'w-' || ($3::int)::text")
      await events.progress(30)
    } finally {
      await events.stop()
    }
    await events.verify(servers, 0)
    const notes = await Promise.all(servers.map(s => h.sql<{n: number}>(s, "SELECT count(*)::int AS n FROM public.events WHERE note LIKE 'w-%'")))
    assert.ok(notes[0][0].n > 0 && notes.every(x => x[0].n === notes[0][0].n), `rows written with the new column everywhere: ${JSON.stringify(notes)}`)
    for (const s of servers) assert.equal(await h.applyErrors(s), 0, `apply errors on ${s.name}`)
  })

  it('ddl: refuses a destructive statement (reason, safe sequence); a statement failing on one node changes nothing anywhere', async () => {
    const drop = await h.runCli(['ddl', '-c', cfg, 'ALTER TABLE public.events DROP COLUMN note', '--yes'])
    assert.equal(drop.code, 11, drop.stderr)
    assert.match(drop.stderr, /why: .*dropped on one node/)
    assert.match(drop.stderr, /safe sequence: /)
    // node2 holds a lock on the table: the statement times out there, every node rolls back
    await h.withClient(servers[1], async c => {
      await c.query('BEGIN')
      await c.query('LOCK TABLE public.events IN ACCESS SHARE MODE')
      const r = await h.runCli(['ddl', '-c', cfg, 'ALTER TABLE public.events ADD COLUMN extra int', '--yes', '--timeout', '2'])
      await c.query('ROLLBACK')
      assert.equal(r.code, 2, r.stderr + r.stdout)
      assert.match(r.stderr, /node node2: .*lock timeout.*rolled back on every node/)
    })
    for (const s of servers) {
      const cols = await h.sql(s, "SELECT 1 FROM pg_attribute WHERE attrelid = 'public.events'::regclass AND attname = 'extra'")
      assert.equal(cols.length, 0, `${s.name} has no column extra`)
    }
    const st = await h.runCli(['status', '-c', cfg])
    assert.equal(st.code, 0, st.stdout)
  })

  for (const point of ['ddl-apply/0', 'ddl-apply', 'ddl-wait-streaming']) {
    it(`ddl killed after ${point}: the re-run finishes`, async () => {
      const col = `c_${point.replace(/\W/g, '_')}`
      const stmt = `ALTER TABLE public.events ADD COLUMN ${col} int`
      const killed = await h.runCli(['ddl', '-c', cfg, stmt, '--yes'], {env: {MMLITE_FAULT_KILL_AFTER: point}})
      assert.equal(killed.signal, 'SIGKILL', killed.stdout + killed.stderr)
      const again = await h.runCli(['ddl', '-c', cfg, stmt, '--yes'])
      assert.equal(again.code, 0, again.stderr + again.stdout)
      for (const s of servers) assert.equal((await h.sql(s, `SELECT 1 FROM pg_attribute WHERE attrelid = 'public.events'::regclass AND attname = '${col}'`)).length, 1)
      await h.sql(servers[2], `INSERT INTO public.events (id, node, v, ${col}) VALUES (-${servers.length + point.length}, 'k', 1, 7)`)
      await h.waitConverged(servers, 'public.events', (await h.tableDigest(servers[2], 'public.events')).count)
    })
  }
})
