/**
 * How each table is copied S→X, decided from both catalogs (the source's as its snapshot sees it).
 *
 * Format. Text COPY renders values under each session's settings (DateStyle, IntervalStyle,
 * extra_float_digits, client_encoding, TimeZone, bytea_output, lc_monetary, xmloption), which
 * servers, databases and roles may set differently. Binary COPY (each type's send/receive) does
 * not depend on them and is exact, but it is type-specific: it is used only when both servers
 * run the same major release and every column has the same type on X, a type whose binary form
 * carries no server-local OID (built-in types and arrays of them, enums, domains over those);
 * arrays, composites and ranges of user-defined types embed type OIDs that differ between
 * servers. Everything else uses text COPY with every one of those settings pinned on both
 * sessions (PINNED_SETTINGS), values that reproduce every value exactly (ISO dates, postgres
 * intervals, shortest-exact floats, UTF8, UTC, hex bytea).
 *
 * Load. A table no other table references by a foreign key is truncated in the transaction that
 * loads it, so the load can be COPY FREEZE (rows written frozen: no later hint-bit/vacuum
 * rewrite). Secondary indexes that back no constraint, are depended on by nothing, are not the
 * replica identity and have no per-column statistics target are dropped in that same transaction
 * and re-created after the load from their own definition (pg_get_indexdef, tablespace, CLUSTER
 * mark, comment): one transaction, so a killed run rolls the drop back. Primary keys, unique and
 * exclusion constraints stay in place and are enforced while loading.
 */
import {escapeIdentifier as qi, escapeLiteral as ql} from '../../db/quote.js'
import type {TableName} from '../../config/tables.js'

/** Settings that make text COPY reproduce every value exactly; set on every copy session. */
export const PINNED_SETTINGS: ReadonlyArray<[string, string]> = [
  ['DateStyle', 'ISO, MDY'],
  ['IntervalStyle', 'postgres'],
  ['extra_float_digits', '3'],
  ['client_encoding', 'UTF8'],
  ['TimeZone', 'UTC'],
  ['bytea_output', 'hex'],
  ['lc_monetary', 'C'],
  ['xmloption', 'content'],
  // a long COPY, or a reader waiting for its turn inside the snapshot, is not a hang
  ['statement_timeout', '0'],
  ['idle_in_transaction_session_timeout', '0'],
]

export function pinSql(extra: Array<[string, string]> = []): string {
  return [...PINNED_SETTINGS, ...extra].map(([k, v]) => `SET ${k} = ${ql(v)}`).join('; ')
}

export interface SourceColumn {
  name: string
  type: string
  portable: boolean
}

export interface SourceTable {
  relkind: string
  cols: SourceColumn[]
  estBytes: number
  estRows: number
}

/** Columns (generated ones are computed on X), binary portability, size estimates: on S, inside the snapshot. */
export const SOURCE_TABLE_SQL = `SELECT c.relkind::pg_catalog.text AS relkind,
       (SELECT pg_catalog.json_agg(pg_catalog.json_build_object('name', a.attname, 'type', pg_catalog.format_type(a.atttypid, a.atttypmod),
               'portable', t.oid < 16384 OR t.typtype = 'e' OR (t.typtype = 'd' AND (t.typbasetype < 16384 OR bt.typtype = 'e'))) ORDER BY a.attnum)
          FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid LEFT JOIN pg_catalog.pg_type bt ON bt.oid = t.typbasetype
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '') AS cols,
       (CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(pg_catalog.sum(pg_catalog.pg_table_size(pt.relid)), 0) FROM pg_catalog.pg_partition_tree(c.oid) pt)
             ELSE pg_catalog.pg_table_size(c.oid) END)::pg_catalog.float8 AS est_bytes,
       (CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(pg_catalog.sum(GREATEST(pc.reltuples, 0)), 0) FROM pg_catalog.pg_partition_tree(c.oid) pt JOIN pg_catalog.pg_class pc ON pc.oid = pt.relid)
             ELSE GREATEST(c.reltuples, 0) END)::pg_catalog.float8 AS est_rows
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = $1::pg_catalog.name AND c.relname = $2::pg_catalog.name`

export interface TargetIndex {
  /** schema-qualified, quoted */
  name: string
  /** the bare name */
  index: string
  def: string
  tablespace: string | null
  clustered: boolean
  comment: string | null
}

export interface TargetTable {
  oid: number
  relkind: string
  /** column name → type as format_type shows it */
  types: Record<string, string>
  /** referenced by a foreign key of another table: cannot be truncated alone */
  referenced: boolean
  indexes: TargetIndex[]
}

