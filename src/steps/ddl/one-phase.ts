/**
 * `mmlite ddl` where some node cannot prepare transactions (max_prepared_transactions = 0): the
 * nodes commit one-phase, at once. A kill between two nodes' commits then leaves the statements
 * committed on some nodes only; the links from those nodes fail on their first change that
 * carries the new shape ("missing replicated column") and retry it, until the re-run commits
 * the statements on the other nodes, after which the retried changes apply: nothing is lost.
 * That holds only while the failing links retry, and when the re-run can tell on which nodes
 * the statements already committed (a catalog check per statement: the additive ones). A
 * subscription with disable_on_error stops instead of retrying, and the re-run needs every link
 * up; a statement without a catalog check (--force) would be run again on the nodes that
 * committed it and fail there: both refused up front.
 */
import type {Cluster} from '../../cluster/cluster.js'
import {edgeName} from '../../cluster/naming.js'
import type {Config} from '../../config/config.js'
import {MmliteError, ExitCode} from '../../errors.js'
import type {DdlStatement} from './classify.js'

/** What `ddl` prints when it has to commit one-phase. */
export function onePhaseNote(nodes: string[]): string {
  return `max_prepared_transactions = 0 on ${nodes.join(', ')}: the nodes commit one-phase, at once; if this run is killed between their commits, the links from the nodes that committed fail ("missing replicated column") until you re-run this command, which finishes it (ALTER SYSTEM SET max_prepared_transactions = 10 and a restart avoid that, README "Two-phase commit")`
}

const DOE_SQL = `SELECT s.subname::pg_catalog.text AS subname FROM pg_catalog.pg_subscription s
 WHERE s.subdisableonerr AND s.subname = ANY($1::pg_catalog.text[])
   AND s.subdbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())`

/** Refuses a one-phase run whose kill between the nodes' commits the re-run could not finish. */
export async function refuseUnfinishableOnePhase(cfg: Config, cluster: Cluster, versions: Map<string, number>, without: string[], statements: DdlStatement[]): Promise<void> {
  if (!without.length) return
  const names = cfg.nodes.map(n => n.name)
  const stopping: string[] = []
  for (const to of names.filter(n => versions.get(n)! >= 150000)) {
    const inbound = names.filter(n => n !== to).map(from => edgeName(cfg.cluster, from, to))
    for (const r of await cluster.node(to).query<{subname: string}>(DOE_SQL, [inbound])) stopping.push(`${r.subname} on ${to}`)
  }
  const unchecked = statements.filter(x => !x.doneSql)
  const why = [
    ...(stopping.length ? [`disable_on_error is on for ${stopping.join(', ')}: such a link would stop at the first change carrying the new shape, and the re-run needs every link up`] : []),
    ...unchecked.map(x => `${x.sql.split('\n')[0]}: no catalog check tells whether a node already ran it, so the re-run would run it again on the nodes that committed it`),
  ]
  if (!why.length) return
  throw new MmliteError(`max_prepared_transactions = 0 on ${without.join(', ')}: the nodes would commit one-phase, and a kill between their commits could not be finished by a re-run; refused, nothing was changed`, {
    code: ExitCode.Preflight,
    details: why,
    suggestions: [`ALTER SYSTEM SET max_prepared_transactions = 10; then restart PostgreSQL on ${without.join(', ')} (a restart setting), and run the command again: it then commits two-phase.`],
  })
}
