/**
 * `mmlite skip-tx` and stuck links in `status`, on real servers and the real CLI:
 *
 *  - PG 15 (mmlite plugin; init --disable-on-error) and PG 18 (native; subscriptions retrying
 *    forever), 3 nodes: a duplicate key made by pausing a link and inserting the same key on both
 *    ends. The three links that stop are stuck in `status` (exit 2) with the right transactions;
 *    --dry-run changes nothing; skip-tx --yes skips exactly those transactions (xid, table, key),
 *    re-enables what disable_on_error stopped, the links stream again, rows written before and
 *    after the conflict arrive, the audit file and the re-apply SQL hold the skipped changes.
 *  - PG 18: bad, good, bad, good, bad, good on one link: --max 2 skips the first two bad ones only
 *    and reports the third; the forced origin-advance method (what 14 and older get) skips the third.
 *  - PG 14 (npm binaries), one-way pgoutput link built by hand: the origin-advance path, exact,
 *    with the logged error (logging_collector on).
 *  - Nothing stuck: exit 0, nothing changes.
 */
import assert from 'node:assert/strict'
import {existsSync, readFileSync} from 'node:fs'
import path from 'node:path'
import {stopAllStarted, type LocalServer, type PgMajor} from '../../src/local/server.js'
import type {StatusResult} from '../../src/cluster/status.js'
import type {SkipTxResult} from '../../src/steps/skip-tx.js'
import * as h from '../helpers/cluster.js'

const sub = (from: number, to: number) => `shop_node${from}_node${to}`

interface SubState {
  subname: string
  enabled: boolean
  skiplsn: string | null
  origin: string | null
}

/** Every subscription of the cluster on every node: enabled, skip LSN (15+), origin progress. */
async function subStates(servers: LocalServer[]): Promise<Record<string, SubState[]>> {
  const out: Record<string, SubState[]> = {}
  for (const s of servers) {
    out[s.name] = await h.sql<SubState>(
      s,
      `SELECT s.subname, s.subenabled AS enabled, ${s.major >= 15 ? 's.subskiplsn::text' : 'NULL::text'} AS skiplsn,
              (SELECT remote_lsn::text FROM pg_replication_origin_status o WHERE o.external_id = 'pg_' || s.oid) AS origin
         FROM pg_subscription s WHERE s.subname LIKE 'shop%' ORDER BY 1`,
    )
  }
  return out
}

/** Insert one users row in its own transaction; its xid. */
async function insertTx(s: LocalServer, id: number, name: string, opts: {localOnly?: boolean} = {}): Promise<number> {
  return h.withClient(s, async c => {
    if (opts.localOnly) {
      // tagged with a replication origin: no node sends it on (a row only this node has)
      await c.query(`SELECT pg_replication_origin_create('test_local') WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = 'test_local')`)
      await c.query(`SELECT pg_replication_origin_session_setup('test_local')`)
    }
    await c.query('BEGIN')
    await c.query('INSERT INTO public.users (id, dept, name, updated_by) VALUES ($1, 1, $2, $3)', [id, name, s.name])
    const x = (await c.query<{x: string}>('SELECT txid_current()::text AS x')).rows[0].x
    await c.query('COMMIT')
    return Number(x)
  })
}

async function rowsOf(s: LocalServer): Promise<Array<[number, string]>> {
  const r = await h.sql<{id: string; updated_by: string}>(s, 'SELECT id::text, updated_by FROM public.users ORDER BY id')
  return r.map(x => [Number(x.id), x.updated_by])
}

/** The subscription keeps failing: disabled by disable_on_error, or apply errors counted (15+) / worker restarting. */
async function waitFailing(s: LocalServer, name: string): Promise<void> {
  await h.waitFor(async () => {
    const r = await h.sql<{enabled: boolean; errors: number}>(
      s,
      `SELECT s.subenabled AS enabled, coalesce((SELECT apply_error_count FROM pg_stat_subscription_stats ss WHERE ss.subid = s.oid), 0)::int AS errors
         FROM pg_subscription s WHERE s.subname = $1`,
      [name],
    )
    return r[0] && (!r[0].enabled || r[0].errors > 0)
  }, `${name} on ${s.name} to fail`)
}

