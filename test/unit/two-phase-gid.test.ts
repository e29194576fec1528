import assert from 'node:assert/strict'
import type {Config} from '../../src/config/config.js'
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
