/**
 * The copy step of add-node --strategy copy without servers: which format each table gets
 * (binary only where exact), the SQL around the load (FREEZE, index rebuild with the original
 * definition, tablespace, CLUSTER mark, comment), the progress estimate and its formatting, and
 * the refusal message for owner code.
 */
import assert from 'node:assert/strict'
import {parseTableName} from '../../src/config/tables.js'
import {afterLoadSql, beforeLoadSql, lockSql, copyInSql, copyOutSql, pinSql, planTable, type SourceTable, type TargetTable} from '../../src/steps/add-node/copy-plan.js'
import {formatProgress, formatSummary, overall, tableFraction, type TableProgress} from '../../src/steps/add-node/copy-progress.js'
import {ownerCodeMessage} from '../../src/steps/add-node/copy-guard.js'

const t = parseTableName('public.vals')
const src = (cols: SourceTable['cols'], relkind = 'r'): SourceTable => ({relkind, cols, estBytes: 1000, estRows: 10})
const dst = (types: Record<string, string>, o: Partial<TargetTable> = {}): TargetTable => ({oid: 42, relkind: 'r', types, referenced: false, indexes: [], ...o})

describe('copy plan: format per table', () => {
  const cols = [
    {name: 'id', type: 'integer', portable: true},
    {name: 'f', type: 'double precision', portable: true},
  ]
  it('binary when both majors match and every column is portable with the same type', () => {
    const p = planTable(t, src(cols), dst({id: 'integer', f: 'double precision', gen: 'integer'}), true)
    assert.equal(p.binary, true)
    assert.equal(copyOutSql(p), 'COPY "public"."vals" ("id", "f") TO STDOUT (FORMAT binary)')
    assert.equal(copyInSql(p), 'COPY "public"."vals" ("id", "f") FROM STDIN (FORMAT binary, FREEZE true)')
  })
  it('text across majors, for a type with server-specific binary form, and when a column type differs', () => {
    assert.match(planTable(t, src(cols), dst({id: 'integer', f: 'double precision'}), false).textReason!, /major/)
    const p = planTable(t, src([...cols, {name: 'm', type: 'public.mood[]', portable: false}]), dst({id: 'integer', f: 'double precision', m: 'public.mood[]'}), true)
    assert.equal(p.binary, false)
    assert.match(p.textReason!, /column m has type public\.mood\[\]/)
    assert.equal(copyInSql(p), 'COPY "public"."vals" ("id", "f", "m") FROM STDIN (FORMAT text, FREEZE true)')
    const q = planTable(t, src(cols), dst({id: 'bigint', f: 'double precision'}), true)
    assert.match(q.textReason!, /column id is integer on the source but bigint on the new node/)
  })
  it('partitioned source: COPY of a query; no FREEZE into a partitioned or referenced table', () => {
    const p = planTable(t, src(cols, 'p'), dst({id: 'integer', f: 'double precision'}, {relkind: 'p'}), true)
    assert.equal(copyOutSql(p), 'COPY (SELECT "id", "f" FROM "public"."vals") TO STDOUT (FORMAT binary)')
    assert.equal(p.freeze, false)
    const r = planTable(t, src(cols), dst({id: 'integer', f: 'double precision'}, {referenced: true}), true)
    assert.equal(r.freeze, false)
    assert.deepEqual(beforeLoadSql(r), [])
    assert.equal(lockSql(r), 'LOCK TABLE "public"."vals" IN ACCESS EXCLUSIVE MODE')
  })
  it('indexes rebuilt with their own definition, tablespace, CLUSTER mark and comment, inside the loading transaction', () => {
    const idx = {name: 'public."Vals t"', index: 'Vals t', def: 'CREATE INDEX "Vals t" ON public.vals USING btree (t) WHERE (id > 0)', tablespace: 'fast', clustered: true, comment: "it's"}
    const p = planTable(t, src(cols), dst({id: 'integer', f: 'double precision'}, {indexes: [idx]}), true)
    assert.deepEqual(beforeLoadSql(p), ['TRUNCATE ONLY "public"."vals"', 'DROP INDEX public."Vals t"'])
    assert.deepEqual(afterLoadSql(p), [
      "SET LOCAL default_tablespace = 'fast'",
      idx.def,
      'ALTER TABLE "public"."vals" CLUSTER ON "Vals t"',
      `COMMENT ON INDEX public."Vals t" IS 'it''s'`,
    ])
  })
  it('pins every setting that shapes text COPY', () => {
    const s = pinSql()
    for (const k of ["DateStyle = 'ISO, MDY'", "IntervalStyle = 'postgres'", "extra_float_digits = '3'", "client_encoding = 'UTF8'", "TimeZone = 'UTC'", "bytea_output = 'hex'", "lc_monetary = 'C'"])
      assert.ok(s.includes(`SET ${k}`), k)
  })
})

