/**
 * add-node without servers: the copy strategy's plan (step ids, the SQL of every action per
 * version and mechanism, passwords redacted), the checks that depend only on the journal,
 * LSN helpers, the minor-release guard, the driver's refusals before any connection, and the
 * journal key `status` reads to show paused subscriptions.
 */
import assert from 'node:assert/strict'
import {mkdtemp, mkdir, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {parseConfig, type Config} from '../../src/config/config.js'
import {Cluster} from '../../src/cluster/cluster.js'
import {Journal} from '../../src/engine/journal.js'
import type {Step, StepContext} from '../../src/engine/types.js'
import {MmliteError} from '../../src/errors.js'
import {COPY_STEP_IDS, copyStrategy, createSlotExportSnapshotCommand} from '../../src/steps/add-node-copy.js'
import type {AddNodeContext} from '../../src/steps/add-node-context.js'
import {joinConfigs, newNodeConfig, runAddNode} from '../../src/steps/add-node.js'
import {opKey} from '../../src/steps/add-node-context.js'
import {makeEdge, originAdvanceSql} from '../../src/steps/mesh.js'
import {evaluate, pausedSubscriptions} from '../../src/cluster/status.js'
import {DEFAULT_HEALTH} from '../../src/config/config.js'

const PASSWORD = 'pw-x-secret'

async function fixture(opts: {versions?: [number, number, number, number]; journal?: Record<string, unknown>} = {}) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'mmlite-unit-addnode-'))
  const file = path.join(dir, 'mmlite.yaml')
  const text = `cluster: shop
tables:
  - public.users
  - sales."Order Items"
nodes:
  - name: a
    dsn: postgresql://repl@a.example/shop
  - name: b
    dsn: postgresql://repl@b.example/shop
  - name: c
    dsn: postgresql://repl@c.example/shop
`
  await writeFile(file, text)
  if (opts.journal) {
    await mkdir(path.join(dir, '.mmlite'))
    await writeFile(path.join(dir, '.mmlite/journal.json'), JSON.stringify({version: 1, cluster: 'shop', operations: opts.journal}))
  }
  const cfg = parseConfig(text, file, {})
  const x = newNodeConfig('d', `host=d.example dbname=shop user=repl password=${PASSWORD}`)
  const {base, full} = joinConfigs(cfg, x)
  const v = opts.versions ?? [150000 + 20, 150000 + 20, 150000 + 20, 150000 + 20]
  const versions = new Map([
    ['a', v[0]],
    ['b', v[1]],
    ['c', v[2]],
    ['d', v[3]],
  ])
  const ctx: AddNodeContext = {
    cfg: base,
    full,
    x,
    source: 'a',
    others: ['b', 'c'],
    versions,
    cluster: new Cluster(full),
    journal: Journal.open(file, 'shop'),
    timeoutMs: 1000,
    jobs: 4,
  }
  return {cfg, ctx, dir, file}
}

const step = (steps: Step[], id: string) => {
  const s = steps.find(x => x.id === id)
  assert.ok(s, `no step ${id}`)
  return s
}
const sqlOf = (s: Step) => s.actions.flatMap(a => a.sql.map(q => `[${a.node}] ${q}`))
const stepCtx = (ctx: AddNodeContext): StepContext => ({cfg: ctx.full, cluster: ctx.cluster, journal: ctx.journal, progress: () => {}, note: () => {}})

