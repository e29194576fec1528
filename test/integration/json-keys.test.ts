/**
 * One key casing in every --json document (README "JSON output"): every command's JSON output,
 * walked recursively, has only camelCase keys (test/helpers/json-keys.ts; maps keyed by data,
 * a row's column names, are the documented exception).
 *
 * One real cluster (two PostgreSQL 18: native links with PG 18's conflict counters),
 * every command run with --json on it in a scenario that fills in the optional parts: a stuck
 * link (status `stuck`, skip-tx), the divergent row skipping leaves (verify, repair), ddl,
 * doctor, add-node and remove-node of a third node (PostgreSQL 16), error documents, and a
 * two-node demo. Each step also checks the rows it is about on every node.
 */
import assert from 'node:assert/strict'
import os from 'node:os'
import path from 'node:path'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'
import {badJsonKeys} from '../helpers/json-keys.js'

/** Keys breaking the convention, per command run (asserted empty at the end of each test: every command is reported). */
const problems: string[] = []

/** Run one command with --json; its document, its keys checked for the convention. */
async function json(args: string[], codes: number[] = [0], env: NodeJS.ProcessEnv = {}): Promise<Record<string, unknown>> {
  const r = await h.runCli([...args, '--json'], {timeoutMs: 300_000, env})
  assert.ok(codes.includes(r.code ?? -1), `mmlite ${args.join(' ')}: exit ${r.code}, expected ${codes.join('/')}\n${r.stdout}\n${r.stderr}`)
  const doc = h.parseJson(r)
  assert.equal(doc.schemaVersion, 1, `mmlite ${args.join(' ')}: schemaVersion`)
  for (const k of badJsonKeys(doc)) problems.push(`${args[0]} ${k}`)
  return doc
}

// node names with an underscore: a map keyed by node names that is not one of the documented ones fails the key check
const [N1, N2, N3] = ['east_1', 'west_2', 'north_3']

async function usersOn(s: LocalServer): Promise<string> {
  return JSON.stringify(await h.sql(s, 'SELECT id::int, name, updated_by FROM public.users ORDER BY id'))
}

