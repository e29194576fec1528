/**
 * The per-node commits of the table activation (`init` adding a table) and of `mmlite ddl`,
 * killed (SIGKILL of the CLI, from inside its per-node commit loop) after the first node's
 * PREPARE, after every node's PREPARE, and after the first node's COMMIT PREPARED; then
 * re-run. Servers allow prepared transactions (max_prepared_transactions = 10), so the
 * commits are two-phase: a node that has not committed yet keeps its transaction prepared,
 * locks included, and the re-run finishes it.
 *
 * Every node keeps writing to public.users and to the table concerned throughout. Checked:
 * between the kill and the re-run no link fails (no apply error on any node); after the
 * re-run every node holds exactly the acknowledged writes of every table, the seeded rows of
 * the new table included, and no prepared transaction is left. `mmlite doctor` reports the
 * prepared transactions a kill after the first COMMIT PREPARED left (critical on each node,
 * naming the command to re-run) and nothing once the re-run finished. PostgreSQL 16, 17 and 18
 * (native origin = none links).
 */
import assert from 'node:assert/strict'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'
import {WriteLoad} from '../helpers/load.js'
import {TableLoad, rerunUnderLoad, setTables} from '../helpers/table-load.js'
import type {DoctorResult} from '../../src/steps/doctor/doctor.js'

async function prepared(servers: LocalServer[]): Promise<string[]> {
  const r = await Promise.all(servers.map(s => h.sql<{gid: string}>(s, 'SELECT gid FROM pg_prepared_xacts')))
  return r.flatMap((x, i) => x.map(g => `${servers[i].name}: ${g.gid}`))
}

async function published(s: LocalServer, table: string): Promise<boolean> {
  const [schema, name] = table.split('.')
  // pg_publication_rel: the view pg_publication_tables would wait on a table a prepared ddl holds locked
  const r = await h.sql(
    s,
    "SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid JOIN pg_class c ON c.oid = pr.prrelid WHERE p.pubname = 'shop' AND c.relnamespace = $1::regnamespace AND c.relname = $2",
    [schema, name],
  )
  return r.length === 1
}

async function hasColumn(s: LocalServer, table: string, col: string): Promise<boolean> {
  return (await h.sql(s, 'SELECT 1 FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $2 AND NOT attisdropped', [table, col])).length === 1
}

/** doctor's prepared-transaction findings: severity, node, fix */
async function doctorPrepared(cfg: string): Promise<Array<{severity: string; node: string | null; object: string; fix: string}>> {
  const r = await h.runCli(['doctor', '-c', cfg, '--json', '--sample', '0'])
  return h.parseJson<DoctorResult>(r).findings.filter(f => f.check === 'prepared')
}

/** doctor reports the killed run's prepared transaction as critical on each node still holding it, naming the command that finishes it */
async function doctorSeesLeftovers(cfg: string, nodes: string[], fix: RegExp): Promise<void> {
  let last: Awaited<ReturnType<typeof doctorPrepared>> = []
  // (the killed run's lock sessions end a moment after it: until then the transaction counts as in flight)
  await h.waitFor(async () => (last = await doctorPrepared(cfg)).filter(f => f.severity === 'critical').length === nodes.length, `doctor to report the prepared transactions on ${nodes.join(', ')}`).catch(e => {
    throw new Error(`${(e as Error).message}; doctor said: ${JSON.stringify(last)}`)
  })
  assert.deepEqual(last.map(f => [f.severity, f.node]), nodes.map(n => ['critical', n]), JSON.stringify(last))
  for (const f of last) {
    assert.match(f.object, /^prepared transaction mmlite:(tables|ddl):shop:/)
    assert.match(f.fix, fix)
  }
}

async function noApplyErrors(servers: LocalServer[]): Promise<void> {
  for (const s of servers) assert.equal(await h.applyErrors(s), 0, `apply errors on ${s.name}`)
}

/** every subscription of every node has its apply worker running (none failed and is restarting) */
async function linksUp(servers: LocalServer[]): Promise<void> {
  for (const s of servers) {
    const r = await h.sql<{n: number; up: number}>(s, "SELECT count(*)::int AS n, count(st.pid)::int AS up FROM pg_subscription sub LEFT JOIN pg_stat_subscription st ON st.subid = sub.oid AND st.relid IS NULL WHERE sub.subname LIKE 'shop%'")
    assert.deepEqual(r[0], {n: 2, up: 2}, `${s.name}: both inbound links have a running apply worker`)
  }
}

