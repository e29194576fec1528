/**
 * Both entry points start and list every command: bin/run.js (compiled by `npm test`'s build)
 * and bin/dev.js (TypeScript sources via tsx, ignoring the manifest).
 */
import assert from 'node:assert/strict'
import {execFile} from 'node:child_process'
import path from 'node:path'
import {promisify} from 'node:util'
import {ROOT} from '../helpers/cluster.js'

const run = promisify(execFile)
const COMMANDS = ['add-node', 'demo', 'init', 'remove-node', 'skip-tx', 'status']

describe('CLI entry points', function () {
  this.timeout(60_000)
  for (const bin of ['bin/run.js', 'bin/dev.js']) {
    it(`${bin} --help lists every command; --version prints the version`, async () => {
      const help = await run(process.execPath, [path.join(ROOT, bin), '--help'], {cwd: ROOT})
      for (const c of COMMANDS) assert.match(help.stdout, new RegExp(`^  ${c} `, 'm'), `${c} missing from ${bin} --help`)
      assert.doesNotMatch(help.stdout, /^ {2}base /m)
      const v = await run(process.execPath, [path.join(ROOT, bin), '--version'], {cwd: ROOT})
      assert.match(v.stdout, /^mmlite\/0\.1\.0 /)
    })
  }
})
