/**
 * Real authentication (README "Security model and privileges"): servers that accept only
 * scram-sha-256 over TCP (no trust, no peer), a NON-superuser admin role per node holding
 * exactly the privileges the README lists for init/add-node/remove-node (PG 16+: LOGIN
 * REPLICATION, member of pg_create_subscription, owner of the replicated tables, CREATE on the
 * database, SELECT on pg_replication_origin_status + EXECUTE on pg_show_replication_origin_status();
 * on a node joining by add-node --strategy copy also EXECUTE on pg_replication_origin_advance and
 * SET on session_replication_role), and a dedicated replication role (LOGIN REPLICATION + SELECT
 * on the tables) that the peers use through `peer_dsn` / `--peer-dsn` (with its password: 16+
 * requires it for a non-superuser subscription owner). init (and its refusal of a peer_dsn
 * without password), writes on every node checked on every node, status, add-node --strategy
 * copy of a third node (and its refusal while grants are missing), remove-node.
 *
 * Self-contained: the servers start with the usual trust setup, the roles are created through
 * it, then pg_hba.conf is rewritten to scram-sha-256 only and reloaded; from then on every
 * connection of this file (the CLI, the subscriptions, the test's own checks) authenticates.
 */
import assert from 'node:assert/strict'
import {writeFile} from 'node:fs/promises'
import path from 'node:path'
import pg from 'pg'
import {LocalServer, type PgMajor} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'

const SUPER_PW = 'sup3r-Secret'
const ADMIN_PW = 'adm1n-Secret'
const REPL_PW = 'r3pl-Secret'
const TABLES = ['public.departments', 'public.users']

/** Connection as a role with its password (TCP: scram-sha-256 is the only method allowed). */
function conn(s: LocalServer, user = 'postgres', password = SUPER_PW): pg.ClientConfig {
  return {host: '127.0.0.1', port: s.port, database: 'postgres', user, password}
}

async function q<T extends pg.QueryResultRow = Record<string, unknown>>(s: LocalServer, text: string, params: unknown[] = [], as = conn(s)): Promise<T[]> {
  const c = new pg.Client(as)
  await c.connect()
  try {
    return (await c.query<T>(text, params)).rows
  } finally {
    await c.end()
  }
}

async function digest(s: LocalServer, table: string): Promise<{count: number; md5: string}> {
  return (await q<{count: number; md5: string}>(s, `SELECT count(*)::int AS count, md5(coalesce(string_agg(t::text, '|' ORDER BY id), '')) AS md5 FROM ${table} t`))[0]
}

async function converged(servers: LocalServer[], table: string, count: number): Promise<void> {
  let last: Array<{count: number; md5: string}> = []
  try {
    await h.waitFor(async () => {
      last = await Promise.all(servers.map(s => digest(s, table)))
      return last.every(d => d.count === count && d.md5 === last[0].md5)
    }, `${table} to converge on ${count} rows`, 90_000)
  } catch (e) {
    throw new Error(`${(e as Error).message}: ${JSON.stringify(last)}`)
  }
}

/**
 * Roles and grants exactly as README lists them, then scram-sha-256 only. The superuser keeps a
 * password only so the test itself can check the data; mmlite never uses it.
 */
const NEW_NODE_GRANTS = [
  // the view pg_replication_origin_status calls this function; both are superuser-only by default
  'GRANT EXECUTE ON FUNCTION pg_catalog.pg_show_replication_origin_status() TO mmlite_admin;',
  // add-node --strategy copy, on the new node only
  'GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_advance(text, pg_lsn) TO mmlite_admin;',
  'GRANT SET ON PARAMETER session_replication_role TO mmlite_admin;',
]