describe('tables and ddl: killed between the nodes\' commits (two-phase), then re-run', function () {
  let servers: LocalServer[]
  let cfg: string
  let tables = ['public.departments', 'public.users']
  const writers = () => servers.map((s, i) => ({label: `node${i + 1}`, server: s, index: i + 1}))
  before(async () => {
    servers = await h.startServers([16, 17, 18], 'node', {max_prepared_transactions: 10})
    await h.createSchema(servers)
    cfg = await h.writeConfig(await h.tempDir(), servers)
    const r = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(r.code, 0, r.stderr + r.stdout)
  })
  after(() => stopAllStarted())

  const tablePoints = ['tables-activate:prepared-1', 'tables-activate:prepared-all', 'tables-activate:committed-1']
  for (const [round, point] of tablePoints.entries()) {
    it(`tables: killed at ${point}, links keep streaming, the re-run finishes; every node holds the same rows`, async () => {
      const table = `public.kill_${round}`
      await Promise.all(servers.map(s => h.sql(s, `CREATE TABLE ${table} (id bigint PRIMARY KEY, node text, v int)`)))
      // seeded on the last node (the only one with rows): the new table's --source by default
      await h.sql(servers[2], `INSERT INTO ${table} SELECT g, 'seed', g FROM generate_series(1, 2000) g`)
      const usersBefore = (await h.tableDigest(servers[0], 'public.users')).count
      const users = new WriteLoad().start(writers().map(w => ({...w, index: (round + 1) * 10 + w.index})))
      const items = new TableLoad(table).start(writers())
      await rerunUnderLoad(servers, {users, usersBefore, items, baseRows: 2000}, async () => {
        await items.progress(5)
        tables = [...tables, table]
        await setTables(cfg, tables)
        const killed = await h.runCli(['init', '-c', cfg, '--yes'], {env: {MMLITE_FAULT_KILL_AFTER: point}})
        assert.equal(killed.signal, 'SIGKILL', `expected the run to die at ${point}\n${killed.stdout}\n${killed.stderr}`)
        const left = await prepared(servers)
        const pub = await Promise.all(servers.map(s => published(s, table)))
        if (point.endsWith('committed-1')) {
          assert.deepEqual(pub, [true, false, false], `node1 committed, the others not: ${left.join(', ')}`)
          assert.equal(left.length, 2, `node2 and node3 still prepared: ${left.join(', ')}`)
          await doctorSeesLeftovers(cfg, ['node2', 'node3'], /^Re-run `mmlite init`/)
        } else {
          assert.deepEqual(pub, [false, false, false])
          assert.equal(left.length, point.endsWith('prepared-1') ? 1 : 3, left.join(', '))
        }
        // node1's writers (and users' on every node) go on; no link fails meanwhile
        await new Promise(r => setTimeout(r, 1500))
        await noApplyErrors(servers)
        await linksUp(servers)

        const dry = await h.runCli(['init', '-c', cfg, '--dry-run', '--json'])
        assert.equal(dry.code, 0, dry.stderr + dry.stdout)
        const sqls = h.parseJson<{steps: Array<{id: string; sql: Array<{node: string; sql: string}>}>}>(dry).steps.flatMap(s => s.sql.map(x => `${x.node}: ${x.sql}`))
        if (point.endsWith('prepared-1')) assert.ok(sqls.some(s => /^node1: ROLLBACK PREPARED 'mmlite:/.test(s)), sqls.join('\n'))
        else assert.ok(sqls.some(s => /^node2: COMMIT PREPARED 'mmlite:/.test(s)) && sqls.some(s => /^node3: COMMIT PREPARED 'mmlite:/.test(s)), sqls.join('\n'))
      }, ['init', '-c', cfg, '--yes'])
      await noApplyErrors(servers)
      assert.deepEqual(await prepared(servers), [], 'no prepared transaction left')
      assert.deepEqual(await doctorPrepared(cfg), [], 'doctor: no prepared transaction left')
      assert.deepEqual(await Promise.all(servers.map(s => published(s, table))), [true, true, true])
      const idle = await h.runCli(['init', '-c', cfg, '--yes'])
      assert.match(idle.stdout, /already initialized/)
    })
  }

  /** a replicated table of its own for the ddl tests (created once, here, so each test runs alone too) */
  async function ddlTable(): Promise<string> {
    const table = 'public.ddl_t'
    if (await published(servers[0], table)) return table
    await Promise.all(servers.map(s => h.sql(s, `CREATE TABLE ${table} (id bigint PRIMARY KEY, node text, v int)`)))
    tables = [...tables, table]
    await setTables(cfg, tables)
    const r = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(r.code, 0, r.stderr + r.stdout)
    return table
  }

  const ddlPoints = ['ddl-apply:prepared-1', 'ddl-apply:committed-1']
  for (const [round, point] of ddlPoints.entries()) {
    it(`ddl: killed at ${point} while every node writes, links keep streaming, the re-run finishes; writers use the new column; converged`, async () => {
      const table = await ddlTable()
      const col = `note_${round}`
      const stmt = `ALTER TABLE ${table} ADD COLUMN ${col} text`
      const before = (await h.tableDigest(servers[0], table)).count
      const usersBefore = (await h.tableDigest(servers[0], 'public.users')).count
      const users = new WriteLoad().start(writers().map(w => ({...w, index: (round + 5) * 10 + w.index})))
      const items = new TableLoad(table).start(writers().map(w => ({...w, index: (round + 5) * 10 + w.index})))
      await rerunUnderLoad(servers, {users, usersBefore, items, baseRows: before}, async () => {
        await items.progress(5)
        const killed = await h.runCli(['ddl', '-c', cfg, stmt, '--yes'], {env: {MMLITE_FAULT_KILL_AFTER: point}})
        assert.equal(killed.signal, 'SIGKILL', `expected the run to die at ${point}\n${killed.stdout}\n${killed.stderr}`)
        const cols = await Promise.all(servers.map(s => hasColumn(s, table, col)))
        assert.deepEqual(cols, point.endsWith('committed-1') ? [true, false, false] : [false, false, false])
        if (point.endsWith('committed-1')) await doctorSeesLeftovers(cfg, ['node2', 'node3'], new RegExp(`^Re-run the same \`mmlite ddl …\` command \\(its statements: ${stmt}\\)`))
        // node1 (if committed) goes on writing rows that carry the new column: no link fails
        await items.progress(5)
        await new Promise(r => setTimeout(r, 1500))
        await noApplyErrors(servers)
        await linksUp(servers)
      }, ['ddl', '-c', cfg, stmt, '--yes'], async () => {
        for (const s of servers) assert.ok(await hasColumn(s, table, col), `${s.name} has ${col}`)
        items.useColumn(col, "'w-' || ($3::int)::text")
      })
      const notes = await Promise.all(servers.map(s => h.sql<{n: number}>(s, `SELECT count(*)::int AS n FROM ${table} WHERE ${col} LIKE 'w-%'`)))
      assert.ok(notes[0][0].n > 0 && notes.every(x => x[0].n === notes[0][0].n), `rows written with the new column everywhere: ${JSON.stringify(notes)}`)
      await noApplyErrors(servers)
      assert.deepEqual(await prepared(servers), [], 'no prepared transaction left')
      assert.deepEqual(await doctorPrepared(cfg), [], 'doctor: no prepared transaction left')
    })
  }

  it('ddl: --dry-run shows the two-phase commit per node; a statement failing on one node rolls every node back (prepared ones too); links keep streaming', async () => {
    const table = await ddlTable()
    const stmt = `ALTER TABLE ${table} ADD COLUMN dry int`
    const dry = await h.runCli(['ddl', '-c', cfg, stmt, '--dry-run', '--json'])
    const apply = h.parseJson<{steps: Array<{id: string; sql: Array<{node: string; sql: string}>}>}>(dry).steps.find(x => x.id === 'ddl-apply')!
    const gid = "'mmlite:ddl:shop:<index>-<xid> of each node'"
    for (const n of ['node1', 'node2', 'node3']) {
      assert.deepEqual(
        apply.sql.filter(x => x.node === n).map(x => x.sql),
        ['BEGIN', 'SELECT pg_catalog.txid_current()::pg_catalog.text AS xid', "SET LOCAL lock_timeout = '60000ms'", stmt, `PREPARE TRANSACTION ${gid}`, '-- once every node has prepared, node by node:', `COMMIT PREPARED ${gid}`],
      )
    }
    await h.sql(servers[1], 'CREATE TABLE public.only_on_node2 (id int)')
    const r = await h.runCli(['ddl', '-c', cfg, `ALTER TABLE ${table} ADD COLUMN never int; CREATE TABLE public.only_on_node2 (id int)`, '--yes'])
    assert.equal(r.code, 2, r.stderr + r.stdout)
    assert.match(r.stderr, /node node2: .*already exists.*rolled back on every node/)
    for (const s of servers) assert.equal(await hasColumn(s, table, 'never'), false, `${s.name} has no column never`)
    assert.deepEqual(await prepared(servers), [])
    await h.sql(servers[0], `INSERT INTO ${table} (id, node, v) VALUES (-1, 'after', 1)`)
    await h.waitConverged(servers, table, (await h.tableDigest(servers[0], table)).count)
    await noApplyErrors(servers)
  })
})
