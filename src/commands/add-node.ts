import {Args, Flags} from '@oclif/core'
import {MmliteCommand} from '../ui/base-command.js'
import {runAddNode, type AddNodeResult} from '../steps/add-node.js'
import type {AddStrategy} from '../steps/add-node-context.js'
import {collectStatus, type StatusResult} from '../cluster/status.js'
import {renderStatus} from '../ui/status-view.js'
import {terminalWidth} from '../ui/output.js'
import {formatBytes, formatSeconds} from '../util/text.js'
import {recordDisableOnError} from '../config/config.js'
import {connectTimeoutFlag, requireNode, startWaitBudget, timeoutFlag} from '../ui/flags.js'

export default class AddNode extends MmliteCommand {
  static override summary = 'Join a new node to the running mesh, exactly, under live writes and without downtime.'

  static override description = `Checks every node first (read-only; as in init, for the new node and every link it will have), then joins it.

--strategy copy (default): online logical copy from the source node. Slots for the new node on every other node first; a short pause of only the source's INBOUND subscriptions (clients are never paused) while a slot with an exported snapshot is created on the source; then every table is copied in parallel inside that snapshot and each other node streams exactly the transactions the copy does not contain. The new node's replicated tables must exist with the same columns and be empty, and it must not take writes until add-node has finished.

--strategy standby: the new node is a streaming standby of --source, made by the operator (e.g. pg_basebackup -R -X stream [-C -S <slot>] from the source, hot_standby = on), and --dsn points at the source's database on it. Only the source's INBOUND subscriptions pause (from before the promotion target until the standby is promoted); the standby is promoted, its inherited subscriptions are pointed at new slots copied from the source's, and it joins the mesh without any copy.

On success the node is added to mmlite.yaml. Killed at any point, re-running the same command finishes the job.`

  static override examples = [
    '<%= config.bin %> add-node node4 --dsn postgresql://admin@10.0.0.4/app --dry-run',
    '<%= config.bin %> add-node node4 --dsn postgresql://admin@10.0.0.4/app --yes',
    '<%= config.bin %> add-node node4 --dsn postgresql://admin@10.0.0.4/app --peer-dsn "host=10.0.0.4 dbname=app user=replicator" --source node2 --yes',
  ]

  static override args = {
    name: Args.string({description: 'Name of the new node ([a-z][a-z0-9_]*, at most 30 characters).', required: true}),
  }

  static override flags = {
    dsn: Flags.string({summary: 'How the CLI connects to the new node (libpq URI or key=value).', required: true}),
    'peer-dsn': Flags.string({summary: "What the other nodes put in CREATE SUBSCRIPTION to reach the new node (default: --dsn)."}),
    source: Flags.string({summary: 'Existing node to copy from (default: the first node of mmlite.yaml).'}),
    strategy: Flags.string({summary: 'copy (online logical copy, default) or standby (the new node is a streaming standby of --source).', options: ['copy', 'standby']}),
    jobs: Flags.integer({summary: 'Tables copied in parallel (copy strategy).', default: 4, min: 1, max: 64}),
    'dry-run': Flags.boolean({summary: 'Print the SQL each node would run, change nothing.', default: false}),
    yes: Flags.boolean({char: 'y', summary: 'Do not ask for confirmation.', default: false}),
    timeout: timeoutFlag(600_000, 'slots confirming, the copy, catching up'),
    'connect-timeout': connectTimeoutFlag(),
    'disable-on-error': Flags.boolean({
      summary: "PostgreSQL 15+ subscribers: the new node's links stop on an apply error instead of retrying forever (recorded in mmlite.yaml as disable_on_error: true).",
      default: false,
    }),
  }

  async run(): Promise<AddNodeResult & {status?: StatusResult}> {
    const {args, flags} = await this.parse(AddNode)
    startWaitBudget(flags.timeout)
    const cfg = this.loadConfig(flags.config)
    requireNode(cfg, flags.source, '--source')
    if (flags['disable-on-error']) cfg.disableOnError = true
    const result: AddNodeResult & {status?: StatusResult} = await runAddNode(cfg, {
      name: args.name,
      dsn: flags.dsn,
      peerDsn: flags['peer-dsn'],
      source: flags.source,
      strategy: flags.strategy as AddStrategy | undefined,
      dryRun: flags['dry-run'],
      timeoutMs: flags.timeout,
      connectTimeoutMs: flags['connect-timeout'],
      jobs: flags.jobs,
      mode: this.renderMode(),
      write: line => this.out(line),
      confirm: plan => this.confirmPlan(plan, `Add node ${args.name} to cluster "${cfg.cluster}" (strategy ${flags.strategy ?? 'copy'})?`, flags.yes),
    })
    for (const r of result.recovered) this.out(`recovered: ${r}`)
    if (result.dryRun) {
      this.printDryRun(`Plan to add ${result.node} (${result.target}) to cluster "${cfg.cluster}" (strategy ${result.strategy}, source ${result.source}); nothing was changed:`, result.steps)
      return result
    }
    if (flags['disable-on-error'] && (await recordDisableOnError(cfg.file))) {
      this.out(`recorded disable_on_error: true in ${cfg.file}; links that existed before keep their setting (ALTER SUBSCRIPTION <name> SET (disable_on_error = true) on 15+ changes it)`)
    }
    this.out(
      result.changed
        ? `Node ${result.node} joined cluster "${cfg.cluster}" (strategy ${result.strategy}, source ${result.source}): ${result.links.length} links streaming.`
        : `Node ${result.node} had already joined cluster "${cfg.cluster}": nothing to do but record it.`,
    )
    const pause = result.sourcePause as {node: string; subscriptions: string[]; ms: number | null; pauses: Array<{ms: number | null}>} | null | undefined
    if (pause) {
      const interrupted = pause.pauses.filter(p => p.ms === null).length
      this.out(
        `Source ${pause.node}: inbound subscriptions (${pause.subscriptions.join(', ') || 'none'}) were paused for ${pause.ms ?? '?'} ms; clients were never paused.` +
          (pause.pauses.length > 1 ? ` (${pause.pauses.length} pauses in all${interrupted ? `, ${interrupted} by an interrupted run` : ''})` : ''),
      )
    }
    const copy = result.copy as {tables: Array<{table: string; rows: number; bytes: number; ms: number}>} | null | undefined
    if (copy?.tables.length) {
      this.out(`Copied: ${copy.tables.map(t => `${t.table} ${t.rows} rows (${formatBytes(t.bytes)}, ${formatSeconds(t.ms / 1000)})`).join(', ')}`)
    }
    // the cluster as it is now, X included
    const now = this.loadConfig(flags.config)
    const status = await collectStatus(now, {timeoutMs: flags['connect-timeout'], thresholds: now.health})
    result.status = status
    if (!this.jsonEnabled()) {
      this.out()
      for (const l of renderStatus(status, {width: terminalWidth()})) this.out(l)
    }
    return result
  }
}
