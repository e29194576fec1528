import {Flags} from '@oclif/core'
import {MmliteCommand} from '../ui/base-command.js'
import {collectStatus, exitCodeFor, type CollectOptions, type StatusResult} from '../cluster/status.js'
import {resetErrors, type ResetErrorsResult} from '../steps/reset-errors.js'
import {LINK_DROP_ORDER, renderStatus, type RenderOptions} from '../ui/status-view.js'
import {terminalWidth} from '../ui/output.js'
import {MmliteError, ExitCode} from '../errors.js'
import {redactText} from '../db/redact.js'
import {connectTimeoutFlag, durationFlag, timeoutFlag} from '../ui/flags.js'
import {formatDuration} from '../util/duration.js'

const DEFAULT_WATCH_S = 2


/** oclif has no optional flag values: `--watch` alone (or followed by another flag) means `--watch=2`. */
export function normalizeWatchArg(argv: string[]): string[] {
  const out: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--') {
      out.push(...argv.slice(i))
      break
    }
    if (a === '--watch' && !/^\d+(\.\d+)?(ms|s|m|h)?$/i.test(argv[i + 1] ?? '')) out.push(`--watch=${DEFAULT_WATCH_S}`)
    else out.push(a)
  }
  return out
}

/** One status collection that gives up (closing its connections) when --timeout ends. */
async function collectWithin(cfg: Parameters<typeof collectStatus>[0], opts: CollectOptions, timeoutMs: number): Promise<StatusResult> {
  const ac = new AbortController()
  const timer = setTimeout(() => ac.abort(), timeoutMs)
  try {
    const r = await collectStatus(cfg, {...opts, signal: ac.signal})
    if (ac.signal.aborted) throw new Error('aborted')
    return r
  } catch (e) {
    if (!ac.signal.aborted) throw e
    throw new MmliteError(`status did not finish within --timeout ${formatDuration(timeoutMs)}`, {
      code: ExitCode.Unknown,
      suggestions: ['Check that every node answers (a lock or an overloaded server), or give it longer: --timeout 2m.'],
    })
  } finally {
    clearTimeout(timer)
  }
}

export default class Status extends MmliteCommand {
  static override summary = 'Show the health of every node and every replication link.'

  static override description = `Queries all nodes concurrently (one query per node) and classifies each directed link from→to:
critical when an end is unreachable, the subscription is missing/disabled, its apply worker is not running, the slot is missing/inactive/lost, or the link is stuck on a transaction that fails to apply (shown with its final LSN, and the logged error when the subscriber's log is readable; \`mmlite skip-tx\` shows and skips it);
warning when the lag exceeds the thresholds (health: in mmlite.yaml, or the flags; lag in seconds is the walsender's flush_lag: how long ago the newest commit the subscriber applied was sent, 0 when caught up, so an idle link is not lagging), the slot's WAL is unreserved, or apply errors were counted recently (the counts rose within health.error_window_seconds, default 600; status remembers the counts it saw in .mmlite/status-errors.json);
paused when an unfinished mmlite run disabled it on purpose.

Exit code (monitoring convention): 0 ok, 1 warning, 2 critical, 3 unknown (no node reachable); 10 for a configuration error.`

  static override examples = [
    '<%= config.bin %> status',
    '<%= config.bin %> status --json',
    '<%= config.bin %> status --matrix --watch',
    '<%= config.bin %> status --timeout 10s --connect-timeout 2s --lag-warning-bytes 1048576',
  ]

  static override flags = {
    timeout: timeoutFlag(30_000, 'connecting to and querying every node'),
    'connect-timeout': connectTimeoutFlag(5_000),
    'lag-warning-bytes': Flags.integer({summary: 'Warn above this lag in bytes (default: health.lag_warning_bytes, 10 MB).', min: 0}),
    'lag-warning-seconds': Flags.integer({summary: 'Warn when a link lags more seconds (default: health.lag_warning_seconds, 60).', min: 0}),
    'reset-errors': Flags.boolean({summary: 'Reset the apply/sync error counters of the cluster\'s subscriptions (PostgreSQL 15+), then show the status.'}),
    'dry-run': Flags.boolean({summary: 'With --reset-errors: print the SQL per node, change nothing.', default: false}),
    yes: Flags.boolean({char: 'y', summary: 'With --reset-errors: do not ask for confirmation.', default: false}),
    columns: Flags.string({summary: `Link table columns to show, comma-separated (e.g. Lag,Errors,Status); by default columns are dropped to fit the terminal (${LINK_DROP_ORDER.join(', ')} first).`, helpValue: 'COLS'}),
    matrix: Flags.boolean({summary: 'Show the lag matrix (rows: from, columns: to) instead of the links table (automatic above 4 nodes).'}),
    watch: durationFlag({summary: `Refresh every DURATION (default ${DEFAULT_WATCH_S}s; e.g. 5s, 1m) until Ctrl-C.`, helpValue: '[DURATION]'}),
  }

