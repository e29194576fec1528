/**
 * SQL quoting (src/db/quote.ts), table names (src/config/tables.ts) and the deterministic
 * names of mmlite's objects (src/cluster/naming.ts).
 */
import assert from 'node:assert/strict'
import {escapeIdentifier, escapeLiteral, lsnLiteral} from '../../src/db/quote.js'
import {makeTableName, parseTableName} from '../../src/config/tables.js'
import {edgeName, fitName, lockKey, objectNameCollisions, publicationName, slotName, subscriptionName} from '../../src/cluster/naming.js'

describe('quote: escapeIdentifier / escapeLiteral', () => {
  it('identifiers are always double-quoted, " doubled, case and spaces kept', () => {
    assert.equal(escapeIdentifier('users'), '"users"')
    assert.equal(escapeIdentifier('My Table'), '"My Table"')
    assert.equal(escapeIdentifier('a"b'), '"a""b"')
    assert.equal(escapeIdentifier('"'), '""""')
    assert.equal(escapeIdentifier("it's"), `"it's"`)
    assert.equal(escapeIdentifier(''), '""')
  })

  it("literals: ' doubled, no E prefix without backslash", () => {
    assert.equal(escapeLiteral('plain'), "'plain'")
    assert.equal(escapeLiteral("it's"), "'it''s'")
    assert.equal(escapeLiteral('say "hi" Now'), `'say "hi" Now'`)
    assert.equal(escapeLiteral(''), "''")
  })

  it("literals with a backslash: E'' form with the backslash doubled", () => {
    assert.equal(escapeLiteral(String.raw`a\b`), String.raw`E'a\\b'`)
    assert.equal(escapeLiteral(String.raw`it's a \ thing`), String.raw`E'it''s a \\ thing'`)
    assert.equal(escapeLiteral(String.raw`\'`), String.raw`E'\\'''`)
  })

  it('literals keep unicode (astral characters too)', () => {
    assert.equal(escapeLiteral("ünï'😀"), "'ünï''😀'")
  })

  it('lsnLiteral accepts LSNs and rejects anything else', () => {
    assert.equal(lsnLiteral('0/16B3748'), "'0/16B3748'::pg_lsn")
    assert.throws(() => lsnLiteral("0/1'; DROP TABLE x; --"), /not an LSN/)
    assert.throws(() => lsnLiteral('16B3748'), /not an LSN/)
  })
})

describe('tables: parseTableName', () => {
  it('plain names are folded to lower case', () => {
    const t = parseTableName('Public.Users')
    assert.deepEqual(t, {schema: 'public', name: 'users', qualified: '"public"."users"', display: 'public.users'})
  })

  it('public."My Table": quoted part keeps case and spaces', () => {
    const t = parseTableName('public."My Table"')
    assert.equal(t.schema, 'public')
    assert.equal(t.name, 'My Table')
    assert.equal(t.qualified, '"public"."My Table"')
    assert.equal(t.display, 'public."My Table"')
  })

  it('"Sch""ema".t: doubled quote inside a quoted part', () => {
    const t = parseTableName('"Sch""ema".t')
    assert.equal(t.schema, 'Sch"ema')
    assert.equal(t.name, 't')
    assert.equal(t.qualified, '"Sch""ema"."t"')
    assert.equal(t.display, '"Sch""ema".t')
  })

  it('a quoted part may contain a dot', () => {
    const t = parseTableName('s."a.b"')
    assert.deepEqual([t.schema, t.name], ['s', 'a.b'])
    assert.equal(t.qualified, '"s"."a.b"')
  })

  it('quoted lower-case names display without quotes', () => {
    assert.equal(parseTableName('"public"."users"').display, 'public.users')
  })

  it('rejects unqualified, unterminated, trailing text, empty and invalid identifiers', () => {
    assert.throws(() => parseTableName('users'), /must be schema-qualified \(did you mean "public\.users"\?\)/)
    assert.throws(() => parseTableName('public."users'), /unterminated quoted identifier/)
    assert.throws(() => parseTableName('a.b.c'), /invalid identifier|unexpected text/)
    assert.throws(() => parseTableName('"a".b x'), /invalid identifier|unexpected text/)
    assert.throws(() => parseTableName('"".t'), /empty identifier/)
    assert.throws(() => parseTableName('public.my table'), /invalid identifier "my table"/)
    assert.throws(() => parseTableName('public.1abc'), /invalid identifier/)
  })

  it('makeTableName quotes whatever it is given', () => {
    assert.equal(makeTableName('s', 'x"y').qualified, '"s"."x""y"')
    assert.equal(makeTableName('s', 'x"y').display, 's."x""y"')
  })
})

