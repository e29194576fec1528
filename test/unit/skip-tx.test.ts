/**
 * skip-tx's pure parts: when a link counts as stuck (failureEvidence), the logged error of the
 * blocking transaction (findApplyError, on log text from real PG 18 / 15 / 14 servers), the SQL
 * that skips it and the SQL that re-applies it, the preview, status' stuck classification and
 * column, and `disable_on_error: true` recorded in mmlite.yaml without losing comments.
 */
import assert from 'node:assert/strict'
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {failureEvidence, findApplyError, findLoggedFailure, identifyFailing, observeWindowMs, passed, type LinkSample} from '../../src/cluster/link-probe.js'
import type {Change, DecodedTx} from '../../src/cluster/pgoutput-decode.js'
import {evaluate, exitCodeFor, linkKey, stuckSuspect, type NodeProbe, type SubRow} from '../../src/cluster/status.js'
import {edgeName} from '../../src/cluster/naming.js'
import {DEFAULT_HEALTH, loadConfig, recordDisableOnError} from '../../src/config/config.js'
import {changeView, formatTx, reapplySql, reapplyStatement, skipSql, type TxView} from '../../src/steps/skip-tx.js'
import {renderStatus} from '../../src/ui/status-view.js'

const s = (at: number, over: Partial<LinkSample> = {}): LinkSample => ({at, enabled: true, workerPid: 100, applyErrors: 0, originLsn: '0/100', ...over})

describe('skip-tx: when a link is stuck', () => {
  const v15 = {versionNum: 150004, disableOnError: false}
  const v14 = {versionNum: 140023, disableOnError: null}

  it('15+: apply_error_count rising is a failure; a steady worker or old errors are not', () => {
    assert.match(failureEvidence([s(0, {applyErrors: 3, workerPid: null}), s(300, {applyErrors: 4, workerPid: 101})], v15)!, /failed 1 time\(s\) in 0.3 s \(apply_error_count 4\)/)
    assert.equal(failureEvidence([s(0, {applyErrors: 3}), s(5000, {applyErrors: 3})], v15), undefined)
    // a worker that is not running after errors: enough for status (snapshot), not for skip-tx
    const down = [s(0, {applyErrors: 2, workerPid: null})]
    assert.equal(failureEvidence(down, v15), undefined)
    assert.match(failureEvidence(down, {...v15, snapshot: true})!, /not running after 2 apply error/)
    assert.equal(failureEvidence([s(0, {applyErrors: 0, workerPid: null})], {...v15, snapshot: true}), undefined)
  })

  it('15+: disabled by disable_on_error after an error is stuck; disabled by hand is not', () => {
    const off = [s(0, {enabled: false, workerPid: null, applyErrors: 1})]
    assert.match(failureEvidence(off, {versionNum: 160000, disableOnError: true})!, /disabled by disable_on_error after 1 apply error/)
    assert.equal(failureEvidence(off, {versionNum: 160000, disableOnError: false}), undefined)
    assert.equal(failureEvidence([s(0, {enabled: false, workerPid: null, applyErrors: 0})], {versionNum: 160000, disableOnError: true}), undefined)
    // disabled while we watched (by someone else): errors rising before do not count
    assert.equal(failureEvidence([s(0, {applyErrors: 1}), s(100, {applyErrors: 2, enabled: false})], v15), undefined)
  })

  it('14 and older (no error counter): the worker exits or restarts', () => {
    assert.match(failureEvidence([s(0, {workerPid: 10}), s(25, {workerPid: null}), s(50, {workerPid: null})], v14)!, /exited \(pid 10\)/)
    assert.match(failureEvidence([s(0, {workerPid: 10}), s(400, {workerPid: 11}), s(800, {workerPid: 12})], v14)!, /restarted 2 time\(s\)/)
    assert.equal(failureEvidence([s(0, {workerPid: 10}), s(9000, {workerPid: 10})], v14), undefined)
    const never = [s(0, {workerPid: null}), s(9000, {workerPid: null})]
    assert.equal(failureEvidence(never, v14), undefined)
    assert.equal(failureEvidence(never, {...v14, snapshot: true}), 'apply worker not running')
  })

  it('the origin past the transaction means it was applied; the window follows the restart interval', () => {
    assert.equal(passed('0/1545D68', {endLsn: '0/1545D68'}), true)
    assert.equal(passed('0/1545D67', {endLsn: '0/1545D68'}), false)
    assert.equal(passed(null, {endLsn: '0/1'}), false)
    assert.equal(observeWindowMs(200), 2400)
    assert.equal(observeWindowMs(5000), 12000)
    assert.equal(observeWindowMs(60_000), 30_000)
    assert.equal(observeWindowMs(0), 2000)
  })
})

