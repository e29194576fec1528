import assert from 'node:assert/strict'
import {classifyScript, classifyStatement, splitStatements} from '../../src/steps/ddl/classify.js'

describe('ddl: statements and their classification', () => {
  it('splits on top-level semicolons only', () => {
    assert.deepEqual(splitStatements("ALTER TABLE public.t ADD COLUMN a text DEFAULT 'x;y'; -- c;\nCREATE TABLE public.\"a;b\" (id int); SELECT $q$;$q$;"), [
      "ALTER TABLE public.t ADD COLUMN a text DEFAULT 'x;y'",
      'CREATE TABLE public."a;b" (id int)',
      'SELECT $q$;$q$',
    ])
  })
  const additive = [
    'ALTER TABLE public.items ADD COLUMN note text',
    'alter table public.items add column if not exists n int default 0 not null',
    "ALTER TABLE public.items ADD COLUMN a varchar(20) DEFAULT 'x'::text, ADD COLUMN b numeric(10, 2)",
    'ALTER TABLE public.items ADD COLUMN t timestamp with time zone NULL',
    'CREATE TABLE public.t2 (id bigint PRIMARY KEY, x text)',
    'CREATE INDEX items_v ON public.items (v)',
  ]
  for (const s of additive) it(`additive: ${s}`, () => assert.equal(classifyStatement(s).kind, 'additive', classifyStatement(s).reason))
  const destructive: Array<[string, RegExp]> = [
    ['ALTER TABLE public.items DROP COLUMN note', /dropped on one node/],
    ['ALTER TABLE public.items ALTER COLUMN v TYPE bigint', /type change/],
    ['ALTER TABLE public.items RENAME COLUMN v TO w', /old name/],
    ['ALTER TABLE public.items ADD COLUMN c timestamptz DEFAULT now()', /not a constant/],
    ['ALTER TABLE public.items ADD COLUMN c int NOT NULL', /NOT NULL column without a default/],
    ['ALTER TABLE public.items ADD COLUMN c int UNIQUE', /constraint/],
    ['ALTER TABLE public.items ADD COLUMN c int, DROP COLUMN v', /dropped on one node/],
    ['CREATE UNIQUE INDEX u ON public.items (v)', /UNIQUE index/],
    ['CREATE INDEX ON public.items (v)', /without a name/],
    ['DROP TABLE public.items', /DROP/],
    ['ALTER TABLE items ADD COLUMN c int', /not schema-qualified/],
    ['TRUNCATE public.items', /not recognised/],
    ['CREATE TABLE public.x AS SELECT 1', /not recognised/],
  ]
  for (const [s, why] of destructive) {
    it(`destructive: ${s}`, () => {
      const c = classifyStatement(s)
      assert.equal(c.kind, 'destructive')
      assert.match(c.reason!, why)
      assert.ok(c.safe)
    })
  }
  it('a script keeps its order', () => {
    assert.deepEqual(classifyScript('CREATE TABLE public.a (id int primary key); ALTER TABLE public.a ADD COLUMN b int').map(s => s.kind), ['additive', 'additive'])
  })
})
