import {Flags} from '@oclif/core'
import {MmliteCommand} from '../ui/base-command.js'
import {stateDir} from '../engine/journal.js'
import {runVerify} from '../steps/verify/verify.js'
import {cutLists, renderVerify, verifyExitCode} from '../steps/verify/report.js'
import type {VerifyResult} from '../steps/verify/types.js'
import {selectTables, verifyFlags} from '../steps/verify/flags.js'

export default class Verify extends MmliteCommand {
  static override summary = 'Compare every replicated table on all nodes and name exactly the rows that differ.'

  static override description = `Every node hashes ranges of the primary key at once (one pass over each table per node); only ranges that differ are read row by row. Rows are compared in a canonical text form that no node setting changes. A difference caused only by replication lag is not reported: verify waits until every link has applied what was committed when it read, then reads the differing keys again; rows still changing after a few rounds are reported apart as unsettled. A node that is down is named and the others are compared.

Exit code: 0 consistent, 1 unsettled rows only, 2 divergent rows, 3 could not compare (a node down, a table that cannot be compared); 10 for bad flags or configuration.`

  static override examples = ['<%= config.bin %> verify', '<%= config.bin %> verify --table public.users --json', '<%= config.bin %> verify --block-rows 5000 --jobs 2']

  static override flags = {...verifyFlags, limit: Flags.integer({summary: 'Print at most this many rows per list and table (the full lists go to .mmlite/verify-<time>.json).', default: 20, min: 1})}

  async run(): Promise<VerifyResult> {
    const {flags} = await this.parse(Verify)
    const cfg = this.loadConfig(flags.config)
    const tables = selectTables(cfg, flags.table)
    const r = await runVerify(cfg, {
      tables,
      blockRows: flags['block-rows'],
      jobs: flags.jobs,
      settleRounds: flags['settle-rounds'],
      settleTimeoutMs: flags['settle-timeout'] * 1000,
      progress: this.jsonEnabled() ? undefined : l => process.stderr.write(`${l}\n`),
    })
    await cutLists(r, flags.limit, stateDir(cfg.file))
    if (!this.jsonEnabled()) for (const l of renderVerify(r)) this.out(l)
    process.exitCode = verifyExitCode(r.status)
    return r
  }
}
