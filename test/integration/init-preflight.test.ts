/**
 * Preflight refusals: every problem reported in one go, exit 11, and nothing created on
 * any node. Plugin availability and output_plugin_libraries on real servers.
 */
import assert from 'node:assert/strict'
import {writeFile} from 'node:fs/promises'
import path from 'node:path'
import {freePort, stopAllStarted, LocalServer} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'

async function assertNothingCreated(servers: LocalServer[]): Promise<void> {
  for (const s of servers) assert.deepEqual(await h.meshObjects(s), {pubs: [], slots: [], subs: []}, `objects left on ${s.name}`)
}

describe('init: preflight refusals change nothing', function () {
  let servers: LocalServer[]
  let replica: LocalServer
  let dir: string
  before(async () => {
    ;[servers, replica] = await Promise.all([
      h.startServers([16, 16, 16]),
      LocalServer.start({major: 16, name: 'walreplica', settings: {wal_level: 'replica'}}),
    ])
    await h.createSchema([...servers, replica])
    dir = await h.tempDir()
  })
  after(() => stopAllStarted())
  afterEach(async () => {
    await assertNothingCreated([...servers, replica])
    await Promise.all(servers.map(s => h.sql(s, 'TRUNCATE public.users, public.departments')))
  })

  async function refuse(cfgFile: string, ...expected: RegExp[]): Promise<string> {
    const r = await h.runCli(['init', '-c', cfgFile, '--yes'])
    assert.equal(r.code, 11, `expected preflight refusal, got ${r.code}\n${r.stdout}\n${r.stderr}`)
    assert.match(r.stderr, /nothing was changed/)
    for (const e of expected) assert.match(r.stderr, e)
    assert.doesNotMatch(r.stderr, /\n\s+at .*\.js:\d+/, 'no stack trace for an expected failure')
    return r.stderr
  }

  it('wal_level = replica', async () => {
    const cfg = await h.writeConfig(dir, [servers[0], replica])
    await refuse(cfg, /\[node2\] wal_level: wal_level is replica/, /ALTER SYSTEM SET wal_level = 'logical'/)
  })

  it('a table missing on one node', async () => {
    await h.sql(servers[0], 'CREATE TABLE IF NOT EXISTS public.extra (id int primary key)')
    await h.withCleanup(
      async () => {
        const cfg = await h.writeConfig(dir, servers, {tables: ['public.users', 'public.extra']})
        await refuse(cfg, /\[node2\] table: table public\.extra does not exist/, /\[node3\] table: table public\.extra does not exist/)
      },
      () => h.sql(servers[0], 'DROP TABLE public.extra'),
    )
  })

  it('a table whose columns differ', async () => {
    await h.sql(servers[2], 'ALTER TABLE public.users ADD COLUMN extra int')
    await h.withCleanup(
      async () => {
        const cfg = await h.writeConfig(dir, servers)
        await refuse(cfg, /\[node3\] columns: table public\.users differs from node1: node3 has extra integer/)
      },
      () => h.sql(servers[2], 'ALTER TABLE public.users DROP COLUMN extra'),
    )
  })

  it('a table without primary key or replica identity', async () => {
    await Promise.all(servers.map(s => h.sql(s, 'CREATE TABLE IF NOT EXISTS public.nopk (a int, b text)')))
    await h.withCleanup(
      async () => {
        const cfg = await h.writeConfig(dir, servers, {tables: ['public.users', 'public.nopk']})
        await refuse(cfg, /replica identity: table public\.nopk has no primary key/, /REPLICA IDENTITY FULL/)
      },
      async () => {
        await Promise.all(servers.map(s => h.sql(s, 'DROP TABLE public.nopk')))
      },
    )
  })

  it('an unreachable node, reported with the reason, together with every other problem', async () => {
    const port = await freePort()
    const cfg = path.join(dir, 'unreachable.yaml')
    await writeFile(
      cfg,
      [
        'cluster: shop',
        'tables: [public.users]',
        'nodes:',
        `  - {name: node1, dsn: "${servers[0].dsn()}"}`,
        `  - {name: node2, dsn: "postgresql://postgres:hunter2@127.0.0.1:${port}/postgres"}`,
        `  - {name: node3, dsn: "${replica.dsn()}"}`,
      ].join('\n') + '\n',
    )
    const err = await refuse(cfg, /\[node2\] reachable: .*connection refused/, /\[node3\] wal_level/)
    assert.doesNotMatch(err, /hunter2/)
  })

  it('data on more than one node (without --no-copy)', async () => {
    await h.sql(servers[0], "INSERT INTO public.departments VALUES (1, 'a')")
    await h.sql(servers[1], "INSERT INTO public.departments VALUES (2, 'b')")
    const cfg = await h.writeConfig(dir, servers)
    await refuse(cfg, /data: replicated tables hold data on more than one node \(node1: public\.departments; node2: public\.departments\)/, /--no-copy/)
  })

  it('an unknown --seed', async () => {
    const cfg = await h.writeConfig(dir, servers)
    const r = await h.runCli(['init', '-c', cfg, '--yes', '--seed', 'nope'])
    assert.equal(r.code, 10, 'an unknown node is exit 10 in every command (flags.test.ts)')
    assert.match(r.stderr, /unknown node "nope" \(--seed\)/)
  })

  it('a node with data that is not the --seed', async () => {
    await h.sql(servers[1], "INSERT INTO public.departments VALUES (2, 'b')")
    const cfg = await h.writeConfig(dir, servers)
    const r = await h.runCli(['init', '-c', cfg, '--yes', '--seed', 'node1'])
    assert.equal(r.code, 11)
    assert.match(r.stderr, /node2: public\.departments/)
  })
})

