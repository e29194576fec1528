/** Durations on the command line: "30s", "5m", "500ms", "1h", or a plain number of seconds. */
import {MmliteError, ExitCode} from '../errors.js'

/** "60s", "2m", "500ms", "1h", or a bare number of seconds → milliseconds (positive). */
export function parseDurationMs(input: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/i.exec(input)
  if (!m) {
    throw new MmliteError(`expected a duration like 30s, 5m or 500ms (a plain number is seconds), got "${input}"`, {
      code: ExitCode.Config,
      suggestions: ['Write e.g. 90 (seconds), 90s, 5m or 1h.'],
    })
  }
  const n = Number(m[1])
  const unit = (m[2] ?? 's').toLowerCase()
  const ms = n * {ms: 1, s: 1000, m: 60_000, h: 3_600_000}[unit as 'ms' | 's' | 'm' | 'h']
  if (!(ms > 0)) throw new MmliteError(`the duration must be positive, got "${input}"`, {code: ExitCode.Config, suggestions: ['Write e.g. 90 (seconds), 90s, 5m or 1h.']})
  return Math.round(ms)
}

/** 600000 → "10m", 90000 → "90s", 1500 → "1500ms": for help texts and messages. */
export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`
  if (ms % 60_000 === 0) return `${ms / 60_000}m`
  if (ms % 1000 === 0) return `${ms / 1000}s`
  return `${ms}ms`
}
