/**
 * Read-only collection for `mmlite doctor`: every node concurrently, one session each, a few
 * catalog queries (every built-in schema-qualified, immune to objects planted in `public`).
 * A node that cannot be reached is reported, never thrown.
 */
import type {Config} from '../../config/config.js'
import {NodeConn, classifyConnectError} from '../../db/node.js'
import {escapeIdentifier} from '../../db/quote.js'
import {MmliteError} from '../../errors.js'
import {parseLibraryList} from '../../cluster/capabilities.js'
import {sleep} from '../../util/poll.js'
import {readShapes} from '../../cluster/drift.js'
import type {NodeFacts, NodeResult, PreparedFact, SequenceFact, SlotFact, SubFact, TableFact} from './types.js'

const SETTINGS_SQL = `
SELECT pg_catalog.current_setting('server_version_num')::int AS version_num,
       pg_catalog.current_setting('server_version') AS version,
       (SELECT c.system_identifier::pg_catalog.text FROM pg_catalog.pg_control_system() c) AS sysid,
       pg_catalog.pg_is_in_recovery() AS in_recovery,
       (SELECT s.setting FROM pg_catalog.pg_settings s WHERE s.name = 'max_slot_wal_keep_size') AS max_slot_wal_keep_size,
       pg_catalog.current_setting('track_commit_timestamp')::bool AS track_commit_timestamp,
       (SELECT s.setting FROM pg_catalog.pg_settings s WHERE s.name = 'output_plugin_libraries') AS output_plugin_libraries,
       pg_catalog.current_setting('max_prepared_transactions')::pg_catalog.int4 AS max_prepared_transactions`

const PREPARED_SQL = `SELECT x.gid::pg_catalog.text AS gid, x.database::pg_catalog.text AS database, x.owner::pg_catalog.text AS owner,
       pg_catalog.date_part('epoch'::pg_catalog.text, pg_catalog.clock_timestamp() - x.prepared)::pg_catalog.float8 AS age_seconds
  FROM pg_catalog.pg_prepared_xacts x ORDER BY x.prepared`

const LSN_SQL = `SELECT CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn()
                 ELSE pg_catalog.pg_current_wal_lsn() END::pg_catalog.text AS lsn, pg_catalog.clock_timestamp() AS t`

function slotsSql(v: number): string {
  const wal = v >= 130000 ? 's.wal_status, s.safe_wal_size::pg_catalog.float8 AS safe_wal_size' : 'NULL::pg_catalog.text AS wal_status, NULL::pg_catalog.float8 AS safe_wal_size'
  return `
SELECT s.slot_name::pg_catalog.text AS slot_name, s.plugin::pg_catalog.text AS plugin, s.slot_type, s.active, ${wal},
       pg_catalog.pg_wal_lsn_diff(CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn()
                                       ELSE pg_catalog.pg_current_wal_lsn() END, s.restart_lsn)::pg_catalog.float8 AS retained_bytes
  FROM pg_catalog.pg_replication_slots s
 ORDER BY 1`
}

function subscriptionsSql(v: number): string {
  const stats = v >= 150000
  const conflicts =
    v >= 180000
      ? `(SELECT pg_catalog.json_object_agg(e.key, e.value) FROM pg_catalog.jsonb_each(pg_catalog.to_jsonb(ss)) e WHERE pg_catalog.starts_with(e.key, 'confl_'))`
      : 'NULL::pg_catalog.json'
  return `
SELECT s.oid::pg_catalog.int8 AS oid, s.subname::pg_catalog.text AS subname, s.subenabled AS enabled,
       EXISTS (SELECT 1 FROM pg_catalog.pg_stat_subscription st
                WHERE st.subid = s.oid AND st.relid IS NULL AND st.pid IS NOT NULL) AS worker_running,
       ${stats ? 'ss.apply_error_count' : 'NULL::pg_catalog.int8'} AS apply_error_count,
       ${stats ? 'ss.sync_error_count' : 'NULL::pg_catalog.int8'} AS sync_error_count,
       ${conflicts} AS conflicts,
       ARRAY(SELECT r.srrelid::pg_catalog.int8 FROM pg_catalog.pg_subscription_rel r
              WHERE r.srsubid = s.oid AND r.srsubstate <> 'r') AS syncing_relids
  FROM pg_catalog.pg_subscription s
       ${stats ? 'LEFT JOIN pg_catalog.pg_stat_subscription_stats ss ON ss.subid = s.oid' : ''}
 WHERE s.subdbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
 ORDER BY 2`
}

