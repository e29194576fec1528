/**
 * Output conventions shared by every command: colour (NO_COLOR, --no-color, only on a TTY) and
 * the version of the --json documents.
 */
import chalk from 'chalk'

/** Bumped when a --json document changes incompatibly; every --json result carries it. */
export const JSON_SCHEMA_VERSION = 1

let forcedOff = false

/** Colour is off with NO_COLOR (any non-empty value, https://no-color.org), --no-color, or TERM=dumb. */
export function colorEnabled(): boolean {
  if (forcedOff) return false
  if (process.env.NO_COLOR !== undefined && process.env.NO_COLOR !== '') return false
  if (process.env.TERM === 'dumb') return false
  return true
}

/** Apply the colour choice: chalk (stdout) colours only when stdout is a TTY and colour is on. */
export function setupColor(argv: string[]): void {
  forcedOff = argv.includes('--no-color')
  if (!colorEnabled() || !process.stdout.isTTY) chalk.level = 0
}

/** Columns of the terminal stdout is on; COLUMNS when set; undefined when not a terminal (no limit). */
export function terminalWidth(): number | undefined {
  const env = Number(process.env.COLUMNS)
  if (Number.isInteger(env) && env > 0) return env
  return process.stdout.isTTY ? process.stdout.columns || 80 : undefined
}
