/**
 * The init plan (src/steps/init.ts buildInitSteps / chooseSeed), the SQL each action runs
 * (src/steps/mesh.ts) and the preflight helpers (src/steps/preflight.ts). No servers: the
 * steps are only built and inspected.
 */
import assert from 'node:assert/strict'
import {parseConfig, type Config} from '../../src/config/config.js'
import {parseConnInfo} from '../../src/db/conninfo.js'
import {REDACTED} from '../../src/db/redact.js'
import {buildInitSteps, chooseSeed} from '../../src/steps/init.js'
import {createSubscriptionSql, makeEdge} from '../../src/steps/mesh.js'
import {capacityNeeds, otherOperationsProblems, pluginLibrariesFix, type NodeTables} from '../../src/steps/preflight.js'
import type {NodeFacts} from '../../src/cluster/capabilities.js'
import type {Step} from '../../src/engine/types.js'

// node a's password: a quote, a backslash and a space
const PASSWORD = String.raw`p'w\d x`

function config(extra = ''): Config {
  return parseConfig(
    `cluster: shop
tables:
  - public.users
  - sales."Order Items"
nodes:
  - name: a
    dsn: 'host=a.example port=5432 dbname=shop user=repl password=''p\\''w\\\\d x'''
  - name: b
    dsn: postgresql://repl@b.example/shop
  - name: c
    dsn: postgresql://repl@c.example/shop
    peer_dsn: host=c.internal dbname=shop user=repl
${extra}`,
    'mmlite.yaml',
    {},
  )
}

const versions = (a: number, b: number, c: number) =>
  new Map([
    ['a', a],
    ['b', b],
    ['c', c],
  ])

const ids = (steps: Step[]) => steps.map(s => s.id)
const step = (steps: Step[], id: string) => {
  const s = steps.find(x => x.id === id)
  assert.ok(s, `no step ${id} in ${ids(steps).join(', ')}`)
  return s
}
const labels = (s: Step) => s.actions.map(a => `${a.node}: ${a.label}`)
const allSql = (s: Step) => s.actions.flatMap(a => a.sql)
/** the slot creations of a step (a non-seed node's come inside its lock-and-check transaction) */
const slotSql = (s: Step) => allSql(s).filter(q => q.includes('pg_create_logical_replication_slot'))

/** decode a SQL string literal ('...' or E'...') as PostgreSQL would */
function sqlLiteralValue(lit: string): string {
  const e = lit.startsWith("E'")
  const body = lit.slice(e ? 2 : 1, -1)
  return body.replace(e ? /''|\\\\/g : /''/g, m => (m === "''" ? "'" : '\\'))
}

const SEED_OPTS = {seed: 'a', noCopy: false, timeoutMs: 1000}

describe('plan: config fixture', () => {
  it('node a has the nasty password', () => {
    assert.equal(config().nodes[0].conn.get('password'), PASSWORD)
  })
})

