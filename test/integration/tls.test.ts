/**
 * TLS of the CLI's own connections follows libpq's sslmode (issue 13.3), against a local server
 * with ssl=on and a CA generated here with openssl (loopback only), and one without TLS.
 * pg_hba lets role `tlsonly` in over TLS only and role `certuser` only with a client certificate,
 * so "reachable" proves which kind of connection was made.
 */
import assert from 'node:assert/strict'
import {execFileSync} from 'node:child_process'
import {chmod, copyFile, readFile, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {chownToServerUser, stopAllStarted, type LocalServer} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'

function openssl(cwd: string, ...args: string[]): void {
  execFileSync('openssl', args, {cwd, stdio: 'pipe'})
}

/** CA, server certificate for localhost (DNS name only: 127.0.0.1 does not match it), client certificate for certuser, and an unrelated CA. */
function makePki(dir: string): void {
  const days = ['-days', '2']
  openssl(dir, 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', ...days, '-subj', '/CN=mmlite test CA')
  openssl(dir, 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'other.key', '-out', 'other.crt', ...days, '-subj', '/CN=another CA')
  openssl(dir, 'req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost')
  execFileSync('sh', ['-c', "printf 'subjectAltName=DNS:localhost\\n' > server.ext"], {cwd: dir})
  openssl(dir, 'x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', ...days, '-extfile', 'server.ext')
  openssl(dir, 'req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'client.key', '-out', 'client.csr', '-subj', '/CN=certuser')
  openssl(dir, 'x509', '-req', '-in', 'client.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'client.crt', ...days)
}

describe('TLS of the CLI connections (libpq sslmode semantics)', function () {
  let tls: LocalServer
  let plain: LocalServer
  let dir: string
  let pki: string

  before(async () => {
    ;[tls, plain] = await h.startServers([16, 16])
    dir = await h.tempDir()
    pki = await h.tempDir('mmlite-pki-')
    makePki(pki)
    await chmod(path.join(pki, 'client.key'), 0o600)
    for (const f of ['server.crt', 'server.key', 'ca.crt']) {
      const to = path.join(tls.dataDir, f)
      await copyFile(path.join(pki, f), to)
      await chmod(to, 0o600)
      await chownToServerUser(to)
    }
    for (const s of [tls, plain]) await h.sql(s, 'CREATE ROLE tlsonly LOGIN; CREATE ROLE certuser LOGIN')
    const hba = path.join(tls.dataDir, 'pg_hba.conf')
    const old = await readFile(hba, 'utf8')
    await writeFile(
      hba,
      [
        'hostssl all tlsonly 127.0.0.1/32 trust',
        'hostnossl all tlsonly 127.0.0.1/32 reject',
        'hostssl all certuser 127.0.0.1/32 cert',
        'host all certuser 127.0.0.1/32 reject',
        old,
      ].join('\n'),
    )
    // the plain server: tlsonly may connect without TLS (and without a password: these tests are about TLS, not authentication)
    const plainHba = path.join(plain.dataDir, 'pg_hba.conf')
    await writeFile(plainHba, ['host all tlsonly 127.0.0.1/32 trust', await readFile(plainHba, 'utf8')].join('\n'))
    await h.reloadConf(plain)
    await tls.setSettings({ssl: 'on', ssl_cert_file: 'server.crt', ssl_key_file: 'server.key', ssl_ca_file: 'ca.crt'})
    await tls.restart()
  })
  after(() => stopAllStarted())

  async function reach(dsn: string, env: NodeJS.ProcessEnv = {}): Promise<{reachable: boolean; error?: string}> {
    const file = path.join(dir, 'mmlite.yaml')
    await writeFile(file, ['cluster: shop', 'tables: [public.t]', 'nodes:', `  - {name: n1, dsn: "${dsn}"}`].join('\n') + '\n')
    const r = await h.runCli(['status', '-c', file, '--json', '--timeout', '5'], {env: {PGSSLMODE: undefined, PGSSLROOTCERT: undefined, HOME: dir, ...env}})
    const out = h.parseJson<{nodes: Array<{reachable: boolean; error?: string}>}>(r)
    return out.nodes[0]
  }

  const ca = () => path.join(pki, 'ca.crt')
  const other = () => path.join(pki, 'other.crt')
  const on = (rest: string) => `host=localhost port=${tls.port} dbname=postgres ${rest}`

  it('prefer (the default) uses TLS when the server has it, and falls back when it has not', async () => {
    assert.equal((await reach(on('user=tlsonly'))).reachable, true)
    assert.equal((await reach(on('user=tlsonly sslmode=prefer'))).reachable, true)
    assert.equal((await reach(`host=127.0.0.1 port=${plain.port} dbname=postgres user=tlsonly`)).reachable, true)
    const req = await reach(`host=127.0.0.1 port=${plain.port} dbname=postgres user=tlsonly sslmode=require`)
    assert.equal(req.reachable, false)
    assert.match(req.error ?? '', /SSL/)
  })

  it('disable never uses TLS; allow tries TLS when the server refuses a plain connection', async () => {
    assert.equal((await reach(on('user=tlsonly sslmode=disable'))).reachable, false)
    assert.equal((await reach(on('user=tlsonly sslmode=allow'))).reachable, true)
  })

  it('verify-ca checks the chain; verify-full also the host name; require with a root certificate verifies', async () => {
    assert.equal((await reach(on(`user=tlsonly sslmode=verify-ca sslrootcert=${ca()}`))).reachable, true)
    const wrong = await reach(on(`user=tlsonly sslmode=verify-ca sslrootcert=${other()}`))
    assert.equal(wrong.reachable, false)
    assert.match(wrong.error ?? '', /certificate/i)
    assert.equal((await reach(on(`user=tlsonly sslmode=verify-full sslrootcert=${ca()}`))).reachable, true)
    // the certificate names localhost, not 127.0.0.1
    const ip = await reach(`host=127.0.0.1 port=${tls.port} dbname=postgres user=tlsonly sslmode=verify-full sslrootcert=${ca()}`)
    assert.equal(ip.reachable, false)
    assert.match(ip.error ?? '', /127\.0\.0\.1|altnames|host/i)
    assert.equal((await reach(`host=127.0.0.1 port=${tls.port} dbname=postgres user=tlsonly sslmode=verify-ca sslrootcert=${ca()}`)).reachable, true)
    assert.equal((await reach(on(`user=tlsonly sslmode=require sslrootcert=${other()}`))).reachable, false)
    assert.equal((await reach(on('user=tlsonly sslmode=require'))).reachable, true)
  })

  it('PGSSLMODE and PGSSLROOTCERT; verify-full without a root certificate is refused clearly', async () => {
    assert.equal((await reach(on('user=tlsonly'), {PGSSLMODE: 'verify-full', PGSSLROOTCERT: ca()})).reachable, true)
    assert.equal((await reach(on('user=tlsonly'), {PGSSLMODE: 'verify-full', PGSSLROOTCERT: other()})).reachable, false)
    const file = path.join(dir, 'mmlite.yaml')
    await writeFile(file, ['cluster: shop', 'tables: [public.t]', 'nodes:', `  - {name: n1, dsn: "${on('user=tlsonly sslmode=verify-full')}"}`].join('\n') + '\n')
    const r = await h.runCli(['status', '-c', file, '--json', '--timeout', '5'], {env: {HOME: dir}})
    assert.match(r.stdout + r.stderr, /root certificate file .* does not exist/)
  })

  it('client certificates: sslcert/sslkey', async () => {
    assert.equal((await reach(on('user=certuser sslmode=verify-full sslrootcert=' + ca()))).reachable, false)
    const withCert = on(`user=certuser sslmode=verify-full sslrootcert=${ca()} sslcert=${path.join(pki, 'client.crt')} sslkey=${path.join(pki, 'client.key')}`)
    assert.equal((await reach(withCert)).reachable, true)
  })
})
