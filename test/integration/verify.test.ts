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
import {statSync, readFileSync, readdirSync} from 'node:fs'
import path from 'node:path'
import pg from 'pg'
import {LocalServer, stopAllStarted} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'
import {WriteLoad} from '../helpers/load.js'
import type {VerifyResult} from '../../src/steps/verify/types.js'

const TABLES = ['public.departments', 'public.users', 'public.kinds', 'public.comp', 'public.tk', 'public.uu']

const DDL = (collation: string) => `
CREATE TABLE public.departments (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE public.users (id bigint PRIMARY KEY, dept int, name text, updated_by text);
CREATE TABLE public.kinds (id bigint PRIMARY KEY, f float8, r real, n numeric, j jsonb, b bytea, a int[], ts timestamptz, d date, iv interval, t text);
CREATE TABLE public.comp (a int, b text, v text, PRIMARY KEY (a, b));
CREATE TABLE public.tk (k text COLLATE ${collation} PRIMARY KEY, v text);
CREATE TABLE public.uu (id uuid PRIMARY KEY, v text);
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
`

type Json = VerifyResult

async function asOrigin(s: LocalServer, stmts: string[]): Promise<void> {
  await h.withClient(s, async c => {
    await c.query("SELECT pg_replication_origin_create('test_inject') WHERE NOT EXISTS (SELECT FROM pg_replication_origin WHERE roname = 'test_inject')")
    await c.query("SELECT pg_replication_origin_session_setup('test_inject')")
    for (const q of stmts) await c.query(q)
    await c.query('SELECT pg_replication_origin_session_reset()')
  })
}

/** Every node has applied everything every other node has committed up to now. */
async function caughtUp(servers: LocalServer[]): Promise<void> {
  const lsns = await Promise.all(servers.map(s => h.sql<{l: string}>(s, 'SELECT pg_current_wal_lsn()::text AS l').then(r => r[0].l)))
  await h.waitFor(async () => {
    for (let i = 0; i < servers.length; i++) {
      const r = await h.sql<{ok: boolean}>(servers[i], "SELECT bool_and(confirmed_flush_lsn >= $1::pg_lsn) AS ok FROM pg_replication_slots WHERE slot_name LIKE 'shop%'", [lsns[i]])
      if (!r[0].ok) return false
    }
    return true
  }, 'every link to catch up')
}

/** xmin + content of every row of every table: a node "not changed" keeps all of them. */
async function snapshot(s: LocalServer): Promise<string> {
  const parts: string[] = []
  for (const t of TABLES) {
    const r = await h.sql<{x: string}>(s, `SELECT md5(coalesce(string_agg(t.xmin::text || ':' || t::text, '|' ORDER BY t::text), '')) AS x FROM ${t} t`)
    parts.push(r[0].x)
  }
  return parts.join(',')
}

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
    await asOrigin(n2, ["UPDATE public.users SET name = 'diverged' WHERE id = 5", "INSERT INTO public.users VALUES (999999, 1, 'extra', 'n2')", "UPDATE public.kinds SET j = j || '{\"z\": 1}' WHERE id = 4", "UPDATE public.tk SET v = 'other' WHERE k = 'B7'"])
    await asOrigin(n3, ['DELETE FROM public.users WHERE id = 7', "UPDATE public.kinds SET f = '-0' WHERE id = 14", "UPDATE public.comp SET v = 'changed' WHERE a = 2 AND b = 'b15'", "UPDATE public.uu SET v = 'x' WHERE id = md5('u9')::uuid"])
    await asOrigin(n1, ["UPDATE public.kinds SET b = '\\x00'::bytea WHERE id = 6", "UPDATE public.kinds SET f = f + 1e-12 WHERE id = 8"])
    await caughtUp(servers)
    const {r, j} = await verify('--block-rows', '100')
    assert.equal(r.code, 2, r.stdout + r.stderr)
    assert.equal(j.status, 'divergent')
    const found = Object.fromEntries(j.tables.map(t => [t.table, t.divergent.map(d => Object.values(d.key).join('/')).sort()]))
    assert.deepEqual(found, {
      'public.departments': [],
      'public.users': ['5', '7', '999999'],
      'public.kinds': ['14', '4', '6', '8'],
      'public.comp': ['2/b15'],
      'public.tk': ['B7'],
      'public.uu': [String((await h.sql<{u: string}>(n1, "SELECT md5('u9')::uuid::text AS u"))[0].u)],
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
    assert.equal(k14.versions.node1?.f, '0')
    // human output: a line per key and node, a summary per table
    const human = await h.runCli(['verify', '-c', cfg])
    assert.equal(human.code, 2)
    assert.match(human.stdout, /public\.users divergent key \(id=7\)\n {2}node1: \(.*name="seed 7".*\)\n {2}node2: .*\n {2}node3: absent/)
    assert.match(human.stdout, /public\.users: DIVERGENT \(3 divergent, 0 unsettled/)
    assert.match(human.stdout, /public\.departments: CONSISTENT/)
  })
})
