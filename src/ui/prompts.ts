/**
 * The prompts seam: commands ask through this object only, so tests can replace its
 * members (see test/unit/prompts.test.ts) and nothing prompts without a TTY.
 */

export interface Prompts {
  confirm(opts: {message: string; default?: boolean}): Promise<boolean>
  /** transformer: what the terminal shows of the typed value (e.g. a DSN with its password masked) */
  input(opts: {
    message: string
    default?: string
    validate?: (v: string) => boolean | string | Promise<boolean | string>
    transformer?: (v: string, state: {isFinal: boolean}) => string
  }): Promise<string>
  checkbox<T extends string>(opts: {message: string; choices: {name: string; value: T; checked?: boolean}[]}): Promise<T[]>
  select<T extends string>(opts: {message: string; choices: {name: string; value: T}[]}): Promise<T>
}

// loaded on first use: commands that never ask (status) do not pay for it at start-up
const inquirer = () => import('@inquirer/prompts')

export const prompts: Prompts = {
  confirm: async o => (await inquirer()).confirm(o),
  input: async o => (await inquirer()).input(o),
  checkbox: async o => (await inquirer()).checkbox(o),
  select: async o => (await inquirer()).select(o),
}

/** Whether we may prompt: both stdin and stdout are terminals. */
export function canPrompt(): boolean {
  return Boolean(process.stdin.isTTY && process.stdout.isTTY)
}
