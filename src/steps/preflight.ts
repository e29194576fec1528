/**
 * Preflight: read-only checks on every node, concurrently, every problem reported in one go
 * with its fix. Nothing is changed by a preflight (the plugin probe uses a temporary slot,
 * which disappears with the session). `--fix-settings` may apply the fixes that need no
 * restart (output_plugin_libraries) before the checks are repeated.
 */
import type {Cluster} from '../cluster/cluster.js'
import type {Config} from '../config/config.js'
import {edgeMechanism, PLUGIN, readFacts, type NodeFacts} from '../cluster/capabilities.js'
import {edgeName} from '../cluster/naming.js'
import {escapeLiteral as ql} from '../db/quote.js'
import {classifyConnectError} from '../db/node.js'
import {MmliteError, ExitCode, errorMessage} from '../errors.js'
import {collectDrift, driftLine, DRIFT_FIX} from '../cluster/drift.js'
import {rolePrivilegeProblems} from './init/role-privileges.js'

export interface Problem {
  node?: string
  check: string
  message: string
  fix?: string
  /** SQL that fixes it without a restart (applied by --fix-settings) */
  autoFix?: string
}

export interface NodeTables {
  /** per table (config order): columns as "name type", or null if missing */
  columns: (string[] | null)[]
  hasData: boolean[]
}

export interface PreflightResult {
  facts: Map<string, NodeFacts>
  versions: Map<string, number>
  tables: Map<string, NodeTables>
  /** nodes that already have at least one subscription of this cluster */
  subscribed: Set<string>
  problems: Problem[]
  warnings: string[]
}

export const MIN_VERSION = 120000

const TABLES_SQL = `
SELECT t.ord::int, c.oid IS NOT NULL AS present, c.relkind::text AS relkind, c.relreplident::text AS replident,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) AS has_pk,
       (SELECT json_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) ORDER BY a.attname)
          FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           AND a.attgenerated = '') AS columns
  FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(schema_name, table_name, ord)
  LEFT JOIN pg_namespace n ON n.nspname = t.schema_name
  LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.table_name
 ORDER BY t.ord`

const OUR_SUBS_SQL = `SELECT subname FROM pg_subscription
 WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND subname = ANY($1)`

/** Slots, senders and workers a node needs for N−1 peers plus headroom (documented in README). */
export function capacityNeeds(n: number, f: NodeFacts, seedExtra: number) {
  const peers = n - 1
  return {
    maxReplicationSlots: f.otherSlots + peers + 2 + seedExtra,
    maxWalSenders: peers + 2 + seedExtra,
    maxLogicalReplicationWorkers: peers + 2,
    maxWorkerProcesses: peers + 4,
  }
}

/** What output_plugin_libraries must contain on a node whose outbound slots use `plugins`. */
export function pluginLibrariesFix(current: string[], needed: string[]): {missing: string[]; sql: string} | undefined {
  const missing = needed.filter(p => !current.includes(p))
  if (missing.length === 0) return undefined
  // a list GUC: each name its own literal ('a', 'b'); one literal 'a, b' would be one name
  const value = [...current, ...missing].map(ql).join(', ')
  return {missing, sql: `ALTER SYSTEM SET output_plugin_libraries = ${value}; SELECT pg_reload_conf();`}
}

