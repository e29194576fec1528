/**
 * status' memory of error counts (src/cluster/error-history.ts): a rise is remembered with its
 * time and warns within the window only; a reset forgets it; the file round-trips.
 */
import assert from 'node:assert/strict'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {advanceHistory, readHistory, recentRise, writeHistory} from '../../src/cluster/error-history.js'

const t = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s))

describe('error history (status warns on recent errors only)', () => {
  it('first sight: errors count as risen now; none: nothing', () => {
    const h = advanceHistory({}, new Map([['a->b', {apply: 1, sync: 0}], ['b->a', {apply: 0, sync: 0}]]), t(0))
    assert.deepEqual(h, {'a->b': {apply: 1, sync: 0, changedAt: t(0).toISOString()}, 'b->a': {apply: 0, sync: 0, changedAt: null}})
    assert.equal(recentRise(h['a->b'], t(3), 4), 3)
    assert.equal(recentRise(h['a->b'], t(5), 4), undefined, 'outside the window: no warning')
    assert.equal(recentRise(h['b->a'], t(1), 4), undefined)
  })
  it('unchanged counts keep the time of the rise; a new rise moves it; a reset forgets it', () => {
    let h = advanceHistory({}, new Map([['a->b', {apply: 1, sync: 0}]]), t(0))
    h = advanceHistory(h, new Map([['a->b', {apply: 1, sync: 0}]]), t(10))
    assert.equal(h['a->b'].changedAt, t(0).toISOString())
    assert.equal(recentRise(h['a->b'], t(10), 4), undefined)
    h = advanceHistory(h, new Map([['a->b', {apply: 1, sync: 1}]]), t(20))
    assert.equal(recentRise(h['a->b'], t(21), 4), 1)
    h = advanceHistory(h, new Map([['a->b', {apply: 0, sync: 0}]]), t(22))
    assert.deepEqual(h['a->b'], {apply: 0, sync: 0, changedAt: null})
    // links not seen this time (node unreachable) keep their entry
    assert.deepEqual(advanceHistory(h, new Map(), t(30)), h)
  })
  it('round-trips through .mmlite/status-errors.json; an unreadable file is an empty history', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'mmlite-eh-'))
    try {
      const cfg = path.join(dir, 'mmlite.yaml')
      assert.deepEqual(await readHistory(cfg), {})
      const h = advanceHistory({}, new Map([['a->b', {apply: 2, sync: 0}]]), t(0))
      await writeHistory(cfg, h)
      assert.deepEqual(await readHistory(cfg), h)
    } finally {
      rmSync(dir, {recursive: true, force: true})
    }
  })
})
