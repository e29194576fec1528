import assert from 'node:assert/strict'
import {lstatSync, mkdirSync, mkdtempSync, readFileSync, statSync, symlinkSync, writeFileSync, chmodSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {appendPrivate, atomicWritePrivate, privateDir} from '../../src/util/private-files.js'
import {changedSinceRead, noteState} from '../../src/util/state-files.js'

const mode = (p: string) => statSync(p).mode & 0o777

describe('private files', () => {
  let dir: string
  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'mmlite-pf-'))
  })

  it('state directory 0700 (an existing 0755 one is tightened), files 0600 whatever the umask', async () => {
    const old = process.umask(0o022)
    try {
      mkdirSync(path.join(dir, '.mmlite'), {mode: 0o755})
      chmodSync(path.join(dir, '.mmlite'), 0o755)
      await atomicWritePrivate(path.join(dir, '.mmlite/journal.json'), '{}', {privateDir: true})
      await appendPrivate(path.join(dir, '.mmlite/history.jsonl'), 'a\n')
      await appendPrivate(path.join(dir, '.mmlite/history.jsonl'), 'b\n')
      await atomicWritePrivate(path.join(dir, '.mmlite/skipped/x.sql'), 'SELECT 1', {privateDir: true})
      assert.equal(mode(path.join(dir, '.mmlite')), 0o700)
      assert.equal(mode(path.join(dir, '.mmlite/skipped')), 0o700)
      for (const f of ['journal.json', 'history.jsonl', 'skipped/x.sql']) assert.equal(mode(path.join(dir, '.mmlite', f)), 0o600, f)
      assert.equal(readFileSync(path.join(dir, '.mmlite/history.jsonl'), 'utf8'), 'a\nb\n')
    } finally {
      process.umask(old)
    }
  })

  it('never writes through a symbolic link', async () => {
    await privateDir(path.join(dir, '.mmlite'))
    const target = path.join(dir, 'victim')
    writeFileSync(target, 'keep')
    symlinkSync(target, path.join(dir, '.mmlite/history.jsonl'))
    await assert.rejects(appendPrivate(path.join(dir, '.mmlite/history.jsonl'), 'x'), /ELOOP|symbolic/)
    assert.equal(readFileSync(target, 'utf8'), 'keep')
    // the journal itself may be replaced by a link: rename replaces the link, the target is untouched
    symlinkSync(target, path.join(dir, '.mmlite/journal.json'))
    await atomicWritePrivate(path.join(dir, '.mmlite/journal.json'), '{}', {privateDir: true})
    assert.equal(readFileSync(target, 'utf8'), 'keep')
    assert.ok(!lstatSync(path.join(dir, '.mmlite/journal.json')).isSymbolicLink())
    // a state directory that is a link is refused
    symlinkSync(path.join(dir, '.mmlite'), path.join(dir, 'linked'))
    await assert.rejects(privateDir(path.join(dir, 'linked')), /symbolic link/)
  })

  it('changedSinceRead names a state file another process changed', async () => {
    const cfg = path.join(dir, 'mmlite.yaml')
    const f = path.join(dir, '.mmlite', 'journal.json')
    await atomicWritePrivate(f, 'a', {privateDir: true})
    writeFileSync(cfg, 'x')
    noteState(cfg, 'x')
    assert.equal(changedSinceRead(cfg), undefined)
    writeFileSync(f, 'b')
    assert.equal(changedSinceRead(cfg), f)
    await atomicWritePrivate(f, 'c')
    assert.equal(changedSinceRead(cfg), undefined)
    writeFileSync(cfg, 'y')
    assert.equal(changedSinceRead(cfg), cfg)
  })
})
