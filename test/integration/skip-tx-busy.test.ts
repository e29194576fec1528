/**
 * No false "stuck" (issue #14.3): a healthy link that spends a long time applying one large
 * transaction is neither reported stuck by `status` nor touched by `skip-tx`.
 *
 * The link node1 → node2 applies a transaction of 3000 inserts plus an update of a row that a
 * session on node2 holds locked (SELECT ... FOR UPDATE): the apply worker is in the middle of the
 * transaction, waiting on that lock (seen in pg_stat_activity), for as long as the test wants —
 * no error, no restart. While it waits: `status` reports no stuck link and nothing critical,
 * `skip-tx --yes` skips nothing (exit 0) and the worker is still waiting in the same transaction
 * afterwards. Then the lock is released and the whole transaction arrives.
 *
 * PostgreSQL 14 (one-way pgoutput link, the origin-advance path) with streaming off and on,
 * 15 (mmlite plugin, streaming off), 17 (native; streaming on as init sets it, then off); the
 * publishers stream after 64kB, so with streaming on the transaction is streamed and spooled.
 */
import assert from 'node:assert/strict'
import type pg from 'pg'
import {stopAllStarted, type LocalServer, type PgMajor} from '../../src/local/server.js'
import type {StatusResult} from '../../src/cluster/status.js'
import type {SkipTxResult} from '../../src/steps/skip-tx.js'
import * as h from '../helpers/cluster.js'

const LINK = 'shop_node1_node2'
const ROWS = 3000

/** The apply worker of LINK on node2 waits on a lock (pid), or null. */
async function applyWaitingOnLock(n2: LocalServer): Promise<number | null> {
  const r = await h.sql<{pid: number}>(
    n2,
    `SELECT a.pid FROM pg_stat_activity a JOIN pg_stat_subscription st ON st.pid = a.pid JOIN pg_subscription s ON s.oid = st.subid
      WHERE s.subname = $1 AND a.wait_event_type = 'Lock'`,
    [LINK],
  )
  return r[0]?.pid ?? null
}

async function errors(n2: LocalServer): Promise<number> {
  if (n2.major < 15) return 0
  return (await h.sql<{n: number}>(n2, 'SELECT coalesce(sum(apply_error_count), 0)::int AS n FROM pg_stat_subscription_stats WHERE subname = $1', [LINK]))[0].n
}

async function busyAndHealthy(n1: LocalServer, n2: LocalServer, cfg: string, base: number): Promise<void> {
  const e0 = await errors(n2)
  const locker: pg.Client = new (await import('pg')).default.Client({connectionString: n2.dsn()})
  await locker.connect()
  try {
    await locker.query('BEGIN')
    await locker.query('SELECT * FROM public.users WHERE id = 1 FOR UPDATE')
    await h.withClient(n1, async c => {
      await c.query('BEGIN')
      await c.query(`INSERT INTO public.users (id, dept, name, updated_by) SELECT g, 1, 'big ' || g, 'node1' FROM generate_series($1::bigint, $2::bigint) g`, [base, base + ROWS - 1])
      await c.query(`UPDATE public.users SET name = $1 WHERE id = 1`, [`updated by ${base}`])
      await c.query('COMMIT')
    })
    await h.waitFor(async () => (await applyWaitingOnLock(n2)) !== null, 'the apply worker to wait on the locked row, mid-transaction')
    const pid = await applyWaitingOnLock(n2)

    const st = await h.runCli(['status', '-c', cfg, '--json'])
    const status = h.parseJson<StatusResult>(st)
    const link = status.links.find(l => l.from === 'node1' && l.to === 'node2')!
    assert.equal(link.stuck, undefined, JSON.stringify(link))
    assert.notEqual(link.status, 'critical', JSON.stringify(link))
    assert.ok(status.links.every(l => !l.stuck), JSON.stringify(status.links))

    const r = await h.runCli(['skip-tx', '-c', cfg, '--yes', '--json'], {timeoutMs: 180_000})
    const out = h.parseJson<SkipTxResult>(r)
    assert.equal(r.code, 0, r.stderr + r.stdout)
    assert.equal(out.skipped, 0)
    assert.deepEqual(out.links, [])
    assert.ok(out.notes.some(n => /node1 → node2: transaction \d+ .*pending; apply worker running, no failure seen/.test(n)), out.notes.join('\n'))

    // still the same worker, still waiting inside the transaction; no error counted
    assert.equal(await applyWaitingOnLock(n2), pid)
    assert.equal(await errors(n2), e0)
    if (n2.major >= 15) assert.equal((await h.sql<{l: string}>(n2, 'SELECT subskiplsn::text AS l FROM pg_subscription WHERE subname = $1', [LINK]))[0].l, '0/0')
  } finally {
    await locker.query('COMMIT').catch(() => {})
    await locker.end().catch(() => {})
  }
  // the whole transaction arrives
  await h.waitFor(async () => (await h.sql<{n: number}>(n2, 'SELECT count(*)::int AS n FROM public.users WHERE id BETWEEN $1 AND $2', [base, base + ROWS - 1]))[0].n === ROWS, 'the big transaction on node2')
  assert.equal((await h.sql<{name: string}>(n2, 'SELECT name FROM public.users WHERE id = 1'))[0].name, `updated by ${base}`)
}

