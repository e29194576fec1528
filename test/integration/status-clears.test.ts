/**
 * `status` that clears (issue #12): on a 2-node PostgreSQL 17 mesh made by init, with
 * `health: {lag_warning_seconds: 1, error_window_seconds: 4}`:
 *  - an idle mesh for longer than lag_warning_seconds is ok (lag is lag, not the age of the last
 *    message: an idle link receives only keepalives, every wal_sender_timeout / 2);
 *  - a node restart: critical while it is down, then ok again with no action, although the
 *    subscribers counted apply errors (the connection was lost): only recent errors warn;
 *  - `status --reset-errors --dry-run` prints the exact SQL and changes nothing; `--yes` resets.
 * Rows written on both nodes after the restart arrive everywhere.
 */
import assert from 'node:assert/strict'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import type {StatusResult} from '../../src/cluster/status.js'
import * as h from '../helpers/cluster.js'

async function status(cfg: string): Promise<{code: number | null; st: StatusResult}> {
  const r = await h.runCli(['status', '-c', cfg, '--json'])
  return {code: r.code, st: h.parseJson<StatusResult>(r)}
}

async function errorCounts(s: LocalServer): Promise<number> {
  return (await h.sql<{n: number}>(s, "SELECT coalesce(sum(apply_error_count + sync_error_count), 0)::int AS n FROM pg_stat_subscription_stats WHERE subname LIKE 'shop%'"))[0].n
}

const why = (st: StatusResult) => JSON.stringify(st.links.map(l => [l.from, l.to, l.status, l.reasons]))

describe('status clears: an idle mesh is ok; after a node restart critical, then ok with no action (PostgreSQL 17)', function () {
  this.timeout(300_000)
  let servers: LocalServer[]
  let cfg: string

  before(async () => {
    servers = await h.startServers([17, 17])
    await h.createSchema(servers)
    const dir = await h.tempDir()
    cfg = await h.writeConfig(dir, servers, {extra: 'health:\n  lag_warning_seconds: 1\n  error_window_seconds: 4'})
    const init = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(init.code, 0, init.stderr + init.stdout)
    await h.sql(servers[0], "INSERT INTO public.users VALUES (1, 1, 'a', 'node1')")
    await h.sql(servers[1], "INSERT INTO public.users VALUES (2, 1, 'b', 'node2')")
    await h.waitConverged(servers, 'public.users', 2)
  })
  after(() => stopAllStarted())

  it('an idle mesh for longer than lag_warning_seconds is ok', async () => {
    // idle for > 1 s after the last message (keepalives come every wal_sender_timeout / 2 = 30 s)
    await h.waitFor(async () => (await status(cfg)).st.links.every(l => (l.lastMsgAgeSeconds ?? 0) > 2), 'the links to be idle for 2 s')
    const {code, st} = await status(cfg)
    assert.equal(st.health, 'ok', why(st))
    assert.equal(code, 0)
    for (const l of st.links) {
      assert.equal(l.lagSeconds, 0, why(st))
      assert.ok((l.lastMsgAgeSeconds ?? 0) > 1)
    }
  })

  it('a node restart: critical while down, then ok again with no action although errors were counted', async () => {
    const [n1, n2] = servers
    const e1 = await errorCounts(n1)
    const e2 = await errorCounts(n2)
    await n1.stop('fast')
    const down = await status(cfg)
    assert.equal(down.st.health, 'critical', why(down.st))
    assert.equal(down.code, 2)
    // the subscriber on node2 loses its publisher: an apply error is counted
    await h.waitFor(async () => (await errorCounts(n2)) > e2, 'node2 to count the lost connection as an apply error')
    await n1.start()
    // back, with no action: every status shows the errors only while they are recent
    const seen: string[] = []
    await h.waitFor(async () => {
      const {st} = await status(cfg)
      seen.push(st.health)
      for (const l of st.links) if (l.status === 'warning') assert.match(l.reasons.join('; '), /apply error\(s\) since stats reset, the last counted .* ago/)
      return st.health === 'ok'
    }, 'status to be ok again', 120_000)
    const {code, st} = await status(cfg)
    assert.equal(code, 0, why(st))
    assert.ok(st.links.some(l => (l.applyErrorCount ?? 0) > 0), `the counters still hold the errors: ${JSON.stringify(st.links)}`)
    assert.ok((await errorCounts(n1)) + (await errorCounts(n2)) > e1 + e2)
    // and it stays ok: nothing new is counted
    const again = await status(cfg)
    assert.equal(again.st.health, 'ok', why(again.st))

    // every write still arrives everywhere
    await h.sql(n1, "INSERT INTO public.users VALUES (3, 1, 'c', 'node1')")
    await h.sql(n2, "INSERT INTO public.users VALUES (4, 1, 'd', 'node2')")
    await h.waitConverged(servers, 'public.users', 4)
  })

  it('status --reset-errors: --dry-run prints the SQL and changes nothing; --yes resets the counters', async () => {
    const before = (await errorCounts(servers[0])) + (await errorCounts(servers[1]))
    assert.ok(before > 0)
    const dry = await h.runCli(['status', '-c', cfg, '--reset-errors', '--dry-run'])
    assert.equal(dry.code, 0, dry.stderr)
    assert.match(dry.stdout, /would run on node\d: SELECT pg_catalog\.pg_stat_reset_subscription_stats\(\d+::pg_catalog\.oid\)/)
    assert.equal((await errorCounts(servers[0])) + (await errorCounts(servers[1])), before)
    // --json: one document with the SQL per node (it printed nothing before)
    const dryJson = await h.runCli(['status', '-c', cfg, '--reset-errors', '--dry-run', '--json'])
    assert.equal(dryJson.code, 0, dryJson.stderr)
    const dj = h.parseJson<{dryRun: boolean; resetErrors: {sql: Array<{node: string; sql: string}>}}>(dryJson)
    assert.equal(dj.dryRun, true)
    assert.ok(dj.resetErrors.sql.length > 0)
    for (const q of dj.resetErrors.sql) assert.match(q.sql, /^SELECT pg_catalog\.pg_stat_reset_subscription_stats\(\d+::pg_catalog\.oid\)/)
    assert.equal((await errorCounts(servers[0])) + (await errorCounts(servers[1])), before)
    const r = await h.runCli(['status', '-c', cfg, '--reset-errors', '--yes'])
    assert.equal(r.code, 0, r.stderr + r.stdout)
    assert.match(r.stdout, /ran on node\d: SELECT pg_catalog\.pg_stat_reset_subscription_stats/)
    await h.waitFor(async () => (await errorCounts(servers[0])) + (await errorCounts(servers[1])) === 0, 'the counters to be reset')
    const again = await h.runCli(['status', '-c', cfg, '--reset-errors', '--yes'])
    assert.match(again.stdout, /nothing to reset/)
  })
})