/** The table on X: column types, whether another table references it, indexes that can be rebuilt after the load. */
export const TARGET_TABLE_SQL = `SELECT c.oid::pg_catalog.int8 AS oid, c.relkind::pg_catalog.text AS relkind,
       (SELECT pg_catalog.json_object_agg(a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod))
          FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS types,
       EXISTS (SELECT 1 FROM pg_catalog.pg_constraint f WHERE f.contype = 'f' AND f.confrelid = c.oid AND f.conrelid <> c.oid) AS referenced,
       (SELECT pg_catalog.json_agg(pg_catalog.json_build_object('name', pg_catalog.quote_ident(ns.nspname) || '.' || pg_catalog.quote_ident(ic.relname), 'index', ic.relname,
               'def', pg_catalog.pg_get_indexdef(i.indexrelid), 'tablespace', ts.spcname, 'clustered', i.indisclustered,
               'comment', pg_catalog.obj_description(i.indexrelid, 'pg_class')) ORDER BY ic.relname)
          FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
          JOIN pg_catalog.pg_namespace ns ON ns.oid = ic.relnamespace LEFT JOIN pg_catalog.pg_tablespace ts ON ts.oid = ic.reltablespace
         WHERE i.indrelid = c.oid AND ic.relkind = 'i' AND NOT i.indisprimary AND NOT i.indisreplident
           AND i.indisvalid AND i.indisready AND i.indislive AND pg_catalog.pg_has_role(ic.relowner, 'USAGE')
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint co WHERE co.conindid = i.indexrelid)
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = i.indexrelid)
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits h WHERE h.inhrelid = i.indexrelid)
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute ia WHERE ia.attrelid = i.indexrelid AND coalesce(ia.attstattarget::pg_catalog.int4, -1) >= 0)) AS indexes
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = $1::pg_catalog.name AND c.relname = $2::pg_catalog.name`

export interface TablePlan {
  t: TableName
  cols: string[]
  binary: boolean
  /** why text (when not binary) */
  textReason?: string
  partitioned: boolean
  /** truncate in the loading transaction and COPY FREEZE */
  freeze: boolean
  /** dropped before the load, re-created after it */
  rebuild: TargetIndex[]
  estBytes: number
  estRows: number
  /** X's oid of the table (pg_stat_progress_copy) */
  targetOid: number
}

export function planTable(t: TableName, s: SourceTable, x: TargetTable, sameMajor: boolean): TablePlan {
  let textReason: string | undefined
  if (!sameMajor) textReason = 'different major releases'
  else {
    const other = s.cols.find(c => !c.portable)
    const differ = s.cols.find(c => x.types[c.name] !== undefined && x.types[c.name] !== c.type)
    if (other) textReason = `column ${other.name} has type ${other.type}, whose binary form is server-specific`
    else if (differ) textReason = `column ${differ.name} is ${differ.type} on the source but ${x.types[differ.name]} on the new node`
  }
  const plain = s.relkind === 'r' && x.relkind === 'r'
  return {
    t,
    cols: s.cols.map(c => c.name),
    binary: textReason === undefined,
    textReason,
    partitioned: s.relkind === 'p',
    freeze: plain && !x.referenced,
    rebuild: x.relkind === 'r' ? x.indexes : [],
    estBytes: s.estBytes,
    estRows: s.estRows,
    targetOid: x.oid,
  }
}

const formatOpt = (p: TablePlan) => (p.binary ? 'FORMAT binary' : 'FORMAT text')

/** COPY … TO STDOUT on S: the table itself (not a query) unless it is partitioned. */
export function copyOutSql(p: TablePlan): string {
  const cols = p.cols.map(qi).join(', ')
  return p.partitioned ? `COPY (SELECT ${cols} FROM ${p.t.qualified}) TO STDOUT (${formatOpt(p)})` : `COPY ${p.t.qualified} (${cols}) TO STDOUT (${formatOpt(p)})`
}

export function copyInSql(p: TablePlan): string {
  return `COPY ${p.t.qualified} (${p.cols.map(qi).join(', ')}) FROM STDIN (${formatOpt(p)}${p.freeze ? ', FREEZE true' : ''})`
}

/** First in the loading transaction: nothing (no trigger) can change on the table until it commits. */
export function lockSql(p: TablePlan): string {
  return `LOCK TABLE ${p.t.qualified} IN ACCESS EXCLUSIVE MODE`
}

/** In the loading transaction, after the lock and the owner-code check, before COPY: empty the table (FREEZE needs it), drop the indexes rebuilt afterwards. */
export function beforeLoadSql(p: TablePlan): string[] {
  return [
    ...(p.freeze ? [`TRUNCATE ONLY ${p.t.qualified}`] : []),
    ...p.rebuild.map(i => `DROP INDEX ${i.name}`),
  ]
}

/** In the loading transaction, after COPY: the dropped indexes, exactly as they were. */
export function afterLoadSql(p: TablePlan): string[] {
  return p.rebuild.flatMap(i => [
    `SET LOCAL default_tablespace = ${ql(i.tablespace ?? '')}`,
    i.def,
    ...(i.clustered ? [`ALTER TABLE ${p.t.qualified} CLUSTER ON ${qi(i.index)}`] : []),
    ...(i.comment !== null ? [`COMMENT ON INDEX ${i.name} IS ${ql(i.comment)}`] : []),
  ])
}
