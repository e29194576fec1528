/**
 * `mmlite ddl`: split a script into statements and classify each one, conservatively.
 *
 *   additive     CREATE TABLE; CREATE INDEX (not UNIQUE); ALTER TABLE ... ADD COLUMN whose
 *                column is nullable or has a constant default (every subcommand of the
 *                ALTER TABLE must be such an ADD COLUMN)
 *   destructive  everything else: DROP, RENAME, ALTER COLUMN ... TYPE, UNIQUE indexes and
 *                constraints (a row one node accepts could fail on another), defaults that
 *                are not constants (existing rows would get different values on each node),
 *                and any statement not recognised above. Refused unless --force, with the
 *                reason and a safe sequence.
 */

export interface DdlStatement {
  sql: string
  kind: 'additive' | 'destructive'
  /** why it is destructive, and how to do it safely */
  reason?: string
  safe?: string
  /** catalog test telling whether it is already applied on a node (SQL returning one boolean `done`), when one exists */
  doneSql?: string
}

/** Split on top-level semicolons (quotes, "identifiers", $tag$ bodies and comments respected). */
export function splitStatements(text: string): string[] {
  const out: string[] = []
  let cur = ''
  let i = 0
  while (i < text.length) {
    const ch = text[i]
    const two = text.slice(i, i + 2)
    if (two === '--') {
      const j = text.indexOf('\n', i)
      i = j < 0 ? text.length : j + 1
      cur += ' '
      continue
    }
    if (two === '/*') {
      const j = text.indexOf('*/', i + 2)
      i = j < 0 ? text.length : j + 2
      cur += ' '
      continue
    }
    if (ch === "'" || ch === '"') {
      let j = i + 1
      while (j < text.length) {
        if (text[j] === ch) {
          if (text[j + 1] === ch) j += 2
          else break
        } else j++
      }
      cur += text.slice(i, j + 1)
      i = j + 1
      continue
    }
    if (ch === '$') {
      const m = /^\$[A-Za-z_]*\$/.exec(text.slice(i))
      if (m) {
        const j = text.indexOf(m[0], i + m[0].length)
        const end = j < 0 ? text.length : j + m[0].length
        cur += text.slice(i, end)
        i = end
        continue
      }
    }
    if (ch === ';') {
      if (cur.trim()) out.push(cur.trim())
      cur = ''
      i++
      continue
    }
    cur += ch
    i++
  }
  if (cur.trim()) out.push(cur.trim())
  return out
}

// an identifier, plain or "quoted", optionally schema-qualified
const IDENT = String.raw`(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)`
const QNAME = String.raw`${IDENT}(?:\s*\.\s*${IDENT})?`
// a constant: number, 'string' (with an optional ::type cast), true/false/null
const CONST = String.raw`(?:[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|'(?:[^']|'')*'|true|false|null)(?:\s*::\s*[A-Za-z_][A-Za-z0-9_ ]*(?:\(\s*\d+(?:\s*,\s*\d+)?\s*\))?(?:\[\])?)?`
// a column type: words, optional (n[,m]), optional []
const TYPE = String.raw`(?:${IDENT}\s*\.\s*)?[A-Za-z_][A-Za-z0-9_]*(?:\s+(?:varying|precision|with(?:out)?\s+time\s+zone|zone))*(?:\s*\(\s*\d+(?:\s*,\s*\d+)?\s*\))?(?:\s*\[\s*\])*`

const ADD_COLUMN = new RegExp(
  String.raw`^ADD\s+(?:COLUMN\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(${IDENT})\s+(${TYPE})` +
    String.raw`((?:\s+(?:NULL|NOT\s+NULL|DEFAULT\s+${CONST}|COLLATE\s+${IDENT}))*)\s*$`,
  'i',
)

/** split an ALTER TABLE's subcommands on top-level commas */
function splitCommas(s: string): string[] {
  const parts: string[] = []
  let depth = 0
  let cur = ''
  let q: string | undefined
  for (let i = 0; i < s.length; i++) {
    const c = s[i]
    if (q) {
      cur += c
      if (c === q) q = undefined
      continue
    }
    if (c === "'" || c === '"') q = c
    if (c === '(') depth++
    if (c === ')') depth--
    if (c === ',' && depth === 0) {
      parts.push(cur.trim())
      cur = ''
    } else cur += c
  }
  if (cur.trim()) parts.push(cur.trim())
  return parts
}

const unquote = (id: string) => (id.startsWith('"') ? id.slice(1, -1).replace(/""/g, '"') : id.toLowerCase())
const lit = (s: string) => `'${s.replace(/'/g, "''")}'`
/** regclass text for a (possibly unqualified) table name as written */
const relText = (q: string) => lit(q.replace(/\s+/g, ''))

