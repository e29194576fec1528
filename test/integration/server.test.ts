import assert from 'node:assert/strict'
import {existsSync} from 'node:fs'
import pg from 'pg'

import {LocalServer, PG_MAJORS, binDir, startedServers, stopAllStarted, type PgMajor} from '../../src/local/server.js'

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
})
