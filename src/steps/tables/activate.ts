/**
 * The activating step of the table reconcile procedure (the argument is in ./index.ts).
 *
 * On every node at once, one session each:
 *   BEGIN; LOCK TABLE <added tables> IN EXCLUSIVE MODE      -- writers of these tables wait; readers and other tables never do
 * then, once every node holds its lock (the tables are now static everywhere), the rows of each
 * node are read in its own session, and every node receives, in that same transaction, the
 * rows the others hold and it lacks (under the replication origin `mmlite_copy`, so they are
 * never sent on), then
 *   ALTER PUBLICATION <cluster> ADD TABLE <added tables>; PREPARE TRANSACTION
 * and, once every node has prepared, COMMIT PREPARED node by node (./together.ts; planning
 * refuses unless every node can prepare, ./two-phase.ts; a killed run's prepared transactions
 * are finished first).
 * A key held by two nodes with different rows is refused before anything commits, unless a
 * source node is named (--source/--seed) and holds the key: its row then replaces the others.
 */
import type pg from 'pg'
import {escapeIdentifier as qi, escapeLiteral as ql} from '../../db/quote.js'
import {publicationName} from '../../cluster/naming.js'
import type {Action, Step, StepContext} from '../../engine/types.js'
import {MmliteError, ExitCode, errorMessage} from '../../errors.js'
import {readState, tableOf} from './state.js'
import type {TablesCtx} from './index.js'
import {commitTogether, lockTimeoutSql} from './together.js'
import {XID_SQL, commitPreparedSql, finishLeftovers, hasLeftovers, leftovers, plannedGid, prepareSql, resolveSql} from './prepared.js'

export const COPY_ORIGIN = 'mmlite_copy'
const BATCH = 2000

export function lockSql(ks: string[]): string {
  return `LOCK TABLE ${ks.map(k => tableOf(k).qualified).join(', ')} IN EXCLUSIVE MODE`
}

/** after BEGIN and lock_timeout: row text that compares equal across nodes, then the lock */
function sessionSetup(ks: string[]): string[] {
  return ["SET LOCAL TimeZone = 'UTC'", "SET LOCAL DateStyle = 'ISO, YMD'", 'SET LOCAL extra_float_digits = 3', lockSql(ks)]
}

export function addTablesSql(cluster: string, ks: string[]): string {
  return `ALTER PUBLICATION ${qi(publicationName(cluster))} ADD TABLE ${ks.map(k => tableOf(k).qualified).join(', ')}`
}

// before copying rows: tagged with our origin (never sent on), and as a replica so that no
// trigger of the table owner's runs with mmlite's (superuser) rights; the rows were checked
// by the node they come from (foreign keys included)
const ORIGIN_SQL = [
  'SET LOCAL session_replication_role = replica',
  `SELECT pg_catalog.pg_replication_origin_create(${ql(COPY_ORIGIN)}::pg_catalog.text) WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_origin o WHERE o.roname = ${ql(COPY_ORIGIN)}::pg_catalog.text)`,
  `SELECT pg_catalog.pg_replication_origin_session_setup(${ql(COPY_ORIGIN)}::pg_catalog.text)`,
]

// (int2vector casts to an array whose subscripts start at 0, hence + 1: 0 means "not a key column")
const COLS_SQL = `SELECT a.attname::pg_catalog.text AS name, a.attnum::int AS num,
       COALESCE((SELECT pg_catalog.array_position(i.indkey::pg_catalog.int2[], a.attnum) + 1
                   FROM pg_catalog.pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary), 0)::int AS pk,
       COALESCE((SELECT pg_catalog.array_position(i.indkey::pg_catalog.int2[], a.attnum) + 1
                   FROM pg_catalog.pg_index i WHERE i.indrelid = a.attrelid AND i.indisreplident), 0)::int AS ri
  FROM pg_catalog.pg_attribute a
 WHERE a.attrelid = $1::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
 ORDER BY a.attnum`

interface Cols {
  insert: string[]
  key: string[]
}

async function columns(s: pg.Client, qualified: string): Promise<Cols> {
  const rows = (await s.query<{name: string; pk: number; ri: number}>(COLS_SQL, [qualified])).rows
  const by = (f: 'pk' | 'ri') => rows.filter(r => r[f] > 0).sort((a, b) => a[f] - b[f]).map(r => r.name)
  const key = by('pk').length ? by('pk') : by('ri')
  return {insert: rows.map(r => r.name), key}
}

export function insertSql(qualified: string, cols: string[]): string {
  const list = cols.map(qi).join(', ')
  return `INSERT INTO ${qualified} (${list}) SELECT ${list} FROM pg_catalog.jsonb_populate_recordset(NULL::${qualified}, $1::pg_catalog.jsonb)`
}

