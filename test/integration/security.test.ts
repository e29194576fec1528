/**
 * Security of mmlite's own sessions (issue 13), on real servers through the compiled CLI:
 *  - search_path: a non-superuser who can create in `public` (the database owner on 15+,
 *    anyone on 14) plants look-alikes of the built-ins mmlite calls with untyped literals;
 *    a role- and database-level `search_path = public` tries to make mmlite use them. mmlite's
 *    sessions are pinned to pg_catalog, pg_temp: the planted functions never run, the planter
 *    does not become superuser, and replication works (rows checked on every node).
 *  - the cluster lock: a role without REPLICATION cannot take or block it; a lock held on a
 *    replicated table makes the command fail after lock_timeout instead of hanging with the
 *    cluster lock held; a lost lock session stops the run.
 */
import assert from 'node:assert/strict'
import {statSync} from 'node:fs'
import {mkdir, rm, writeFile} from 'node:fs/promises'
import path from 'node:path'
import pg from 'pg'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import {ClusterLock, lockSlotName} from '../../src/engine/lock.js'
import {Journal} from '../../src/engine/journal.js'
import {Cluster} from '../../src/cluster/cluster.js'
import {loadConfig} from '../../src/config/config.js'
import {lockKey} from '../../src/cluster/naming.js'
import * as h from '../helpers/cluster.js'

const DB = 'app'

/** Look-alikes of the built-ins (text arguments win over name for untyped literals), each making mallory superuser. */
const PLANT = `
CREATE TABLE public.hits (fn text, at timestamptz DEFAULT now());
CREATE FUNCTION public.evil(fn text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.hits (fn) VALUES (fn);
  BEGIN EXECUTE 'ALTER ROLE mallory SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
END $$;
CREATE FUNCTION public.pg_create_logical_replication_slot(a text, b text, OUT slot_name name, OUT lsn pg_lsn) LANGUAGE plpgsql AS $$
BEGIN PERFORM public.evil('create2');
  SELECT s.slot_name, s.lsn INTO slot_name, lsn FROM pg_catalog.pg_create_logical_replication_slot(a::name, b::name) s; END $$;
CREATE FUNCTION public.pg_create_logical_replication_slot(a text, b text, c boolean, OUT slot_name name, OUT lsn pg_lsn) LANGUAGE plpgsql AS $$
BEGIN PERFORM public.evil('create3');
  SELECT s.slot_name, s.lsn INTO slot_name, lsn FROM pg_catalog.pg_create_logical_replication_slot(a::name, b::name, c) s; END $$;
CREATE FUNCTION public.pg_copy_logical_replication_slot(a text, b text, c boolean, OUT slot_name name, OUT lsn pg_lsn) LANGUAGE plpgsql AS $$
BEGIN PERFORM public.evil('copy3');
  SELECT s.slot_name, s.lsn INTO slot_name, lsn FROM pg_catalog.pg_copy_logical_replication_slot(a::name, b::name, c) s; END $$;
CREATE FUNCTION public.pg_copy_logical_replication_slot(a text, b text, c boolean, d text, OUT slot_name name, OUT lsn pg_lsn) LANGUAGE plpgsql AS $$
BEGIN PERFORM public.evil('copy4');
  SELECT s.slot_name, s.lsn INTO slot_name, lsn FROM pg_catalog.pg_copy_logical_replication_slot(a::name, b::name, c, d::name) s; END $$;
CREATE FUNCTION public.pg_drop_replication_slot(a text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN PERFORM public.evil('drop'); PERFORM pg_catalog.pg_drop_replication_slot(a::name); END $$;
`

/** mallory: a plain role owning database app (public is hers on 15+; on 14 anyone creates there). */
async function prepareVictim(s: LocalServer): Promise<void> {
  await h.sql(s, "CREATE ROLE mallory LOGIN PASSWORD 'mallory'")
  await h.sql(s, `CREATE DATABASE ${DB} OWNER mallory`)
  // role- and database-level settings must not beat mmlite's pinned search_path
  await h.sql(s, 'ALTER ROLE postgres SET search_path = public, pg_catalog')
  await h.sql(s, `ALTER DATABASE ${DB} SET search_path = public, pg_catalog`)
  const c = new pg.Client({connectionString: `postgresql://mallory:mallory@127.0.0.1:${s.port}/${DB}`})
  await c.connect()
  try {
    await c.query(PLANT)
  } finally {
    await c.end()
  }
}