/** The replicated tables, in configuration order ($1 schemas, $2 names). */
const TABLES_CTE = `
WITH t AS (
  SELECT u.ord, u.nsp, u.rel, c.oid AS relid, c.relreplident
    FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) WITH ORDINALITY AS u(nsp, rel, ord)
    LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = u.nsp
    LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = u.rel AND c.relkind IN ('r', 'p'))`

const TABLES_SQL = `${TABLES_CTE}
SELECT t.ord, t.relid IS NOT NULL AS exists, t.relreplident::pg_catalog.text AS replident,
       EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = t.relid AND i.indisprimary) AS has_pk,
       EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = t.relid AND i.indisreplident AND i.indisvalid) AS has_identity_index
  FROM t ORDER BY t.ord`

/**
 * Sequences that feed a column of a replicated table: identity and serial columns (the
 * sequence depends on the column, deptype i / a) and any column default that calls nextval()
 * of a sequence (the default depends on the sequence).
 */
const SEQUENCES_SQL = `${TABLES_CTE},
seqs AS (
  SELECT t.ord, a.attname, d.objid AS seqid
    FROM t
    JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = t.relid
                               AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype IN ('i', 'a')
    JOIN pg_catalog.pg_attribute a ON a.attrelid = t.relid AND a.attnum = d.refobjsubid
  UNION
  SELECT t.ord, a.attname, d.refobjid
    FROM t
    JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = t.relid
    JOIN pg_catalog.pg_attribute a ON a.attrelid = t.relid AND a.attnum = ad.adnum
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.objid = ad.oid
                               AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass)
SELECT s.ord, s.attname::pg_catalog.text AS column, sn.nspname::pg_catalog.text AS seq_schema, sc.relname::pg_catalog.text AS seq_name,
       q.seqincrement::pg_catalog.text AS increment, q.seqmin::pg_catalog.text AS min_value, q.seqmax::pg_catalog.text AS max_value
  FROM seqs s
  JOIN pg_catalog.pg_class sc ON sc.oid = s.seqid AND sc.relkind = 'S'
  JOIN pg_catalog.pg_namespace sn ON sn.oid = sc.relnamespace
  JOIN pg_catalog.pg_sequence q ON q.seqrelid = sc.oid
 ORDER BY s.ord, 2`

export interface CollectOptions {
  connectTimeoutMs: number
  /** how long to watch the WAL position to measure its rate */
  sampleMs: number
}

/** The sequences that feed columns of the replicated tables on one node, with their next values. */
export async function readSequences(c: NodeConn, cfg: Config, schemas: string[], names: string[]): Promise<SequenceFact[]> {
  const rows = await c.query<{ord: string; column: string; seq_schema: string; seq_name: string; increment: string; min_value: string; max_value: string}>(
    SEQUENCES_SQL,
    [schemas, names],
  )
  const out: SequenceFact[] = []
  for (const r of rows) {
    const sequence = `${escapeIdentifier(r.seq_schema)}.${escapeIdentifier(r.seq_name)}`
    const v = (await c.one<{last_value: string; is_called: boolean}>(`SELECT last_value::pg_catalog.text AS last_value, is_called FROM ${sequence}`))!
    const next = v.is_called ? BigInt(v.last_value) + BigInt(r.increment) : BigInt(v.last_value)
    out.push({
      table: cfg.tables[Number(r.ord) - 1].display,
      qualified: cfg.tables[Number(r.ord) - 1].qualified,
      column: r.column,
      sequence,
      increment: Number(r.increment),
      min_value: r.min_value,
      max_value: r.max_value,
      next_value: next.toString(),
    })
  }
  return out
}