describe('copy progress', () => {
  const p = (o: Partial<TableProgress>): TableProgress => ({table: 'public.t', estBytes: 100 << 20, estRows: 1_000_000, bytes: 0, rows: 0, done: false, t0: 1, ms: 0, format: 'binary', ...o})
  it('fraction from rows when reltuples is known, else from bytes of the table size; never 100% before done', () => {
    assert.equal(tableFraction(p({rows: 250_000})), 0.25)
    assert.equal(tableFraction(p({estRows: 0, bytes: 50 << 20})), 0.5)
    assert.equal(tableFraction(p({rows: 2_000_000})), 0.99)
    assert.equal(tableFraction(p({t0: 0})), 0)
    assert.equal(tableFraction(p({done: true, rows: 5})), 1)
  })
  it('overall: size-weighted fraction, rates and ETA', () => {
    const o = overall([p({rows: 500_000, bytes: 40 << 20}), p({estBytes: 300 << 20, estRows: 0, t0: 0})], 10_000)
    assert.equal(o.fraction, 0.125)
    assert.equal(o.rowsPerS, 50_000)
    assert.equal(o.bytesPerS, 4 << 20)
    assert.equal(o.eta, 70)
    assert.equal(overall([p({})], 1000).eta, undefined)
  })
  it('formats a head line and one line per started table; the summary has rows/s and MB/s', () => {
    const text = formatProgress([p({rows: 500_000, bytes: 40 << 20}), p({table: 'public.u', t0: 0})], 10_000)
    const lines = text.split('\n')
    assert.equal(lines.length, 2)
    assert.match(lines[0], /^copied 40\.0 MB of ~200\.0 MB \(25%\), 50k rows\/s, 4\.0 MB\/s, ETA 30s$/)
    assert.match(lines[1], /^public\.t: 50% 500000 of ~1000000 rows, 40\.0 MB \(binary\)$/)
    assert.match(formatSummary([p({rows: 10, bytes: 2 << 20, done: true, ms: 500})], 2000), /^copied 10 rows \(2\.0 MB\) in 2\.0s, 5 rows\/s, 1\.0 MB\/s: public\.t 10 \(binary\)$/)
  })
})

describe('copy guard message', () => {
  it('names every function, its owner, and gives the DISABLE TRIGGER statements', () => {
    const m = ownerCodeMessage('node3', [
      {table: 'public.users', where: 'trigger users_who', fn: 'public.record_user()', owner: 'app', trigger: 'ALTER TABLE public.users DISABLE TRIGGER users_who'},
      {table: 'public.users', where: 'constraint c', fn: 'public.f(integer)', owner: 'app'},
    ])
    assert.match(m.message, /public\.users: trigger users_who runs public\.record_user\(\) \(owned by app\); public\.users: constraint c runs public\.f\(integer\)/)
    assert.match(m.fix, /ALTER TABLE public\.users DISABLE TRIGGER users_who;/)
    assert.match(m.fix, /SECURITY DEFINER/)
  })
})
