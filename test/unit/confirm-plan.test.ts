/**
 * The plan-then-confirm of the mutating commands (MmliteCommand.confirmPlan, src/ui/base-command.ts):
 * on a terminal without --yes the planned steps are printed and the question asked; --yes
 * proceeds without printing or asking; without a terminal (or with --json) and without --yes
 * it refuses with exit 14 and names --yes / --dry-run; a "no" changes nothing (exit 14).
 */
import assert from 'node:assert/strict'
import type {Config} from '@oclif/core'
import {MmliteCommand} from '../../src/ui/base-command.js'
import {ExitCode, MmliteError} from '../../src/errors.js'
import type {StepReport} from '../../src/engine/types.js'

class Probe extends MmliteCommand {
  lines: string[] = []
  asked: string[] = []
  answer = true
  override log(msg = ''): void {
    this.lines.push(msg)
  }
  async run(): Promise<void> {}
  confirm(plan: StepReport[], yes: boolean, preamble?: () => void): Promise<void> {
    return this.confirmPlan(plan, 'Apply?', yes, preamble)
  }
  dry(plan: StepReport[]): void {
    this.printDryRun('Plan; nothing was changed:', plan)
  }
}

function probe(argv: string[] = []): Probe {
  const p = new Probe(argv, {} as Config)
  ;(p.constructor as typeof MmliteCommand).prompts = {
    confirm: async o => {
      p.asked.push(o.message)
      return p.answer
    },
    input: async () => '',
    checkbox: async () => [],
    select: async () => {
      throw new Error('not used')
    },
  }
  return p
}

const step = (id: string, status: StepReport['status'], sql = `CREATE x_${id}`): StepReport => ({id, title: `step ${id}`, status, nodes: ['n1'], sql: [{node: 'n1', sql}], ms: 0})
const PLAN = [step('one', 'planned'), step('two', 'already-done', 'DONE SQL')]

/** Run with stdin/stdout as terminals (or not). */
async function onTerminal<T>(tty: boolean, fn: () => Promise<T>): Promise<T> {
  const saved = [process.stdin.isTTY, process.stdout.isTTY]
  process.stdin.isTTY = tty
  process.stdout.isTTY = tty
  try {
    return await fn()
  } finally {
    ;[process.stdin.isTTY, process.stdout.isTTY] = saved
  }
}

async function refused(p: Promise<unknown>): Promise<MmliteError> {
  try {
    await p
  } catch (e) {
    assert.ok(e instanceof MmliteError, String(e))
    return e
  }
  assert.fail('expected a refusal')
}

describe('confirmPlan: print the plan, then confirm or fail', () => {
  it('terminal without --yes: the planned steps (not the done ones) with their SQL, then the question', async () => {
    const p = probe()
    let pre = 0
    await onTerminal(true, () => p.confirm(PLAN, false, () => pre++))
    assert.equal(pre, 1)
    assert.deepEqual(p.asked, ['Apply?'])
    const text = p.lines.join('\n')
    assert.match(text, /one {2}step one/)
    assert.match(text, /\[n1\] CREATE x_one/)
    assert.doesNotMatch(text, /DONE SQL/)
  })

  it('terminal, the answer is no: exit 14, "nothing was changed"', async () => {
    const p = probe()
    p.answer = false
    const e = await refused(onTerminal(true, () => p.confirm(PLAN, false)))
    assert.equal(e.code, ExitCode.NotConfirmed)
    assert.match(e.message, /nothing was changed/)
  })

  it('--yes: neither printed nor asked, on a terminal or not', async () => {
    for (const tty of [true, false]) {
      const p = probe()
      let pre = 0
      await onTerminal(tty, () => p.confirm(PLAN, true, () => pre++))
      assert.deepEqual([p.asked, p.lines, pre], [[], [], 0])
    }
  })

  it('no terminal without --yes: refused with exit 14 naming --yes and --dry-run, nothing printed or asked', async () => {
    const p = probe()
    const e = await refused(onTerminal(false, () => p.confirm(PLAN, false)))
    assert.equal(e.code, ExitCode.NotConfirmed)
    assert.match(e.suggestions.join(' '), /--yes/)
    assert.match(e.suggestions.join(' '), /--dry-run/)
    assert.deepEqual([p.asked, p.lines], [[], []])
  })

  it('--json without --yes: refused even on a terminal (one JSON document, no prompt)', async () => {
    const p = probe(['--json'])
    const e = await refused(onTerminal(true, () => p.confirm(PLAN, false)))
    assert.equal(e.code, ExitCode.NotConfirmed)
    assert.deepEqual(p.asked, [])
  })

  it('dry run: the heading, then every step (done ones marked) with its SQL', () => {
    const p = probe()
    p.dry(PLAN)
    assert.equal(p.lines[0], 'Plan; nothing was changed:')
    assert.match(p.lines.join('\n'), /two {2}step two \(already done\)\n {2}\[n1\] DONE SQL/)
  })
})
