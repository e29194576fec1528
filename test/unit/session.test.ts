import assert from 'node:assert/strict'
import {parseConnInfo} from '../../src/db/conninfo.js'
import {sessionOptions} from '../../src/db/session.js'

describe('session options (startup packet)', () => {
  it('pins search_path last, after the defaults and the user options', () => {
    const o = sessionOptions(parseConnInfo("host=h options='-c search_path=public -c lock_timeout=5s'"), {}, {})
    assert.equal(o, '-c statement_timeout=10min -c lock_timeout=60s -c search_path=public -c lock_timeout=5s -c search_path=pg_catalog,pg_temp')
  })
  it('PGOPTIONS when the DSN has no options; MMLITE_*_TIMEOUT and per-session values', () => {
    assert.equal(
      sessionOptions(parseConnInfo('host=h'), {}, {PGOPTIONS: '-c work_mem=64MB', MMLITE_LOCK_TIMEOUT: '2s', MMLITE_STATEMENT_TIMEOUT: '0'}),
      '-c statement_timeout=0 -c lock_timeout=2s -c work_mem=64MB -c search_path=pg_catalog,pg_temp',
    )
    assert.match(sessionOptions(parseConnInfo('host=h'), {statementTimeout: 0}, {}), /^-c statement_timeout=0 -c lock_timeout=60s /)
  })
  it('refuses a malformed timeout (no injection into the options string)', () => {
    assert.throws(() => sessionOptions(parseConnInfo('host=h'), {}, {MMLITE_LOCK_TIMEOUT: '1s -c search_path=public'}), /invalid lock timeout/)
  })
})
