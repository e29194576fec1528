/** Settings: the output plugin allowed where a link needs it; track_commit_timestamp for repair --policy newest. */
import {edgeMechanism, slotPlugin} from '../../../cluster/capabilities.js'
import {pluginLibrariesFix} from '../../preflight.js'
import type {DoctorInput, Finding} from '../types.js'

export function checkSettings(input: DoctorInput): Finding[] {
  const out: Finding[] = []
  const facts = new Map(input.nodes.filter(n => n.facts).map(n => [n.name, n.facts!]))
  for (const [name, f] of facts) {
    if (f.outputPluginLibraries) {
      const needed = [...new Set([...facts.values()].filter(o => o.name !== name).map(o => slotPlugin(edgeMechanism(f.versionNum, o.versionNum))))]
      const fix = pluginLibrariesFix(f.outputPluginLibraries, needed)
      if (fix) {
        out.push({
          check: 'settings',
          severity: 'critical',
          node: name,
          object: 'output_plugin_libraries',
          message: `${name} does not allow the output plugin(s) ${fix.missing.join(', ')} its outbound links use: their walsenders fail to start`,
          fix: fix.sql,
        })
      }
    }
    if (!f.trackCommitTimestamp) {
      out.push({
        check: 'settings',
        severity: 'info',
        node: name,
        object: 'track_commit_timestamp',
        message: `track_commit_timestamp is off on ${name}: \`mmlite repair --policy newest\` cannot tell which version of a row is newest`,
        fix: `ALTER SYSTEM SET track_commit_timestamp = on;  -- then restart PostgreSQL on ${name}`,
      })
    }
  }
  return out
}
