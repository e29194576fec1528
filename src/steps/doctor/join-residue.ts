/**
 * add-node: when the cluster's sequences are staggered (`doctor --fix`), the joining node X gets
 * its own residue class: for every staggered sequence of a replicated table, X's sequence is set
 * to the same INCREMENT BY S and restarted at a multiple of S above every node's maximum plus the
 * smallest residue no member uses. Without it a node joined by the standby strategy would hand
 * out exactly its source's values (a physical clone inherits the source's sequences), and one
 * joined by copy would start from its own initial values. Sequences that are not staggered are
 * left alone (doctor reports them).
 */
import type {Cluster} from '../../cluster/cluster.js'
import type {Config} from '../../config/config.js'
import type {Action, Step} from '../../engine/types.js'
import {readSequences} from './collect.js'
import {groupSequences, residues} from './checks/sequences.js'
import {columnMax, MARGIN_STRIDES} from './fix-sequences.js'
import type {DoctorInput, NodeResult} from './types.js'

interface JoinPlan {
  sequence: string
  qualified: string
  column: string
  stride: number
  residue: number
}

async function plan(cfg: Config, cluster: Cluster, x: string, members: string[]): Promise<JoinPlan[]> {
  const schemas = cfg.tables.map(t => t.schema)
  const names = cfg.tables.map(t => t.name)
  const read = async (n: string): Promise<NodeResult> => ({name: n, reachable: true, facts: {sequences: await readSequences(cluster.node(n), cfg, schemas, names)} as NodeResult['facts']})
  const memberInput: DoctorInput = {cfg, unfinished: [], nodes: await Promise.all(members.map(read))}
  const xSeqs = (await read(x)).facts!.sequences
  const out: JoinPlan[] = []
  for (const g of groupSequences(memberInput)) {
    const used = residues(g, members.length)
    const mine = xSeqs.find(s => s.qualified === g.qualified && s.column === g.column)
    if (!used || !mine) continue
    const stride = [...g.perNode.values()][0].increment
    const taken = new Set(used.values())
    const next = BigInt(mine.next_value)
    const cur = Number(((next % BigInt(stride)) + BigInt(stride)) % BigInt(stride))
    if (mine.increment === stride && !taken.has(cur)) continue // already in a class of its own
    const free = [...Array(stride).keys()].map(i => (i + 1) % stride).find(r => !taken.has(r))
    if (free === undefined) throw new Error(`no free residue class left in ${g.table}.${g.column} (stride ${stride}): run mmlite doctor --fix to restagger with a larger stride`)
    out.push({sequence: mine.sequence, qualified: g.qualified, column: g.column, stride, residue: free})
  }
  return out
}

function joinAction(cfg: Config, x: string, members: () => string[]): Action {
  return {
    node: x,
    label: `give ${x} its own residue class in the staggered sequences`,
    sql: [`-- for each staggered sequence of a replicated table: ALTER SEQUENCE <sequence> INCREMENT BY <S> RESTART WITH <multiple of S above every node's maximum> + <residue no member uses>`],
    async check(ctx) {
      return (await plan(cfg, ctx.cluster, x, members())).length === 0
    },
    async run(ctx) {
      for (const p of await plan(cfg, ctx.cluster, x, members())) {
        let max = 0n
        for (const n of [...members(), x]) {
          const m = await columnMax(ctx.cluster, n, p)
          if (m !== null && m > max) max = m
          const seqs = await readSequences(ctx.cluster.node(n), cfg, cfg.tables.map(t => t.schema), cfg.tables.map(t => t.name))
          const s = seqs.find(q => q.qualified === p.qualified && q.column === p.column)
          if (s && BigInt(s.next_value) - 1n > max) max = BigInt(s.next_value) - 1n
        }
        const S = BigInt(p.stride)
        const restart = (max / S + 1n + MARGIN_STRIDES) * S + BigInt(p.residue)
        await ctx.cluster.node(x).query(`ALTER SEQUENCE ${p.sequence} INCREMENT BY ${p.stride} RESTART WITH ${restart}`)
        ctx.note(`${x}: ${p.sequence} draws values ≡ ${p.residue} (mod ${p.stride}) from ${restart} on`)
      }
    },
  }
}

/** The step, for add-node's procedure: X and the members it joins (read when the step runs). */
export function joinResidueStep(cfg: Config, x: string, members: () => string[]): Step {
  return {id: 'sequence-residue', title: `Give ${x} its own residue class in staggered sequences`, actions: [joinAction(cfg, x, members)]}
}
