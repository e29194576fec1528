/**
 * Schema drift: a replicated table whose columns, column types, primary key or replica
 * identity differ between nodes. One comparison, used by `status` (a warning naming the table,
 * the nodes and the difference) and by the preflight of `init` and `add-node` (a refusal).
 */
import type {TableName} from '../config/tables.js'
import type {NodeConn} from '../db/node.js'
import type {Config} from '../config/config.js'
import {Cluster} from './cluster.js'

export interface TableShape {
  /** column name -> type (format_type), generated columns included */
  columns: Map<string, string>
  /** primary key columns in key order; empty when none */
  pk: string[]
  /** 'default' | 'full' | 'nothing' | 'index (a, b)' */
  replicaIdentity: string
}

export interface Drift {
  table: string
  /** [reference node, differing node] */
  nodes: [string, string]
  difference: string
}

const SHAPES_SQL = `
SELECT t.ord::int AS ord, c.oid IS NOT NULL AS present, c.relreplident::pg_catalog.text AS replident,
       (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)) ORDER BY a.attnum)
          FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
       (SELECT pg_catalog.json_agg(a.attname ORDER BY pg_catalog.array_position(i.indkey::pg_catalog.int2[], a.attnum))
          FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::pg_catalog.int2[])
         WHERE i.indrelid = c.oid AND i.indisprimary) AS pk,
       (SELECT pg_catalog.json_agg(a.attname ORDER BY pg_catalog.array_position(i.indkey::pg_catalog.int2[], a.attnum))
          FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::pg_catalog.int2[])
         WHERE i.indrelid = c.oid AND i.indisreplident) AS ri
  FROM unnest($1::pg_catalog.text[], $2::pg_catalog.text[]) WITH ORDINALITY AS t(schema_name, table_name, ord)
  LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = t.schema_name
  LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = t.table_name
 ORDER BY t.ord`

const RI: Record<string, string> = {d: 'default', f: 'full', n: 'nothing'}

/** The shape of each table on one node (null: the table does not exist there). */
export async function readShapes(c: Pick<NodeConn, 'query'>, tables: TableName[]): Promise<(TableShape | null)[]> {
  const rows = await c.query<{present: boolean; replident: string | null; columns: Array<[string, string]> | null; pk: string[] | null; ri: string[] | null}>(SHAPES_SQL, [
    tables.map(t => t.schema),
    tables.map(t => t.name),
  ])
  return rows.map(r =>
    r.present
      ? {
          columns: new Map(r.columns ?? []),
          pk: r.pk ?? [],
          replicaIdentity: r.replident === 'i' ? `index (${(r.ri ?? []).join(', ')})` : RI[r.replident ?? 'd'] ?? String(r.replident),
        }
      : null,
  )
}

/** Differences of `b` from `a` (the reference), in words; empty when equal. */
export function shapeDifferences(a: TableShape, b: TableShape, an: string, bn: string): string[] {
  const out: string[] = []
  const onlyA = [...a.columns.keys()].filter(c => !b.columns.has(c))
  const onlyB = [...b.columns.keys()].filter(c => !a.columns.has(c))
  const cols = (s: TableShape, l: string[]) => l.map(c => `${c} ${s.columns.get(c)}`).join(', ')
  if (onlyA.length) out.push(`${an} has ${cols(a, onlyA)}`)
  if (onlyB.length) out.push(`${bn} has ${cols(b, onlyB)}`)
  for (const [c, t] of a.columns) {
    const u = b.columns.get(c)
    if (u !== undefined && u !== t) out.push(`column ${c} is ${t} on ${an} but ${u} on ${bn}`)
  }
  if (a.pk.join(',') !== b.pk.join(',')) {
    const pk = (x: string[]) => (x.length ? `(${x.join(', ')})` : 'none')
    out.push(`primary key ${pk(a.pk)} on ${an} but ${pk(b.pk)} on ${bn}`)
  }
  if (a.replicaIdentity !== b.replicaIdentity) out.push(`replica identity ${a.replicaIdentity} on ${an} but ${b.replicaIdentity} on ${bn}`)
  return out
}

/**
 * Compare every table across the nodes, each with the first node (config order) that has it.
 * Missing tables are not drift (preflight reports them on their own; status ignores them).
 */
export function compareShapes(tables: TableName[], shapes: Map<string, (TableShape | null)[]>): Drift[] {
  const out: Drift[] = []
  tables.forEach((t, i) => {
    let ref: {node: string; shape: TableShape} | undefined
    for (const [node, list] of shapes) {
      const s = list[i]
      if (!s) continue
      if (!ref) {
        ref = {node, shape: s}
        continue
      }
      const diff = shapeDifferences(ref.shape, s, ref.node, node)
      if (diff.length) out.push({table: t.display, nodes: [ref.node, node], difference: diff.join('; ')})
    }
  })
  return out
}

/**
 * Read and compare on the given nodes (multi-argument unnest is only known unqualified; mmlite
 * sessions resolve it in pg_catalog). tolerant: a node that fails to answer is left out
 * (status); otherwise its error is thrown (preflight).
 */
export async function collectDrift(conns: NodeConn[], tables: TableName[], opts: {tolerant?: boolean} = {}): Promise<Drift[]> {
  const shapes = new Map<string, (TableShape | null)[]>()
  const read = await Promise.all(
    conns.map(async c => [c.name, await readShapes(c, tables).catch(e => (opts.tolerant ? undefined : Promise.reject(e)))] as const),
  )
  for (const [n, s] of read) if (s) shapes.set(n, s)
  return compareShapes(tables, shapes)
}

export function driftLine(d: Drift): string {
  return `table ${d.table} differs from ${d.nodes[0]}: ${d.difference}`
}

export const DRIFT_FIX = 'Make the table identical on every node (same columns, types, primary key, replica identity); `mmlite ddl` runs a change on every node in a safe order.'

/** For `status`: drift among the reachable nodes, over fresh connections (never throws). */
export async function collectClusterDrift(cfg: Config, connectTimeoutMs: number): Promise<Drift[]> {
  const cluster = new Cluster(cfg, {connectTimeoutMs})
  try {
    return await collectDrift(cfg.nodes.map(n => cluster.node(n.name)), cfg.tables, {tolerant: true})
  } catch {
    return []
  } finally {
    await cluster.close()
  }
}

/** A status result with the drift added: drift makes an otherwise healthy cluster a warning. */
export function withDrift<R extends {health: string}>(r: R, drift: Drift[]): R & {drift: Drift[]} {
  return {...r, health: r.health === 'ok' && drift.length ? 'warning' : r.health, drift}
}
