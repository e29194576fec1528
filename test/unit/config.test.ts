/**
 * mmlite.yaml parsing and validation (src/config/config.ts parseConfig / loadConfig):
 * round trip of a valid file, and every problem reported with file:line:col and its fix.
 */
import assert from 'node:assert/strict'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {DEFAULT_HEALTH, loadConfig, parseConfig, type Config} from '../../src/config/config.js'
import {ExitCode, MmliteError} from '../../src/errors.js'

const FILE = '/etc/mmlite/mmlite.yaml'

/** Parse, expecting failure; returns the error (message + details) */
function fails(text: string, env: NodeJS.ProcessEnv = {}): MmliteError {
  try {
    parseConfig(text, FILE, env)
  } catch (e) {
    assert.ok(e instanceof MmliteError, `expected MmliteError, got ${String(e)}`)
    assert.equal(e.code, ExitCode.Config)
    return e
  }
  assert.fail('parseConfig accepted an invalid configuration')
}

/** All problem lines of an error: the message for one problem, the details for several */
function problems(e: MmliteError): string[] {
  if (e.details.length) return e.details
  return [e.message.replace(/^invalid configuration: /, '')]
}

function only(e: MmliteError): string {
  const p = problems(e)
  assert.equal(p.length, 1, `expected exactly one problem, got:\n${p.join('\n')}`)
  return p[0]
}

const VALID = `# a comment
cluster: shop
tables:
  - public.users
  - Sales."Order Items"
nodes:
  - name: node1
    dsn: postgresql://repl:s3cret@10.0.0.1:5432/shop
  - name: node2
    dsn: host=10.0.0.2 port=5433 dbname=shop user=repl
    peer_dsn: host=internal-2 port=5433 dbname=shop user=repl
`