describe('plan: buildInitSteps (3 nodes, seed a)', () => {
  it('step ids in order', () => {
    const steps = buildInitSteps(config(), versions(150000, 150000, 180000), SEED_OPTS)
    assert.deepEqual(ids(steps), ['publications', 'slots', 'seed-subscriptions', 'wait-initial-copy', 'mesh-subscriptions', 'streaming', 'wait-streaming'])
  })

  it('publications: one per node, exact SQL with quoted table names', () => {
    const s = step(buildInitSteps(config(), versions(150000, 150000, 180000), SEED_OPTS), 'publications')
    assert.deepEqual(
      s.actions.map(a => a.node),
      ['a', 'b', 'c'],
    )
    for (const a of s.actions) assert.deepEqual(a.sql, ['CREATE PUBLICATION "shop" FOR TABLE "public"."users", "sales"."Order Items"'])
  })

  it('slots: all six edges; plugin mmlite for 15↔15 and 15↔18, pgoutput for 16↔18', () => {
    const s = step(buildInitSteps(config(), versions(150000, 160000, 180000), SEED_OPTS), 'slots')
    assert.deepEqual(slotSql(s), [
      "SELECT pg_create_logical_replication_slot('shop_a_b', 'mmlite')", // 15→16
      "SELECT pg_create_logical_replication_slot('shop_a_c', 'mmlite')", // 15→18
      "SELECT pg_create_logical_replication_slot('shop_b_a', 'mmlite')", // 16→15
      "SELECT pg_create_logical_replication_slot('shop_b_c', 'pgoutput')", // 16→18
      "SELECT pg_create_logical_replication_slot('shop_c_a', 'mmlite')", // 18→15
      "SELECT pg_create_logical_replication_slot('shop_c_b', 'pgoutput')", // 18→16
    ])
    // each slot is created on its publisher; a non-seed node's under a SHARE lock of its tables, checked empty
    assert.deepEqual(
      s.actions.map(a => a.node),
      ['a', 'a', 'b', 'c'],
    )
    assert.deepEqual(s.actions[2].sql.slice(0, 3), ['BEGIN', 'LOCK TABLE "public"."users", "sales"."Order Items" IN SHARE MODE', 'SELECT EXISTS (SELECT 1 FROM "public"."users") OR EXISTS (SELECT 1 FROM "sales"."Order Items") AS has'])
    assert.equal(s.actions[2].sql.at(-1), 'COMMIT')
  })

  it('slots between two PostgreSQL 15 nodes use mmlite', () => {
    const s = step(buildInitSteps(config(), versions(150000, 150000, 150000), SEED_OPTS), 'slots')
    for (const sql of slotSql(s)) assert.match(sql, /, 'mmlite'\)$/)
    assert.equal(slotSql(s).length, 6)
  })

  it('seed subscriptions: copy_data = true, exact SQL, password redacted in the plan', () => {
    const s = step(buildInitSteps(config(), versions(150000, 160000, 180000), SEED_OPTS), 'seed-subscriptions')
    assert.deepEqual(
      s.actions.map(a => a.node),
      ['b', 'c'],
    )
    assert.deepEqual(s.actions[0].sql, [
      'CREATE SUBSCRIPTION "shop_a_b"\n' +
        `  CONNECTION 'host=''a.example'' port=''5432'' dbname=''shop'' user=''repl'' password=''${REDACTED}'''\n` +
        '  PUBLICATION "shop"\n' +
        "  WITH (create_slot = false, slot_name = 'shop_a_b', copy_data = true, enabled = true, streaming = off)",
    ])
    for (const sql of allSql(s)) {
      assert.ok(!sql.includes('p\\') && !sql.includes("p''w") && !sql.includes('d x'), sql)
      assert.match(sql, /copy_data = true/)
    }
  })

  it('mesh subscriptions: copy_data = false; origin = none only on native (16+↔16+) edges', () => {
    const steps = buildInitSteps(config(), versions(150000, 160000, 180000), SEED_OPTS)
    const s = step(steps, 'mesh-subscriptions')
    assert.deepEqual(labels(s), [
      'a: subscription shop_b_a from b',
      'c: subscription shop_b_c from b',
      'a: subscription shop_c_a from c',
      'b: subscription shop_c_b from c',
    ])
    const byName = new Map(s.actions.map(a => [a.label.split(' ')[1], a.sql[0]]))
    assert.equal(
      byName.get('shop_b_c'),
      'CREATE SUBSCRIPTION "shop_b_c"\n' +
        "  CONNECTION 'user=''repl'' host=''b.example'' dbname=''shop'''\n" +
        '  PUBLICATION "shop"\n' +
        "  WITH (create_slot = false, slot_name = 'shop_b_c', copy_data = false, enabled = true, origin = none, streaming = on)",
    )
    // c's peer_dsn, not its dsn, goes into subscriptions to c
    assert.equal(
      byName.get('shop_c_b'),
      'CREATE SUBSCRIPTION "shop_c_b"\n' +
        "  CONNECTION 'host=''c.internal'' dbname=''shop'' user=''repl'''\n" +
        '  PUBLICATION "shop"\n' +
        "  WITH (create_slot = false, slot_name = 'shop_c_b', copy_data = false, enabled = true, origin = none, streaming = on)",
    )
    for (const n of ['shop_b_a', 'shop_c_a']) {
      assert.doesNotMatch(byName.get(n)!, /origin/, n)
      assert.match(byName.get(n)!, /copy_data = false/)
    }
    // and seed edges: 15→16 and 15→18 are plugin edges: no origin
    for (const sql of allSql(step(steps, 'seed-subscriptions'))) assert.doesNotMatch(sql, /origin/)
  })

  it('all 16+: every subscription has origin = none and every slot pgoutput', () => {
    const steps = buildInitSteps(config(), versions(160000, 170000, 180000), SEED_OPTS)
    const subs = [...allSql(step(steps, 'seed-subscriptions')), ...allSql(step(steps, 'mesh-subscriptions'))]
    assert.equal(subs.length, 6)
    for (const sql of subs) assert.match(sql, /, origin = none, streaming = on\)$/)
    for (const sql of slotSql(step(steps, 'slots'))) assert.match(sql, /'pgoutput'\)$/)
  })

  it('disable_on_error = true only when configured and the subscriber is 15+', () => {
    const on = config('disable_on_error: true\n')
    const steps = buildInitSteps(on, versions(140000, 150000, 180000), SEED_OPTS)
    const subs = [...step(steps, 'seed-subscriptions').actions, ...step(steps, 'mesh-subscriptions').actions]
    assert.equal(subs.length, 6)
    for (const a of subs) {
      if (a.node === 'a') assert.doesNotMatch(a.sql[0], /disable_on_error/, 'subscriber a is PG 14')
      else assert.match(a.sql[0], /, disable_on_error = true, streaming = (on|off)\)$/, a.label)
    }
    // 16↔18 native edge with disable_on_error: both options
    const both = buildInitSteps(on, versions(140000, 160000, 180000), SEED_OPTS)
    const bc = step(both, 'mesh-subscriptions').actions.find(a => a.label.startsWith('subscription shop_b_c'))!
    assert.match(bc.sql[0], /enabled = true, origin = none, disable_on_error = true, streaming = on\)$/)
    // not configured: never
    const off = buildInitSteps(config(), versions(150000, 160000, 180000), SEED_OPTS)
    for (const s of off) for (const sql of allSql(s)) assert.doesNotMatch(sql, /disable_on_error/)
  })

  it('createSubscriptionSql(..., false) carries the real password, libpq- and SQL-quoted', () => {
    const cfg = config()
    const vs = versions(150000, 160000, 180000)
    const sql = createSubscriptionSql(cfg, makeEdge(cfg, 'a', 'b', vs), {copyData: true, subscriberVersion: 160000}, false)
    assert.equal(
      sql,
      'CREATE SUBSCRIPTION "shop_a_b"\n' +
        String.raw`  CONNECTION E'host=''a.example'' port=''5432'' dbname=''shop'' user=''repl'' password=''p\\''w\\\\d x'''` +
        '\n  PUBLICATION "shop"\n' +
        "  WITH (create_slot = false, slot_name = 'shop_a_b', copy_data = true, enabled = true, streaming = off)",
    )
    // what the server receives decodes back to the original conninfo
    const lit = /CONNECTION (E?'.*')\n/.exec(sql)![1]
    const conninfo = parseConnInfo(sqlLiteralValue(lit))
    assert.equal(conninfo.get('password'), PASSWORD)
    assert.deepEqual([...conninfo], [...cfg.nodes[0].peerConn])
    // the redacted rendering of the same statement does not have it
    const red = createSubscriptionSql(cfg, makeEdge(cfg, 'a', 'b', vs), {copyData: true, subscriberVersion: 160000}, true)
    assert.equal(sqlLiteralValue(/CONNECTION (E?'.*')\n/.exec(red)![1]).includes(`password='${REDACTED}'`), true)
  })

  it('waits: initial copy on the seed edges, streaming on every edge, no SQL', () => {
    const steps = buildInitSteps(config(), versions(150000, 160000, 180000), SEED_OPTS)
    assert.deepEqual(labels(step(steps, 'wait-initial-copy')), ['b: wait for initial copy a→b', 'c: wait for initial copy a→c'])
    assert.equal(step(steps, 'wait-streaming').actions.length, 6)
    assert.deepEqual(allSql(step(steps, 'wait-streaming')), [])
  })

  it('throws without a seed unless --no-copy', () => {
    assert.throws(() => buildInitSteps(config(), versions(150000, 150000, 150000), {noCopy: false, timeoutMs: 1}), /without a seed/)
  })
})

