import assert from 'node:assert/strict'
import {recordEnd} from '../../src/steps/verify/settle.js'
import {differingRanges} from '../../src/steps/verify/ranges.js'
import {differingKeys} from '../../src/steps/verify/rows.js'
import {verifyExitCode} from '../../src/steps/verify/report.js'

describe('verify units', () => {
  it('recordEnd: an insert position just past a page header is the page boundary', () => {
    const seg = 16 * 1024 * 1024
    assert.equal(recordEnd('0/2000018', 8192, seg), '0/2000000') // 24 into a page
    assert.equal(recordEnd('0/1000028', 8192, seg), '0/1000000') // 40 into a segment's first page
    assert.equal(recordEnd('0/2002028', 8192, seg), '0/2002028') // 40 into another page: a real record end
    assert.equal(recordEnd('0/2000030', 8192, seg), '0/2000030')
  })
  it('differingRanges: a range missing on a node differs, equal ones do not', () => {
    const a = new Map([[0, {count: '2', sum: '5'}], [1, {count: '1', sum: '7'}]])
    const b = new Map([[0, {count: '2', sum: '5'}], [2, {count: '1', sum: '7'}]])
    assert.deepEqual(differingRanges([a, b]), [1, 2])
    assert.deepEqual(differingRanges([a, new Map(a)]), [])
  })
  it('differingKeys: absent on one node, or another digest', () => {
    const v = (d: string) => ({digest: d, xmin: '1'})
    const n1 = new Map([['["1"]', v('a')], ['["2"]', v('b')], ['["3"]', v('c')]])
    const n2 = new Map([['["1"]', v('a')], ['["2"]', v('x')], ['["4"]', v('d')]])
    assert.deepEqual(differingKeys([n1, n2]).sort(), ['["2"]', '["3"]', '["4"]'])
  })
  it('exit codes: 0 consistent, 1 unsettled, 2 divergent, 3 could not compare', () => {
    assert.deepEqual((['consistent', 'unsettled', 'divergent', 'error'] as const).map(verifyExitCode), [0, 1, 2, 3])
  })
})
