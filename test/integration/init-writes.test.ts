/**
 * init while every node takes writes (issue #7.2, #14.1, #14.2), with the hard load (several
 * writers per node, INSERT/UPDATE/DELETE, transactions over both tables):
 *  - killed after its slots, before the non-seed nodes are subscribed, while they take
 *    (legal) writes: the re-run finishes, nothing is refused, every acknowledged write is on
 *    every node exactly once;
 *  - a long transaction opened on a non-seed node before its slots are created and committed
 *    while the creation waits for it: on every node once;
 *  - SIGKILL from outside at random moments, re-run, several rounds.
 * Each case checks the full content of both replicated tables on every node, seed included.
 */
import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {existsSync, readFileSync} from 'node:fs'
import path from 'node:path'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'
import {WriteLoad, mergeReports, verifyLoad, waitBlockedBy, waitSlotCreationRunning} from '../helpers/load.js'

function journalOps(dir: string): Record<string, {steps: Record<string, string>; values: Record<string, unknown>}> {
  const f = path.join(dir, '.mmlite/journal.json')
  return existsSync(f) ? JSON.parse(readFileSync(f, 'utf8')).operations : {}
}

const SEED_USERS = 300

async function fresh(servers: LocalServer[]): Promise<void> {
  await h.resetMesh(servers, 'shop', [])
  await h.sql(servers[0], "INSERT INTO public.departments SELECT g, 'dept ' || g FROM generate_series(1, 10) g")
  await h.sql(servers[0], `INSERT INTO public.users SELECT g, g % 10 + 1, 'seed ' || g, 'node1' FROM generate_series(1, ${SEED_USERS}) g`)
}

/** spawn the CLI and SIGKILL it after `ms` (or let it finish first) */
function initKilledAfter(cfg: string, ms: number): Promise<{killed: boolean; code: number | null; out: string}> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(h.ROOT, 'bin/run.js'), 'init', '-c', cfg, '--yes'], {env: {...process.env, CI: '1'}, stdio: ['ignore', 'pipe', 'pipe']})
    let out = ''
    // the clock starts when the run begins its first step (plain output "→ <step>"), so the kill
    // lands at a random moment inside the procedure, not during the CLI's start-up
    let t: NodeJS.Timeout | undefined
    const arm = () => {
      if (!t && out.includes('→ ')) t = setTimeout(() => child.kill('SIGKILL'), ms)
    }
    child.stdout.on('data', d => {
      out += d
      arm()
    })
    child.stderr.on('data', d => (out += d))
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(t)
      resolve({killed: signal === 'SIGKILL', code, out})
    })
  })
}

