import {Args, Flags} from '@oclif/core'
import {readFileSync} from 'node:fs'
import {MmliteCommand} from '../ui/base-command.js'
import {connectTimeoutFlag, timeoutFlag} from '../ui/flags.js'
import {runDdl, type DdlResult} from '../steps/ddl/index.js'
import {classifyScript} from '../steps/ddl/classify.js'
import {MmliteError, ExitCode} from '../errors.js'

export default class Ddl extends MmliteCommand {
  static override summary = 'Run DDL on every node in an order that keeps the links streaming.'

  static override description = `Additive statements (CREATE TABLE, CREATE INDEX, ALTER TABLE ... ADD COLUMN nullable or with a constant default) run on every node in one transaction per node, committed everywhere only once every node has run them, so no node sends rows the others cannot apply yet. A statement that fails on any node rolls back every node. Anything else (DROP, RENAME, type changes, UNIQUE, unknown statements) is refused with the reason and a safe sequence unless --force. Killed at any point, re-running the same command finishes the job.`

  static override examples = [
    `<%= config.bin %> ddl "ALTER TABLE public.users ADD COLUMN note text" --dry-run`,
    `<%= config.bin %> ddl --file migration.sql --yes`,
  ]

  static override args = {
    statement: Args.string({description: 'SQL statement(s); or use --file.', required: false}),
  }

  static override flags = {
    file: Flags.string({char: 'f', summary: 'Read the statements from this file.'}),
    force: Flags.boolean({summary: 'Run statements that are not additive (the refusal explains the risk).', default: false}),
    'dry-run': Flags.boolean({summary: 'Print the SQL each node would run, change nothing.', default: false}),
    yes: Flags.boolean({char: 'y', summary: 'Do not ask for confirmation.', default: false}),
    timeout: timeoutFlag(60_000, 'table locks on the nodes, links streaming'),
    'connect-timeout': connectTimeoutFlag(),
  }

  async run(): Promise<DdlResult> {
    const {args, flags} = await this.parse(Ddl)
    if (Boolean(args.statement) === Boolean(flags.file)) {
      throw new MmliteError('give the statement(s) either as an argument or with --file, not both or neither', {code: ExitCode.Config})
    }
    let text = args.statement ?? ''
    if (flags.file) {
      try {
        text = readFileSync(flags.file, 'utf8')
      } catch (e) {
        throw new MmliteError(`cannot read ${flags.file}: ${(e as Error).message}`, {code: ExitCode.Config})
      }
    }
    const cfg = this.loadConfig(flags.config)
    const statements = classifyScript(text)
    const result = await runDdl(cfg, {
      statements,
      force: flags.force,
      dryRun: flags['dry-run'],
      timeoutMs: flags.timeout,
      connectTimeoutMs: flags['connect-timeout'],
      mode: this.renderMode(),
      write: line => this.out(line),
      confirm: plan => this.confirmPlan(plan, `Run ${statements.length} statement(s) on every node of cluster "${cfg.cluster}"?`, flags.yes),
    })
    if (this.jsonEnabled()) return result
    for (const s of result.statements) if (s.kind === 'destructive') this.out(`--force: ${s.sql.split('\n')[0]}: ${s.reason}`)
    if (result.dryRun) {
      this.printDryRun(`Plan for cluster "${cfg.cluster}"; nothing was changed:`, result.steps)
    } else if (!result.changed) this.out('Every node already has these changes: nothing to do.')
    else this.out(`Done on ${cfg.nodes.length} nodes; every link streams.`)
    return result
  }
}
