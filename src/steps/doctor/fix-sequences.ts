/**
 * `doctor --fix`: stagger the sequences of replicated tables. Node k of mmlite.yaml (k = 1..N)
 * draws from residue class k modulo a stride S (a power of ten ≥ 2N, ≥ 10, so nodes can be added
 * without restaggering): ALTER SEQUENCE ... INCREMENT BY S RESTART WITH base + k, where base is a
 * multiple of S above every node's column maximum and every node's next sequence value, plus a
 * margin of 1000 strides for the values handed out between planning and running. Each action
 * re-checks on its node that nothing has reached its target before it alters the sequence, so a
 * plan overtaken by writes stops instead of restarting a sequence below existing keys.
 */
import type {Cluster} from '../../cluster/cluster.js'
import {MmliteError, ExitCode} from '../../errors.js'
import type {Action, Step} from '../../engine/types.js'
import {escapeIdentifier} from '../../db/quote.js'
import {groupSequences, residues, strideFor, type SequenceGroup} from './checks/sequences.js'
import type {DoctorInput} from './types.js'

export const MARGIN_STRIDES = 1000n

export interface SequencePlan {
  table: string
  column: string
  stride: number
  base: string
  nodes: Array<{node: string; sequence: string; residue: number; restartWith: string}>
}

export async function columnMax(cluster: Cluster, node: string, g: Pick<SequenceGroup, 'qualified' | 'column'>): Promise<bigint | null> {
  const r = await cluster.node(node).one<{m: string | null}>(`SELECT pg_catalog.max(${escapeIdentifier(g.column)})::pg_catalog.text AS m FROM ${g.qualified}`)
  return r?.m === null || r?.m === undefined ? null : BigInt(r.m)
}

async function nextValue(cluster: Cluster, node: string, sequence: string): Promise<{next: bigint; increment: bigint}> {
  const r = (await cluster.node(node).one<{last_value: string; is_called: boolean; inc: string}>(
    `SELECT s.last_value::pg_catalog.text AS last_value, s.is_called,
            (SELECT q.seqincrement::pg_catalog.text FROM pg_catalog.pg_sequence q WHERE q.seqrelid = ${sqlRegclass(sequence)}) AS inc
       FROM ${sequence} s`,
  ))!
  const inc = BigInt(r.inc)
  return {next: r.is_called ? BigInt(r.last_value) + inc : BigInt(r.last_value), increment: inc}
}

function sqlRegclass(qualifiedSequence: string): string {
  return `'${qualifiedSequence.replace(/'/g, "''")}'::pg_catalog.regclass`
}

/** Plans for every group that is not staggered; throws when some node cannot be read or a target overflows. */
export async function planSequenceFixes(input: DoctorInput, cluster: Cluster): Promise<SequencePlan[]> {
  const n = input.cfg.nodes.length
  const stride = strideFor(n)
  const plans: SequencePlan[] = []
  for (const g of groupSequences(input)) {
    if (g.perNode.size < 2 || residues(g, n)) continue
    const missing = input.cfg.nodes.filter(x => !g.perNode.has(x.name)).map(x => x.name)
    if (missing.length) {
      throw new MmliteError(`cannot stagger the sequences of ${g.table}.${g.column}: no sequence feeds it on ${missing.join(', ')} (or the node is unreachable)`, {
        code: ExitCode.Preflight,
        suggestions: ['Every node must be reachable and fill the column from a sequence; fix the schema drift first (mmlite doctor lists it).'],
      })
    }
    let max = 0n
    for (const [node, s] of g.perNode) {
      const m = await columnMax(cluster, node, g)
      const cur = BigInt(s.next_value) - 1n
      for (const v of [m, cur]) if (v !== null && v > max) max = v
    }
    const S = BigInt(stride)
    const base = (max / S + 1n + MARGIN_STRIDES) * S
    const nodes = input.cfg.nodes.map((x, i) => {
      const s = g.perNode.get(x.name)!
      const restartWith = base + BigInt(i + 1)
      if (restartWith > BigInt(s.max_value)) {
        throw new MmliteError(`cannot stagger ${s.sequence} on ${x.name}: ${restartWith} is above its MAXVALUE ${s.max_value}`, {
          code: ExitCode.Preflight,
          suggestions: [`Widen the column and the sequence first (e.g. mmlite ddl "ALTER SEQUENCE ${s.sequence} AS bigint").`],
        })
      }
      return {node: x.name, sequence: s.sequence, residue: i + 1, restartWith: restartWith.toString()}
    })
    plans.push({table: g.table, column: g.column, stride, base: base.toString(), nodes})
  }
  return plans
}

function staggerAction(p: SequencePlan, n: SequencePlan['nodes'][number], g: {qualified: string; column: string}): Action {
  const sql = `ALTER SEQUENCE ${n.sequence} INCREMENT BY ${p.stride} RESTART WITH ${n.restartWith}`
  return {
    node: n.node,
    label: `stagger ${n.sequence}: values ≡ ${n.residue} (mod ${p.stride})`,
    sql: [sql],
    async check(ctx) {
      const {next, increment} = await nextValue(ctx.cluster, n.node, n.sequence)
      return increment === BigInt(p.stride) && ((next % increment) + increment) % increment === BigInt(n.residue)
    },
    async run(ctx) {
      const target = BigInt(n.restartWith)
      const {next} = await nextValue(ctx.cluster, n.node, n.sequence)
      const m = await columnMax(ctx.cluster, n.node, g)
      if (next > target || (m !== null && m >= target)) {
        throw new MmliteError(`${n.sequence} on ${n.node} has moved past the planned restart value ${n.restartWith} since the plan was made`, {
          code: ExitCode.Failed,
          suggestions: ['Re-run mmlite doctor --fix: it plans again from the current maxima.'],
        })
      }
      await ctx.cluster.node(n.node).query(sql)
    },
  }
}

export function staggerStep(plans: SequencePlan[], input: DoctorInput): Step {
  const groups = groupSequences(input)
  return {
    id: 'stagger-sequences',
    title: 'Stagger the sequences of replicated tables (one residue class per node)',
    actions: plans.flatMap(p => {
      const g = groups.find(x => x.table === p.table && x.column === p.column)!
      return p.nodes.map(n => staggerAction(p, n, g))
    }),
  }
}
