/**
 * `mmlite doctor` checks as pure functions over collected facts: the known-bug table, sequence
 * staggering (stride, residues), WAL bounds and the invalidation forecast, slots and links,
 * orphans (cluster-named, tablesync, origins) and unfinished operations, health and exit codes.
 */
import assert from 'node:assert/strict'
import {parseConfig} from '../../src/config/config.js'
import {edgeName} from '../../src/cluster/naming.js'
import {bugsAffecting, checkMinors} from '../../src/steps/doctor/checks/minors.js'
import {checkSequences, residues, strideFor, groupSequences} from '../../src/steps/doctor/checks/sequences.js'
import {checkWal, suggestedKeepSize} from '../../src/steps/doctor/checks/wal.js'
import {checkOrphans} from '../../src/steps/doctor/checks/orphans.js'
import {checkSubscriptions} from '../../src/steps/doctor/checks/subscriptions.js'
import {STALE_PREPARED_S, checkPrepared} from '../../src/steps/doctor/checks/prepared.js'
import {lockSlotName} from '../../src/engine/lock.js'
import {exitCodeForDoctor, healthOf, runChecks} from '../../src/steps/doctor/doctor.js'
import type {DoctorInput, NodeFacts, SequenceFact} from '../../src/steps/doctor/types.js'

const cfg = parseConfig(
  ['cluster: shop', 'tables:', '  - public.users', 'nodes:', '  - name: a', '    dsn: host=h1 dbname=d', '  - name: b', '    dsn: host=h2 dbname=d', '  - name: c', '    dsn: host=h3 dbname=d'].join('\n'),
  '/tmp/mmlite.yaml',
  {},
)
const NODES = ['a', 'b', 'c']
const GB = 1024 ** 3

function facts(name: string, over: Partial<NodeFacts> = {}): NodeFacts {
  const others = NODES.filter(n => n !== name)
  return {
    name,
    versionNum: 180004,
    version: '18.4',
    systemIdentifier: String(1001 + NODES.indexOf(name)),
    inRecovery: false,
    maxSlotWalKeepSize: 10 * GB,
    trackCommitTimestamp: true,
    outputPluginLibraries: null,
    walRate: 1000,
    slots: others.map(o => ({slot_name: edgeName('shop', name, o), plugin: 'pgoutput', slot_type: 'logical', active: true, wal_status: 'reserved', safe_wal_size: 9 * GB, retained_bytes: 1000})),
    subscriptions: others.map((o, i) => ({oid: 100 + i, subname: edgeName('shop', o, name), enabled: true, worker_running: true, apply_error_count: 0, sync_error_count: 0, conflicts: null, syncing_relids: []})),
    publications: ['shop'],
    origins: ['pg_100', 'pg_101'],
    tables: [{table: 'public.users', qualified: '"public"."users"', exists: true, replident: 'd', has_pk: true, has_identity_index: false}],
    shapes: [],
    sequences: [],
    maxPreparedTransactions: 10,
    prepared: [],
    ...over,
  }
}

function input(over: Record<string, Partial<NodeFacts>> = {}, unfinished: DoctorInput['unfinished'] = []): DoctorInput {
  return {cfg, unfinished, nodes: NODES.map(n => ({name: n, reachable: true, facts: facts(n, over[n] ?? {})}))}
}

function seq(next: string, increment = 1): SequenceFact {
  return {table: 'public.users', qualified: '"public"."users"', column: 'id', sequence: '"public"."users_id_seq"', increment, min_value: '1', max_value: '9223372036854775807', next_value: next}
}