describe('skip-tx: the logged error of the blocking transaction', () => {
  const PG18 = `2026-11-26 12:42:22.031 UTC [11181] LOG:  logical replication apply worker for subscription "shop_node2_node1" has started
2026-11-26 12:42:25.145 UTC [11181] ERROR:  conflict detected on relation "public.users": conflict=insert_exists
2026-11-26 12:42:25.145 UTC [11181] DETAIL:  Key already exists in unique index "users_pkey", modified in transaction 755.
\tKey (id)=(5); existing local row (5, 1, from node1, node1); remote row (5, 2, from node2, node2).
2026-11-26 12:42:25.145 UTC [11181] CONTEXT:  processing remote data for replication origin "pg_16404" during message type "INSERT" for replication target relation "public.users" in transaction 765, finished at 0/178C408
2026-11-26 12:42:25.147 UTC [10960] LOG:  background worker "logical replication apply worker" (PID 11181) exited with exit code 1`
  const PG15 = `2026-11-26 12:42:22.333 UTC [11209] LOG:  logical replication apply worker for subscription "shop_node2_node1" has started
2026-11-26 12:42:37.609 UTC [11209] ERROR:  duplicate key value violates unique constraint "users_pkey"
2026-11-26 12:42:37.609 UTC [11209] DETAIL:  Key (id)=(5) already exists.
2026-11-26 12:42:37.609 UTC [11209] CONTEXT:  processing remote data for replication origin "pg_16401" during message type "INSERT" for replication target relation "public.users" in transaction 735, finished at 0/1546D78`
  const PG14 = `2026-11-26 12:44:14.225 UTC [14639] LOG:  logical replication apply worker for subscription "shop_node1_node2" has started
2026-11-26 12:44:14.240 UTC [14640] ERROR:  relation "nope" does not exist at character 15
2026-11-26 12:44:14.243 UTC [14639] ERROR:  duplicate key value violates unique constraint "users_pkey"
2026-11-26 12:44:14.243 UTC [14639] DETAIL:  Key (id)=(5) already exists.
2026-11-26 12:44:14.245 UTC [11095] LOG:  background worker "logical replication worker" (PID 14639) exited with exit code 1`

  it('15+: by origin and final LSN in the CONTEXT line', () => {
    assert.equal(
      findApplyError(PG18, {name: 'shop_node2_node1', oid: 16404}, {finalLsn: '0/178C408', xid: 765}),
      'conflict detected on relation "public.users": conflict=insert_exists (Key already exists in unique index "users_pkey", modified in transaction 755. Key (id)=(5); existing local row (5, 1, from node1, node1); remote row (5, 2, from node2, node2).)',
    )
    assert.equal(
      findApplyError(PG15, {name: 'shop_node2_node1', oid: 16401}, {finalLsn: '0/1546D78', xid: 735}),
      'duplicate key value violates unique constraint "users_pkey" (Key (id)=(5) already exists.)',
    )
  })

  it('14: the last error of a worker that started for the subscription; other errors are not taken', () => {
    assert.equal(
      findApplyError(PG14, {name: 'shop_node1_node2', oid: 16398}, {finalLsn: '0/1721860', xid: 736}),
      'duplicate key value violates unique constraint "users_pkey" (Key (id)=(5) already exists.)',
    )
    assert.equal(findApplyError(PG14, {name: 'shop_node2_node1', oid: 1}, {finalLsn: '0/1', xid: 1}), null)
  })
})

const users = (op: Change['op'], over: Partial<Change>): Change => ({op, table: 'public.users', schema: 'public', name: 'users', columns: ['id', 'name'], key: {id: '5'}, ...over})

const TX: DecodedTx = {
  xid: 755,
  finalLsn: '0/178B368',
  endLsn: '0/178B398',
  commitTime: '2026-11-26T12:42:34.123Z',
  messages: 0,
  changeCount: 4,
  changes: [
    users('insert', {new: {values: {id: '5', name: "it's"}, unchanged: []}}),
    users('update', {key: {id: '6'}, new: {values: {id: '6', name: null}, unchanged: ['big']}}),
    users('delete', {key: {id: '7'}, old: {values: {id: '7', name: null}, unchanged: []}}),
    {op: 'truncate', table: 'public.users, "odd".x', schema: 'public', name: 'users', columns: [], key: {}, truncate: {tables: ['public.users', 'odd.x'], cascade: true, restartIdentity: false}},
  ],
}

