/**
 * verify and repair on a PostgreSQL 15 mesh (the mmlite output plugin filters by origin instead
 * of native origin = none): consistent under writes, an injected divergence found exactly,
 * repaired from node1 without echo (node1 untouched, no apply errors), then consistent.
 */
import assert from 'node:assert/strict'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'
import {WriteLoad} from '../helpers/load.js'
import {asOrigin, caughtUp, snapshot} from '../helpers/verify.js'
import type {VerifyResult} from '../../src/steps/verify/types.js'

const TABLES = ['public.departments', 'public.users']

describe('verify and repair: PostgreSQL 15 mesh (mmlite plugin)', function () {
  this.timeout(300_000)
  let servers: LocalServer[]
  let cfg: string

  before(async () => {
    servers = await h.startServers([15, 15, 15])
    await h.createSchema(servers)
    await h.sql(servers[0], "INSERT INTO public.users SELECT g, g % 10, 'seed ' || g, 'node1' FROM generate_series(1, 2000) g")
    cfg = await h.writeConfig(await h.tempDir('mmlite-verify15-'), servers)
    const init = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(init.code, 0, init.stderr + init.stdout)
    await h.waitConverged(servers, 'public.users', 2000)
  })
  after(async () => {
    await stopAllStarted()
  })

  it('is consistent under writes, finds the injected divergence exactly, repairs it without echo', async () => {
    const load = new WriteLoad().start(servers.map((s, i) => ({label: `w${i + 1}`, server: s, index: i + 1})), {pauseMs: 5})
    try {
      for (let run = 0; run < 2; run++) {
        const r = await h.runCli(['verify', '-c', cfg, '--json'])
        assert.equal(r.code, 0, r.stdout + r.stderr)
      }
    } finally {
      await load.stop()
    }
    await caughtUp(servers)
    await asOrigin(servers[1], ["UPDATE public.users SET name = 'diverged' WHERE id = 42", 'DELETE FROM public.users WHERE id = 43'])
    const v = await h.runCli(['verify', '-c', cfg, '--json'])
    assert.equal(v.code, 2, v.stdout + v.stderr)
    const users = h.parseJson<VerifyResult>(v).tables.find(t => t.table === 'public.users')!
    assert.deepEqual(users.divergent.map(d => d.key.id).sort(), ['42', '43'])
    const n1 = await snapshot(servers[0], TABLES)
    const n3 = await snapshot(servers[2], TABLES)
    const r = await h.runCli(['repair', '-c', cfg, '--from', 'node1', '--yes', '--json'])
    assert.equal(r.code, 0, r.stdout + r.stderr)
    await caughtUp(servers)
    assert.equal(await snapshot(servers[0], TABLES), n1, 'node1 changed')
    assert.equal(await snapshot(servers[2], TABLES), n3, 'the repair of node2 reached node3')
    for (const s of servers) assert.equal(await h.applyErrors(s), 0)
    assert.equal((await h.runCli(['verify', '-c', cfg])).code, 0)
  })
})
