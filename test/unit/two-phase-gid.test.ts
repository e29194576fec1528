import assert from 'node:assert/strict'
import type {Config} from '../../src/config/config.js'
import {preflightError} from '../../src/steps/preflight.js'
import {twoPhaseProblems} from '../../src/steps/tables/two-phase.js'
import {commitPreparedSql, gidPrefix, makeGid, parseGid, prepareSql, resolveSql} from '../../src/steps/tables/prepared.js'

const cfg = {cluster: 'shop', nodes: [{name: 'node1'}, {name: 'node2'}, {name: 'node3'}]} as unknown as Config

describe('two-phase commit: the gid names every participant\'s transaction', () => {
  it('round trip: node index and xid of each participant', () => {
    const gid = makeGid(cfg, 'ddl', new Map([['node1', '740'], ['node3', '9012']]))
    assert.equal(gid, 'mmlite:ddl:shop:0-740.2-9012')
    assert.deepEqual([...parseGid(cfg, 'ddl', gid)!], [['node1', '740'], ['node3', '9012']])
  })
  it('another operation, another cluster, or a node index outside mmlite.yaml is not ours', () => {
    const gid = makeGid(cfg, 'tables', new Map([['node2', '5']]))
    assert.equal(parseGid(cfg, 'ddl', gid), undefined)
    assert.equal(parseGid({...cfg, cluster: 'other'} as Config, 'tables', gid), undefined)
    assert.equal(parseGid(cfg, 'tables', `${gidPrefix('shop', 'tables')}7-5`), undefined)
    assert.equal(parseGid(cfg, 'tables', `${gidPrefix('shop', 'tables')}1-x`), undefined)
  })
  it('SQL quotes the gid as a literal', () => {
    assert.equal(prepareSql("mmlite:ddl:o'k:0-1"), "PREPARE TRANSACTION 'mmlite:ddl:o''k:0-1'")
    assert.equal(commitPreparedSql('g'), "COMMIT PREPARED 'g'")
    assert.equal(resolveSql({gid: 'g', decision: 'rollback', holders: ['node1'], participants: ['node1', 'node2']}), "ROLLBACK PREPARED 'g'")
  })
})

describe('adding tables requires two-phase commit on every node', () => {
  const caps = (x: Record<string, [number, number]>) => new Map(Object.entries(x).map(([n, [max, held]]) => [n, {max, held}]))
  it('max_prepared_transactions = 0 is refused per node, with the restart fix and why', () => {
    const p = twoPhaseProblems('public.items', caps({node1: [10, 0], node2: [0, 0], node3: [0, 0]}))
    assert.deepEqual(p.map(x => x.node), ['node2', 'node3'])
    assert.match(p[0].message, /^max_prepared_transactions = 0; adding public\.items needs it: .*a kill between one-phase commits would leave the tables published by some nodes only, which no re-run can finish/)
    assert.match(p[0].fix!, /^ALTER SYSTEM SET max_prepared_transactions = 10; then restart PostgreSQL on node2 \(a restart setting\)/)
    const e = preflightError(p)
    assert.equal(e.code, 11)
    assert.match(e.message, /nothing was changed/)
  })
  it('every slot held by other prepared transactions is refused; the slots of a killed activation it finishes first count as free', () => {
    const p = twoPhaseProblems('public.items', caps({node1: [2, 2], node2: [2, 1]}))
    assert.deepEqual(p.map(x => x.node), ['node1'])
    assert.match(p[0].message, /all 2 prepared-transaction slots .* are held by other prepared transactions/)
    assert.match(p[0].fix!, /pg_prepared_xacts.*ALTER SYSTEM SET max_prepared_transactions = 12;/)
    assert.deepEqual(twoPhaseProblems('public.items', caps({node1: [2, 2], node2: [2, 1]}), new Map([['node1', 1]])), [])
  })
})
