/**
 * remove-node without servers: the pure helpers (durations, LSN comparison, refusals), the
 * steps it builds (ids, nodes, exact SQL), and the check-then-act logic of the drop actions
 * (src/steps/mesh.ts) run by the real runner and journal against a small in-memory catalog.
 */
import assert from 'node:assert/strict'
import {syncSlotsOf} from '../../src/steps/remove-node/sync-slots.js'
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {parseConfig, type Config} from '../../src/config/config.js'
import {edgeName} from '../../src/cluster/naming.js'
import type {Cluster} from '../../src/cluster/cluster.js'
import {Journal} from '../../src/engine/journal.js'
import {planSteps, runSteps} from '../../src/engine/runner.js'
import type {Step} from '../../src/engine/types.js'
import {ExitCode, MmliteError} from '../../src/errors.js'
import {
  buildRemoveNodeSteps,
  checkRemoval,
  compareProgress,
  leftoverSqlOnRemoved,
  parseDurationMs,
} from '../../src/steps/remove-node.js'

function config(nodes: string[], cluster = 'shop', file = 'mmlite.yaml'): Config {
  return parseConfig(
    `cluster: ${cluster}\ntables: [public.users]\nnodes:\n${nodes.map(n => `  - name: ${n}\n    dsn: postgresql://u@${n}.example/db\n`).join('')}`,
    file,
    {},
  )
}

function refusal(fn: () => unknown): MmliteError {
  try {
    fn()
  } catch (e) {
    assert.ok(e instanceof MmliteError, String(e))
    return e
  }
  assert.fail('not refused')
}

describe('remove-node: durations', () => {
  it('accepts s, m, h, ms and bare seconds', () => {
    assert.equal(parseDurationMs('60s'), 60_000)
    assert.equal(parseDurationMs('2m'), 120_000)
    assert.equal(parseDurationMs('1h'), 3_600_000)
    assert.equal(parseDurationMs('500ms'), 500)
    assert.equal(parseDurationMs('90'), 90_000)
    assert.equal(parseDurationMs('1.5s'), 1500)
  })
  it('refuses anything else with exit 10', () => {
    for (const bad of ['', 'abc', '10 days', '-5s', '0s', '5x']) assert.equal(refusal(() => parseDurationMs(bad)).code, ExitCode.Config, bad)
  })
})

describe('remove-node: origin progress comparison', () => {
  it('equal progress: not diverged, every peer is furthest', () => {
    const c = compareProgress([
      {node: 'a', lsn: '0/3000060'},
      {node: 'b', lsn: '0/3000060'},
    ])
    assert.deepEqual(c, {diverged: false, furthest: ['a', 'b'], behind: [], unknown: []})
  })
  it('different progress: diverged, names the peer that has more', () => {
    const c = compareProgress([
      {node: 'a', lsn: '0/2FFFFF0'},
      {node: 'b', lsn: '1/10'},
      {node: 'c', lsn: '0/3000000'},
    ])
    assert.deepEqual(c, {diverged: true, furthest: ['b'], behind: ['a', 'c'], unknown: []})
  })
  it('unknown progress is set apart, not compared', () => {
    const c = compareProgress([
      {node: 'a', lsn: null},
      {node: 'b', lsn: '0/10'},
    ])
    assert.deepEqual(c, {diverged: false, furthest: ['b'], behind: [], unknown: ['a']})
  })
})

describe('remove-node: refusals', () => {
  it('an unknown node: exit 10, the known names and a suggestion', () => {
    const e = refusal(() => checkRemoval(config(['node1', 'node2', 'node3']), 'nod3'))
    assert.equal(e.code, ExitCode.Config)
    assert.match(e.message, /unknown node "nod3"/)
    assert.match(e.suggestions.join(' '), /Did you mean "node3"\? Known nodes: node1, node2, node3/)
  })
  it('an unknown node with an interrupted removal of it in the journal: finish that removal', () => {
    const op = {command: 'remove-node', startedAt: '', updatedAt: '', steps: {}, values: {}}
    assert.deepEqual(checkRemoval(config(['node1', 'node2']), 'node3', op), {kind: 'finish'})
  })
  it('the last node is refused; down to one node is fine', () => {
    const e = refusal(() => checkRemoval(config(['only']), 'only'))
    assert.equal(e.code, ExitCode.Config)
    assert.match(e.message, /last node/)
    assert.deepEqual(checkRemoval(config(['a', 'b']), 'b'), {kind: 'remove'})
  })
})

