/**
 * verify benchmark (not run in CI): 3 local nodes (PostgreSQL 16 by default), two tables of
 * N rows (1M by default) each, the same data on every node, meshed by hand (origin = none
 * subscriptions, copy_data = false, named as mmlite names them). public.c is identical
 * everywhere; public.d has 100 rows made divergent on node2 (under a replication origin, spread
 * over the key space). In one run it times, alternating the three (median of --runs):
 *
 *   baseline     one node's  SELECT sum(hashtext(t::text)) FROM public.c t
 *   clean        mmlite verify --table public.c (in-process runVerify, from connect to result)
 *   divergent    mmlite verify --table public.d, which must report exactly the 100 rows
 *
 * and prints clean ÷ baseline (goal ≤ 2.0: three scans on two cores make 1.5 the floor) and
 * divergent ÷ clean (goal ≤ 1.1), with the machine's load average.
 *
 * Usage: node --import tsx/esm bench/verify.ts [--rows 1000000] [--runs 3] [--pg 16] [--block-rows 100] [--progress]
 */
import os from 'node:os'
import {parseArgs} from 'node:util'
import {performance} from 'node:perf_hooks'
import pg from 'pg'
import {LocalServer, stopAllStarted, type PgMajor} from '../src/local/server.js'
import {parseConfig} from '../src/config/config.js'
import {edgeName} from '../src/cluster/naming.js'
import {runVerify} from '../src/steps/verify/verify.js'

const {values: args} = parseArgs({options: {rows: {type: 'string', default: '1000000'}, runs: {type: 'string', default: '3'}, pg: {type: 'string', default: '16'}, 'block-rows': {type: 'string', default: '100'}, progress: {type: 'boolean', default: false}}})
const ROWS = Number(args.rows)
const RUNS = Number(args.runs)
const MAJOR = Number(args.pg) as PgMajor
const CLUSTER = 'vbench'

async function q(s: LocalServer, sql: string): Promise<pg.QueryResultRow[]> {
  const c = new pg.Client({connectionString: s.dsn()})
  await c.connect()
  try {
    return (await c.query(sql)).rows
  } finally {
    await c.end()
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

async function main(): Promise<void> {
  const load0 = os.loadavg()[0]
  const servers = await Promise.all([1, 2, 3].map(i => LocalServer.start({major: MAJOR, name: `vb${i}`, settings: {wal_retrieve_retry_interval: '200ms', shared_buffers: '256MB'}})))
  try {
    console.log(`loading ${ROWS} rows on each of 3 PostgreSQL ${MAJOR} nodes ...`)
    const create = (t: string) => `CREATE TABLE public.${t} (id bigint PRIMARY KEY, a int, b text, c float8, d timestamptz, j jsonb);
              INSERT INTO public.${t} SELECT g, g % 1000, md5(g::text), g / 7.0, timestamptz '2020-01-01' + g * interval '1 second', jsonb_build_object('g', g)
                FROM generate_series(1, ${ROWS}) g`
    await Promise.all(
      servers.map(async s => {
        await q(s, create('c'))
        await q(s, create('d'))
        await q(s, 'VACUUM ANALYZE public.c')
        await q(s, 'VACUUM ANALYZE public.d')
        await q(s, `CREATE PUBLICATION ${CLUSTER} FOR TABLE public.c, public.d`)
      }),
    )
    for (const [i, to] of servers.entries())
      for (const [k, from] of servers.entries()) {
        if (i === k) continue
        const name = edgeName(CLUSTER, `node${k + 1}`, `node${i + 1}`)
        await q(to, `CREATE SUBSCRIPTION ${name} CONNECTION '${from.dsn().replace(/'/g, "''")}' PUBLICATION ${CLUSTER} WITH (origin = none, copy_data = false)`)
      }
    const yaml = `cluster: ${CLUSTER}\ntables:\n  - public.c\n  - public.d\nnodes:\n${servers.map((s, i) => `  - name: node${i + 1}\n    dsn: ${s.dsn()}\n`).join('')}`
    const cfg = parseConfig(yaml, 'bench.yaml')
    let tv = 0
    const progress = args.progress ? (l: string) => console.log(`  +${(performance.now() - tv).toFixed(0)} ms ${l}`) : undefined
    const opts = (t: number) => ({tables: [cfg.tables[t]], blockRows: Number(args['block-rows']), jobs: 1, settleRounds: 4, settleTimeoutMs: 60_000, progress})
    const timeBaseline = async () => {
      const c = new pg.Client({connectionString: servers[0].dsn()})
      await c.connect()
      const t0 = performance.now()
      await c.query('SELECT sum(hashtext(t::text)) FROM public.c t')
      const ms = performance.now() - t0
      await c.end()
      return ms
    }
    const timeVerify = async (t: number, want: number) => {
      const t0 = performance.now()
      tv = t0
      const r = await runVerify(cfg, opts(t))
      const ms = performance.now() - t0
      const found = r.tables[0].divergentCount
      if (found !== want || r.tables[0].status === 'error') throw new Error(`verify found ${found} divergent rows (want ${want}): ${JSON.stringify(r.tables[0]).slice(0, 500)}`)
      return ms
    }
    const c = new pg.Client({connectionString: servers[1].dsn()})
    await c.connect()
    await c.query("SELECT pg_replication_origin_create('bench_inject')")
    await c.query("SELECT pg_replication_origin_session_setup('bench_inject')")
    await c.query(`UPDATE public.d SET b = 'diverged' WHERE id IN (SELECT (g * ${Math.floor(ROWS / 100)})::bigint FROM generate_series(1, 100) g)`)
    await c.end()
    await timeBaseline() // warm-up
    await timeVerify(0, 0)
    await timeVerify(1, 100)
    // alternate, so that a change in the machine's load hits all three alike
    const base: number[] = []
    const clean: number[] = []
    const div: number[] = []
    for (let r = 0; r < RUNS; r++) {
      base.push(await timeBaseline())
      clean.push(await timeVerify(0, 0))
      div.push(await timeVerify(1, 100))
    }
    const b = median(base)
    const report = [
      `machine: ${os.cpus().length} × ${os.cpus()[0]?.model}, load average ${load0.toFixed(2)} at start, ${os.loadavg()[0].toFixed(2)} at end`,
      `3 nodes × ${ROWS} rows, PostgreSQL ${MAJOR}, --block-rows ${args['block-rows']}, median of ${RUNS}`,
      `baseline  one node: SELECT sum(hashtext(t::text))   ${b.toFixed(0)} ms   (samples ${base.map(x => x.toFixed(0)).join(', ')})`,
      `verify    no difference                          ${median(clean).toFixed(0)} ms   (samples ${clean.map(x => x.toFixed(0)).join(', ')})`,
      `verify    100 divergent rows (found exactly)     ${median(div).toFixed(0)} ms   (samples ${div.map(x => x.toFixed(0)).join(', ')})`,
      `ratio     verify clean / baseline      ${(median(clean) / b).toFixed(2)}   (goal <= 2.0)`,
      `ratio     verify 100 divergent / clean ${(median(div) / median(clean)).toFixed(2)}   (goal <= 1.1)`,
    ]
    for (const l of report) console.log(l)
  } finally {
    await stopAllStarted()
  }
}

await main()