async function secure(s: LocalServer, opts: {newNode: boolean; partial?: boolean}): Promise<void> {
  await h.sql(s, h.SCHEMA)
  // the superuser's password through the server helper, so its password file follows
  await s.setPassword(SUPER_PW)
  await h.sql(
    s,
    `SET password_encryption = 'scram-sha-256';
     CREATE ROLE mmlite_admin LOGIN REPLICATION PASSWORD '${ADMIN_PW}';
     GRANT pg_create_subscription TO mmlite_admin;
     GRANT CREATE ON DATABASE postgres TO mmlite_admin;
     ALTER TABLE public.departments OWNER TO mmlite_admin;
     ALTER TABLE public.users OWNER TO mmlite_admin;
     CREATE ROLE mmlite_repl LOGIN REPLICATION PASSWORD '${REPL_PW}';
     GRANT SELECT ON public.departments, public.users TO mmlite_repl;
     GRANT SELECT ON pg_catalog.pg_replication_origin_status TO mmlite_admin;
     ${opts.partial ? '' : NEW_NODE_GRANTS.slice(0, 1).join('\n')}
     ${opts.newNode && !opts.partial ? NEW_NODE_GRANTS.slice(1).join('\n') : ''}`,
  )
  await writeFile(
    path.join(s.dataDir, 'pg_hba.conf'),
    ['# scram-sha-256 only (auth.test.ts)', 'host all all 127.0.0.1/32 scram-sha-256', 'host replication all 127.0.0.1/32 scram-sha-256', ''].join('\n'),
  )
  const before = (await h.sql<{t: Date}>(s, 'SELECT pg_conf_load_time() AS t'))[0].t.getTime()
  await h.sql(s, 'SELECT pg_reload_conf()')
  // the reload is effective when a fresh session sees a newer load time; a trust login must fail
  await h.waitFor(async () => (await q<{t: Date}>(s, 'SELECT pg_conf_load_time() AS t'))[0].t.getTime() > before, `reload of ${s.name}`)
  // a login with a wrong password fails: no trust left
  await assert.rejects(q(s, 'SELECT 1', [], conn(s, 'postgres', 'not-the-password')), /password authentication failed|no pg_hba.conf entry|password/)
  const who = await q<{rolsuper: boolean; rolcreaterole: boolean}>(s, "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = 'mmlite_admin'", [], conn(s, 'mmlite_admin', ADMIN_PW))
  assert.deepEqual(who, [{rolsuper: false, rolcreaterole: false}])
}

const adminDsn = (s: LocalServer) => `host=127.0.0.1 port=${s.port} dbname=postgres user=mmlite_admin`
const peerDsn = (s: LocalServer) => `host=127.0.0.1 port=${s.port} dbname=postgres user=mmlite_repl password=${REPL_PW}`
/** mmlite.yaml for the first servers: admin dsn (no password: PGPASSWORD) and the given peer_dsn per node. */
async function writeAuthConfig(file: string, servers: LocalServer[], peerDsns: string[]): Promise<string> {
  const lines = ['cluster: shop', 'tables:', ...TABLES.map(t => `  - ${t}`), 'nodes:']
  servers.forEach((s, i) => lines.push(`  - name: node${i + 1}`, `    dsn: ${adminDsn(s)}`, `    peer_dsn: ${peerDsns[i]}`))
  await writeFile(file, lines.join('\n') + '\n')
  return file
}

/** The CLI's own connections read the admin password from the environment, never from a file or a flag. */
const env = {PGPASSWORD: ADMIN_PW}