export async function preflight(
  cfg: Config,
  cluster: Cluster,
  opts: {
    nodes?: string[]
    probePlugin?: boolean
    /** nodes that may be in recovery (add-node --strategy standby: X is still a standby of S); no plugin probe there */
    allowRecovery?: string[]
    /** false: do not look for data in the replicated tables (hasData is all false) */
    checkData?: boolean
  } = {},
): Promise<PreflightResult> {
  const names = opts.nodes ?? cfg.nodes.map(n => n.name)
  const problems: Problem[] = []
  const warnings: string[] = []
  const facts = new Map<string, NodeFacts>()
  const versions = new Map<string, number>()
  const tables = new Map<string, NodeTables>()
  const subscribed = new Set<string>()

  // 1. facts (reachability, version, settings, privileges) — all nodes at once
  const factResults = await cluster.each(c => readFacts(c, cfg.cluster), names)
  for (const [name, r] of factResults) {
    if (!r.ok) {
      const msg = r.error instanceof MmliteError ? r.error.message : classifyConnectError(r.error).message
      problems.push({node: name, check: 'reachable', message: msg, fix: 'Check the dsn in the configuration, that the server runs, and pg_hba.conf.'})
      continue
    }
    facts.set(name, r.value)
    versions.set(name, r.value.versionNum)
  }

  const allSubs = cfg.nodes.flatMap(a => cfg.nodes.filter(b => b.name !== a.name).map(b => edgeName(cfg.cluster, a.name, b.name)))
  const n = cfg.nodes.length
  const perNode = await cluster.each(async c => {
    const f = facts.get(c.name)
    if (!f) return
    const node = c.name
    const fixRestart = (setting: string, value: string | number) =>
      `ALTER SYSTEM SET ${setting} = ${typeof value === 'number' ? value : ql(value)}; then restart PostgreSQL on ${node}`
    if (f.versionNum < MIN_VERSION) {
      problems.push({node, check: 'version', message: `PostgreSQL ${f.version} is too old; mmlite needs 12 or newer`, fix: 'Upgrade the server.'})
      return
    }
    const recoveryAllowed = f.inRecovery && (opts.allowRecovery ?? []).includes(node)
    if (f.inRecovery && !recoveryAllowed) {
      problems.push({node, check: 'recovery', message: 'the server is a standby (in recovery); mesh members must accept writes', fix: 'Promote it or point the dsn at the primary.'})
    }
    if (f.walLevel !== 'logical') {
      problems.push({node, check: 'wal_level', message: `wal_level is ${f.walLevel}; logical replication needs logical`, fix: fixRestart('wal_level', 'logical')})
    }
    const need = capacityNeeds(n, f, 0)
    const cap: Array<[string, number, number]> = [
      ['max_replication_slots', f.maxReplicationSlots, need.maxReplicationSlots],
      ['max_wal_senders', f.maxWalSenders, need.maxWalSenders],
      ['max_logical_replication_workers', f.maxLogicalReplicationWorkers, need.maxLogicalReplicationWorkers],
      ['max_worker_processes', f.maxWorkerProcesses, need.maxWorkerProcesses],
    ]
    for (const [setting, have, want] of cap) {
      if (have < want) {
        problems.push({node, check: setting, message: `${setting} is ${have}; ${n} nodes need at least ${want}`, fix: fixRestart(setting, want)})
      }
    }
    if (!f.superuser) {
      const ok16 = f.versionNum >= 160000 && f.createSubscriptionRole && f.replicationRole
      if (!ok16) {
        problems.push({
          node,
          check: 'privileges',
          message: 'the connecting role is not a superuser' + (f.versionNum >= 160000 ? ' and lacks REPLICATION or membership in pg_create_subscription' : ''),
          fix:
            f.versionNum >= 160000
              ? 'Connect as a superuser, or: ALTER ROLE <role> REPLICATION; GRANT pg_create_subscription TO <role>; (and own the replicated tables).'
              : 'Connect as a superuser (PostgreSQL < 16 requires it to create subscriptions).',
        })
      }
      // 16+: a non-superuser subscription owner's conninfo must contain a password (password_required;
      // ~/.pgpass of the server OS user is not accepted): the peers' peer_dsn that node's subscriptions use
      const nopass = f.versionNum >= 160000 ? cfg.nodes.filter(p => p.name !== node && !p.peerConn.get('password')) : []
      if (nopass.length) {
        problems.push({
          node,
          check: 'privileges',
          message: `the connecting role is not a superuser, so its subscriptions need a password in their connection string (PostgreSQL 16+): peer_dsn of ${nopass.map(p => p.name).join(', ')} has no password`,
          fix: `Add password=\${VAR} to the peer_dsn of ${nopass.map(p => p.name).join(', ')} (a ~/.pgpass is not enough for a non-superuser subscription owner), or connect to ${node} as a superuser.`,
        })
      }
    }

    // output plugin: needed where an outbound edge is not native
    const outPlugin = cfg.nodes.some(p => p.name !== node && versions.has(p.name) && edgeMechanism(f.versionNum, versions.get(p.name)!) === 'plugin')
    const neededLibs = outPlugin ? ['pgoutput', PLUGIN] : ['pgoutput']
    let pluginAllowed = true
    if (f.outputPluginLibraries !== null) {
      const fix = pluginLibrariesFix(f.outputPluginLibraries, neededLibs)
      if (fix) {
        pluginAllowed = false
        problems.push({
          node,
          check: 'output_plugin_libraries',
          message: `output_plugin_libraries (${f.outputPluginLibraries.join(', ') || 'empty'}) does not list ${fix.missing.join(', ')}, which this node's slots need`,
          fix: `${fix.sql}   (or run \`mmlite init --fix-settings\`)`,
          autoFix: fix.sql,
        })
      }
    }
    if (outPlugin && pluginAllowed && f.walLevel === 'logical' && opts.probePlugin !== false && !f.inRecovery) {
      const err = await probePlugin(cluster, node)
      if (err) problems.push({node, ...err})
    }

    // hook (tests/#14.4): table ownership, CREATE on the database, the peer_dsn role's grants (before the
    // data check below, which a role without SELECT on a table cannot run)
    problems.push(...(await rolePrivilegeProblems(c, cfg, f.superuser)))

    // tables
    const rows = await c.query<{ord: number; present: boolean; relkind: string | null; replident: string | null; has_pk: boolean; columns: string[] | null}>(TABLES_SQL, [
      cfg.tables.map(t => t.schema),
      cfg.tables.map(t => t.name),
    ])
    const nt: NodeTables = {columns: [], hasData: []}
    const presentTables: string[] = []
    rows.forEach((r, i) => {
      const t = cfg.tables[i]
      if (!r.present) {
        problems.push({node, check: 'table', message: `table ${t.display} does not exist`, fix: `Create it on ${node} with the same columns as on the other nodes (e.g. pg_dump --schema-only -t ${t.display}).`})
        nt.columns.push(null)
        return
      }
      if (r.relkind !== 'r' && r.relkind !== 'p') {
        problems.push({node, check: 'table', message: `${t.display} is not a table (relkind ${r.relkind})`})
      }
      if (r.replident === 'n' || (r.replident === 'd' && !r.has_pk)) {
        problems.push({
          node,
          check: 'replica identity',
          message: `table ${t.display} has no primary key${r.replident === 'n' ? ' and REPLICA IDENTITY NOTHING' : ''}: UPDATE and DELETE on it would fail to replicate`,
          fix: `ALTER TABLE ${t.qualified} ADD PRIMARY KEY (...);  or  ALTER TABLE ${t.qualified} REPLICA IDENTITY FULL;`,
        })
      }
      nt.columns.push(r.columns ?? [])
      presentTables.push(t.qualified)
    })
    if (presentTables.length && opts.checkData !== false) {
      const sql = `SELECT ARRAY[${presentTables.map(q => `EXISTS (SELECT 1 FROM ${q})`).join(', ')}] AS has`
      const has = (await c.one<{has: boolean[]}>(sql))!.has
      let k = 0
      for (const cols of nt.columns) nt.hasData.push(cols === null ? false : has[k++])
    } else nt.hasData = nt.columns.map(() => false)
    tables.set(node, nt)

    const subs = await c.query<{subname: string}>(OUR_SUBS_SQL, [allSubs])
    if (subs.length) subscribed.add(node)
  }, [...facts.keys()])
  for (const [name, r] of perNode) {
    if (!r.ok) problems.push({node: name, check: 'query', message: errorMessage(r.error)})
  }

  // schema hook: one comparison of columns, types, primary key and replica identity (src/cluster/drift.ts)
  const drift = await collectDrift(names.filter(n => tables.has(n)).map(n => cluster.node(n)), cfg.tables)
  for (const d of drift) problems.push({node: d.nodes[1], check: 'columns', message: driftLine(d), fix: DRIFT_FIX})

  return {facts, versions, tables, subscribed, problems, warnings}
}

