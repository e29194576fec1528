/**
 * The standby strategy of add-node without servers: its pure helpers (timeline history
 * parsing, WAL receiver sender matching, LSN order), the steps and the SQL each runs, and the
 * decision whether a killed or failed run may re-enable the source's paused subscriptions
 * (with a fake cluster recording every statement and a real journal in a temp dir).
 */
import assert from 'node:assert/strict'
import {mkdtemp} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {parseConfig, type Config} from '../../src/config/config.js'
import {Journal} from '../../src/engine/journal.js'
import type {Cluster} from '../../src/cluster/cluster.js'
import type {AddNodeContext} from '../../src/steps/add-node-context.js'
import {
  buildStandbySteps,
  parseHistorySwitchpoint,
  senderIsSource,
  standbyNames,
  standbyReport,
  standbyStrategy,
  STANDBY_STEP_IDS,
} from '../../src/steps/add-node-standby.js'

function configs(): {cfg: Config; full: Config} {
  const text = (withX: boolean) => `cluster: shop
tables: [public.users]
nodes:
  - {name: s, dsn: "postgresql://repl@s.example/app"}
  - {name: p, dsn: "postgresql://repl@p.example/app"}
  - {name: q, dsn: "postgresql://repl@q.example/app"}
${withX ? '  - {name: x, dsn: "postgresql://repl@x.example/app"}\n' : ''}`
  return {cfg: parseConfig(text(false), 'mmlite.yaml', {}), full: parseConfig(text(true), 'mmlite.yaml', {})}
}

interface Fake {
  cluster: Cluster
  sql: Array<{node: string; sql: string}>
}

/** A cluster whose nodes answer from `answer` and record every statement. */
function fakeCluster(answer: (node: string, sql: string, params: unknown[]) => unknown[] | Error): Fake {
  const log: Fake['sql'] = []
  const node = (name: string) => ({
    name,
    async query(sql: string, params: unknown[] = []) {
      log.push({node: name, sql})
      const r = answer(name, sql, params)
      if (r instanceof Error) throw r
      return r
    },
    async one(sql: string, params: unknown[] = []) {
      return (await this.query(sql, params))[0]
    },
  })
  return {cluster: {node} as unknown as Cluster, sql: log}
}

async function context(versions: Record<string, number>, answer: Parameters<typeof fakeCluster>[0]): Promise<{ctx: AddNodeContext; fake: Fake; journal: Journal}> {
  const {cfg, full} = configs()
  const dir = await mkdtemp(path.join(os.tmpdir(), 'mmlite-unit-'))
  const journal = Journal.open(path.join(dir, 'mmlite.yaml'), 'shop')
  const fake = fakeCluster(answer)
  const ctx: AddNodeContext = {
    cfg,
    full,
    x: full.nodes.find(n => n.name === 'x')!,
    source: 's',
    others: ['p', 'q'],
    versions: new Map(Object.entries(versions)),
    cluster: fake.cluster,
    journal,
    timeoutMs: 1000,
    jobs: 1,
  }
  return {ctx, fake, journal}
}

describe('add-node standby: helpers', () => {
  it('reads the newest switch point from a timeline history file', () => {
    assert.deepEqual(parseHistorySwitchpoint('1\t0/30003D8\tno recovery target specified\n'), {parentTli: 1, lsn: '0/30003D8'})
    assert.deepEqual(
      parseHistorySwitchpoint('1\t0/3000158\tno recovery target specified\n\n2\t1/a0000028\tbefore 2026-01-01\n'),
      {parentTli: 2, lsn: '1/A0000028'},
    )
    assert.equal(parseHistorySwitchpoint(''), undefined)
    assert.equal(parseHistorySwitchpoint('# comment only\n'), undefined)
    assert.equal(parseHistorySwitchpoint('garbage\n'), undefined)
  })

  it('matches the WAL receiver sender against the source', () => {
    const src = {hosts: ['db1.example', '10.0.0.1'], ports: [5432], socketDirs: ['/var/run/postgresql']}
    assert.equal(senderIsSource({host: '10.0.0.1', port: 5432}, src), true)
    assert.equal(senderIsSource({host: 'db1.example', port: 5432}, src), true)
    assert.equal(senderIsSource({host: '10.0.0.1', port: 5433}, src), false, 'another port is another server')
    assert.equal(senderIsSource({host: '10.0.0.2', port: 5432}, src), false)
    assert.equal(senderIsSource({host: '/var/run/postgresql', port: 5432}, src), true)
    assert.equal(senderIsSource({host: '/tmp', port: 5432}, src), false)
    assert.equal(senderIsSource({host: null, port: null}, src), false)
    // loopback spelled differently on both sides
    assert.equal(senderIsSource({host: '127.0.0.1', port: 6000}, {hosts: ['localhost'], ports: [6000], socketDirs: []}), true)
    assert.equal(senderIsSource({host: '127.0.0.1', port: 6000}, {hosts: ['db1.example'], ports: [6000], socketDirs: []}), false)
  })

  it('names every object from the cluster and node names, with the mechanism of each link', () => {
    const {full} = configs()
    const mixed = standbyNames({full, x: full.nodes[3], source: 's', others: ['p', 'q'], versions: new Map([['s', 150004], ['x', 150004], ['p', 180001], ['q', 170002]])})
    assert.deepEqual(mixed.inbound, [
      {p: 'p', sub: 'shop_p_s', newSub: 'shop_p_x'},
      {p: 'q', sub: 'shop_q_s', newSub: 'shop_q_x'},
    ])
    assert.equal(mixed.sourceEdge.name, 'shop_s_x')
    // X is 15 (same major as S): every link touching it needs the plugin
    assert.deepEqual([mixed.sourceEdge, ...mixed.peerInEdges, ...mixed.outEdges].map(e => `${e.name}:${e.plugin}`), [
      'shop_s_x:mmlite',
      'shop_p_x:mmlite',
      'shop_q_x:mmlite',
      'shop_x_s:mmlite',
      'shop_x_p:mmlite',
      'shop_x_q:mmlite',
    ])
    const native = standbyNames({full, x: full.nodes[3], source: 's', others: ['p', 'q'], versions: new Map([['s', 180001], ['x', 180001], ['p', 160003], ['q', 170002]])})
    assert.ok([native.sourceEdge, ...native.peerInEdges, ...native.outEdges].every(e => e.mechanism === 'native' && e.plugin === 'pgoutput'))
  })
})

