/**
 * Real authentication (README "Security model and privileges"): servers that accept only
 * scram-sha-256 over TCP (no trust, no peer), an admin role per node (the `dsn`) and a dedicated
 * replication role (`mmlite_repl`: LOGIN REPLICATION + SELECT on the tables) that the peers use
 * through `peer_dsn` / `--peer-dsn` (with its password in it: 16+ requires it for a
 * non-superuser subscription owner). One mesh per mechanism, shared within its describe:
 *  - native (origin = none): node1 on PostgreSQL 16, node2 on 18, node3 (added) on 17; the admin
 *    is a NON-superuser holding exactly what the README lists (LOGIN REPLICATION, member of
 *    pg_create_subscription, owner of the replicated tables, CREATE on the database; for status,
 *    add-node and remove-node also SELECT on pg_replication_origin_status + EXECUTE on
 *    pg_show_replication_origin_status(); on the node joining by add-node --strategy copy also
 *    EXECUTE on pg_replication_origin_advance and SET on session_replication_role);
 *  - plugin (our `mmlite` output plugin, PostgreSQL 15 from /usr/lib/postgresql/15): the admin is
 *    a superuser (PostgreSQL < 16 requires one to create subscriptions); the peers still connect
 *    as the replication role.
 * Exactly enough: with any ONE listed privilege taken away, init (or add-node, remove-node)
 * refuses in preflight naming it, and nothing changes; with all of them, init, status, add-node
 * --strategy copy and remove-node work, and the hard write load (several writers per node,
 * INSERT/UPDATE/DELETE over both tables) arrives on every node exactly (every acknowledged
 * write once with its last value, identical full contents).
 *
 * Self-contained: the roles are created through the servers' own superuser, then pg_hba.conf is
 * rewritten to scram-sha-256 only and reloaded; from then on every connection of this file (the
 * CLI, the subscriptions, the test's own checks and loads) authenticates with a password.
 */
import assert from 'node:assert/strict'
import {writeFile} from 'node:fs/promises'
import path from 'node:path'
import pg from 'pg'
import {LocalServer, type PgMajor} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'
import {WriteLoad, mergeReports, verifyLoad, type LoadReport} from '../helpers/load.js'

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

/** One mesh per mechanism; the admin of a mesh with a node older than 16 must be a superuser. */
interface Family {
  title: string
  majors: [PgMajor, PgMajor]
  /** the node add-node joins */
  extra: PgMajor
  superAdmin: boolean
}

const FAMILIES: Family[] = [
  {title: 'native: node1 PostgreSQL 16, node2 18, node3 (joining) 17; non-superuser admin', majors: [16, 18], extra: 17, superAdmin: false},
  {title: 'plugin: PostgreSQL 15 with the mmlite output plugin; superuser admin', majors: [15, 15], extra: 15, superAdmin: true},
]

/** A privilege the README lists: how it is granted, how one test takes it away, and the refusal that names it. */
interface Privilege {
  what: string
  grant: string
  revoke: string
  refusal: RegExp
}

const NOT_ENOUGH = /privileges: the connecting role is not a superuser and lacks REPLICATION or membership in pg_create_subscription/

/** what init needs of a non-superuser admin (16+) */
const INIT_PRIVILEGES: Privilege[] = [
  // the cluster lock (a temporary replication slot) is the first thing to need it
  {what: 'REPLICATION of the admin', grant: 'ALTER ROLE mmlite_admin REPLICATION', revoke: 'ALTER ROLE mmlite_admin NOREPLICATION', refusal: /node node2: cannot take the lock of cluster "shop": permission denied[\s\S]*the role needs REPLICATION/},
  {what: 'membership in pg_create_subscription', grant: 'GRANT pg_create_subscription TO mmlite_admin', revoke: 'REVOKE pg_create_subscription FROM mmlite_admin', refusal: NOT_ENOUGH},
  {what: 'ownership of public.departments', grant: 'ALTER TABLE public.departments OWNER TO mmlite_admin', revoke: 'ALTER TABLE public.departments OWNER TO postgres', refusal: /privileges: the connecting role does not own public\.departments /},
  {what: 'ownership of public.users', grant: 'ALTER TABLE public.users OWNER TO mmlite_admin', revoke: 'ALTER TABLE public.users OWNER TO postgres', refusal: /privileges: the connecting role does not own public\.users /},
  {what: 'CREATE on the database', grant: 'GRANT CREATE ON DATABASE postgres TO mmlite_admin', revoke: 'REVOKE CREATE ON DATABASE postgres FROM mmlite_admin', refusal: /privileges: the connecting role lacks CREATE on the database/},
]