/** The source's rows (jsonb array $1) replace this node's rows with the same key. */
export function updateSql(qualified: string, cols: string[], key: string[]): string {
  const k = (a: string) => `pg_catalog.jsonb_build_array(${key.map(c => `${a}.${qi(c)}`).join(', ')})`
  return (
    `UPDATE ${qualified} AS t SET (${cols.map(qi).join(', ')}) = ROW(${cols.map(c => `r.${qi(c)}`).join(', ')})` +
    ` FROM pg_catalog.jsonb_populate_recordset(NULL::${qualified}, $1::pg_catalog.jsonb) AS r WHERE ${k('t')} = ${k('r')}`
  )
}

/** Per node, the rows (by key) of one table: key text -> row as jsonb text. */
async function readRows(s: pg.Client, qualified: string, key: string[]): Promise<Map<string, string>> {
  const k = key.length ? `pg_catalog.jsonb_build_array(${key.map(c => `t.${qi(c)}`).join(', ')})::pg_catalog.text` : `pg_catalog.to_jsonb(t)::pg_catalog.text`
  const r = await s.query<{k: string; j: string}>(`SELECT ${k} AS k, pg_catalog.to_jsonb(t)::pg_catalog.text AS j FROM ${qualified} t`)
  return new Map(r.rows.map(x => [x.k, x.j]))
}

export interface ActivationReport {
  tables: Array<{table: string; copied: Record<string, number>; overwritten: Record<string, number>; rows: Record<string, number>}>
  lockMs: number
}

/**
 * The whole activation; shared by the per-node actions (runs once). A killed earlier run's
 * prepared transactions are finished first (committed where one node already committed, see
 * ./prepared.ts); then the tables still unpublished everywhere are activated.
 */
async function activate(t: TablesCtx, ctx: StepContext): Promise<ActivationReport> {
  await finishLeftovers(ctx.cluster, await leftovers(t.cfg, ctx.cluster, 'tables', t.timeoutMs))
  const state = [...(await readState(ctx.cfg, ctx.cluster)).values()]
  const adds = t.work.adds.filter(k => !state.every(s => s.shop?.has(k)))
  const partial = adds.filter(k => state.some(s => s.shop?.has(k)))
  if (partial.length) throw partialError(partial.map(k => tableOf(k).display))
  if (!adds.length) return {tables: [], lockMs: 0}
  const names = t.cfg.nodes.map(n => n.name)
  ctx.progress(`locking ${adds.map(k => tableOf(k).display).join(', ')} on every node`)
  try {
    const t0 = Date.now()
    const twoPhase = {op: 'tables' as const, fault: 'tables-activate'}
    const report = await commitTogether(ctx, names, {appName: 'mmlite tables', lockTimeoutMs: t.timeoutMs, setup: sessionSetup(adds), twoPhase}, sessions => fill(t, adds, ctx, sessions))
    report.lockMs = Date.now() - t0
    return report
  } catch (e) {
    if (e instanceof MmliteError) throw e
    throw new MmliteError(`adding ${adds.map(k => tableOf(k).display).join(', ')} failed: ${errorMessage(e)}; nothing was committed`, {code: ExitCode.Failed})
  }
}

/**
 * A table in `<cluster>` on some nodes only, with no prepared transaction left to finish it: an
 * older mmlite committed one-phase and was killed between the commits, or someone finished a
 * prepared transaction of ours by hand.
 */
export function partialError(names: string[]): MmliteError {
  return new MmliteError(`${names.join(', ')}: replicated from some nodes only, and no prepared transaction is left to finish it (an earlier run was killed between one-phase commits, or a prepared transaction of mmlite was committed or rolled back by hand)`, {
    code: ExitCode.Preflight,
    suggestions: [
      `Take it out of tables: and run \`mmlite init\` (it stops being replicated, data stays), make its contents identical on every node (or empty it on all nodes but one), then put it back and run \`mmlite init\` again.`,
    ],
  })
}

