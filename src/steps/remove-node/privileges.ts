/**
 * remove-node preflight: privileges its steps need on every node they contact, checked before
 * the lock is taken and anything is planned or changed. Dropping a subscription records its
 * origin progress first (how far that node got in the other's changes), read from
 * pg_replication_origin_status; the view calls pg_show_replication_origin_status(), and both are
 * superuser-only by default, so a non-superuser admin needs both granted (README "Security model
 * and privileges").
 */
import type {Cluster} from '../../cluster/cluster.js'
import {escapeIdentifier as qi} from '../../db/quote.js'
import {preflightError, type Problem} from '../preflight.js'

export const ORIGIN_STATUS_PRIVS_SQL = `SELECT CURRENT_USER::pg_catalog.text AS role,
       pg_catalog.has_table_privilege('pg_catalog.pg_replication_origin_status'::pg_catalog.text, 'SELECT'::pg_catalog.text) AS view,
       pg_catalog.has_function_privilege('pg_catalog.pg_show_replication_origin_status()'::pg_catalog.text, 'EXECUTE'::pg_catalog.text) AS fn`

export interface OriginStatusPrivs {
  /** the connecting role */
  role: string
  /** SELECT on pg_catalog.pg_replication_origin_status */
  view: boolean
  /** EXECUTE on pg_catalog.pg_show_replication_origin_status() */
  fn: boolean
}

/** The exact GRANT statements a role lacks (empty when it has both). Pure. */
export function originStatusGrants(p: OriginStatusPrivs): string[] {
  return [
    ...(p.view ? [] : [`GRANT SELECT ON pg_catalog.pg_replication_origin_status TO ${qi(p.role)};`]),
    ...(p.fn ? [] : [`GRANT EXECUTE ON FUNCTION pg_catalog.pg_show_replication_origin_status() TO ${qi(p.role)};`]),
  ]
}

/** One problem per node whose connecting role lacks a grant, the fix being the exact GRANTs. Pure. */
export function originStatusProblems(privs: Array<{node: string; privs: OriginStatusPrivs}>): Problem[] {
  return privs.flatMap(({node, privs: p}) => {
    const grants = originStatusGrants(p)
    if (!grants.length) return []
    return [
      {
        node,
        check: 'privileges',
        message: `the connecting role ${p.role} cannot read pg_replication_origin_status (remove-node records each subscription's origin progress from it before dropping it)`,
        fix: `${grants.join(' ')}  (as a superuser on ${node}), or connect as a superuser.`,
      },
    ]
  })
}

/**
 * Throw the preflight error (exit 11, nothing changed) when the role on any of `nodes` lacks the
 * origin-status grants. A node that cannot be reached is left to the lock, which names it.
 */
export async function checkOriginStatusPrivileges(cluster: Cluster, nodes: string[]): Promise<void> {
  const found = await cluster.each(c => c.one<OriginStatusPrivs & Record<string, unknown>>(ORIGIN_STATUS_PRIVS_SQL), nodes)
  const privs = nodes.flatMap(node => {
    const r = found.get(node)
    return r?.ok && r.value ? [{node, privs: r.value}] : []
  })
  const problems = originStatusProblems(privs)
  if (problems.length) throw preflightError(problems)
}
