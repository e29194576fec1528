/**
 * add-node --strategy copy is bit-exact and runs no table-owner code as the admin.
 *
 * Cluster node1 (PostgreSQL 18, the source) + node2 (16). The servers, databases and roles
 * disagree on every setting that shapes text COPY: extra_float_digits = 0 (rounds float8),
 * DateStyle SQL with DMY vs MDY, IntervalStyle sql_standard vs iso_8601, lc_monetary,
 * bytea_output, TimeZone, and the new node's role reads LATIN1 (client_encoding).
 *  - node3 (18, same major as the source: binary COPY) and node4 (16: another major, text COPY
 *    with pinned settings) join; a canonical digest of every column (computed under pinned
 *    settings, floats as their IEEE bytes) is identical on the source and the new node.
 *  - node3 first has a trigger ENABLE ALWAYS owned by a non-superuser that would run as the
 *    admin during the load: add-node refuses, names it, changes nothing; once it is disabled
 *    the join succeeds.
 *  - progress lines (percent, ETA, rows/s, MB/s) appear in plain (non-TTY) output.
 */
import assert from 'node:assert/strict'
import {stopAllStarted, LocalServer} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'

const ROWS = 3000

const DDL = `
CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE public.vals (
  id int PRIMARY KEY,
  f8 float8, f4 float4, ts timestamp, tstz timestamptz, d date, iv interval, t text, n numeric,
  b bytea, j jsonb, arr float8[], tarr text[], m money, mood public.mood, moods public.mood[],
  r int4range, g point, gen int GENERATED ALWAYS AS (id * 2) STORED
);
CREATE INDEX vals_t ON public.vals (t);
CREATE INDEX vals_d ON public.vals USING brin (d) WITH (pages_per_range = 16);
CREATE TABLE public.departments (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE public.users (id bigint PRIMARY KEY, dept int REFERENCES public.departments (id), name text, updated_by text);
`

// values chosen so that any text-format drift changes them
const FILL = `
INSERT INTO public.vals (id, f8, f4, ts, tstz, d, iv, t, n, b, j, arr, tarr, m, mood, moods, r, g)
SELECT g,
  0.1::float8 * g + 1e-17 * g + pi() / 7,
  (g / 3.0)::float4,
  '2020-01-02 03:04:05.123456'::timestamp + g * interval '1 day 1.000001 sec',
  '2021-03-04 05:06:07.654321+05:30'::timestamptz + g * interval '37 min',
  '2001-02-03'::date + g,
  make_interval(years => g % 3, months => -(g % 5), days => g % 31 - 15, secs => g * 1.000001 - 400),
  'é ß ø ü € 日本 ' || g || chr(10) || E'\\\\tab\\t',
  (g::numeric / 7)::numeric(30, 20) * 1e10,
  decode(md5(g::text), 'hex') || '\\x00ff'::bytea,
  jsonb_build_object('f', 0.1 * g, 'é', 'ü', 'n', g, 'a', jsonb_build_array(1.5e300, -0.0)),
  ARRAY[pi() * g, 1.0 / 3, -1e-310],
  ARRAY['a"b', 'c,d', NULL, 'ü'],
  (g * 1000.25)::numeric::money,
  (ARRAY['sad', 'ok', 'happy']::public.mood[])[g % 3 + 1],
  ARRAY['happy', 'sad']::public.mood[],
  int4range(g, g + 10),
  point(g / 3.0, -g / 7.0)
FROM generate_series(1, ${ROWS}) g;
INSERT INTO public.departments SELECT g, 'dépt ' || g FROM generate_series(1, 10) g;
INSERT INTO public.users SELECT g, g % 10 + 1, 'ü' || g, 'node1' FROM generate_series(1, ${ROWS}) g;
`

/** Every column in a form that does not depend on any setting. */
const DIGEST = `SELECT count(*)::int AS count, md5(string_agg(concat_ws('|', id, float8send(f8), float4send(f4), ts, tstz, d, iv, t, n, b, j, float8send(arr[1]), float8send(arr[2]), float8send(arr[3]), tarr, m::numeric, mood, moods, r, g[0], g[1], gen), E'\\n' ORDER BY id)) AS md5 FROM public.vals`

async function digest(s: LocalServer): Promise<{count: number; md5: string}> {
  return h.withClient(s, async c => {
    for (const set of ["DateStyle = 'ISO, MDY'", "IntervalStyle = 'postgres'", 'extra_float_digits = 3', "client_encoding = 'UTF8'", "TimeZone = 'UTC'", "bytea_output = 'hex'", "lc_monetary = 'C'"])
      await c.query(`SET ${set}`)
    return (await c.query<{count: number; md5: string}>(DIGEST)).rows[0]
  })
}