describe('add-node copy: the plan', () => {
  it('step ids in order', async () => {
    const {ctx} = await fixture()
    assert.deepEqual(copyStrategy.buildSteps(ctx).map(s => s.id), [...COPY_STEP_IDS])
  })

  it('prepare: publication on X, a slot for X on every other existing node (not on the source)', async () => {
    const {ctx} = await fixture()
    const s = step(copyStrategy.buildSteps(ctx), 'prepare')
    assert.deepEqual(sqlOf(s), [
      `[d] CREATE PUBLICATION "shop" FOR TABLE "public"."users", "sales"."Order Items"`,
      `[b] SELECT lsn::text AS lsn FROM pg_create_logical_replication_slot('shop_b_d', 'mmlite')`,
      `[c] SELECT lsn::text AS lsn FROM pg_create_logical_replication_slot('shop_c_d', 'mmlite')`,
    ])
  })

  it('wait-peer-flush waits on the slots P→S, on each P', async () => {
    const {ctx} = await fixture()
    const s = step(copyStrategy.buildSteps(ctx), 'wait-peer-flush')
    assert.deepEqual(
      s.actions.map(a => a.node),
      ['b', 'c'],
    )
    assert.match(s.actions[0].label, /a has confirmed b's changes up to the consistent point of slot shop_b_d/)
  })

  it("pause-source disables exactly S's inbound subscriptions; source-snapshot exports a snapshot and re-enables them", async () => {
    const {ctx} = await fixture()
    const steps = copyStrategy.buildSteps(ctx)
    const pause = sqlOf(step(steps, 'pause-source'))
    assert.deepEqual(pause.slice(0, 2), ['[a] ALTER SUBSCRIPTION "shop_b_a" DISABLE', '[a] ALTER SUBSCRIPTION "shop_c_a" DISABLE'])
    const snap = sqlOf(step(steps, 'source-snapshot'))
    assert.match(snap[0], /^\[a\] CREATE_REPLICATION_SLOT "shop_a_d" LOGICAL "mmlite" \(SNAPSHOT 'export'\)/)
    assert.match(snap[1], /BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT/)
    assert.deepEqual(snap.slice(2), ['[a] ALTER SUBSCRIPTION "shop_b_a" ENABLE', '[a] ALTER SUBSCRIPTION "shop_c_a" ENABLE'])
  })

  it('replication command: export syntax per source version, plugin per edge', async () => {
    const {ctx} = await fixture({versions: [160004, 160004, 160004, 170000]})
    const e = makeEdge(ctx.full, 'a', 'd', ctx.versions)
    assert.equal(createSlotExportSnapshotCommand(e, 160004), `CREATE_REPLICATION_SLOT "shop_a_d" LOGICAL "pgoutput" (SNAPSHOT 'export')`)
    const old = makeEdge(ctx.full, 'a', 'd', new Map([['a', 140013], ['d', 170000]]))
    assert.equal(createSlotExportSnapshotCommand(old, 140013), `CREATE_REPLICATION_SLOT "shop_a_d" LOGICAL "mmlite" EXPORT_SNAPSHOT`)
  })

  it('subscribe-peers: created disabled (no password in the plan), origin advanced, enabled; native links filter origins', async () => {
    const {ctx} = await fixture({versions: [160004, 160004, 160004, 170000]})
    const s = sqlOf(step(copyStrategy.buildSteps(ctx), 'subscribe-peers'))
    assert.equal(s.length, 6)
    assert.match(s[0], /^\[d\] CREATE SUBSCRIPTION "shop_b_d"/)
    assert.match(s[0], /WITH \(create_slot = false, slot_name = 'shop_b_d', copy_data = false, enabled = false, origin = none, streaming = on\)/)
    assert.match(s[1], /pg_replication_origin_advance\('pg_' \|\| s\.oid::text, '<R_b>'::pg_lsn\).*WHERE s\.subname = 'shop_b_d'/)
    assert.equal(s[2], '[d] ALTER SUBSCRIPTION "shop_b_d" ENABLE')
  })

  it('subscribe-source, node-slots, node-subscriptions, waits: every link of X, no copy, X never printed with its password', async () => {
    const {ctx} = await fixture()
    const steps = copyStrategy.buildSteps(ctx)
    assert.match(sqlOf(step(steps, 'subscribe-source'))[0], /^\[d\] CREATE SUBSCRIPTION "shop_a_d"[\s\S]*copy_data = false, enabled = true, streaming = off\)/)
    assert.deepEqual(sqlOf(step(steps, 'node-slots')), [
      `[d] SELECT pg_create_logical_replication_slot('shop_d_a', 'mmlite')`,
      `[d] SELECT pg_create_logical_replication_slot('shop_d_b', 'mmlite')`,
      `[d] SELECT pg_create_logical_replication_slot('shop_d_c', 'mmlite')`,
    ])
    const subs = sqlOf(step(steps, 'node-subscriptions'))
    assert.deepEqual(
      subs.map(q => q.split('\n')[0]),
      ['[a] CREATE SUBSCRIPTION "shop_d_a"', '[b] CREATE SUBSCRIPTION "shop_d_b"', '[c] CREATE SUBSCRIPTION "shop_d_c"'],
    )
    for (const q of subs) {
      assert.match(q, /copy_data = false/)
      assert.match(q, /password=''\*{8}''/)
      assert.doesNotMatch(q, new RegExp(PASSWORD))
    }
    assert.equal(step(steps, 'wait-streaming').actions.length, 6)
    assert.deepEqual(
      step(steps, 'wait-caught-up').actions.map(a => a.label),
      ['wait until d has caught up with a', 'wait until d has caught up with b', 'wait until d has caught up with c'],
    )
  })

  it('pause, snapshot and copy are redone by a new process unless the journal says the copy is done', async () => {
    const fresh = await fixture()
    for (const id of ['pause-source', 'source-snapshot', 'copy']) {
      const a = step(copyStrategy.buildSteps(fresh.ctx), id).actions[0]
      assert.equal(await a.check(stepCtx(fresh.ctx)), false, id)
    }
    const midCopy = await fixture({journal: {[opKey('d')]: {command: 'add-node', startedAt: '', updatedAt: '', steps: {}, values: {copy: {attempt: 1, state: 'snapshot', originProgress: {b: '0/10', c: '0/20'}}}}}})
    for (const id of ['pause-source', 'source-snapshot', 'copy']) {
      const a = step(copyStrategy.buildSteps(midCopy.ctx), id).actions[0]
      assert.equal(await a.check(stepCtx(midCopy.ctx)), false, `${id} (snapshot of a dead run)`)
    }
    const done = await fixture({journal: {[opKey('d')]: {command: 'add-node', startedAt: '', updatedAt: '', steps: {}, values: {copy: {attempt: 2, state: 'done', originProgress: {b: '0/10', c: '0/20'}}}}}})
    for (const id of ['pause-source', 'source-snapshot', 'copy']) {
      const a = step(copyStrategy.buildSteps(done.ctx), id).actions[0]
      assert.equal(await a.check(stepCtx(done.ctx)), true, id)
    }
  })

  it('report: the pause and the copy from the journal', async () => {
    const {ctx} = await fixture({
      journal: {
        [opKey('d')]: {
          command: 'add-node',
          startedAt: '',
          updatedAt: '',
          steps: {},
          values: {
            pauses: [
              {node: 'a', subscriptions: ['shop_b_a'], startedAt: 't1', ms: null, recoveredAfterMs: 5000},
              {node: 'a', subscriptions: ['shop_b_a', 'shop_c_a'], startedAt: 't2', ms: 42},
            ],
            copy: {attempt: 2, state: 'done', originProgress: {b: '0/10'}, sourceLsn: '0/30', tables: [{table: 'public.users', rows: 3, bytes: 30, ms: 1}]},
          },
        },
      },
    })
    const r = copyStrategy.report!(ctx) as {sourcePause: {ms: number; subscriptions: string[]; pauses: unknown[]}; copy: {attempts: number; tables: unknown[]}}
    assert.equal(r.sourcePause.ms, 42)
    assert.deepEqual(r.sourcePause.subscriptions, ['shop_b_a', 'shop_c_a'])
    assert.equal(r.sourcePause.pauses.length, 2)
    assert.equal(r.copy.attempts, 2)
    assert.equal(r.copy.tables.length, 1)
  })
})

