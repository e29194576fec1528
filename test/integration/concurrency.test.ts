/**
 * Every mutating command refuses to run while another mmlite run holds the cluster lock:
 * exit 12, the holder named, nothing changed. The lock is held here exactly as mmlite holds it
 * (ClusterLock.acquire), so the test follows the lock's implementation.
 */
import assert from 'node:assert/strict'
import {rm} from 'node:fs/promises'
import {loadConfig} from '../../src/config/config.js'
import {Cluster} from '../../src/cluster/cluster.js'
import {ClusterLock} from '../../src/engine/lock.js'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'

describe('every mutating command refuses a concurrent run (exit 12)', function () {
  this.timeout(240_000)
  let servers: LocalServer[]
  let dir: string
  let cfg: string
  let cluster: Cluster
  let lock: ClusterLock | undefined

  before(async () => {
    servers = await h.startServers([16, 16, 16])
    await h.createSchema(servers)
    dir = await h.tempDir()
    cfg = await h.writeConfig(dir, servers.slice(0, 2))
    const init = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(init.code, 0, init.stdout + init.stderr)
    cluster = new Cluster(loadConfig(cfg), {connectTimeoutMs: 10_000})
    lock = await ClusterLock.acquire(cluster, 'test holder')
  })
  after(async () => {
    await lock?.release()
    await cluster?.close()
    await stopAllStarted()
    if (dir) await rm(dir, {recursive: true, force: true})
  })

  async function refused(args: string[]): Promise<void> {
    const r = await h.runCli([...args, '-c', cfg, '--yes'])
    assert.equal(r.code, 12, `${args.join(' ')}: exit ${r.code}\n${r.stdout}\n${r.stderr}`)
    assert.match(r.stderr, /another mmlite run holds the lock of cluster "shop"/, args.join(' '))
    assert.match(r.stderr, /test holder/, `${args.join(' ')} names the holder`)
    const json = await h.runCli([...args, '-c', cfg, '--yes', '--json'])
    assert.equal(json.code, 12)
    assert.equal(h.parseJson<{code: string}>(json).code, 'locked')
  }

  it('init', async () => {
    await refused(['init'])
  })

  it('add-node', async () => {
    await refused(['add-node', 'node3', '--dsn', servers[2].dsn()])
    assert.deepEqual((await h.meshObjects(servers[2])).subs, [], 'nothing made on the new node')
  })

  it('remove-node', async () => {
    await refused(['remove-node', 'node2'])
  })

  it('skip-tx', async () => {
    await refused(['skip-tx'])
  })

  it('nothing was changed: the mesh still has its two nodes and replicates', async () => {
    assert.deepEqual(loadConfig(cfg).nodes.map(n => n.name), ['node1', 'node2'])
    await h.writeOnEveryNode(servers.slice(0, 2), 5)
    await h.waitConverged(servers.slice(0, 2), 'public.users', 10)
  })
})
