/**
 * Expected failures carry an exit code and suggestions; the base command prints them
 * without a stack trace. Codes are documented in README.md ("Exit codes").
 */
import {redactText} from './db/redact.js'

export enum ExitCode {
  Ok = 0,
  /** status: warning */
  Warning = 1,
  /** status: critical; other commands: the operation failed on a node */
  Failed = 2,
  /** status: unknown */
  Unknown = 3,
  /** bad configuration file or flags */
  Config = 10,
  /** preflight found problems; nothing was changed */
  Preflight = 11,
  /** another mmlite run holds the cluster lock */
  Locked = 12,
  /** a node could not be reached */
  Unreachable = 13,
  /** needs confirmation but no TTY, or the user declined */
  NotConfirmed = 14,
  /** a wait (sync, catch-up) timed out; re-run to continue */
  Timeout = 15,
}

export class MmliteError extends Error {
  readonly code: ExitCode
  readonly suggestions: string[]
  readonly details: string[]

  constructor(message: string, opts: {code?: ExitCode; suggestions?: string[]; details?: string[]} = {}) {
    super(redactText(message))
    this.name = 'MmliteError'
    this.code = opts.code ?? ExitCode.Failed
    this.suggestions = (opts.suggestions ?? []).map(redactText)
    this.details = (opts.details ?? []).map(redactText)
  }
}

export function errorMessage(e: unknown): string {
  if (e instanceof Error) return redactText(e.message)
  return redactText(String(e))
}
