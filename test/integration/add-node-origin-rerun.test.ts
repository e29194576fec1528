/**
 * Re-running add-node never moves an inbound origin backwards (issue #7.3), on PostgreSQL 15
 * (our plugin), both strategies, sharing one mesh:
 *
 *  - copy: the run dies right after subscribe-peers (P→X enabled, its origin advanced to R_P,
 *    with R_P > L_P made sure by writes on P between the slot and the pause); P→X applies
 *    more (inserts and repeated updates of one row); it is disabled by hand; the re-run must
 *    leave its origin where the apply left it, re-enable it, and finish: every row exactly
 *    once with its last value on every node;
 *  - standby: the same after source-subscription (S→X, origin advanced to P_X).
 *
 * The origin is read before the re-run and right after it (no new transaction of the
 * publisher in between): moving it back is visible even when the publisher's slot had already
 * confirmed everything (then the walsender starts at confirmed_flush and nothing is resent;
 * when the subscriber's flush report lags, the transactions in between are applied twice).
 */
import assert from 'node:assert/strict'
import {existsSync, readFileSync} from 'node:fs'
import path from 'node:path'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import {compareLsn} from '../../src/db/lsn.js'
import * as h from '../helpers/cluster.js'
import {createStandby} from '../helpers/standby.js'

function journalValues(dir: string, key: string): Record<string, unknown> {
  const f = path.join(dir, '.mmlite/journal.json')
  const ops = existsSync(f) ? JSON.parse(readFileSync(f, 'utf8')).operations : {}
  return ops[key]?.values ?? {}
}

async function originOf(s: LocalServer, sub: string): Promise<string> {
  const r = await h.sql<{lsn: string}>(
    s,
    "SELECT coalesce((SELECT os.remote_lsn::text FROM pg_replication_origin_status os WHERE os.external_id = 'pg_' || s.oid), '0/0') AS lsn FROM pg_subscription s WHERE s.subname = $1",
    [sub],
  )
  return r[0].lsn
}

async function disableAndWait(s: LocalServer, sub: string): Promise<void> {
  await h.sql(s, `ALTER SUBSCRIPTION "${sub}" DISABLE`)
  await h.waitFor(
    async () => (await h.sql(s, 'SELECT 1 FROM pg_stat_subscription st JOIN pg_subscription s ON s.oid = st.subid WHERE s.subname = $1 AND st.pid IS NOT NULL', [sub])).length === 0,
    `the workers of ${sub} on ${s.name} to exit`,
  )
}

/** Inserts `n` rows with ids from `base` on `s`, and updates the first of them `n` times (a later value must win). */
async function writeRows(s: LocalServer, base: number, n: number, label: string): Promise<void> {
  await h.withClient(s, async c => {
    for (let i = 0; i < n; i++) await c.query('INSERT INTO public.users (id, dept, name, updated_by) VALUES ($1, 1, $2, $3)', [base + i, `${label}-${i}`, label])
    for (let i = 0; i < n; i++) await c.query('UPDATE public.users SET name = $2 WHERE id = $1', [base, `${label}-u${i}`])
  })
}

/** Every node: the same rows (count + digest), and row `id` has `name`. */
async function assertSame(servers: LocalServer[], count: number, checks: Array<[number, string]>): Promise<void> {
  await h.waitConverged(servers, 'public.users', count, 90_000)
  for (const s of servers) {
    for (const [id, name] of checks) {
      const r = await h.sql<{name: string; n: number}>(s, 'SELECT min(name) AS name, count(*)::int AS n FROM public.users WHERE id = $1', [id])
      assert.deepEqual(r[0], {name, n: 1}, `row ${id} on ${s.name}`)
    }
  }
  for (const s of servers) assert.equal(await h.applyErrors(s), 0, `apply errors on ${s.name}`)
}

