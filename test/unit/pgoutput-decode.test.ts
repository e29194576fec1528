/**
 * The pgoutput parser (src/cluster/pgoutput-decode.ts) on bytes captured from real servers with
 * `pg_logical_slot_peek_binary_changes(slot, NULL, NULL, 'proto_version', '1', 'publication_names', ...)`:
 * PostgreSQL 18 pgoutput, PostgreSQL 14 pgoutput (empty transactions, origin messages) and a
 * PostgreSQL 15 `mmlite` slot (the duplicate-key conflict of the integration test).
 */
import assert from 'node:assert/strict'
import {
  decodeMessages,
  PgoutputDecoder,
  PgoutputError,
  pgTimestampToIso,
} from '../../src/cluster/pgoutput-decode.js'
import {pendingAfter, peekOptions} from '../../src/cluster/link-probe.js'

const hex = (xs: string[]) => xs.map(x => Buffer.from(x, 'hex'))

/**
 * PG 18, publication cap (cap: id int PK, big text, note text, n numeric; capfull: a int, b text,
 * REPLICA IDENTITY FULL). Transaction 995:
 *   INSERT INTO cap VALUES (2, 'small', NULL, NULL); UPDATE cap SET id = 3 WHERE id = 2; DELETE FROM cap WHERE id = 3;
 *   INSERT INTO capfull VALUES (1, 'héllo'); UPDATE capfull SET b = 'bye' WHERE a = 1; DELETE FROM capfull;
 * Transaction 996: TRUNCATE cap.
 */
const PG18_DML = hex([
  '4200000000017ff7180003042c13b932c2000003e3',
  '52000040197075626c696300636170006400040169640000000017ffffffff006269670000000019ffffffff006e6f74650000000019ffffffff006e00000006a4ffffffff',
  '49000040194e00047400000001327400000005736d616c6c6e6e',
  '55000040194b00047400000001326e6e6e4e00047400000001337400000005736d616c6c6e6e',
  '44000040194b00047400000001336e6e6e',
  '52000040217075626c69630063617066756c6c0066000201610000000017ffffffff01620000000019ffffffff',
  '49000040214e0002740000000131740000000668c3a96c6c6f',
  '55000040214f0002740000000131740000000668c3a96c6c6f4e00027400000001317400000003627965',
  '44000040214f00027400000001317400000003627965',
  '430000000000017ff71800000000017ff7480003042c13b932c2',
  '4200000000018002e00003042c13b93511000003e4',
  '52000040197075626c696300636170006400040169640000000017ffffffff006269670000000019ffffffff006e6f74650000000019ffffffff006e00000006a4ffffffff',
  '54000000010000004019',
  '430000000000018002e000000000018004500003042c13b93511',
])

/**
 * PG 18: transaction 999 `UPDATE cap SET note = NULL, n = 2 WHERE id = 1` of a row whose `big` is
 * TOASTed (sent as unchanged), after the Relation message of the transaction before it; then
 * transaction 1001, an insert made in a session with replication origin "caporigin".
 */
const PG18_TOAST_ORIGIN = hex([
  '52000040197075626c696300636170006400040169640000000017ffffffff006269670000000019ffffffff006e6f74650000000019ffffffff006e00000006a4ffffffff',
  '420000000001803c000003042c13fb45f3000003e7',
  '55000040194e0004740000000131756e740000000132',
  '43000000000001803c000000000001803c300003042c13fb45f3',
  '420000000001803e280003042c13fb46e6000003e9',
  '4f00000000abcdef126361706f726967696e00',
  '52000040217075626c69630063617066756c6c0066000201610000000017ffffffff01620000000019ffffffff',
  '49000040214e0002740000000137740000000e66726f6d20656c73657768657265',
  '43000000000001803e280000000001803e700003042c13fb46e6',
])

/** PG 14 pgoutput sends empty transactions (921: pg_replication_origin_create) */
const PG14_EMPTY = hex([
  '420000000001738b180003042c13fb780400000399',
  '43000000000001738b180000000001738b700003042c13fb7804',
  '420000000001738bc00003042c13fb78a80000039a',
  '4f00000000abcdef126361706f726967696e00',
  '52000040167075626c69630063617066756c6c0066000201610000000017ffffffff01620000000019ffffffff',
  '49000040164e0002740000000137740000000e66726f6d20656c73657768657265',
  '43000000000001738bc00000000001738c080003042c13fb78a8',
])

/** PG 15, slot with plugin mmlite: node1's INSERT (5, 1, 'from node1', 'node1') then the good (6, ...) */
const PG15_MMLITE = hex([
  '420000000001545d380003042c0c105028000002d7',
  '52000040077075626c6963007573657273006400040169640000000014ffffffff00646570740000000017ffffffff006e616d650000000019ffffffff00757064617465645f62790000000019ffffffff',
  '49000040074e0004740000000135740000000131740000000a66726f6d206e6f64653174000000056e6f646531',
  '43000000000001545d380000000001545d680003042c0c105028',
  '420000000001545e800003042c0c10904f000002d9',
  '49000040074e0004740000000136740000000131740000000a676f6f6420616674657274000000056e6f646531',
  '43000000000001545e800000000001545eb00003042c0c10904f',
])

