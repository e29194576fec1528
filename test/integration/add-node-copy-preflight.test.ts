/**
 * add-node preflight refusals on real servers (PostgreSQL 18): X not empty, X already a
 * member, a table whose columns differ on X, X being a member's own database, an unknown
 * source — each exit 11, every problem named, and nothing changed anywhere (no object on any
 * node, mmlite.yaml untouched, no journal entry). --dry-run and a missing --yes change nothing
 * either and never print a password. Then a join of an idle cluster (native links), where
 * the other node's link confirms past the new slot's consistent point without any transaction.
 */
import assert from 'node:assert/strict'
import {existsSync, readFileSync} from 'node:fs'
import path from 'node:path'
import pg from 'pg'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import {compareLsn} from '../../src/db/lsn.js'
import * as h from '../helpers/cluster.js'

describe('add-node copy: preflight refusals change nothing (PostgreSQL 18)', function () {
  this.timeout(300_000)
  let servers: LocalServer[]
  let x: LocalServer
  let dir: string
  let cfg: string
  let xDsn: string

  before(async () => {
    const all = await h.startServers([18, 18, 18])
    servers = all.slice(0, 2)
    x = all[2]
    await h.createSchema(all)
    await h.sql(servers[0], "INSERT INTO public.departments SELECT g, 'dept ' || g FROM generate_series(1, 10) g")
    ;({dir, cfg} = await h.initCluster(servers))
    await h.writeOnEveryNode(servers, 5)
    await h.waitConverged(servers, 'public.users', 10)
    // a password in the DSN (the server checks it: scram-sha-256): it must never be printed
    await x.setPassword('s3cr3tpw')
    xDsn = `postgresql://postgres:s3cr3tpw@127.0.0.1:${x.port}/postgres`
  })
  after(() => stopAllStarted())

  async function state(): Promise<string> {
    const objects = await Promise.all([...servers, x].map(s => h.meshObjects(s)))
    const journal = path.join(dir, '.mmlite/journal.json')
    const ops = existsSync(journal) ? JSON.parse(readFileSync(journal, 'utf8')).operations : {}
    return JSON.stringify({objects, config: readFileSync(cfg, 'utf8'), ops})
  }

  async function refuse(args: string[], ...expected: RegExp[]): Promise<string> {
    return refuseWith(11, args, ...expected)
  }

  async function refuseWith(code: number, args: string[], ...expected: RegExp[]): Promise<string> {
    const before = await state()
    const r = await h.runCli(['add-node', 'node3', '-c', cfg, '--yes', ...args])
    assert.equal(r.code, code, `expected a refusal with exit ${code}, got ${r.code}\n${r.stdout}\n${r.stderr}`)
    assert.match(r.stderr, /nothing was changed/)
    for (const e of expected) assert.match(r.stderr, e)
    assert.doesNotMatch(r.stdout + r.stderr, /s3cr3tpw/)
    assert.equal(await state(), before, 'nothing changed')
    return r.stderr
  }

  it('the new node holds data', async () => {
    await h.sql(x, "INSERT INTO public.departments VALUES (99, 'stray')")
    await h.withCleanup(
      async () => {
        await refuse(['--dsn', xDsn], /\[node3\] data: replicated table\(s\) public\.departments hold rows; the copy strategy fills empty tables/, /TRUNCATE "public"\."departments"/)
      },
      () => h.sql(x, 'TRUNCATE public.departments'),
    )
  })

  it('the new node is already a member', async () => {
    await h.writeConfig(dir, [...servers, x])
    await h.withCleanup(
      async () => {
        await refuse(['--dsn', xDsn], /\[node3\] member: node3 is already a member of cluster "shop"/)
      },
      () => h.writeConfig(dir, servers),
    )
  })

  it('a table whose columns differ on the new node (reported with every other problem)', async () => {
    await h.sql(x, 'ALTER TABLE public.users ADD COLUMN extra int')
    await h.sql(x, "INSERT INTO public.departments VALUES (99, 'stray')")
    await h.withCleanup(
      async () => {
        await refuse(['--dsn', xDsn], /\[node3\] columns: table public\.users differs from node1: node3 has extra integer/, /\[node3\] data:/)
      },
      () => h.sql(x, 'ALTER TABLE public.users DROP COLUMN extra'),
      () => h.sql(x, 'TRUNCATE public.departments'),
    )
  })

  it("the new node's DSN points at a member's database", async () => {
    await refuse(['--dsn', servers[1].dsn()], /\[node3\] identity: --dsn of node3 reaches the same database as member node2/)
  })

  it('an unknown source', async () => {
    // an unknown node is exit 10 in every command (flags.test.ts)
    await refuseWith(10, ['--dsn', xDsn, '--source', 'nope'], /unknown node "nope" \(--source\)/)
  })

  it('--dry-run prints the SQL per node and changes nothing; without --yes and a terminal it refuses', async () => {
    const before = await state()
    for (const args of [['--dry-run'], ['--dry-run', '--json']]) {
      const r = await h.runCli(['add-node', 'node3', '-c', cfg, '--dsn', xDsn, ...args])
      assert.equal(r.code, 0, r.stderr)
      assert.doesNotMatch(r.stdout + r.stderr, /s3cr3tpw/)
      assert.match(r.stdout, /CREATE_REPLICATION_SLOT \\?"shop_node1_node3\\?" LOGICAL \\?"pgoutput\\?" \(SNAPSHOT 'export'\)/)
      assert.match(r.stdout, /pg_create_logical_replication_slot\('shop_node2_node3', 'pgoutput'\)/)
      assert.match(r.stdout, /ALTER SUBSCRIPTION \\?"shop_node2_node1\\?" DISABLE/)
      assert.match(r.stdout, /pg_replication_origin_advance/)
      assert.match(r.stdout, /enabled = false, origin = none/)
      assert.match(r.stdout, /password=(?:'')?\*{8}/)
    }
    const noYes = await h.runCli(['add-node', 'node3', '-c', cfg, '--dsn', xDsn])
    assert.equal(noYes.code, 14, noYes.stderr)
    assert.equal(await state(), before)
  })

  it('joins an idle cluster; the idle link confirms past the new slot without any transaction; a long transaction on the source is waited for before the pause, named; --disable-on-error', async () => {
    const originOf = async () =>
      (
        await h.sql<{lsn: string}>(
          servers[0],
          "SELECT os.remote_lsn::text AS lsn FROM pg_replication_origin_status os JOIN pg_subscription s ON os.external_id = 'pg_' || s.oid WHERE s.subname = 'shop_node2_node1'",
        )
      )[0].lsn
    const before = await originOf()
    const killed = await h.runCli(['add-node', 'node3', '-c', cfg, '--dsn', xDsn, '--yes'], {env: {MMLITE_FAULT_KILL_AFTER: 'prepare'}})
    assert.equal(killed.signal, 'SIGKILL', killed.stdout + killed.stderr)
    const ops = JSON.parse(readFileSync(path.join(dir, '.mmlite/journal.json'), 'utf8')).operations
    const L = ops['add-node:node3'].values.peerSlots.node2 as string
    await h.waitFor(async () => {
      const c = (await h.sql<{lsn: string}>(servers[1], "SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = 'shop_node2_node1'"))[0].lsn
      return compareLsn(c, L) >= 0
    }, 'slot node2→node1 to confirm past the consistent point of node2→node3')
    assert.equal(await originOf(), before, 'node1 applied nothing from node2 meanwhile')

    // a long transaction on the source would hold up the slot, and so the inbound pause: the
    // run waits for it BEFORE pausing, names it, and the pause does not include the wait
    const blocker = new pg.Client({connectionString: servers[0].dsn(), application_name: 'long-tx'})
    await blocker.connect()
    let r!: h.CliResult
    let heldMs = 0
    await h.withCleanup(
      async () => {
        await blocker.query('BEGIN')
        await blocker.query('SELECT pg_current_xact_id()')
        const pid = (await blocker.query<{pid: number}>('SELECT pg_backend_pid() AS pid')).rows[0].pid
        let settled: h.CliResult | undefined
        const run = h.runCli(['add-node', 'node3', '-c', cfg, '--dsn', xDsn, '--yes', '--disable-on-error']).then(x => (settled = x))
        // add-node polls the transactions holding an xid on node1 (the wait before the pause)
        await h.waitFor(async () => {
          if (settled) throw new Error(`add-node ended before waiting for the open transaction (exit ${settled.code}):\n${settled.stdout}\n${settled.stderr}`)
          const w = await h.sql(servers[0], "SELECT 1 FROM pg_stat_activity WHERE query LIKE '%''prepared:''%' AND pid <> pg_backend_pid()")
          return w.length > 0
        }, 'add-node to wait for the open transaction')
        const t0 = Date.now()
        // while it waits (long enough for the note), nothing is paused
        await h.waitFor(async () => {
          const off = await h.sql(servers[0], 'SELECT subname FROM pg_subscription WHERE NOT subenabled')
          assert.deepEqual(off, [], 'nothing is paused while add-node waits for the transaction')
          return Date.now() - t0 > 4000
        }, 'add-node to wait a while')
        heldMs = Date.now() - t0
        await blocker.query('COMMIT')
        r = await run
        assert.match(r.stdout, new RegExp(`! node1: waiting for pid ${pid} \\(long-tx, [^)]*\\) idle in transaction since [^;]*; last query: SELECT pg_backend_pid`))
      },
      () => blocker.end(),
    )
    assert.equal(r.code, 0, r.stderr + r.stdout)
    assert.doesNotMatch(r.stdout + r.stderr, /s3cr3tpw/)
    assert.match(r.stdout, /Node node3 joined cluster "shop" \(strategy copy, source node1\): 4 links streaming/)
    const pause = /Source node1: inbound subscriptions \(shop_node2_node1\) were paused for (\d+) ms; clients were never paused/.exec(r.stdout)
    assert.ok(pause, r.stdout)
    assert.ok(Number(pause[1]) < heldMs, `the reported pause (${pause[1]} ms) does not include the wait for the long transaction (${heldMs} ms)`)
    assert.match(r.stdout, /Cluster shop: OK/)
    // --disable-on-error: the new node's links stop on an apply error; links that existed keep theirs
    assert.match(readFileSync(cfg, 'utf8'), /^disable_on_error: true$/m)
    const doe = async (s: LocalServer, sub: string) => (await h.sql<{d: boolean}>(s, 'SELECT subdisableonerr AS d FROM pg_subscription WHERE subname = $1', [sub]))[0].d
    assert.equal(await doe(x, 'shop_node1_node3'), true)
    assert.equal(await doe(x, 'shop_node2_node3'), true)
    assert.equal(await doe(servers[0], 'shop_node3_node1'), true)
    assert.equal(await doe(servers[0], 'shop_node2_node1'), false)
    await h.sql(x, "INSERT INTO public.departments VALUES (100, 'from node3')")
    await h.waitConverged([...servers, x], 'public.departments', 11)
    await h.waitConverged([...servers, x], 'public.users', 10)
  })
})
