/**
 * skip-tx and streamed transactions (issue #7.1): a big transaction T streamed while it runs
 * (publisher logical_decoding_work_mem = 64kB) whose FIRST chunk conflicts on the subscriber, and
 * a one-row transaction S committed on the publisher halfway through T. S commits first, so S is
 * the first transaction pending after the subscription's origin — but T is the one that fails.
 *
 *  - PostgreSQL 18, `streaming = parallel` (18's default, what clusters made before mmlite set
 *    `streaming` have): T's first chunk fails in a parallel apply worker before S is even sent,
 *    so S stays pending ahead of T. Without the subscriber's log, mmlite cannot tell which one
 *    fails: it skips NOTHING and says what to do (exit 2). `init` re-run sets `streaming = on`;
 *    then S gets applied and skip-tx skips exactly T. With the subscriber's log readable, the
 *    error context ("in transaction <xid>") names T: skip-tx skips exactly T in parallel mode.
 *  - PostgreSQL 15 (mmlite plugin, streaming off) and 17 (native, streaming on, as init makes
 *    them): the same two transactions; skip-tx skips exactly T.
 * Every row of S and of the transactions after it arrives; T's rows are in the audit file.
 */
import assert from 'node:assert/strict'
import {existsSync, readFileSync} from 'node:fs'
import path from 'node:path'
import {stopAllStarted, type LocalServer, type PgMajor} from '../../src/local/server.js'
import type {SkipTxResult} from '../../src/steps/skip-tx.js'
import * as h from '../helpers/cluster.js'

const LINK = 'shop_node1_node2'
const BIG = 30_000

async function xidOf(c: import('pg').Client): Promise<number> {
  return Number((await c.query<{x: string}>('SELECT txid_current()::text AS x')).rows[0].x)
}

/** A row only node2 has (origin-tagged: no node sends it on). */
async function localOnly(s: LocalServer, id: number): Promise<void> {
  await h.withClient(s, async c => {
    await c.query(`SELECT pg_replication_origin_create('test_local') WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = 'test_local')`)
    await c.query(`SELECT pg_replication_origin_session_setup('test_local')`)
    await c.query(`INSERT INTO public.users (id, dept, name, updated_by) VALUES ($1, 0, 'node2 local', 'node2')`, [id])
  })
}

/**
 * On node1: T = rows base..base+BIG-1 (its first row collides with a row only node2 has), S = one
 * row committed by another session when T is half written. Returns both xids.
 */
async function bigAndSmall(n1: LocalServer, n2: LocalServer, base: number, small: number): Promise<{t: number; s: number}> {
  await localOnly(n2, base)
  return h.withClient(n1, async a => {
    await a.query('BEGIN')
    const t = await xidOf(a)
    const half = BIG / 2
    await a.query(`INSERT INTO public.users (id, dept, name, updated_by) SELECT g, 1, 'big ' || g, 'node1' FROM generate_series($1::bigint, $2::bigint) g`, [base, base + half - 1])
    const s = await h.withClient(n1, async b => {
      await b.query('BEGIN')
      const x = await xidOf(b)
      await b.query(`INSERT INTO public.users (id, dept, name, updated_by) VALUES ($1, 2, 'small', 'node1')`, [small])
      await b.query('COMMIT')
      return x
    })
    await a.query(`INSERT INTO public.users (id, dept, name, updated_by) SELECT g, 1, 'big ' || g, 'node1' FROM generate_series($1::bigint, $2::bigint) g`, [base + half, base + BIG - 1])
    await a.query('COMMIT')
    return {t, s}
  })
}

async function errors(s: LocalServer): Promise<number> {
  return (await h.sql<{n: number}>(s, 'SELECT coalesce(sum(apply_error_count), 0)::int AS n FROM pg_stat_subscription_stats WHERE subname = $1', [LINK]))[0].n
}

async function has(s: LocalServer, id: number): Promise<boolean> {
  return (await h.sql(s, 'SELECT 1 FROM public.users WHERE id = $1', [id])).length === 1
}

async function count(s: LocalServer, lo: number, hi: number): Promise<number> {
  return (await h.sql<{n: number}>(s, 'SELECT count(*)::int AS n FROM public.users WHERE id BETWEEN $1 AND $2', [lo, hi]))[0].n
}

/** off / on / parallel (substream is a boolean before 16, a char since) */
async function streamingOf(s: LocalServer): Promise<string> {
  const m = (await h.sql<{m: string}>(s, "SELECT substream::text AS m FROM pg_subscription WHERE subname LIKE 'shop%'"))[0].m
  return ({f: 'off', false: 'off', t: 'on', true: 'on', p: 'parallel'} as Record<string, string>)[m] ?? m
}

