/**
 * `mmlite init` on real servers: meshes on PG 15 (our output plugin) and 16/17/18 (native
 * origin = none), exact initial copy, concurrent writes on every node (the hard load), no echo, re-run is a
 * no-op, dry-run and confirmation change nothing, passwords never printed.
 */
import assert from 'node:assert/strict'
import {existsSync} from 'node:fs'
import path from 'node:path'
import {stopAllStarted, type LocalServer, type PgMajor} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'
import {WriteLoad, verifyLoad} from '../helpers/load.js'

interface InitJson {
  cluster: string
  changed: boolean
  seed: string | null
  links: Array<{from: string; to: string; mechanism: string; plugin: string}>
  steps: Array<{id: string; status: string}>
}

async function subOids(servers: LocalServer[]): Promise<string[]> {
  const all = await Promise.all(servers.map(s => h.sql<{oid: string}>(s, "SELECT oid::text FROM pg_subscription WHERE subname LIKE 'shop%' ORDER BY subname")))
  return all.flat().map(r => r.oid)
}

async function assertNoEcho(servers: LocalServer[]): Promise<void> {
  for (const s of servers) {
    assert.equal(await h.applyErrors(s), 0, `apply errors on ${s.name}`)
    const log = await s.readLog()
    assert.doesNotMatch(log, /duplicate key|conflict|ERROR:/, `errors in the log of ${s.name}`)
  }
}

for (const major of [15, 18, 16, 17] as PgMajor[]) {
  const mechanism = major >= 16 ? 'native' : 'plugin'
  describe(`init: 3-node mesh on PostgreSQL ${major} (${mechanism})`, function () {
    let servers: LocalServer[]
    let cfg: string
    let dir: string

    before(async () => {
      servers = await h.startServers([major, major, major])
      await h.createSchema(servers)
      await h.sql(servers[0], "INSERT INTO public.departments SELECT g, 'dept ' || g FROM generate_series(1, 10) g")
      await h.sql(servers[0], "INSERT INTO public.users SELECT g, g % 10 + 1, 'seed ' || g, 'node1' FROM generate_series(1, 50) g")
      dir = await h.tempDir()
      cfg = await h.writeConfig(dir, servers)
    })
    after(async () => {
      await Promise.all(servers?.map(s => s.destroy()) ?? [])
    })

    it('builds the mesh, copying the seed exactly once', async () => {
      const r = await h.runCli(['init', '-c', cfg, '--yes', '--json'])
      assert.equal(r.code, 0, r.stderr + r.stdout)
      const out = h.parseJson<InitJson>(r)
      assert.equal(out.cluster, 'shop')
      assert.equal(out.changed, true)
      assert.equal(out.seed, 'node1')
      assert.equal(out.links.length, 6)
      for (const l of out.links) assert.equal(l.mechanism, mechanism)
      // slots use the plugin the edge needs
      for (const s of servers) {
        const slots = await h.sql<{plugin: string}>(s, "SELECT plugin FROM pg_replication_slots WHERE slot_name LIKE 'shop%'")
        assert.equal(slots.length, 2)
        for (const sl of slots) assert.equal(sl.plugin, major >= 16 ? 'pgoutput' : 'mmlite')
      }
      await h.waitConverged(servers, 'public.departments', 10)
      await h.waitConverged(servers, 'public.users', 50)
      // the journal is closed
      const j = JSON.parse(await import('node:fs/promises').then(f => f.readFile(path.join(dir, '.mmlite/journal.json'), 'utf8')))
      assert.deepEqual(j.operations, {})
    })

    it('replicates concurrent writes on every node exactly once, without echo', async () => {
      // the hard load: several writers per node, INSERT/UPDATE/DELETE in transactions over both
      // tables; every acknowledged write once with its last value, deletes absent, full contents
      // identical on every node
      const load = new WriteLoad().start(servers.map((s, i) => ({label: `node${i + 1}`, server: s, index: i + 1})), {hard: true})
      await h.withCleanup(() => h.waitFor(async () => load.report.commits >= 150, 'writes on every node'), () => load.stop())
      await verifyLoad(servers, await load.stop(), 50)
      await assertNoEcho(servers)
    })

    it('re-running init changes nothing and says so', async () => {
      const before = await subOids(servers)
      const r = await h.runCli(['init', '-c', cfg, '--yes'])
      assert.equal(r.code, 0, r.stderr)
      assert.match(r.stdout, /already initialized: nothing to do/)
      assert.deepEqual(await subOids(servers), before)
      const j = await h.runCli(['init', '-c', cfg, '--yes', '--json'])
      const out = h.parseJson<InitJson>(j)
      assert.equal(out.changed, false)
      assert.notEqual(out.steps.length, 0, 'the re-run reports its steps')
      assert.ok(out.steps.every(s => s.status === 'already-done'))
    })

    if (major >= 15) {
      it('init --disable-on-error on the finished cluster records it and sets it on every subscription, once', async () => {
        const r = await h.runCli(['init', '-c', cfg, '--yes', '--disable-on-error', '--json'])
        assert.equal(r.code, 0, r.stderr)
        const out = h.parseJson<InitJson>(r)
        assert.equal(out.steps.find(s => s.id === 'disable-on-error')?.status, 'done')
        for (const s of servers) {
          const subs = await h.sql<{on: boolean}>(s, "SELECT subdisableonerr AS on FROM pg_subscription WHERE subname LIKE 'shop%'")
          assert.deepEqual(subs.map(x => x.on), [true, true])
        }
        const {readFile} = await import('node:fs/promises')
        assert.match(await readFile(cfg, 'utf8'), /^disable_on_error: true$/m)
        const again = h.parseJson<InitJson>(await h.runCli(['init', '-c', cfg, '--yes', '--json']))
        assert.equal(again.changed, false)
        // the mesh still replicates
        await h.sql(servers[2], "INSERT INTO public.departments VALUES (77, 'after disable_on_error')")
        const n = (await h.tableDigest(servers[2], 'public.departments')).count
        await h.waitConverged(servers, 'public.departments', n)
        assert.equal((await h.sql(servers[0], 'SELECT 1 FROM public.departments WHERE id = 77')).length, 1)
      })
    }
  })
}

