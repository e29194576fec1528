import {Args, Flags} from '@oclif/core'
import {MmliteCommand} from '../ui/base-command.js'
import {runRemoveNode, type RemoveNodeResult} from '../steps/remove-node.js'
import {connectTimeoutFlag, durationFlag} from '../ui/flags.js'
import {formatBytes} from '../util/text.js'


export default class RemoveNode extends MmliteCommand {
  static override summary = 'Take a node out of the mesh; the other nodes keep replicating among themselves.'

  static override description = `Without --force the node must be reachable: mmlite first waits until every peer has received everything the node committed (its outbound slots confirm its current WAL position; --drain-timeout), then drops every subscription from it and every slot for it on the peers, its own subscriptions, slots and publication, and removes it from mmlite.yaml. Stop the applications' writes on the node first: what it commits after the drain does not reach the peers.

With --force (the node is dead, or you accept losing what it has not sent) the node is never contacted and nothing is drained: the peers' subscriptions from it and their slots for it are dropped, and the report says how far each peer got in the node's changes; when they differ, the cluster may have diverged.

Killed at any point, re-running the same command finishes the job.`

  static override examples = [
    '<%= config.bin %> remove-node node3 --dry-run',
    '<%= config.bin %> remove-node node3 --yes',
    '<%= config.bin %> remove-node node3 --force --yes   # node3 is dead',
  ]

  static override args = {
    name: Args.string({description: 'Name of the node to remove (as in mmlite.yaml).', required: true}),
  }

  static override flags = {
    force: Flags.boolean({summary: 'Do not contact the node and do not wait for its changes to drain (it is dead, or its unsent changes may be lost).', default: false}),
    'drain-timeout': durationFlag({summary: 'How long to wait until every peer has received everything the node committed (e.g. 60s, 5m).', default: 60_000, defaultHelp: async () => '60s'}),
    'dry-run': Flags.boolean({summary: 'Print the SQL each node would run, change nothing.', default: false}),
    yes: Flags.boolean({char: 'y', summary: 'Do not ask for confirmation.', default: false}),
    'connect-timeout': connectTimeoutFlag(),
  }

  async run(): Promise<RemoveNodeResult> {
    const {args, flags} = await this.parse(RemoveNode)
    const cfg = this.loadConfig(flags.config)
    const x = args.name
    const result = await runRemoveNode(cfg, x, {
      force: flags.force,
      dryRun: flags['dry-run'],
      drainTimeoutMs: flags['drain-timeout'],
      connectTimeoutMs: flags['connect-timeout'],
      mode: this.renderMode(),
      write: line => this.out(line),
      confirm: async (plan, info) => {
        const how = info.finishing ? ' (finishing an interrupted removal)' : info.force ? ` without contacting ${x} (--force)` : ''
        await this.confirmPlan(plan, `Remove node ${x} from cluster "${cfg.cluster}"${how}?`, flags.yes)
      },
    })
    if (this.jsonEnabled()) return result
    if (result.dryRun) {
      this.printDryRun(`Plan to remove ${x} from cluster "${cfg.cluster}"${result.force ? ` (--force: ${x} is not contacted)` : ''}; nothing was changed:`, result.steps)
      if (result.force) this.out(`(${x}'s own subscriptions, slots and publication would be left on it.)`)
      return result
    }
    this.out(
      result.changed
        ? `Node ${x} was removed from cluster "${cfg.cluster}"; remaining: ${result.remaining.join(', ')}.`
        : `Node ${x} is already removed from cluster "${cfg.cluster}": nothing to do.`,
    )
    if (result.drainLsn) this.out(`Every peer had received everything ${x} committed (up to ${result.drainLsn}) before its links were dropped.`)
    for (const p of result.peers) {
      const parts: string[] = []
      if (p.retainedWalFreedBytes !== null) parts.push(`no longer retains ${formatBytes(p.retainedWalFreedBytes)} of WAL for ${x}`)
      if (result.force) parts.push(`got ${x}'s changes up to ${p.originProgress ?? 'an unknown position'}`)
      if (parts.length) this.out(`  ${p.node}: ${parts.join('; ')}`)
    }
    if (result.divergence) this.out(`WARNING: ${result.divergence}`)
    for (const n of result.notes) this.out(`note: ${n}`)
    if (result.force && result.leftOnRemoved.length) {
      this.out(`If ${x} ever runs again, drop what is left of the mesh on it before reusing it:`)
      for (const s of result.leftOnRemoved) this.out(`  ${s};`)
    }
    return result
  }
}
