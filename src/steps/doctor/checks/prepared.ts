/**
 * Prepared transactions (pg_prepared_xacts, every database of the server). One that a killed
 * mmlite run left (gid `mmlite:<tables|ddl>:<cluster>:…`, src/steps/tables/prepared.ts) keeps
 * its locks (the table's writers, and apply workers bringing changes of it from the nodes that
 * committed, wait) and its xmin (vacuum cannot remove rows dead since): critical, finished by
 * re-running the command, never by hand (whether it must commit depends on the other nodes).
 * Any other prepared transaction held for minutes holds locks and xmin too: a warning. A node
 * that cannot prepare at all (max_prepared_transactions = 0) cannot take part in adding a table.
 */
import {escapeLiteral as ql} from '../../../db/quote.js'
import {lockSlotName} from '../../../engine/lock.js'
import {formatSeconds} from '../../../util/text.js'
import type {DoctorInput, Finding} from '../types.js'

/** a prepared transaction older than this is a warning */
export const STALE_PREPARED_S = 5 * 60

/** an mmlite prepared transaction younger than this, while a run holds the cluster lock, is that run's */
const IN_FLIGHT_S = 60

const MMLITE_GID = /^mmlite:(tables|ddl):([a-z][a-z0-9_]*):/

/** The command that finishes a killed run's prepared transaction of `op`. */
function rerun(input: DoctorInput, op: string, cluster: string): string {
  if (cluster !== input.cfg.cluster) return `Re-run the same mmlite command (${op === 'tables' ? '`mmlite init`' : '`mmlite ddl …`'}) with the mmlite.yaml of cluster ${cluster}`
  if (op === 'tables') return 'Re-run `mmlite init` (it commits or rolls back the prepared transaction on every node, then finishes adding the tables)'
  const stmts = input.unfinished.find(u => u.key === 'ddl')?.values?.statements
  const same = Array.isArray(stmts) ? ` (its statements: ${stmts.join('; ')})` : ''
  return `Re-run the same \`mmlite ddl …\` command${same} (it commits or rolls back the prepared transaction on every node, then finishes)`
}

export function checkPrepared(input: DoctorInput): Finding[] {
  const out: Finding[] = []
  const lock = lockSlotName(input.cfg.cluster)
  for (const n of input.nodes) {
    const f = n.facts
    if (!f) continue
    if (f.maxPreparedTransactions === 0) {
      out.push({
        check: 'prepared',
        severity: 'info',
        node: n.name,
        object: 'max_prepared_transactions',
        message: `max_prepared_transactions = 0 on ${n.name}: adding a table to tables: (\`mmlite init\`) is refused until it is at least 1 (the nodes commit two-phase), and \`mmlite ddl\` commits one-phase`,
        fix: `ALTER SYSTEM SET max_prepared_transactions = 10;  -- then restart PostgreSQL on ${n.name}`,
      })
    }
    // a run holding the cluster lock commits what it prepared within moments
    const running = f.slots.some(s => s.slot_name === lock && s.active)
    for (const x of f.prepared) {
      const base = {check: 'prepared', node: n.name, object: `prepared transaction ${x.gid}`}
      const m = MMLITE_GID.exec(x.gid)
      if (m && m[2] === input.cfg.cluster && running && x.age_seconds < IN_FLIGHT_S) {
        out.push({...base, severity: 'info', message: `${x.gid} on ${n.name}: prepared by an mmlite run that is still under way (it holds the cluster lock)`, fix: `Let it finish; if the transaction outlives it: ${rerun(input, m[1], m[2])}.`})
      } else if (m) {
        out.push({
          ...base,
          severity: 'critical',
          message: `${x.gid} on ${n.name} (database ${x.database}, prepared ${formatSeconds(x.age_seconds)} ago) was left by a killed mmlite ${m[1] === 'tables' ? 'init (adding tables)' : 'ddl'} run: it holds its locks (the table's writers, and the links bringing changes of it from the nodes that committed, wait) and its xmin (vacuum cannot remove rows dead since)`,
          fix: `${rerun(input, m[1], m[2])}. Do not COMMIT PREPARED or ROLLBACK PREPARED it by hand: which one is right depends on the other nodes.`,
        })
      } else if (x.age_seconds >= STALE_PREPARED_S) {
        out.push({
          ...base,
          severity: 'warning',
          message: `prepared transaction ${x.gid} on ${n.name} (database ${x.database}, owner ${x.owner}) has been prepared for ${formatSeconds(x.age_seconds)}: it holds its locks and its xmin (vacuum cannot remove rows dead since)`,
          fix: `Have its transaction manager finish it, or in database ${x.database} on ${n.name}: COMMIT PREPARED ${ql(x.gid)}; or ROLLBACK PREPARED ${ql(x.gid)};`,
        })
      }
    }
  }
  return out
}
