/**
 * `mmlite init` without a configuration file, on a terminal: ask for the cluster name,
 * the node DSNs (each connection tested as it is entered) and the tables (a checkbox list
 * read from the first node), then write mmlite.yaml.
 */
import {checkName, writeNewConfig} from '../config/config.js'
import {parseConnInfo, describeTarget} from '../db/conninfo.js'
import {NodeConn} from '../db/node.js'
import {maskTypedDsn} from '../db/redact.js'
import {makeTableName} from '../config/tables.js'
import type {Prompts} from './prompts.js'
import {MmliteError, ExitCode, errorMessage} from '../errors.js'

const nameProblem = (v: string): string | true => {
  let msg: string | undefined
  checkName(v, 'the name', m => (msg = m))
  return msg ?? true
}

export async function runWizard(file: string, prompts: Prompts, say: (line: string) => void): Promise<void> {
  say(`No configuration at ${file}: let's write one.`)
  const cluster = await prompts.input({message: 'Cluster name (prefixes every object mmlite creates):', default: 'mesh', validate: nameProblem})
  const nodes: {name: string; dsn: string}[] = []
  for (;;) {
    const idx = nodes.length + 1
    const dsn = await prompts.input({
      message: `DSN of node ${idx}${idx > 2 ? ' (empty to finish)' : ''}:`,
      // a typed password is never shown (better: leave it out and use ~/.pgpass or PGPASSWORD)
      transformer: v => maskTypedDsn(v),
      validate: async v => {
        if (!v.trim()) return idx > 2 ? true : 'at least two nodes are needed'
        try {
          const conn = parseConnInfo(v)
          const c = new NodeConn({name: `node${idx}`, dsn: v, conn, peerConn: conn}, {connectTimeoutMs: 5000})
          try {
            await c.connect()
          } finally {
            await c.close()
          }
          return true
        } catch (e) {
          return `cannot connect to ${(() => { try { return describeTarget(parseConnInfo(v)) } catch { return 'that DSN' } })()}: ${errorMessage(e)}`
        }
      },
    })
    if (!dsn.trim()) break
    const name = await prompts.input({
      message: `Name of node ${idx}:`,
      default: `node${idx}`,
      validate: v => (nodes.some(n => n.name === v) ? `${v} is taken` : nameProblem(v)),
    })
    nodes.push({name, dsn: dsn.trim()})
  }
  const first = parseConnInfo(nodes[0].dsn)
  const c = new NodeConn({name: nodes[0].name, dsn: nodes[0].dsn, conn: first, peerConn: first}, {connectTimeoutMs: 5000})
  let tables: {schema: string; name: string; identity: boolean}[]
  try {
    // identity: what preflight requires (a primary key, a replica identity index, or REPLICA IDENTITY FULL)
    tables = await c.query<{schema: string; name: string; identity: boolean}>(
      `SELECT n.nspname AS schema, c.relname AS name,
              (c.relreplident = 'f' OR EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid
                 AND (i.indisprimary AND c.relreplident = 'd' OR i.indisreplident AND c.relreplident = 'i'))) AS identity
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2`,
    )
  } finally {
    await c.close()
  }
  if (tables.length === 0) {
    throw new MmliteError(`node ${nodes[0].name} has no tables to replicate`, {code: ExitCode.Config, suggestions: ['Create the tables on every node first.']})
  }
  const chosen = await prompts.checkbox({
    message: `Tables to replicate (read from ${nodes[0].name}):`,
    choices: tables.map(t => {
      const tn = makeTableName(t.schema, t.name)
      // never pre-select a table preflight will refuse (no primary key / replica identity)
      return t.identity
        ? {name: tn.display, value: tn.display, checked: true}
        : {name: `${tn.display} (no primary key: add one or REPLICA IDENTITY FULL before replicating it)`, value: tn.display, checked: false}
    }),
  })
  if (chosen.length === 0) throw new MmliteError('no table chosen', {code: ExitCode.Config})
  await writeNewConfig(file, {cluster, tables: chosen, nodes})
  say(`Wrote ${file}.`)
  const withPassword = nodes.filter(n => parseConnInfo(n.dsn).has('password')).map(n => n.name)
  if (withPassword.length) {
    say(
      `Note: the DSN of ${withPassword.join(', ')} holds a password, now in ${file} (readable only by you) and, without a peer_dsn, ` +
        "in every peer's pg_subscription. Prefer ~/.pgpass, PGPASSWORD or password=${VAR} (see README \"Security model and privileges\").",
    )
  }

}
