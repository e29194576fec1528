import {Flags} from '@oclif/core'
import {existsSync} from 'node:fs'
import {MmliteCommand} from '../ui/base-command.js'
import {runInit, type InitResult} from '../steps/init.js'
import {runWizard} from '../ui/wizard.js'
import {canPrompt} from '../ui/prompts.js'
import {MmliteError, ExitCode} from '../errors.js'
import {recordDisableOnError} from '../config/config.js'
import {connectTimeoutFlag, requireNode, startWaitBudget, timeoutFlag} from '../ui/flags.js'

export default class Init extends MmliteCommand {
  static override summary = 'Build the echo-free full mesh between the nodes of mmlite.yaml.'
  static override description = `Checks every node first (read-only; every problem reported at once, nothing changed if any fails), then creates publications, one slot per directed link, the seed's subscriptions with the initial copy, waits for the copy, creates the remaining subscriptions, and waits until every link streams. Re-running it after a crash or kill finishes the job; on a finished cluster it changes nothing.

Without a configuration file, on a terminal, a wizard asks for the cluster name, the node DSNs and the tables, and writes mmlite.yaml.`

  static override examples = [
    '<%= config.bin %> init --dry-run',
    '<%= config.bin %> init --yes',
    '<%= config.bin %> init --seed node1 --yes',
    '<%= config.bin %> init --no-copy --yes   # nodes restored from one backup',
    '<%= config.bin %> init --disable-on-error --yes',
  ]

  static override flags = {
    seed: Flags.string({
      aliases: ['source'],
      summary: 'Node whose table contents are copied to the others (default: the only node with data, else the first node); for tables added to an initialized cluster (alias --source): its rows win where nodes disagree.',
    }),
    'no-copy': Flags.boolean({summary: 'Nodes already hold identical data (e.g. restored from one backup): copy nothing.', default: false}),
    'fix-settings': Flags.boolean({summary: 'Apply fixes that need no restart (output_plugin_libraries) before checking again.', default: false}),
    'dry-run': Flags.boolean({summary: 'Print the SQL each node would run, change nothing.', default: false}),
    yes: Flags.boolean({char: 'y', summary: 'Do not ask for confirmation.', default: false}),
    timeout: timeoutFlag(600_000, 'the initial copy, links starting to stream'),
    'connect-timeout': connectTimeoutFlag(),
    'disable-on-error': Flags.boolean({
      summary: 'PostgreSQL 15+ subscribers: stop a link on an apply error instead of retrying forever (recorded in mmlite.yaml as disable_on_error: true).',
      default: false,
    }),
  }

  async run(): Promise<InitResult> {
    const {flags} = await this.parse(Init)
    startWaitBudget(flags.timeout)
    const file = this.configPath(flags.config)
    if (!existsSync(file)) {
      if (this.jsonEnabled() || !canPrompt()) {
        throw new MmliteError(`configuration file ${file} not found`, {
          code: ExitCode.Config,
          suggestions: ['Run `mmlite init` on a terminal for the wizard, or write mmlite.yaml (see README.md "Configuration").'],
        })
      }
      await runWizard(file, this.prompts, line => this.out(line))
    }
    if (flags['disable-on-error'] && !flags['dry-run'] && (await recordDisableOnError(file))) {
      this.out(`recorded disable_on_error: true in ${file}`)
    }
    const cfg = this.loadConfig(flags.config)
    if (flags['disable-on-error']) cfg.disableOnError = true
    requireNode(cfg, flags.seed, '--seed')
    const result = await runInit(cfg, {
      seed: flags.seed,
      noCopy: flags['no-copy'],
      fixSettings: flags['fix-settings'],
      dryRun: flags['dry-run'],
      timeoutMs: flags.timeout,
      connectTimeoutMs: flags['connect-timeout'],
      mode: this.renderMode(),
      write: line => this.out(line),
      confirm: plan => this.confirmPlan(plan, `Apply this plan to cluster "${cfg.cluster}" (${cfg.nodes.length} nodes)?`, flags.yes),
    })
    for (const f of result.fixedSettings) this.out(`fixed on ${f.node}: ${f.sql}`)
    if (result.dryRun) {
      this.printDryRun(`Plan for cluster "${cfg.cluster}"${result.seed ? ` (seed: ${result.seed})` : ' (no copy)'}; nothing was changed:`, result.steps)
    } else if (!result.changed) {
      this.out(`Cluster "${cfg.cluster}" is already initialized: nothing to do.`)
    } else {
      this.out(`Cluster "${cfg.cluster}" is initialized: ${result.links.length} links streaming. Run \`mmlite status\` to watch it.`)
    }
    return result
  }
}
