/** Flags shared by verify and repair, and --table selection. */
import {Flags} from '@oclif/core'
import type {Config} from '../../config/config.js'
import {parseTableName, type TableName} from '../../config/tables.js'
import {MmliteError, ExitCode} from '../../errors.js'

export const verifyFlags = {
  table: Flags.string({summary: 'Only this table (schema.table, as in mmlite.yaml); repeatable.', multiple: true}),
  'block-rows': Flags.integer({summary: 'About this many rows per hashed key range (a differing range is read row by row).', default: 100, min: 10}),
  jobs: Flags.integer({summary: 'Tables compared at once (each uses one session per node).', default: 2, min: 1, max: 16}),
  'settle-rounds': Flags.integer({summary: 'Re-reads of differing rows before they are reported unsettled.', default: 4, min: 1}),
  'settle-timeout': Flags.integer({summary: 'Seconds to wait, per round, for every link to apply what was committed.', default: 60, min: 1}),
}

export function selectTables(cfg: Config, wanted?: string[]): TableName[] {
  if (!wanted?.length) return cfg.tables
  const out: TableName[] = []
  for (const w of wanted) {
    let t: TableName
    try {
      t = parseTableName(w)
    } catch (e) {
      throw new MmliteError(`--table ${w}: ${(e as Error).message}`, {code: ExitCode.Config})
    }
    const found = cfg.tables.find(c => c.qualified === t.qualified)
    if (!found) {
      throw new MmliteError(`table ${t.display} is not replicated by this cluster (not in ${cfg.file})`, {
        code: ExitCode.Config,
        suggestions: [`Replicated tables: ${cfg.tables.map(x => x.display).join(', ')}`],
      })
    }
    if (!out.includes(found)) out.push(found)
  }
  return out
}
