/**
 * Flags with one meaning in every command (real CLI, one real server):
 *  - --timeout (the whole wait) and --connect-timeout (each connection) accept durations with
 *    units everywhere; a bad duration is exit 10 naming the fix (the parser: remove-node-plan.test.ts)
 *  - an unknown node is the same refusal (exit 10, `unknown node "x"`) in every command
 *  - skip-tx --from/--to (--node a deprecated alias); --from X --to X is an error
 *  - no flag is accepted and ignored (demo -c)
 */
import assert from 'node:assert/strict'
import {rm} from 'node:fs/promises'
import path from 'node:path'
import * as h from '../helpers/cluster.js'
import {LocalServer, stopAllStarted} from '../../src/local/server.js'

describe('flags: one meaning, durations with units, the same exit code for an unknown node', function () {
  this.timeout(180_000)
  let servers: LocalServer[]
  let dir: string
  let cfg: string

  before(async () => {
    servers = await h.startServers([16, 16])
    await h.createSchema(servers)
    dir = await h.tempDir()
    cfg = await h.writeConfig(dir, servers)
  })
  after(async () => {
    await stopAllStarted()
    if (dir) await rm(dir, {recursive: true, force: true})
  })

  it('every command takes --timeout and --connect-timeout as durations; a bad one is exit 10 with the fix', async () => {
    const ok = await h.runCli(['status', '-c', cfg, '--json', '--timeout', '1m', '--connect-timeout', '5s'])
    const st = h.parseJson<{nodes: Array<{reachable: boolean}>}>(ok)
    assert.deepEqual(st.nodes.map(n => n.reachable), [true, true])
    const plain = await h.runCli(['status', '-c', cfg, '--json', '--timeout', '60', '--connect-timeout', '5'])
    assert.deepEqual(h.parseJson<{nodes: Array<{reachable: boolean}>}>(plain).nodes.map(n => n.reachable), [true, true])
    for (const args of [
      ['status', '--timeout', 'soon'],
      ['status', '--connect-timeout', 'x'],
      ['init', '--dry-run', '--timeout', 'x'],
      ['init', '--dry-run', '--connect-timeout', '-3'],
      ['add-node', 'node9', '--dsn', servers[0].dsn(), '--dry-run', '--timeout', '10 min'],
      ['remove-node', 'node2', '--dry-run', '--connect-timeout', 'later'],
      ['remove-node', 'node2', '--dry-run', '--drain-timeout', 'x'],
      ['skip-tx', '--dry-run', '--timeout', 'x'],
      ['doctor', '--connect-timeout', 'x'],
    ]) {
      const r = await h.runCli([...args, '-c', cfg])
      assert.equal(r.code, 10, `${args.join(' ')}: ${r.stdout}${r.stderr}`)
      assert.match(r.stderr, /expected a duration like 30s, 5m or 500ms/, args.join(' '))
    }
  })

  it('--connect-timeout bounds each connection and --timeout the whole status', async () => {
    // an address nothing answers on: only --connect-timeout ends that connection (the other node is still reported)
    const dead = path.join(dir, 'dead.yaml')
    const {writeFile} = await import('node:fs/promises')
    await writeFile(dead, `cluster: shop\ntables: [public.users]\nnodes:\n  - {name: a, dsn: "${servers[0].dsn()}"}\n  - {name: b, dsn: "postgresql://postgres@10.255.255.1:5432/postgres"}\n`)
    const r = await h.runCli(['status', '-c', dead, '--json', '--connect-timeout', '1s', '--timeout', '20s'])
    const st = h.parseJson<{nodes: Array<{name: string; reachable: boolean; error?: string}>}>(r)
    assert.deepEqual(st.nodes.map(n => [n.name, n.reachable]), [['a', true], ['b', false]], r.stdout)
  })

  it('an unknown node: exit 10 and the same message in every command', async () => {
    for (const args of [
      ['init', '--dry-run', '--seed', 'nope'],
      ['add-node', 'node9', '--dsn', servers[0].dsn(), '--dry-run', '--source', 'nope'],
      ['remove-node', 'nope', '--dry-run'],
      ['skip-tx', '--dry-run', '--from', 'nope'],
      ['skip-tx', '--dry-run', '--to', 'nope'],
      ['skip-tx', '--dry-run', '--node', 'nope'],
    ]) {
      const r = await h.runCli([...args, '-c', cfg])
      assert.equal(r.code, 10, `${args.join(' ')}: ${r.stdout}${r.stderr}`)
      assert.match(r.stderr, /unknown node "nope"/, args.join(' '))
      assert.match(r.stderr, /node1, node2/, args.join(' '))
    }
  })

  it('skip-tx: --to (and the deprecated --node) filter the subscriber; --from X --to X is an error', async () => {
    const same = await h.runCli(['skip-tx', '-c', cfg, '--dry-run', '--from', 'node1', '--to', 'node1'])
    assert.equal(same.code, 10, same.stdout + same.stderr)
    assert.match(same.stderr, /names no link/)
    const to = await h.runCli(['skip-tx', '-c', cfg, '--dry-run', '--from', 'node1', '--to', 'node2'])
    assert.equal(to.code, 0, to.stdout + to.stderr)
    assert.match(to.stdout, /No stuck link from node1 into node2/)
    const alias = await h.runCli(['skip-tx', '-c', cfg, '--dry-run', '--node', 'node2'])
    assert.equal(alias.code, 0, alias.stdout + alias.stderr)
    assert.match(alias.stdout, /No stuck link into node2/)
    assert.match(alias.stderr, /deprecated/i)
  })

  it('no flag is accepted and ignored: demo -c is refused', async () => {
    const r = await h.runCli(['demo', '-c', cfg], {env: {MMLITE_DEMO_DIR: path.join(dir, 'demo')}})
    assert.equal(r.code, 10, r.stdout + r.stderr)
    assert.match(r.stderr, /-c/)
  })
})
