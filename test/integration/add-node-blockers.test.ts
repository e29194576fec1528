/**
 * Transactions on the source that hold up a join, on PostgreSQL 15 servers with
 * max_prepared_transactions > 0, sharing one mesh (node1, node2; node3 joins by copy, node4
 * by standby):
 *
 *  - copy (#7.7, #7.6): an idle-in-transaction session holding an xid and a prepared
 *    transaction on the source, both older than the run: creating the exported-snapshot slot
 *    would wait for them. add-node --timeout gives up with exit 15 BEFORE pausing anything,
 *    naming both (pid, application, gid); once they end, the re-run joins exactly;
 *  - copy (#7.7): a transaction that takes an xid on the source after the pause began: the
 *    slot creation is bounded by --timeout, names it, is cancelled, and the pause is undone
 *    (the source's subscriptions enabled, nothing recorded as paused); the re-run joins;
 *  - standby (#7.6): transactions the source prepared while it was paused, i.e. after its
 *    slot for the new node and before the promotion are inherited by the new node; the source commits one and rolls
 *    back the other afterwards: the new node holds no prepared transaction, receives the
 *    committed one exactly once, and its link from the source does not block.
 */
import assert from 'node:assert/strict'
import {existsSync, readFileSync} from 'node:fs'
import path from 'node:path'
import pg from 'pg'
import {LocalServer, stopAllStarted} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'
import {createStandby} from '../helpers/standby.js'

const SETTINGS = {wal_retrieve_retry_interval: '200ms', max_prepared_transactions: 10}

function journalValues(dir: string, key: string): Record<string, unknown> | undefined {
  const f = path.join(dir, '.mmlite/journal.json')
  const ops = existsSync(f) ? JSON.parse(readFileSync(f, 'utf8')).operations : {}
  return ops[key]?.values
}

async function openSession(s: LocalServer, app: string): Promise<pg.Client> {
  const c = new pg.Client({connectionString: s.dsn(), application_name: app})
  c.on('error', () => {})
  await c.connect()
  return c
}

async function enabledSubs(s: LocalServer): Promise<Array<[string, boolean]>> {
  return (await h.sql<{subname: string; subenabled: boolean}>(s, 'SELECT subname, subenabled FROM pg_subscription ORDER BY 1')).map(r => [r.subname, r.subenabled])
}

async function onceEverywhere(servers: LocalServer[], ids: number[]): Promise<void> {
  for (const s of servers) {
    const r = await h.sql<{n: number}>(s, 'SELECT count(*)::int AS n FROM public.users WHERE id = ANY($1::bigint[])', [ids])
    assert.equal(r[0].n, ids.length, `rows ${ids.join(', ')} on ${s.name}`)
  }
}