describe('add-node re-run never moves an inbound origin backwards (PostgreSQL 15)', function () {
  this.timeout(600_000)
  let servers: LocalServer[]
  let x3: LocalServer
  let dir: string
  let cfg: string

  before(async () => {
    const all = await h.startServers([15, 15, 15])
    servers = all.slice(0, 2)
    x3 = all[2]
    await h.createSchema(all)
    await h.sql(servers[0], "INSERT INTO public.users SELECT g, 1, 'seed ' || g, 'node1' FROM generate_series(1, 100) g")
    ;({dir, cfg} = await h.initCluster(servers))
    await h.waitConverged(servers, 'public.users', 100)
  })
  after(() => stopAllStarted())

  it('copy: P→X disabled after applying past R_P; the re-run keeps its origin and every row is on every node exactly once', async () => {
    const add = (env: NodeJS.ProcessEnv = {}) => h.runCli(['add-node', 'node3', '--dsn', x3.dsn(), '-c', cfg, '--yes', '--jobs', '1'], {env, timeoutMs: 300_000})
    const k1 = await add({MMLITE_FAULT_KILL_AFTER: 'prepare'})
    assert.equal(k1.signal, 'SIGKILL', k1.stdout + k1.stderr)
    // node2 commits after its slot for node3 exists; node1 applies it before the pause: R_P > L_P
    await writeRows(servers[1], 2_000_000, 20, 'a')
    await h.waitConverged(servers, 'public.users', 120)
    const k2 = await add({MMLITE_FAULT_KILL_AFTER: 'subscribe-peers'})
    assert.equal(k2.signal, 'SIGKILL', k2.stdout + k2.stderr)
    const v = journalValues(dir, 'add-node:node3') as {peerSlots: Record<string, string>; copy: {originProgress: Record<string, string>}}
    const R = v.copy.originProgress.node2
    assert.equal(compareLsn(R, v.peerSlots.node2), 1, `R_P ${R} is past L_P ${v.peerSlots.node2}`)
    // the link applies more, then is disabled
    await writeRows(servers[1], 2_100_000, 20, 'b')
    await h.waitConverged([...servers, x3], 'public.users', 140)
    await disableAndWait(x3, 'shop_node2_node3')
    const applied = await originOf(x3, 'shop_node2_node3')
    assert.equal(compareLsn(applied, R), 1, `the link applied past R_P (${applied} > ${R})`)

    const again = await add()
    assert.equal(again.code, 0, again.stderr + again.stdout)
    const after = await originOf(x3, 'shop_node2_node3')
    assert.ok(compareLsn(after, applied) >= 0, `origin of shop_node2_node3 moved backwards: ${applied} → ${after}`)
    assert.equal((await h.sql<{e: boolean}>(x3, "SELECT subenabled AS e FROM pg_subscription WHERE subname = 'shop_node2_node3'"))[0].e, true)

    await writeRows(servers[1], 2_200_000, 5, 'c')
    await writeRows(servers[0], 2_300_000, 5, 'd')
    await writeRows(x3, 2_400_000, 5, 'e')
    await assertSame([...servers, x3], 155, [
      [2_000_000, 'a-u19'],
      [2_100_000, 'b-u19'],
      [2_200_000, 'c-u4'],
      [2_300_000, 'd-u4'],
      [2_400_000, 'e-u4'],
    ])
  })

  it('standby: S→X disabled after applying past P_X; the re-run keeps its origin and every row is on every node exactly once', async () => {
    const members = [...servers, x3]
    const base = (await h.tableDigest(servers[0], 'public.users')).count
    const x = await createStandby(servers[0], {name: 'node4'})
    const add = (env: NodeJS.ProcessEnv = {}) =>
      h.runCli(['add-node', 'node4', '--dsn', x.dsn(), '--strategy', 'standby', '--source', 'node1', '--yes', '-c', cfg], {env, timeoutMs: 300_000})
    const k = await add({MMLITE_FAULT_KILL_AFTER: 'source-subscription'})
    assert.equal(k.signal, 'SIGKILL', k.stdout + k.stderr)
    const PX = (journalValues(dir, 'add-node:node4') as {promotedLsn: string}).promotedLsn
    await writeRows(servers[0], 3_000_000, 20, 'f')
    await h.waitConverged([...members, x], 'public.users', base + 20)
    await disableAndWait(x, 'shop_node1_node4')
    const applied = await originOf(x, 'shop_node1_node4')
    assert.equal(compareLsn(applied, PX), 1, `the link applied past P_X (${applied} > ${PX})`)

    const again = await add()
    assert.equal(again.code, 0, again.stderr + again.stdout)
    const after = await originOf(x, 'shop_node1_node4')
    assert.ok(compareLsn(after, applied) >= 0, `origin of shop_node1_node4 moved backwards: ${applied} → ${after}`)

    await writeRows(servers[0], 3_100_000, 5, 'g')
    await writeRows(servers[1], 3_200_000, 5, 'h')
    await writeRows(x, 3_300_000, 5, 'i')
    await assertSame([...members, x], base + 35, [
      [3_000_000, 'f-u19'],
      [3_100_000, 'g-u4'],
      [3_200_000, 'h-u4'],
      [3_300_000, 'i-u4'],
    ])
  })
})
