/** Replicated table names: `schema.table`, each part plain (folded to lower case) or "double quoted". */
import {escapeIdentifier} from '../db/quote.js'

export interface TableName {
  schema: string
  name: string
  /** schema.name, each part quoted: safe to paste into SQL */
  qualified: string
  /** as a user would write it */
  display: string
}

function parsePart(s: string, i: number): {value: string; next: number} {
  if (s[i] === '"') {
    let v = ''
    let j = i + 1
    while (j < s.length) {
      if (s[j] === '"') {
        if (s[j + 1] === '"') {
          v += '"'
          j += 2
          continue
        }
        return {value: v, next: j + 1}
      }
      v += s[j++]
    }
    throw new Error(`unterminated quoted identifier in table name "${s}"`)
  }
  let j = i
  while (j < s.length && s[j] !== '.') j++
  const raw = s.slice(i, j)
  if (!/^[A-Za-z_][A-Za-z0-9_$]*$/.test(raw)) {
    throw new Error(`invalid identifier "${raw}" in table name "${s}" (double-quote names with other characters: "My Table")`)
  }
  return {value: raw.toLowerCase(), next: j}
}

export function parseTableName(input: string): TableName {
  const s = input.trim()
  const a = parsePart(s, 0)
  if (s[a.next] !== '.') {
    throw new Error(`table "${s}" must be schema-qualified (did you mean "public.${s}"?)`)
  }
  const b = parsePart(s, a.next + 1)
  if (b.next !== s.length) throw new Error(`unexpected text after table name "${s}"`)
  if (!a.value || !b.value) throw new Error(`empty identifier in table name "${s}"`)
  return makeTableName(a.value, b.value)
}

export function makeTableName(schema: string, name: string): TableName {
  const disp = (x: string) => (/^[a-z_][a-z0-9_$]*$/.test(x) ? x : escapeIdentifier(x))
  return {
    schema,
    name,
    qualified: `${escapeIdentifier(schema)}.${escapeIdentifier(name)}`,
    display: `${disp(schema)}.${disp(name)}`,
  }
}