describe('doctor checks', () => {
  it('a healthy, bounded, staggered mesh has no finding: ok, exit 0', () => {
    const i = input({a: {sequences: [seq('11', 10)]}, b: {sequences: [seq('22', 10)]}, c: {sequences: [seq('33', 10)]}})
    const f = runChecks(i)
    assert.deepEqual(f, [])
    assert.equal(healthOf(i.nodes, f), 'ok')
    assert.equal(exitCodeForDoctor('ok'), 0)
    assert.equal(exitCodeForDoctor('warning'), 1)
    assert.equal(exitCodeForDoctor('critical'), 2)
    assert.equal(exitCodeForDoctor('unknown'), 3)
  })

  it('known bugs: affected minors only, with the fixed version', () => {
    assert.deepEqual(bugsAffecting(160013).map(b => b.id).sort(), ['CVE-2026-6638'])
    assert.deepEqual(bugsAffecting(160003).map(b => b.id).sort(), ['CVE-2026-6638', 'slot-start-mid-transaction'])
    assert.deepEqual(bugsAffecting(160014), [])
    assert.deepEqual(bugsAffecting(150007).map(b => b.id), ['slot-start-mid-transaction'])
    assert.deepEqual(bugsAffecting(150018), [])
    assert.deepEqual(bugsAffecting(170009).map(b => b.id), ['CVE-2026-6638'])
    assert.deepEqual(bugsAffecting(180004), [])
    const f = checkMinors(input({b: {versionNum: 170009, version: '17.9'}}))
    assert.equal(f.length, 1)
    assert.equal(f[0].node, 'b')
    assert.equal(f[0].severity, 'critical')
    assert.match(f[0].fix, /17\.10/)
  })

  it('sequences: stride is a power of ten ≥ 2N; staggering needs one increment ≥ N and distinct residues', () => {
    assert.equal(strideFor(2), 10)
    assert.equal(strideFor(5), 10)
    assert.equal(strideFor(6), 100)
    assert.equal(strideFor(51), 1000)
    const same = input({a: {sequences: [seq('101')]}, b: {sequences: [seq('5')]}, c: {sequences: [seq('7')]}})
    assert.equal(residues(groupSequences(same)[0], 3), undefined)
    const f = checkSequences(same)
    assert.equal(f.length, 1)
    assert.equal(f[0].object, 'public.users.id')
    assert.equal(f[0].autoFix, 'stagger-sequences')
    // same residue on two nodes
    const clash = input({a: {sequences: [seq('11', 10)]}, b: {sequences: [seq('21', 10)]}, c: {sequences: [seq('33', 10)]}})
    assert.equal(checkSequences(clash).length, 1)
    // increment smaller than the node count
    const small = input({a: {sequences: [seq('1', 2)]}, b: {sequences: [seq('2', 2)]}, c: {sequences: [seq('3', 2)]}})
    assert.equal(checkSequences(small).length, 1)
    const ok = input({a: {sequences: [seq('11', 10)]}, b: {sequences: [seq('12', 10)]}, c: {sequences: [seq('13', 10)]}})
    assert.deepEqual([...residues(groupSequences(ok)[0], 3)!.values()], [1, 2, 3])
  })

  it('WAL: unlimited or less than an hour of WAL is a warning with the ALTER SYSTEM fix; lost/unreserved slots are critical', () => {
    assert.equal(suggestedKeepSize(null), '1GB')
    assert.equal(suggestedKeepSize(1024 * 1024), '15GB') // 1 MB/s × 4 h = 14.06 GB → 15 GB
    const f = checkWal(input({a: {maxSlotWalKeepSize: -1}, b: {maxSlotWalKeepSize: 100 * 1024 * 1024, walRate: 1024 * 1024}}))
    assert.deepEqual(f.map(x => `${x.node}:${x.severity}`).sort(), ['a:warning', 'b:warning'])
    assert.match(f.find(x => x.node === 'a')!.fix, /ALTER SYSTEM SET max_slot_wal_keep_size = '1GB'/)
    const lost = checkWal(input({c: {slots: [{slot_name: 'shop_c_a', plugin: 'pgoutput', slot_type: 'logical', active: false, wal_status: 'lost', safe_wal_size: null, retained_bytes: null}]}}))
    assert.equal(lost.length, 1)
    assert.equal(lost[0].severity, 'critical')
    assert.match(lost[0].message, /remove-node <node> --force.*add-node/)
  })

  it('WAL: an inactive slot gets a forecast of its invalidation (warning within 6 h)', () => {
    const slot = {slot_name: 'shop_a_b', plugin: 'pgoutput', slot_type: 'logical', active: false, wal_status: 'reserved', safe_wal_size: 3600 * 1000, retained_bytes: 5}
    const f = checkWal(input({a: {slots: [slot], walRate: 1000}}))
    assert.equal(f.length, 1)
    assert.equal(f[0].severity, 'warning')
    assert.match(f[0].message, /invalidated in about 1h0m/)
    const later = checkWal(input({a: {slots: [{...slot, safe_wal_size: 10 * 3600 * 1000}], walRate: 1000}}))
    assert.equal(later[0].severity, 'info')
  })

  it('links: a missing or disabled subscription is critical, but only info while an unfinished operation owns the node', () => {
    const f = checkSubscriptions(input({b: {subscriptions: facts('b').subscriptions.map(s => (s.subname === 'shop_a_b' ? {...s, enabled: false} : s))}}))
    assert.equal(f.length, 1)
    assert.equal(f[0].severity, 'critical')
    assert.match(f[0].fix, /skip-tx --from a --to b/)
    const paused = checkSubscriptions(
      input({b: {subscriptions: facts('b').subscriptions.map(s => (s.subname === 'shop_a_b' ? {...s, enabled: false} : s))}}, [{key: 'add-node:d', command: 'add-node', startedAt: 'x'}]),
    )
    assert.equal(paused[0].severity, 'info')
  })

  it('counters: errors and PG 18 conflicts are a warning; the reset is automated only for a link that applies', () => {
    const subs = facts('b').subscriptions.map(s => (s.subname === 'shop_a_b' ? {...s, apply_error_count: 2, conflicts: {confl_insert_exists: 3, confl_update_missing: 0}} : s))
    const f = checkSubscriptions(input({b: {subscriptions: subs}}))
    assert.equal(f.length, 1)
    assert.equal(f[0].autoFix, 'reset-counters')
    assert.match(f[0].message, /insert_exists=3/)
    assert.doesNotMatch(f[0].message, /update_missing/)
    const stopped = checkSubscriptions(input({b: {subscriptions: subs.map(s => ({...s, worker_running: false}))}}))
    assert.equal(stopped.find(x => x.check === 'counters')!.autoFix, undefined)
  })

  it('orphans: cluster-named slots of no link, dead tablesync slots, stray origins; not the objects of a join in progress', () => {
    const extra = [
      {slot_name: 'shop_a_ghost', plugin: 'pgoutput', slot_type: 'logical', active: false, wal_status: 'reserved', safe_wal_size: null, retained_bytes: 10},
      {slot_name: 'shop_a_d', plugin: 'pgoutput', slot_type: 'logical', active: false, wal_status: 'reserved', safe_wal_size: null, retained_bytes: 10},
      {slot_name: 'pg_100_sync_5000_1002', plugin: 'pgoutput', slot_type: 'logical', active: false, wal_status: 'reserved', safe_wal_size: null, retained_bytes: 10},
      {slot_name: 'pg_777_sync_5000_1002', plugin: 'pgoutput', slot_type: 'logical', active: false, wal_status: 'reserved', safe_wal_size: null, retained_bytes: 10},
      {slot_name: 'other_app_slot', plugin: 'pgoutput', slot_type: 'logical', active: false, wal_status: 'reserved', safe_wal_size: null, retained_bytes: 10},
    ]
    const bSubs = facts('b').subscriptions.map(s => (s.oid === 100 ? {...s, syncing_relids: [5000]} : s))
    const i = input({a: {slots: [...facts('a').slots, ...extra], origins: ['pg_100', 'pg_101', 'pg_555']}, b: {subscriptions: bSubs}}, [{key: 'add-node:d', command: 'add-node', startedAt: 't'}])
    const f = checkOrphans(i)
    const objs = f.map(x => `${x.check}:${x.object}:${x.autoFix ?? ''}`).sort()
    assert.deepEqual(objs, [
      'journal:operation add-node:d:',
      'orphans:origin pg_555:',
      'orphans:slot pg_777_sync_5000_1002:drop-orphan-slot',
      'orphans:slot shop_a_ghost:drop-orphan-slot',
    ])
    assert.match(f.find(x => x.check === 'journal')!.fix, /remove-node d/)
    // an active orphan is reported but never dropped by --fix
    const active = checkOrphans(input({a: {slots: [{...extra[0], active: true}]}}))
    assert.equal(active[0].autoFix, undefined)
    assert.match(active[0].fix, /pg_terminate_backend/)
  })

  it('prepared: a killed mmlite run\'s prepared transaction is critical on its node, naming the command to re-run (init for tables, the same ddl for ddl)', () => {
    const gid = 'mmlite:tables:shop:0-740.1-741.2-742'
    const f = checkPrepared(input({b: {prepared: [{gid, database: 'd', owner: 'postgres', age_seconds: 3}]}}))
    assert.equal(f.length, 1, JSON.stringify(f))
    assert.deepEqual([f[0].check, f[0].severity, f[0].node, f[0].object], ['prepared', 'critical', 'b', `prepared transaction ${gid}`])
    assert.match(f[0].message, /left by a killed mmlite init \(adding tables\) run: it holds its locks .* and its xmin/)
    assert.match(f[0].fix, /^Re-run `mmlite init`/)
    assert.match(f[0].fix, /Do not COMMIT PREPARED or ROLLBACK PREPARED it by hand/)
    const ddl = 'mmlite:ddl:shop:0-9.1-10.2-11'
    const unfinished = [{key: 'ddl', command: 'ddl', startedAt: 'now', values: {statements: ['ALTER TABLE public.users ADD COLUMN note text']}}]
    const d = checkPrepared(input({a: {prepared: [{gid: ddl, database: 'd', owner: 'postgres', age_seconds: 3}]}}, unfinished))
    assert.deepEqual(d.map(x => [x.severity, x.node]), [['critical', 'a']])
    assert.match(d[0].fix, /^Re-run the same `mmlite ddl …` command \(its statements: ALTER TABLE public\.users ADD COLUMN note text\)/)
    // the whole report: critical health
    const all = runChecks(input({b: {prepared: [{gid, database: 'd', owner: 'postgres', age_seconds: 3}]}}))
    assert.equal(healthOf(input().nodes, all), 'critical')
    // while a run holds the cluster lock, its fresh prepared transaction is only info; an old one is still critical
    const lock = {slot_name: lockSlotName('shop'), plugin: null, slot_type: 'physical', active: true, wal_status: null, safe_wal_size: null, retained_bytes: null}
    const busy = (age: number) => checkPrepared(input({b: {prepared: [{gid, database: 'd', owner: 'postgres', age_seconds: age}], slots: [...facts('b').slots, lock]}}))
    assert.deepEqual(busy(1).map(x => x.severity), ['info'])
    assert.deepEqual(busy(600).map(x => x.severity), ['critical'])
  })

  it('prepared: any other prepared transaction is a warning once older than a few minutes (locks, xmin), with the SQL to finish it', () => {
    const x = (age: number) => ({gid: "app'42", database: 'shopdb', owner: 'app', age_seconds: age})
    assert.deepEqual(checkPrepared(input({c: {prepared: [x(STALE_PREPARED_S - 1)]}})), [])
    const f = checkPrepared(input({c: {prepared: [x(STALE_PREPARED_S + 60)]}}))
    assert.deepEqual(f.map(y => [y.check, y.severity, y.node]), [['prepared', 'warning', 'c']])
    assert.match(f[0].message, /prepared transaction app'42 on c \(database shopdb, owner app\) has been prepared for 6m0s: it holds its locks and its xmin/)
    assert.match(f[0].fix, /in database shopdb on c: COMMIT PREPARED 'app''42'; or ROLLBACK PREPARED 'app''42';/)
    // another cluster's mmlite transaction: critical, with that cluster's command
    const o = checkPrepared(input({a: {prepared: [{gid: 'mmlite:tables:other:0-1.1-2', database: 'd', owner: 'postgres', age_seconds: 1}]}}))
    assert.deepEqual(o.map(y => y.severity), ['critical'])
    assert.match(o[0].fix, /mmlite\.yaml of cluster other/)
  })

  it('prepared: max_prepared_transactions = 0 is an info finding: adding tables will need it (restart)', () => {
    const f = checkPrepared(input({a: {maxPreparedTransactions: 0}}))
    assert.deepEqual(f.map(x => [x.check, x.severity, x.node, x.object]), [['prepared', 'info', 'a', 'max_prepared_transactions']])
    assert.match(f[0].message, /adding a table to tables: \(`mmlite init`\) is refused until it is at least 1/)
    assert.match(f[0].fix, /^ALTER SYSTEM SET max_prepared_transactions = 10;  -- then restart PostgreSQL on a$/)
    assert.equal(healthOf(input().nodes, runChecks(input({a: {maxPreparedTransactions: 0}}))), 'ok')
  })

  it('health: unknown when no node could be read; an unreachable node is critical', () => {
    const i: DoctorInput = {cfg, unfinished: [], nodes: NODES.map(n => ({name: n, reachable: false, error: 'refused'}))}
    assert.equal(healthOf(i.nodes, runChecks(i)), 'unknown')
    const one: DoctorInput = {...input(), nodes: [...input().nodes.slice(0, 2), {name: 'c', reachable: false, error: 'refused'}]}
    const f = runChecks(one)
    assert.equal(healthOf(one.nodes, f), 'critical')
    assert.equal(f[0].check, 'reachable')
  })
})