describe('remove-node: steps', () => {
  const cfg = config(['a', 'b', 'c'])
  const ids = (s: Step[]) => s.map(x => x.id)
  const nodes = (s: Step) => s.actions.map(a => a.node)
  const sql = (s: Step) => s.actions.flatMap(a => a.sql.map(q => `${a.node}: ${q}`))
  const get = (steps: Step[], id: string) => steps.find(s => s.id === id)!

  it('reachable node: drain first, then peers, X, and the file last', () => {
    const steps = buildRemoveNodeSteps(cfg, {x: 'b', peers: ['a', 'c'], force: false, drainTimeoutMs: 1000})
    assert.deepEqual(ids(steps), ['drain', 'peer-subscriptions', 'own-subscriptions', 'peer-slots', 'own-slots', 'own-publication', 'config'])
    assert.deepEqual(nodes(get(steps, 'drain')), ['b'])
    assert.deepEqual(get(steps, 'drain').actions[0].sql, [], 'the drain only reads')
    assert.deepEqual(sql(get(steps, 'peer-subscriptions')), [
      'a: ALTER SUBSCRIPTION "shop_b_a" DISABLE',
      'a: ALTER SUBSCRIPTION "shop_b_a" SET (slot_name = NONE)',
      'a: DROP SUBSCRIPTION "shop_b_a"',
      'c: ALTER SUBSCRIPTION "shop_b_c" DISABLE',
      'c: ALTER SUBSCRIPTION "shop_b_c" SET (slot_name = NONE)',
      'c: DROP SUBSCRIPTION "shop_b_c"',
    ])
    assert.deepEqual(nodes(get(steps, 'own-subscriptions')), ['b', 'b'])
    assert.match(sql(get(steps, 'own-subscriptions')).join('\n'), /b: DROP SUBSCRIPTION "shop_a_b"\n(.|\n)*b: DROP SUBSCRIPTION "shop_c_b"/)
    assert.deepEqual(sql(get(steps, 'peer-slots')), [
      "a: SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'shop_a_b' AND active_pid IS NOT NULL",
      "a: SELECT pg_drop_replication_slot('shop_a_b')",
      "c: SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'shop_c_b' AND active_pid IS NOT NULL",
      "c: SELECT pg_drop_replication_slot('shop_c_b')",
      "a: SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots WHERE slot_name::pg_catalog.text ~ '^pg_[0-9]+_sync_[0-9]+_<system identifier of the subscriber b>$'",
      "c: SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots WHERE slot_name::pg_catalog.text ~ '^pg_[0-9]+_sync_[0-9]+_<system identifier of the subscriber b>$'",
    ])
    assert.deepEqual(
      sql(get(steps, 'own-slots')).filter(q => q.includes('pg_drop')),
      [
        "b: SELECT pg_drop_replication_slot('shop_b_a')",
        "b: SELECT pg_drop_replication_slot('shop_b_c')",
        "b: SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots WHERE slot_name::pg_catalog.text ~ '^pg_[0-9]+_sync_[0-9]+_<system identifier of the subscriber a, c>$'",
      ],
    )
    assert.deepEqual(sql(get(steps, 'own-publication')), ['b: DROP PUBLICATION "shop"'])
    assert.deepEqual(nodes(get(steps, 'config')), ['mmlite.yaml'])
  })

  it('--force: nothing runs on X', () => {
    const steps = buildRemoveNodeSteps(cfg, {x: 'b', peers: ['a', 'c'], force: true, drainTimeoutMs: 1000})
    assert.deepEqual(ids(steps), ['peer-subscriptions', 'peer-slots', 'config'])
    for (const s of steps) assert.ok(!nodes(s).includes('b'), `${s.id} touches b`)
  })

  it('long names use the same (hashed) names as init created', () => {
    const long = 'c'.repeat(30)
    const n1 = 'x'.repeat(30)
    const n2 = 'y'.repeat(30)
    const steps = buildRemoveNodeSteps(config([n1, n2], long), {x: n1, peers: [n2], force: true, drainTimeoutMs: 1000})
    const sub = edgeName(long, n1, n2)
    const slot = edgeName(long, n2, n1)
    assert.equal(sub.length, 63)
    assert.deepEqual(get(steps, 'peer-subscriptions').actions[0].sql.at(-1), `DROP SUBSCRIPTION "${sub}"`)
    assert.deepEqual(get(steps, 'peer-slots').actions[0].sql.at(-1), `SELECT pg_drop_replication_slot('${slot}')`)
  })

  it('what is left on a node removed with --force, for the operator', () => {
    assert.deepEqual(leftoverSqlOnRemoved(cfg, 'b', ['a', 'c']), [
      'ALTER SUBSCRIPTION "shop_a_b" DISABLE',
      'ALTER SUBSCRIPTION "shop_a_b" SET (slot_name = NONE)',
      'DROP SUBSCRIPTION "shop_a_b"',
      'ALTER SUBSCRIPTION "shop_c_b" DISABLE',
      'ALTER SUBSCRIPTION "shop_c_b" SET (slot_name = NONE)',
      'DROP SUBSCRIPTION "shop_c_b"',
      "SELECT pg_drop_replication_slot('shop_b_a')",
      "SELECT pg_drop_replication_slot('shop_b_c')",
      'DROP PUBLICATION "shop"',
    ])
  })
})

