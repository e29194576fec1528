/**
 * Sequences that feed a replicated table's column (serial, identity, or a nextval() default)
 * hand out the same values on two nodes unless every node draws from its own residue class:
 * one INCREMENT BY S on every node (S larger than the node count, with room for growth) and
 * a different `next value mod S` on each node. Then default-keyed inserts on every node at
 * once can never collide.
 */
import type {DoctorInput, Finding, SequenceFact} from '../types.js'

export interface SequenceGroup {
  table: string
  qualified: string
  column: string
  /** node name → that node's sequence for the column */
  perNode: Map<string, SequenceFact>
}

export function groupSequences(input: DoctorInput): SequenceGroup[] {
  const groups = new Map<string, SequenceGroup>()
  for (const n of input.nodes) {
    for (const s of n.facts?.sequences ?? []) {
      const key = `${s.qualified}\u0000${s.column}`
      let g = groups.get(key)
      if (!g) groups.set(key, (g = {table: s.table, qualified: s.qualified, column: s.column, perNode: new Map()}))
      g.perNode.set(n.name, s)
    }
  }
  return [...groups.values()]
}

/** The stride for `nodes` nodes: a power of ten at least twice the node count (room to add nodes), at least 10. */
export function strideFor(nodes: number): number {
  let s = 10
  while (s < 2 * nodes) s *= 10
  return s
}

function mod(a: bigint, m: bigint): bigint {
  const r = a % m
  return r < 0n ? r + m : r
}

/** The residue class each node draws from; undefined when the sequences do not stagger. */
export function residues(g: SequenceGroup, nodeCount: number): Map<string, number> | undefined {
  const seqs = [...g.perNode.values()]
  if (seqs.length === 0) return undefined
  const inc = seqs[0].increment
  if (inc <= 0 || seqs.some(s => s.increment !== inc) || inc < nodeCount) return undefined
  const out = new Map<string, number>()
  const seen = new Set<number>()
  for (const [node, s] of g.perNode) {
    const r = Number(mod(BigInt(s.next_value), BigInt(inc)))
    if (seen.has(r)) return undefined
    seen.add(r)
    out.set(node, r)
  }
  return out
}

export function checkSequences(input: DoctorInput): Finding[] {
  const out: Finding[] = []
  const nodeCount = input.cfg.nodes.length
  if (nodeCount < 2) return out
  for (const g of groupSequences(input)) {
    const nodes = [...g.perNode.keys()]
    if (nodes.length < 2) continue
    if (residues(g, nodeCount)) continue
    const descr = nodes.map(n => `${n}: ${g.perNode.get(n)!.sequence} increment ${g.perNode.get(n)!.increment}, next ${g.perNode.get(n)!.next_value}`).join('; ')
    const stride = strideFor(nodeCount)
    out.push({
      check: 'sequences',
      severity: 'warning',
      node: null,
      object: `${g.table}.${g.column}`,
      message: `the sequences that fill ${g.table}.${g.column} hand out the same values on several nodes (${descr}): rows inserted with the default on two nodes collide and stop replication`,
      fix: `mmlite doctor --fix staggers them: INCREMENT BY ${stride} on every node, node k of mmlite.yaml drawing values ≡ k (mod ${stride}), each restarted above every node's current maximum`,
      autoFix: 'stagger-sequences',
    })
  }
  return out
}