describe('naming: object names', () => {
  it('publication is the cluster name; slot and subscription are <cluster>_<from>_<to>', () => {
    assert.equal(publicationName('shop'), 'shop')
    assert.equal(edgeName('shop', 'node1', 'node2'), 'shop_node1_node2')
    assert.equal(slotName('shop', 'node1', 'node2'), 'shop_node1_node2')
    assert.equal(subscriptionName('shop', 'node1', 'node2'), 'shop_node1_node2')
  })

  it('fitName leaves names of up to 63 characters alone', () => {
    const n63 = 'x'.repeat(63)
    assert.equal(fitName(n63), n63)
  })

  it('fitName shortens longer names to exactly 63 characters, deterministically, with a hash', () => {
    const long = 'c'.repeat(30) + '_' + 'a'.repeat(30) + '_' + 'b'.repeat(30)
    const f = fitName(long)
    assert.equal(f.length, 63)
    assert.equal(f, fitName(long))
    assert.match(f, /^c{30}_a{23}_[0-9a-f]{8}$/)
    assert.ok(f.startsWith(long.slice(0, 54)))
    // names with the same 54-character prefix still differ
    const other = long.slice(0, -1) + 'z'
    assert.notEqual(fitName(other), f)
    assert.equal(fitName('x'.repeat(64)).length, 63)
  })

  it('edge names of the longest allowed names fit and stay distinct per direction', () => {
    const c = 'c'.repeat(30)
    const a = 'a'.repeat(30)
    const b = 'b'.repeat(30)
    const ab = edgeName(c, a, b)
    const ba = edgeName(c, b, a)
    assert.ok(ab.length <= 63 && ba.length <= 63)
    assert.notEqual(ab, ba)
  })

  it('edgeName is distinct for every distinct directed edge of a mesh', () => {
    const nodes = ['n1', 'n2', 'n3', 'node_with_a_long_name_1234567', 'node_with_a_long_name_1234568']
    const names = new Set<string>()
    let count = 0
    for (const a of nodes)
      for (const b of nodes) {
        if (a === b) continue
        count++
        names.add(edgeName('a_cluster_with_a_long_name_xy', a, b))
      }
    assert.equal(names.size, count)
  })

  it('objectNameCollisions finds a_b→c vs a→b_c and nothing in a clean mesh', () => {
    const clash = objectNameCollisions({cluster: 'x', nodes: [{name: 'a_b'}, {name: 'c'}, {name: 'a'}, {name: 'b_c'}]})
    assert.equal(clash.length, 1)
    assert.match(clash[0], /a_b→c and a→b_c would both be named "x_a_b_c"/)
    assert.deepEqual(objectNameCollisions({cluster: 'x', nodes: [{name: 'a'}, {name: 'b'}, {name: 'c'}]}), [])
  })

  it('lockKey is a stable signed 64-bit integer per cluster', () => {
    const k = lockKey('shop')
    assert.equal(typeof k, 'bigint')
    assert.equal(k, lockKey('shop'))
    assert.ok(k >= -(2n ** 63n) && k < 2n ** 63n)
    assert.notEqual(lockKey('shop'), lockKey('shop2'))
    // pinned: changing the derivation would let two mmlite versions run concurrently on one cluster
    assert.equal(lockKey('shop'), 6105700650355999382n)
  })
})
