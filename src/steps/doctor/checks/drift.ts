/** Schema drift: a replicated table whose columns, types, primary key or replica identity differ between nodes (src/cluster/drift.ts). */
import {compareShapes, DRIFT_FIX, type TableShape} from '../../../cluster/drift.js'
import type {DoctorInput, Finding} from '../types.js'

export function checkDrift(input: DoctorInput): Finding[] {
  const shapes = new Map<string, (TableShape | null)[]>()
  for (const n of input.nodes) if (n.facts?.shapes) shapes.set(n.name, n.facts.shapes)
  return compareShapes(input.cfg.tables, shapes).map(d => ({
    check: 'drift',
    severity: 'warning',
    node: d.nodes[1],
    object: d.table,
    message: `${d.table} differs between ${d.nodes[0]} and ${d.nodes[1]}: ${d.difference} (rows that need the difference fail to apply, or lose a column's values)`,
    fix: DRIFT_FIX,
  }))
}
