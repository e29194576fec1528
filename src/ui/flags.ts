/**
 * Flags shared by every command, with one meaning each:
 *  --timeout          the whole command's wait budget (every wait — copy, catch-up, a skip taking
 *                     effect, status collection — ends by then); a duration
 *  --connect-timeout  per connection to a node; a duration
 * Durations accept units everywhere (30s, 5m, 500ms, 1h); a plain number is seconds.
 * Node-name flags and arguments are checked here, so an unknown node is the same error
 * (exit 10) in every command.
 */
import {Flags} from '@oclif/core'
import {formatDuration, parseDurationMs} from '../util/duration.js'
import {setWaitDeadline} from '../util/poll.js'
import {MmliteError, ExitCode} from '../errors.js'
import {didYouMean} from '../util/text.js'
import type {Config} from '../config/config.js'

/** A duration flag (value in milliseconds). */
export const durationFlag = Flags.custom<number>({parse: async input => parseDurationMs(input), helpValue: 'DURATION'})

/** --timeout: the whole wait of the command. */
export function timeoutFlag(defaultMs: number, waits: string) {
  return durationFlag({
    summary: `How long the command may wait in all (${waits}), e.g. 90s, 10m; a plain number is seconds.`,
    default: defaultMs,
    defaultHelp: async () => formatDuration(defaultMs),
  })
}

/** --connect-timeout: each connection to a node. */
export function connectTimeoutFlag(defaultMs = 10_000) {
  return durationFlag({
    summary: 'How long to wait for each connection to a node, e.g. 10s.',
    default: defaultMs,
    defaultHelp: async () => formatDuration(defaultMs),
  })
}

/** Start the command's --timeout budget: every wait (pollUntil) ends by then. */
export function startWaitBudget(timeoutMs: number): void {
  setWaitDeadline(Date.now() + timeoutMs)
}

/** `value` must name a node of the configuration: the same refusal (exit 10) in every command. */
export function requireNode(cfg: Config, value: string | undefined, what: string): void {
  if (value === undefined) return
  const names = cfg.nodes.map(n => n.name)
  if (names.includes(value)) return
  const dym = didYouMean(value, names)
  throw new MmliteError(`unknown node "${value}" (${what}): ${cfg.file} has no node of that name; nothing was changed`, {
    code: ExitCode.Config,
    suggestions: [`${dym ? `Did you mean "${dym}"? ` : ''}Known nodes: ${names.join(', ')}.`],
  })
}