async function waitStreaming(s: LocalServer, name: string): Promise<void> {
  await h.waitFor(async () => {
    const r = await h.sql<{ok: boolean}>(
      s,
      `SELECT s.subenabled AND EXISTS (SELECT 1 FROM pg_stat_subscription st WHERE st.subid = s.oid AND st.pid IS NOT NULL) AS ok
         FROM pg_subscription s WHERE s.subname = $1`,
      [name],
    )
    return Boolean(r[0]?.ok)
  }, `${name} on ${s.name} to stream`)
}

function auditLines(dir: string): Array<Record<string, unknown> & {xid: number; from: string; to: string; finalLsn: string; reapplySql: string; changes: Array<{op: string; table: string; key: Record<string, string>}>}> {
  const f = path.join(dir, '.mmlite/skipped.jsonl')
  return existsSync(f) ? readFileSync(f, 'utf8').trim().split('\n').filter(Boolean).map(l => JSON.parse(l)) : []
}

async function skipTx(cfg: string, args: string[]): Promise<{code: number | null; out: SkipTxResult; stderr: string}> {
  const r = await h.runCli(['skip-tx', '-c', cfg, '--json', ...args], {timeoutMs: 120_000})
  return {code: r.code, out: h.parseJson<SkipTxResult>(r), stderr: r.stderr}
}

/** Nothing stuck: exit 0, a sentence, nothing changed. */
async function assertNothingStuck(servers: LocalServer[], cfg: string): Promise<void> {
  const before = await subStates(servers)
  const r = await skipTx(cfg, ['--yes'])
  assert.equal(r.code, 0, r.stderr)
  assert.deepEqual(r.out.links, [])
  assert.equal(r.out.skipped, 0)
  assert.equal(r.out.checked, servers.length * (servers.length - 1))
  const text = await h.runCli(['skip-tx', '-c', cfg, '--yes'])
  assert.equal(text.code, 0, text.stderr)
  assert.match(text.stdout, /No stuck link \(6 checked\): nothing to skip\./)
  assert.deepEqual(await subStates(servers), before)
}

/**
 * The duplicate key of the issue on a 3-node mesh: pause node1→node2, insert id 1001 on node1
 * (it reaches node3), insert id 1001 on node2, a good row behind each, resume. Stuck then:
 * node2→node1 and node2→node3 on node2's transaction, node1→node2 on node1's.
 */
async function duplicateKey(servers: LocalServer[]): Promise<{x1: number; x2: number; stuck: Map<string, number>}> {
  const [n1, n2, n3] = servers
  await h.sql(n2, `ALTER SUBSCRIPTION ${sub(1, 2)} DISABLE`)
  await h.waitFor(async () => (await h.sql(n2, `SELECT 1 FROM pg_stat_subscription st JOIN pg_subscription s ON s.oid = st.subid WHERE s.subname = $1 AND st.pid IS NOT NULL`, [sub(1, 2)])).length === 0, 'node2 to stop applying from node1')
  const x1 = await insertTx(n1, 1001, 'node1 wrote it')
  await h.waitFor(async () => (await h.sql(n3, 'SELECT 1 FROM public.users WHERE id = 1001')).length === 1, 'node1\'s row on node3')
  const x2 = await insertTx(n2, 1001, 'node2 wrote it')
  await insertTx(n1, 1002, 'good, behind node1\'s conflict')
  await insertTx(n2, 1003, 'good, behind node2\'s conflict')
  await h.sql(n2, `ALTER SUBSCRIPTION ${sub(1, 2)} ENABLE`)
  await waitFailing(n1, sub(2, 1))
  await waitFailing(n3, sub(2, 3))
  await waitFailing(n2, sub(1, 2))
  return {x1, x2, stuck: new Map([[sub(1, 2), x1], [sub(2, 1), x2], [sub(2, 3), x2]])}
}

