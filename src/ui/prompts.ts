/**
 * The prompts seam: commands ask through this object only, so tests can replace its
 * members (see test/unit/prompts.test.ts) and nothing prompts without a TTY.
 */
import {checkbox, confirm, input, select} from '@inquirer/prompts'

export interface Prompts {
  confirm(opts: {message: string; default?: boolean}): Promise<boolean>
  input(opts: {message: string; default?: string; validate?: (v: string) => boolean | string | Promise<boolean | string>}): Promise<string>
  checkbox<T extends string>(opts: {message: string; choices: {name: string; value: T; checked?: boolean}[]}): Promise<T[]>
  select<T extends string>(opts: {message: string; choices: {name: string; value: T}[]}): Promise<T>
}

export const prompts: Prompts = {
  confirm: o => confirm(o),
  input: o => input(o),
  checkbox: o => checkbox(o),
  select: o => select(o),
}

/** Whether we may prompt: both stdin and stdout are terminals. */
export function canPrompt(): boolean {
  return Boolean(process.stdin.isTTY && process.stdout.isTTY)
}