  async run(): Promise<StatusResult | (StatusResult & {resetErrors: ResetErrorsResult}) | {cluster: string; dryRun: true; resetErrors: ResetErrorsResult} | undefined> {
    this.argv = normalizeWatchArg(this.argv)
    const {flags} = await this.parse(Status)
    const cfg = this.loadConfig(flags.config)
    const opts: CollectOptions = {
      timeoutMs: Math.min(flags['connect-timeout'], flags.timeout),
      thresholds: {
        lagWarningBytes: flags['lag-warning-bytes'] ?? cfg.health.lagWarningBytes,
        lagWarningSeconds: flags['lag-warning-seconds'] ?? cfg.health.lagWarningSeconds,
        errorWindowSeconds: cfg.health.errorWindowSeconds,
      },
    }
    let reset: ResetErrorsResult | undefined
    if (flags['reset-errors']) {
      const r = await resetErrors(cfg, {
        dryRun: flags['dry-run'],
        connectTimeoutMs: flags['connect-timeout'],
        confirm: async sql => this.confirmOrFail(`Reset the error counters of ${sql.length} subscription(s)?`, flags.yes),
      })
      if (!this.jsonEnabled()) {
        for (const q of r.sql) this.out(`${flags['dry-run'] ? 'would run' : 'ran'} on ${q.node}: ${q.sql}`)
        for (const s of r.skipped) this.out(`note: not reset on ${s}`)
        if (r.sql.length === 0) this.out('No error counted on any subscription of the cluster: nothing to reset.')
      }
      // --json: the SQL run (or, with --dry-run, to run) per node; with --dry-run nothing else
      if (flags['dry-run']) return {cluster: cfg.cluster, dryRun: true, resetErrors: r}
      reset = r
    }
    const view = {width: terminalWidth(), columns: flags.columns?.split(',').map(c => c.trim()).filter(Boolean)}
    if (flags.watch === undefined) {
      const r = await collectWithin(cfg, opts, flags.timeout)
      if (!this.jsonEnabled()) for (const l of renderStatus(r, {matrix: flags.matrix, ...view})) this.out(l)
      process.exitCode = exitCodeFor(r.health)
      return reset ? {...r, resetErrors: reset} : r
    }
    return this.watch(cfg, opts, flags.watch / 1000, flags.matrix, view)
  }

  /** Re-query every `intervalS` until Ctrl-C; the exit code is the last completed refresh's. */
  private async watch(cfg: Parameters<typeof collectStatus>[0], opts: CollectOptions, intervalS: number, matrix: boolean, view: RenderOptions): Promise<undefined> {
    const tty = Boolean(process.stdout.isTTY) && !this.jsonEnabled()
    const ac = new AbortController()
    let stopped = false
    let wake = () => {}
    const onSigint = () => {
      stopped = true
      ac.abort() // closes the connections of a refresh in flight
      wake()
    }
    process.on('SIGINT', onSigint)
    process.on('SIGTERM', onSigint)
    let last: StatusResult | undefined
    try {
      while (!stopped) {
        const r = await collectStatus(cfg, {...opts, signal: ac.signal})
        if (stopped) break // interrupted mid-refresh: keep the last complete one
        last = r
        process.exitCode = exitCodeFor(r.health)
        if (this.jsonEnabled()) process.stdout.write(redactText(JSON.stringify(this.toSuccessJson(r))) + '\n')
        else {
          const lines = renderStatus(r, {matrix, ...view, width: terminalWidth()})
          if (tty) {
            lines.push('', `refreshing every ${intervalS}s; Ctrl-C to stop`)
            process.stdout.write('\x1b[H\x1b[2J' + redactText(lines.join('\n')) + '\n')
          } else {
            for (const l of lines) this.out(l)
            this.out()
          }
        }
        await new Promise<void>(resolve => {
          const t = setTimeout(resolve, intervalS * 1000)
          wake = () => {
            clearTimeout(t)
            resolve()
          }
        })
      }
    } finally {
      process.removeListener('SIGINT', onSigint)
      process.removeListener('SIGTERM', onSigint)
    }
    process.exitCode = last ? exitCodeFor(last.health) : ExitCode.Unknown
    // JSON documents were printed one per refresh (NDJSON); nothing more to print
    return undefined
  }
}
