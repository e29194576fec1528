/**
 * libpq connection strings (src/db/conninfo.ts, src/db/redact.ts): parsing URIs and
 * key=value lists, rendering with every value quoted, and never letting a password through.
 */
import assert from 'node:assert/strict'
import {mkdtempSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {
  describeTarget,
  parseConnInfo,
  quoteConnValue,
  redactText,
  renderConnInfo,
  tlsAttempts,
  toClientConfig,
  type ConnInfo,
  type TlsOptions,
} from '../../src/db/conninfo.js'
import {REDACTED} from '../../src/db/redact.js'
import {escapeLiteral} from '../../src/db/quote.js'
import {ExitCode, MmliteError} from '../../src/errors.js'

const obj = (ci: ConnInfo) => Object.fromEntries(ci)

function parseFails(dsn: string): MmliteError {
  try {
    parseConnInfo(dsn)
  } catch (e) {
    assert.ok(e instanceof MmliteError)
    assert.equal(e.code, ExitCode.Config)
    return e
  }
  assert.fail(`parseConnInfo accepted ${dsn}`)
}

describe('conninfo: parseConnInfo (URI)', () => {
  it('user:password@host:port/db?sslmode=require', () => {
    assert.deepEqual(obj(parseConnInfo('postgresql://alice:pw@db.example.com:6543/shop?sslmode=require')), {
      user: 'alice',
      password: 'pw',
      host: 'db.example.com',
      port: '6543',
      dbname: 'shop',
      sslmode: 'require',
    })
  })

  it('postgres:// scheme, case-insensitive', () => {
    assert.deepEqual(obj(parseConnInfo('POSTGRES://u@h/d')), {user: 'u', host: 'h', dbname: 'd'})
  })

  it('percent-encoding in user, password, host and database', () => {
    const ci = parseConnInfo('postgresql://al%20ice:p%40ss%2Fw%3Ard%25@my%2Dhost:5432/my%20db')
    assert.equal(ci.get('user'), 'al ice')
    assert.equal(ci.get('password'), 'p@ss/w:rd%')
    assert.equal(ci.get('host'), 'my-host')
    assert.equal(ci.get('dbname'), 'my db')
  })

  it('an unencoded @ in the password: the last @ separates the host', () => {
    const ci = parseConnInfo('postgresql://u:p@ss@h/d')
    assert.equal(ci.get('password'), 'p@ss')
    assert.equal(ci.get('host'), 'h')
  })

  it('IPv6 [::1]:5433', () => {
    assert.deepEqual(obj(parseConnInfo('postgresql://u@[::1]:5433/db')), {user: 'u', host: '::1', port: '5433', dbname: 'db'})
    assert.deepEqual(obj(parseConnInfo('postgresql://[fe80::1]/db')), {host: 'fe80::1', dbname: 'db'})
  })

  it('no port, no user, no database', () => {
    assert.deepEqual(obj(parseConnInfo('postgresql://u@h/db')), {user: 'u', host: 'h', dbname: 'db'})
    assert.deepEqual(obj(parseConnInfo('postgresql://h')), {host: 'h'})
    assert.equal(parseConnInfo('postgresql://h/db').has('port'), false)
  })

  it('query parameters: database → dbname, ssl=true → sslmode=require, percent-decoded values', () => {
    assert.deepEqual(obj(parseConnInfo('postgresql://h?database=d&ssl=true&application_name=a%20b&connect_timeout=5')), {
      host: 'h',
      dbname: 'd',
      sslmode: 'require',
      application_name: 'a b',
      connect_timeout: '5',
    })
  })

  it('bad URI parameters and percent-encoding are config errors that do not echo a password', () => {
    const e = parseFails('postgresql://h/d?password')
    assert.match(e.message, /missing "=" in URI parameter/)
    const e2 = parseFails('postgresql://h/d?passwordsecretvalue')
    assert.ok(!e2.message.includes('secretvalue'), e2.message)
    assert.match(parseFails('postgresql://u:%zz@h/d').message, /invalid percent-encoding/)
  })
})

describe('conninfo: parseConnInfo (key=value)', () => {
  it('plain pairs, spaces around =, keys lower-cased', () => {
    assert.deepEqual(obj(parseConnInfo('  host=h   PORT = 5433\tdbname=d user=u  ')), {host: 'h', port: '5433', dbname: 'd', user: 'u'})
  })

  it("quoted values with spaces, \\' and \\\\ escapes", () => {
    const ci = parseConnInfo(String.raw`host='my host' password='it\'s a \\ secret' dbname=''`)
    assert.equal(ci.get('host'), 'my host')
    assert.equal(ci.get('password'), String.raw`it's a \ secret`)
    assert.equal(ci.get('dbname'), '')
  })

  it('backslash escapes in unquoted values', () => {
    assert.equal(parseConnInfo(String.raw`user=a\ b password=x\\y`).get('user'), 'a b')
    assert.equal(parseConnInfo(String.raw`user=a\ b password=x\\y`).get('password'), String.raw`x\y`)
  })

  it('unterminated quote → config error naming the key', () => {
    const e = parseFails("host='abc dbname=x")
    assert.match(e.message, /unterminated quoted value for "host"/)
    assert.ok(e.suggestions.length > 0)
  })

  it('missing = → config error', () => {
    assert.match(parseFails('host').message, /missing "=" after "host"/)
    assert.match(parseFails('=x').message, /empty key/)
  })
})

describe('conninfo: renderConnInfo', () => {
  it('quotes every value and escapes \' and \\', () => {
    const ci: ConnInfo = new Map([
      ['host', 'h'],
      ['port', '5432'],
      ['password', String.raw`a'b\c`],
    ])
    assert.equal(renderConnInfo(ci), String.raw`host='h' port='5432' password='a\'b\\c'`)
    assert.equal(quoteConnValue(''), "''")
  })

  const nasty = [
    "it's",
    String.raw`back\slash`,
    String.raw`\'`,
    String.raw`trailing\\`,
    'with space',
    'a=b=c',
    "  ' = \\ '' \\\\ ",
    'ünïcödé ☃ 密码',
    '',
    'tab\tand\nnewline',
  ]
  for (const v of nasty) {
    it(`round-trips ${JSON.stringify(v)}`, () => {
      const ci: ConnInfo = new Map([
        ['host', 'h'],
        ['password', v],
        ['application_name', v],
        ['dbname', 'd'],
      ])
      const back = parseConnInfo(renderConnInfo(ci))
      assert.deepEqual([...back], [...ci])
    })
  }

  it('round-trips a parsed URI', () => {
    const ci = parseConnInfo('postgresql://u:p%27%5C%20w@[::1]:5433/d%20b?sslmode=verify-full')
    assert.deepEqual([...parseConnInfo(renderConnInfo(ci))], [...ci])
  })
})

describe('conninfo: redaction', () => {
  const PW = String.raw`s3 cr'e\t pw`
  const ci: ConnInfo = new Map([
    ['host', 'db.example.com'],
    ['user', 'repl'],
    ['password', PW],
    ['sslpassword', 'keypass'],
    ['dbname', 'shop'],
  ])

  /** no fragment of the password survives (each word of it, and the whole) */
  function noPassword(text: string, pw = PW) {
    assert.ok(!text.includes(pw), text)
    for (const frag of ['s3', "cr'e", String.raw`e\t`, "cr''e", 'pw', 'keypass']) assert.ok(!text.includes(frag), `"${frag}" survived in: ${text}`)
  }

  it('renderConnInfo({redact: true}) hides password and sslpassword, keeps the rest', () => {
    const r = renderConnInfo(ci, {redact: true})
    assert.equal(r, `host='db.example.com' user='repl' password='${REDACTED}' sslpassword='${REDACTED}' dbname='shop'`)
    noPassword(r)
  })

  it('redactText: URI userinfo and query password', () => {
    assert.equal(redactText('connect postgresql://repl:s3cret@h:5432/db failed'), `connect postgresql://repl:${REDACTED}@h:5432/db failed`)
    const q = redactText('postgres://h/db?sslmode=require&password=s3cret&x=1')
    assert.ok(q.startsWith(`postgres://h/db?sslmode=require&password=${REDACTED}`), q)
    assert.ok(!q.includes('s3cret'), q)
    assert.equal(redactText('postgresql://repl@h/db'), 'postgresql://repl@h/db')
  })

  it('redactText: key=value, plain and quoted', () => {
    assert.equal(redactText('host=h password=s3cret dbname=d'), `host=h password=${REDACTED} dbname=d`)
    assert.equal(redactText('host=h PASSWORD = s3cret'), `host=h PASSWORD = ${REDACTED}`)
    const q = redactText(renderConnInfo(ci))
    noPassword(q)
    assert.ok(q.includes("host='db.example.com'") && q.includes("dbname='shop'"), q)
  })

  it('redactText: conninfo inside a SQL literal (escapeLiteral of renderConnInfo)', () => {
    const lit = escapeLiteral(renderConnInfo(ci))
    assert.ok(lit.startsWith("E'"), lit) // backslashes make it an E'' literal
    const stmt = `CREATE SUBSCRIPTION "s"\n  CONNECTION ${lit}\n  PUBLICATION "p"`
    const r = redactText(stmt)
    noPassword(r)
    assert.ok(r.includes(`password=${REDACTED}`), r)
    assert.ok(r.includes("dbname=''shop''"), r)
  })

  for (const pw of ["only'quote here", 'ends with\\', "x\\'", 'back\\slash and space', "a'b", "'", 'no specials']) {
    it(`redactText: SQL literal of a conninfo with password ${JSON.stringify(pw)}`, () => {
      const c2: ConnInfo = new Map([
        ['host', 'h'],
        ['password', pw],
        ['dbname', 'shop'],
      ])
      const r = redactText(escapeLiteral(renderConnInfo(c2)))
      assert.match(r, /^E?'host=''h'' password=\*{8} dbname=''shop'''$/, r)
    })
  }

  it('describeTarget shows host:port/db and no user or password', () => {
    const t = describeTarget(ci)
    assert.equal(t, 'db.example.com:5432/shop')
    assert.ok(!t.includes('repl') && !t.includes('s3'))
    assert.equal(describeTarget(parseConnInfo('postgresql://u:pw@[::1]:5433/d')), '::1:5433/d')
  })
})

describe('conninfo: toClientConfig', () => {
  it('maps dbname → database, port → number, connect_timeout → ms, user/password through', () => {
    const c = toClientConfig(parseConnInfo('host=h port=6543 dbname=shop user=u password=p connect_timeout=7'))
    assert.deepEqual(c, {
      host: 'h',
      port: 6543,
      user: 'u',
      password: 'p',
      database: 'shop',
      application_name: 'mmlite',
      connectionTimeoutMillis: 7000,
    })
  })

  it('an explicit timeout wins over connect_timeout; application_name is kept', () => {
    const c = toClientConfig(parseConnInfo('host=h dbname=d connect_timeout=7 application_name=app sslmode=disable'), 1500)
    assert.equal(c.connectionTimeoutMillis, 1500)
    assert.equal(c.application_name, 'app')
    assert.equal(c.ssl, undefined)
  })

  it('sslmode follows libpq: attempts in order, verification, files, refusals', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mmlite-tls-'))
    const ca = path.join(dir, 'ca.crt')
    writeFileSync(ca, 'CA PEM')
    const env = {HOME: dir} as NodeJS.ProcessEnv
    const t = (dsn: string, e: NodeJS.ProcessEnv = env) => tlsAttempts(parseConnInfo(dsn, {env: e}), e)
    const home = os.homedir
    // ~/.postgresql defaults must not come from the developer's home
    ;(os as {homedir: () => string}).homedir = () => dir
    try {
      assert.deepEqual(t('host=h sslmode=disable').attempts, [false])
      const prefer = t('host=h')
      assert.equal(prefer.mode, 'prefer')
      assert.equal(prefer.attempts.length, 2)
      assert.equal(prefer.attempts[1], false)
      assert.equal((prefer.attempts[0] as TlsOptions).rejectUnauthorized, false)
      const allow = t('host=h sslmode=allow').attempts
      assert.equal(allow[0], false)
      assert.equal((allow[1] as TlsOptions).rejectUnauthorized, false)
      assert.equal((t('host=h sslmode=require').attempts[0] as TlsOptions).rejectUnauthorized, false)
      // require with a root certificate behaves like verify-ca
      const req = t(`host=h sslmode=require sslrootcert=${ca}`).attempts[0] as TlsOptions
      assert.equal(req.rejectUnauthorized, true)
      assert.equal(req.ca, 'CA PEM')
      assert.equal(typeof req.checkServerIdentity, 'function')
      const full = t(`host=db.example sslmode=verify-full sslrootcert=${ca}`).attempts[0] as TlsOptions
      assert.equal(full.rejectUnauthorized, true)
      assert.equal(full.checkServerIdentity, undefined)
      assert.equal(full.servername, 'db.example')
      // PGSSLMODE / PGSSLROOTCERT
      const envd = t('host=h', {...env, PGSSLMODE: 'verify-ca', PGSSLROOTCERT: ca})
      assert.equal(envd.mode, 'verify-ca')
      assert.equal((envd.attempts[0] as TlsOptions).ca, 'CA PEM')
      assert.throws(() => t('host=h sslmode=verify-full'), /root certificate file .* does not exist/)
      assert.throws(() => t('host=h sslmode=require sslrootcert=system'), /weak sslmode "require"/)
      assert.throws(() => t('host=h sslmode=bogus'), /invalid sslmode "bogus"/)
      assert.deepEqual(t('host=/tmp sslmode=require').attempts, [false], 'no TLS on a Unix socket')
      assert.throws(() => toClientConfig(parseConnInfo('host=h channel_binding=require')), /channel_binding.*not supported/)
      assert.throws(() => t('host=h sslnegotiation=direct'), /sslnegotiation=direct requires sslmode require/)
      assert.equal(toClientConfig(parseConnInfo('host=h sslmode=require sslnegotiation=direct')).sslnegotiation, 'direct')
    } finally {
      ;(os as {homedir: () => string}).homedir = home
    }
  })

  it('rejects a bad port and several hosts', () => {
    assert.throws(() => toClientConfig(parseConnInfo('host=h port=99999')), (e: MmliteError) => e.code === ExitCode.Config && /invalid port/.test(e.message))
    assert.throws(() => toClientConfig(parseConnInfo('postgresql://a:1,b:2/d')), /multiple hosts/)
  })
})