describe('plan: --no-copy', () => {
  const steps = buildInitSteps(config(), versions(130000, 150000, 180000), {seed: 'a', noCopy: true, timeoutMs: 1000})

  it('has no seed steps and no late slots (even with a PG 13 node)', () => {
    assert.deepEqual(ids(steps), ['publications', 'slots', 'mesh-subscriptions', 'streaming', 'wait-streaming'])
    assert.equal(step(steps, 'slots').actions.length, 6)
  })

  it('every one of the six subscriptions has copy_data = false', () => {
    const subs = allSql(step(steps, 'mesh-subscriptions'))
    assert.equal(subs.length, 6)
    for (const sql of subs) {
      assert.match(sql, /copy_data = false/)
      assert.doesNotMatch(sql, /copy_data = true/)
    }
  })
})

describe('plan: PostgreSQL 13 nodes', () => {
  it('a non-seed PG 13 node gets its outbound slots in late-slots, after wait-initial-copy', () => {
    const steps = buildInitSteps(config(), versions(160000, 130000, 180000), SEED_OPTS)
    assert.deepEqual(ids(steps), ['publications', 'slots', 'seed-subscriptions', 'wait-initial-copy', 'late-slots', 'mesh-subscriptions', 'streaming', 'wait-streaming'])
    assert.deepEqual(labels(step(steps, 'late-slots')), ['b: slot shop_b_a (mmlite)', 'b: slot shop_b_c (mmlite)'])
    assert.deepEqual(labels(step(steps, 'slots')), ['a: slot shop_a_b (mmlite)', 'a: slot shop_a_c (pgoutput)', 'c: slots shop_c_a, shop_c_b (tables locked and checked empty)'])
    // every slot exists exactly once across both steps
    const all = [...slotSql(step(steps, 'slots')), ...slotSql(step(steps, 'late-slots'))]
    assert.equal(new Set(all).size, 6)
  })

  it('a PG 13 seed keeps its slots early (its copy is the source, not a destination)', () => {
    const steps = buildInitSteps(config(), versions(130000, 150000, 180000), SEED_OPTS)
    assert.ok(!ids(steps).includes('late-slots'))
    assert.equal(slotSql(step(steps, 'slots')).length, 6)
  })

  it('PG 14 non-seed nodes do not need late slots', () => {
    const steps = buildInitSteps(config(), versions(140000, 140000, 140000), SEED_OPTS)
    assert.ok(!ids(steps).includes('late-slots'))
  })
})