describe('add-node standby: steps and SQL', () => {
  it('has the documented steps, in order, with quoted SQL', async () => {
    const {ctx} = await context({s: 180001, p: 180001, q: 180001, x: 180001}, () => [])
    const steps = buildStandbySteps(ctx)
    assert.deepEqual(steps.map(s => s.id), [
      'source-slot',
      'pause-source',
      'copy-slots',
      'catch-up',
      'promote',
      'rollback-inherited-prepared',
      'resume-source',
      'drop-inherited-slots',
      'new-node-slots',
      'repoint-subscriptions',
      'source-subscription',
      'drop-feed-slot',
      'peer-subscriptions',
      'sequence-residue',
      'wait-streaming',
    ])
    assert.deepEqual(steps.map(s => s.id), [...STANDBY_STEP_IDS])
    const sqlOf = (id: string) => steps.find(s => s.id === id)!.actions.flatMap(a => a.sql.map(q => `[${a.node}] ${q}`))
    assert.deepEqual(sqlOf('source-slot'), ["[s] SELECT pg_create_logical_replication_slot('shop_s_x', 'pgoutput')"])
    assert.deepEqual(sqlOf('pause-source'), ['[s] ALTER SUBSCRIPTION "shop_p_s" DISABLE', '[s] ALTER SUBSCRIPTION "shop_q_s" DISABLE'])
    assert.deepEqual(sqlOf('copy-slots'), [
      "[p] SELECT pg_copy_logical_replication_slot('shop_p_s', 'shop_p_x', false, 'pgoutput')",
      "[q] SELECT pg_copy_logical_replication_slot('shop_q_s', 'shop_q_x', false, 'pgoutput')",
    ])
    assert.deepEqual(sqlOf('resume-source'), ['[s] ALTER SUBSCRIPTION "shop_p_s" ENABLE', '[s] ALTER SUBSCRIPTION "shop_q_s" ENABLE'])
    assert.deepEqual(sqlOf('repoint-subscriptions'), [
      '[x] ALTER SUBSCRIPTION "shop_p_s" RENAME TO "shop_p_x"',
      `[x] ALTER SUBSCRIPTION "shop_p_x" SET (slot_name = 'shop_p_x')`,
      '[x] ALTER SUBSCRIPTION "shop_p_x" ENABLE',
      '[x] ALTER SUBSCRIPTION "shop_q_s" RENAME TO "shop_q_x"',
      `[x] ALTER SUBSCRIPTION "shop_q_x" SET (slot_name = 'shop_q_x')`,
      '[x] ALTER SUBSCRIPTION "shop_q_x" ENABLE',
    ])
    const src = sqlOf('source-subscription')
    assert.match(src[0], /^\[x\] CREATE SUBSCRIPTION "shop_s_x"/)
    assert.match(src[0], /WITH \(create_slot = false, slot_name = 'shop_s_x', copy_data = false, enabled = false, origin = none, streaming = on\)/)
    assert.match(src[1], /pg_replication_origin_advance\('pg_' \|\| \(SELECT oid FROM pg_subscription WHERE subname = 'shop_s_x'/)
    assert.equal(src[2], '[x] ALTER SUBSCRIPTION "shop_s_x" ENABLE')
    assert.deepEqual(sqlOf('drop-inherited-slots'), [
      "[x] SELECT pg_drop_replication_slot('shop_s_p')",
      "[x] SELECT pg_drop_replication_slot('shop_s_q')",
      "[x] SELECT pg_drop_replication_slot('shop_s_x')",
    ])
    assert.deepEqual(
      steps.find(s => s.id === 'peer-subscriptions')!.actions.map(a => a.node),
      ['s', 'p', 'q'],
    )
    assert.equal(steps.find(s => s.id === 'wait-streaming')!.actions.length, 1 + 2 + 3 + 2)
  })
})

describe('add-node standby: re-enabling a paused source after a killed or failed run', () => {
  const PAUSED = [
    {node: 's', subscription: 'shop_p_s', since: new Date(Date.now() - 5000).toISOString()},
    {node: 's', subscription: 'shop_q_s', since: new Date(Date.now() - 5000).toISOString()},
  ]
  const answers = (xRecovery: boolean | Error) => (node: string, sql: string): unknown[] | Error => {
    if (/pg_is_in_recovery/.test(sql) && node === 'x') return xRecovery instanceof Error ? xRecovery : [{r: xRecovery}]
    if (/FROM pg_subscription s/.test(sql) && node === 's') {
      return [
        {oid: '1', subname: 'shop_p_s', enabled: false, slot: 'shop_p_s', workers: 0},
        {oid: '2', subname: 'shop_q_s', enabled: false, slot: 'shop_q_s', workers: 0},
      ]
    }
    return []
  }
  const enables = (f: Fake) => f.sql.filter(q => /ENABLE/.test(q.sql)).map(q => `${q.node}: ${q.sql}`)

  async function paused(xRecovery: boolean | Error, values: Record<string, unknown>) {
    const t = await context({s: 150004, p: 150004, q: 150004, x: 150004}, answers(xRecovery))
    await t.journal.begin('add-node:x', 'add-node')
    await t.journal.set('pausedSubscriptions', PAUSED)
    for (const [k, v] of Object.entries(values)) await t.journal.set(k, v)
    return t
  }

  it('X still a standby and no promotion asked for: re-enable, forget the replay target, record the pause', async () => {
    const {ctx, fake, journal} = await paused(true, {replayTarget: '0/5000000'})
    const lines = await standbyStrategy.recover!(ctx)
    assert.match(lines.join('\n'), /re-enabled on s the subscription\(s\) an interrupted run had paused .*shop_p_s, shop_q_s/)
    assert.deepEqual(enables(fake), ['s: ALTER SUBSCRIPTION "shop_p_s" ENABLE', 's: ALTER SUBSCRIPTION "shop_q_s" ENABLE'])
    assert.deepEqual(journal.get('pausedSubscriptions'), [])
    assert.equal(journal.get('replayTarget'), undefined, 'the next pause needs a new replay target')
    const pauses = journal.get<Array<{ms: number | null; recoveredAfterMs: number}>>('pauses')!
    assert.equal(pauses.length, 1)
    assert.equal(pauses[0].ms, null)
    assert.ok(pauses[0].recoveredAfterMs >= 5000)
    assert.equal((standbyReport(ctx).sourcePause as {ms: number | null}).ms, null)
  })

  it('X promoted: re-enable (X replays nothing of the source any more)', async () => {
    const {ctx, fake, journal} = await paused(false, {replayTarget: '0/5000000', promoteRequestedAt: new Date().toISOString(), promotedLsn: '0/5000100'})
    await standbyStrategy.recover!(ctx)
    assert.equal(enables(fake).length, 2)
    assert.equal(journal.get('replayTarget'), '0/5000000')
  })

  it('promotion asked for but X still in recovery: stay paused (X could still replay the ENABLE)', async () => {
    const {ctx, fake, journal} = await paused(true, {replayTarget: '0/5000000', promoteRequestedAt: new Date().toISOString()})
    const lines = await standbyStrategy.recover!(ctx)
    assert.match(lines.join('\n'), /stay paused until the promotion of x has finished/)
    assert.deepEqual(enables(fake), [])
    assert.equal(journal.get<unknown[]>('pausedSubscriptions')!.length, 2)
  })

  it('X unreachable: stay paused (whether it was promoted is unknown)', async () => {
    const {ctx, fake} = await paused(new Error('connection refused'), {})
    const lines = await standbyStrategy.recover!(ctx)
    assert.match(lines.join('\n'), /stay paused: x cannot be reached/)
    assert.deepEqual(enables(fake), [])
  })

  it('cleanup does nothing unless this process ran a step (never after a dry run)', async () => {
    const {ctx, fake} = await paused(true, {})
    buildStandbySteps(ctx)
    await standbyStrategy.cleanup!(ctx)
    assert.deepEqual(fake.sql, [])
  })
})
