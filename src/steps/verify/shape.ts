/**
 * The shape of a table on one node (columns, primary key) and the SQL expressions derived
 * from it: the canonical row text, the per-row hash, the collation-free order of the key used
 * for key ranges, and key (re)parsing from text.
 *
 * Canonical row: ROW(<every column, sorted by name>)::text under the pinned settings, so the
 * physical column order of a node does not matter. Key order: columns of types whose order
 * does not depend on any setting or collation are compared as they are (and ranges use the
 * primary-key index); every other key column (text, varchar, enums, ...) is compared as the
 * bytes of its UTF-8 text (memcmp order, the order of COLLATE "C"), which no lc_collate changes.
 */
import {escapeIdentifier as qi, escapeLiteral as ql} from '../../db/quote.js'
import type {TableName} from '../../config/tables.js'
import type {Session} from './session.js'

/** types compared as they are: their order is the same on every node */
const RAW_ORDER = new Set(['int2', 'int4', 'int8', 'numeric', 'uuid', 'date', 'timestamp', 'timestamptz', 'bool', 'oid', 'float4', 'float8', 'bytea', 'time', 'interval'])

export interface Column {
  name: string
  /** format_type(): safe to paste after :: (qualified when outside pg_catalog) */
  type: string
  generated: boolean
  identityAlways: boolean
}

export interface KeyColumn extends Column {
  raw: boolean
}

export interface TableShape {
  table: TableName
  columns: Column[]
  key: KeyColumn[]
  /** every key column compared as it is: key ranges can use the primary-key index */
  indexable: boolean
}

const SHAPE_SQL = `SELECT a.attname::pg_catalog.text AS name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
       t.typname::pg_catalog.text AS typname, a.attgenerated <> '' AS generated, a.attidentity = 'a' AS identity_always,
       (SELECT pg_catalog.array_position(i.indkey::pg_catalog.int2[], a.attnum) FROM pg_catalog.pg_index i
         WHERE i.indrelid = c.oid AND i.indisprimary) AS keypos,
       t.typnamespace = 'pg_catalog'::pg_catalog.regnamespace AS builtin
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
 WHERE n.nspname = $1::pg_catalog.text AND c.relname = $2::pg_catalog.text AND c.relkind IN ('r', 'p')`

/** A table verify cannot compare on a node: `problem` (without the node) and how to fix it. */
export class ShapeError extends Error {
  constructor(
    readonly problem: string,
    readonly hint: string,
    node: string,
  ) {
    super(`${problem} on node ${node}${hint ? `: ${hint}` : ''}`)
  }
}

export async function readShape(s: Session, table: TableName): Promise<TableShape> {
  const rows = await s.q<{name: string; type: string; typname: string; generated: boolean; identity_always: boolean; keypos: number | null; builtin: boolean}>(SHAPE_SQL, [table.schema, table.name])
  if (rows.length === 0) throw new ShapeError(`table ${table.display} does not exist`, 'create it there (mmlite replicates rows, not DDL)', s.node)
  const key = rows
    .filter(r => r.keypos !== null)
    .sort((a, b) => a.keypos! - b.keypos!)
    .map(r => ({name: r.name, type: r.type, generated: r.generated, identityAlways: r.identity_always, raw: r.builtin && RAW_ORDER.has(r.typname)}))
  if (key.length === 0) throw new ShapeError(`table ${table.display} has no primary key`, `verify identifies rows by their primary key (add one, e.g. ALTER TABLE ${table.qualified} ADD PRIMARY KEY (...))`, s.node)
  const columns = rows.map(r => ({name: r.name, type: r.type, generated: r.generated, identityAlways: r.identity_always})).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  return {table, columns, key, indexable: key.every(k => k.raw)}
}

const col = (c: {name: string}) => `t.${qi(c.name)}`
const utf8 = (e: string) => `pg_catalog.convert_to(${e}::pg_catalog.text, 'UTF8'::pg_catalog.name)`

/** canonical text of the whole row, over `names` (the columns every node has), sorted by name */
export function rowTextExpr(names: string[]): string {
  return `ROW(${names.map(n => `t.${qi(n)}`).join(', ')})::pg_catalog.text`
}

/** 64-bit hash of the canonical row (range sums) */
export const rowHashExpr = (names: string[]) => `pg_catalog.hashtextextended(${rowTextExpr(names)}, 0::pg_catalog.int8)`
/** 128-bit digest of the canonical row (row comparison) */
export const rowDigestExpr = (names: string[]) => `pg_catalog.md5(${rowTextExpr(names)})`

/** the collation-free sort expression of the key (a scalar or a ROW) */
export function keyOrderExpr(sh: TableShape): string {
  const parts = sh.key.map(k => (k.raw ? col(k) : utf8(col(k))))
  return parts.length === 1 ? parts[0] : `ROW(${parts.join(', ')})`
}

/** per key column: the text of its order value (bounds travel between nodes as text) */
export function keyOrderTextExprs(sh: TableShape): string[] {
  return sh.key.map(k => (k.raw ? `${col(k)}::pg_catalog.text` : `pg_catalog.encode(${utf8(col(k))}, 'hex')`))
}

/** the key's own columns as text (identity of a row, for display and re-reading) */
export function keyTextExprs(sh: TableShape): string[] {
  return sh.key.map(k => `${col(k)}::pg_catalog.text`)
}

/** ROWS FROM (unnest($first), unnest($first+1), ...): the key columns' text arrays side by side */
function rowsFrom(sh: TableShape, first: number): string {
  return `ROWS FROM (${sh.key.map((_, i) => `pg_catalog.unnest($${first + i}::pg_catalog.text[])`).join(', ')})`
}

/** SQL for the array of bounds from text arrays $first..: ARRAY of order values, in order */
export function boundsArrayExpr(sh: TableShape, first: number): string {
  const names = sh.key.map((_, i) => `c${i}`)
  const conv = sh.key.map((k, i) => (k.raw ? `u.c${i}::${k.type}` : `pg_catalog.decode(u.c${i}, 'hex')`))
  const elem = conv.length === 1 ? conv[0] : `ROW(${conv.join(', ')})`
  return `ARRAY(SELECT ${elem} FROM ${rowsFrom(sh, first)} WITH ORDINALITY AS u(${names.join(', ')}, o) ORDER BY u.o)`
}

/** predicate: the row's key is one of the keys given as text arrays $first.. (one per key column) */
export function keyInExpr(sh: TableShape, first: number): string {
  const lhs = sh.key.length === 1 ? col(sh.key[0]) : `(${sh.key.map(col).join(', ')})`
  const conv = sh.key.map((k, i) => `u.c${i}::${k.type}`).join(', ')
  return `${lhs} IN (SELECT ${conv} FROM ${rowsFrom(sh, first)} AS u(${sh.key.map((_, i) => `c${i}`).join(', ')}))`
}

/** WHERE text matching exactly one key, with literals (for statements shown and run by repair) */
export function keyEqualsLiteral(sh: TableShape, key: string[], alias = ''): string {
  return sh.key.map((k, i) => `${alias ? `${alias}.` : ''}${qi(k.name)} = ${ql(key[i])}::${k.type}`).join(' AND ')
}

/** key values (text) → the column-wise text arrays used as parameters */
export function keyColumnsParams(sh: TableShape, keys: string[][]): string[][] {
  return sh.key.map((_, i) => keys.map(k => k[i]))
}
