/**
 * init's plugin probe on real servers (src/steps/preflight.ts): creating the probe slot waits
 * until every transaction running on the node has finished, so a long transaction makes the
 * probe time out. That is reported as what it is, with the fix that helps (find and end the
 * transaction), not as a missing plugin to install. Two PostgreSQL 15 nodes (the `mmlite` plugin
 * installed and allowed): one with a transaction left open.
 */
import assert from 'node:assert/strict'
import pg from 'pg'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'

describe('init preflight: a plugin probe blocked by a running transaction', function () {
  this.timeout(300_000)
  let servers: LocalServer[]
  let holder: pg.Client | undefined

  before(async () => {
    servers = await h.startServers([15, 15])
    await h.createSchema(servers)
  })
  after(async () => {
    await holder?.end().catch(() => {})
    await stopAllStarted()
  })

  it('names the waiting on running transactions and how to find them, not "install the plugin"', async () => {
    const cfg = await h.writeConfig(await h.tempDir(), servers)
    // a transaction with an xid, left open on node1: slot creation on node1 waits for it
    holder = new pg.Client({connectionString: servers[0].dsn()})
    await holder.connect()
    await holder.query('BEGIN')
    await holder.query('SELECT pg_catalog.txid_current()')
    const r = await h.runCli(['init', '-c', cfg, '--dry-run'])
    assert.equal(r.code, 11, r.stdout + r.stderr)
    const node1 = r.stderr.split('\n').filter(l => l.includes('[node1]') || l.trimStart().startsWith('fix:'))
    assert.match(r.stderr, /\[node1\] plugin: could not create a probe slot with the output plugin "mmlite" within 15 s: creating a slot waits until every transaction running on node1 has finished/)
    assert.match(r.stderr, /fix: Let the long-running or idle-in-transaction sessions and prepared transactions on node1 finish \(SELECT pid, state, xact_start, query FROM pg_catalog\.pg_stat_activity/)
    assert.doesNotMatch(r.stderr, /make -C extension install/, node1.join('\n'))
    assert.doesNotMatch(r.stderr, /\[node2\]/, 'node2 has no open transaction: its probe passes')
    // the transaction ends: the same check passes
    await holder.query('ROLLBACK')
    const ok = await h.runCli(['init', '-c', cfg, '--dry-run'])
    assert.equal(ok.code, 0, ok.stdout + ok.stderr)
  })
})
