/**
 * The base of every mmlite command: owns --json (oclif enableJsonFlag), --config,
 * error → exit code + suggestions (no stack trace for expected failures), the render mode
 * and confirmation. Commands stay thin: flags, confirm, build a pipeline, run it, return
 * a result object.
 */
import {Command, Errors, Flags} from '@oclif/core'
import chalk, {Chalk} from 'chalk'
import {MmliteError, ExitCode, errorMessage} from '../errors.js'
import {loadConfig, resolveConfigPath, type Config} from '../config/config.js'
import {canPrompt, prompts, type Prompts} from './prompts.js'
import type {RenderMode} from '../engine/runner.js'
import type {StepReport} from '../engine/types.js'
import {redactText} from '../db/redact.js'
import {colorEnabled, JSON_SCHEMA_VERSION, setupColor} from './output.js'

export abstract class MmliteCommand extends Command {
  static override enableJsonFlag = true

  /** --no-color: also for commands without a configuration (demo) */
  static colorFlags = {
    'no-color': Flags.boolean({summary: 'No colours on stdout or stderr (also: NO_COLOR=1). Colour is only used on a terminal.', helpGroup: 'GLOBAL'}),
  }

  static override baseFlags = {
    config: Flags.string({
      char: 'c',
      summary: 'Path to mmlite.yaml (default: $MMLITE_CONFIG, else ./mmlite.yaml).',
      helpGroup: 'GLOBAL',
    }),
    ...MmliteCommand.colorFlags,
  }

  override async init(): Promise<void> {
    setupColor(this.argv)
    await super.init()
  }

  /** Every --json result carries schemaVersion first (README "JSON output"). */
  protected override toSuccessJson(result: unknown): unknown {
    if (result && typeof result === 'object' && !Array.isArray(result)) return {schemaVersion: JSON_SCHEMA_VERSION, ...(result as object)}
    return result
  }

  /** replaced in tests */
  static prompts: Prompts = prompts

  protected get prompts(): Prompts {
    return (this.constructor as typeof MmliteCommand).prompts
  }

  protected configPath(flag?: string): string {
    return resolveConfigPath(flag)
  }

  protected loadConfig(flag?: string): Config {
    return loadConfig(this.configPath(flag))
  }

  protected renderMode(): RenderMode {
    if (this.jsonEnabled()) return 'silent'
    return process.stdout.isTTY && !process.env.CI ? 'tty' : 'plain'
  }

  /** Print a line unless --json. */
  protected out(line = ''): void {
    this.log(redactText(line))
  }

  /**
   * Ask before changing anything. --yes skips the question; without a TTY (or with --json)
   * we never prompt: we fail and name --yes.
   */
  protected async confirmOrFail(question: string, yes: boolean): Promise<void> {
    if (yes) return
    if (this.jsonEnabled() || !canPrompt()) {
      throw new MmliteError('confirmation needed but there is no terminal to ask on', {
        code: ExitCode.NotConfirmed,
        suggestions: ['Re-run with --yes to proceed without asking, or with --dry-run to see the plan.'],
      })
    }
    const ok = await this.prompts.confirm({message: question, default: false})
    if (!ok) throw new MmliteError('cancelled: nothing was changed', {code: ExitCode.NotConfirmed})
  }

  /**
   * The plan-then-confirm of every mutating command (init, add-node, remove-node, ddl, doctor
   * --fix): on a terminal without --yes the planned steps (and what `preamble` prints first) are
   * shown and the question asked; --yes proceeds without either; without a terminal, or with
   * --json, and without --yes it refuses (exit 14, naming --yes and --dry-run). --dry-run never
   * gets here: the procedures return their plan first, which the command prints (printDryRun).
   */
  protected async confirmPlan(plan: StepReport[], question: string, yes: boolean, preamble?: () => void): Promise<void> {
    if (!yes && !this.jsonEnabled() && canPrompt()) {
      preamble?.()
      this.printPlan(plan.filter(s => s.status === 'planned'))
    }
    await this.confirmOrFail(question, yes)
  }

  /** --dry-run: a heading saying nothing was changed, then the plan with its SQL per node. */
  protected printDryRun(heading: string, steps: StepReport[]): void {
    this.out(heading)
    this.printPlan(steps)
  }

