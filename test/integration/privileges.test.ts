/**
 * remove-node as a NON-superuser admin without the origin-status grants (README "Security model
 * and privileges": SELECT on pg_replication_origin_status and EXECUTE on
 * pg_show_replication_origin_status(), superuser-only by default): refused in preflight, exit 11,
 * the fix naming the exact GRANT statements for the connecting role, nothing changed (the mesh
 * objects, the journal, the configuration; rows still replicate both ways). With the grants, the
 * same command removes the node: what it committed reached the other node first.
 *
 * One PostgreSQL 17 mesh built by `mmlite init` as mmlite_admin (LOGIN REPLICATION,
 * pg_create_subscription, CREATE on the database, owner of the tables, password in peer_dsn, as
 * test/integration/auth.test.ts sets such a role up), then the two grants revoked.
 */
import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import {writeFile} from 'node:fs/promises'
import path from 'node:path'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'

const GRANTS = [
  'GRANT SELECT ON pg_catalog.pg_replication_origin_status TO mmlite_admin',
  'GRANT EXECUTE ON FUNCTION pg_catalog.pg_show_replication_origin_status() TO mmlite_admin',
]

const ADMIN_PW = 'adm1n-Secret'
/** the CLI's connections as mmlite_admin take its password from the environment */
const env = {PGPASSWORD: ADMIN_PW}

/** mmlite_admin: what README lists for a non-superuser admin on 16+, the origin-status grants included (revoked later). */
async function adminRole(s: LocalServer): Promise<void> {
  await h.sql(
    s,
    `SET password_encryption = 'scram-sha-256';
     CREATE ROLE mmlite_admin LOGIN REPLICATION PASSWORD '${ADMIN_PW}';
     GRANT pg_create_subscription TO mmlite_admin;
     GRANT CREATE ON DATABASE postgres TO mmlite_admin;
     ALTER TABLE public.departments OWNER TO mmlite_admin;
     ALTER TABLE public.users OWNER TO mmlite_admin;
     ${GRANTS.join(';\n')};`,
  )
}

describe('remove-node as a non-superuser admin: origin-status privileges checked in preflight', function () {
  this.timeout(600_000)
  let servers: LocalServer[]
  let dir: string
  let adminCfg: string

  before(async () => {
    servers = await h.startServers([17, 17])
    await h.createSchema(servers)
    await Promise.all(servers.map(adminRole))
    dir = await h.tempDir()
    // every node reached as mmlite_admin, by the CLI (password from the environment) and by the
    // peers (password in peer_dsn: 16+ requires one for a non-superuser subscription owner)
    adminCfg = path.join(dir, 'mmlite.yaml')
    const nodes = servers.flatMap((s, i) => [
      `  - name: node${i + 1}`,
      `    dsn: postgresql://mmlite_admin@127.0.0.1:${s.port}/postgres`,
      `    peer_dsn: host=127.0.0.1 port=${s.port} dbname=postgres user=mmlite_admin password=${ADMIN_PW}`,
    ])
    await writeFile(adminCfg, ['cluster: shop', 'tables:', '  - public.departments', '  - public.users', 'nodes:', ...nodes, ''].join('\n'))
    const init = await h.runCli(['init', '-c', adminCfg, '--yes'], {env})
    assert.equal(init.code, 0, init.stderr + init.stdout)
    await h.writeOnEveryNode(servers, 20)
    await h.waitConverged(servers, 'public.users', 40)
    // now without the origin-status grants
    for (const s of servers) await h.sql(s, GRANTS.map(g => g.replace('GRANT', 'REVOKE').replace(' TO ', ' FROM ')).join(';'))
  })
  after(() => stopAllStarted())

  it('without the grants: refused before anything changes (exit 11, the exact GRANTs); with them: removed', async () => {
    const [n1, n2] = servers
    // the cluster's publication, slots and subscriptions (with enabled) on every node
    const objects = () =>
      Promise.all(
        servers.map(async s => ({
          ...(await h.meshObjects(s)),
          enabled: await h.sql(s, "SELECT subname, subenabled FROM pg_subscription WHERE subname LIKE 'shop%' ORDER BY 1"),
        })),
      )
    const before = await objects()
    const journal = () => {
      try {
        return readFileSync(path.join(dir, '.mmlite/journal.json'), 'utf8')
      } catch {
        return ''
      }
    }
    const journalBefore = journal()
    const r = await h.runCli(['remove-node', 'node2', '-c', adminCfg, '--yes'], {env})
    assert.equal(r.code, 11, `exit ${r.code}\n${r.stdout}\n${r.stderr}`)
    assert.match(r.stderr, /preflight found 2 problems; nothing was changed/)
    for (const node of ['node1', 'node2']) {
      assert.match(r.stderr, new RegExp(`\\[${node}\\] privileges: the connecting role mmlite_admin cannot read pg_replication_origin_status`))
    }
    assert.ok(r.stderr.includes(`fix: ${GRANTS.map(g => `${g.replace('mmlite_admin', '"mmlite_admin"')};`).join(' ')}`), r.stderr)
    assert.deepEqual(await objects(), before, 'mesh objects changed')
    assert.equal(journal(), journalBefore, 'journal changed')
    assert.match(readFileSync(adminCfg, 'utf8'), /name: node2/)
    // still a working mesh both ways
    await h.sql(n1, "INSERT INTO public.departments VALUES (901, 'after refusal 1')")
    await h.sql(n2, "INSERT INTO public.departments VALUES (902, 'after refusal 2')")
    await h.waitConverged(servers, 'public.departments', 2)

    // --force contacts only node1: only node1 is named
    const forced = await h.runCli(['remove-node', 'node2', '--force', '-c', adminCfg, '--yes'], {env})
    assert.equal(forced.code, 11, forced.stderr)
    assert.match(forced.stderr, /preflight found 1 problem; nothing was changed/)
    assert.doesNotMatch(forced.stderr, /\[node2\]/)
    assert.deepEqual(await objects(), before, 'mesh objects changed by --force')

    for (const s of servers) await h.sql(s, GRANTS.join(';'))
    await h.sql(n2, "INSERT INTO public.users VALUES (777777, 1, 'last from node2', 'node2')")
    const ok = await h.runCli(['remove-node', 'node2', '-c', adminCfg, '--yes', '--json'], {env})
    assert.equal(ok.code, 0, ok.stderr + ok.stdout)
    assert.deepEqual(await h.sql(n1, 'SELECT name FROM public.users WHERE id = 777777'), [{name: 'last from node2'}])
    for (const s of servers) {
      const m = await h.meshObjects(s)
      assert.deepEqual([...m.slots, ...m.subs].filter(x => x.includes('node2')), [], `node2's links left on ${s.name}`)
    }
  })
})