/** How long the plugin probe may wait for its temporary slot (slot creation waits for running transactions). */
export const PROBE_TIMEOUT_S = 15

/** Try a temporary slot with our plugin (dropped with the session); undefined when it works. */
async function probePlugin(cluster: Cluster, node: string): Promise<Omit<Problem, 'node'> | undefined> {
  let s
  try {
    s = await cluster.node(node).newSession('mmlite preflight')
    await s.query(`SET statement_timeout = '${PROBE_TIMEOUT_S}s'`)
    await s.query(`SELECT pg_catalog.pg_create_logical_replication_slot(('mmlite_probe_' || pg_catalog.pg_backend_pid())::pg_catalog.name, ${ql(PLUGIN)}::pg_catalog.name, true)`)
    return undefined
  } catch (e) {
    const {kind: _kind, ...problem} = classifyPluginProbeError(node, e as {code?: string; message?: string})
    return problem
  } finally {
    await s?.end().catch(() => {})
  }
}

export type PluginProbeFailure = 'missing' | 'unloadable' | 'not-allowed' | 'timeout' | 'other'

/**
 * Why creating a temporary slot with the plugin failed, and the fix for that cause (pure):
 *  - timeout (57014 statement / 55P03 lock timeout): creating a slot waits until every transaction
 *    running on the node has finished; the plugin may be fine,
 *  - not-allowed (42501 "may not be used as an output plugin"): not listed in output_plugin_libraries,
 *  - missing (58P01 "could not access file"): not installed on the server,
 *  - unloadable (other "could not load library" errors): installed but built for another server.
 */