describe('skip-tx: SQL', () => {
  it('skips by final LSN on 15+ (enabling a subscription disable_on_error stopped); origin advance to the end LSN otherwise', () => {
    assert.deepEqual(skipSql('skip-lsn', {name: 'shop_a_b', oid: 1, enabled: true}, TX), [`ALTER SUBSCRIPTION "shop_a_b" SKIP (lsn = '0/178B368')`])
    assert.deepEqual(skipSql('skip-lsn', {name: 'shop_a_b', oid: 1, enabled: false}, TX), [
      `ALTER SUBSCRIPTION "shop_a_b" SKIP (lsn = '0/178B368')`,
      'ALTER SUBSCRIPTION "shop_a_b" ENABLE',
    ])
    assert.deepEqual(skipSql('origin-advance', {name: 'shop_a_b', oid: 16404, enabled: true}, TX), [
      'ALTER SUBSCRIPTION "shop_a_b" DISABLE',
      `SELECT pg_replication_origin_advance('pg_16404', '0/178B398'::pg_lsn)`,
      'ALTER SUBSCRIPTION "shop_a_b" ENABLE',
    ])
  })

  it('re-apply: insert ON CONFLICT DO NOTHING, update and delete by key, every literal quoted, on the subscriber only', () => {
    assert.deepEqual(TX.changes.map(reapplyStatement), [
      `INSERT INTO "public"."users" ("id", "name") VALUES ('5', 'it''s') ON CONFLICT DO NOTHING;`,
      `UPDATE "public"."users" SET "id" = '6', "name" = NULL WHERE "id" = '6';`,
      `DELETE FROM "public"."users" WHERE "id" = '7';`,
      `-- TRUNCATE "public"."users", "odd"."x" CASCADE;  -- uncomment to re-apply`,
    ])
    assert.equal(reapplyStatement(users('delete', {key: {a: null}})), `DELETE FROM "public"."users" WHERE "a" IS NULL;`)
    const file = reapplySql(TX, {from: 'node1', to: 'node2', subscription: 'shop_node1_node2', cluster: 'shop'}, '2026-11-26T13:00:00.000Z')
    assert.match(file, /^-- mmlite skip-tx: transaction 755 from node1, skipped on node2/)
    assert.match(file, /final LSN 0\/178B368, end LSN 0\/178B398/)
    const body = file.split('\n').filter(l => !l.startsWith('--'))
    assert.equal(body[0], 'BEGIN;')
    assert.match(body[1], /pg_replication_origin_create\('mmlite_reapply'\)/)
    assert.equal(body[2], "SELECT pg_replication_origin_session_setup('mmlite_reapply');")
    assert.equal(body.at(-3), 'SELECT pg_replication_origin_session_reset();')
    assert.equal(body.at(-2), 'COMMIT;')
  })

  it('the preview: key, values cut, collisions, the targeted row', () => {
    const long = 'x'.repeat(500)
    const view: TxView = {
      from: 'node1',
      to: 'node2',
      subscription: 'shop_node1_node2',
      xid: 755,
      finalLsn: TX.finalLsn,
      endLsn: TX.endLsn,
      commitTime: TX.commitTime,
      changeCount: 30,
      evidence: 'apply worker failed 2 time(s)',
      error: 'duplicate key value violates unique constraint "users_pkey"',
      changes: [
        changeView(users('insert', {new: {values: {id: '5', name: long}, unchanged: []}}), {
          collisions: [{index: 'users_pkey', columns: ['id'], row: {id: 5, name: 'local'}}],
        }),
        changeView(TX.changes[2], {collisions: [], target: null}),
      ],
    }
    assert.equal(view.changes[0].new!.name!.length, 201)
    const text = formatTx(view).join('\n')
    assert.match(text, /transaction 755 from node1, committed 2026-11-26T12:42:34.123Z, final LSN 0\/178B368 \(ends 0\/178B398\), 30 change/)
    assert.match(text, /error on node2: duplicate key/)
    assert.match(text, /INSERT public.users \(id\)=\(5\): id=5, name='x{60}…'/)
    assert.match(text, /collides on users_pkey with local row \{"id":5,"name":"local"\}/)
    assert.match(text, /DELETE public.users \(id\)=\(7\)\n +no local row with this key/)
    assert.match(text, /… 28 more change\(s\)/)
  })
})