describe('every --json output has camelCase keys only (real servers, real CLI)', function () {
  this.timeout(1_200_000)
  let servers: LocalServer[]
  let dir: string
  let cfg: string

  before(async () => {
    servers = await h.startServers([18, 18, 16])
    await h.createSchema(servers)
    dir = await h.tempDir()
    cfg = await h.writeConfig(dir, servers.slice(0, 2), {names: [N1, N2]})
  })
  after(() => stopAllStarted())

  it('the key walker finds snake_case, PascalCase and odd keys at any depth', () => {
    assert.deepEqual(badJsonKeys({okKey: 1, a: [{lag_bytes: 1}], b: {Nested: {x_y: 2}}, 'c-d': null}), ['$.a[]: "lag_bytes"', '$.b: "Nested"', '$.b.Nested: "x_y"', '$: "c-d"'])
    assert.deepEqual(badJsonKeys({schemaVersion: 1, links: [{lagBytes: 1, applyErrorCount: 0}]}), [])
    // the documented data maps: column names and node names are keys there
    const row = {updated_by: 'x', Name: 'y'}
    const verify = {startLsn: {node_1: '0/1'}, tables: [{rows: {node_1: 1}, divergent: [{key: {user_id: '1'}, versions: {node_1: row, node2: null}, committed: {node_1: null}}]}]}
    assert.deepEqual(badJsonKeys(verify), [])
    assert.deepEqual(badJsonKeys({script: {node_1: ['x']}, changes: [{key: {user_id: '1'}, before: row, after: row}], before: verify}), [])
    // ...but only there: the same names elsewhere are reported
    assert.deepEqual(badJsonKeys({before: {node_1: 1}, tables: [{versions: {a: {b_c: {d_e: 1}}}}]}), ['$.before: "node_1"', '$.tables[].versions.a: "b_c"', '$.tables[].versions.a.b_c: "d_e"'])
  })

  it('init, status, skip-tx, verify, repair, ddl, doctor, add-node, remove-node, errors', async () => {
    const [n1, n2, n3] = servers
    await json(['init', '-c', cfg, '--dry-run'])
    const init = await json(['init', '-c', cfg, '--yes'])
    assert.equal((init.links as unknown[]).length, 2)
    await json(['init', '-c', cfg, '--yes']) // nothing to do: the same shape
    await h.sql(n1, "INSERT INTO public.departments VALUES (1, 'a')")
    await h.sql(n1, "INSERT INTO public.users SELECT g, 1, 'u' || g, 'node1' FROM generate_series(1, 50) g")
    await h.waitConverged(servers.slice(0, 2), 'public.users', 50)
    const ok = await json(['status', '-c', cfg])
    assert.equal(ok.health, 'ok')

    // a stuck link node1→node2: id 900 exists on node2 only (written under an origin nothing sends on), then node1 writes it too
    await h.withClient(n2, async c => {
      await c.query(`SELECT pg_replication_origin_create('test_local')`)
      await c.query(`SELECT pg_replication_origin_session_setup('test_local')`)
      await c.query("INSERT INTO public.users VALUES (900, 1, 'local', 'node2')")
    })
    await h.sql(n1, "INSERT INTO public.users VALUES (900, 1, 'mine', 'node1')")
    await h.waitFor(async () => (await h.applyErrors(n2)) > 0, `${N1}→${N2} to fail on id 900`)
    const stuck = await json(['status', '-c', cfg], [2])
    const link = (stuck.links as Array<Record<string, unknown>>).find(l => l.from === N1 && l.to === N2)!
    assert.ok(link.stuck, JSON.stringify(link))
    await json(['skip-tx', '-c', cfg, '--dry-run'])
    const skipped = await json(['skip-tx', '-c', cfg, '--yes'])
    assert.equal(skipped.skipped, 1)
    await h.sql(n1, "INSERT INTO public.users VALUES (901, 1, 'after', 'node1')")
    // id 900 differs (each node keeps its own): wait for the row written after the skip
    await h.waitFor(async () => (await h.sql(n2, 'SELECT 1 FROM public.users WHERE id = 901')).length === 1, `id 901 on ${N2}`)

    const verify = await json(['verify', '-c', cfg], [2])
    assert.equal(verify.status, 'divergent')
    await json(['repair', '-c', cfg, '--from', N1, '--dry-run'])
    const repaired = await json(['repair', '-c', cfg, '--from', N1, '--yes'])
    assert.equal(repaired.applied, 1)
    assert.equal(await usersOn(n2), await usersOn(n1))
    await json(['verify', '-c', cfg])

    const stmt = 'ALTER TABLE public.users ADD COLUMN note text'
    await json(['ddl', stmt, '-c', cfg, '--dry-run'])
    await json(['ddl', stmt, '-c', cfg, '--yes'])
    await h.sql(n3, stmt)
    await json(['doctor', '-c', cfg, '--sample', '0'], [0, 1, 2])
    await json(['doctor', '-c', cfg, '--sample', '0', '--fix', '--dry-run'], [0, 1, 2])
    await json(['status', '-c', cfg, '--reset-errors', '--dry-run'])
    await json(['status', '-c', cfg, '--reset-errors', '--yes'], [0, 1, 2])

    await json(['add-node', N3, '--dsn', n3.dsn(), '-c', cfg, '--dry-run'])
    const added = await json(['add-node', N3, '--dsn', n3.dsn(), '-c', cfg, '--yes'])
    assert.ok(added.status)
    await h.sql(n3, "INSERT INTO public.users VALUES (902, 1, 'n3', 'node3')")
    await h.waitConverged(servers, 'public.users', 53)
    await json(['remove-node', N3, '-c', cfg, '--dry-run'])
    await json(['remove-node', N3, '-c', cfg, '--yes'])
    assert.equal(await usersOn(n2), await usersOn(n1))

    // error documents: a usage error, a configuration error, a refusal
    const err = await json(['status', '-c', cfg, '--no-such-flag'], [10])
    assert.equal(err.code, 'usage')
    await json(['status', '-c', path.join(dir, 'missing.yaml')], [10])
    await json(['ddl', 'DROP TABLE public.users', '-c', cfg, '--yes'], [10, 11])
    assert.deepEqual([...new Set(problems)], [], 'keys that are not camelCase')
  })

  it('demo', async () => {
    problems.length = 0
    const env = {MMLITE_DEMO_DIR: path.join(os.tmpdir(), `mmlite-demo-keys-${process.pid}`), MMLITE_CONFIG: undefined}
    const demo = await json(['demo', '--nodes', '2', '--pg', '16'], [0], env)
    assert.equal((demo.rows as {converged: boolean}).converged, true)
    assert.deepEqual([...new Set(problems)], [], 'keys that are not camelCase')
  })
})
