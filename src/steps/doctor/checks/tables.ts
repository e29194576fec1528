/** Replicated tables that cannot replicate UPDATE/DELETE exactly: no primary key, no usable replica identity. */
import type {DoctorInput, Finding} from '../types.js'

export function checkTables(input: DoctorInput): Finding[] {
  const out: Finding[] = []
  for (const n of input.nodes) {
    for (const t of n.facts?.tables ?? []) {
      const base = {check: 'tables', node: n.name, object: t.table}
      if (!t.exists) {
        out.push({...base, severity: 'critical', message: `replicated table ${t.table} does not exist on ${n.name}: changes to it from other nodes fail to apply`, fix: `Create ${t.table} on ${n.name} with the same columns as on the other nodes (mmlite ddl "CREATE TABLE ..." runs it everywhere).`})
        continue
      }
      const usable = (t.replident === 'd' && t.has_pk) || t.replident === 'f' || (t.replident === 'i' && t.has_identity_index)
      if (!usable) {
        const why = t.replident === 'n' ? 'its replica identity is NOTHING' : t.replident === 'i' ? 'its replica identity index is missing or invalid' : 'it has no primary key'
        out.push({
          ...base,
          severity: 'critical',
          message: `${t.table} on ${n.name} cannot replicate UPDATE or DELETE: ${why} (they fail on the publisher, or stop the link)`,
          fix: `ALTER TABLE ${t.qualified} ADD PRIMARY KEY (<columns>);  -- or: ALTER TABLE ${t.qualified} REPLICA IDENTITY USING INDEX <unique index on NOT NULL columns>`,
        })
      } else if (t.replident === 'f') {
        out.push({...base, severity: 'info', message: `${t.table} on ${n.name} uses REPLICA IDENTITY FULL: every UPDATE/DELETE is located by a scan of the subscriber's table`, fix: `Add a primary key, then ALTER TABLE ${t.qualified} REPLICA IDENTITY DEFAULT;`})
      }
    }
  }
  return out
}