async function readNode(cfg: Config, c: NodeConn, opts: CollectOptions): Promise<NodeFacts> {
  const first = (await c.one<{lsn: string | null; t: Date}>(LSN_SQL))!
  const t0 = Date.now()
  const s = (await c.one<Record<string, unknown>>(SETTINGS_SQL))!
  const v = s.version_num as number
  const schemas = cfg.tables.map(t => t.schema)
  const names = cfg.tables.map(t => t.name)
  const slots = await c.query<SlotFact>(slotsSql(v))
  const subs = await c.query<Record<string, unknown>>(subscriptionsSql(v))
  const pubs = await c.query<{pubname: string}>('SELECT p.pubname::pg_catalog.text AS pubname FROM pg_catalog.pg_publication p ORDER BY 1')
  // origins are per server, subscriptions too (pg_subscription is shared): an origin pg_<oid> is an orphan only if no database has that subscription
  const origins = await c.query<{roname: string}>(
    "SELECT o.roname FROM pg_catalog.pg_replication_origin o WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription s WHERE o.roname = 'pg_' || s.oid::pg_catalog.text) ORDER BY 1",
  )
  const tables = await c.query<{ord: string; exists: boolean; replident: string | null; has_pk: boolean; has_identity_index: boolean}>(TABLES_SQL, [schemas, names])
  const sequences = await readSequences(c, cfg, schemas, names)
  const shapes = await readShapes(c, cfg.tables)
  const prepared = await c.query<PreparedFact>(PREPARED_SQL)
  const left = opts.sampleMs - (Date.now() - t0)
  if (left > 0) await sleep(left)
  const second = (await c.one<{lsn: string | null; t: Date}>(LSN_SQL))!
  let walRate: number | null = null
  if (first.lsn && second.lsn) {
    const bytes = (await c.one<{d: number}>('SELECT pg_catalog.pg_wal_lsn_diff($1::pg_catalog.pg_lsn, $2::pg_catalog.pg_lsn)::pg_catalog.float8 AS d', [second.lsn, first.lsn]))!.d
    const secs = Math.max(0.001, (second.t.getTime() - first.t.getTime()) / 1000)
    walRate = Math.max(0, bytes / secs)
  }
  const mswks = s.max_slot_wal_keep_size as string | null
  const opl = s.output_plugin_libraries as string | null
  return {
    name: c.name,
    versionNum: v,
    version: (s.version as string).split(' ')[0],
    systemIdentifier: s.sysid as string,
    inRecovery: s.in_recovery as boolean,
    // the setting is in MB
    maxSlotWalKeepSize: mswks === null || mswks === undefined ? null : Number(mswks) < 0 ? -1 : Number(mswks) * 1024 * 1024,
    trackCommitTimestamp: s.track_commit_timestamp as boolean,
    outputPluginLibraries: opl === null || opl === undefined ? null : parseLibraryList(opl),
    walRate,
    slots: slots.map(x => ({...x, safe_wal_size: x.safe_wal_size === null ? null : Number(x.safe_wal_size), retained_bytes: x.retained_bytes === null ? null : Number(x.retained_bytes)})),
    subscriptions: subs.map(
      (x): SubFact => ({
        oid: Number(x.oid),
        subname: x.subname as string,
        enabled: x.enabled as boolean,
        worker_running: x.worker_running as boolean,
        apply_error_count: x.apply_error_count === null ? null : Number(x.apply_error_count),
        sync_error_count: x.sync_error_count === null ? null : Number(x.sync_error_count),
        conflicts: x.conflicts ? Object.fromEntries(Object.entries(x.conflicts as Record<string, unknown>).map(([k, n]) => [k, Number(n)])) : null,
        syncing_relids: ((x.syncing_relids as unknown[]) ?? []).map(Number),
      }),
    ),
    publications: pubs.map(p => p.pubname),
    origins: origins.map(o => o.roname),
    tables: tables.map((t): TableFact => ({table: cfg.tables[Number(t.ord) - 1].display, qualified: cfg.tables[Number(t.ord) - 1].qualified, exists: t.exists, replident: t.replident, has_pk: t.has_pk, has_identity_index: t.has_identity_index})),
    shapes,
    sequences,
    maxPreparedTransactions: s.max_prepared_transactions as number,
    prepared: prepared.map(x => ({...x, age_seconds: Number(x.age_seconds)})),
  }
}

/** Every node concurrently; never throws for a node. */
export async function collectDoctor(cfg: Config, opts: CollectOptions): Promise<NodeResult[]> {
  return Promise.all(
    cfg.nodes.map(async (n): Promise<NodeResult> => {
      const c = new NodeConn(n, {connectTimeoutMs: opts.connectTimeoutMs, applicationName: 'mmlite doctor'})
      try {
        await c.connect()
      } catch (e) {
        const message = e instanceof MmliteError ? e.message : classifyConnectError(e).message
        await c.close()
        return {name: n.name, reachable: false, error: message}
      }
      try {
        return {name: n.name, reachable: true, facts: await readNode(cfg, c, opts)}
      } catch (e) {
        return {name: n.name, reachable: true, error: `the checks' catalog queries failed: ${e instanceof Error ? e.message : String(e)}`}
      } finally {
        await c.close()
      }
    }),
  )
}
