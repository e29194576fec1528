/**
 * What a node can do, read in one round trip: version, settings that logical replication
 * needs, privileges, output_plugin_libraries (newer minors only), recovery state.
 * And the per-edge mechanism: native `origin = none` when both ends are 16+, else our
 * output plugin `mmlite` on the publisher's slot.
 */
import type {NodeConn} from '../db/node.js'

export interface NodeFacts {
  name: string
  versionNum: number
  version: string
  walLevel: string
  maxReplicationSlots: number
  maxWalSenders: number
  maxLogicalReplicationWorkers: number
  maxWorkerProcesses: number
  maxSyncWorkersPerSubscription: number
  /** null when the server has no such setting (older minors): no restriction */
  outputPluginLibraries: string[] | null
  superuser: boolean
  replicationRole: boolean
  createSubscriptionRole: boolean
  inRecovery: boolean
  systemIdentifier: string
  database: string
  /** slots on this server that are not this cluster's */
  otherSlots: number
}

export type Mechanism = 'native' | 'plugin'

export const PLUGIN = 'mmlite'
export const NATIVE_ORIGIN_MIN = 160000

export function edgeMechanism(publisherVersion: number, subscriberVersion: number): Mechanism {
  return publisherVersion >= NATIVE_ORIGIN_MIN && subscriberVersion >= NATIVE_ORIGIN_MIN ? 'native' : 'plugin'
}

export function slotPlugin(m: Mechanism): string {
  return m === 'native' ? 'pgoutput' : PLUGIN
}

export const FACTS_SQL = `
SELECT current_setting('server_version_num')::int AS version_num,
       current_setting('server_version') AS version,
       current_setting('wal_level') AS wal_level,
       current_setting('max_replication_slots')::int AS max_replication_slots,
       current_setting('max_wal_senders')::int AS max_wal_senders,
       current_setting('max_logical_replication_workers')::int AS max_logical_replication_workers,
       current_setting('max_worker_processes')::int AS max_worker_processes,
       current_setting('max_sync_workers_per_subscription')::int AS max_sync_workers_per_subscription,
       (SELECT setting FROM pg_settings WHERE name = 'output_plugin_libraries') AS output_plugin_libraries,
       r.rolsuper AS superuser, r.rolreplication AS replication_role,
       (SELECT count(*) > 0 FROM pg_roles g WHERE g.rolname = 'pg_create_subscription'
           AND pg_has_role(r.oid, g.oid, 'MEMBER')) AS create_subscription_role,
       pg_is_in_recovery() AS in_recovery,
       (SELECT system_identifier::text FROM pg_control_system()) AS system_identifier,
       current_database() AS database,
       (SELECT count(*)::int FROM pg_replication_slots WHERE NOT (slot_name LIKE $1)) AS other_slots
  FROM pg_roles r WHERE r.rolname = current_user`

export async function readFacts(c: NodeConn, cluster: string): Promise<NodeFacts> {
  const r = (await c.one<Record<string, unknown>>(FACTS_SQL, [`${cluster.replace(/_/g, '\\_')}\\_%`]))!
  const opl = r.output_plugin_libraries as string | null
  return {
    name: c.name,
    versionNum: r.version_num as number,
    version: r.version as string,
    walLevel: r.wal_level as string,
    maxReplicationSlots: r.max_replication_slots as number,
    maxWalSenders: r.max_wal_senders as number,
    maxLogicalReplicationWorkers: r.max_logical_replication_workers as number,
    maxWorkerProcesses: r.max_worker_processes as number,
    maxSyncWorkersPerSubscription: r.max_sync_workers_per_subscription as number,
    outputPluginLibraries: opl === null || opl === undefined ? null : parseLibraryList(opl),
    superuser: r.superuser as boolean,
    replicationRole: r.replication_role as boolean,
    createSubscriptionRole: r.create_subscription_role as boolean,
    inRecovery: r.in_recovery as boolean,
    systemIdentifier: r.system_identifier as string,
    database: r.database as string,
    otherSlots: r.other_slots as number,
  }
}

export function parseLibraryList(s: string): string[] {
  return s
    .split(',')
    .map(x => x.trim().replace(/^"(.*)"$/, '$1'))
    .filter(Boolean)
}
