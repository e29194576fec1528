import {Flags} from '@oclif/core'
import {MmliteCommand} from '../ui/base-command.js'
import {stateDir} from '../engine/journal.js'
import {ExitCode, MmliteError} from '../errors.js'
import {selectTables, verifyFlags} from '../steps/verify/flags.js'
import {renderVerify, verifyExitCode} from '../steps/verify/report.js'
import {runRepair, type RepairResult} from '../steps/repair/repair.js'

export default class Repair extends MmliteCommand {
  static override summary = 'Make every other node match one node (or the newest version) on the rows verify finds divergent.'

  static override description = `Runs verify, then for every divergent row makes the other nodes equal to the kept version: INSERT where it is missing, UPDATE where it differs, DELETE where the kept version is absent. --from NODE keeps NODE's version (NODE is never written); --policy newest keeps, per row, the present version with the latest commit timestamp (needs track_commit_timestamp = on on every node).

Repair writes never travel: they are applied under the replication origin mmlite_repair (which the subscriptions filter out), with session_replication_role = replica (user and foreign-key triggers do not fire, as for replicated changes), in transactions of 100 rows; a row that changed since verify read it is skipped. Every change is recorded with the row it replaced in .mmlite/repair-<time>.jsonl before it is committed. Unsettled rows are not repaired. Afterwards verify runs again.

Exit code: 0 when verify is consistent afterwards (or --dry-run), else verify's code (1: unsettled rows were left alone); 10 bad flags, 11 preflight (track_commit_timestamp), 13 a node unreachable (nothing changed), 14 not confirmed.`

  static override examples = [
    '<%= config.bin %> repair --from node1 --dry-run',
    '<%= config.bin %> repair --from node1 --table public.users --yes',
    '<%= config.bin %> repair --policy newest --yes --json',
  ]

  static override flags = {
    ...verifyFlags,
    from: Flags.string({summary: 'Keep this node\'s version of every divergent row.'}),
    policy: Flags.string({summary: 'from (keep --from NODE\'s version) or newest (latest commit timestamp per row).', options: ['from', 'newest'], default: 'from'}),
    'dry-run': Flags.boolean({summary: 'Print the exact statements per node; change nothing.'}),
    yes: Flags.boolean({char: 'y', summary: 'Do not ask for confirmation.'}),
  }

  async run(): Promise<RepairResult> {
    const {flags} = await this.parse(Repair)
    const policy = flags.policy as 'from' | 'newest'
    if (policy === 'from' && !flags.from) throw new MmliteError('say which node to copy from: --from NODE (or --policy newest)', {code: ExitCode.Config})
    if (policy === 'newest' && flags.from) throw new MmliteError('--from and --policy newest exclude each other', {code: ExitCode.Config})
    const cfg = this.loadConfig(flags.config)
    const r = await runRepair(cfg, {
      tables: selectTables(cfg, flags.table),
      blockRows: flags['block-rows'],
      jobs: flags.jobs,
      settleRounds: flags['settle-rounds'],
      settleTimeoutMs: flags['settle-timeout'] * 1000,
      progress: this.jsonEnabled() ? undefined : l => process.stderr.write(`${l}\n`),
      policy,
      from: flags.from,
      dryRun: flags['dry-run'],
      stateDir: stateDir(cfg.file),
      confirm: async summary => this.confirmOrFail(`Repair: ${summary}?`, flags.yes),
    })
    if (!this.jsonEnabled()) this.render(r)
    // nothing applied (nothing to do, or only unsettled rows): verify's own code
    process.exitCode = r.dryRun ? 0 : verifyExitCode((r.after ?? r.before).status)
    return r
  }

  private render(r: RepairResult): void {
    if (r.unsettled) this.out(`${r.unsettled} unsettled row(s) are not repaired (re-run when writes on them have settled)`)
    if (r.script) {
      if (Object.keys(r.script).length === 0) this.out('nothing to repair')
      for (const [node, stmts] of Object.entries(r.script)) {
        this.out(`-- on ${node}:`)
        for (const s of stmts) this.out(`${s};`)
      }
      return
    }
    if (r.changes.length === 0) {
      this.out('nothing to repair')
      return
    }
    for (const c of r.changes) this.out(`${c.node}: ${c.action} ${c.table} (${Object.entries(c.key).map(([k, v]) => `${k}=${v}`).join(', ')}) from ${c.source}`)
    for (const c of r.skipped) this.out(`${c.node}: SKIPPED ${c.table} (${Object.values(c.key).join(', ')}): changed since verify read it`)
    this.out(`repaired ${r.applied} row(s); audit: ${r.auditFile}`)
    if (r.after) for (const l of renderVerify(r.after)) this.out(l)
  }
}
