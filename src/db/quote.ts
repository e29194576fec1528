import {parseLsn} from './lsn.js'

/**
 * SQL quoting. Same rules as libpq's PQescapeIdentifier / PQescapeLiteral (and pg's
 * Client#escapeIdentifier / escapeLiteral), usable without a connection so that plans
 * can be rendered for --dry-run.
 */
export function escapeIdentifier(s: string): string {
  return '"' + s.replace(/"/g, '""') + '"'
}

export function escapeLiteral(s: string): string {
  let hasBackslash = false
  let out = "'"
  for (const c of s) {
    if (c === "'") out += "''"
    else if (c === '\\') {
      out += '\\\\'
      hasBackslash = true
    } else out += c
  }
  out += "'"
  return hasBackslash ? 'E' + out : out
}

/** A literal for an LSN such as '0/16B3748'::pg_lsn */
export function lsnLiteral(lsn: string): string {
  parseLsn(lsn) // validates: the text goes into SQL as is
  return `'${lsn}'::pg_lsn`
}
