/**
 * Bounded memory when decoding a huge stuck transaction (issue #13.7): a 50 000-row transaction
 * of ~1.5 kB rows (~75 MB of row data) fails on node2 (its first row collides with a row only
 * node2 has). `status`, `skip-tx --dry-run` and `skip-tx --yes` each run as a child process
 *  - with the V8 heap capped at HEAP_MB (well below the transaction's size): they must succeed
 *    with the right answers, so what they retain is bounded (before the fix they held every
 *    change: 290 MB peak RSS in status, 830 MB in skip-tx --yes on this transaction);
 *  - whose peak RSS (VmHWM in /proc, polled) stays below the healthy cluster's peak plus
 *    BOUND_MB, less than the row data itself.
 * The decode is a cursor over the peek, fetched a batch at a time, keeping per transaction a
 * bounded preview and counts; the audit files are streamed. The skip is exact and the audit
 * holds every change.
 */
import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {existsSync, readFileSync} from 'node:fs'
import path from 'node:path'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import * as h from '../helpers/cluster.js'

const ROWS = 50_000
const PAD = 1500
/** what a command may hold above its peak on the healthy cluster (the row data is ~75 MB) */
const BOUND_MB = 60
/** V8 old-space cap for the measured runs */
const HEAP_MB = 40

/** Run the CLI, polling the child's peak RSS (VmHWM, kB → MB) until it exits. */
function runMeasured(args: string[], heapMb?: number): Promise<{code: number | null; stdout: string; stderr: string; peakMb: number}> {
  return new Promise((resolve, reject) => {
    const env = {...process.env, CI: '1', ...(heapMb ? {NODE_OPTIONS: `--max-old-space-size=${heapMb}`} : {})}
    const child = spawn(process.execPath, [path.join(h.ROOT, 'bin/run.js'), ...args], {cwd: h.ROOT, env, stdio: ['ignore', 'pipe', 'pipe']})
    let stdout = ''
    let stderr = ''
    let peakKb = 0
    child.stdout.on('data', d => (stdout += d))
    child.stderr.on('data', d => (stderr += d))
    const poll = setInterval(() => {
      try {
        const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))
        if (m) peakKb = Math.max(peakKb, Number(m[1]))
      } catch {
        /* exited */
      }
    }, 20)
    const timer = setTimeout(() => child.kill('SIGKILL'), 240_000)
    child.on('error', reject)
    child.on('close', code => {
      clearInterval(poll)
      clearTimeout(timer)
      resolve({code, stdout, stderr, peakMb: peakKb / 1024})
    })
  })
}

describe('bounded memory: status and skip-tx on a stuck ~75 MB transaction (PostgreSQL 17)', function () {
  this.timeout(600_000)
  let n1: LocalServer
  let n2: LocalServer
  let dir: string
  let cfg: string
  const base: Record<string, number> = {}

  before(async () => {
    ;[n1, n2] = await h.startServers([17, 17])
    await h.createSchema([n1, n2])
    dir = await h.tempDir()
    cfg = await h.writeConfig(dir, [n1, n2])
    const init = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(init.code, 0, init.stderr + init.stdout)
    // the same commands on the healthy cluster: their peaks are the baseline
    base.status = (await runMeasured(['status', '-c', cfg, '--json'])).peakMb
    base.dry = (await runMeasured(['skip-tx', '-c', cfg, '--dry-run', '--json'])).peakMb
  })
  after(() => stopAllStarted())

  it('status, skip-tx --dry-run and skip-tx --yes stay within the bound; exactly the big transaction is skipped, every change audited', async () => {
    await h.withClient(n2, async c => {
      await c.query(`SELECT pg_replication_origin_create('test_local')`)
      await c.query(`SELECT pg_replication_origin_session_setup('test_local')`)
      await c.query(`INSERT INTO public.users VALUES (1, 0, 'node2 local', 'node2')`)
    })
    const xid = await h.withClient(n1, async c => {
      await c.query('BEGIN')
      const x = Number((await c.query<{x: string}>('SELECT txid_current()::text AS x')).rows[0].x)
      await c.query(`INSERT INTO public.users (id, dept, name, updated_by) SELECT g, 1, repeat(md5(g::text), ${Math.floor(PAD / 32)}), 'node1' FROM generate_series(1, ${ROWS}) g`)
      await c.query('COMMIT')
      return x
    })
    await h.waitFor(async () => (await h.applyErrors(n2)) > 0, 'the big transaction to fail on node2')

    const st = await runMeasured(['status', '-c', cfg, '--json'], HEAP_MB)
    const link = JSON.parse(st.stdout).links.find((l: {from: string; to: string}) => l.from === 'node1' && l.to === 'node2')
    assert.equal(link.stuck?.xid, xid, st.stdout + st.stderr)
    assert.ok(st.peakMb < base.status + BOUND_MB, `status peak ${st.peakMb.toFixed(0)} MB, healthy ${base.status.toFixed(0)} MB`)

    const dry = await runMeasured(['skip-tx', '-c', cfg, '--dry-run', '--json'], HEAP_MB)
    const plan = JSON.parse(dry.stdout)
    assert.equal(plan.links[0]?.blocking?.xid, xid, dry.stdout + dry.stderr)
    assert.equal(plan.links[0].blocking.changeCount, ROWS)
    assert.equal(plan.links[0].blocking.changes.length, 20)
    assert.ok(dry.peakMb < base.dry + BOUND_MB, `skip-tx --dry-run peak ${dry.peakMb.toFixed(0)} MB, healthy ${base.dry.toFixed(0)} MB`)

    const run = await runMeasured(['skip-tx', '-c', cfg, '--yes', '--json'], HEAP_MB)
    assert.equal(run.code, 0, run.stdout + run.stderr)
    const out = JSON.parse(run.stdout)
    assert.deepEqual(out.links[0].skipped.map((t: {xid: number; changeCount: number}) => [t.xid, t.changeCount]), [[xid, ROWS]])
    assert.ok(run.peakMb < base.dry + BOUND_MB, `skip-tx --yes peak ${run.peakMb.toFixed(0)} MB, healthy dry run ${base.dry.toFixed(0)} MB`)

    // the audit line holds every change; the re-apply SQL one statement per change
    const audit = readFileSync(path.join(dir, '.mmlite/skipped.jsonl'), 'utf8').trim().split('\n').map(l => JSON.parse(l))
    assert.equal(audit.length, 1)
    assert.equal(audit[0].xid, xid)
    assert.equal(audit[0].changes.length, ROWS)
    assert.deepEqual(audit[0].changes[ROWS - 1].key, {id: String(ROWS)})
    const sql = readFileSync(audit[0].reapplySql, 'utf8')
    assert.equal(sql.split('\n').filter(l => l.startsWith('INSERT INTO "public"."users"')).length, ROWS)
    assert.ok(!existsSync(audit[0].reapplySql.replace(/\.sql$/, '.changes.jsonl')), 'the changes file went into the audit line')
    // the link streams again: a row written after the skip arrives, the big transaction does not
    await h.sql(n1, "INSERT INTO public.users VALUES (99999999, 1, 'after', 'node1')")
    await h.waitFor(async () => (await h.sql(n2, 'SELECT 1 FROM public.users WHERE id = 99999999')).length === 1, 'the row after the skip on node2')
    assert.equal((await h.sql<{n: number}>(n2, 'SELECT count(*)::int AS n FROM public.users'))[0].n, 2)
  })
})
