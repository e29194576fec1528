import {Flags} from '@oclif/core'
import {MmliteCommand} from '../ui/base-command.js'
import {auditFile, runSkipTx, type SkipTxResult} from '../steps/skip-tx.js'
import {MmliteError, ExitCode} from '../errors.js'
import {connectTimeoutFlag, requireNode, startWaitBudget, timeoutFlag} from '../ui/flags.js'

export default class SkipTx extends MmliteCommand {
  static override summary = 'Show the transaction that blocks a link, and skip exactly it.'

  static override description = `Finds links whose subscriber fails to apply a change (apply errors counted and the link not moving, the apply worker restarting, or the subscription disabled by disable_on_error), decodes the transaction that blocks each one from a temporary copy of the publisher's slot (nothing is changed while looking), and shows it: origin node, xid, commit time, final LSN, its changes and the local rows they collide with.

After confirmation (or with --yes) it skips exactly that transaction: ALTER SUBSCRIPTION ... SKIP (lsn = <final LSN>) on PostgreSQL 15+ (re-enabling a subscription that disable_on_error stopped), or on 14 and older disable, advance the subscription's origin past the transaction's commit, enable. Then it watches the link: if the next transaction fails too, it is shown and skipped the same way, up to --max per link.

Every skipped transaction is appended, with all its changes, to .mmlite/skipped.jsonl next to the configuration, and a SQL file that re-applies its changes on the subscriber (not sent on to the other nodes) is written to .mmlite/skipped/.

When mmlite cannot tell which transaction fails (a link with streaming = parallel, where a streamed transaction can fail ahead of smaller ones committed before it, and the subscriber's log is not readable over SQL), it skips nothing on that link and says what to do (set streaming = on: \`mmlite init\` does).

Exit code: 0 nothing stuck or every link streams again; 2 a link is still stuck (after --max skips), mmlite cannot tell which transaction fails, or a command failed; 14 not confirmed.`

  static override examples = [
    '<%= config.bin %> skip-tx --dry-run',
    '<%= config.bin %> skip-tx --from node1 --to node2',
    '<%= config.bin %> skip-tx --yes --max 3',
  ]

  static override flags = {
    from: Flags.string({summary: 'Only links from this node (the publisher).'}),
    to: Flags.string({summary: 'Only links into this node (the subscriber). --node is a deprecated alias.', aliases: ['node'], deprecateAliases: true}),
    max: Flags.integer({summary: 'Transactions to skip per link without asking again when the next one fails too.', default: 1, min: 1}),
    'dry-run': Flags.boolean({summary: 'Show what would be skipped and the SQL; skip nothing.', default: false}),
    yes: Flags.boolean({char: 'y', summary: 'Do not ask for confirmation.', default: false}),
    timeout: timeoutFlag(120_000, 'skips taking effect, apply workers running again'),
    'connect-timeout': connectTimeoutFlag(),
    method: Flags.string({
      summary: 'internal: force the skip method (origin-advance is what PostgreSQL 14 and older get).',
      options: ['skip-lsn', 'origin-advance'],
      hidden: true,
    }),
  }

  async run(): Promise<SkipTxResult> {
    const {flags} = await this.parse(SkipTx)
    startWaitBudget(flags.timeout)
    const cfg = this.loadConfig(flags.config)
    requireNode(cfg, flags.from, '--from')
    requireNode(cfg, flags.to, '--to')
    if (flags.from !== undefined && flags.from === flags.to) {
      throw new MmliteError(`--from ${flags.from} --to ${flags.to} names no link: a node does not replicate to itself`, {
        code: ExitCode.Config,
        suggestions: ['Give two different nodes (the publisher with --from, the subscriber with --to), or only one of them.'],
      })
    }
    const result = await runSkipTx(cfg, {
      node: flags.to,
      from: flags.from,
      max: flags.max,
      dryRun: flags['dry-run'],
      method: flags.method as 'skip-lsn' | 'origin-advance' | undefined,
      timeoutMs: flags.timeout,
      connectTimeoutMs: flags['connect-timeout'],
      write: line => this.out(line),
      confirm: async stuck => {
        const n = stuck.length
        await this.confirmOrFail(`Skip ${n === 1 ? 'this transaction' : `these ${n} transactions`}? (${n === 1 ? 'its' : 'their'} changes are recorded in ${auditFile(cfg.file)})`, flags.yes)
      },
    })
    for (const n of result.notes) this.out(`note: ${n}`)
    const scope = [flags.from && `from ${flags.from}`, flags.to && `into ${flags.to}`].filter(Boolean).join(' ')
    const unsure = result.links.filter(l => l.state === 'unsure').length
    if (unsure) process.exitCode = ExitCode.Failed
    if (result.links.length === unsure && unsure) {
      this.out(`${unsure} link(s) fail to apply, but mmlite cannot tell which transaction fails: nothing was skipped (see above for what to do).`)
    } else if (result.links.length === 0) {
      this.out(`No stuck link${scope ? ` ${scope}` : ''} (${result.checked} checked): nothing to skip.`)
    } else if (result.dryRun) {
      this.out(`Dry run: ${result.links.length} stuck link(s); nothing was skipped. Run without --dry-run to skip.`)
    } else {
      const still = result.links.filter(l => l.state === 'still-stuck' || l.state === 'unsure').length
      this.out(`Skipped ${result.skipped} transaction(s) on ${result.links.length} link(s)${still ? `; ${still} link(s) still stuck` : ''}. Audit: ${result.auditFile}`)
      if (still) process.exitCode = ExitCode.Failed
    }
    return result
  }
}
