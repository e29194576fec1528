/**
 * init's plugin probe (src/steps/preflight.ts): why creating a temporary slot with the output
 * plugin failed decides the fix. A timeout waiting for running transactions (slot creation waits
 * for them) is not a missing plugin; the error codes and messages are PostgreSQL's own (checked
 * on a real 15.x server).
 */
import assert from 'node:assert/strict'
import {classifyPluginProbeError} from '../../src/steps/preflight.js'

const pgError = (code: string, message: string) => Object.assign(new Error(message), {code})

describe('plugin probe: the cause and its fix', () => {
  it('statement timeout: waiting for running transactions, not "install the plugin"', () => {
    const p = classifyPluginProbeError('node1', pgError('57014', 'canceling statement due to statement timeout'))
    assert.equal(p.kind, 'timeout')
    assert.match(p.message, /waits until every transaction running on node1 has finished/)
    assert.match(p.fix!, /pg_stat_activity/)
    assert.match(p.fix!, /pg_prepared_xacts/)
    assert.doesNotMatch(p.fix!, /install/i)
  })

  it('lock timeout: the same cause', () => {
    const p = classifyPluginProbeError('node1', pgError('55P03', 'canceling statement due to lock timeout'))
    assert.equal(p.kind, 'timeout')
    assert.doesNotMatch(p.fix!, /make -C extension install/)
  })

  it('not listed in output_plugin_libraries: allow it (or --fix-settings), nothing to install', () => {
    const p = classifyPluginProbeError('node2', pgError('42501', 'library "mmlite" may not be used as an output plugin'))
    assert.equal(p.kind, 'not-allowed')
    assert.equal(p.check, 'output_plugin_libraries')
    assert.match(p.fix!, /output_plugin_libraries/)
    assert.match(p.fix!, /--fix-settings/)
    assert.doesNotMatch(p.fix!, /make -C extension install/)
  })

  it('not installed: the install command', () => {
    const p = classifyPluginProbeError('node3', pgError('58P01', 'could not access file "mmlite": No such file or directory'))
    assert.equal(p.kind, 'missing')
    assert.match(p.message, /cannot be used: it is not installed/)
    assert.match(p.fix!, /make -C extension install PG_CONFIG=.* on node3's server/)
  })

  it('installed but does not load (built for another major): rebuild for this server', () => {
    const p = classifyPluginProbeError('node3', pgError('XX000', 'incompatible library "/usr/lib/postgresql/16/lib/mmlite.so": version mismatch'))
    assert.equal(p.kind, 'unloadable')
    assert.match(p.fix!, /Rebuild and install it for this server's major version/)
  })

  it('anything else: the message as is, the log to look at', () => {
    const p = classifyPluginProbeError('node1', pgError('53400', 'all replication slots are in use'))
    assert.equal(p.kind, 'other')
    assert.match(p.message, /all replication slots are in use/)
  })
})