function audit(dir: string): Array<{xid: number; changes: unknown[]; from: string; to: string}> {
  const f = path.join(dir, '.mmlite/skipped.jsonl')
  return existsSync(f) ? readFileSync(f, 'utf8').trim().split('\n').filter(Boolean).map(l => JSON.parse(l)) : []
}

async function skipTx(cfg: string, args: string[]): Promise<{code: number | null; out: SkipTxResult; stderr: string; stdout: string}> {
  const r = await h.runCli(['skip-tx', '-c', cfg, '--json', ...args], {timeoutMs: 180_000})
  return {code: r.code, out: h.parseJson<SkipTxResult>(r), stderr: r.stderr, stdout: r.stdout}
}

/** A 2-node mesh made by init, the publisher streaming big transactions after 64kB. */
async function mesh(major: PgMajor): Promise<{n1: LocalServer; n2: LocalServer; dir: string; cfg: string}> {
  const [n1, n2] = await h.startServers([major, major])
  await n1.setSettings({logical_decoding_work_mem: '64kB'})
  await n1.restart()
  await h.createSchema([n1, n2])
  const dir = await h.tempDir()
  const cfg = await h.writeConfig(dir, [n1, n2])
  const init = await h.runCli(['init', '-c', cfg, '--yes'])
  assert.equal(init.code, 0, init.stderr + init.stdout)
  return {n1, n2, dir, cfg}
}

/** Skip exactly T on node1 → node2: S and everything after T arrive; T's rows are audited. */
async function skipsExactlyT(m: {n1: LocalServer; n2: LocalServer; dir: string; cfg: string}, x: {t: number; s: number}, base: number, small: number): Promise<void> {
  const before = audit(m.dir).length
  const r = await skipTx(m.cfg, ['--yes', '--from', 'node1', '--node', 'node2'])
  assert.equal(r.code, 0, r.stderr + r.stdout)
  assert.equal(r.out.links.length, 1, JSON.stringify(r.out))
  assert.deepEqual(r.out.links[0].skipped.map(t => [t.xid, t.changeCount]), [[x.t, BIG]])
  assert.equal(r.out.links[0].state, 'recovered')
  const added = audit(m.dir).slice(before)
  assert.deepEqual(added.map(a => [a.xid, a.changes.length]), [[x.t, BIG]])
  // S arrives, T does not (its first row is node2's own), a row after both arrives
  await h.withClient(m.n1, c => c.query(`INSERT INTO public.users (id, dept, name, updated_by) VALUES ($1, 3, 'after', 'node1')`, [small + 1]))
  await h.waitFor(async () => (await has(m.n2, small)) && (await has(m.n2, small + 1)), 'S and the row after T on node2')
  assert.equal(await count(m.n2, base, base + BIG - 1), 1)
  assert.equal((await h.sql<{name: string}>(m.n2, 'SELECT name FROM public.users WHERE id = $1', [base]))[0].name, 'node2 local')
  assert.equal(await count(m.n1, base, base + BIG - 1), BIG)
}

