/**
 * verify's long lists (src/steps/verify/report.ts cutLists): the full result goes to a private
 * file through the shared util/private-files.ts (0600 in a 0700 directory, never through a
 * symbolic link); the printed lists are cut.
 */
import assert from 'node:assert/strict'
import {mkdirSync, mkdtempSync, readFileSync, statSync, symlinkSync, existsSync, readdirSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {cutLists} from '../../src/steps/verify/report.js'
import type {KeyReport, VerifyResult} from '../../src/steps/verify/types.js'

const keys = (n: number): KeyReport[] => Array.from({length: n}, (_, i) => ({key: {id: String(i)}, versions: {a: {id: String(i)}, b: null}}))

function result(n: number): VerifyResult {
  return {
    schemaVersion: 1,
    cluster: 'shop',
    status: 'divergent',
    nodes: [{name: 'a', reachable: true}, {name: 'b', reachable: true}],
    startLsn: {a: '0/1', b: '0/1'},
    settle: {rounds: 0, lagging: []},
    tables: [{table: 'public.t', status: 'divergent', nodes: ['a', 'b'], rows: {a: n, b: 0}, ranges: 1, differingRanges: 1, divergentCount: n, unsettledCount: 0, divergent: keys(n), unsettled: [], notes: []}],
    elapsedMs: 1,
  }
}

describe('verify report file', () => {
  it('long lists: the whole result in a 0600 file in a 0700 directory, the lists cut', async () => {
    const dir = path.join(mkdtempSync(path.join(os.tmpdir(), 'mmlite-vr-')), '.mmlite')
    const r = result(5)
    await cutLists(r, 2, dir)
    assert.ok(r.reportFile && existsSync(r.reportFile))
    assert.equal(statSync(r.reportFile).mode & 0o777, 0o600)
    assert.equal(statSync(dir).mode & 0o777, 0o700)
    assert.equal(JSON.parse(readFileSync(r.reportFile, 'utf8')).tables[0].divergent.length, 5)
    assert.equal(r.tables[0].divergent.length, 2)
    assert.equal(r.tables[0].divergentCount, 5)
  })

  it('short lists: no file', async () => {
    const dir = path.join(mkdtempSync(path.join(os.tmpdir(), 'mmlite-vr-')), '.mmlite')
    const r = result(2)
    await cutLists(r, 2, dir)
    assert.equal(r.reportFile, undefined)
    assert.equal(existsSync(dir), false)
  })

  it('never writes into a state directory that is a symbolic link', async () => {
    const base = mkdtempSync(path.join(os.tmpdir(), 'mmlite-vr-'))
    mkdirSync(path.join(base, 'elsewhere'))
    symlinkSync(path.join(base, 'elsewhere'), path.join(base, '.mmlite'))
    await assert.rejects(cutLists(result(5), 2, path.join(base, '.mmlite')), /symbolic link/)
    assert.deepEqual(readdirSync(path.join(base, 'elsewhere')), [])
  })
})
