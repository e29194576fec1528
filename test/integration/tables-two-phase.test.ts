/**
 * Adding a table to a running mesh requires two-phase commit on every node (a kill between
 * one-phase commits could not be finished by a re-run). PostgreSQL 16, 17, 18 started with the
 * default max_prepared_transactions = 0, except node1 (1, and that slot held by an
 * application's prepared transaction):
 *   - the first `init` works without prepared transactions (its seed copy is another path);
 *   - adding a table is refused before anything changes (exit 11), naming every node that
 *     cannot prepare and the fix; publications, subscriptions and rows are unchanged on every
 *     node; `doctor` says so per node (info); `ddl` still runs, one-phase, with its note,
 *     unless a kill between its commits could not be finished (disable_on_error, --force);
 *   - with the setting (node2, node3 restarted, node1's slot freed) the same `init` adds the
 *     table while every node writes to it and to public.users: every node converges on exactly
 *     the acknowledged writes and the seeded rows; no prepared transaction is left.
 */
import assert from 'node:assert/strict'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'
import {WriteLoad} from '../helpers/load.js'
import {TableLoad, rerunUnderLoad, setTables} from '../helpers/table-load.js'
import type {DoctorResult} from '../../src/steps/doctor/doctor.js'

const TABLE = 'public.items'

/** what a refused run must not have changed: publications, subscriptions, rows */
async function snapshot(s: LocalServer): Promise<unknown> {
  const pubs = await h.sql(s, "SELECT p.pubname::text, c.relname::text FROM pg_publication p LEFT JOIN pg_publication_rel pr ON pr.prpubid = p.oid LEFT JOIN pg_class c ON c.oid = pr.prrelid ORDER BY 1, 2")
  const subs = await h.sql(s, "SELECT s.subname::text, s.subenabled, s.subpublications::text, (SELECT string_agg(r.srrelid::regclass::text, ',' ORDER BY 1) FROM pg_subscription_rel r WHERE r.srsubid = s.oid) AS rels FROM pg_subscription s ORDER BY 1")
  return {pubs, subs, items: await h.tableDigest(s, TABLE), prepared: await h.sql(s, 'SELECT gid FROM pg_prepared_xacts ORDER BY 1')}
}

