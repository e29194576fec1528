/**
 * Runs a procedure: for each step in order, check every action against the catalogs and
 * run the ones not yet done (concurrently unless the step says otherwise), recording each
 * finished step in the journal. With dryRun, only checks run and the plan is returned.
 *
 * Rendering: listr2 on a TTY (live progress), plain lines otherwise, nothing with --json.
 */
import {Listr} from 'listr2'
import type {Action, PlannedSql, ProcedureOptions, Step, StepContext, StepReport} from './types.js'

export type RenderMode = ProcedureOptions['mode']

export interface RunOptions {
  dryRun: boolean
  mode: RenderMode
  /** where plain lines go (stdout by default) */
  write?: (line: string) => void
}

type BaseContext = Omit<StepContext, 'progress' | 'note'>

/** Fault injection for tests: SIGKILL ourselves right after the named step (or "step/N" action). */
function maybeDie(point: string): void {
  const at = process.env.MMLITE_FAULT_KILL_AFTER
  if (at && at === point) process.kill(process.pid, 'SIGKILL')
}

async function runAction(a: Action, stepId: string, idx: number, ctx: StepContext): Promise<boolean> {
  if (await a.check(ctx)) return false
  await a.run(ctx)
  maybeDie(`${stepId}/${idx}`)
  return true
}

async function runStep(step: Step, ctx: StepContext): Promise<boolean> {
  let did = false
  if (step.sequential) {
    for (const [i, a] of step.actions.entries()) did = (await runAction(a, step.id, i, ctx)) || did
  } else {
    const results = await Promise.allSettled(step.actions.map((a, i) => runAction(a, step.id, i, ctx)))
    const failed = results.find(r => r.status === 'rejected') as PromiseRejectedResult | undefined
    if (failed) throw failed.reason
    did = results.some(r => r.status === 'fulfilled' && r.value)
  }
  await ctx.journal.stepDone(step.id)
  maybeDie(step.id)
  return did
}

function sqlOf(step: Step): PlannedSql[] {
  return step.actions.flatMap(a => a.sql.map(sql => ({node: a.node, sql})))
}

function nodesOf(step: Step): string[] {
  return [...new Set(step.actions.map(a => a.node))]
}

export async function planSteps(steps: Step[], base: BaseContext): Promise<StepReport[]> {
  const ctx: StepContext = {...base, progress: () => {}, note: () => {}}
  const out: StepReport[] = []
  for (const step of steps) {
    const pending: PlannedSql[] = []
    let allDone = true
    for (const a of step.actions) {
      const done = await a.check(ctx)
      if (!done) {
        allDone = false
        pending.push(...a.sql.map(sql => ({node: a.node, sql})))
      }
    }
    out.push({id: step.id, title: step.title, status: allDone ? 'already-done' : 'planned', nodes: nodesOf(step), sql: pending, ms: 0})
  }
  return out
}

export async function runSteps(steps: Step[], base: BaseContext, opts: RunOptions): Promise<StepReport[]> {
  if (opts.dryRun) return planSteps(steps, base)
  const write = opts.write ?? ((l: string) => process.stdout.write(l + '\n'))
  const reports: StepReport[] = []
  const record = (step: Step, did: boolean, t0: number) =>
    reports.push({id: step.id, title: step.title, status: did ? 'done' : 'already-done', nodes: nodesOf(step), sql: did ? sqlOf(step) : [], ms: Date.now() - t0})

  if (opts.mode === 'tty') {
    const notes: string[] = []
    const list = new Listr(
      steps.map(step => ({
        title: step.title,
        task: async (_: unknown, task: {output: string; title: string; skip: (m?: string) => void}) => {
          const t0 = Date.now()
          const ctx: StepContext = {...base, progress: t => (task.output = t), note: t => notes.push(t)}
          const did = await runStep(step, ctx)
          record(step, did, t0)
          if (!did) task.skip(`${step.title} (already done)`)
        },
        rendererOptions: {outputBar: 1, persistentOutput: false},
      })),
      {concurrent: false, exitOnError: true, renderer: 'default', rendererOptions: {collapseSubtasks: false}},
    )
    await list.run()
    for (const n of notes) write(n)
    return reports
  }

  for (const step of steps) {
    const t0 = Date.now()
    let last = 0
    const ctx: StepContext = {
      ...base,
      progress: t => {
        if (opts.mode === 'silent') return
        const now = Date.now()
        if (now - last >= 2000) {
          last = now
          // one line per report (a TTY shows multi-line progress as several lines)
          write(`  … ${t.replace(/\n/g, ' | ')}`)
        }
      },
      note: t => opts.mode !== 'silent' && write(`  ! ${t}`),
    }
    if (opts.mode === 'plain') write(`→ ${step.id}: ${step.title}`)
    const did = await runStep(step, ctx)
    record(step, did, t0)
    if (opts.mode === 'plain') write(did ? `✔ ${step.id} (${Date.now() - t0} ms)` : `↓ ${step.id}: already done`)
  }
  return reports
}