describe('add-node: helpers', () => {
  it('originAdvanceSql validates the LSN and quotes the subscription name', () => {
    assert.equal(
      originAdvanceSql("it's", '0/16B3748'),
      `SELECT pg_replication_origin_advance('pg_' || s.oid::text, '0/16B3748'::pg_lsn) FROM pg_subscription s WHERE s.subname = 'it''s' AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`,
    )
    assert.throws(() => originAdvanceSql('x', "0/1'::pg_lsn); SELECT 1; --"))
  })

  it('the new node: name rules, and names whose objects would collide', async () => {
    assert.throws(() => newNodeConfig('Node-4', 'host=x'), /must match/)
    const {cfg} = await fixture()
    const clash = parseConfig(
      `cluster: shop
tables: [public.users]
nodes:
  - {name: a_b, dsn: "host=1"}
  - {name: c, dsn: "host=2"}
  - {name: b_c, dsn: "host=4"}
`,
      cfg.file,
      {},
    )
    assert.throws(() => joinConfigs(clash, newNodeConfig('a', 'host=3')), (e: unknown) => e instanceof MmliteError && e.code === 10 && /would both be named/.test(e.message))
  })

  it('status shows the subscriptions the copy journals as paused', () => {
    const unfinished = [{key: 'add-node:d', command: 'add-node', startedAt: '', values: {pausedSubscriptions: [{node: 'a', subscription: 'shop_b_a', since: 't'}]}}]
    assert.deepEqual([...pausedSubscriptions(unfinished)], [['a/shop_b_a', 'add-node']])
    const probe = (name: string, subs: Array<{subname: string; enabled: boolean}>, slots: string[]) => ({
      name,
      target: name,
      reachable: true,
      version: '15',
      versionNum: 150008,
      data: {
        in_recovery: false,
        current_lsn: '0/1',
        publication: true,
        slots: slots.map(s => ({slot_name: s, active: !s.endsWith('_a'), wal_status: 'reserved', confirmed_flush_lsn: '0/1', restart_lsn: '0/1', lag_bytes: 0, retained_bytes: 0})),
        subscriptions: subs.map(s => ({...s, worker_pid: s.enabled ? 1 : null, last_msg_age_s: 0, latest_end_lsn: null, apply_error_count: 0, sync_error_count: 0, conflicts: null})),
      },
    })
    const r = evaluate({
      cluster: 'shop',
      probes: [probe('a', [{subname: 'shop_b_a', enabled: false}], ['shop_a_b']), probe('b', [{subname: 'shop_a_b', enabled: true}], ['shop_b_a'])],
      thresholds: DEFAULT_HEALTH,
      unfinished,
      checkedAt: new Date(0),
    })
    const link = r.links.find(l => l.from === 'b' && l.to === 'a')!
    assert.equal(link.status, 'paused')
    assert.match(link.reasons[0], /paused by unfinished mmlite add-node run/)
  })
})