describe('init under writes on every node', function () {
  this.timeout(600_000)
  let servers: LocalServer[]
  let dir: string
  let cfg: string
  let round = 0
  before(async () => {
    servers = await h.startServers([16, 16, 16])
    await h.createSchema(servers)
    dir = await h.tempDir()
    cfg = await h.writeConfig(dir, servers)
  })
  after(() => stopAllStarted())

  it('killed after its slots while non-seed nodes take writes: the re-run finishes (no refusal), every write once everywhere', async () => {
    await fresh(servers)
    round++
    const load = new WriteLoad().start([{label: `r${round}n1`, server: servers[0], index: round * 10 + 1}], {hard: true})
    const rest = new WriteLoad()
    await h.withCleanup(
      async () => {
        await h.waitFor(async () => load.report.commits >= 60, 'the load to get going')
        const killed = await h.runCli(['init', '-c', cfg, '--yes'], {env: {MMLITE_FAULT_KILL_AFTER: 'slots'}})
        assert.equal(killed.signal, 'SIGKILL', killed.stdout + killed.stderr)
        // the non-seed nodes take writes now: legal, their outbound slots exist
        rest.start(servers.slice(1).map((s, i) => ({label: `r${round}n${i + 2}`, server: s, index: round * 10 + i + 2})), {hard: true})
        await h.waitFor(async () => rest.report.commits >= 90, 'writes on the non-seed nodes after the kill')
        const again = await h.runCli(['init', '-c', cfg, '--yes'])
        assert.equal(again.code, 0, again.stderr + again.stdout)
        assert.doesNotMatch(again.stderr + again.stdout, /empty the tables/i)
        assert.deepEqual(journalOps(dir), {})
        const c1 = rest.report.commits
        await h.waitFor(async () => rest.report.commits >= c1 + 60, 'writes after init')
      },
      () => load.stop(),
      () => rest.stop(),
    )
    await verifyLoad(servers, mergeReports(load.report, rest.report), SEED_USERS)
    for (const s of servers) assert.equal(await h.applyErrors(s), 0)
  })

  it('a long transaction on the seed opened before its slots exist and committed while their creation waits: once everywhere', async () => {
    await fresh(servers)
    round++
    const load = new WriteLoad().start([{label: `r${round}n1`, server: servers[0], index: round * 10 + 1}], {hard: true})
    await h.withCleanup(
      async () => {
        await h.waitFor(async () => load.report.commits >= 60, 'the load to get going')
        const long = await load.longTransaction(servers[0], round * 10 + 9, 500)
        const run = h.runCli(['init', '-c', cfg, '--yes'])
        await waitSlotCreationRunning(servers[0])
        await long.commit()
        const r = await run
        assert.equal(r.code, 0, r.stderr + r.stdout)
        const c1 = load.report.commits
        await h.waitFor(async () => load.report.commits >= c1 + 60, 'writes after init')
      },
      () => load.stop(),
    )
    await verifyLoad(servers, load.report, SEED_USERS)
  })

  it('rows a non-seed node commits before its slots exist (a long transaction committed while init runs): refused with safe advice, not lost', async () => {
    await fresh(servers)
    round++
    const load = new WriteLoad()
    const long = await load.longTransaction(servers[1], round * 10 + 9, 50)
    const run = h.runCli(['init', '-c', cfg, '--yes'])
    await waitBlockedBy(servers[1], long.pid)
    await long.commit()
    const r = await run
    assert.equal(r.code, 11, r.stderr + r.stdout)
    assert.match(r.stderr, /node node2 holds rows in the replicated tables although its slots do not exist yet/)
    assert.deepEqual((await h.meshObjects(servers[1])).slots, [], 'no slot made on node2')
    // the advice is safe: with no slot on node2, removing the rows there stays local
    await h.sql(servers[1], 'DELETE FROM public.users')
    await h.sql(servers[1], 'DELETE FROM public.departments')
    const again = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(again.code, 0, again.stderr + again.stdout)
    await h.waitConverged(servers, 'public.users', SEED_USERS)
    await h.waitConverged(servers, 'public.departments', 10)
  })

  it('SIGKILL from outside at random moments, re-run, several rounds: every write once everywhere', async () => {
    await fresh(servers)
    round++
    const load = new WriteLoad().start([{label: `r${round}n1`, server: servers[0], index: round * 10 + 1}], {hard: true})
    const rest = servers.slice(1).map(() => new WriteLoad())
    const kills: number[] = []
    // each non-seed node starts writing as soon as its outbound slots exist (README: init)
    let watching = true
    const watcher = (async () => {
      const started = new Set<number>()
      while (watching && started.size < rest.length) {
        for (let i = 1; i < servers.length; i++) {
          if (started.has(i) || (await h.meshObjects(servers[i])).slots.length < servers.length - 1) continue
          rest[i - 1].start([{label: `r${round}n${i + 1}`, server: servers[i], index: round * 10 + i + 1}], {hard: true})
          started.add(i)
        }
        await new Promise(r => setTimeout(r, 100))
      }
    })()
    await h.withCleanup(
      async () => {
        await h.waitFor(async () => load.report.commits >= 60, 'the load to get going')
        for (let k = 0; k < 4; k++) {
          // the first kill lands within the first run's work on a fast idle machine too (a run that
          // finishes before its kill proves nothing); later ones anywhere in a longer window
          // after the first step begins: the first kill early in the work, later ones anywhere
          const ms = k === 0 ? Math.floor(Math.random() * 300) : Math.floor(Math.random() * 2000)
          const r = await initKilledAfter(cfg, ms)
          if (r.killed) kills.push(ms)
          else assert.equal(r.code, 0, r.out)
        }
        const last = await h.runCli(['init', '-c', cfg, '--yes'])
        assert.equal(last.code, 0, last.stderr + last.stdout)
        assert.deepEqual(journalOps(dir), {})
        const c1 = load.report.commits
        await h.waitFor(async () => load.report.commits >= c1 + 60, 'writes after init')
        await h.waitFor(async () => rest.every(l => l.report.commits > 30), 'writes on every node')
      },
      async () => {
        watching = false
        await watcher
      },
      () => load.stop(),
      async () => {
        for (const l of rest) await l.stop()
      },
    )
    console.log(`      killed after ${kills.join(', ')} ms`)
    assert.ok(kills.length >= 1, 'at least one run was killed mid-way')
    await verifyLoad(servers, mergeReports(load.report, ...rest.map(l => l.report)), SEED_USERS)
    for (const s of servers) assert.equal(await h.applyErrors(s), 0)
  })

  it('init --no-copy killed, then re-run without the flag: the journal\'s --no-copy is honoured (no seed, no refusal)', async () => {
    // identical nodes: what the previous case converged to
    await h.resetMesh(servers, 'shop', [0, 1, 2])
    const base = (await h.tableDigest(servers[0], 'public.users')).count
    const killed = await h.runCli(['init', '-c', cfg, '--yes', '--no-copy'], {env: {MMLITE_FAULT_KILL_AFTER: 'slots'}})
    assert.equal(killed.signal, 'SIGKILL', killed.stdout + killed.stderr)
    assert.equal(journalOps(dir).init.values.noCopy, true)
    const seeded = await h.runCli(['init', '-c', cfg, '--yes', '--seed', 'node1'])
    assert.equal(seeded.code, 11, seeded.stderr)
    assert.match(seeded.stderr, /runs with --no-copy; --seed node1 disagrees/)
    const again = await h.runCli(['init', '-c', cfg, '--yes', '--json'])
    assert.equal(again.code, 0, again.stderr + again.stdout)
    assert.equal(h.parseJson<{copy: boolean; seed: string | null}>(again).copy, false)
    await h.writeOnEveryNode(servers, 10, 500_000_000)
    await h.waitConverged(servers, 'public.users', base + 30)
  })

  it('two entries that reach the same database are refused before anything is done', async () => {
    const d = await h.tempDir()
    const c = await h.writeConfig(d, [servers[0], servers[1], servers[0]])
    const r = await h.runCli(['init', '-c', c, '--yes'])
    assert.equal(r.code, 11, r.stderr + r.stdout)
    assert.match(r.stderr, /nodes node1 and node3 are the same database/)
  })
})
