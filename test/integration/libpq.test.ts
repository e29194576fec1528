/**
 * Standard libpq behaviour for the CLI's own connections, against a server that requires a
 * password: password in the URI, PGPASSWORD, a pgpass file, PG* variables filling a DSN's
 * gaps; a wrong password is reported as an authentication failure; no password is printed.
 */
import assert from 'node:assert/strict'
import {readFile, writeFile, chmod} from 'node:fs/promises'
import path from 'node:path'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'

const SECRET = 'Pa55 w0rd\'s'

describe('libpq connection behaviour (password-protected server)', function () {
  let servers: LocalServer[]
  let dir: string
  before(async () => {
    servers = await h.startServers([16, 16])
    dir = await h.tempDir()
    for (const s of servers) {
      await h.sql(s, `CREATE ROLE app LOGIN SUPERUSER PASSWORD '${SECRET.replace(/'/g, "''")}'`)
      const hba = path.join(s.dataDir, 'pg_hba.conf')
      // runs as the server's OS user: keep the file's owner, only change its content
      const old = await readFile(hba, 'utf8')
      await writeFile(hba, `host all app 127.0.0.1/32 scram-sha-256\n${old}`)
      await h.reloadConf(s)
    }
  })
  after(() => stopAllStarted())

  async function status(cfgLines: string[], env: NodeJS.ProcessEnv = {}) {
    const file = path.join(dir, 'mmlite.yaml')
    await writeFile(file, ['cluster: shop', 'tables: [public.t]', 'nodes:', ...cfgLines].join('\n') + '\n')
    const r = await h.runCli(['status', '-c', file, '--json', '--timeout', '3'], {env: {PGPASSWORD: undefined, PGPASSFILE: path.join(dir, 'none'), ...env}})
    assert.doesNotMatch(r.stdout + r.stderr, /Pa55/, 'password printed')
    return h.parseJson<{nodes: Array<{name: string; reachable: boolean; error?: string}>}>(r)
  }

  it('password in the URI (percent-encoded)', async () => {
    const enc = encodeURIComponent(SECRET)
    const out = await status(servers.map((s, i) => `  - {name: n${i + 1}, dsn: "postgresql://app:${enc}@127.0.0.1:${s.port}/postgres"}`))
    assert.deepEqual(out.nodes.map(n => n.reachable), [true, true])
  })

  it('password in key=value form, libpq-quoted', async () => {
    const q = `'${SECRET.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`
    const out = await status(servers.map((s, i) => `  - name: n${i + 1}\n    dsn: "host=127.0.0.1 port=${s.port} dbname=postgres user=app password=${q.replace(/\\/g, '\\\\')}"`))
    assert.deepEqual(out.nodes.map(n => n.reachable), [true, true])
  })

  it('PGPASSWORD, and PGHOST/PGUSER/PGDATABASE filling the gaps of a DSN', async () => {
    const out = await status(servers.map((s, i) => `  - {name: n${i + 1}, dsn: "port=${s.port}"}`), {
      PGPASSWORD: SECRET,
      PGHOST: '127.0.0.1',
      PGUSER: 'app',
      PGDATABASE: 'postgres',
    })
    assert.deepEqual(out.nodes.map(n => n.reachable), [true, true])
  })

  it('a pgpass file (PGPASSFILE)', async () => {
    const pgpass = path.join(dir, 'pgpass')
    const esc = SECRET.replace(/\\/g, '\\\\').replace(/:/g, '\\:')
    await writeFile(pgpass, servers.map(s => `127.0.0.1:${s.port}:postgres:app:${esc}`).join('\n') + '\n')
    await chmod(pgpass, 0o600)
    const out = await status(servers.map((s, i) => `  - {name: n${i + 1}, dsn: "postgresql://app@127.0.0.1:${s.port}/postgres"}`), {PGPASSFILE: pgpass})
    assert.deepEqual(out.nodes.map(n => n.reachable), [true, true])
  })

  it('${VAR} in a DSN value stays that value: a password with spaces and "=" does not add keys', async () => {
    // the variable looks like more conninfo: pasted into the DSN text it would change the port
    const injected = `${SECRET} port=1`
    for (const s of servers) await h.sql(s, `ALTER ROLE app PASSWORD '${injected.replace(/'/g, "''")}'`)
    try {
      const out = await status(servers.map((s, i) => `  - name: n${i + 1}\n    dsn: "host=127.0.0.1 port=${s.port} dbname=postgres user=app password=\${MM_PW}"`), {MM_PW: injected})
      assert.deepEqual(out.nodes.map(n => n.reachable), [true, true])
    } finally {
      for (const s of servers) await h.sql(s, `ALTER ROLE app PASSWORD '${SECRET.replace(/'/g, "''")}'`)
    }
  })

  it('service= from PGSERVICEFILE (keys in the DSN win); an unknown key is refused', async () => {
    const file = path.join(dir, 'services.conf')
    const lines = servers.flatMap((s, i) => [`[n${i + 1}]`, 'host=127.0.0.1', `port=${s.port}`, 'dbname=postgres', 'user=nobody'])
    await writeFile(file, lines.join('\n') + '\n')
    const out = await status(servers.map((_, i) => `  - {name: n${i + 1}, dsn: "service=n${i + 1} user=app"}`), {PGSERVICEFILE: file, PGPASSWORD: SECRET})
    assert.deepEqual(out.nodes.map(n => n.reachable), [true, true])
    const cfg = path.join(dir, 'mmlite.yaml')
    await writeFile(cfg, ['cluster: shop', 'tables: [public.t]', 'nodes:', `  - {name: n1, dsn: "postgresql://app@127.0.0.1:${servers[0].port}/postgres?sslmode%3Ddisable%20host=evil"}`, `  - {name: n2, dsn: "host=127.0.0.1"}`].join('\n') + '\n')
    const r = await h.runCli(['status', '-c', cfg])
    assert.equal(r.code, 10, r.stdout + r.stderr)
    assert.match(r.stdout + r.stderr, /unknown connection keyword "sslmode=disable host"/)
  })

  it('a wrong password is an authentication failure, named as such', async () => {
    const out = await status(servers.map((s, i) => `  - {name: n${i + 1}, dsn: "postgresql://app:Pa55wrong@127.0.0.1:${s.port}/postgres"}`))
    for (const n of out.nodes) {
      assert.equal(n.reachable, false)
      assert.match(n.error ?? '', /authentication failed/)
    }
  })
})