/** what init needs of a superuser admin (a node older than 16) */
const SUPER_PRIVILEGES: Privilege[] = [
  // keeping REPLICATION (the lock needs it), so the refusal is preflight's
  {what: 'SUPERUSER of the admin', grant: 'ALTER ROLE mmlite_admin SUPERUSER', revoke: 'ALTER ROLE mmlite_admin NOSUPERUSER REPLICATION', refusal: /privileges: the connecting role is not a superuser[\s\S]*PostgreSQL < 16 requires it/},
]

/** what the peers' subscriptions need of the replication role (the peer_dsn), on its node */
const REPL_PRIVILEGES: Privilege[] = [
  {what: 'REPLICATION of the replication role', grant: 'ALTER ROLE mmlite_repl REPLICATION', revoke: 'ALTER ROLE mmlite_repl NOREPLICATION', refusal: /peer role: role "mmlite_repl" of node2's peer_dsn [^\n]*lacks REPLICATION/},
  {what: 'SELECT on public.users for the replication role', grant: 'GRANT SELECT ON public.users TO mmlite_repl', revoke: 'REVOKE SELECT ON public.users FROM mmlite_repl', refusal: /peer role: role "mmlite_repl" of node2's peer_dsn [^\n]*cannot SELECT public\.users/},
  {what: 'SELECT on public.departments for the replication role', grant: 'GRANT SELECT ON public.departments TO mmlite_repl', revoke: 'REVOKE SELECT ON public.departments FROM mmlite_repl', refusal: /peer role: role "mmlite_repl" of node2's peer_dsn [^\n]*cannot SELECT public\.departments/},
]

/** status, add-node and remove-node read the origin progress (both superuser-only by default) */
const ORIGIN_STATUS = (node: string): Privilege[] => [
  {
    what: `SELECT on pg_replication_origin_status (${node})`,
    grant: 'GRANT SELECT ON pg_catalog.pg_replication_origin_status TO mmlite_admin',
    revoke: 'REVOKE SELECT ON pg_catalog.pg_replication_origin_status FROM mmlite_admin',
    refusal: new RegExp(`\\[${node}\\] privileges: the connecting role (mmlite_admin )?cannot read pg_replication_origin_status`),
  },
  {
    what: `EXECUTE on pg_show_replication_origin_status() (${node})`,
    grant: 'GRANT EXECUTE ON FUNCTION pg_catalog.pg_show_replication_origin_status() TO mmlite_admin',
    revoke: 'REVOKE EXECUTE ON FUNCTION pg_catalog.pg_show_replication_origin_status() FROM mmlite_admin',
    refusal: new RegExp(`\\[${node}\\] privileges: the connecting role (mmlite_admin )?cannot read pg_replication_origin_status`),
  },
]

/** add-node --strategy copy, on the new node only */
const NEW_NODE_PRIVILEGES: Privilege[] = [
  {
    what: 'EXECUTE on pg_replication_origin_advance (node3)',
    grant: 'GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_advance(text, pg_lsn) TO mmlite_admin',
    revoke: 'REVOKE EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_advance(text, pg_lsn) FROM mmlite_admin',
    refusal: /\[node3\] privileges: the connecting role cannot execute pg_replication_origin_advance/,
  },
  {
    what: 'SET on session_replication_role (node3)',
    grant: 'GRANT SET ON PARAMETER session_replication_role TO mmlite_admin',
    revoke: 'REVOKE SET ON PARAMETER session_replication_role FROM mmlite_admin',
    refusal: /\[node3\] privileges: the connecting role cannot SET session_replication_role/,
  },
]

/**
 * The roles with exactly the privileges README lists for init (`superAdmin`: a superuser admin),
 * then scram-sha-256 only. The servers' own superuser keeps its password (through the server
 * helper, so its password file follows) for the test's checks and loads; mmlite never uses it.
 */
async function secure(s: LocalServer, superAdmin: boolean): Promise<void> {
  await h.sql(s, h.SCHEMA)
  await s.setPassword(SUPER_PW)
  await h.sql(
    s,
    `SET password_encryption = 'scram-sha-256';
     CREATE ROLE mmlite_admin LOGIN PASSWORD '${ADMIN_PW}';
     ${(superAdmin ? SUPER_PRIVILEGES : INIT_PRIVILEGES).map(p => p.grant + ';').join('\n')}
     CREATE ROLE mmlite_repl LOGIN PASSWORD '${REPL_PW}';
     ${REPL_PRIVILEGES.map(p => p.grant + ';').join('\n')}`,
  )
  await writeFile(
    path.join(s.dataDir, 'pg_hba.conf'),
    ['# scram-sha-256 only (auth.test.ts)', 'host all all 127.0.0.1/32 scram-sha-256', 'host replication all 127.0.0.1/32 scram-sha-256', ''].join('\n'),
  )
  const before = (await h.sql<{t: Date}>(s, 'SELECT pg_conf_load_time() AS t'))[0].t.getTime()
  await h.sql(s, 'SELECT pg_reload_conf()')
  await h.waitFor(async () => (await q<{t: Date}>(s, 'SELECT pg_conf_load_time() AS t'))[0].t.getTime() > before, `reload of ${s.name}`)
  // a login with a wrong password fails: no trust left
  await assert.rejects(q(s, 'SELECT 1', [], conn(s, 'postgres', 'not-the-password')), /password authentication failed|no pg_hba.conf entry|password/)
  const who = await q<{rolsuper: boolean; rolcreaterole: boolean}>(s, "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = 'mmlite_admin'", [], conn(s, 'mmlite_admin', ADMIN_PW))
  assert.deepEqual(who, [{rolsuper: superAdmin, rolcreaterole: false}])
}

async function grant(s: LocalServer, ps: Privilege[]): Promise<void> {
  await q(s, ps.map(p => p.grant + ';').join('\n'))
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

function noPassword(r: h.CliResult): void {
  for (const p of [ADMIN_PW, REPL_PW, SUPER_PW]) assert.ok(!(r.stdout + r.stderr).includes(p), 'a password was printed')
}

/**
 * With each privilege in turn taken away on `server` (the others kept), `run` is refused in
 * preflight (exit 11) with the refusal naming it, and nothing changes on any node.
 */
async function eachOneMissing(server: LocalServer, privileges: Privilege[], all: LocalServer[], run: () => Promise<h.CliResult>): Promise<void> {
  assert.notEqual(privileges.length, 0)
  for (const p of privileges) {
    const before = await Promise.all(all.map(s => meshObjects(s)))
    await q(server, p.revoke)
    await h.withCleanup(
      async () => {
        const r = await run()
        assert.equal(r.code, 11, `without ${p.what}: ${r.stderr}${r.stdout}`)
        assert.match(r.stderr, p.refusal, `without ${p.what}: ${r.stderr}`)
        noPassword(r)
      },
      () => q(server, p.grant),
    )
    assert.deepEqual(await Promise.all(all.map(s => meshObjects(s))), before, `without ${p.what}: something changed`)
  }
}

for (const fam of FAMILIES) {
  describe(`auth: scram-sha-256 only, replication role via peer_dsn (${fam.title})`, function () {
    this.timeout(600_000)
    let servers: LocalServer[] = []
    let extra: LocalServer | undefined
    let cfg: string
    const reports: LoadReport[] = []

    /** the hard load on `nodes` (as the servers' superuser) until it committed a little, then stopped */
    async function load(nodes: Array<[string, LocalServer]>, base: number): Promise<LoadReport> {
      const l = new WriteLoad().start(
        nodes.map(([label, s], i) => ({label: `${label}-${base}`, server: s, index: base + i})),
        {hard: true},
      )
      await h.withCleanup(() => h.waitFor(async () => l.report.commits >= 60 * nodes.length, 'the load to get going'), () => l.stop())
      const r = await l.stop()
      reports.push(r)
      return r
    }

    before(async () => {
      servers = await Promise.all(
        fam.majors.map((major, i) => LocalServer.start({major, name: `auth${major}n${i + 1}`, settings: {wal_retrieve_retry_interval: '200ms', log_connections: 'on'}})),
      )
      await Promise.all(servers.filter(s => s.major === 15).map(h.allowPlugin))
      await Promise.all(servers.map(s => secure(s, fam.superAdmin)))
      await q(servers[0], "INSERT INTO public.departments SELECT g, 'dept ' || g FROM generate_series(1, 10) g", [], conn(servers[0], 'mmlite_admin', ADMIN_PW))
      await q(servers[0], "INSERT INTO public.users SELECT g, g % 10 + 1, 'seed ' || g, 'node1' FROM generate_series(1, 200) g", [], conn(servers[0], 'mmlite_admin', ADMIN_PW))
      const dir = await h.tempDir('mmlite-auth-')
      cfg = await writeAuthConfig(path.join(dir, 'mmlite.yaml'), servers, servers.map(peerDsn))
    })
    after(async () => {
      await Promise.all([...servers, ...(extra ? [extra] : [])].map(s => s.destroy()))
    })

    if (!fam.superAdmin) {
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
    }

    it('init: with any one privilege README lists taken away (admin or replication role), preflight refuses naming it and nothing changes', async () => {
      const admin = fam.superAdmin ? SUPER_PRIVILEGES : INIT_PRIVILEGES
      await eachOneMissing(servers[1], [...admin, ...REPL_PRIVILEGES], servers, () => h.runCli(['init', '-c', cfg, '--yes'], {env}))
    })

    it('init builds the mesh as mmlite_admin with exactly those privileges; the subscriptions connect as mmlite_repl', async () => {
      const r = await h.runCli(['init', '-c', cfg, '--yes', '--json'], {env})
      assert.equal(r.code, 0, r.stderr + r.stdout)
      noPassword(r)
      const out = h.parseJson<{links: Array<{mechanism: string}>}>(r)
      assert.equal(out.links.length, 2)
      for (const l of out.links) assert.equal(l.mechanism, fam.superAdmin ? 'plugin' : 'native')
      for (const s of servers) {
        const subs = await q<{owner: string; conninfo: string}>(s, "SELECT subowner::regrole::text AS owner, subconninfo AS conninfo FROM pg_subscription WHERE subname LIKE 'shop%'")
        assert.equal(subs.length, 1)
        assert.equal(subs[0].owner, 'mmlite_admin')
        assert.match(subs[0].conninfo, /user='?mmlite_repl'?/)
        const slots = await q<{plugin: string}>(s, "SELECT plugin FROM pg_replication_slots WHERE slot_name LIKE 'shop%'")
        assert.deepEqual(slots.map(x => x.plugin), [fam.superAdmin ? 'mmlite' : 'pgoutput'])
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

    it('writes on every node (the hard load) arrive on every node exactly', async () => {
      await load([['node1', servers[0]], ['node2', servers[1]]], 1)
      await verifyLoad(servers, mergeReports(...reports), 200)
      for (const s of servers) assert.equal(await applyErrors(s), 0)
    })

    it(`status as mmlite_admin${fam.superAdmin ? '' : ' (with the two origin-status grants)'} reports every link healthy`, async () => {
      if (!fam.superAdmin) for (const s of servers) await grant(s, ORIGIN_STATUS('any'))
      const r = await h.runCli(['status', '-c', cfg, '--json'], {env})
      const out = h.parseJson<{health: string; links: Array<{from: string; to: string; health: string}>}>(r)
      assert.equal(out.links.length, 2)
      assert.equal(out.health, 'ok', r.stdout)
      assert.equal(r.code, 0, r.stderr)
    })

    it('add-node --strategy copy of node3 with --peer-dsn: refused with any one privilege missing, then joins; writes everywhere', async () => {
      extra = await LocalServer.start({major: fam.extra, name: `auth${fam.extra}n3`, settings: {wal_retrieve_retry_interval: '200ms', log_connections: 'on'}})
      if (fam.extra === 15) await h.allowPlugin(extra)
      await secure(extra, fam.superAdmin)
      const all = [...servers, extra]
      const add = (json = false) =>
        h.runCli(['add-node', 'node3', '--dsn', adminDsn(extra!), '--peer-dsn', peerDsn(extra!), '--strategy', 'copy', '-c', cfg, '--yes', ...(json ? ['--json'] : [])], {env, timeoutMs: 400_000})
      if (!fam.superAdmin) {
        await grant(extra, [...ORIGIN_STATUS('node3'), ...NEW_NODE_PRIVILEGES])
        // each grant the new node needs beyond init's, then the source's origin-status grants
        await eachOneMissing(extra, [...ORIGIN_STATUS('node3'), ...NEW_NODE_PRIVILEGES], all, () => add())
        await eachOneMissing(servers[0], ORIGIN_STATUS('node1'), all, () => add())
      } else {
        await eachOneMissing(extra, SUPER_PRIVILEGES.map(p => ({...p, refusal: /\[node3\] privileges: the connecting role is not a superuser/})), all, () => add())
      }
      const r = await add(true)
      assert.equal(r.code, 0, r.stderr + r.stdout)
      noPassword(r)
      for (const s of servers) {
        const sub = await q<{conninfo: string}>(s, "SELECT subconninfo AS conninfo FROM pg_subscription WHERE subname = 'shop_node3_' || $1", [s === servers[0] ? 'node1' : 'node2'])
        assert.equal(sub.length, 1)
        assert.match(sub[0].conninfo, /user='?mmlite_repl'?/)
      }
      await load([['node1', servers[0]], ['node2', servers[1]], ['node3', extra]], 11)
      await verifyLoad(all, mergeReports(...reports), 200)
      for (const s of all) assert.equal(await applyErrors(s), 0)
      const st = await h.runCli(['status', '-c', cfg, '--json'], {env})
      assert.equal(h.parseJson<{health: string}>(st).health, 'ok', st.stdout)
    })

    it('remove-node of node2 as mmlite_admin; the remaining two still replicate exactly', async () => {
      assert.ok(extra, 'node3 was added')
      // the two origin-status grants: without either (on a node it contacts), refused naming it
      if (!fam.superAdmin) await eachOneMissing(servers[0], ORIGIN_STATUS('node1'), [...servers, extra], () => h.runCli(['remove-node', 'node2', '-c', cfg, '--yes'], {env}))
      const r = await h.runCli(['remove-node', 'node2', '-c', cfg, '--yes', '--json'], {env})
      assert.equal(r.code, 0, r.stderr + r.stdout)
      noPassword(r)
      const rest = [servers[0], extra]
      for (const s of [...rest, servers[1]]) {
        const objs = await q<{n: number}>(s, "SELECT (SELECT count(*) FROM pg_subscription WHERE subname LIKE 'shop%node2%') + (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'shop%node2%')::int AS n")
        assert.equal(Number(objs[0].n), 0, `node2 objects left on ${s.name}`)
      }
      await load([['node1', servers[0]], ['node3', extra]], 21)
      await verifyLoad(rest, mergeReports(...reports), 200)
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
