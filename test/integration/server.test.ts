import assert from 'node:assert/strict'
import {spawnSync} from 'node:child_process'
import {existsSync, readFileSync, statSync} from 'node:fs'
import path from 'node:path'
import pg from 'pg'

import {LocalServer, PG_MAJORS, binDir, pgProgram, serverOsUser, startedServers, stopAllStarted, type PgMajor} from '../../src/local/server.js'

async function query<T extends pg.QueryResultRow>(s: LocalServer, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({connectionString: s.dsn()})
  await client.connect()
  try {
    return (await client.query<T>(sql, params)).rows
  } finally {
    await client.end()
  }
}

describe('LocalServer (real PostgreSQL 14-18)', function () {
  this.timeout(180_000)
  const servers = new Map<PgMajor, LocalServer>()

  before(async () => {
    const list = await Promise.all(PG_MAJORS.map((major) => LocalServer.start({major, name: `node${major}`})))
    for (const s of list) servers.set(s.major, s)
  })

  after(async () => {
    const dirs = [...servers.values()].map((s) => s.serverDir)
    await stopAllStarted()
    assert.equal(startedServers().length, 0)
    for (const d of dirs) assert.equal(existsSync(d), false, `${d} removed`)
  })

  it('resolves binary directories', () => {
    for (const major of PG_MAJORS) assert.ok(existsSync(`${binDir(major)}/pg_ctl`), `pg_ctl for ${major}`)
  })

  it('runs distinct servers on distinct ports', () => {
    const ports = new Set([...servers.values()].map((s) => s.port))
    assert.equal(ports.size, PG_MAJORS.length)
    for (const s of servers.values()) {
      assert.equal(s.dsn(), `postgresql://postgres@127.0.0.1:${s.port}/postgres`)
      assert.ok(s.running)
    }
  })

  for (const major of PG_MAJORS) {
    it(`PG ${major}: right version, wal_level=logical, read/write`, async () => {
      const s = servers.get(major)!
      const [v] = await query<{server_version_num: string}>(s, 'SHOW server_version_num')
      assert.equal(Math.floor(Number(v.server_version_num) / 10000), major)
      const [w] = await query<{wal_level: string}>(s, 'SHOW wal_level')
      assert.equal(w.wal_level, 'logical')
      await query(s, 'CREATE TABLE t (id int PRIMARY KEY, v text)')
      await query(s, 'INSERT INTO t VALUES ($1, $2)', [1, `hello ${major}`])
      const rows = await query<{id: number; v: string}>(s, 'SELECT id, v FROM t')
      assert.deepEqual(rows, [{id: 1, v: `hello ${major}`}])
    })
  }

  it('stop/start keeps data and port; stop is idempotent', async () => {
    const s = servers.get(16)!
    const port = s.port
    await s.stop()
    assert.equal(s.running, false)
    await s.stop() // idempotent
    await assert.rejects(query(s, 'SELECT 1'))
    await s.start()
    assert.equal(s.port, port)
    const rows = await query<{v: string}>(s, 'SELECT v FROM t WHERE id = 1')
    assert.deepEqual(rows, [{v: 'hello 16'}])
  })

  it('setSettings + restart applies settings', async () => {
    const s = servers.get(17)!
    await s.setSettings({max_connections: 37, application_name: "it's"})
    await s.restart()
    const [r] = await query<{max_connections: string}>(s, 'SHOW max_connections')
    assert.equal(r.max_connections, '37')
    const [a] = await query<{application_name: string}>(s, 'SHOW application_name')
    assert.ok(typeof a.application_name === 'string')
    assert.match(await s.readLog(), /database system is ready to accept connections/)
  })

  it('trusts nobody: scram-sha-256 only, the password in a 0600 file; no password, a wrong one or another OS user is refused', async () => {
    const s = servers.get(16)!
    const hba = readFileSync(path.join(s.dataDir, 'pg_hba.conf'), 'utf8').split('\n').filter(l => l.trim() && !l.trim().startsWith('#'))
    assert.ok(hba.length > 0)
    for (const l of hba) assert.match(l, /\sscram-sha-256\s*$/, `pg_hba.conf line: ${l}`)
    const file = s.passFile
    assert.equal(process.env.PGPASSFILE, file, 'this process finds the passwords through PGPASSFILE')
    const who = serverOsUser()
    const st = statSync(file)
    assert.equal(st.mode & 0o777, 0o600, 'password file mode')
    assert.equal(statSync(path.dirname(file)).mode & 0o077, 0, 'password file dir private')
    if (who.uid !== undefined) assert.equal(st.uid, who.uid, 'password file owned by the server OS user')
    assert.equal(statSync(s.socketDir).mode & 0o077, 0, 'socket dir private')
    assert.match(readFileSync(file, 'utf8'), new RegExp(`^127\\.0\\.0\\.1:${s.port}:\\*:postgres:\\S{20,}$`, 'm'))

    // node-postgres with a wrong password, or none (PGPASSFILE pointing nowhere)
    const wrong = new pg.Client({host: s.host, port: s.port, user: 'postgres', database: 'postgres', password: 'not-the-password'})
    await assert.rejects(wrong.connect(), (e: {code?: string}) => e.code === '28P01')
    await wrong.end().catch(() => {})
    // libpq (psql) without a password file, over TCP and over the socket
    const psql = pgProgram(15, 'psql')
    assert.ok(psql, 'psql (PostgreSQL 15) for the libpq check')
    const env: NodeJS.ProcessEnv = {...process.env, PGPASSFILE: '/nonexistent'}
    delete env.PGPASSWORD
    for (const host of ['127.0.0.1', s.socketDir]) {
      const r = spawnSync(psql, ['-w', '-h', host, '-p', String(s.port), '-U', 'postgres', '-d', 'postgres', '-c', 'SELECT 1'], {encoding: 'utf8', env})
      assert.notEqual(r.status, 0, `psql -h ${host} without a password must fail: ${r.stdout}`)
      assert.match(r.stderr, /password|no password supplied/i, r.stderr)
    }
    // with the password file it works (the same psql)
    const ok = spawnSync(psql, ['-w', '-h', '127.0.0.1', '-p', String(s.port), '-U', 'postgres', '-d', 'postgres', '-Atc', 'SELECT 42'], {encoding: 'utf8', env: {...env, PGPASSFILE: file}})
    assert.equal(ok.stdout.trim(), '42', ok.stderr)
    // another OS user: cannot read the password file nor reach the socket (only checkable as root)
    if (process.getuid?.() === 0) {
      const other = spawnSync('runuser', ['-u', 'nobody', '--', psql, '-w', '-h', '127.0.0.1', '-p', String(s.port), '-U', 'postgres', '-d', 'postgres', '-c', 'SELECT 1'], {
        encoding: 'utf8',
        env: {PATH: process.env.PATH, PGPASSFILE: file, HOME: '/tmp'},
      })
      assert.notEqual(other.status, 0, `OS user nobody must be refused: ${other.stdout}`)
      assert.match(other.stderr, /password|permission denied/i, other.stderr)
      const sock = spawnSync('runuser', ['-u', 'nobody', '--', psql, '-w', '-h', s.socketDir, '-p', String(s.port), '-U', 'postgres', '-d', 'postgres', '-c', 'SELECT 1'], {encoding: 'utf8', env: {PATH: process.env.PATH, HOME: '/tmp'}})
      assert.notEqual(sock.status, 0, `OS user nobody must not reach the socket: ${sock.stdout}`)
    }
  })
})