describe('plan: chooseSeed', () => {
  const cfg = config()
  /** data per node: [users, order items] */
  function pf(data: Record<string, boolean[]>, subscribed: string[] = []) {
    const tables = new Map<string, NodeTables>()
    for (const n of ['a', 'b', 'c']) tables.set(n, {columns: [[], []], hasData: data[n] ?? [false, false]})
    return {tables, subscribed: new Set(subscribed)}
  }

  it('data on one node → that node', () => {
    assert.deepEqual(chooseSeed(cfg, pf({b: [false, true]}), {noCopy: false}), {seed: 'b', noCopy: false, problems: []})
  })

  it('no data anywhere → the first node', () => {
    assert.deepEqual(chooseSeed(cfg, pf({}), {noCopy: false}), {seed: 'a', noCopy: false, problems: []})
  })

  it('data on two nodes → a problem naming them and suggesting --no-copy', () => {
    const r = chooseSeed(cfg, pf({a: [true, false], c: [true, true]}), {noCopy: false})
    assert.equal(r.seed, undefined)
    assert.equal(r.problems.length, 1)
    const p = r.problems[0]
    assert.equal(p.check, 'data')
    assert.match(p.message, /a: public\.users; c: public\.users, sales\."Order Items"/)
    assert.match(p.fix!, /--no-copy/)
  })

  it('--seed on the node with data is fine; --seed elsewhere while another node has data is a problem', () => {
    assert.deepEqual(chooseSeed(cfg, pf({b: [true, false]}), {seed: 'b', noCopy: false}), {seed: 'b', noCopy: false, problems: []})
    assert.deepEqual(chooseSeed(cfg, pf({}), {seed: 'c', noCopy: false}), {seed: 'c', noCopy: false, problems: []})
    const r = chooseSeed(cfg, pf({b: [true, false]}), {seed: 'c', noCopy: false})
    assert.equal(r.problems.length, 1)
    assert.equal(r.problems[0].check, 'data')
  })

  it('the journal seed wins over data detection and first-node default', () => {
    assert.deepEqual(chooseSeed(cfg, pf({}), {journalSeed: 'c', noCopy: false}), {seed: 'c', noCopy: false, problems: []})
    // resuming: b already got c's data through its subscription
    assert.deepEqual(chooseSeed(cfg, pf({b: [true, true], c: [true, true]}, ['b']), {journalSeed: 'c', noCopy: false}), {seed: 'c', noCopy: false, problems: []})
    assert.deepEqual(chooseSeed(cfg, pf({}), {journalSeed: 'c', seed: 'c', noCopy: false}), {seed: 'c', noCopy: false, problems: []})
  })

  it('a --seed that disagrees with the journal is a problem', () => {
    const r = chooseSeed(cfg, pf({}), {journalSeed: 'c', seed: 'b', noCopy: false})
    assert.equal(r.seed, undefined)
    assert.equal(r.problems.length, 1)
    assert.match(r.problems[0].message, /copying from c; --seed b disagrees/)
  })

  it('--seed of an unknown node → a problem listing the nodes', () => {
    const r = chooseSeed(cfg, pf({}), {seed: 'zz', noCopy: false})
    assert.equal(r.seed, undefined)
    assert.equal(r.problems.length, 1)
    assert.equal(r.problems[0].check, 'seed')
    assert.match(r.problems[0].message, /--seed zz is not a node/)
    assert.match(r.problems[0].fix!, /a, b, c/)
  })

  it('nodes that already hold a subscription are ignored in data detection', () => {
    assert.deepEqual(chooseSeed(cfg, pf({a: [true, true], b: [true, false]}, ['b']), {noCopy: false}), {seed: 'a', noCopy: false, problems: []})
    assert.deepEqual(chooseSeed(cfg, pf({a: [true, true], b: [true, true], c: [false, true]}, ['a', 'b']), {noCopy: false}), {seed: 'c', noCopy: false, problems: []})
  })

  it('resumed: data on a non-seed node whose outbound slots all exist was written during init (accepted)', () => {
    const slots = new Map([['b', new Set(['shop_b_a', 'shop_b_c'])], ['c', new Set(['shop_c_a'])]])
    assert.deepEqual(chooseSeed(cfg, pf({a: [true, true], b: [true, false]}), {journalSeed: 'a', noCopy: false, slots}), {seed: 'a', noCopy: false, problems: []})
    // c has data but one of its slots is missing: refused, with advice that stays local (drop the partial slot first)
    const r = chooseSeed(cfg, pf({a: [true, true], c: [true, false]}), {journalSeed: 'a', noCopy: false, slots})
    assert.equal(r.problems.length, 1)
    assert.equal(r.problems[0].node, 'c')
    assert.match(r.problems[0].fix!, /pg_drop_replication_slot\('shop_c_a'\).*remove them from c/)
    assert.doesNotMatch(r.problems[0].fix!, /empty the/i)
  })

  it('fresh run with data on two nodes, one with slots of the cluster: no advice to empty tables there', () => {
    const slots = new Map([['c', new Set(['shop_c_a'])]])
    const r = chooseSeed(cfg, pf({a: [true, false], c: [true, true]}), {noCopy: false, slots})
    assert.equal(r.problems.length, 1)
    assert.match(r.problems[0].fix!, /c has slots of this cluster \(shop_c_a\).*do not empty tables while they exist/)
  })

  it('the journal\'s mode wins: a recorded --no-copy stays no-copy; --no-copy against a recorded seed is refused', () => {
    assert.deepEqual(chooseSeed(cfg, pf({a: [true, true], b: [true, true]}), {journalNoCopy: true, noCopy: false}), {noCopy: true, problems: []})
    const r = chooseSeed(cfg, pf({}), {journalSeed: 'a', noCopy: true})
    assert.equal(r.problems.length, 1)
    assert.match(r.problems[0].message, /copying from a; --no-copy disagrees/)
    const r2 = chooseSeed(cfg, pf({}), {journalNoCopy: true, seed: 'b', noCopy: false})
    assert.match(r2.problems[0].message, /runs with --no-copy; --seed b disagrees/)
  })

  it('--no-copy: no seed and no data problem', () => {
    const r = chooseSeed(cfg, pf({a: [true, true], b: [true, true]}), {noCopy: true})
    assert.equal(r.seed, undefined)
    assert.deepEqual(r.problems, [])
  })
})

