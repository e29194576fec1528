/**
 * Preflight of the roles a mesh runs with (README "Security model and privileges"), beyond the
 * facts of src/cluster/capabilities.ts, checked on one node with its `dsn` connection:
 *  - the `dsn` role, when not a superuser: owner of every replicated table (CREATE PUBLICATION
 *    FOR TABLE needs it; on 16+ the apply runs as the table owner) and CREATE on the database
 *    (CREATE PUBLICATION needs it);
 *  - the `peer_dsn` role of this node (what the peers' subscriptions connect as): it exists here,
 *    has REPLICATION (or is a superuser: the subscriptions open replication connections) and may
 *    SELECT every replicated table (the initial copy of a subscription reads them as that role).
 * Without these checks a missing grant made init fail halfway (a publication made on some
 * nodes only) or wait out its timeout on an initial copy that can never start.
 * Read-only; every name goes in as a parameter.
 */
import type {Config} from '../../config/config.js'
import type {NodeConn} from '../../db/node.js'
import type {Problem} from '../preflight.js'
import {escapeIdentifier as qi} from '../../db/quote.js'

const TABLES_SQL = `
SELECT t.ord::pg_catalog.int4 AS ord, c.oid IS NOT NULL AS present,
       c.oid IS NOT NULL AND pg_catalog.pg_has_role(c.relowner, 'USAGE'::pg_catalog.text) AS owned,
       CASE WHEN c.oid IS NULL OR $3::pg_catalog.name IS NULL THEN true
            ELSE pg_catalog.has_table_privilege($3::pg_catalog.name, c.oid, 'SELECT'::pg_catalog.text) END AS peer_select
  FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) WITH ORDINALITY AS t(schema_name, table_name, ord)
  LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = t.schema_name
  LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = t.table_name
 ORDER BY t.ord`

const ROLE_SQL = `
SELECT pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE'::pg_catalog.text) AS create_db,
       (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = $1::pg_catalog.name) AS peer_super,
       (SELECT r.rolreplication FROM pg_catalog.pg_roles r WHERE r.rolname = $1::pg_catalog.name) AS peer_replication`

export async function rolePrivilegeProblems(c: NodeConn, cfg: Config, superuser: boolean): Promise<Problem[]> {
  const node = c.name
  const problems: Problem[] = []
  const peerUser = cfg.nodes.find(n => n.name === node)?.peerConn.get('user') ?? null
  const role = (await c.one<{create_db: boolean; peer_super: boolean | null; peer_replication: boolean | null}>(ROLE_SQL, [peerUser]))!
  const peerExists = peerUser !== null && role.peer_super !== null
  const rows = await c.query<{ord: number; present: boolean; owned: boolean; peer_select: boolean}>(TABLES_SQL, [
    cfg.tables.map(t => t.schema),
    cfg.tables.map(t => t.name),
    peerExists ? peerUser : null,
  ])
  const list = (pick: (r: (typeof rows)[number]) => boolean) => rows.filter(r => r.present && pick(r)).map(r => cfg.tables[r.ord - 1])

  if (!superuser) {
    const notOwned = list(r => !r.owned)
    if (notOwned.length) {
      problems.push({
        node,
        check: 'privileges',
        message: `the connecting role does not own ${notOwned.map(t => t.display).join(', ')} (a non-superuser must own the replicated tables)`,
        fix: notOwned.map(t => `ALTER TABLE ${t.qualified} OWNER TO <role>;`).join(' '),
      })
    }
    if (!role.create_db) {
      problems.push({node, check: 'privileges', message: 'the connecting role lacks CREATE on the database (CREATE PUBLICATION needs it)', fix: 'GRANT CREATE ON DATABASE <database> TO <role>;'})
    }
  }

  if (peerUser !== null) {
    const what = `role ${JSON.stringify(peerUser)} of ${node}'s peer_dsn (what the peers' subscriptions connect as)`
    if (!peerExists) {
      problems.push({node, check: 'peer role', message: `${what} does not exist on ${node}`, fix: 'Create it (LOGIN REPLICATION, SELECT on the replicated tables) or fix the user in peer_dsn.'})
    } else {
      if (!role.peer_super && !role.peer_replication) {
        problems.push({node, check: 'peer role', message: `${what} lacks REPLICATION: the peers' subscriptions cannot connect`, fix: `ALTER ROLE ${qi(peerUser)} REPLICATION;`})
      }
      const noSelect = role.peer_super ? [] : list(r => !r.peer_select)
      if (noSelect.length) {
        problems.push({
          node,
          check: 'peer role',
          message: `${what} cannot SELECT ${noSelect.map(t => t.display).join(', ')}: the peers' initial copy would fail`,
          fix: `GRANT SELECT ON ${noSelect.map(t => t.qualified).join(', ')} TO ${qi(peerUser)};`,
        })
      }
    }
  }
  return problems
}