for (const major of [17] as PgMajor[]) {
  describe(`auth: scram-sha-256 only, non-superuser admin and replication roles (PostgreSQL ${major})`, function () {
    let servers: LocalServer[] = []
    let extra: LocalServer | undefined
    let cfg: string

    before(async () => {
      servers = await Promise.all(
        [1, 2].map(i => LocalServer.start({major, name: `auth${i}`, settings: {wal_retrieve_retry_interval: '200ms', log_connections: 'on'}})),
      )
      await Promise.all(servers.map(s => secure(s, {newNode: false})))
      await q(servers[0], "INSERT INTO public.departments SELECT g, 'dept ' || g FROM generate_series(1, 10) g", [], conn(servers[0], 'mmlite_admin', ADMIN_PW))
      await q(servers[0], "INSERT INTO public.users SELECT g, g % 10 + 1, 'seed ' || g, 'node1' FROM generate_series(1, 200) g", [], conn(servers[0], 'mmlite_admin', ADMIN_PW))
      const dir = await h.tempDir('mmlite-auth-')
      cfg = await writeAuthConfig(path.join(dir, 'mmlite.yaml'), servers, servers.map(peerDsn))
    })
    after(async () => {
      await Promise.all([...servers, ...(extra ? [extra] : [])].map(s => s.destroy()))
    })

    it('init refuses a peer_dsn without password for a non-superuser subscription owner, changing nothing', async () => {
      // PostgreSQL 16+ requires a non-superuser subscription owner's conninfo to contain a
      // password (a ~/.pgpass of the server OS user is not accepted): preflight must say so
      // before anything is created, not fail at CREATE SUBSCRIPTION halfway through
      const file = await writeAuthConfig(path.join(path.dirname(cfg), 'nopass.yaml'), servers, [
        peerDsn(servers[0]),
        `host=127.0.0.1 port=${servers[1].port} dbname=postgres user=mmlite_repl`,
      ])
      const before = await Promise.all(servers.map(s => meshObjects(s)))
      const r = await h.runCli(['init', '-c', file, '--yes'], {env})
      assert.equal(r.code, 11, r.stderr + r.stdout)
      assert.match(r.stderr, /\[node1\] privileges:.*peer_dsn of node2 has no password/)
      assert.doesNotMatch(r.stderr, /peer_dsn of node1/)
      assert.deepEqual(await Promise.all(servers.map(s => meshObjects(s))), before)
    })

    it('init builds the mesh as mmlite_admin; the subscriptions connect as mmlite_repl', async () => {
      const r = await h.runCli(['init', '-c', cfg, '--yes', '--json'], {env})
      assert.equal(r.code, 0, r.stderr + r.stdout)
      for (const p of [ADMIN_PW, REPL_PW, SUPER_PW]) assert.ok(!(r.stdout + r.stderr).includes(p), 'a password was printed')
      for (const s of servers) {
        const subs = await q<{owner: string; conninfo: string}>(s, "SELECT subowner::regrole::text AS owner, subconninfo AS conninfo FROM pg_subscription WHERE subname LIKE 'shop%'")
        assert.equal(subs.length, 1)
        assert.equal(subs[0].owner, 'mmlite_admin')
        assert.match(subs[0].conninfo, /user='?mmlite_repl'?/)
      }
      await converged(servers, 'public.departments', 10)
      await converged(servers, 'public.users', 200)
      // the walsenders of the mesh run as the replication role, authenticated with scram
      for (const s of servers) {
        await h.waitFor(async () => {
          const rows = await q<{usename: string}>(s, "SELECT usename FROM pg_stat_replication WHERE application_name LIKE 'shop%'")
          return rows.length === 1 && rows[0].usename === 'mmlite_repl'
        }, `walsender of mmlite_repl on ${s.name}`)
        const log = await s.readLog()
        assert.match(log, /connection authenticated: identity="mmlite_repl" method=scram-sha-256|connection authorized: user=mmlite_repl/)
      }
    })

    it('writes on every node arrive on every node', async () => {
      await Promise.all(
        servers.map((s, i) =>
          q(s, `INSERT INTO public.users SELECT g, 1, 'w' || g, 'node${i + 1}' FROM generate_series($1::int, $1::int + 49) g`, [10_000 * (i + 1)], conn(s, 'mmlite_admin', ADMIN_PW)),
        ),
      )
      await q(servers[1], "UPDATE public.users SET name = name || '*' WHERE id <= 20", [], conn(servers[1], 'mmlite_admin', ADMIN_PW))
      await q(servers[0], 'DELETE FROM public.users WHERE id BETWEEN 21 AND 30', [], conn(servers[0], 'mmlite_admin', ADMIN_PW))
      await converged(servers, 'public.users', 200 + 100 - 10)
      for (const s of servers) {
        const r = await q<{stars: number; mine: number}>(s, "SELECT count(*) FILTER (WHERE name LIKE '%*')::int AS stars, count(*) FILTER (WHERE id >= 10000)::int AS mine FROM public.users")
        assert.deepEqual(r[0], {stars: 20, mine: 100}, `contents on ${s.name}`)
        assert.equal(await applyErrors(s), 0)
      }
    })

    it('status as mmlite_admin reports every link healthy', async () => {
      const r = await h.runCli(['status', '-c', cfg, '--json'], {env})
      const out = h.parseJson<{health: string; links: Array<{from: string; to: string; health: string}>}>(r)
      assert.equal(out.links.length, 2)
      assert.equal(out.health, 'ok', r.stdout)
      assert.equal(r.code, 0, r.stderr)
    })

    it('add-node --strategy copy of a third node with --peer-dsn, then writes everywhere', async () => {
      extra = await LocalServer.start({major, name: 'auth3', settings: {wal_retrieve_retry_interval: '200ms', log_connections: 'on'}})
      // first without the grants the new node needs beyond init's: refused by preflight, nothing changed
      await secure(extra, {newNode: true, partial: true})
      const before = await Promise.all([...servers, extra].map(s => meshObjects(s)))
      const refused = await h.runCli(['add-node', 'node3', '--dsn', adminDsn(extra), '--peer-dsn', peerDsn(extra), '--strategy', 'copy', '-c', cfg, '--yes'], {env})
      assert.equal(refused.code, 11, refused.stderr + refused.stdout)
      assert.match(refused.stderr, /\[node3\] privileges: the connecting role cannot read pg_replication_origin_status[\s\S]*pg_show_replication_origin_status\(\)/)
      assert.match(refused.stderr, /\[node3\] privileges: the connecting role cannot execute pg_replication_origin_advance/)
      assert.match(refused.stderr, /\[node3\] privileges: the connecting role cannot SET session_replication_role/)
      assert.deepEqual(await Promise.all([...servers, extra].map(s => meshObjects(s))), before)
      await q(extra, NEW_NODE_GRANTS.join('\n'))
      const r = await h.runCli(['add-node', 'node3', '--dsn', adminDsn(extra), '--peer-dsn', peerDsn(extra), '--strategy', 'copy', '-c', cfg, '--yes', '--json'], {
        env,
        timeoutMs: 400_000,
      })
      assert.equal(r.code, 0, r.stderr + r.stdout)
      for (const p of [ADMIN_PW, REPL_PW, SUPER_PW]) assert.ok(!(r.stdout + r.stderr).includes(p), 'a password was printed')
      const all = [...servers, extra]
      await converged(all, 'public.departments', 10)
      await converged(all, 'public.users', 290)
      for (const s of servers) {
        const sub = await q<{conninfo: string}>(s, "SELECT subconninfo AS conninfo FROM pg_subscription WHERE subname = 'shop_node3_' || $1", [s === servers[0] ? 'node1' : 'node2'])
        assert.equal(sub.length, 1)
        assert.match(sub[0].conninfo, /user='?mmlite_repl'?/)
      }
      await Promise.all(all.map((s, i) => q(s, 'INSERT INTO public.departments VALUES ($1, $2)', [100 + i, `after add ${i}`], conn(s, 'mmlite_admin', ADMIN_PW))))
      await converged(all, 'public.departments', 13)
      const st = await h.runCli(['status', '-c', cfg, '--json'], {env})
      assert.equal(h.parseJson<{health: string}>(st).health, 'ok', st.stdout)
    })

    it('remove-node of node2 as mmlite_admin; the remaining two still replicate', async () => {
      assert.ok(extra, 'node3 was added')
      const r = await h.runCli(['remove-node', 'node2', '-c', cfg, '--yes', '--json'], {env})
      assert.equal(r.code, 0, r.stderr + r.stdout)
      const rest = [servers[0], extra]
      for (const s of [...rest, servers[1]]) {
        const objs = await q<{n: number}>(s, "SELECT (SELECT count(*) FROM pg_subscription WHERE subname LIKE 'shop%node2%') + (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'shop%node2%')::int AS n")
        assert.equal(Number(objs[0].n), 0, `node2 objects left on ${s.name}`)
      }
      await q(extra, "INSERT INTO public.departments VALUES (200, 'after remove')", [], conn(extra, 'mmlite_admin', ADMIN_PW))
      await converged(rest, 'public.departments', 14)
      const d = await Promise.all(rest.map(s => digest(s, 'public.users')))
      assert.deepEqual(d[1], d[0])
    })
  })
}

async function applyErrors(s: LocalServer): Promise<number> {
  const r = await q<{n: number}>(s, 'SELECT coalesce(sum(apply_error_count + sync_error_count), 0)::int AS n FROM pg_stat_subscription_stats')
  return r[0].n
}

async function meshObjects(s: LocalServer): Promise<{pubs: string[]; slots: string[]; subs: string[]; origins: string[]}> {
  const [r] = await q<{pubs: string[]; slots: string[]; subs: string[]; origins: string[]}>(
    s,
    `SELECT ARRAY(SELECT pubname::text FROM pg_publication ORDER BY 1) AS pubs,
            ARRAY(SELECT slot_name::text FROM pg_replication_slots ORDER BY 1) AS slots,
            ARRAY(SELECT subname::text || ':' || subenabled::text FROM pg_subscription ORDER BY 1) AS subs,
            ARRAY(SELECT roname FROM pg_replication_origin ORDER BY 1) AS origins`,
  )
  return r
}
