/**
 * `mmlite status --reset-errors`: reset the error counters of the cluster's subscriptions
 * (pg_stat_subscription_stats, PostgreSQL 15+) once the errors are understood, so `status`
 * starts counting from zero. Only subscriptions with a count above zero; --dry-run prints the
 * exact SQL per node. Idempotent (a reset counter is not reset again).
 */
import type {Config} from '../config/config.js'
import {Cluster} from '../cluster/cluster.js'
import {edgeName} from '../cluster/naming.js'
import {readHistory, writeHistory} from '../cluster/error-history.js'
import type {PlannedSql} from '../engine/types.js'

export interface ResetErrorsResult {
  /** what ran (or would run) */
  sql: PlannedSql[]
  /** nodes that could not be read, and why */
  skipped: string[]
}

export function resetSql(oid: number): string {
  return `SELECT pg_catalog.pg_stat_reset_subscription_stats(${oid}::pg_catalog.oid)`
}

export async function resetErrors(cfg: Config, o: {dryRun: boolean; connectTimeoutMs: number; confirm: (sql: PlannedSql[]) => Promise<void>}): Promise<ResetErrorsResult> {
  const cluster = new Cluster(cfg, {connectTimeoutMs: o.connectTimeoutMs})
  const out: ResetErrorsResult = {sql: [], skipped: []}
  try {
    const names = cfg.nodes.map(n => n.name)
    for (const to of names) {
      const subs = names.filter(f => f !== to).map(f => edgeName(cfg.cluster, f, to))
      try {
        const c = cluster.node(to)
        await c.connect()
        if (c.serverVersion < 150000) continue
        const rows = await c.query<{oid: string}>(
          `SELECT s.oid::pg_catalog.text AS oid FROM pg_catalog.pg_subscription s JOIN pg_catalog.pg_stat_subscription_stats ss ON ss.subid = s.oid
            WHERE s.subname OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.name[]) AND ss.apply_error_count + ss.sync_error_count > 0 ORDER BY 1`,
          [subs],
        )
        for (const r of rows) out.sql.push({node: to, sql: resetSql(Number(r.oid))})
      } catch (e) {
        out.skipped.push(`${to}: ${(e as Error).message}`)
      }
    }
    if (o.dryRun || out.sql.length === 0) return out
    await o.confirm(out.sql)
    for (const q of out.sql) await cluster.node(q.node).query(q.sql)
    // forget the rises: the counts start again from zero
    const h = await readHistory(cfg.file)
    for (const k of Object.keys(h)) h[k] = {apply: 0, sync: 0, changedAt: null}
    await writeHistory(cfg.file, h)
    return out
  } finally {
    await cluster.close()
  }
}