// ------------------------------------------------------------------ in-memory catalog

interface FakeSub {
  enabled: boolean
  slot: string | null
  workers: number
  remote_lsn: string | null
  /** polls after DISABLE before the workers are gone (Infinity: only termination ends them) */
  linger: number
}
interface FakeSlot {
  active: boolean
  active_pid: number | null
  retained: string | null
  /** a walsender that lingers until terminated */
  lingering: boolean
}

/** Just enough of NodeConn for the drop actions: state queries answered from maps, statements applied. */
class FakeNode {
  subs = new Map<string, FakeSub>()
  slots = new Map<string, FakeSlot>()
  log: string[] = []
  constructor(readonly name: string) {}

  async one(sql: string, params: unknown[] = []): Promise<Record<string, unknown> | undefined> {
    return (await this.query(sql, params))[0]
  }

  async query(sql: string, params: unknown[] = []): Promise<Array<Record<string, unknown>>> {
    if (sql.startsWith('SELECT s.subenabled AS enabled, s.subslotname AS slot')) {
      const s = this.subs.get(params[0] as string)
      if (!s) return []
      if (!s.enabled && s.workers > 0 && s.linger-- <= 0) s.workers = 0
      return [{enabled: s.enabled, slot: s.slot, workers: s.workers, remote_lsn: s.remote_lsn}]
    }
    if (sql.includes("'^pg_[0-9]+_sync_[0-9]+_[0-9]+$'")) return [...this.slots.keys()].filter(n => /^pg_\d+_sync_/.test(n)).map(n => ({n}))
    if (sql.startsWith('SELECT oid::pg_catalog.text AS oid FROM pg_catalog.pg_subscription')) return this.subs.has(params[0] as string) ? [{oid: '1'}] : []
    if (sql.includes('pg_control_system()')) return [{id: `${this.name.charCodeAt(0)}`}]
    if (sql.startsWith('SELECT active, active_pid,')) {
      const s = this.slots.get(params[0] as string)
      return s ? [{active: s.active, active_pid: s.active_pid, retained_bytes: s.retained}] : []
    }
    this.log.push(sql)
    let m: RegExpExecArray | null
    if ((m = /^ALTER SUBSCRIPTION "(.+)" DISABLE$/.exec(sql))) this.sub(m[1]).enabled = false
    else if ((m = /^ALTER SUBSCRIPTION "(.+)" SET \(slot_name = NONE\)$/.exec(sql))) {
      assert.equal(this.sub(m[1]).enabled, false, 'slot_name = NONE needs a disabled subscription')
      this.sub(m[1]).slot = null
    } else if ((m = /^DROP SUBSCRIPTION "(.+)"$/.exec(sql))) {
      assert.equal(this.sub(m[1]).slot, null, `${this.name}: DROP SUBSCRIPTION would contact the publisher`)
      this.subs.delete(m[1])
    } else if ((m = /^SELECT pg_terminate_backend\(st.pid\).*s.subname = '(.+?)'/.exec(sql))) this.sub(m[1]).workers = 0
    else if ((m = /^SELECT pg_terminate_backend\(active_pid\).*slot_name = '(.+?)'/.exec(sql))) {
      const s = this.slots.get(m[1])
      if (s) Object.assign(s, {active: false, active_pid: null, lingering: false})
    } else if ((m = /^SELECT pg_drop_replication_slot\('(.+)'\)$/.exec(sql))) {
      const s = this.slots.get(m[1])
      if (!s) throw new MmliteError(`node ${this.name}: replication slot "${m[1]}" does not exist`)
      if (s.active) throw new MmliteError(`node ${this.name}: replication slot "${m[1]}" is active for PID ${s.active_pid}`)
      this.slots.delete(m[1])
    } else throw new Error(`unexpected SQL on ${this.name}: ${sql}`)
    return []
  }

