/**
 * `mmlite verify` and `mmlite repair` on a real 3-node PostgreSQL 16 mesh built by `mmlite init`.
 *
 * The nodes print values differently on purpose (database-level DateStyle, extra_float_digits,
 * TimeZone, IntervalStyle, bytea_output) and the text-keyed table has a different collation
 * on every node: none of it may show as a difference. Divergences are injected under a
 * replication origin (so they do not replicate), then must be found exactly, and nothing else;
 * repair must fix them without echo and without touching the source node.
 */
import assert from 'node:assert/strict'
import {statSync, readFileSync} from 'node:fs'
import path from 'node:path'
import {LocalServer, stopAllStarted} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'
import {WriteLoad} from '../helpers/load.js'
import {asOrigin, caughtUp, snapshot as snapshotOf} from '../helpers/verify.js'
import type {VerifyResult} from '../../src/steps/verify/types.js'

// child before parent: repair must not depend on foreign-key order
const TABLES = ['public.departments', 'public.users', 'public.kinds', 'public.comp', 'public.tk', 'public.uu', 'public.child', 'public.parent']

const DDL = (collation: string) => `
CREATE TABLE public.departments (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE public.users (id bigint PRIMARY KEY, dept int, name text, updated_by text);
CREATE TABLE public.kinds (id bigint PRIMARY KEY, f float8, r real, n numeric, j jsonb, b bytea, a int[], ts timestamptz, d date, iv interval, t text);
CREATE TABLE public.comp (a int, b text, v text, PRIMARY KEY (a, b));
CREATE TABLE public.tk (k text COLLATE ${collation} PRIMARY KEY, v text);
CREATE TABLE public.uu (id uuid PRIMARY KEY, v text);
CREATE TABLE public.parent (id int PRIMARY KEY, v text);
CREATE TABLE public.child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES public.parent (id));
`

const SEED = `
INSERT INTO public.departments SELECT g, 'dept ' || g FROM generate_series(1, 10) g;
INSERT INTO public.users SELECT g, g % 10 + 1, 'seed ' || g, 'node1' FROM generate_series(1, 3000) g;
INSERT INTO public.kinds SELECT g,
  CASE g % 7 WHEN 0 THEN 'NaN'::float8 WHEN 1 THEN '-0'::float8 WHEN 2 THEN 1e-300 WHEN 3 THEN NULL ELSE g / 3.0 END,
  (g / 7.0)::real, g / 11.0, jsonb_build_object('g', g, 'x', ARRAY[g, g + 1], 'f', g / 3.0),
  CASE WHEN g % 5 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END, ARRAY[g, NULL, -g],
  timestamptz '2024-03-10 01:30:00+00' + g * interval '37 minutes', date '2000-01-01' + g, g * interval '1 day 3 hours 5.5 seconds',
  CASE WHEN g % 3 = 0 THEN NULL ELSE 'tëxt ' || g END
  FROM generate_series(1, 1500) g;
INSERT INTO public.comp SELECT g % 13, 'b' || g, 'v' || g FROM generate_series(1, 1500) g;
INSERT INTO public.tk SELECT k, 'v ' || k FROM (SELECT unnest(ARRAY['a', 'B', 'b', 'A', 'é', 'E', 'z', 'Z', '_x', ' y', 'ä']) || g AS k FROM generate_series(1, 150) g) s;
INSERT INTO public.uu SELECT md5('u' || g)::uuid, 'v' || g FROM generate_series(1, 800) g;
INSERT INTO public.parent SELECT g, 'p' || g FROM generate_series(1, 20) g;
INSERT INTO public.child SELECT g, g FROM generate_series(1, 20) g;
`

type Json = VerifyResult

const snapshot = (s: LocalServer) => snapshotOf(s, TABLES)