describe('skip-tx: a streamed transaction fails ahead of a smaller one committed during it (PostgreSQL 18, streaming = parallel)', function () {
  this.timeout(600_000)
  let m: Awaited<ReturnType<typeof mesh>>
  before(async () => {
    m = await mesh(18)
  })
  after(() => stopAllStarted())

  it('log unreadable: not sure which transaction fails, so nothing is skipped and the way out is said; init sets streaming = on, then exactly T is skipped', async () => {
    // a cluster made before mmlite chose the streaming mode: 18's default
    await h.sql(m.n2, `ALTER SUBSCRIPTION ${LINK} SET (streaming = parallel)`)
    const x = await bigAndSmall(m.n1, m.n2, 100_000, 900_001)
    const e0 = await errors(m.n2)
    await h.waitFor(async () => (await errors(m.n2)) >= e0 + 2, 'the link to fail (twice)')
    assert.equal(await has(m.n2, 900_001), false, 'S waits behind the failing T')

    const r = await skipTx(m.cfg, ['--yes'])
    assert.equal(r.code, 2, r.stderr + r.stdout)
    assert.equal(r.out.skipped, 0, JSON.stringify(r.out))
    assert.deepEqual(audit(m.dir), [])
    const text = JSON.stringify(r.out) + r.stderr
    assert.match(text, /streaming = parallel/)
    assert.match(text, new RegExp(`transaction ${x.s}\\b`))
    assert.match(text, new RegExp(`transaction ${x.t}\\b`))
    assert.match(text, /mmlite init/)
    assert.equal((await h.sql<{l: string}>(m.n2, 'SELECT subskiplsn::text AS l FROM pg_subscription WHERE subname = $1', [LINK]))[0].l, '0/0')

    // the way out: init sets streaming = on; S is applied, T fails alone and is skipped
    const init = await h.runCli(['init', '-c', m.cfg, '--yes'])
    assert.equal(init.code, 0, init.stderr + init.stdout)
    assert.equal(await streamingOf(m.n2), 'on')
    assert.equal(await streamingOf(m.n1), 'on')
    await h.waitFor(() => has(m.n2, 900_001), 'S on node2 once the link streams without parallel apply')
    await skipsExactlyT(m, x, 100_000, 900_001)
  })

  it('log readable: the error context names T, with S ahead of it: nothing skipped (SKIP cannot reach T); with streaming = on exactly T is skipped', async () => {
    await m.n2.setSettings({logging_collector: 'on', log_directory: 'log'})
    await m.n2.restart()
    await h.sql(m.n2, `ALTER SUBSCRIPTION ${LINK} SET (streaming = parallel)`)
    const x = await bigAndSmall(m.n1, m.n2, 200_000, 900_011)
    const e0 = await errors(m.n2)
    await h.waitFor(async () => (await errors(m.n2)) >= e0 + 2, 'the link to fail (twice)')
    assert.equal(await has(m.n2, 900_011), false, 'S waits behind the failing T')
    const auditBefore = audit(m.dir).length
    const r = await skipTx(m.cfg, ['--yes'])
    assert.equal(r.code, 2, r.stderr + r.stdout)
    assert.equal(r.out.skipped, 0)
    assert.equal(r.out.links[0]?.state, 'unsure')
    assert.match(r.out.links[0].message, new RegExp(`log names transaction ${x.t} .* as the failing one, while transaction ${x.s} .* is pending ahead of it`))
    assert.equal(audit(m.dir).length, auditBefore)
    // the other way out the message gives: streaming = on on this link
    await h.sql(m.n2, `ALTER SUBSCRIPTION ${LINK} SET (streaming = on)`)
    await h.waitFor(() => has(m.n2, 900_011), 'S on node2 once the link streams without parallel apply')
    await skipsExactlyT(m, x, 200_000, 900_011)
  })
})

for (const major of [15, 17] as PgMajor[]) {
  describe(`skip-tx: the same transactions on PostgreSQL ${major} (${major >= 16 ? 'native, streaming = on' : 'mmlite plugin, streaming off'})`, function () {
    this.timeout(600_000)
    let m: Awaited<ReturnType<typeof mesh>>
    before(async () => {
      m = await mesh(major)
    })
    after(() => stopAllStarted())

    it('S is applied, T fails, skip-tx skips exactly T', async () => {
      assert.equal(await streamingOf(m.n2), major >= 16 ? 'on' : 'off')
      const x = await bigAndSmall(m.n1, m.n2, 100_000, 900_001)
      await h.waitFor(() => has(m.n2, 900_001), 'S on node2')
      const e0 = await errors(m.n2)
      await h.waitFor(async () => (await errors(m.n2)) > e0, 'T to fail')
      await skipsExactlyT(m, x, 100_000, 900_001)
    })
  })
}

describe('skip-tx: the same transactions on PostgreSQL 14 (one-way pgoutput link, streaming = on, origin advance)', function () {
  this.timeout(600_000)
  let m: {n1: LocalServer; n2: LocalServer; dir: string; cfg: string}
  before(async () => {
    const [n1, n2] = await h.startServers([14, 14])
    await n1.setSettings({logical_decoding_work_mem: '64kB'})
    await n1.restart()
    await h.createSchema([n1, n2])
    await h.sql(n1, 'CREATE PUBLICATION shop FOR TABLE public.departments, public.users')
    await h.sql(n1, `SELECT pg_create_logical_replication_slot('${LINK}', 'pgoutput')`)
    await h.sql(
      n2,
      `CREATE SUBSCRIPTION ${LINK} CONNECTION 'host=127.0.0.1 port=${n1.port} dbname=postgres user=postgres' PUBLICATION shop ` +
        `WITH (create_slot = false, slot_name = '${LINK}', copy_data = false, streaming = on)`,
    )
    const dir = await h.tempDir()
    m = {n1, n2, dir, cfg: await h.writeConfig(dir, [n1, n2])}
    await h.waitFor(async () => (await h.sql(n2, 'SELECT 1 FROM pg_stat_subscription WHERE pid IS NOT NULL')).length > 0, 'the link to stream')
  })
  after(() => stopAllStarted())

  it('S is applied, T fails, skip-tx advances the origin past exactly T', async () => {
    assert.equal(await streamingOf(m.n2), 'on')
    const x = await bigAndSmall(m.n1, m.n2, 100_000, 900_001)
    await h.waitFor(() => has(m.n2, 900_001), 'S on node2')
    await skipsExactlyT(m, x, 100_000, 900_001)
  })
})