describe('pgoutput decoding (bytes from real servers)', () => {
  it('timestamps', () => {
    assert.equal(pgTimestampToIso(0n), '2000-01-01T00:00:00.000Z')
    assert.equal(pgTimestampToIso(1_000_000n * 86_400n + 1_500n), '2000-01-02T00:00:00.001Z')
  })

  it('insert, update with key change, delete; REPLICA IDENTITY FULL; truncate (PG 18)', () => {
    const txs = decodeMessages(PG18_DML)
    assert.equal(txs.length, 2)
    const [t, tr] = txs
    assert.equal(t.xid, 995)
    assert.equal(t.finalLsn, '0/17FF718')
    assert.equal(t.endLsn, '0/17FF748')
    assert.match(t.commitTime, /^2026-11-26T12:4\d:\d\d\.\d{3}Z$/)
    assert.equal(t.origin, undefined)
    assert.deepEqual(
      t.changes.map(c => [c.op, c.table]),
      [
        ['insert', 'public.cap'],
        ['update', 'public.cap'],
        ['delete', 'public.cap'],
        ['insert', 'public.capfull'],
        ['update', 'public.capfull'],
        ['delete', 'public.capfull'],
      ],
    )
    const [ins, upd, del, insF, updF, delF] = t.changes
    assert.deepEqual(ins.columns, ['id', 'big', 'note', 'n'])
    assert.deepEqual(ins.key, {id: '2'})
    assert.deepEqual(ins.new, {values: {id: '2', big: 'small', note: null, n: null}, unchanged: []})
    // the key changed: the old key ('K') identifies the row, the new row carries the new id
    assert.deepEqual(upd.key, {id: '2'})
    assert.deepEqual(upd.old?.values, {id: '2', big: null, note: null, n: null})
    assert.deepEqual(upd.new?.values, {id: '3', big: 'small', note: null, n: null})
    assert.deepEqual(del.key, {id: '3'})
    assert.equal(del.new, undefined)
    // FULL: every column is key, the old row ('O') is sent whole; UTF-8 text survives
    assert.deepEqual(insF.key, {a: '1', b: 'héllo'})
    assert.deepEqual(updF.key, {a: '1', b: 'héllo'})
    assert.deepEqual(updF.new?.values, {a: '1', b: 'bye'})
    assert.deepEqual(delF.key, {a: '1', b: 'bye'})
    assert.equal(tr.xid, 996)
    assert.equal(tr.changes.length, 1)
    assert.equal(tr.changes[0].op, 'truncate')
    assert.deepEqual(tr.changes[0].truncate, {tables: ['public.cap'], cascade: false, restartIdentity: false})
  })

  it('unchanged TOAST values and the Origin message (PG 18)', () => {
    const [u, o] = decodeMessages(PG18_TOAST_ORIGIN)
    assert.equal(u.xid, 999)
    assert.deepEqual(u.changes[0].new, {values: {id: '1', note: null, n: '2'}, unchanged: ['big']})
    assert.deepEqual(u.changes[0].key, {id: '1'})
    assert.equal(o.xid, 1001)
    assert.deepEqual(o.origin, {name: 'caporigin', lsn: '0/ABCDEF12'})
    assert.deepEqual(o.changes[0].new?.values, {a: '7', b: 'from elsewhere'})
  })

  it('empty transactions (PG 14) decode and are not pending; pending = commit at or after the origin', () => {
    const txs = decodeMessages(PG14_EMPTY)
    assert.deepEqual(
      txs.map(t => [t.xid, t.changes.length, t.finalLsn, t.endLsn]),
      [
        [921, 0, '0/1738B18', '0/1738B70'],
        [922, 1, '0/1738BC0', '0/1738C08'],
      ],
    )
    assert.deepEqual(pendingAfter(txs, null).map(t => t.xid), [922])
    // the walsender started at the origin skips transactions whose commit record starts before it
    assert.deepEqual(pendingAfter(txs, '0/1738BC0').map(t => t.xid), [922])
    assert.deepEqual(pendingAfter(txs, '0/1738BC1').map(t => t.xid), [])
  })

  it('an mmlite slot speaks pgoutput (PG 15): the conflicting insert, then the good one', () => {
    const txs = decodeMessages(PG15_MMLITE)
    assert.deepEqual(
      txs.map(t => [t.xid, t.finalLsn, t.endLsn, t.changes[0].table, t.changes[0].key, t.changes[0].new?.values.name]),
      [
        [727, '0/1545D38', '0/1545D68', 'public.users', {id: '5'}, 'from node1'],
        [729, '0/1545E80', '0/1545EB0', 'public.users', {id: '6'}, 'good after'],
      ],
    )
    // the origin after applying 727 is its end LSN: only 729 is left
    assert.deepEqual(pendingAfter(txs, '0/1545D68').map(t => t.xid), [729])
  })

  it('a transaction cut short is left out; malformed input is an error, not a guess', () => {
    assert.equal(decodeMessages(PG15_MMLITE.slice(0, 3)).length, 0)
    const d = new PgoutputDecoder()
    assert.throws(() => d.push(PG15_MMLITE[2]), PgoutputError) // change outside a transaction
    d.push(PG15_MMLITE[0])
    assert.throws(() => d.push(PG15_MMLITE[2]), /before its Relation message/)
    assert.throws(() => d.push(PG15_MMLITE[1].subarray(0, 20)), /unterminated string|truncated/)
    assert.throws(() => d.push(Buffer.from([0x53, 0, 0])), /unsupported message type/)
  })

  it('peek options follow what the subscription asks its walsender for', () => {
    assert.deepEqual(peekOptions({publications: ['shop'], origin: 'none', publisherVersion: 180000}), [
      'proto_version',
      '1',
      'publication_names',
      '"shop"',
      'origin',
      'none',
    ])
    // pgoutput before 16 rejects the origin option; names are quoted identifiers
    assert.deepEqual(peekOptions({publications: ['Shop', 'b"c'], origin: 'none', publisherVersion: 150004}), [
      'proto_version',
      '1',
      'publication_names',
      '"Shop","b""c"',
    ])
    assert.deepEqual(peekOptions({publications: ['shop'], origin: null, publisherVersion: 160000}).length, 4)
  })
})