  private sub(name: string): FakeSub {
    const s = this.subs.get(name)
    assert.ok(s, `${this.name}: no subscription ${name}`)
    return s
  }
}

describe('remove-node --force: check-then-act against a catalog (runner + journal)', () => {
  let dir: string
  let file: string
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'mmlite-remove-'))
    file = path.join(dir, 'mmlite.yaml')
  })
  afterEach(() => rmSync(dir, {recursive: true, force: true}))

  /** a 5-node mesh as init leaves it, X = e; a few links already half taken apart */
  function setup() {
    const names = ['a', 'b', 'c', 'd', 'e']
    writeFileSync(file, `cluster: shop\ntables: [public.users]\nnodes:\n${names.map(n => `  - name: ${n}\n    dsn: postgresql://u@${n}.example/db\n`).join('')}`)
    const cfg = parseConfig(readFileSync(file, 'utf8'), file, {})
    const fakes = new Map(names.filter(n => n !== 'e').map(n => [n, new FakeNode(n)]))
    const lsn = {a: '0/3000060', b: '0/3000060', c: '0/2000010', d: '0/3000060'} as Record<string, string>
    for (const [n, f] of fakes) {
      f.subs.set(`shop_e_${n}`, {enabled: true, slot: `shop_e_${n}`, workers: 1, remote_lsn: lsn[n], linger: 2})
      f.slots.set(`shop_${n}_e`, {active: false, active_pid: null, retained: String(1000 + n.charCodeAt(0)), lingering: false})
    }
    // b: a run was killed after DISABLE and SET (slot_name = NONE)
    Object.assign(fakes.get('b')!.subs.get('shop_e_b')!, {enabled: false, slot: null, workers: 0})
    // c: its apply worker ignores the DISABLE until it is terminated
    fakes.get('c')!.subs.get('shop_e_c')!.linger = Infinity
    // d: the walsender that served e's (dead) subscription lingers until terminated
    Object.assign(fakes.get('d')!.slots.get('shop_d_e')!, {active: true, active_pid: 4242, lingering: true})
    const cluster = {
      node: (n: string) => {
        assert.notEqual(n, 'e', '--force contacted the removed node')
        return fakes.get(n)!
      },
    } as unknown as Cluster
    return {cfg, fakes, cluster}
  }

  it('drops only what is left, records progress and retained WAL for every peer, never touches X', async () => {
    const {cfg, fakes, cluster} = setup()
    const journal = Journal.open(file, 'shop')
    const steps = buildRemoveNodeSteps(cfg, {x: 'e', peers: ['a', 'b', 'c', 'd'], force: true, drainTimeoutMs: 1000, graceMs: 300, waitTimeoutMs: 5000})
    const base = {cfg, cluster, journal}
    const plan = await planSteps(steps, base)
    assert.deepEqual(plan.map(s => s.status), ['planned', 'planned', 'planned'])

    await journal.begin('remove-node:e', 'remove-node')
    await runSteps(steps, base, {dryRun: false, mode: 'silent'})

    assert.deepEqual(fakes.get('a')!.log, [
      'ALTER SUBSCRIPTION "shop_e_a" DISABLE',
      'ALTER SUBSCRIPTION "shop_e_a" SET (slot_name = NONE)',
      'DROP SUBSCRIPTION "shop_e_a"',
      "SELECT pg_drop_replication_slot('shop_a_e')",
    ])
    assert.deepEqual(fakes.get('b')!.log, ['DROP SUBSCRIPTION "shop_e_b"', "SELECT pg_drop_replication_slot('shop_b_e')"], 'b resumes where it stopped')
    assert.match(fakes.get('c')!.log.join('\n'), /DISABLE\nSELECT pg_terminate_backend\(st\.pid\).*shop_e_c.*\n.*SET \(slot_name = NONE\)\nDROP SUBSCRIPTION/)
    assert.deepEqual(fakes.get('d')!.log.slice(-2), [
      "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'shop_d_e' AND active_pid IS NOT NULL",
      "SELECT pg_drop_replication_slot('shop_d_e')",
    ])
    for (const f of fakes.values()) {
      assert.equal(f.subs.size, 0)
      assert.equal(f.slots.size, 0)
    }
    // every peer's entry survived the concurrent journal writes
    assert.deepEqual(journal.get('originProgress'), {a: '0/3000060', b: '0/3000060', c: '0/2000010', d: '0/3000060'})
    assert.deepEqual(journal.get('retainedBytes'), {a: 1097, b: 1098, c: 1099, d: 1100})
    const onDisk = JSON.parse(readFileSync(path.join(dir, '.mmlite/journal.json'), 'utf8'))
    assert.deepEqual(onDisk.operations['remove-node:e'].values.originProgress, journal.get('originProgress'))
    assert.deepEqual(onDisk.operations['remove-node:e'].steps && Object.keys(onDisk.operations['remove-node:e'].steps), ['peer-subscriptions', 'peer-slots', 'config'])
    assert.deepEqual(parseConfig(readFileSync(file, 'utf8'), file, {}).nodes.map(n => n.name), ['a', 'b', 'c', 'd'])

    // a re-run finds everything done and runs nothing
    for (const f of fakes.values()) f.log = []
    const again = await planSteps(steps, base)
    assert.deepEqual(again.map(s => s.status), ['already-done', 'already-done', 'already-done'])
    await runSteps(steps, base, {dryRun: false, mode: 'silent'})
    for (const f of fakes.values()) assert.deepEqual(f.log, [])
  })
})

describe('remove-node: table-synchronization slots', () => {
  const names = ['pg_16403_sync_16391_111', 'pg_16403_sync_16392_111', 'pg_16500_sync_16391_222', 'pg_16403_sync_16391_333', 'shop_a_b', 'pg_1_sync_x_111']
  it('known subscriptions: exactly their oid and system identifier (a standby clone shares its source\'s identifier)', () => {
    assert.deepEqual(syncSlotsOf(names, {subs: [{sysid: '111', oid: '16403'}], memberSysids: []}), ['pg_16403_sync_16391_111', 'pg_16403_sync_16392_111'])
    assert.deepEqual(syncSlotsOf(names, {subs: [], memberSysids: []}), [])
  })
  it('unknown: the slots of subscribers that are no member', () => {
    assert.deepEqual(syncSlotsOf(names, {memberSysids: ['111', '222']}), ['pg_16403_sync_16391_333'])
  })
})