export function classifyStatement(sql: string): DdlStatement {
  const s = sql.replace(/\s+/g, ' ').trim()
  const destructive = (reason: string, safe: string): DdlStatement => ({sql, kind: 'destructive', reason, safe})
  const target = new RegExp(String.raw`^(?:CREATE TABLE (?:IF NOT EXISTS )?|ALTER TABLE (?:IF EXISTS )?(?:ONLY )?|CREATE (?:UNIQUE )?INDEX (?:CONCURRENTLY )?(?:IF NOT EXISTS )?${IDENT} ON (?:ONLY )?)(${QNAME})`, 'i').exec(s)
  if (target && !new RegExp(String.raw`^${IDENT}\s*\.`).test(target[1])) {
    return destructive(`${target[1]} is not schema-qualified: mmlite sessions run with search_path = pg_catalog, pg_temp`, `Write the table as schema.table (e.g. public.${target[1]}).`)
  }

  let m = new RegExp(String.raw`^CREATE TABLE (?:IF NOT EXISTS )?(${QNAME})\s*\(`, 'i').exec(s)
  if (m && !/^CREATE TABLE .* (AS|PARTITION OF|INHERITS)\b/i.test(s)) {
    return {sql, kind: 'additive', doneSql: `SELECT pg_catalog.to_regclass(${relText(m[1])}::pg_catalog.text) IS NOT NULL AS done`}
  }
  m = new RegExp(String.raw`^CREATE (UNIQUE )?INDEX (CONCURRENTLY )?(?:IF NOT EXISTS )?(${IDENT}) ON (?:ONLY )?(${QNAME})`, 'i').exec(s)
  if (m) {
    if (m[1]) {
      return destructive(
        'a UNIQUE index restricts the rows a node accepts: a row another node sends that collides makes that link stop',
        'Make sure no two nodes can write the same key (disjoint key ranges or one writer per key), check there are no duplicates on any node, then run it with --force.',
      )
    }
    if (m[2]) return destructive('CREATE INDEX CONCURRENTLY cannot run inside the transaction mmlite uses on each node', 'Drop CONCURRENTLY (the index build then blocks writers of the table on each node while it runs), or run it on each node yourself.')
    const schema = m[4].includes('.') ? m[4].split('.')[0].trim() : undefined
    const nsp = schema ? `${lit(unquote(schema))}::pg_catalog.name` : `(SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = pg_catalog.to_regclass(${relText(m[4])}::pg_catalog.text))`
    return {
      sql,
      kind: 'additive',
      doneSql: `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = ${lit(unquote(m[3]))}::pg_catalog.name AND n.nspname = ${nsp}) AS done`,
    }
  }
  if (/^CREATE INDEX/i.test(s)) return destructive('an index without a name cannot be checked for on a re-run', 'Give the index a name: CREATE INDEX name ON table (...).')
  m = new RegExp(String.raw`^ALTER TABLE (?:IF EXISTS )?(?:ONLY )?(${QNAME}) (.*)$`, 'i').exec(s)
  if (m) {
    const table = m[1]
    const cols: string[] = []
    for (const sub of splitCommas(m[2])) {
      const a = ADD_COLUMN.exec(sub)
      if (!a) return describeAlter(sql, sub)
      const opts = a[3] ?? ''
      if (/\bNOT\s+NULL\b/i.test(opts) && !/\bDEFAULT\b/i.test(opts)) {
        return destructive(
          `${sub}: a NOT NULL column without a default fails on a table with rows, and rows from nodes that have not added it yet would violate it`,
          'Add it nullable (or with a constant DEFAULT), backfill, then add the NOT NULL constraint with --force once every node writes it.',
        )
      }
      cols.push(unquote(a[1]))
    }
    const checks = cols.map(
      c => `EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = pg_catalog.to_regclass(${relText(table)}::pg_catalog.text) AND a.attname = ${lit(c)}::pg_catalog.name AND NOT a.attisdropped)`,
    )
    return {sql, kind: 'additive', doneSql: `SELECT (${checks.join(' AND ')}) AS done`}
  }
  if (/^DROP /i.test(s)) return destructive('a DROP removes what the other nodes may still send or expect', DROP_SAFE)
  return destructive('not recognised as additive (mmlite knows CREATE TABLE, CREATE INDEX and ALTER TABLE ... ADD COLUMN)', 'Check what it does to replication yourself, then run it with --force.')
}

const DROP_SAFE =
  'Stop the applications using it on every node first; for a replicated table take it out of tables: and run `mmlite init`; for a column, stop writing it everywhere, wait until `mmlite status` shows no lag, then run it with --force.'

function describeAlter(sql: string, sub: string): DdlStatement {
  const d = (reason: string, safe: string): DdlStatement => ({sql, kind: 'destructive', reason: `${sub}: ${reason}`, safe})
  if (/^ADD\s+(COLUMN\s+)?/i.test(sub) && /\bDEFAULT\b/i.test(sub)) {
    return d('the default is not a constant: rows that exist get a value computed on each node, so the nodes would differ', 'Add the column nullable or with a constant default, then set the values with one UPDATE on one node (it replicates).')
  }
  if (/^ADD\s+(COLUMN\s+)?/i.test(sub) && /\b(UNIQUE|PRIMARY|REFERENCES|CHECK|GENERATED)\b/i.test(sub)) {
    return d('a constraint or generated column on a new column restricts or computes rows per node', 'Add the plain column first, backfill, then add the constraint with --force.')
  }
  if (/^DROP\s+COLUMN/i.test(sub)) return d('a column dropped on one node makes the links into it fail while other nodes still send it', DROP_SAFE)
  if (/\bTYPE\b/i.test(sub)) return d('a type change rewrites the column and makes rows from nodes with the old type fail or convert differently', 'Add a new column of the new type, write both from the applications, backfill with one UPDATE, switch the applications, then drop the old column (each with mmlite ddl).')
  if (/^RENAME\b/i.test(sub)) return d('the other nodes keep sending the old name: their links fail until they are renamed too (a column) or the table leaves replication (a table)', 'For a column: add the new one, write both, backfill, switch, drop the old one. For a table: take it out of tables:, rename it everywhere, put it back.')
  return d('not recognised as additive', 'Check what it does to replication yourself, then run it with --force.')
}

export function classifyScript(text: string): DdlStatement[] {
  return splitStatements(text).map(classifyStatement)
}
