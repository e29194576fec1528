/**
 * Secrets (issue 13.4) through the compiled CLI:
 *  - a password in --dsn: hidden from the process list while the command runs, never in the
 *    DEBUG=* output, and a warning names the password-free ways;
 *  - init warns loudly when a node without peer_dsn has a password in its dsn (it would be stored
 *    in the peers' pg_subscription), and not for a node with a password-free peer_dsn.
 */
import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {readFileSync} from 'node:fs'
import {writeFile} from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'

const PW = 'Sup3rSecretPw'

describe('secrets on the command line and in peer DSNs', function () {
  after(() => stopAllStarted())

  it('a password in --dsn: not in the process list, not in DEBUG output, and a warning', async () => {
    // a server that accepts connections and never answers: the command waits for its connect timeout
    const sockets: net.Socket[] = []
    const hang = net.createServer(s => sockets.push(s))
    await new Promise<void>(r => hang.listen(0, '127.0.0.1', r))
    const port = (hang.address() as net.AddressInfo).port
    const dir = await h.tempDir()
    const cfg = path.join(dir, 'mmlite.yaml')
    await writeFile(cfg, `cluster: shop\ntables: [public.t]\nnodes:\n  - {name: a, dsn: "host=127.0.0.1 port=${port}"}\n  - {name: b, dsn: "host=127.0.0.1 port=${port} dbname=b"}\n`)
    const child = spawn(process.execPath, [path.join(h.ROOT, 'bin/run.js'), 'add-node', 'c', '--dsn', `postgresql://u:${PW}@127.0.0.1:${port}/d`, '-c', cfg, '--yes', '--connect-timeout', '5'], {
      env: {...process.env, DEBUG: '*', CI: '1'},
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    child.stdout.on('data', d => (out += d))
    child.stderr.on('data', d => (out += d))
    try {
      await h.waitFor(async () => sockets.length > 0, 'the CLI to connect')
      const cmdline = readFileSync(`/proc/${child.pid}/cmdline`, 'utf8')
      assert.ok(!cmdline.includes(PW), `process list shows the password: ${cmdline}`)
      assert.match(cmdline, /add-node/)
    } finally {
      await new Promise(r => child.on('close', r))
      for (const s of sockets) s.destroy()
      hang.close()
    }
    assert.ok(!out.includes(PW), out)
    assert.match(out, /oclif/, 'DEBUG output expected')
    assert.match(out, /warning: a password was given on the command line/)
    assert.match(out, /PGPASSWORD, ~\/\.pgpass/)
  })

  it('init warns about a dsn password that would land in the peers\' pg_subscription; replication works', async () => {
    const servers: LocalServer[] = await h.startServers([16, 16])
    await h.createSchema(servers)
    const dir = await h.tempDir()
    const cfg = path.join(dir, 'mmlite.yaml')
    const [a, b] = servers
    // the servers' password becomes PW (and their password file follows, for the password-free peer_dsn)
    await Promise.all(servers.map(s => s.setPassword(PW)))
    await writeFile(
      cfg,
      [
        'cluster: shop',
        'tables: [public.departments, public.users]',
        'nodes:',
        `  - {name: node1, dsn: "postgresql://postgres:${PW}@127.0.0.1:${a.port}/postgres"}`,
        `  - {name: node2, dsn: "postgresql://postgres:${PW}@127.0.0.1:${b.port}/postgres", peer_dsn: "host=127.0.0.1 port=${b.port} dbname=postgres user=postgres"}`,
      ].join('\n') + '\n',
    )
    const r = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(r.code, 0, r.stderr + r.stdout)
    assert.match(r.stderr, /warning: node1: no peer_dsn, so the subscriptions on the other nodes connect with the dsn, whose password is then stored in pg_subscription/)
    assert.ok(!(r.stdout + r.stderr).includes(PW))
    // as warned: node2's subscription to node1 holds the password; node1's to node2 does not
    const [onB] = await h.sql<{c: string}>(b, 'SELECT subconninfo AS c FROM pg_subscription')
    const [onA] = await h.sql<{c: string}>(a, 'SELECT subconninfo AS c FROM pg_subscription')
    assert.ok(onB.c.includes(PW))
    assert.ok(!onA.c.includes(PW))
    await h.sql(a, "INSERT INTO public.departments VALUES (1, 'from node1')")
    await h.sql(b, "INSERT INTO public.departments VALUES (2, 'from node2')")
    await h.waitConverged(servers, 'public.departments', 2)
  })
})