describe('conninfo: keywords, services, no password in errors', () => {
  it('unknown keys are refused, with a suggestion (key=value and URI)', () => {
    assert.match(parseFails('host=h sslmod=require').message, /unknown connection keyword "sslmod" \(did you mean "sslmode"\?\)/)
    assert.match(parseFails('postgresql://h/d?sslmod=require').message, /unknown connection keyword "sslmod"/)
  })

  it('an encoded "=" and space in a URI key cannot smuggle host=evil into the conninfo', () => {
    const e = parseFails('postgresql://u@good/d?sslmode%3Ddisable%20host=evil')
    assert.match(e.message, /unknown connection keyword/)
  })

  it('text after a password that parses as a key is never echoed', () => {
    for (const dsn of ['host=h password=abc def=ghi', 'host=h password=abc defghi', 'postgresql://h/d?password=abc&defghi', 'postgresql://h/d?password=abc&def=ghi']) {
      const e = parseFails(dsn)
      const all = [e.message, ...e.details, ...e.suggestions].join('\n')
      assert.ok(!/def|ghi|abc/.test(all), `${dsn}: ${all}`)
    }
  })

  it('service=: keys from PGSERVICEFILE, keys in the DSN win; PGSERVICE; PGSYSCONFDIR; an unknown service is an error', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mmlite-svc-'))
    const file = path.join(dir, 'services.conf')
    writeFileSync(file, '# services\n[other]\nhost=o\n[shop]\nhost=db.internal\nport = 6543\ndbname=shop\nsslmode=verify-full\n')
    const env = {PGSERVICEFILE: file}
    assert.deepEqual(obj(parseConnInfo('service=shop user=admin port=7000', {env})), {host: 'db.internal', port: '7000', dbname: 'shop', sslmode: 'verify-full', user: 'admin'})
    assert.deepEqual(obj(parseConnInfo('postgresql://admin@/?service=shop', {env})).host, 'db.internal')
    assert.equal(parseConnInfo('user=a', {env: {...env, PGSERVICE: 'other'}}).get('host'), 'o')
    writeFileSync(path.join(dir, 'pg_service.conf'), '[sys]\nhost=sys.example\n')
    assert.equal(parseConnInfo('service=sys', {env: {PGSERVICEFILE: path.join(dir, 'none'), PGSYSCONFDIR: dir}}).get('host'), 'sys.example')
    assert.throws(() => parseConnInfo('service=nope', {env}), /service "nope" not found/)
    writeFileSync(file, '[bad]\nhots=x\n')
    assert.throws(() => parseConnInfo('service=bad', {env}), /services\.conf:2: unknown connection keyword "hots"/)
  })
})
