/**
 * remove-node's privilege preflight (src/steps/remove-node/privileges.ts): the exact GRANT
 * statements a non-superuser admin lacks, per node, quoted for the role.
 */
import assert from 'node:assert/strict'
import {originStatusGrants, originStatusProblems} from '../../src/steps/remove-node/privileges.js'

describe('remove-node preflight: origin-status privileges', () => {
  it('both missing: both GRANTs, in the order the README lists them', () => {
    assert.deepEqual(originStatusGrants({role: 'mmlite_admin', view: false, fn: false}), [
      'GRANT SELECT ON pg_catalog.pg_replication_origin_status TO "mmlite_admin";',
      'GRANT EXECUTE ON FUNCTION pg_catalog.pg_show_replication_origin_status() TO "mmlite_admin";',
    ])
  })

  it('only the missing one; none for a role that has both (a superuser has both)', () => {
    assert.deepEqual(originStatusGrants({role: 'a', view: true, fn: false}), ['GRANT EXECUTE ON FUNCTION pg_catalog.pg_show_replication_origin_status() TO "a";'])
    assert.deepEqual(originStatusGrants({role: 'a', view: false, fn: true}), ['GRANT SELECT ON pg_catalog.pg_replication_origin_status TO "a";'])
    assert.deepEqual(originStatusGrants({role: 'a', view: true, fn: true}), [])
  })

  it('a role name that needs quoting is quoted', () => {
    assert.match(originStatusGrants({role: 'Ops "Team"', view: false, fn: true})[0], /TO "Ops ""Team""";$/)
  })

  it('one problem per node lacking a grant, naming the role, the fix being the GRANTs', () => {
    const problems = originStatusProblems([
      {node: 'node1', privs: {role: 'adm', view: false, fn: false}},
      {node: 'node2', privs: {role: 'postgres', view: true, fn: true}},
      {node: 'node3', privs: {role: 'adm', view: true, fn: false}},
    ])
    assert.deepEqual(problems.map(p => [p.node, p.check]), [['node1', 'privileges'], ['node3', 'privileges']])
    assert.match(problems[0].message, /the connecting role adm cannot read pg_replication_origin_status/)
    assert.ok(problems[0].fix!.startsWith('GRANT SELECT ON pg_catalog.pg_replication_origin_status TO "adm"; GRANT EXECUTE ON FUNCTION pg_catalog.pg_show_replication_origin_status() TO "adm";'))
    assert.ok(problems[1].fix!.startsWith('GRANT EXECUTE ON FUNCTION pg_catalog.pg_show_replication_origin_status() TO "adm";  (as a superuser on node3)'))
  })
})