async function setStreaming(n2: LocalServer, mode: 'on' | 'off'): Promise<void> {
  await h.sql(n2, `ALTER SUBSCRIPTION ${LINK} SET (streaming = ${mode})`)
  // the worker restarts with the new option; wait until it runs
  await h.waitFor(async () => (await h.sql(n2, 'SELECT 1 FROM pg_stat_subscription st JOIN pg_subscription s ON s.oid = st.subid WHERE s.subname = $1 AND st.pid IS NOT NULL', [LINK])).length > 0, 'the apply worker')
}

describe('no false stuck: PostgreSQL 14 link busy applying one large transaction (origin-advance path)', function () {
  this.timeout(300_000)
  let n1: LocalServer
  let n2: LocalServer
  let cfg: string
  before(async () => {
    ;[n1, n2] = await h.startServers([14, 14])
    await n1.setSettings({logical_decoding_work_mem: '64kB'})
    await n1.restart()
    await h.createSchema([n1, n2])
    for (const s of [n1, n2]) await h.sql(s, "INSERT INTO public.users VALUES (1, 1, 'row one', 'both')")
    await h.sql(n1, 'CREATE PUBLICATION shop FOR TABLE public.departments, public.users')
    await h.sql(n1, `SELECT pg_create_logical_replication_slot('${LINK}', 'pgoutput')`)
    await h.sql(n2, `CREATE SUBSCRIPTION ${LINK} CONNECTION 'host=127.0.0.1 port=${n1.port} dbname=postgres user=postgres' PUBLICATION shop WITH (create_slot = false, slot_name = '${LINK}', copy_data = false)`)
    cfg = await h.writeConfig(await h.tempDir(), [n1, n2])
  })
  after(() => stopAllStarted())

  it('streaming off: nothing stuck, nothing skipped, the transaction arrives', async () => {
    await busyAndHealthy(n1, n2, cfg, 10_000)
  })
  it('streaming on: nothing stuck, nothing skipped, the transaction arrives', async () => {
    await setStreaming(n2, 'on')
    await busyAndHealthy(n1, n2, cfg, 20_000)
  })
})

for (const major of [15, 17] as PgMajor[]) {
  describe(`no false stuck: PostgreSQL ${major} mesh (${major >= 16 ? 'native' : 'mmlite plugin'}) busy applying one large transaction`, function () {
    this.timeout(300_000)
    let n1: LocalServer
    let n2: LocalServer
    let cfg: string
    before(async () => {
      ;[n1, n2] = await h.startServers([major, major])
      await n1.setSettings({logical_decoding_work_mem: '64kB'})
      await n1.restart()
      await h.createSchema([n1, n2])
      cfg = await h.writeConfig(await h.tempDir(), [n1, n2])
      const init = await h.runCli(['init', '-c', cfg, '--yes'])
      assert.equal(init.code, 0, init.stderr + init.stdout)
      await h.sql(n1, "INSERT INTO public.users VALUES (1, 1, 'row one', 'node1')")
      await h.waitConverged([n1, n2], 'public.users', 1)
    })
    after(() => stopAllStarted())

    it(`streaming ${major >= 16 ? 'on' : 'off'} (as init sets it): nothing stuck, nothing skipped, the transaction arrives`, async () => {
      await busyAndHealthy(n1, n2, cfg, 10_000)
    })
    if (major >= 16) {
      it('streaming off: nothing stuck, nothing skipped, the transaction arrives', async () => {
        await setStreaming(n2, 'off')
        await busyAndHealthy(n1, n2, cfg, 20_000)
        await h.waitConverged([n1, n2], 'public.users', 1 + 2 * ROWS)
      })
    }
  })
}