  protected printPlan(reports: StepReport[]): void {
    for (const r of reports) {
      const tag = r.status === 'already-done' ? chalk.dim('(already done)') : ''
      this.out(`${chalk.bold(r.id)}  ${r.title} ${tag}`.trimEnd())
      for (const s of r.sql) {
        const lines = s.sql.split('\n')
        this.out(`  [${s.node}] ${lines[0]}`)
        for (const l of lines.slice(1)) this.out(`  ${' '.repeat(s.node.length + 2)} ${l}`)
      }
    }
  }

  /** The --json error document: {schemaVersion, code, exitCode, message, fix, details} (README "Errors"). */
  protected override toErrorJson(err: unknown): unknown {
    const e = err instanceof MmliteError ? err : asMmliteError(err as Error, this.id)
    return errorDocument(e)
  }

  override async catch(err: Error & {exitCode?: number; oclif?: {exit?: number}}): Promise<unknown> {
    if (err instanceof Errors.ExitError) throw err
    const e = asMmliteError(err, this.id)
    process.exitCode = e.code
    if (this.jsonEnabled()) {
      this.logJson(errorDocument(e))
      return
    }
    for (const line of errorLines(e, process.stderr.isTTY === true && colorEnabled())) process.stderr.write(`${line}\n`)
    this.exit(e.code)
  }
}

/** Stable names of the exit codes, the `code` of a --json error. */
export const ERROR_CODES: Record<number, string> = {
  [ExitCode.Failed]: 'failed',
  [ExitCode.Unknown]: 'unknown',
  [ExitCode.Config]: 'config',
  [ExitCode.Preflight]: 'preflight',
  [ExitCode.Locked]: 'locked',
  [ExitCode.Unreachable]: 'unreachable',
  [ExitCode.NotConfirmed]: 'not-confirmed',
  [ExitCode.Timeout]: 'timeout',
}

/** Any error as an MmliteError: oclif's own parse errors (unknown flag, missing argument, bad
 *  value) are usage errors, exit 10, with the fix pointing at --help; anything unexpected is 2. */
export function asMmliteError(err: Error, id?: string): MmliteError {
  if (err instanceof MmliteError) return err
  const help = `Run \`mmlite ${id ? `${id} ` : ''}--help\` for the flags and arguments.`
  if (err instanceof Errors.CLIError) {
    const lines = err.message.split('\n').map(l => l.trim()).filter(l => l && !/^See more help with --help$/.test(l))
    const e = new MmliteError(lines.join(' ').replace(/\s+/g, ' '), {code: ExitCode.Config, suggestions: [help]})
    ;(e as MmliteError & {usage?: boolean}).usage = true
    return e
  }
  // not an expected failure: keep the stack for bug reports, but never a password
  return new MmliteError(errorMessage(err), {code: ExitCode.Failed, details: process.env.MMLITE_DEBUG ? [redactText(err.stack ?? '')] : []})
}

export function errorDocument(e: MmliteError): Record<string, unknown> {
  return {
    schemaVersion: JSON_SCHEMA_VERSION,
    code: (e as MmliteError & {usage?: boolean}).usage ? 'usage' : (ERROR_CODES[e.code] ?? 'failed'),
    exitCode: e.code,
    message: e.message,
    fix: e.suggestions.length ? e.suggestions.join(' ') : null,
    details: e.details,
  }
}

/** `error: <problem>` on one line, details indented, `fix: <fix>` on one line. */
export function errorLines(e: MmliteError, color: boolean): string[] {
  const c = new Chalk({level: color ? 1 : 0})
  const red = (s: string) => c.red(s)
  const yellow = (s: string) => c.yellow(s)
  const oneLine = (s: string) => s.replace(/\s*\n\s*/g, ' ').trim()
  const out = [`${red('error:')} ${oneLine(e.message)}`]
  for (const d of e.details) out.push(...d.split('\n').map(l => `  ${l}`))
  if (e.suggestions.length) out.push(`${yellow('fix:')} ${oneLine(e.suggestions.join(' '))}`)
  return out
}
