import assert from 'node:assert/strict'
import {classify, type NodeState, type SubState} from '../../src/steps/tables/state.js'

const k = (t: string) => JSON.stringify(['public', t])
const sub = (from: string, to: string, rels: string[], over: Partial<SubState> = {}): SubState => ({
  name: `shop_${from}_${to}`, from, to, exists: true, enabled: true, pubs: ['shop'], rels: new Set(rels.map(k)), ...over,
})
function state(shop: Record<string, string[]>, rels: Record<string, string[]>, stage: Record<string, string[]> = {}): Map<string, NodeState> {
  const names = Object.keys(shop)
  return new Map(
    names.map(n => [
      n,
      {
        shop: new Set(shop[n].map(k)),
        stage: stage[n] ? new Set(stage[n].map(k)) : null,
        subs: names.filter(m => m !== n).map(m => sub(m, n, rels[n] ?? [])),
      },
    ]),
  )
}

describe('tables: what the reconcile has to do', () => {
  it('nothing when every node publishes and every subscription knows the tables', () => {
    const w = classify([k('a')], state({n1: ['a'], n2: ['a']}, {n1: ['a'], n2: ['a']}))
    assert.deepEqual([w.adds, w.removes, w.broken, w.partial], [[], [], [], []])
  })
  it('a new table is added; a table gone from the file is removed', () => {
    const w = classify([k('a'), k('b')], state({n1: ['a', 'c'], n2: ['a', 'c']}, {n1: ['a', 'c'], n2: ['a', 'c']}))
    assert.deepEqual(w.adds, [k('b')])
    assert.deepEqual(w.removes, [k('c')])
  })
  it('published but unknown to a subscription (what init did before): broken, re-added', () => {
    const w = classify([k('a'), k('b')], state({n1: ['a', 'b'], n2: ['a', 'b']}, {n1: ['a'], n2: ['a', 'b']}))
    assert.deepEqual(w.broken, [k('b')])
    assert.deepEqual(w.adds, [k('b')])
  })
  it('published on some nodes although every subscription knows it: partial (a kill between the activating commits)', () => {
    const w = classify([k('a'), k('b')], state({n1: ['a', 'b'], n2: ['a']}, {n1: ['a', 'b'], n2: ['a', 'b']}))
    assert.deepEqual(w.partial, [k('b')])
  })
  it('a table left in the announce publication is removed when it left the file; the announcement is emptied', () => {
    const w = classify([k('a')], state({n1: ['a'], n2: ['a']}, {n1: ['a'], n2: ['a']}, {n1: ['x'], n2: []}))
    assert.deepEqual(w.removes, [k('x')])
    assert.equal(w.stageLeft, true)
  })
  it('an incomplete mesh is left to init', () => {
    const s = state({n1: ['a'], n2: ['a']}, {})
    s.get('n2')!.subs[0].exists = false
    assert.equal(classify([k('a')], s).meshComplete, false)
  })
})