describe('add-node copy is bit-exact whatever the settings, and runs no owner code as the admin (PostgreSQL 18 and 16)', function () {
  this.timeout(600_000)
  let node1: LocalServer, node2: LocalServer, node3: LocalServer, node4: LocalServer
  let cfg: string
  const tables = ['public.vals', 'public.departments', 'public.users']

  before(async () => {
    const skew = {wal_retrieve_retry_interval: '200ms'}
    ;[node1, node2, node3, node4] = await Promise.all([
      LocalServer.start({major: 18, name: 'node1', settings: {...skew, extra_float_digits: '0', DateStyle: "'SQL, DMY'", TimeZone: "'Asia/Kolkata'"}}),
      LocalServer.start({major: 16, name: 'node2', settings: skew}),
      LocalServer.start({major: 18, name: 'node3', settings: {...skew, DateStyle: "'SQL, MDY'", TimeZone: "'America/New_York'"}}),
      LocalServer.start({major: 16, name: 'node4', settings: {...skew, extra_float_digits: '-15', DateStyle: "'SQL, MDY'"}}),
    ])
    const all = [node1, node2, node3, node4]
    await Promise.all(all.map(s => h.sql(s, DDL)))
    // database- and role-level settings on top of the server's
    await h.sql(node1, "ALTER DATABASE postgres SET IntervalStyle = 'sql_standard'")
    await h.sql(node1, "ALTER ROLE postgres SET bytea_output = 'escape'")
    await h.sql(node3, "ALTER DATABASE postgres SET IntervalStyle = 'iso_8601'")
    await h.sql(node3, "ALTER ROLE postgres SET client_encoding = 'LATIN1'")
    await h.sql(node4, "ALTER DATABASE postgres SET IntervalStyle = 'postgres_verbose'")
    await h.sql(node4, "ALTER ROLE postgres SET client_encoding = 'LATIN1'")
    await h.sql(node1, FILL)
    // a table owner who is not a superuser, with a trigger that fires even for replicated rows
    await h.sql(
      node3,
      `CREATE ROLE app NOLOGIN;
       ALTER TABLE public.users OWNER TO app;
       CREATE TABLE public.who_ran (usr text, super bool);
       GRANT INSERT ON public.who_ran TO PUBLIC;
       CREATE FUNCTION public.record_user() RETURNS trigger LANGUAGE plpgsql AS
         $$BEGIN INSERT INTO public.who_ran SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user; RETURN NEW; END$$;
       ALTER FUNCTION public.record_user() OWNER TO app;
       CREATE TRIGGER users_who BEFORE INSERT ON public.users FOR EACH ROW EXECUTE FUNCTION public.record_user();
       ALTER TABLE public.users ENABLE ALWAYS TRIGGER users_who;`,
    )
    const dir = await h.tempDir()
    cfg = await h.writeConfig(dir, [node1, node2], {tables})
    const r = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(r.code, 0, r.stderr + r.stdout)
    await h.waitConverged([node1, node2], 'public.users', ROWS)
  })
  after(() => stopAllStarted())

  it('refuses to load a table whose ENABLE ALWAYS trigger, owned by a non-superuser, would run as the admin; changes nothing', async () => {
    const r = await h.runCli(['add-node', 'node3', '--dsn', node3.dsn(), '-c', cfg, '--yes'])
    assert.notEqual(r.code, 0, r.stdout + r.stderr)
    assert.match(r.stderr + r.stdout, /users_who/)
    assert.match(r.stderr + r.stdout, /DISABLE TRIGGER/)
    assert.deepEqual(await h.sql(node3, 'SELECT usr FROM public.who_ran'), [], 'the trigger ran during the copy')
    assert.deepEqual(await h.sql(node3, 'SELECT count(*)::int AS n FROM public.users'), [{n: 0}])
    // nothing was made on the existing nodes for node3
    for (const s of [node1, node2]) assert.deepEqual((await h.meshObjects(s)).slots.filter(x => x.includes('node3')), [])
  })

  it('joins node3 (same major: binary COPY) bit-exactly under different settings, with progress lines', async () => {
    await h.sql(node3, 'ALTER TABLE public.users DISABLE TRIGGER users_who')
    const r = await h.runCli(['add-node', 'node3', '--dsn', node3.dsn(), '-c', cfg, '--yes', '--jobs', '2'])
    assert.equal(r.code, 0, r.stderr + r.stdout)
    // plain mode: a progress line with percent, ETA and rates, and the summary with rows/s, MB/s
    assert.match(r.stdout, /… copied .* of ~.* \(\d+%\).*ETA/, r.stdout)
    assert.match(r.stdout, /copied \d+ rows .* rows\/s, .*\/s/, r.stdout)
    assert.match(r.stdout, /binary/, r.stdout)
    const [a, b] = await Promise.all([digest(node1), digest(node3)])
    assert.equal(a.count, ROWS)
    assert.deepEqual(b, a)
    await h.waitConverged([node1, node2, node3], 'public.users', ROWS)
    // indexes are all there with their definitions, and valid
    const idx = (s: LocalServer) => h.sql(s, "SELECT indexrelid::regclass::text AS i, pg_get_indexdef(indexrelid) AS def, indisvalid FROM pg_index WHERE indrelid = 'public.vals'::regclass ORDER BY 1")
    assert.deepEqual(await idx(node3), await idx(node1))
    // the replicated stream after the copy is exact too
    await h.sql(node1, "UPDATE public.vals SET f8 = f8 / 3, iv = iv * 1.1, t = t || 'ø' WHERE id % 10 = 0")
    await h.waitFor(async () => (await digest(node3)).md5 === (await digest(node1)).md5, 'node3 to apply the update')
  })

  it('joins node4 (another major: text COPY with pinned settings) bit-exactly', async () => {
    const r = await h.runCli(['add-node', 'node4', '--dsn', node4.dsn(), '-c', cfg, '--yes', '--source', 'node1'])
    assert.equal(r.code, 0, r.stderr + r.stdout)
    assert.match(r.stdout, /text/, r.stdout)
    const [a, b] = await Promise.all([digest(node1), digest(node4)])
    assert.deepEqual(b, a)
    await h.waitConverged([node1, node2, node3, node4], 'public.users', ROWS)
  })
})