describe('status: stuck links', () => {
  const CLUSTER = 'shop'
  const subRow = (from: string, to: string, over: Partial<SubRow> = {}): SubRow => ({
    subname: edgeName(CLUSTER, from, to),
    enabled: true,
    worker_pid: 1,
    last_msg_age_s: 1,
    latest_end_lsn: '0/1',
    apply_error_count: 0,
    sync_error_count: 0,
    conflicts: null,
    ...over,
  })
  const probe = (name: string, other: string, sub: Partial<SubRow> = {}): NodeProbe => ({
    name,
    target: `h:1/${name}`,
    reachable: true,
    version: '18.0',
    versionNum: 180000,
    data: {
      in_recovery: false,
      current_lsn: '0/10',
      publication: true,
      slots: [{slot_name: edgeName(CLUSTER, name, other), active: true, wal_status: 'reserved', confirmed_flush_lsn: '0/10', restart_lsn: '0/1', lag_bytes: 0, retained_bytes: 10}],
      subscriptions: [subRow(other, name, sub)],
    },
  })

  it('suspects: only links whose subscriber may be failing get the second look', () => {
    assert.equal(stuckSuspect(subRow('a', 'b')), false)
    assert.equal(stuckSuspect(subRow('a', 'b', {apply_error_count: 1})), true)
    assert.equal(stuckSuspect(subRow('a', 'b', {worker_pid: null})), true)
    assert.equal(stuckSuspect(subRow('a', 'b', {enabled: false, worker_pid: null})), false)
    assert.equal(stuckSuspect(subRow('a', 'b', {enabled: false, worker_pid: null, disable_on_error: true, apply_error_count: 1})), true)
    assert.equal(stuckSuspect(subRow('a', 'b', {apply_error_count: 1}), 'add-node'), false)
    assert.equal(stuckSuspect(undefined), false)
  })

  it('a stuck link is critical, names the final LSN and the error, and gets the Stuck at column', () => {
    const probes = [probe('a', 'b', {apply_error_count: 4}), probe('b', 'a')]
    const stuck = new Map([[linkKey('b', 'a'), {xid: 765, finalLsn: '0/178C408', commitTime: 't', evidence: 'apply worker failed 2 time(s) in 1.0 s', error: 'duplicate key'}]])
    const r = evaluate({cluster: CLUSTER, probes, thresholds: DEFAULT_HEALTH, unfinished: [], checkedAt: new Date(0), stuck})
    const ba = r.links.find(l => l.from === 'b' && l.to === 'a')!
    assert.equal(ba.status, 'critical')
    assert.equal(r.health, 'critical')
    assert.equal(exitCodeFor(r.health), 2)
    assert.deepEqual(ba.stuck, stuck.get(linkKey('b', 'a')))
    assert.match(ba.reasons[0], /^stuck: transaction 765 \(final LSN 0\/178C408\) fails to apply: apply worker failed 2 time\(s\) in 1.0 s: duplicate key; `mmlite skip-tx --from b --to a`/)
    const ab = r.links.find(l => l.from === 'a' && l.to === 'b')!
    assert.equal('stuck' in ab, false)
    assert.equal(ab.status, 'ok')
    const text = renderStatus(r).join('\n')
    assert.match(text, /\| Stuck at +\|/)
    assert.match(text, /b → a .*\| 0\/178C408 \| critical/)
    // without a stuck link there is no such column
    const ok = evaluate({cluster: CLUSTER, probes, thresholds: DEFAULT_HEALTH, unfinished: [], checkedAt: new Date(0)})
    assert.doesNotMatch(renderStatus(ok).join('\n'), /Stuck at/)
  })
})

