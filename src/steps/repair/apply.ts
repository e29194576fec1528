/**
 * Step: apply the planned changes on each repaired node (nodes at once, one session each).
 *
 * The session is set up as the apply worker sets up its own: its writes carry the replication
 * origin `mmlite_repair` (pg_replication_origin_session_setup), so every subscription
 * (origin = none, or the mmlite plugin's origin filter) leaves them on the node they fix; and
 * session_replication_role = replica, so user triggers and foreign-key triggers do not fire —
 * as when a replicated change is applied: the kept version's side effects already happened
 * where it was written, and the rows end up equal to a node that satisfies its foreign keys,
 * whatever order the rows are fixed in. Small transactions (BATCH changes); in each, every row
 * is locked and must still be the version verify read (else it is skipped, not overwritten).
 */
import type {NodeConn} from '../../db/node.js'
import {escapeLiteral as ql} from '../../db/quote.js'
import {openSession} from '../verify/session.js'
import {pinSql} from '../verify/session.js'
import type {Audit} from './audit.js'
import type {Change} from './plan.js'

export const REPAIR_ORIGIN = 'mmlite_repair'
export const BATCH = 100

export function sessionSetupSql(): string[] {
  return [
    pinSql(),
    `SELECT pg_catalog.pg_replication_origin_create(${ql(REPAIR_ORIGIN)}::pg_catalog.text) WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_replication_origin WHERE roname = ${ql(REPAIR_ORIGIN)}::pg_catalog.text)`,
    `SELECT pg_catalog.pg_replication_origin_session_setup(${ql(REPAIR_ORIGIN)}::pg_catalog.text)`,
    'SET session_replication_role = replica',
  ]
}

/** The exact statements run on one node, in order (what --dry-run prints). */
export function nodeScript(changes: Change[]): string[] {
  const out = [...sessionSetupSql()]
  for (let i = 0; i < changes.length; i += BATCH) {
    out.push('BEGIN')
    for (const c of changes.slice(i, i + BATCH)) out.push(`${c.guard}  -- must return ${c.beforeDigest === null ? 'no row' : c.beforeDigest}`, c.sql)
    out.push('COMMIT')
  }
  return out
}

export interface NodeOutcome {
  applied: Change[]
  /** rows that changed since verify read them: left alone */
  skipped: Change[]
}

export async function applyOnNode(conn: NodeConn, changes: Change[], audit: Audit): Promise<NodeOutcome> {
  const out: NodeOutcome = {applied: [], skipped: []}
  const s = await openSession(conn, 'mmlite repair')
  try {
    for (const q of sessionSetupSql()) await s.q(q)
    for (let i = 0; i < changes.length; i += BATCH) {
      const batch = changes.slice(i, i + BATCH)
      const done: Change[] = []
      await s.q('BEGIN')
      try {
        for (const c of batch) {
          const cur = await s.q<{d: string}>(c.guard)
          if ((cur[0]?.d ?? null) !== c.beforeDigest) {
            out.skipped.push(c)
            continue
          }
          await s.q(c.sql)
          done.push(c)
        }
        // the audit (with the rows replaced) is on disk before the changes are committed
        await audit.record(conn.name, done)
        await s.q('COMMIT')
        await audit.committed(conn.name, done.length)
        out.applied.push(...done)
      } catch (e) {
        await s.q('ROLLBACK').catch(() => {})
        throw e
      }
    }
    await s.q('SELECT pg_catalog.pg_replication_origin_session_reset()')
  } finally {
    await s.close()
  }
  return out
}
