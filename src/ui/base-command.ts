/**
 * The base of every mmlite command: owns --json (oclif enableJsonFlag), --config,
 * error → exit code + suggestions (no stack trace for expected failures), the render mode
 * and confirmation. Commands stay thin: flags, confirm, build a pipeline, run it, return
 * a result object.
 */
import {Command, Errors, Flags} from '@oclif/core'
import chalk from 'chalk'
import {MmliteError, ExitCode, errorMessage} from '../errors.js'
import {loadConfig, resolveConfigPath, type Config} from '../config/config.js'
import {canPrompt, prompts, type Prompts} from './prompts.js'
import type {RenderMode} from '../engine/runner.js'
import type {StepReport} from '../engine/types.js'
import {redactText} from '../db/redact.js'

export abstract class MmliteCommand extends Command {
  static override enableJsonFlag = true

  static override baseFlags = {
    config: Flags.string({
      char: 'c',
      summary: 'Path to mmlite.yaml (default: $MMLITE_CONFIG, else ./mmlite.yaml).',
      helpGroup: 'GLOBAL',
    }),
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

  protected override toErrorJson(err: unknown): unknown {
    if (err instanceof MmliteError) {
      return {status: err.code, name: err.name, message: err.message, details: err.details, suggestions: err.suggestions}
    }
    const e = err as {oclif?: {exit?: number}; name?: string}
    return {status: e?.oclif?.exit ?? ExitCode.Failed, name: e?.name ?? 'Error', message: errorMessage(err)}
  }

  override async catch(err: Error & {exitCode?: number; oclif?: {exit?: number}}): Promise<unknown> {
    if (err instanceof Errors.ExitError) throw err
    let e: MmliteError
    if (err instanceof MmliteError) e = err
    else if (err instanceof Errors.CLIError) {
      // oclif's own errors are usage errors (unknown/missing/exclusive flags, bad values)
      e = new MmliteError(err.message, {code: ExitCode.Config, suggestions: [`See \`mmlite ${this.id} --help\`.`]})
    } else {
      // not an expected failure: keep the stack for bug reports, but never a password
      e = new MmliteError(errorMessage(err), {code: ExitCode.Failed, details: process.env.MMLITE_DEBUG ? [redactText(err.stack ?? '')] : []})
    }
    process.exitCode = e.code
    if (this.jsonEnabled()) {
      this.logJson(this.toErrorJson(e))
      return
    }
    process.stderr.write(`${chalk.red('error:')} ${e.message}\n`)
    for (const d of e.details) process.stderr.write(`  ${d}\n`)
    for (const s of e.suggestions) process.stderr.write(`${chalk.yellow('hint:')} ${s}\n`)
    this.exit(e.code)
  }
}
