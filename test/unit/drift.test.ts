import assert from 'node:assert/strict'
import {compareShapes, type TableShape} from '../../src/cluster/drift.js'
import {makeTableName} from '../../src/config/tables.js'

const shape = (cols: Array<[string, string]>, pk: string[] = ['id'], ri = 'default'): TableShape => ({columns: new Map(cols), pk, replicaIdentity: ri})

describe('drift: one comparison of replicated tables across nodes', () => {
  const t = [makeTableName('public', 'users')]
  const base = shape([['id', 'bigint'], ['name', 'text']])
  it('identical tables (column order aside) are no drift; a missing table is not drift', () => {
    const shapes = new Map([
      ['n1', [base]],
      ['n2', [shape([['name', 'text'], ['id', 'bigint']])]],
      ['n3', [null]],
    ])
    assert.deepEqual(compareShapes(t, shapes), [])
  })
  it('names the table, the nodes and every difference against the first node that has it', () => {
    const shapes = new Map([
      ['n1', [null]],
      ['n2', [base]],
      ['n3', [shape([['id', 'integer'], ['name', 'text'], ['extra', 'integer']], [], 'full')]],
    ])
    assert.deepEqual(compareShapes(t, shapes), [
      {
        table: 'public.users',
        nodes: ['n2', 'n3'],
        difference: 'n3 has extra integer; column id is bigint on n2 but integer on n3; primary key (id) on n2 but none on n3; replica identity default on n2 but full on n3',
      },
    ])
  })
})