describe('verify and repair: 3-node PostgreSQL 16 mesh', function () {
  this.timeout(600_000)
  let servers: LocalServer[]
  let dir: string
  let cfg: string

  const verify = async (...args: string[]) => {
    const r = await h.runCli(['verify', '-c', cfg, '--json', ...args])
    return {r, j: h.parseJson<Json>(r)}
  }

  before(async () => {
    servers = await Promise.all(
      [1, 2, 3].map(i => LocalServer.start({major: 16, name: `v${i}`, settings: {wal_retrieve_retry_interval: '200ms', track_commit_timestamp: 'on'}})),
    )
    const collations = ['"C"', '"und-x-icu"', '"POSIX"']
    await Promise.all(servers.map((s, i) => h.sql(s, DDL(collations[i]))))
    // every node prints values its own way: verify must not care
    await h.sql(servers[1], "ALTER DATABASE postgres SET extra_float_digits = 0; ALTER DATABASE postgres SET DateStyle = 'SQL, DMY'; ALTER DATABASE postgres SET TimeZone = 'Asia/Kolkata'")
    await h.sql(servers[2], "ALTER DATABASE postgres SET IntervalStyle = 'sql_standard'; ALTER DATABASE postgres SET bytea_output = 'escape'; ALTER DATABASE postgres SET extra_float_digits = -3")
    await h.sql(servers[0], SEED)
    // a user trigger on node2 that would refuse the repair's insert: repair must not fire it
    await h.sql(servers[1], "CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'user trigger fired'; END$$; CREATE TRIGGER refuse BEFORE INSERT ON public.parent FOR EACH ROW EXECUTE FUNCTION public.refuse()")
    dir = await h.tempDir('mmlite-verify-')
    cfg = await h.writeConfig(dir, servers, {tables: TABLES})
    const init = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(init.code, 0, init.stderr + init.stdout)
    await h.waitConverged(servers, 'public.users', 3000)
    await caughtUp(servers)
  })
  after(async () => {
    await stopAllStarted()
  })

  it('reports consistent under continuous writes on every node, several runs in a row', async () => {
    const load = new WriteLoad().start(servers.map((s, i) => ({label: `w${i + 1}`, server: s, index: i + 1})), {pauseMs: 5})
    try {
      for (let run = 0; run < 3; run++) {
        const {r, j} = await verify()
        assert.equal(r.code, 0, `run ${run}: ${r.stdout}\n${r.stderr}`)
        assert.equal(j.status, 'consistent')
        assert.equal(j.schemaVersion, 1)
        for (const t of j.tables) assert.equal(t.divergentCount + t.unsettledCount, 0, `${t.table} run ${run}`)
        for (const t of j.tables) assert.equal(t.status, 'consistent', `${t.table}: ${t.error}`)
      }
    } finally {
      await load.stop()
    }
    await caughtUp(servers)
  })

  it('finds exactly every injected divergence, and nothing else', async () => {
    const [n1, n2, n3] = servers
    // 500 extra rows past the last range bound: a range far bigger than --block-rows, split by key hash
    await asOrigin(n2, ["INSERT INTO public.users SELECT g, 1, 'bulk', 'n2' FROM generate_series(5000001, 5000500) g"])
    await asOrigin(n2, ["UPDATE public.users SET name = 'diverged' WHERE id = 5", "INSERT INTO public.users VALUES (999999, 1, 'extra', 'n2')", "UPDATE public.kinds SET j = j || '{\"z\": 1}' WHERE id = 4", "UPDATE public.tk SET v = 'other' WHERE k = 'B7'"])
    await asOrigin(n3, ['DELETE FROM public.users WHERE id = 7', "UPDATE public.kinds SET f = '-0' WHERE id = 14", "UPDATE public.comp SET v = 'changed' WHERE a = 2 AND b = 'b15'", "UPDATE public.uu SET v = 'x' WHERE id = md5('u9')::uuid"])
    await asOrigin(n1, ["UPDATE public.kinds SET b = '\\x00'::bytea WHERE id = 6", "UPDATE public.kinds SET f = f + 1e-12 WHERE id = 8"])
    await asOrigin(n2, ['DELETE FROM public.child WHERE id = 3', 'DELETE FROM public.parent WHERE id = 3'])
    await caughtUp(servers)
    const {r, j} = await verify('--block-rows', '100', '--limit', '100000')
    assert.equal(r.code, 2, r.stdout + r.stderr)
    assert.equal(j.status, 'divergent')
    const found = Object.fromEntries(j.tables.map(t => [t.table, t.divergent.map(d => Object.values(d.key).join('/')).sort()]))
    assert.deepEqual(found, {
      'public.departments': [],
      'public.users': ['5', '7', '999999', ...Array.from({length: 500}, (_, i) => String(5000001 + i))].sort(),
      'public.kinds': ['14', '4', '6', '8'],
      'public.comp': ['2/b15'],
      'public.tk': ['B7'],
      'public.uu': [String((await h.sql<{u: string}>(n1, "SELECT md5('u9')::uuid::text AS u"))[0].u)],
      'public.child': ['3'],
      'public.parent': ['3'],
    })
    for (const t of j.tables) assert.equal(t.unsettledCount, 0)
    for (const t of j.tables) assert.equal(t.error, undefined, t.table)
    const users = j.tables.find(t => t.table === 'public.users')!
    const d7 = users.divergent.find(d => d.key.id === '7')!
    assert.equal(d7.versions.node3, null)
    assert.equal(d7.versions.node1?.name, 'seed 7')
    const dx = users.divergent.find(d => d.key.id === '999999')!
    assert.deepEqual([dx.versions.node1, dx.versions.node3], [null, null])
    assert.equal(dx.versions.node2?.name, 'extra')
    const k14 = j.tables.find(t => t.table === 'public.kinds')!.divergent.find(d => d.key.id === '14')!
    assert.equal(k14.versions.node3?.f, '-0')
    assert.equal(k14.versions.node1?.f, 'NaN')
    // long lists: the first ones printed, all of them in a private file
    const cut = await verify()
    assert.equal(cut.j.tables.find(t => t.table === 'public.users')!.divergent.length, 20)
    assert.ok(cut.j.reportFile)
    assert.equal(statSync(cut.j.reportFile!).mode & 0o777, 0o600)
    const full = JSON.parse(readFileSync(cut.j.reportFile!, 'utf8')) as Json
    assert.equal(full.tables.find(t => t.table === 'public.users')!.divergent.length, 503)
    // human output: a line per key and node, a summary per table
    const human = await h.runCli(['verify', '-c', cfg])
    assert.equal(human.code, 2)
    assert.match(human.stdout, /public\.users: \.\.\. 483 more divergent row\(s\) in .*verify-.*\.json/)
    assert.match(human.stdout, /public\.users divergent key \(id=7\)\n {2}node1: \(.*name="seed 7".*\)\n {2}node2: .*\n {2}node3: absent/)
    assert.match(human.stdout, /public\.users: DIVERGENT \(503 divergent, 0 unsettled/)
    assert.match(human.stdout, /public\.departments: CONSISTENT/)
  })

  it('repair --dry-run prints the exact statements per node and changes nothing', async () => {
    const before = await Promise.all(servers.map(snapshot))
    const r = await h.runCli(['repair', '-c', cfg, '--from', 'node1', '--dry-run'])
    assert.equal(r.code, 0, r.stdout + r.stderr)
    assert.match(r.stdout, /-- on node2:/)
    assert.match(r.stdout, /SELECT pg_catalog\.pg_replication_origin_session_setup\('mmlite_repair'::pg_catalog\.text\);/)
    assert.match(r.stdout, /SET session_replication_role = replica;/)
    assert.match(r.stdout, /DELETE FROM "public"\."users" WHERE "id" = '999999'::bigint;/)
    assert.doesNotMatch(r.stdout, /-- on node1:/)
    assert.deepEqual(await Promise.all(servers.map(snapshot)), before)
    assert.equal((await verify()).r.code, 2)
  })

  it('repair --from node1 fixes every divergence; node1 is untouched and nothing echoes', async () => {
    const [n1, , n3] = servers
    const n1Before = await snapshot(n1)
    const row5OnN3 = await h.sql<{x: string}>(n3, 'SELECT xmin::text AS x FROM public.users WHERE id = 5')
    const r = await h.runCli(['repair', '-c', cfg, '--from', 'node1', '--yes', '--json'])
    assert.equal(r.code, 0, r.stdout + r.stderr)
    const j = h.parseJson<{applied: number; skipped: unknown[]; auditFile: string; after: Json; changes: Array<{node: string; table: string; action: string; key: Record<string, string>}>}>(r)
    assert.equal(j.after.status, 'consistent')
    assert.equal(j.skipped.length, 0)
    assert.equal(j.applied, 514)
    assert.ok(j.changes.every(c => c.node !== 'node1'))
    assert.equal(j.changes.filter(c => Number(c.key.id) > 5000000 && c.node === 'node2' && c.action === 'delete').length, 500)
    const acts = j.changes.filter(c => c.table === 'public.users' && Number(c.key.id) < 5000000).map(c => `${c.node}:${c.action}:${c.key.id}`).sort()
    assert.deepEqual(acts, ['node2:delete:999999', 'node2:update:5', 'node3:insert:7'])
    await caughtUp(servers)
    assert.equal(await snapshot(n1), n1Before, 'node1 changed')
    assert.deepEqual(await h.sql<{x: string}>(n3, 'SELECT xmin::text AS x FROM public.users WHERE id = 5'), row5OnN3, "node2's repair of id 5 travelled to node3")
    for (const s of servers) assert.equal(await h.applyErrors(s), 0, `apply errors on ${s.name}`)
    // the child (listed first) and its parent are back on node2, the user trigger did not fire
    assert.deepEqual(await h.sql(servers[1], 'SELECT c.id, p.v FROM public.child c JOIN public.parent p ON p.id = c.parent_id WHERE c.id = 3'), [{id: 3, v: 'p3'}])
    const again = await verify()
    assert.equal(again.r.code, 0, again.r.stdout)
    // audit: private, with the row each change replaced
    assert.equal(statSync(j.auditFile).mode & 0o777, 0o600)
    assert.equal(statSync(path.dirname(j.auditFile)).mode & 0o777, 0o700)
    const lines = readFileSync(j.auditFile, 'utf8').trim().split('\n').map(l => JSON.parse(l))
    const u5 = lines.find(l => l.event === 'change' && l.table === 'public.users' && l.key.id === '5')
    assert.equal(u5.before.name, 'diverged')
    assert.equal(u5.after.name, 'seed 5')
    assert.ok(lines.filter(l => l.event === 'committed').length >= 2)
  })

  it('repair --policy newest keeps the version with the latest commit timestamp', async () => {
    const [, n2, n3] = servers
    await asOrigin(n2, ["UPDATE public.users SET name = 'older' WHERE id = 20"])
    await asOrigin(n3, ["UPDATE public.users SET name = 'newest' WHERE id = 20", "UPDATE public.comp SET v = 'newest too' WHERE a = 3 AND b = 'b16'"])
    const keep = await h.sql<{x: string}>(n3, 'SELECT xmin::text AS x FROM public.users WHERE id = 20')
    const r = await h.runCli(['repair', '-c', cfg, '--policy', 'newest', '--yes', '--json'])
    assert.equal(r.code, 0, r.stdout + r.stderr)
    for (const s of servers) {
      assert.deepEqual(await h.sql(s, 'SELECT name FROM public.users WHERE id = 20'), [{name: 'newest'}])
      assert.deepEqual(await h.sql(s, "SELECT v FROM public.comp WHERE a = 3 AND b = 'b16'"), [{v: 'newest too'}])
    }
    assert.deepEqual(await h.sql<{x: string}>(n3, 'SELECT xmin::text AS x FROM public.users WHERE id = 20'), keep)
  })

  it('a row only missing because a link lags is unsettled (exit 1), never divergent, and the link is named', async () => {
    const [n1, n2] = servers
    await h.sql(n2, 'ALTER SUBSCRIPTION shop_node1_node2 DISABLE')
    try {
      await h.sql(n1, "INSERT INTO public.users VALUES (777777, 1, 'lagging', 'n1')")
      const {r, j} = await verify('--table', 'public.users', '--settle-timeout', '2')
      assert.equal(r.code, 1, r.stdout + r.stderr)
      assert.equal(j.status, 'unsettled')
      const t = j.tables[0]
      assert.deepEqual([t.divergentCount, t.unsettledCount], [0, 1])
      assert.equal(t.unsettled[0].key.id, '777777')
      assert.equal(t.unsettled[0].versions.node1?.name, 'lagging')
      assert.equal(t.unsettled[0].versions.node2, null)
      assert.ok(j.settle.lagging.some(l => l.startsWith('node1→node2')), JSON.stringify(j.settle))
    } finally {
      await h.sql(n2, 'ALTER SUBSCRIPTION shop_node1_node2 ENABLE')
    }
    await caughtUp(servers)
    const {r} = await verify('--table', 'public.users')
    assert.equal(r.code, 0, r.stdout)
  })

  it('bad input: a table not in the configuration, a table without a primary key, a node down: clear errors, nothing changed', async () => {
    const r1 = await h.runCli(['verify', '-c', cfg, '--table', 'public.nope'])
    assert.equal(r1.code, 10)
    assert.match(r1.stderr, /table public\.nope is not replicated by this cluster/)
    const r2 = await h.runCli(['repair', '-c', cfg, '--from', 'node9', '--yes'])
    assert.equal(r2.code, 10)
    assert.match(r2.stderr, /--from node9: no such node/)
    await Promise.all(servers.map(s => h.sql(s, 'CREATE TABLE public.nopk (a int, b text); INSERT INTO public.nopk VALUES (1, NULL)')))
    const dir2 = await h.tempDir('mmlite-verify-nopk-')
    const cfg2 = await h.writeConfig(dir2, servers, {tables: ['public.users', 'public.nopk']})
    const before = await Promise.all(servers.map(snapshot))
    const r3 = await h.runCli(['verify', '-c', cfg2])
    assert.equal(r3.code, 3, r3.stdout + r3.stderr)
    assert.match(r3.stdout, /public\.nopk: COULD NOT COMPARE: table public\.nopk has no primary key on nodes node1, node2, node3: .*ADD PRIMARY KEY/)
    assert.match(r3.stdout, /public\.users: CONSISTENT/)
    const r4 = await h.runCli(['repair', '-c', cfg2, '--from', 'node1', '--yes'])
    assert.equal(r4.code, 3, r4.stdout + r4.stderr)
    assert.match(r4.stderr, /nothing was changed/)
    await servers[2].stop()
    const r5 = await h.runCli(['verify', '-c', cfg, '--json'])
    assert.equal(r5.code, 3, r5.stdout + r5.stderr)
    const j5 = h.parseJson<Json>(r5)
    assert.deepEqual(j5.nodes.map(n => [n.name, n.reachable]), [['node1', true], ['node2', true], ['node3', false]])
    for (const t of j5.tables) assert.deepEqual([t.status, t.nodes], ['consistent', ['node1', 'node2']], t.table)
    const human = await h.runCli(['verify', '-c', cfg])
    assert.match(human.stdout, /node node3 is DOWN, not compared/)
    const r6 = await h.runCli(['repair', '-c', cfg, '--from', 'node1', '--yes'])
    assert.equal(r6.code, 13, r6.stdout + r6.stderr)
    assert.match(r6.stderr, /repair needs every node.*nothing was changed/)
    assert.deepEqual(await Promise.all(servers.slice(0, 2).map(snapshot)), before.slice(0, 2))
  })
})