describe('plan: preflight helpers', () => {
  it('pluginLibrariesFix appends the missing plugin as its own literal', () => {
    assert.deepEqual(pluginLibrariesFix(['pgoutput', 'test_decoding'], ['pgoutput', 'mmlite']), {
      missing: ['mmlite'],
      sql: "ALTER SYSTEM SET output_plugin_libraries = 'pgoutput', 'test_decoding', 'mmlite'; SELECT pg_reload_conf();",
    })
  })

  it('pluginLibrariesFix: nothing when already listed', () => {
    assert.equal(pluginLibrariesFix(['pgoutput', 'test_decoding', 'mmlite'], ['pgoutput', 'mmlite']), undefined)
    assert.equal(pluginLibrariesFix(['mmlite', 'pgoutput'], ['pgoutput']), undefined)
  })

  it('pluginLibrariesFix: empty list gets both', () => {
    assert.equal(
      pluginLibrariesFix([], ['pgoutput', 'mmlite'])!.sql,
      "ALTER SYSTEM SET output_plugin_libraries = 'pgoutput', 'mmlite'; SELECT pg_reload_conf();",
    )
  })

  it('capacityNeeds: N−1 peers plus headroom, other slots counted', () => {
    const f = {otherSlots: 2} as NodeFacts
    assert.deepEqual(capacityNeeds(3, f, 0), {maxReplicationSlots: 6, maxWalSenders: 4, maxLogicalReplicationWorkers: 4, maxWorkerProcesses: 6})
    assert.deepEqual(capacityNeeds(5, {otherSlots: 0} as NodeFacts, 1), {maxReplicationSlots: 7, maxWalSenders: 7, maxLogicalReplicationWorkers: 6, maxWorkerProcesses: 8})
  })
})

describe('plan: one operation at a time', () => {
  it('otherOperationsProblems names every unfinished operation but the allowed ones, with the command that finishes it', () => {
    const u = [
      {key: 'init', op: {command: 'init', startedAt: 't0'}},
      {key: 'add-node:x', op: {command: 'add-node', startedAt: 't1'}},
      {key: 'remove-node:y', op: {command: 'remove-node', startedAt: 't2'}},
    ]
    const p = otherOperationsProblems(u, ['init', 'remove-node:y'])
    assert.equal(p.length, 1)
    assert.match(p[0].message, /another mmlite operation is unfinished: add-node:x \(started t1\)/)
    assert.match(p[0].fix!, /`mmlite add-node x`/)
    assert.deepEqual(otherOperationsProblems(u, ['init', 'add-node:x', 'remove-node:y']), [])
  })
})
