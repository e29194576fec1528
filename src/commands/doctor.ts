import {Flags} from '@oclif/core'
import chalk from 'chalk'
import {MmliteCommand} from '../ui/base-command.js'
import {connectTimeoutFlag} from '../ui/flags.js'
import {exitCodeForDoctor, runDoctor, type DoctorResult} from '../steps/doctor/doctor.js'

export default class Doctor extends MmliteCommand {
  static override summary = 'Find every risk to a healthy mesh before it bites, each with its fix.'

  static override description = `Checks every node read-only and concurrently: links (slots, subscriptions, disabled, apply errors, PG 18 conflicts), WAL kept by slots (max_slot_wal_keep_size, slots near or past invalidation, a forecast for inactive ones), replicated tables without a primary key or usable replica identity, sequences that hand out the same values on two nodes, the output plugin allowed where needed, track_commit_timestamp, server minors with known replication bugs, objects named like the cluster that belong to no node, and unfinished operations.

Each finding has a severity, the node and object, and the exact SQL or configuration change that fixes it. --fix applies the fixes that are safe to automate (stagger sequences, drop orphan slots that are not in use, reset the counters of links that apply again) after showing them; --dry-run prints their SQL per node.

Exit code as status: 0 ok, 1 warning, 2 critical, 3 unknown (no node reachable).`

  static override examples = ['<%= config.bin %> doctor', '<%= config.bin %> doctor --json', '<%= config.bin %> doctor --fix --dry-run', '<%= config.bin %> doctor --fix --yes']

  static override flags = {
    fix: Flags.boolean({summary: 'Apply the fixes that are safe to automate (asks first; --yes to skip).', default: false}),
    'dry-run': Flags.boolean({summary: 'With or without --fix: print the SQL the fixes would run per node; change nothing.', default: false}),
    yes: Flags.boolean({char: 'y', summary: 'Do not ask for confirmation.', default: false}),
    'connect-timeout': connectTimeoutFlag(5_000),
    sample: Flags.integer({summary: 'Seconds to watch each node\'s WAL position to measure its WAL rate.', default: 2, min: 0, max: 600}),
  }

  async run(): Promise<DoctorResult> {
    const {flags} = await this.parse(Doctor)
    const cfg = this.loadConfig(flags.config)
    const result = await runDoctor(cfg, {
      connectTimeoutMs: flags['connect-timeout'],
      sampleMs: flags.sample * 1000,
      fix: flags.fix,
      dryRun: flags['dry-run'],
      mode: this.renderMode(),
      write: line => this.out(line),
      confirm: (plan, findings) =>
        this.confirmPlan(plan, `Apply these fixes to cluster "${cfg.cluster}"?`, flags.yes, () => {
          for (const f of findings.filter(x => x.autoFix)) this.out(`${f.severity.toUpperCase()} ${f.node ?? 'cluster'}  ${f.object}: ${f.message}`)
        }),
    })
    process.exitCode = exitCodeForDoctor(result.health)
    if (this.jsonEnabled()) return result
    this.printFindings(result)
    if (result.fix) {
      const planned = result.fix.steps.filter(s => s.status !== 'already-done')
      if (!planned.length) this.out('Nothing that --fix automates needs doing.')
      else if (result.fix.dryRun) {
        this.printDryRun('Fixes --fix would apply (nothing was changed):', planned)
      } else this.out(`Applied: ${planned.map(s => s.id).join(', ')}. Run mmlite doctor again to check.`)
      for (const n of result.fix.notDone) this.out(`note: ${n}`)
    }
    return result
  }

  private printFindings(r: DoctorResult): void {
    const colour = {critical: chalk.red, warning: chalk.yellow, info: chalk.dim}
    const unreachable = r.nodes.filter(n => !n.reachable).map(n => n.name)
    this.out(`cluster ${r.cluster}: ${r.health.toUpperCase()} — ${r.findings.length} finding(s) on ${r.nodes.length - unreachable.length}/${r.nodes.length} node(s) checked`)
    for (const f of r.findings) {
      this.out(`${colour[f.severity](f.severity.toUpperCase().padEnd(8))} ${f.node ?? 'cluster'}  ${f.object}: ${f.message}`)
      this.out(`         fix: ${f.fix}`)
    }
  }
}