describe('mmlite.yaml: disable_on_error recorded', () => {
  let dir: string
  beforeEach(() => (dir = mkdtempSync(path.join(tmpdir(), 'mmlite-doe-'))))
  afterEach(() => rmSync(dir, {recursive: true, force: true}))

  it('is added (or flipped) in place, keeping comments; a second call changes nothing', async () => {
    const file = path.join(dir, 'mmlite.yaml')
    const text = '# my cluster\ncluster: shop # the name\ntables:\n  - public.users\nnodes:\n  - name: a\n    dsn: host=x\n  - name: b\n    dsn: host=y\n'
    writeFileSync(file, text)
    assert.equal(loadConfig(file).disableOnError, false)
    assert.equal(await recordDisableOnError(file), true)
    const after = readFileSync(file, 'utf8')
    assert.ok(after.startsWith(text), after)
    assert.match(after, /\ndisable_on_error: true\n$/)
    assert.equal(loadConfig(file).disableOnError, true)
    assert.equal(await recordDisableOnError(file), false)
    assert.equal(readFileSync(file, 'utf8'), after)
    writeFileSync(file, text.replace('tables:', 'disable_on_error: false # not yet\ntables:'))
    assert.equal(await recordDisableOnError(file), true)
    assert.match(readFileSync(file, 'utf8'), /^# my cluster\ncluster: shop # the name\ndisable_on_error: true # not yet\ntables:/)
  })
})

describe('identifyFailing / findLoggedFailure (which pending transaction fails)', () => {
  const tx = (xid: number, firstLsn: string, finalLsn: string) => ({xid, firstLsn, finalLsn, endLsn: finalLsn, commitTime: '', changeCount: 0, changes: [], messages: 0})
  const S = tx(759, '0/1E2CDF0', '0/1E2CE80')
  const T = tx(758, '0/1BF6F70', '0/2062D40')
  const U = tx(760, '0/2062F00', '0/2063000')
  const o = {subscription: 'shop_a_b', node: 'b'}

  it('without parallel apply the first pending one fails', () => {
    assert.deepEqual(identifyFailing([S, T], {...o, parallel: false, logged: null}), {tx: S})
  })
  it('parallel, no log: not sure; names the transactions streamed before the first one commits, not the later ones', () => {
    const r = identifyFailing([S, T, U], {...o, parallel: true, logged: null})
    assert.equal(r.tx, S)
    assert.match(r.unsure!, /streaming = parallel/)
    assert.match(r.unsure!, /transaction 759, transaction 758 \(final LSN 0\/2062D40, 0 change\(s\)\) or one still in progress/)
    assert.doesNotMatch(r.unsure!, /760/)
    assert.match(r.unsure!, /mmlite init/)
  })
  it('parallel, the log names the first pending one: sure', () => {
    assert.deepEqual(identifyFailing([S, T], {...o, parallel: true, logged: {xid: 759, finishLsn: null}}), {tx: S})
    assert.deepEqual(identifyFailing([S, T], {...o, parallel: true, logged: {xid: 759, finishLsn: '0/1E2CE80'}}), {tx: S})
  })
  it('the log names one behind the first pending one: not sure, in any mode (SKIP cannot reach it)', () => {
    for (const parallel of [true, false]) {
      const r = identifyFailing([S, T], {...o, parallel, logged: {xid: 758, finishLsn: null}})
      assert.match(r.unsure!, /log names transaction 758 .* while transaction 759 .* is pending ahead of it/)
    }
  })
  it('the log names a transaction that is not pending (an old error): parallel not sure, otherwise the first pending', () => {
    assert.ok(identifyFailing([S], {...o, parallel: true, logged: {xid: 12, finishLsn: null}}).unsure)
    assert.deepEqual(identifyFailing([S], {...o, parallel: false, logged: {xid: 12, finishLsn: null}}), {tx: S})
  })
  it('findLoggedFailure: the last apply error context of the origin, with or without the finish LSN', () => {
    const log = [
      '2026-11-30 15:55:52 UTC [101] ERROR:  duplicate key value violates unique constraint "users_pkey"',
      '2026-11-30 15:55:52 UTC [101] CONTEXT:  processing remote data for replication origin "pg_16390" during message type "INSERT" for replication target relation "public.users" in transaction 700, finished at 0/1A00000',
      '2026-11-30 15:55:53 UTC [102] CONTEXT:  processing remote data for replication origin "pg_99999" during message type "INSERT" in transaction 1',
      '2026-11-30 15:55:54 UTC [103] ERROR:  duplicate key value violates unique constraint "users_pkey"',
      '2026-11-30 15:55:54 UTC [103] CONTEXT:  processing remote data for replication origin "pg_16390" during message type "INSERT" for replication target relation "public.users" in transaction 758',
      '2026-11-30 15:55:54 UTC [90] LOG:  background worker "logical replication parallel worker" (PID 103) exited with exit code 1',
    ].join('\n')
    assert.deepEqual(findLoggedFailure(log, 16390), {xid: 758, finishLsn: null})
    assert.deepEqual(findLoggedFailure(log.split('\n').slice(0, 3).join('\n'), 16390), {xid: 700, finishLsn: '0/1A00000'})
    assert.equal(findLoggedFailure(log, 5), null)
  })
})
