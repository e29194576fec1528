/**
 * The rule for setting a new node's inbound origin (src/steps/add-node/origin.ts, issue #7.3):
 * set only while the subscription has never applied (0/0) or is at exactly the value set
 * before; kept when it applied past the recorded value; refused otherwise.
 */
import assert from 'node:assert/strict'
import {originDecision} from '../../src/steps/add-node/origin.js'

describe('add-node origin rule (originDecision)', () => {
  it('sets an origin that has never moved', () => {
    assert.deepEqual(originDecision('0/0', '0/3000060', undefined), {kind: 'set'})
    assert.deepEqual(originDecision('0/0', '0/3000060', '0/3000060'), {kind: 'set'})
  })
  it('keeps an origin already at the target', () => {
    assert.equal(originDecision('0/3000060', '0/3000060', '0/3000060').kind, 'keep')
  })
  it('never moves an origin backwards once the subscription applied past the recorded value', () => {
    const d = originDecision('0/3100000', '0/3000060', '0/3000060')
    assert.equal(d.kind, 'keep')
    assert.match((d as {why: string}).why, /never moves backwards/)
    // LSNs compare as numbers, not text ('0/9' < '0/10')
    assert.equal(originDecision('1/0', '0/FFFFFFFF', '0/FFFFFFFF').kind, 'keep')
  })
  it('refuses a subscription that applied without the start position being set, or sits before it', () => {
    assert.equal(originDecision('0/3100000', '0/3000060', undefined).kind, 'refuse')
    assert.equal(originDecision('0/2000000', '0/3000060', undefined).kind, 'refuse')
    assert.equal(originDecision('0/2000000', '0/3000060', '0/3000060').kind, 'refuse')
    assert.equal(originDecision('0/3100000', '0/3000060', '0/2000000').kind, 'refuse')
  })
})