async function owned(s: LocalServer) {
  const [r] = await h.sql<{sup: boolean}>(s, "SELECT rolsuper AS sup FROM pg_roles WHERE rolname = 'mallory'")
  const hits = await sqlDb<{fn: string}>(s, 'SELECT fn FROM public.hits')
  return {superuser: r.sup, hits: hits.map(x => x.fn)}
}

async function sqlDb<T extends pg.QueryResultRow = Record<string, unknown>>(s: LocalServer, q: string, params: unknown[] = []): Promise<T[]> {
  // the test's own sessions must not run the planted functions either (role postgres has search_path = public)
  const c = new pg.Client({connectionString: s.dsn(DB), options: '-c search_path=pg_catalog,pg_temp'})
  await c.connect()
  try {
    return (await c.query<T>(q, params)).rows
  } finally {
    await c.end()
  }
}

async function writeCfg(dir: string, servers: LocalServer[]): Promise<string> {
  const file = path.join(dir, 'mmlite.yaml')
  const lines = ['cluster: shop', 'tables:', '  - public.departments', '  - public.users', 'nodes:']
  servers.forEach((s, i) => lines.push(`  - name: node${i + 1}`, `    dsn: ${s.dsn(DB)}`))
  await writeFile(file, lines.join('\n') + '\n')
  return file
}

async function digest(s: LocalServer) {
  const [r] = await sqlDb<{n: number; md5: string}>(s, "SELECT count(*)::int AS n, md5(coalesce(string_agg(t::text, '|' ORDER BY id), '')) AS md5 FROM public.users t")
  return r
}

async function converged(servers: LocalServer[], n: number): Promise<void> {
  let last: unknown
  await h.waitFor(async () => {
    const d = await Promise.all(servers.map(digest))
    last = d
    return d.every(x => x.n === n && x.md5 === d[0].md5)
  }, `users to converge on ${n} rows`).catch(e => {
    throw new Error(`${(e as Error).message}: ${JSON.stringify(last)}`)
  })
}