describe('tables: adding a table requires two-phase commit (max_prepared_transactions)', function () {
  let servers: LocalServer[]
  let cfg: string
  before(async () => {
    servers = await h.startServers([16, 17, 18])
    await servers[0].setSettings({max_prepared_transactions: 1})
    await servers[0].restart()
    await h.createSchema(servers)
    await Promise.all(servers.map(s => h.sql(s, `CREATE TABLE ${TABLE} (id bigint PRIMARY KEY, node text, v int); CREATE TABLE public.scratch (id int)`)))
    await h.sql(servers[2], `INSERT INTO ${TABLE} SELECT g, 'seed', g FROM generate_series(1, 2000) g`)
    cfg = await h.writeConfig(await h.tempDir(), servers)
    const r = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(r.code, 0, `the first init needs no prepared transactions\n${r.stderr}${r.stdout}`)
  })
  after(() => stopAllStarted())

  it('without it: refused before anything changes (exit 11), naming each node and the fix; doctor says so; ddl runs one-phase with its note', async () => {
    // node1's only prepared-transaction slot is taken by an application's transaction
    await h.sql(servers[0], "BEGIN; INSERT INTO public.scratch VALUES (1); PREPARE TRANSACTION 'app-tx'")
    await setTables(cfg, ['public.departments', 'public.users', TABLE])
    const before = await Promise.all(servers.map(snapshot))
    for (const args of [['--dry-run'], ['--yes']]) {
      const r = await h.runCli(['init', '-c', cfg, ...args])
      assert.equal(r.code, 11, r.stderr + r.stdout)
      assert.match(r.stderr, /preflight found 3 problems; nothing was changed/)
      assert.match(r.stderr, /\[node1\] two-phase: all 1 prepared-transaction slots \(max_prepared_transactions\) are held by other prepared transactions; adding public\.items needs one/)
      for (const n of ['node2', 'node3']) {
        assert.match(r.stderr, new RegExp(`\\[${n}\\] two-phase: max_prepared_transactions = 0; adding public\\.items needs it: the nodes' commits must be two-phase: a kill between one-phase commits would leave the tables published by some nodes only, which no re-run can finish`))
        assert.match(r.stderr, new RegExp(`fix: ALTER SYSTEM SET max_prepared_transactions = 10; then restart PostgreSQL on ${n} \\(a restart setting\\)`))
      }
    }
    assert.deepEqual(await Promise.all(servers.map(snapshot)), before, 'no publication, subscription or row changed on any node')

    const doc = await h.runCli(['doctor', '-c', cfg, '--json', '--sample', '0'])
    const info = h.parseJson<DoctorResult>(doc).findings.filter(f => f.check === 'prepared')
    assert.deepEqual(info.map(f => [f.severity, f.node, f.object]), [['info', 'node2', 'max_prepared_transactions'], ['info', 'node3', 'max_prepared_transactions']], JSON.stringify(info))

    // ddl keeps its one-phase commit where a re-run could finish a kill between the commits, and
    // refuses where it could not: a link that stops on an error, a statement with no catalog check
    await h.sql(servers[1], 'ALTER SUBSCRIPTION shop_node1_node2 SET (disable_on_error = true)')
    const doe = await h.runCli(['ddl', '-c', cfg, 'CREATE INDEX users_name_idx ON public.users (name)', '--yes'])
    assert.equal(doe.code, 11, doe.stderr + doe.stdout)
    assert.match(doe.stderr, /max_prepared_transactions = 0 on node2, node3: the nodes would commit one-phase, and a kill between their commits could not be finished by a re-run; refused, nothing was changed/)
    assert.match(doe.stderr, /disable_on_error is on for shop_node1_node2 on node2/)
    await h.sql(servers[1], 'ALTER SUBSCRIPTION shop_node1_node2 SET (disable_on_error = false)')
    const forced = await h.runCli(['ddl', '-c', cfg, 'ALTER TABLE public.users DROP COLUMN updated_by', '--force', '--yes'])
    assert.equal(forced.code, 11, forced.stderr + forced.stdout)
    assert.match(forced.stderr, /ALTER TABLE public\.users DROP COLUMN updated_by: no catalog check tells whether a node already ran it/)
    for (const s of servers) {
      assert.equal((await h.sql(s, "SELECT 1 FROM pg_indexes WHERE indexname = 'users_name_idx'")).length, 0, s.name)
      assert.equal((await h.sql(s, "SELECT 1 FROM pg_attribute WHERE attrelid = 'public.users'::regclass AND attname = 'updated_by' AND NOT attisdropped")).length, 1, s.name)
    }
    // ddl keeps its one-phase commit, and says what a kill would leave
    const ddl = await h.runCli(['ddl', '-c', cfg, 'CREATE INDEX users_name_idx ON public.users (name)', '--yes'])
    assert.equal(ddl.code, 0, ddl.stderr + ddl.stdout)
    assert.match(ddl.stdout + ddl.stderr, /max_prepared_transactions = 0 on node2, node3: the nodes commit one-phase, at once; if this run is killed between their commits, the links from the nodes that committed fail \("missing replicated column"\) until you re-run this command/)
    for (const s of servers) assert.equal((await h.sql(s, "SELECT 1 FROM pg_indexes WHERE indexname = 'users_name_idx'")).length, 1, s.name)
  })

  it('with it on every node: the same init adds the table under writes on every node; all converge', async () => {
    await h.sql(servers[0], "ROLLBACK PREPARED 'app-tx'")
    for (const s of servers.slice(1)) {
      await s.setSettings({max_prepared_transactions: 10})
      await s.restart()
    }
    // the restarts broke the links for a moment (counted as apply errors): once every link
    // applies again, count from zero
    await h.waitFor(async () => {
      const up = await Promise.all(servers.map(s => h.sql<{n: number}>(s, 'SELECT count(*)::int AS n FROM pg_stat_subscription WHERE relid IS NULL AND pid IS NOT NULL AND latest_end_lsn IS NOT NULL')))
      return up.every(x => x[0].n === 2)
    }, 'every link to apply again after the restarts')
    await Promise.all(servers.map(s => h.sql(s, 'SELECT pg_stat_reset_subscription_stats(NULL)')))
    const writers = servers.map((s, i) => ({label: `node${i + 1}`, server: s, index: i + 1}))
    const users = new WriteLoad().start(writers)
    const items = new TableLoad(TABLE).start(writers)
    // the same init that was refused (it must exit 0), under load; then every write is checked everywhere
    await rerunUnderLoad(servers, {users, usersBefore: 0, items, baseRows: 2000}, () => items.progress(10), ['init', '-c', cfg, '--yes'])
    assert.deepEqual(await Promise.all(servers.map(s => h.sql(s, "SELECT 1 FROM pg_publication_tables WHERE pubname = 'shop' AND tablename = 'items'"))), [[{'?column?': 1}], [{'?column?': 1}], [{'?column?': 1}]])
    for (const s of servers) {
      assert.equal(await h.applyErrors(s), 0, `apply errors on ${s.name}`)
      assert.deepEqual(await h.sql(s, 'SELECT gid FROM pg_prepared_xacts'), [], `${s.name}: no prepared transaction left`)
    }
  })
})