describe('add-node: transactions on the source that hold up the join (PostgreSQL 15, max_prepared_transactions = 10)', function () {
  this.timeout(600_000)
  let servers: LocalServer[]
  let x3: LocalServer
  let dir: string
  let cfg: string
  const addCopy = (extra: string[] = [], env: NodeJS.ProcessEnv = {}) =>
    h.runCli(['add-node', 'node3', '--dsn', x3.dsn(), '-c', cfg, '--yes', '--jobs', '1', ...extra], {env, timeoutMs: 120_000})

  before(async () => {
    const all = await Promise.all([1, 2, 3].map(i => LocalServer.start({major: 15, name: `node${i}`, settings: SETTINGS})))
    await Promise.all(all.map(h.allowPlugin))
    servers = all.slice(0, 2)
    x3 = all[2]
    await h.createSchema(all)
    await h.sql(servers[0], "INSERT INTO public.users SELECT g, 1, 'seed ' || g, 'node1' FROM generate_series(1, 100) g")
    ;({dir, cfg} = await h.initCluster(servers))
    await h.waitConverged(servers, 'public.users', 100)
  })
  after(() => stopAllStarted())

  it('copy: an idle transaction with an xid and a prepared transaction on the source: exit 15 before pausing, both named; the re-run joins once they end', async () => {
    const idle = await openSession(servers[0], 'blocker-app')
    const prep = await openSession(servers[0], 'preparer')
    await h.withCleanup(
      async () => {
        await idle.query('BEGIN')
        await idle.query("INSERT INTO public.users VALUES (5001, 1, 'idle', 'node1')")
        const idlePid = (await idle.query<{pid: number}>('SELECT pg_backend_pid() AS pid')).rows[0].pid
        await prep.query('BEGIN')
        await prep.query("INSERT INTO public.users VALUES (5002, 1, 'prepared', 'node1')")
        await prep.query("PREPARE TRANSACTION 'mmlite_test_g1'")

        const r = await addCopy(['--timeout', '4'])
        assert.equal(r.code, 15, r.stderr + r.stdout)
        assert.match(r.stderr, new RegExp(`pid ${idlePid}\\b[^\\n]*blocker-app`))
        assert.match(r.stderr, /prepared transaction mmlite_test_g1/)
        // nothing was paused
        assert.deepEqual(await enabledSubs(servers[0]), [['shop_node2_node1', true]])
        assert.deepEqual((journalValues(dir, 'add-node:node3')?.pausedSubscriptions as unknown[] | undefined) ?? [], [])
        assert.equal(((journalValues(dir, 'add-node:node3')?.pauses as unknown[] | undefined) ?? []).length, 0, 'no pause happened')

        await idle.query('COMMIT')
        await prep.query("COMMIT PREPARED 'mmlite_test_g1'")
      },
      () => idle.end().catch(() => {}),
      () => prep.end().catch(() => {}),
      () => h.sql(servers[0], "ROLLBACK PREPARED 'mmlite_test_g1'").catch(() => {}),
    )
    const again = await addCopy()
    assert.equal(again.code, 0, again.stderr + again.stdout)
    await h.sql(servers[1], "INSERT INTO public.users VALUES (5003, 1, 'after', 'node2')")
    await h.waitConverged([...servers, x3], 'public.users', 103)
    await onceEverywhere([...servers, x3], [5001, 5002, 5003])
  })

  it('copy: a transaction that takes an xid after the pause began: the slot wait is bounded, names it, and the pause is undone; the re-run joins', async () => {
    // take node3 out again (plain SQL), so that it can join once more
    await rejoinableNode3()
    const run = addCopy(['--timeout', '5'], {MMLITE_FAULT_HOLD_AFTER_PAUSE_MS: '3000'})
    await h.waitFor(async () => (await enabledSubs(servers[0])).some(([, e]) => !e), 'the source to be paused')
    const late = await openSession(servers[0], 'late-writer')
    await h.withCleanup(
      async () => {
        await late.query('BEGIN')
        await late.query("INSERT INTO public.users VALUES (6001, 1, 'late', 'node1')")
        const pid = (await late.query<{pid: number}>('SELECT pg_backend_pid() AS pid')).rows[0].pid
        const r = await run
        assert.equal(r.code, 15, r.stderr + r.stdout)
        assert.match(r.stderr, new RegExp(`pid ${pid}\\b[^\\n]*late-writer`))
        assert.deepEqual(await enabledSubs(servers[0]), [['shop_node2_node1', true]], 'the pause was undone')
        assert.deepEqual(journalValues(dir, 'add-node:node3')?.pausedSubscriptions, [])
        // no slot is left waiting on the source
        await h.waitFor(async () => (await h.sql(servers[0], "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'shop_node1_node3'")).length === 0, 'no slot node1→node3')
        await late.query('COMMIT')
      },
      () => late.end().catch(() => {}),
    )
    const again = await addCopy()
    assert.equal(again.code, 0, again.stderr + again.stdout)
    await h.sql(servers[1], "INSERT INTO public.users VALUES (6002, 1, 'after', 'node2')")
    const n = (await h.tableDigest(servers[0], 'public.users')).count
    await h.waitConverged([...servers, x3], 'public.users', n)
    await onceEverywhere([...servers, x3], [6001, 6002])
  })

  it('standby: transactions prepared on the source before the promotion and committed / rolled back after it reach the new node exactly', async () => {
    const members = readFileSync(cfg, 'utf8').includes('name: node3') ? [...servers, x3] : servers
    const x = await createStandby(servers[0], {name: 'node4', settings: {max_prepared_transactions: 10}})
    const add = (env: NodeJS.ProcessEnv = {}) =>
      h.runCli(['add-node', 'node4', '--dsn', x.dsn(), '--strategy', 'standby', '--source', 'node1', '--yes', '-c', cfg], {env, timeoutMs: 180_000})
    // the run holds the pause of node1 for a while: prepare two transactions on node1 meanwhile
    const run = add({MMLITE_FAULT_HOLD_AFTER_PAUSE_MS: '3000'})
    await h.waitFor(async () => (await enabledSubs(servers[0])).some(([, e]) => !e), 'the source to be paused')
    const c1 = await openSession(servers[0], 'p1')
    const c2 = await openSession(servers[0], 'p2')
    await h.withCleanup(
      async () => {
        await c1.query('BEGIN')
        await c1.query("INSERT INTO public.users VALUES (7001, 1, 'prepared-commit', 'node1')")
        await c1.query("PREPARE TRANSACTION 'mmlite_test_commit'")
        await c2.query('BEGIN')
        await c2.query("INSERT INTO public.users VALUES (7002, 1, 'prepared-rollback', 'node1')")
        await c2.query("UPDATE public.users SET name = 'locked' WHERE id = 1")
        await c2.query("PREPARE TRANSACTION 'mmlite_test_rollback'")
      },
      () => c1.end(),
      () => c2.end(),
    )
    const r = await run
    assert.equal(r.code, 0, r.stderr + r.stdout)
    assert.deepEqual(await h.sql(x, 'SELECT gid FROM pg_prepared_xacts'), [], 'the new node holds no inherited prepared transaction')
    await h.sql(servers[0], "COMMIT PREPARED 'mmlite_test_commit'")
    await h.sql(servers[0], "ROLLBACK PREPARED 'mmlite_test_rollback'")
    await h.sql(servers[0], "UPDATE public.users SET name = 'after' WHERE id = 1")
    await h.sql(servers[1], "INSERT INTO public.users VALUES (7003, 1, 'after', 'node2')")
    const n = (await h.tableDigest(servers[0], 'public.users')).count
    await h.waitConverged([...members, x], 'public.users', n, 60_000)
    await onceEverywhere([...members, x], [7001, 7003])
    for (const s of [...members, x]) {
      assert.deepEqual(await h.sql(s, 'SELECT gid FROM pg_prepared_xacts'), [], `prepared transactions on ${s.name}`)
      assert.deepEqual(await h.sql(s, 'SELECT id FROM public.users WHERE id = 7002'), [], `rolled-back row on ${s.name}`)
      assert.equal((await h.sql<{name: string}>(s, 'SELECT name FROM public.users WHERE id = 1'))[0].name, 'after', `row 1 on ${s.name}`)
      assert.equal(await h.applyErrors(s), 0, `apply errors on ${s.name}`)
    }
  })

  /** Remove node3 from the mesh by hand (subscriptions, slots, publication, config entry, journal) and empty it. */
  async function rejoinableNode3(): Promise<void> {
    const {editConfigNodes} = await import('../../src/config/config.js')
    for (const s of [...servers, x3]) {
      for (const sub of (await h.meshObjects(s)).subs) {
        if (s !== x3 && !sub.startsWith('shop_node3_')) continue
        await h.sql(s, `ALTER SUBSCRIPTION "${sub}" DISABLE`)
        await h.sql(s, `ALTER SUBSCRIPTION "${sub}" SET (slot_name = NONE)`)
        await h.sql(s, `DROP SUBSCRIPTION "${sub}"`)
      }
    }
    for (const s of [...servers, x3]) {
      for (const slot of (await h.meshObjects(s)).slots) {
        if (s !== x3 && !slot.endsWith('_node3')) continue
        await h.waitFor(async () => !(await h.sql<{active: boolean}>(s, 'SELECT active FROM pg_replication_slots WHERE slot_name = $1', [slot]))[0]?.active, `slot ${slot} released`)
        await h.sql(s, 'SELECT pg_drop_replication_slot($1)', [slot])
      }
    }
    for (const p of (await h.meshObjects(x3)).pubs) await h.sql(x3, `DROP PUBLICATION "${p}"`)
    await h.sql(x3, 'TRUNCATE public.users, public.departments')
    await editConfigNodes(cfg, {remove: 'node3'})
  }
})