/** With every node's lock held: read, merge, write what each node lacks, publish (committed by the caller). */
async function fill(t: TablesCtx, adds: string[], ctx: StepContext, sessions: Map<string, pg.Client>): Promise<ActivationReport> {
  const names = t.cfg.nodes.map(n => n.name)
  const report: ActivationReport = {tables: [], lockMs: 0}
  const inserts = new Map<string, Array<{qualified: string; cols: string[]; key: string[]; rows: string[]; updates: string[]}>>(names.map(n => [n, []]))
  for (const k of adds) {
    const q = tableOf(k).qualified
    const cols = await columns(sessions.get(names[0])!, q)
    const data = new Map<string, Map<string, string>>()
    await Promise.all(names.map(async n => data.set(n, await readRows(sessions.get(n)!, q, cols.key))))
    // the union; a key with two different rows is a conflict, unless the source holds it (its row wins)
    const src = t.source
    const order = src ? [src, ...names.filter(n => n !== src)] : names
    const union = new Map<string, {row: string; from: string}>()
    const overwrite = new Map<string, string[]>(names.map(n => [n, []]))
    const conflicts: string[] = []
    for (const n of order) {
      for (const [key, row] of data.get(n)!) {
        const u = union.get(key)
        if (!u) union.set(key, {row, from: n})
        else if (u.row !== row) {
          if (u.from === src) overwrite.get(n)!.push(u.row)
          else if (conflicts.length < 5) conflicts.push(`key ${key}: ${u.from} has ${u.row}, ${n} has ${row}`)
          else conflicts.push('')
        }
      }
    }
    if (conflicts.length) {
      const n = conflicts.length
      throw new MmliteError(`table ${tableOf(k).display} holds different rows under the same key on different nodes${src ? ` (keys ${src} does not hold)` : ''}; no row was changed and it is not replicated yet`, {
        code: ExitCode.Preflight,
        details: [...conflicts.filter(Boolean), ...(n > 5 ? [`(${n} keys in all)`] : [])],
        suggestions: [
          src
            ? `Make those rows identical, or hold them on ${src} too, then re-run.`
            : `Re-run with --source NODE (alias of --seed) to take that node's row wherever nodes disagree, or make the rows identical. Nodes holding different keys are merged.`,
        ],
      })
    }
    const entry = {table: tableOf(k).display, copied: {} as Record<string, number>, overwritten: {} as Record<string, number>, rows: {} as Record<string, number>}
    for (const n of names) {
      const mine = data.get(n)!
      const missing = [...union].filter(([key]) => !mine.has(key)).map(([, u]) => u.row)
      entry.rows[n] = mine.size
      entry.copied[n] = missing.length
      entry.overwritten[n] = overwrite.get(n)!.length
      if (missing.length || overwrite.get(n)!.length) inserts.get(n)!.push({qualified: q, cols: cols.insert, key: cols.key, rows: missing, updates: overwrite.get(n)!})
    }
    report.tables.push(entry)
  }
  await Promise.all(
    names.map(async n => {
      const s = sessions.get(n)!
      const work = inserts.get(n)!
      if (work.length) for (const q of ORIGIN_SQL) await s.query(q)
      for (const w of work) {
        for (let i = 0; i < w.updates.length; i += BATCH) await s.query(updateSql(w.qualified, w.cols, w.key), [`[${w.updates.slice(i, i + BATCH).join(',')}]`])
        for (let i = 0; i < w.rows.length; i += BATCH) {
          await s.query(insertSql(w.qualified, w.cols), [`[${w.rows.slice(i, i + BATCH).join(',')}]`])
          ctx.progress(`${n}: ${w.qualified} ${Math.min(i + BATCH, w.rows.length)}/${w.rows.length} rows copied`)
        }
      }
      await s.query(addTablesSql(t.cfg.cluster, adds))
    }),
  )
  return report
}

/**
 * The added tables are replicated: in `<cluster>` on every node and known to every
 * subscription (a table an older run published without refreshing is in the publication but
 * not known everywhere: not done).
 */
export async function activated(ctx: StepContext, t: TablesCtx): Promise<boolean> {
  const state = await readState(ctx.cfg, ctx.cluster)
  return [...state.values()].every(s => t.work.adds.every(k => s.shop?.has(k) && s.subs.every(x => x.rels.has(k))))
}

/** Per node: what finishes a killed run's prepared transactions, else the whole activation. */
function activationSql(t: TablesCtx, node: string): string[] {
  const finish = t.leftovers.filter(l => l.holders.includes(node)).map(resolveSql)
  if (t.leftovers.some(l => l.decision === 'commit') || !t.work.adds.length) return finish
  const gid = plannedGid(t.cfg.cluster, 'tables')
  return [
    ...finish,
    'BEGIN',
    XID_SQL,
    lockTimeoutSql(t.timeoutMs),
    ...sessionSetup(t.work.adds),
    `-- once every node holds its lock: rows the other nodes hold and ${node} lacks, if any, under origin ${COPY_ORIGIN} (never sent on):`,
    ...ORIGIN_SQL,
    ...(t.source ? t.work.adds.map(k => updateSql(tableOf(k).qualified, ['…'], ['<key>'])) : []),
    ...t.work.adds.map(k => insertSql(tableOf(k).qualified, ['…'])),
    addTablesSql(t.cfg.cluster, t.work.adds),
    prepareSql(gid),
    '-- once every node has prepared, node by node:',
    commitPreparedSql(gid),
  ]
}

export function activateStep(t: TablesCtx): Step {
  let once: Promise<ActivationReport> | undefined
  const actions: Action[] = t.cfg.nodes.map(n => ({
    node: n.name,
    label: `copy missing rows and start publishing ${t.work.adds.map(k => tableOf(k).display).join(', ')}`,
    sql: activationSql(t, n.name),
    check: async ctx => !(await hasLeftovers(ctx.cfg, ctx.cluster, 'tables')) && (await activated(ctx, t)),
    run: async ctx => {
      once ??= activate(t, ctx).then(r => {
        t.activation = r
        return r
      })
      await once
    },
  }))
  return {id: 'tables-activate', title: `Copy the rows each node lacks and start replicating ${t.work.adds.map(k => tableOf(k).display).join(', ')}`, actions}
}