describe('init: dry-run, confirmation and secrets', function () {
  let servers: LocalServer[]
  let dir: string
  before(async () => {
    servers = await h.startServers([16, 16])
    await h.createSchema(servers)
    dir = await h.tempDir()
  })
  after(() => stopAllStarted())

  it('--dry-run prints the SQL per node and changes nothing; passwords are redacted', async () => {
    await Promise.all(servers.map(s => s.setPassword("s3cr'et"))) // the servers check it (scram-sha-256)
    const file = path.join(dir, 'mmlite.yaml')
    const {writeFile} = await import('node:fs/promises')
    await writeFile(
      file,
      [
        'cluster: shop',
        'tables: [public.departments, public.users]',
        'nodes:',
        ...servers.flatMap((s, i) => [`  - name: node${i + 1}`, `    dsn: postgresql://postgres:s3cr%27et@127.0.0.1:${s.port}/postgres`]),
      ].join('\n') + '\n',
    )
    for (const args of [['--dry-run'], ['--dry-run', '--json']]) {
      const r = await h.runCli(['init', '-c', file, ...args])
      assert.equal(r.code, 0, r.stderr)
      assert.doesNotMatch(r.stdout + r.stderr, /s3cr/)
      assert.match(r.stdout, /CREATE PUBLICATION \\?"shop\\?" FOR TABLE \\?"public\\?".\\?"departments\\?", \\?"public\\?".\\?"users\\?"/)
      assert.match(r.stdout, /CREATE SUBSCRIPTION/)
      assert.match(r.stdout, /origin = none/)
      assert.match(r.stdout, /password=(?:'')?\*{8}/)
    }
    for (const s of servers) assert.deepEqual(await h.meshObjects(s), {pubs: [], slots: [], subs: []})
    assert.equal(existsSync(path.join(dir, '.mmlite/journal.json')), false)
  })

  it('without a terminal and without --yes it refuses and changes nothing', async () => {
    const cfg = await h.writeConfig(dir, servers)
    const r = await h.runCli(['init', '-c', cfg])
    assert.equal(r.code, 14)
    assert.match(r.stderr, /--yes/)
    for (const s of servers) assert.deepEqual(await h.meshObjects(s), {pubs: [], slots: [], subs: []})
  })

  it('uses the real password in the subscription while never printing it', async () => {
    await Promise.all(servers.map(s => s.setPassword("s3 cr\\et'x"))) // the servers check it (scram-sha-256)
    const file = path.join(dir, 'mmlite.yaml')
    const {writeFile} = await import('node:fs/promises')
    await writeFile(
      file,
      [
        'cluster: shop',
        'tables: [public.departments, public.users]',
        'nodes:',
        ...servers.flatMap((s, i) => [`  - name: node${i + 1}`, `    dsn: host=127.0.0.1 port=${s.port} dbname=postgres user=postgres password='s3 cr\\\\et\\'x'`]),
      ].join('\n') + '\n',
    )
    const r = await h.runCli(['init', '-c', file, '--yes'])
    assert.equal(r.code, 0, r.stderr + r.stdout)
    assert.doesNotMatch(r.stdout + r.stderr, /s3 cr/)
    const sub = await h.sql<{c: string}>(servers[1], "SELECT subconninfo AS c FROM pg_subscription WHERE subname = 'shop_node1_node2'")
    assert.equal(sub[0].c, "host='127.0.0.1' port='" + servers[0].port + "' dbname='postgres' user='postgres' password='s3 cr\\\\et\\'x'")
    await h.sql(servers[1], 'INSERT INTO public.departments VALUES (99, $1)', ['via quoted conninfo'])
    await h.waitConverged(servers, 'public.departments', 1)
  })
})