describe('config: parseConfig', () => {
  describe('a valid file', () => {
    let cfg: Config
    before(() => {
      cfg = parseConfig(VALID, FILE, {})
    })

    it('keeps the file and the cluster name', () => {
      assert.equal(cfg.file, FILE)
      assert.equal(cfg.cluster, 'shop')
    })

    it('parses tables into schema, name, quoted qualified name and display form', () => {
      assert.deepEqual(cfg.tables, [
        {schema: 'public', name: 'users', qualified: '"public"."users"', display: 'public.users'},
        {schema: 'sales', name: 'Order Items', qualified: '"sales"."Order Items"', display: 'sales."Order Items"'},
      ])
    })

    it('parses nodes with their conninfo maps', () => {
      assert.deepEqual(
        cfg.nodes.map(n => n.name),
        ['node1', 'node2'],
      )
      const [n1, n2] = cfg.nodes
      assert.equal(n1.dsn, 'postgresql://repl:s3cret@10.0.0.1:5432/shop')
      assert.deepEqual(Object.fromEntries(n1.conn), {user: 'repl', password: 's3cret', host: '10.0.0.1', port: '5432', dbname: 'shop'})
      assert.deepEqual(Object.fromEntries(n2.conn), {host: '10.0.0.2', port: '5433', dbname: 'shop', user: 'repl'})
    })

    it('peer_dsn defaults to dsn, and is parsed separately when given', () => {
      const [n1, n2] = cfg.nodes
      assert.equal(n1.peerDsn, undefined)
      assert.deepEqual(Object.fromEntries(n1.peerConn), Object.fromEntries(n1.conn))
      assert.equal(n2.peerDsn, 'host=internal-2 port=5433 dbname=shop user=repl')
      assert.equal(n2.peerConn.get('host'), 'internal-2')
      assert.equal(n2.conn.get('host'), '10.0.0.2')
    })

    it('uses the default health thresholds and disable_on_error = false', () => {
      assert.deepEqual(cfg.health, DEFAULT_HEALTH)
      assert.equal(cfg.disableOnError, false)
    })
  })

  it('parses health thresholds and disable_on_error', () => {
    const cfg = parseConfig(VALID + 'health:\n  lag_warning_bytes: 2048\n  lag_warning_seconds: 5\n  error_window_seconds: 30\ndisable_on_error: true\n', FILE, {})
    assert.deepEqual(cfg.health, {lagWarningBytes: 2048, lagWarningSeconds: 5, errorWindowSeconds: 30})
    assert.equal(cfg.disableOnError, true)
    // one threshold given: the other keeps its default
    const half = parseConfig(VALID + 'health:\n  lag_warning_seconds: 9\n', FILE, {})
    assert.deepEqual(half.health, {...DEFAULT_HEALTH, lagWarningSeconds: 9})
  })

  it('rejects a bad health value, an unknown health key and a non-boolean disable_on_error', () => {
    const e = fails(VALID + 'health:\n  lag_warning_bytes: -1\n  lag_warnign_seconds: 3\ndisable_on_error: "yes please"\n')
    const p = problems(e)
    assert.equal(p.length, 3, p.join('\n'))
    assert.ok(p.some(l => l.startsWith(`${FILE}:13:22: health.lag_warning_bytes must be a non-negative number`)), p.join('\n'))
    assert.ok(p.some(l => l.startsWith(`${FILE}:14:3: unknown key "lag_warnign_seconds"`) && l.includes('did you mean "lag_warning_seconds"')), p.join('\n'))
    assert.ok(p.some(l => l.startsWith(`${FILE}:15:19: disable_on_error must be true or false`)), p.join('\n'))
  })

  it('expands ${VAR} from the given environment (not process.env)', () => {
    const text = VALID.replace('s3cret', '${DB_PASSWORD}').replace('10.0.0.2', '${NODE2_HOST}')
    const cfg = parseConfig(text, FILE, {DB_PASSWORD: 'from env', NODE2_HOST: 'n2.example'})
    assert.equal(cfg.nodes[0].conn.get('password'), 'from env')
    // the DSN as written: the secret stays in the environment
    assert.equal(cfg.nodes[0].dsn, 'postgresql://repl:${DB_PASSWORD}@10.0.0.1:5432/shop')
    assert.equal(cfg.nodes[1].conn.get('host'), 'n2.example')
  })

  it('${VAR} goes into parsed values, never into the DSN text (no conninfo injection)', () => {
    const kv = VALID.replace(/dsn: .*10\.0\.0\.2.*/, 'dsn: "host=10.0.0.2 port=5432 dbname=shop user=repl password=${PW}"')
    const cfg = parseConfig(kv, FILE, {PW: 'x port=7803 host=evil', DB_PASSWORD: 'p'})
    assert.equal(cfg.nodes[1].conn.get('password'), 'x port=7803 host=evil')
    assert.equal(cfg.nodes[1].conn.get('port'), '5432')
    assert.equal(cfg.nodes[1].conn.get('host'), '10.0.0.2')
    const uri = parseConfig(VALID.replace('s3cret', '${PW}'), FILE, {PW: 'x@evil:7803/other?host=evil'})
    assert.equal(uri.nodes[0].conn.get('password'), 'x@evil:7803/other?host=evil')
    assert.equal(uri.nodes[0].conn.get('host'), '10.0.0.1')
    assert.equal(uri.nodes[0].conn.has('port') && uri.nodes[0].conn.get('port'), '5432')
  })

  it('a DSN that is exactly one ${VAR} takes the whole DSN from it', () => {
    const cfg = parseConfig(VALID.replace(/dsn: .*10\.0\.0\.2.*/, 'dsn: ${NODE2_DSN}'), FILE, {NODE2_DSN: 'host=n2 dbname=shop'})
    assert.equal(cfg.nodes[1].conn.get('host'), 'n2')
    assert.equal(cfg.nodes[1].dsn, '${NODE2_DSN}')
  })

  it('a missing ${VAR} names the variable and its position, and leaks no other variable', () => {
    const text = VALID.replace('s3cret', '${DB_PASSWORD}').replace('host=10.0.0.2', 'host=${NODE2_HOST}')
    const e = fails(text, {DB_PASSWORD: 'hunter2-very-secret'})
    const p = only(e)
    assert.match(p, /^\/etc\/mmlite\/mmlite\.yaml:10:10: environment variable \$\{NODE2_HOST\} is not set/)
    assert.match(p, /export NODE2_HOST=/)
    const everything = [e.message, ...e.details, ...e.suggestions].join('\n')
    assert.ok(!everything.includes('hunter2'), everything)
  })

  it('unknown top-level key: position and "did you mean"', () => {
    const e = fails(VALID.replace('tables:', 'tabels:'))
    const p = problems(e)
    assert.ok(
      p.some(l => l === `${FILE}:3:1: unknown key "tabels" in the top level (did you mean "tables"?); allowed: cluster, tables, nodes, health, disable_on_error`),
      p.join('\n'),
    )
    // and tables is then missing
    assert.ok(p.some(l => l.includes('missing "tables:"')), p.join('\n'))
  })

  it('unknown node key: dns → did you mean "dsn"', () => {
    const e = fails(VALID.replace('    dsn: host=10.0.0.2', '    dns: host=10.0.0.2'))
    const p = problems(e)
    assert.ok(p.some(l => l.startsWith(`${FILE}:10:5: unknown key "dns" in a node (did you mean "dsn"?)`)), p.join('\n'))
    assert.ok(p.some(l => l.includes('node "node2" has no "dsn:"')), p.join('\n'))
  })

  it('an unrelated unknown key gets no "did you mean"', () => {
    const p = only(fails(VALID + 'frobnicate: 1\n'))
    assert.match(p, /unknown key "frobnicate" in the top level; allowed:/)
    assert.doesNotMatch(p, /did you mean/)
  })

  it('duplicate node: points at the second and mentions the first', () => {
    const text = VALID.replace('  - name: node2\n', '  - name: node1\n')
    const p = only(fails(text))
    assert.equal(p, `${FILE}:9:11: duplicate node "node1" (first defined at ${FILE}:7:11); node names must be unique`)
  })

  describe('names', () => {
    const cases: Array<[string, string, RegExp]> = [
      ['capitals', 'Shop', /must match \[a-z\]\[a-z0-9_\]\*.*e\.g\. "shop"/],
      ['leading digit', '1shop', /must match \[a-z\]\[a-z0-9_\]\*.*e\.g\. "shop"/],
      ['a dash', 'my-shop', /must match .*e\.g\. "my_shop"/],
      ['more than 30 characters', 'a'.repeat(31), /is 31 characters long; at most 30 are allowed/],
    ]
    for (const [what, bad, re] of cases) {
      it(`cluster name with ${what}`, () => {
        const p = only(fails(VALID.replace('cluster: shop', `cluster: ${bad}`)))
        assert.ok(p.startsWith(`${FILE}:2:10: cluster `), p)
        assert.match(p, re)
      })
      it(`node name with ${what}`, () => {
        const p = only(fails(VALID.replace('name: node2', `name: ${bad}`)))
        assert.ok(p.startsWith(`${FILE}:9:11: node name "${bad}" `), p)
        assert.match(p, re)
      })
    }
    it('exactly 30 characters is fine', () => {
      const name = 'a'.repeat(30)
      const cfg = parseConfig(VALID.replace('cluster: shop', `cluster: ${name}`).replace('name: node2', `name: ${name}`), FILE, {})
      assert.equal(cfg.cluster, name)
      assert.equal(cfg.nodes[1].name, name)
    })
  })

  describe('tables', () => {
    it('unqualified table: did you mean "public.users"', () => {
      const p = only(fails(VALID.replace('  - public.users', '  - users')))
      assert.equal(p, `${FILE}:4:5: table "users" must be schema-qualified (did you mean "public.users"?)`)
    })

    it('duplicate table (case-folded)', () => {
      const p = only(fails(VALID.replace('  - public.users\n', '  - public.users\n  - PUBLIC.Users\n')))
      assert.equal(p, `${FILE}:5:5: table public.users is listed twice`)
    })

    it('empty table list', () => {
      const p = only(fails(VALID.replace(/tables:\n(  - .*\n)+/, 'tables: []\n')))
      assert.match(p, /"tables" is empty/)
    })
  })

  it('YAML syntax error: reported with its position', () => {
    const e = fails('cluster: shop\ntables: [public.users\nnodes: []\n')
    const p = only(e)
    assert.match(p, /YAML syntax error/)
    assert.match(p, /^\/etc\/mmlite\/mmlite\.yaml:\d+:\d+: YAML syntax error/, `no line:col in: ${p}`)
  })

  it('YAML duplicate key: reported with its position', () => {
    const p = only(fails(VALID + 'cluster: other\n'))
    assert.match(p, /^\/etc\/mmlite\/mmlite\.yaml:12:1: YAML syntax error: Map keys must be unique/, p)
  })

  it('reports several problems together, each with its position', () => {
    const text = `cluster: Shop
tabels:
  - users
nodes:
  - name: a
    dsn: host=a
  - name: a
    dns: host=b
  - name: 9c
    dsn: host=c password=\${NOPE}
`
    const e = fails(text)
    assert.equal(e.message, 'invalid configuration (8 problems)')
    assert.equal(e.details.length, 8, e.details.join('\n'))
    for (const d of e.details) assert.match(d, /^\/etc\/mmlite\/mmlite\.yaml:\d+:\d+: /)
    const all = e.details.join('\n')
    for (const needle of [
      ':1:10: cluster must match',
      ':2:1: unknown key "tabels"',
      'missing "tables:"',
      ':7:11: duplicate node "a" (first defined at /etc/mmlite/mmlite.yaml:5:11)',
      ':8:5: unknown key "dns" in a node (did you mean "dsn"?)',
      ':7:5: node "a" has no "dsn:"',
      ':9:11: node name "9c" must match',
      ':10:10: environment variable ${NOPE} is not set',
    ]) {
      assert.ok(all.includes(needle), `missing ${needle} in:\n${all}`)
    }
  })

  it('rejects edge-name collisions (a_b→c and a→b_c with cluster x)', () => {
    const text = `cluster: x
tables: [public.t]
nodes:
  - {name: a_b, dsn: host=h1}
  - {name: c, dsn: host=h2}
  - {name: a, dsn: host=h3}
  - {name: b_c, dsn: host=h4}
`
    const e = fails(text)
    const all = problems(e).join('\n')
    assert.match(all, /edges a_b→c and a→b_c would both be named "x_a_b_c"; rename one of these nodes/)
    assert.match(all, /^\/etc\/mmlite\/mmlite\.yaml:4:3: /m)
    // without the colliding node it is fine
    const ok = parseConfig(text.replace('  - {name: b_c, dsn: host=h4}\n', ''), FILE, {})
    assert.equal(ok.nodes.length, 3)
  })

  it('a bad dsn is reported with the node name and position', () => {
    const p = only(fails(VALID.replace('dsn: host=10.0.0.2 port=5433', "dsn: host='10.0.0.2 port=5433")))
    assert.match(p, /^\/etc\/mmlite\/mmlite\.yaml:10:10: dsn of node "node2": unterminated quoted value for "host"/)
  })
})

describe('config: loadConfig', () => {
  let dir: string
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'mmlite-config-'))
  })
  after(() => rmSync(dir, {recursive: true, force: true}))

  it('a missing file → exit code 10 and a suggestion to run mmlite init', () => {
    const file = path.join(dir, 'nope.yaml')
    try {
      loadConfig(file, {})
      assert.fail('loadConfig accepted a missing file')
    } catch (e) {
      assert.ok(e instanceof MmliteError)
      assert.equal(e.code, ExitCode.Config)
      assert.equal(e.code, 10)
      assert.ok(e.message.includes(file), e.message)
      assert.ok(e.suggestions.some(s => s.includes('mmlite init')), e.suggestions.join('\n'))
    }
  })
})