function linkName(l: {from: string; to: string}): string {
  return `shop_${l.from}_${l.to}`
}

for (const {major, doe} of [
  {major: 15 as PgMajor, doe: true},
  {major: 18 as PgMajor, doe: false},
]) {
  describe(`skip-tx: duplicate key on a 3-node PostgreSQL ${major} mesh (${major >= 16 ? 'native' : 'mmlite plugin'}${doe ? ', disable_on_error' : ', retrying'})`, function () {
    let servers: LocalServer[]
    let dir: string
    let cfg: string
    let conflict: Awaited<ReturnType<typeof duplicateKey>>

    before(async () => {
      servers = await h.startServers([major, major, major])
      await h.createSchema(servers)
      dir = await h.tempDir()
      cfg = await h.writeConfig(dir, servers)
      const init = await h.runCli(['init', '-c', cfg, '--yes', ...(doe ? ['--disable-on-error'] : [])])
      assert.equal(init.code, 0, init.stderr + init.stdout)
      if (doe) {
        assert.match(init.stdout, /recorded disable_on_error: true/)
        assert.match(readFileSync(cfg, 'utf8'), /\ndisable_on_error: true\n/)
      }
      for (const s of servers) {
        const r = await h.sql<{d: boolean}>(s, "SELECT subdisableonerr AS d FROM pg_subscription WHERE subname LIKE 'shop%'")
        assert.equal(r.length, 2)
        for (const x of r) assert.equal(x.d, doe)
      }
    })
    after(() => stopAllStarted())

    it('nothing stuck: exit 0, nothing changes', async () => {
      await insertTx(servers[0], 1, 'before anything')
      await h.waitConverged(servers, 'public.users', 1)
      await assertNothingStuck(servers, cfg)
    })

    it('status shows the stuck links with their transactions and exits 2; --dry-run shows them and changes nothing', async () => {
      conflict = await duplicateKey(servers)
      const st = await h.runCli(['status', '-c', cfg, '--json'])
      assert.equal(st.code, 2, st.stdout + st.stderr)
      const status = h.parseJson<StatusResult>(st)
      assert.equal(status.health, 'critical')
      const stuck = status.links.filter(l => l.stuck)
      assert.deepEqual(stuck.map(linkName).sort(), [...conflict.stuck.keys()].sort())
      for (const l of stuck) {
        assert.equal(l.stuck!.xid, conflict.stuck.get(linkName(l)))
        assert.match(l.stuck!.finalLsn, /^[0-9A-F]+\/[0-9A-F]+$/)
        assert.equal(l.status, 'critical')
        assert.match(l.reasons.join('; '), /stuck: transaction \d+ \(final LSN /)
        if (major >= 18) assert.ok((l.conflicts?.insertExists ?? 0) > 0, JSON.stringify(l.conflicts))
        assert.ok((l.applyErrorCount ?? 0) > 0)
      }
      const text = await h.runCli(['status', '-c', cfg], {env: {NO_COLOR: '1'}})
      assert.equal(text.code, 2)
      assert.match(text.stdout, /Stuck at/)
      for (const l of stuck) assert.match(text.stdout, new RegExp(`${l.from} → ${l.to} .*\\| ${l.stuck!.finalLsn} \\| critical`))

      const before = await subStates(servers)
      const dry = await h.runCli(['skip-tx', '-c', cfg, '--dry-run'])
      assert.equal(dry.code, 0, dry.stderr)
      assert.match(dry.stdout, /Dry run: 3 stuck link\(s\); nothing was skipped/)
      assert.match(dry.stdout, new RegExp(`node1 → node2  stuck: [^\\n]*\\n  transaction ${conflict.x1} from node1`))
      assert.match(dry.stdout, new RegExp(`node2 → node3  stuck: [^\\n]*\\n  transaction ${conflict.x2} from node2`))
      assert.match(dry.stdout, /INSERT public\.users \(id\)=\(1001\): id=1001, dept=1, name='node1 wrote it', updated_by='node1'\n {6}collides on users_pkey with local row \{[^\n]*"name": ?"node2 wrote it"/)
      assert.match(dry.stdout, /would run on node2: ALTER SUBSCRIPTION "shop_node1_node2" SKIP \(lsn = '[0-9A-F]+\/[0-9A-F]+'\)/)
      if (doe) assert.match(dry.stdout, /would run on node2: ALTER SUBSCRIPTION "shop_node1_node2" ENABLE/)
      const dryJson = await skipTx(cfg, ['--dry-run'])
      assert.deepEqual(dryJson.out.links.map(l => [linkName(l), l.state, l.blocking?.xid]).sort(), [...conflict.stuck].map(([n, x]) => [n, 'would-skip', x]).sort())
      for (const l of dryJson.out.links) assert.equal(l.blocking?.finalLsn, stuck.find(s => linkName(s) === linkName(l))!.stuck!.finalLsn)
      // nothing skipped: skip LSNs, origins, enabled flags as they were; no audit
      assert.deepEqual(await subStates(servers), before)
      assert.deepEqual(auditLines(dir), [])
      for (const s of Object.values(before).flat()) assert.equal(s.skiplsn, '0/0')
    })

    it('skip-tx --yes skips exactly the blocking transactions; the links stream again; nothing else is lost', async () => {
      const r = await skipTx(cfg, ['--yes'])
      assert.equal(r.code, 0, r.stderr + JSON.stringify(r.out))
      assert.equal(r.out.skipped, 3)
      assert.deepEqual(r.out.links.map(l => [linkName(l), l.state, l.method, l.skipped.length]).sort(), [...conflict.stuck.keys()].map(n => [n, 'recovered', 'skip-lsn', 1]).sort())
      for (const l of r.out.links) {
        const t = l.skipped[0]
        assert.equal(t.xid, conflict.stuck.get(linkName(l)))
        assert.equal(t.changeCount, 1)
        assert.equal(t.changes[0].op, 'insert')
        assert.equal(t.changes[0].table, 'public.users')
        assert.deepEqual(t.changes[0].key, {id: '1001'})
        assert.equal(t.changes[0].new?.updated_by, l.from)
        assert.equal(t.changes[0].collisions?.[0]?.index, 'users_pkey')
        assert.deepEqual(l.sql.map(q => q.sql), [`ALTER SUBSCRIPTION "${linkName(l)}" SKIP (lsn = '${t.finalLsn}')`, ...(doe ? [`ALTER SUBSCRIPTION "${linkName(l)}" ENABLE`] : [])])
      }
      for (const [i, s] of servers.entries()) for (const j of [1, 2, 3]) if (j !== i + 1) await waitStreaming(s, sub(j, i + 1))
      // rows written before (behind the conflicts) and after the skip arrive everywhere
      await insertTx(servers[2], 1004, 'after the skip')
      await insertTx(servers[1], 1005, 'after the skip')
      for (const s of servers) await h.waitFor(async () => (await rowsOf(s)).length === 6, `6 rows on ${s.name}`)
      const [r1, r2, r3] = await Promise.all(servers.map(rowsOf))
      const rest: Array<[number, string]> = [[1002, 'node1'], [1003, 'node2'], [1004, 'node3'], [1005, 'node2']]
      assert.deepEqual(r1, [[1, 'node1'], [1001, 'node1'], ...rest])
      assert.deepEqual(r3, [[1, 'node1'], [1001, 'node1'], ...rest])
      assert.deepEqual(r2, [[1, 'node1'], [1001, 'node2'], ...rest])
      for (const s of Object.values(await subStates(servers)).flat()) {
        assert.equal(s.enabled, true, s.subname)
        assert.equal(s.skiplsn, '0/0', s.subname)
      }
      // audit: exactly the three skipped transactions, with their change and a re-apply file
      const audit = auditLines(dir)
      assert.deepEqual(audit.map(a => [`shop_${a.from}_${a.to}`, a.xid]).sort(), [...conflict.stuck].sort())
      for (const a of audit) {
        assert.deepEqual(a.changes.map(c => [c.op, c.table, c.key]), [['insert', 'public.users', {id: '1001'}]])
        const sqlText = readFileSync(a.reapplySql, 'utf8')
        assert.match(sqlText, new RegExp(`INSERT INTO "public"\\."users" \\("id", "dept", "name", "updated_by"\\) VALUES \\('1001', '1', '${a.from} wrote it', '${a.from}'\\) ON CONFLICT DO NOTHING;`))
        assert.match(sqlText, new RegExp(`transaction ${a.xid} from ${a.from}, skipped on ${a.to}`))
      }
      assert.equal(r.out.auditFile, path.join(dir, '.mmlite/skipped.jsonl'))
      // status: healthy again (skip-tx reset the counters of the errors it resolved), exit 0
      const stRun = await h.runCli(['status', '-c', cfg, '--json'])
      const st = h.parseJson<StatusResult>(stRun)
      assert.equal(st.health, 'ok', JSON.stringify(st.links.map(l => [l.from, l.to, l.reasons])))
      assert.equal(stRun.code, 0)
      assert.notEqual(st.links.length, 0, 'status lists the links')
      assert.ok(st.links.every(l => !l.stuck && l.status === 'ok'))
      await assertNothingStuck(servers, cfg)
    })

    if (major === 18) {
      it('bad, good, bad, good, bad, good: --max 2 skips the first two bad ones only; the forced origin advance skips the third', async () => {
        const [n1, n2, n3] = servers
        // rows only node2 has, then node1 writes the same keys with good rows between
        for (const id of [3001, 3003, 3005]) await insertTx(n2, id, 'node2 local', {localOnly: true})
        const bad: number[] = []
        for (const id of [3001, 3002, 3003, 3004, 3005, 3006]) {
          const x = await insertTx(n1, id, 'from node1')
          if (id % 2) bad.push(x)
        }
        await waitFailing(n2, sub(1, 2))
        await h.waitFor(async () => (await h.sql(n3, 'SELECT 1 FROM public.users WHERE id BETWEEN 3001 AND 3006')).length === 6, 'node3 to get all six')
        const auditBefore = auditLines(dir).length

        const r = await skipTx(cfg, ['--yes', '--max', '2'])
        assert.equal(r.code, 2, r.stderr) // still stuck on the third
        assert.equal(r.out.links.length, 1)
        const l = r.out.links[0]
        assert.deepEqual([l.from, l.to, l.state], ['node1', 'node2', 'still-stuck'])
        assert.deepEqual(l.skipped.map(t => t.xid), bad.slice(0, 2))
        assert.equal(l.blocking?.xid, bad[2])
        assert.deepEqual(l.blocking?.changes[0].key, {id: '3005'})
        const ids = async () => (await rowsOf(n2)).filter(([id]) => id > 3000)
        await h.waitFor(async () => (await ids()).length === 5, 'the good rows before the third bad one on node2')
        assert.deepEqual(await ids(), [[3001, 'node2'], [3002, 'node1'], [3003, 'node2'], [3004, 'node1'], [3005, 'node2']])
        // the worker fails on the third again (a new error counted after the run): 3006, behind it, waits
        const errs = async () => (await h.sql<{n: number}>(n2, `SELECT apply_error_count::int AS n FROM pg_stat_subscription_stats WHERE subname = $1`, [sub(1, 2)]))[0].n
        const e0 = await errs()
        await h.waitFor(async () => (await errs()) > e0, 'another failed attempt on the third bad transaction')
        assert.deepEqual((await ids()).map(([id]) => id), [3001, 3002, 3003, 3004, 3005], 'the good row behind the third bad one waits')

        // the PostgreSQL 14 method, forced: disable, advance the origin past exactly the third, enable
        const o = await skipTx(cfg, ['--yes', '--method', 'origin-advance', '--node', 'node2'])
        assert.equal(o.code, 0, o.stderr + JSON.stringify(o.out))
        assert.equal(o.out.links.length, 1)
        assert.deepEqual(o.out.links[0].skipped.map(t => [t.xid, t.method]), [[bad[2], 'origin-advance']])
        assert.equal(o.out.links[0].state, 'recovered')
        assert.deepEqual(
          o.out.links[0].sql.map(q => q.sql.replace(/'[0-9A-F]+\/[0-9A-F]+'/, 'LSN')),
          [`ALTER SUBSCRIPTION "shop_node1_node2" DISABLE`, `SELECT pg_replication_origin_advance('pg_${(await h.sql<{oid: string}>(n2, `SELECT oid::text FROM pg_subscription WHERE subname = 'shop_node1_node2'`))[0].oid}', LSN::pg_lsn)`, `ALTER SUBSCRIPTION "shop_node1_node2" ENABLE`],
        )
        await h.waitFor(async () => (await ids()).length === 6, 'the last good row on node2')
        assert.deepEqual(await ids(), [[3001, 'node2'], [3002, 'node1'], [3003, 'node2'], [3004, 'node1'], [3005, 'node2'], [3006, 'node1']])
        await insertTx(n1, 3007, 'after')
        await h.waitConverged([n1, n3], 'public.users', 6 + 7)
        await h.waitFor(async () => (await ids()).length === 7, '3007 on node2')
        assert.deepEqual(auditLines(dir).slice(auditBefore).map(a => [a.xid, a.method]), [[bad[0], 'skip-lsn'], [bad[1], 'skip-lsn'], [bad[2], 'origin-advance']])
      })
    }
  })
}

describe('skip-tx on PostgreSQL 14 (one-way pgoutput link, origin advance)', function () {
  let n1: LocalServer
  let n2: LocalServer
  let dir: string
  let cfg: string

  before(async () => {
    ;[n1, n2] = await h.startServers([14, 14])
    // the logged error is shown when the log can be read over SQL
    await n2.setSettings({logging_collector: 'on', log_directory: 'log'})
    await n2.restart()
    await h.createSchema([n1, n2])
    await h.sql(n1, 'CREATE PUBLICATION shop FOR TABLE public.departments, public.users')
    await h.sql(n1, "SELECT pg_create_logical_replication_slot('shop_node1_node2', 'pgoutput')")
    await h.sql(
      n2,
      `CREATE SUBSCRIPTION shop_node1_node2 CONNECTION 'host=127.0.0.1 port=${n1.port} dbname=postgres user=postgres' PUBLICATION shop ` +
        `WITH (create_slot = false, slot_name = 'shop_node1_node2', copy_data = false)`,
    )
    await waitStreaming(n2, sub(1, 2))
    dir = await h.tempDir()
    cfg = await h.writeConfig(dir, [n1, n2])
  })
  after(() => stopAllStarted())

  it('finds the failing transaction, advances the origin past exactly it, and the link streams again', async () => {
    await insertTx(n2, 5, 'node2 has it')
    await insertTx(n1, 4, 'good before')
    const bad = await insertTx(n1, 5, 'conflict')
    await insertTx(n1, 6, 'good after')
    await h.waitFor(async () => (await rowsOf(n2)).some(([id]) => id === 4), 'the good row before the conflict')

    const st = await h.runCli(['status', '-c', cfg, '--json'])
    const link = h.parseJson<StatusResult>(st).links.find(l => l.from === 'node1' && l.to === 'node2')!
    assert.equal(link.stuck?.xid, bad)
    assert.equal(link.status, 'critical')
    assert.match(link.stuck?.error ?? '', /duplicate key value violates unique constraint "users_pkey" \(Key \(id\)=\(5\) already exists\.\)/)

    const before = await subStates([n2])
    const dry = await skipTx(cfg, ['--dry-run'])
    assert.equal(dry.out.links[0]?.blocking?.xid, bad)
    assert.deepEqual(await subStates([n2]), before)

    const r = await skipTx(cfg, ['--yes'])
    assert.equal(r.code, 0, r.stderr + JSON.stringify(r.out))
    assert.equal(r.out.links.length, 1)
    const l = r.out.links[0]
    assert.equal(l.method, 'origin-advance')
    assert.equal(l.state, 'recovered')
    assert.deepEqual(l.skipped.map(t => t.xid), [bad])
    const t = l.skipped[0]
    assert.deepEqual(t.changes[0].key, {id: '5'})
    assert.match(t.error ?? '', /duplicate key value/)
    assert.deepEqual(t.changes[0].collisions?.map(c => [c.index, c.row.name]), [['users_pkey', 'node2 has it']])
    // the reverse link does not exist: said, not guessed
    assert.ok(r.out.notes.some(n => /node2 → node1: cannot tell \(subscription shop_node2_node1 missing on node1\)/.test(n)), r.out.notes.join('\n'))

    await insertTx(n1, 7, 'after the skip')
    await h.waitFor(async () => (await rowsOf(n2)).length === 4, 'rows on node2')
    assert.deepEqual(await rowsOf(n2), [[4, 'node1'], [5, 'node2'], [6, 'node1'], [7, 'node1']])
    assert.deepEqual((await subStates([n2]))[n2.name].map(s => s.enabled), [true])
    const audit = auditLines(dir)
    assert.deepEqual(audit.map(a => [a.xid, a.method, a.finalLsn]), [[bad, 'origin-advance', t.finalLsn]])
    assert.match(readFileSync(audit[0].reapplySql, 'utf8'), /VALUES \('5', '1', 'conflict', 'node1'\) ON CONFLICT DO NOTHING;/)
    const again = await skipTx(cfg, ['--yes'])
    assert.equal(again.code, 0)
    assert.deepEqual(again.out.links, [])
  })

  it('killed between the origin advance and ENABLE: status says paused; the next run records the skip and re-enables', async () => {
    await insertTx(n2, 8, 'node2 has it')
    const bad = await insertTx(n1, 8, 'conflict')
    await insertTx(n1, 9, 'good after')
    await h.waitFor(async () => {
      const st = h.parseJson<StatusResult>(await h.runCli(['status', '-c', cfg, '--json']))
      return st.links.some(l => l.stuck?.xid === bad)
    }, 'the link to be stuck on the new conflict')
    const killed = await h.runCli(['skip-tx', '-c', cfg, '--yes'], {env: {MMLITE_FAULT_KILL_AFTER: 'skip-tx/advanced'}})
    assert.equal(killed.signal, 'SIGKILL', killed.stdout + killed.stderr)
    assert.deepEqual((await subStates([n2]))[n2.name].map(s => s.enabled), [false])
    const paused = h.parseJson<StatusResult>(await h.runCli(['status', '-c', cfg, '--json'])).links.find(l => l.from === 'node1' && l.to === 'node2')!
    assert.equal(paused.status, 'paused')
    assert.match(paused.reasons[0], /paused by unfinished mmlite skip-tx run/)
    const auditBefore = auditLines(dir).length

    const r = await skipTx(cfg, ['--yes'])
    assert.equal(r.code, 0, r.stderr + JSON.stringify(r.out))
    assert.equal(r.out.skipped, 1)
    assert.deepEqual(r.out.links, [])
    assert.ok(r.out.notes.some(n => new RegExp(`transaction ${bad} skipped by an interrupted run`).test(n)), r.out.notes.join('\n'))
    assert.ok(r.out.notes.some(n => /re-enabled shop_node1_node2/.test(n)), r.out.notes.join('\n'))
    const added = auditLines(dir).slice(auditBefore)
    assert.deepEqual(added.map(a => [a.xid, a.method, a.note]), [[bad, 'origin-advance', 'recorded by the next run: the run that skipped it was interrupted']])
    await h.waitFor(async () => (await rowsOf(n2)).some(([id]) => id === 9), 'the good row behind the skipped one')
    assert.deepEqual((await rowsOf(n2)).filter(([id]) => id >= 8), [[8, 'node2'], [9, 'node1']])
    const journal = JSON.parse(readFileSync(path.join(dir, '.mmlite/journal.json'), 'utf8'))
    assert.deepEqual(journal.operations, {})
  })
})