export function classifyPluginProbeError(node: string, e: {code?: string; message?: string}): Omit<Problem, 'node'> & {kind: PluginProbeFailure} {
  const msg = errorMessage(e instanceof Error ? e : new Error(e.message ?? String(e)))
  const install = `make -C extension install PG_CONFIG=/usr/lib/postgresql/<major>/bin/pg_config on ${node}'s server (needs the server headers, e.g. postgresql-server-dev-<major>); edges to or from PostgreSQL < 16 use it.`
  if (e.code === '57014' || e.code === '55P03' || /statement timeout|lock timeout/.test(msg)) {
    return {
      kind: 'timeout',
      check: 'plugin',
      message: `could not create a probe slot with the output plugin "${PLUGIN}" within ${PROBE_TIMEOUT_S} s: creating a slot waits until every transaction running on ${node} has finished (${msg})`,
      fix: `Let the long-running or idle-in-transaction sessions and prepared transactions on ${node} finish (SELECT pid, state, xact_start, query FROM pg_catalog.pg_stat_activity WHERE backend_xid IS NOT NULL OR backend_xmin IS NOT NULL ORDER BY xact_start; SELECT * FROM pg_catalog.pg_prepared_xacts;), or end them with SELECT pg_catalog.pg_terminate_backend(<pid>); then re-run.`,
    }
  }
  if (e.code === '42501' && /may not be used as an output plugin/.test(msg)) {
    return {
      kind: 'not-allowed',
      check: 'output_plugin_libraries',
      message: `the output plugin "${PLUGIN}" cannot be used: output_plugin_libraries does not allow it (${msg})`,
      fix: `List it in output_plugin_libraries on ${node} (ALTER SYSTEM SET output_plugin_libraries = <current list>, '${PLUGIN}'; SELECT pg_reload_conf();), or run \`mmlite init --fix-settings\`.`,
    }
  }
  if (e.code === '58P01' || /could not access file/.test(msg)) {
    return {kind: 'missing', check: 'plugin', message: `the output plugin "${PLUGIN}" cannot be used: it is not installed (${msg})`, fix: `Install it: ${install}`}
  }
  if (/could not load library|incompatible library|undefined symbol/.test(msg)) {
    return {kind: 'unloadable', check: 'plugin', message: `the output plugin "${PLUGIN}" cannot be used: it is installed but does not load (${msg})`, fix: `Rebuild and install it for this server's major version: ${install}`}
  }
  return {kind: 'other', check: 'plugin', message: `the output plugin "${PLUGIN}" cannot be used: ${msg}`, fix: `Fix the cause named above on ${node} (its server log may say more), then re-run.`}
}

/**
 * One operation at a time (as add-node does): a problem for every unfinished journal operation
 * other than `allowed` (keys), naming the command that finishes it.
 */
export function otherOperationsProblems(unfinished: Array<{key: string; op: {command: string; startedAt: string}}>, allowed: string[]): Problem[] {
  return unfinished
    .filter(u => !allowed.includes(u.key))
    .map(u => ({
      check: 'journal',
      message: `another mmlite operation is unfinished: ${u.key} (started ${u.op.startedAt})`,
      fix: `Finish it first by re-running \`mmlite ${u.op.command}${u.key.includes(':') ? ' ' + u.key.split(':')[1] : ''}\` from this directory.`,
    }))
}

export function preflightError(problems: Problem[], what = 'preflight'): MmliteError {
  const details = problems.map(p => `${p.node ? `[${p.node}] ` : ''}${p.check}: ${p.message}${p.fix ? `\n      fix: ${p.fix}` : ''}`)
  return new MmliteError(`${what} found ${problems.length} problem${problems.length === 1 ? '' : 's'}; nothing was changed`, {
    code: ExitCode.Preflight,
    details,
  })
}