describe('init: output plugin availability', function () {
  after(() => stopAllStarted())

  it('PostgreSQL 14 without the plugin installed is refused with the install command', async () => {
    const servers = await h.startServers([14, 14])
    await h.createSchema(servers)
    const dir = await h.tempDir()
    const cfg = await h.writeConfig(dir, servers)
    const r = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(r.code, 11, r.stderr)
    assert.match(r.stderr, /\[node1\] plugin: the output plugin "mmlite" cannot be used/)
    assert.match(r.stderr, /make -C extension install PG_CONFIG=/)
    await assertNothingCreated(servers)
  })

  it('output_plugin_libraries without mmlite: exact fix printed, --fix-settings applies it', async () => {
    const servers = await Promise.all([1, 2].map(i => LocalServer.start({major: 15, name: `opl${i}`})))
    const has = await h.sql(servers[0], "SELECT setting FROM pg_settings WHERE name = 'output_plugin_libraries'")
    assert.equal(has.length, 1, 'this PostgreSQL 15 has no output_plugin_libraries (15.19+ expected: apt-get install postgresql-15)')
    await h.createSchema(servers)
    await h.sql(servers[0], "INSERT INTO public.departments VALUES (1, 'a')")
    const dir = await h.tempDir()
    const cfg = await h.writeConfig(dir, servers)
    const r = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(r.code, 11, r.stderr)
    assert.match(r.stderr, /output_plugin_libraries \(pgoutput, test_decoding\) does not list mmlite/)
    assert.match(r.stderr, /ALTER SYSTEM SET output_plugin_libraries = 'pgoutput', 'test_decoding', 'mmlite'; SELECT pg_reload_conf\(\);/)
    await assertNothingCreated(servers)

    const fixed = await h.runCli(['init', '-c', cfg, '--yes', '--fix-settings'])
    assert.equal(fixed.code, 0, fixed.stderr + fixed.stdout)
    assert.match(fixed.stdout, /fixed on node1: ALTER SYSTEM SET output_plugin_libraries/)
    for (const s of servers) {
      const v = await h.sql<{setting: string}>(s, "SELECT setting FROM pg_settings WHERE name = 'output_plugin_libraries'")
      assert.equal(v[0].setting, 'pgoutput, test_decoding, mmlite')
    }
    await h.sql(servers[1], "INSERT INTO public.departments VALUES (2, 'b')")
    await h.waitConverged(servers, 'public.departments', 2)
  })
})