describe('add-node: refusals before any connection', () => {
  const opts = {dsn: 'host=127.0.0.1 port=1 dbname=x', dryRun: false, timeoutMs: 1000, connectTimeoutMs: 1000, jobs: 1, mode: 'silent' as const, confirm: async () => {}}

  it('a node of mmlite.yaml without an unfinished add-node of it is already a member', async () => {
    const {cfg} = await fixture()
    await assert.rejects(runAddNode(cfg, {...opts, name: 'b'}), (e: unknown) => e instanceof MmliteError && e.code === 11 && /\[b\] member: b is already a member/.test(e.details.join('\n')))
  })

  it('another unfinished operation, a disagreeing --strategy / --source, an unknown source', async () => {
    const {cfg} = await fixture({
      journal: {
        init: {command: 'init', startedAt: 't0', updatedAt: '', steps: {}, values: {}},
        [opKey('d')]: {command: 'add-node', startedAt: 't1', updatedAt: '', steps: {}, values: {strategy: 'copy', source: 'b'}},
      },
    })
    await assert.rejects(runAddNode(cfg as Config, {...opts, name: 'd', strategy: 'standby', source: 'c'}), (e: unknown) => {
      assert.ok(e instanceof MmliteError)
      assert.equal(e.code, 11)
      const d = e.details.join('\n')
      assert.match(d, /another mmlite operation is unfinished: init/)
      assert.match(d, /uses --strategy copy; --strategy standby disagrees/)
      assert.match(d, /copies from b; --source c disagrees/)
      return true
    })
    const other = await fixture()
    await assert.rejects(runAddNode(other.cfg, {...opts, name: 'd', source: 'zz'}), (e: unknown) => e instanceof MmliteError && /--source zz is not an existing node/.test(e.details.join('\n')))
  })
})