describe('security: planted built-ins and role/database search_path on PostgreSQL 16 (native)', function () {
  let servers: LocalServer[]
  let dir: string
  let cfg: string
  before(async () => {
    servers = await h.startServers([16, 16, 16])
    for (const s of servers) {
      await prepareVictim(s)
      await sqlDb(s, h.SCHEMA)
    }
    await sqlDb(servers[0], "INSERT INTO public.users SELECT g, 1, 'seed ' || g, 'node1' FROM generate_series(1, 20) g")
    // idle sessions are ended after 2 s here: mmlite's lock sessions (idle all run long) must survive it
    for (const s of servers) await h.sql(s, `ALTER ROLE postgres IN DATABASE ${DB} SET idle_session_timeout = '2s'`)
    dir = await h.tempDir()
    cfg = await writeCfg(dir, servers)
  })
  after(() => stopAllStarted())

  it('init, status and remove-node never run the planted functions; replication works', async () => {
    const init = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(init.code, 0, init.stderr + init.stdout)
    const st = await h.runCli(['status', '-c', cfg, '--json'])
    assert.equal(st.code, 0, st.stderr + st.stdout)
    for (const [i, s] of servers.entries()) await sqlDb(s, 'INSERT INTO public.users VALUES ($1, 1, $2, $3)', [100 + i, `from node${i + 1}`, `node${i + 1}`])
    await converged(servers, 23)
    const rm = await h.runCli(['remove-node', 'node3', '-c', cfg, '--yes'])
    assert.equal(rm.code, 0, rm.stderr + rm.stdout)
    await sqlDb(servers[0], "INSERT INTO public.users VALUES (200, 1, 'after remove', 'node1')")
    await sqlDb(servers[1], "INSERT INTO public.users VALUES (201, 1, 'after remove', 'node2')")
    await converged(servers.slice(0, 2), 25)
    for (const s of servers) assert.deepEqual(await owned(s), {superuser: false, hits: []}, `on ${s.name}`)
  })

  it('a role without REPLICATION can neither take nor block the cluster lock', async () => {
    const mallory = new pg.Client({connectionString: `postgresql://mallory:mallory@127.0.0.1:${servers[0].port}/${DB}`})
    await mallory.connect()
    try {
      // the old lock, an advisory lock on a key derived from the cluster name, any role could take
      await mallory.query('SELECT pg_catalog.pg_advisory_lock($1::bigint)', [lockKey('shop').toString()])
      await assert.rejects(
        mallory.query('SELECT pg_catalog.pg_create_physical_replication_slot($1, false, true)', [lockSlotName('shop')]),
        /permission denied|must be superuser or replication role/i,
      )
      const again = await h.runCli(['init', '-c', cfg, '--yes'])
      assert.equal(again.code, 0, again.stderr + again.stdout)
    } finally {
      await mallory.end()
    }
  })

  it('a state file changed between reading it and holding the lock: refused, nothing taken', async () => {
    const config = loadConfig(cfg)
    const journal = Journal.open(cfg, 'shop')
    assert.deepEqual(journal.unfinished(), [])
    const cluster = new Cluster(config)
    try {
      // another run records an operation meanwhile
      await mkdir(path.join(path.dirname(cfg), '.mmlite'), {recursive: true})
      await writeFile(path.join(path.dirname(cfg), '.mmlite/journal.json'), JSON.stringify({version: 1, cluster: 'shop', operations: {x: {}}}))
      await assert.rejects(ClusterLock.acquire(cluster, 'test'), /journal\.json changed while this run was starting/)
      for (const s of servers) assert.deepEqual(await sqlDb(s, 'SELECT slot_name FROM pg_replication_slots WHERE slot_name = $1', [lockSlotName('shop')]), [])
    } finally {
      await rm(path.join(path.dirname(cfg), '.mmlite/journal.json'), {force: true})
      for (const n of cluster.names) await cluster.node(n).close()
    }
  })

  it('a lock held on a replicated table: the run fails after lock_timeout; a lost lock session stops the run; a re-run finishes', async () => {
    const x = servers[2]
    await sqlDb(x, 'TRUNCATE public.users, public.departments')
    const args = ['add-node', 'node3', '--dsn', x.dsn(DB), '-c', cfg, '--yes']
    const holder = new pg.Client({connectionString: x.dsn(DB), options: '-c search_path=pg_catalog,pg_temp'})
    await holder.connect()
    try {
      await holder.query('BEGIN')
      await holder.query('LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE')
      const timedOut = await h.runCli(args, {env: {MMLITE_LOCK_TIMEOUT: '2s'}})
      assert.notEqual(timedOut.code, 0, timedOut.stdout)
      assert.match(timedOut.stderr, /lock timeout/)
      for (const s of servers) assert.deepEqual(await sqlDb(s, 'SELECT slot_name FROM pg_replication_slots WHERE slot_name = $1', [lockSlotName('shop')]), [], `cluster lock left on ${s.name}`)

      // now the run waits for the table lock; its lock session on node1 is terminated meanwhile
      const run = h.runCli(args, {env: {MMLITE_LOCK_TIMEOUT: '5min'}})
      await h.waitFor(
        async () => (await sqlDb(x, "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name LIKE 'mmlite%'")).length > 0,
        'add-node to wait for the table lock',
      )
      const killed = await sqlDb<{ok: boolean}>(servers[0], 'SELECT pg_terminate_backend(active_pid) AS ok FROM pg_replication_slots WHERE slot_name = $1', [lockSlotName('shop')])
      assert.deepEqual(killed, [{ok: true}])
      await h.waitFor(async () => (await sqlDb(servers[0], 'SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [lockSlotName('shop')])).length === 0, 'the lock slot to go')
      await holder.query('ROLLBACK')
      const lost = await run
      assert.notEqual(lost.code, 0, lost.stderr + lost.stdout)
      assert.match(lost.stderr, /lost the lock of cluster "shop"/)
    } finally {
      await holder.end()
    }
    const ok = await h.runCli(args)
    assert.equal(ok.code, 0, ok.stderr + ok.stdout)
    await sqlDb(x, "INSERT INTO public.users VALUES (300, 1, 'from node3', 'node3')")
    await converged(servers, 26)
    for (const s of servers) assert.deepEqual(await owned(s), {superuser: false, hits: []}, `on ${s.name}`)
    // the state files hold operation details: private to the operator
    const state = path.join(path.dirname(cfg), '.mmlite')
    assert.equal(statSync(state).mode & 0o777, 0o700)
    for (const f of ['journal.json', 'history.jsonl']) assert.equal(statSync(path.join(state, f)).mode & 0o777, 0o600, f)
  })
})

describe('security: planted built-ins on PostgreSQL 14 (anyone can create in public)', function () {
  let n1: LocalServer
  let n2: LocalServer
  let cfg: string
  before(async () => {
    ;[n1, n2] = await h.startServers([14, 14])
    for (const s of [n1, n2]) {
      await prepareVictim(s)
      await sqlDb(s, h.SCHEMA)
    }
    // a one-way pgoutput link built by hand (no mmlite plugin for 14 here)
    await sqlDb(n1, 'CREATE PUBLICATION shop FOR TABLE public.departments, public.users')
    await sqlDb(n1, "SELECT pg_catalog.pg_create_logical_replication_slot('shop_node1_node2', 'pgoutput')")
    await sqlDb(
      n2,
      `CREATE SUBSCRIPTION shop_node1_node2 CONNECTION 'host=127.0.0.1 port=${n1.port} dbname=${DB} user=postgres' PUBLICATION shop ` +
        "WITH (create_slot = false, slot_name = 'shop_node1_node2', copy_data = false)",
    )
    cfg = await writeCfg(await h.tempDir(), [n1, n2])
  })
  after(() => stopAllStarted())

  async function ids(s: LocalServer) {
    return (await sqlDb<{id: string; by: string}>(s, 'SELECT id::text, updated_by AS by FROM public.users ORDER BY id')).map(r => [Number(r.id), r.by])
  }

  it('init (plugin probe), status and skip-tx (slot copy, peek, drop) never run the planted functions; the link works', async () => {
    const init = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(init.code, 11, init.stderr + init.stdout) // refused by preflight: no mmlite plugin for 14 here
    await sqlDb(n1, "INSERT INTO public.users VALUES (4, 1, 'before', 'node1')")
    await h.waitFor(async () => (await ids(n2)).length === 1, 'the first row on node2')
    // a row only node2 has (tagged with an origin: not sent on), then the same key on node1
    const c = new pg.Client({connectionString: n2.dsn(DB), options: '-c search_path=pg_catalog,pg_temp'})
    await c.connect()
    await c.query("SELECT pg_replication_origin_create('test_local')")
    await c.query("SELECT pg_replication_origin_session_setup('test_local')")
    await c.query("INSERT INTO public.users VALUES (5, 1, 'node2 has it', 'node2')")
    await c.end()
    await sqlDb(n1, "INSERT INTO public.users VALUES (5, 1, 'conflict', 'node1')")
    await sqlDb(n1, "INSERT INTO public.users VALUES (6, 1, 'after', 'node1')")
    await h.waitFor(async () => {
      const st = h.parseJson<{links: Array<{from: string; stuck?: {xid: number}}>}>(await h.runCli(['status', '-c', cfg, '--json']))
      return st.links.some(l => l.from === 'node1' && l.stuck)
    }, 'status to show the stuck transaction')
    const skip = await h.runCli(['skip-tx', '-c', cfg, '--yes'])
    assert.equal(skip.code, 0, skip.stderr + skip.stdout)
    await sqlDb(n1, "INSERT INTO public.users VALUES (7, 1, 'after the skip', 'node1')")
    await h.waitFor(async () => (await ids(n2)).length === 4, 'rows on node2')
    assert.deepEqual(await ids(n2), [[4, 'node1'], [5, 'node2'], [6, 'node1'], [7, 'node1']])
    assert.deepEqual(await ids(n1), [[4, 'node1'], [5, 'node1'], [6, 'node1'], [7, 'node1']])
    for (const s of [n1, n2]) assert.deepEqual(await owned(s), {superuser: false, hits: []}, `on ${s.name}`)
  })
})
