/** LSN helpers (src/db/lsn.ts): pg_lsn text ⇄ bigint, ordering, validation. */
import assert from 'node:assert/strict'
import {compareLsn, formatLsn, isLsn, parseLsn} from '../../src/db/lsn.js'

describe('LSNs', () => {
  it('parses the high and low word as hex, any case', () => {
    assert.equal(parseLsn('0/0'), 0n)
    assert.equal(parseLsn('1/0'), 1n << 32n)
    assert.equal(parseLsn('16/B374D848'), 0x16b374d848n)
    assert.equal(parseLsn('0/30003d8'), parseLsn('0/30003D8'))
    assert.equal(parseLsn('FFFFFFFF/FFFFFFFF'), 0xffffffffffffffffn)
  })

  it('formats as PostgreSQL does (%X/%X) and round-trips', () => {
    assert.equal(formatLsn(0n), '0/0')
    assert.equal(formatLsn(0x16b374d848n), '16/B374D848')
    assert.equal(formatLsn(1n << 32n), '1/0')
    for (const s of ['0/0', '0/1', '0/FFFFFFFF', '1/0', '16/B374D848', 'FFFFFFFF/FFFFFFFF']) {
      assert.equal(formatLsn(parseLsn(s)), s)
    }
    assert.equal(formatLsn(parseLsn('a/b')), 'A/B')
    assert.throws(() => formatLsn(-1n), /out of range/)
    assert.throws(() => formatLsn(1n << 64n), /out of range/)
  })

  it('orders numerically, not as text, across the hi/lo boundary', () => {
    assert.equal(compareLsn('0/FFFFFFFF', '1/0'), -1)
    assert.equal(compareLsn('1/0', '0/FFFFFFFF'), 1)
    assert.equal(compareLsn('2/0', '1/FFFFFFFF'), 1)
    assert.equal(compareLsn('0/FF', '1/0'), -1)
    assert.equal(compareLsn('0/9', '0/10'), -1)
    assert.equal(compareLsn('0/A0', '0/9F'), 1)
    assert.equal(compareLsn('0/A0000000', '0/9FFFFFFF'), 1)
    assert.equal(compareLsn('0/1A', '0/9'), 1)
    assert.equal(compareLsn('16/B374D848', '16/B374D848'), 0)
    assert.equal(compareLsn('A/1', 'a/1'), 0)
  })

  it('rejects anything that is not pg_lsn text, with a clear message', () => {
    for (const bad of ['', 'nope', 'x', '16B3748', '0/', '/0', '0/1/2', ' 0/1', '0/1 ', '123456789/0', '0/123456789', '0x1/0', "0/1'; DROP TABLE x; --"]) {
      assert.equal(isLsn(bad), false, bad)
      assert.throws(() => parseLsn(bad), /not an LSN: .*expected two hex numbers/, bad)
      assert.throws(() => compareLsn(bad, '0/0'), /not an LSN/, bad)
      assert.throws(() => compareLsn('0/0', bad), /not an LSN/, bad)
    }
    assert.equal(isLsn('16/B374D848'), true)
  })
})
