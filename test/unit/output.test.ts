/**
 * Output conventions: status tables fit the terminal (80 columns: columns dropped, then
 * abbreviated; --columns picks them), errors are one line of problem and one of fix, --json
 * errors are structured, oclif's parse errors become usage errors (exit 10), colour follows
 * NO_COLOR / --no-color.
 */
import assert from 'node:assert/strict'
import {Errors} from '@oclif/core'
import chalk, {Chalk} from 'chalk'
import {renderStatus} from '../../src/ui/status-view.js'
import {asMmliteError, errorDocument, errorLines} from '../../src/ui/base-command.js'
import {colorEnabled, setupColor, JSON_SCHEMA_VERSION} from '../../src/ui/output.js'
import {MmliteError, ExitCode} from '../../src/errors.js'
import type {LinkStatus, StatusResult} from '../../src/cluster/status.js'

const ANSI = /\x1b\[[0-9;]*m/g
const visible = (s: string) => s.replace(ANSI, '')

function link(from: string, to: string, extra: Partial<LinkStatus> = {}): LinkStatus {
  return {
    from,
    to,
    mechanism: 'native',
    status: 'ok',
    reasons: [],
    subscriptionEnabled: true,
    workerRunning: true,
    slotActive: true,
    walStatus: 'reserved',
    lagBytes: 123456789,
    lagSeconds: 1.5,
    retainedBytes: 987654321,
    lastMsgAgeSeconds: 12.5,
    applyErrorCount: 3,
    syncErrorCount: 0,
    ...extra,
  }
}

function result(): StatusResult {
  const names = ['warehouse_east', 'warehouse_west', 'headquarters']
  const links: LinkStatus[] = []
  for (const a of names) for (const b of names) if (a !== b) links.push(link(a, b, {conflicts: {insertExists: 2}, stuck: a === names[0] ? {xid: '1', finalLsn: '0/DEADBEEF'} as never : undefined}))
  return {
    cluster: 'shop',
    health: 'ok',
    checkedAt: '2026-01-01T00:00:00.000Z',
    nodes: names.map(n => ({name: n, target: `${n}.db.internal.example.com:5432/application_database`, reachable: true, version: '16.4', versionNum: 160004})),
    links,
    unfinished: [],
  }
}

describe('output conventions', () => {
  it('status tables are wider than 80 columns unlimited, and fit 80 (and 60) columns on a terminal', () => {
    const full = renderStatus(result())
    assert.ok(Math.max(...full.map(l => visible(l).length)) > 100, 'the full links table is wide')
    for (const width of [80, 60]) {
      const lines = renderStatus(result(), {width}).filter(l => l.startsWith('+') || l.startsWith('|'))
      for (const l of lines) assert.ok(visible(l).length <= width, `${visible(l).length} > ${width}: ${visible(l)}`)
      const links = renderStatus(result(), {width}).find(l => l.startsWith('| Link'))!
      assert.match(links, /Link/)
      assert.match(links, /Status/)
      assert.doesNotMatch(links, /Retained/, 'Retained is dropped first')
    }
  })

  it('--columns shows exactly the chosen link columns', () => {
    const header = renderStatus(result(), {columns: ['lag', 'Status']}).find(l => l.startsWith('| Link'))!
    assert.deepEqual(header.split('|').map(s => s.trim()).filter(Boolean), ['Link', 'Lag', 'Status'])
  })

  it('errors: one line of problem, one of fix; --json: {schemaVersion, code, exitCode, message, fix, details}', () => {
    const e = new MmliteError('the lock is held\nby pid 12', {code: ExitCode.Locked, suggestions: ['Wait for it,', 'or kill it.']})
    assert.deepEqual(errorLines(e, false), ['error: the lock is held by pid 12', 'fix: Wait for it, or kill it.'])
    assert.match(errorLines(e, true)[0], ANSI, 'coloured on a terminal')
    assert.deepEqual(errorDocument(e), {schemaVersion: JSON_SCHEMA_VERSION, code: 'locked', exitCode: 12, message: 'the lock is held\nby pid 12', fix: 'Wait for it, or kill it.', details: []})
  })

  it("oclif's parse errors become usage errors: exit 10, one line, the fix names --help", () => {
    const e = asMmliteError(new Errors.CLIError('Missing 1 required arg:\nname  Name of the new node\nSee more help with --help'), 'add-node')
    assert.equal(e.code, ExitCode.Config)
    const doc = errorDocument(e)
    assert.equal(doc.code, 'usage')
    assert.equal(doc.exitCode, 10)
    assert.equal(doc.message, 'Missing 1 required arg: name Name of the new node')
    assert.match(String(doc.fix), /mmlite add-node --help/)
    const other = errorDocument(asMmliteError(new Error('boom')))
    assert.deepEqual([other.code, other.exitCode], ['failed', 2])
  })

  it('NO_COLOR and --no-color turn colour off', () => {
    const saved = process.env.NO_COLOR
    const level = chalk.level
    try {
      process.env.NO_COLOR = '1'
      assert.equal(colorEnabled(), false)
      delete process.env.NO_COLOR
      assert.equal(colorEnabled(), true)
      setupColor(['status', '--no-color'])
      assert.equal(colorEnabled(), false)
      assert.equal(new Chalk({level: 1}).red('x') !== 'x', true, 'sanity: chalk colours at level 1')
    } finally {
      setupColor([])
      chalk.level = level
      if (saved === undefined) delete process.env.NO_COLOR
      else process.env.NO_COLOR = saved
    }
  })
})
