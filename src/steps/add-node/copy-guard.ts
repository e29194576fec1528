/**
 * The copy loads X's tables as the connecting (admin) role with session_replication_role =
 * replica. Code written by a table owner still runs during that load: triggers marked ENABLE
 * ALWAYS or ENABLE REPLICA (on INSERT and on TRUNCATE), and functions/operators used by CHECK
 * constraints, domain constraints of the columns, defaults and generated columns, and indexes.
 * Run as the admin, such code can do anything the admin can (e.g. make its owner superuser).
 *
 * Loading "as the table owner" with SET ROLE (or SET SESSION AUTHORIZATION) does not close
 * this: the owner's code runs in a session whose session user is the admin and can RESET ROLE.
 * PostgreSQL 16+'s apply worker avoids it with a security-restricted context that SQL cannot
 * enter. So the copy refuses instead: it names every function that would run, owned by a role
 * that is neither a superuser nor the connecting role and not SECURITY DEFINER (a SECURITY
 * DEFINER function runs as its owner, which grants nothing), with the way out. The check runs in
 * preflight (nothing changed yet) and again inside each table's loading transaction, after the
 * table is locked (no trigger can be added in between).
 */
import type pg from 'pg'
import type {TableName} from '../../config/tables.js'

export interface OwnerCode {
  table: string
  /** e.g. "trigger users_who" */
  where: string
  fn: string
  owner: string
  /** ALTER TABLE … DISABLE TRIGGER … for a trigger */
  trigger?: string
}

/** $1: the tables (regclass text). Rows: code of another role that the load would run as the admin. */
export const OWNER_CODE_SQL = `WITH RECURSIVE tabs AS (
  SELECT t::pg_catalog.regclass::pg_catalog.oid AS top, t::pg_catalog.regclass::pg_catalog.oid AS relid FROM pg_catalog.unnest($1::pg_catalog.text[]) t
  UNION SELECT tabs.top, h.inhrelid FROM tabs JOIN pg_catalog.pg_inherits h ON h.inhparent = tabs.relid
), me AS (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER),
obj AS (
  SELECT tabs.top, 'trigger ' || pg_catalog.quote_ident(tg.tgname) AS what, tg.tgname::pg_catalog.text AS trig, tg.tgrelid AS rel,
         'pg_catalog.pg_trigger'::pg_catalog.regclass AS classid, tg.oid AS objid, tg.tgfoid AS fn
    FROM tabs JOIN pg_catalog.pg_trigger tg ON tg.tgrelid = tabs.relid
   WHERE NOT tg.tgisinternal AND tg.tgenabled IN ('A', 'R')
  UNION ALL
  SELECT tabs.top, 'constraint ' || pg_catalog.quote_ident(co.conname), NULL, co.conrelid, 'pg_catalog.pg_constraint'::pg_catalog.regclass, co.oid, NULL
    FROM tabs JOIN pg_catalog.pg_constraint co ON co.conrelid = tabs.relid
  UNION ALL
  SELECT tabs.top, 'default/generated column ' || pg_catalog.quote_ident(a.attname), NULL, ad.adrelid, 'pg_catalog.pg_attrdef'::pg_catalog.regclass, ad.oid, NULL
    FROM tabs JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = tabs.relid JOIN pg_catalog.pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
  UNION ALL
  SELECT tabs.top, 'index ' || pg_catalog.quote_ident(ic.relname), NULL, i.indrelid, 'pg_catalog.pg_class'::pg_catalog.regclass, i.indexrelid, NULL
    FROM tabs JOIN pg_catalog.pg_index i ON i.indrelid = tabs.relid JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
  UNION ALL
  SELECT tabs.top, 'domain ' || dt.oid::pg_catalog.regtype::pg_catalog.text || ' of column ' || pg_catalog.quote_ident(a.attname), NULL, a.attrelid,
         'pg_catalog.pg_constraint'::pg_catalog.regclass, dc.oid, NULL
    FROM tabs JOIN pg_catalog.pg_attribute a ON a.attrelid = tabs.relid AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_catalog.pg_type dt ON dt.oid = a.atttypid OR dt.oid = (SELECT t2.typelem FROM pg_catalog.pg_type t2 WHERE t2.oid = a.atttypid)
    JOIN pg_catalog.pg_constraint dc ON dc.contypid = dt.oid
), fns AS (
  SELECT obj.top, obj.what, obj.trig, obj.rel, obj.fn FROM obj WHERE obj.fn IS NOT NULL
  UNION
  SELECT obj.top, obj.what, obj.trig, obj.rel, CASE WHEN d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass THEN d.refobjid ELSE op.oprcode::pg_catalog.oid END
    FROM obj JOIN pg_catalog.pg_depend d ON d.classid = obj.classid AND d.objid = obj.objid
    LEFT JOIN pg_catalog.pg_operator op ON d.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass AND op.oid = d.refobjid
   WHERE d.refclassid IN ('pg_catalog.pg_proc'::pg_catalog.regclass, 'pg_catalog.pg_operator'::pg_catalog.regclass)
)
SELECT fns.top::pg_catalog.regclass::pg_catalog.text AS "table", fns.what || CASE WHEN fns.rel <> fns.top THEN ' on ' || fns.rel::pg_catalog.regclass::pg_catalog.text ELSE '' END AS "where",
       fns.rel::pg_catalog.regclass::pg_catalog.text AS rel, fns.trig,
       p.oid::pg_catalog.regprocedure::pg_catalog.text AS fn, r.rolname::pg_catalog.text AS owner
  FROM fns JOIN pg_catalog.pg_proc p ON p.oid = fns.fn JOIN pg_catalog.pg_roles r ON r.oid = p.proowner
 WHERE NOT p.prosecdef AND NOT r.rolsuper AND p.proowner <> (SELECT oid FROM me)
 ORDER BY 1, 2, 5`

export async function findOwnerCode(c: Pick<pg.Client, 'query'>, tables: TableName[]): Promise<OwnerCode[]> {
  const r = await c.query<{table: string; where: string; rel: string; trig: string | null; fn: string; owner: string}>(OWNER_CODE_SQL, [tables.map(t => t.qualified)])
  return r.rows.map(x => ({
    table: x.table,
    where: x.where,
    fn: x.fn,
    owner: x.owner,
    ...(x.trig ? {trigger: `ALTER TABLE ${x.rel} DISABLE TRIGGER ${quoteIdent(x.trig)}`} : {}),
  }))
}

function quoteIdent(s: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(s) ? s : '"' + s.replace(/"/g, '""') + '"'
}

export function ownerCodeMessage(node: string, code: OwnerCode[], admin = 'the connecting role'): {message: string; fix: string} {
  const list = code.map(c => `${c.table}: ${c.where} runs ${c.fn} (owned by ${c.owner})`).join('; ')
  const triggers = code.filter(c => c.trigger).map(c => c.trigger + ';')
  const fixes = [
    ...(triggers.length ? [`disable the trigger(s) on ${node} for the join and re-enable them afterwards (ENABLE ALWAYS/REPLICA TRIGGER …): ${triggers.join(' ')}`] : []),
    'or make each listed function SECURITY DEFINER (it then runs as its owner), or have a superuser own it after reviewing it',
  ]
  return {
    message: `the copy would run code of another role as ${admin} (with session_replication_role = replica): ${list}`,
    fix: fixes.join('; ') + '.',
  }
}
