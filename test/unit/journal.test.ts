/**
 * The journal (src/engine/journal.ts): durable, resumable, per cluster; and the step runner
 * (src/engine/runner.ts) driven by in-memory actions (no database).
 */
import assert from 'node:assert/strict'
import {existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {Journal, stateDir} from '../../src/engine/journal.js'
import {planSteps, runSteps} from '../../src/engine/runner.js'
import type {Action, Step, StepContext} from '../../src/engine/types.js'
import {ExitCode, MmliteError} from '../../src/errors.js'

let dir: string
let cfgFile: string
const journalFile = () => path.join(dir, '.mmlite', 'journal.json')
const historyFile = () => path.join(dir, '.mmlite', 'history.jsonl')

/** a fresh directory per test (hooks registered inside a describe, not as root hooks) */
function useTempDir() {
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'mmlite-journal-'))
    cfgFile = path.join(dir, 'mmlite.yaml')
  })
  afterEach(() => rmSync(dir, {recursive: true, force: true}))
}

function openFails(cluster: string): MmliteError {
  try {
    Journal.open(cfgFile, cluster)
  } catch (e) {
    assert.ok(e instanceof MmliteError, String(e))
    return e
  }
  assert.fail('Journal.open accepted it')
}

describe('journal', () => {
  useTempDir()

  it('lives in .mmlite next to the configuration', () => {
    assert.equal(stateDir(cfgFile), path.join(dir, '.mmlite'))
    assert.equal(Journal.open(cfgFile, 'shop').file, journalFile())
    assert.equal(existsSync(journalFile()), false, 'opening alone writes nothing')
  })

  it('begin/set/stepDone are on disk at once: a new instance reads them back', async () => {
    const j = Journal.open(cfgFile, 'shop')
    assert.deepEqual(j.unfinished(), [])
    assert.equal(await j.begin('init', 'init'), false)
    await j.set('seed', 'node2')
    await j.set('lsns', {a: '0/1', b: '0/2'})
    await j.stepDone('publications')
    assert.equal(j.get('seed'), 'node2')

    const onDisk = JSON.parse(readFileSync(journalFile(), 'utf8'))
    assert.equal(onDisk.cluster, 'shop')
    assert.equal(onDisk.operations.init.values.seed, 'node2')

    const again = Journal.open(cfgFile, 'shop')
    const u = again.unfinished()
    assert.equal(u.length, 1)
    assert.equal(u[0].key, 'init')
    assert.equal(u[0].op.command, 'init')
    assert.deepEqual(u[0].op.values, {seed: 'node2', lsns: {a: '0/1', b: '0/2'}})
    assert.deepEqual(Object.keys(u[0].op.steps), ['publications'])
    assert.ok(!Number.isNaN(Date.parse(u[0].op.steps.publications)))
  })

  it('begin on an existing key resumes (returns true) and keeps the recorded values', async () => {
    const j = Journal.open(cfgFile, 'shop')
    await j.begin('add-node:n4', 'add-node')
    await j.set('step', 3)
    const again = Journal.open(cfgFile, 'shop')
    assert.equal(again.get('step'), undefined, 'nothing current before begin')
    assert.equal(await again.begin('add-node:n4', 'add-node'), true)
    assert.equal(again.get('step'), 3)
    assert.equal(again.unfinished().length, 1)
    // a different key is a new operation
    assert.equal(await again.begin('init', 'init'), false)
    assert.equal(Journal.open(cfgFile, 'shop').unfinished().length, 2)
  })

  it('set/stepDone without begin throw', async () => {
    const j = Journal.open(cfgFile, 'shop')
    await assert.rejects(j.set('x', 1), /no operation begun/)
    await assert.rejects(j.stepDone('x'), /no operation begun/)
  })

  it('finish removes the operation and appends it to history.jsonl', async () => {
    const j = Journal.open(cfgFile, 'shop')
    await j.begin('init', 'init')
    await j.set('seed', 'a')
    await j.stepDone('slots')
    await j.finish()
    assert.deepEqual(Journal.open(cfgFile, 'shop').unfinished(), [])
    assert.equal(j.get('seed'), undefined)

    await j.begin('remove-node:b', 'remove-node')
    await j.finish('abandoned')

    const lines = readFileSync(historyFile(), 'utf8').trim().split('\n').map(l => JSON.parse(l))
    assert.equal(lines.length, 2)
    assert.equal(lines[0].key, 'init')
    assert.equal(lines[0].result, 'completed')
    assert.equal(lines[0].command, 'init')
    assert.deepEqual(lines[0].values, {seed: 'a'})
    assert.deepEqual(Object.keys(lines[0].steps), ['slots'])
    assert.ok(!Number.isNaN(Date.parse(lines[0].finishedAt)))
    assert.equal(lines[1].key, 'remove-node:b')
    assert.equal(lines[1].result, 'abandoned')
  })

  it('finish without begin does nothing', async () => {
    await Journal.open(cfgFile, 'shop').finish()
    assert.equal(existsSync(historyFile()), false)
  })

  it('a journal of another cluster → exit code 10', async () => {
    const j = Journal.open(cfgFile, 'shop')
    await j.begin('init', 'init')
    const e = openFails('other')
    assert.equal(e.code, ExitCode.Config)
    assert.equal(e.code, 10)
    assert.match(e.message, /belongs to cluster "shop", not "other"/)
    assert.ok(e.suggestions.length > 0)
  })

  it('corrupt JSON → exit code 10 with a suggestion', () => {
    mkdirSync(path.dirname(journalFile()), {recursive: true})
    writeFileSync(journalFile(), '{"version": 1, "cluster": "shop", "operations": {')
    const e = openFails('shop')
    assert.equal(e.code, 10)
    assert.match(e.message, /not valid JSON/)
    assert.ok(e.suggestions.some(s => /move the file away/.test(s)))
  })

  it('leaves no temp files behind', async () => {
    const j = Journal.open(cfgFile, 'shop')
    await j.begin('init', 'init')
    await j.set('a', 1)
    const {readdirSync} = await import('node:fs')
    assert.deepEqual(readdirSync(path.dirname(journalFile())).sort(), ['journal.json'])
  })
})

// ---------------------------------------------------------------- runner

describe('runner: runSteps with in-memory actions', () => {
  useTempDir()
  let journal: Journal
  let events: string[]
  const base = () => ({cfg: {} as never, cluster: {} as never, journal})

  beforeEach(async () => {
    journal = Journal.open(cfgFile, 'shop')
    await journal.begin('init', 'init')
    events = []
  })

  function action(name: string, opts: {done?: boolean; fail?: boolean; run?: (ctx: StepContext) => Promise<void>} = {}): Action {
    return {
      node: name.split('.')[0],
      label: name,
      sql: [`-- ${name}`],
      check: async () => {
        events.push(`check ${name}`)
        return opts.done ?? false
      },
      run: async ctx => {
        events.push(`run ${name}`)
        if (opts.run) await opts.run(ctx)
        if (opts.fail) throw new Error(`${name} broke`)
      },
    }
  }

  const stepsOnDisk = () => Object.keys(Journal.open(cfgFile, 'shop').unfinished()[0].op.steps)

  it('runs steps in order, records each as done, reports done/already-done', async () => {
    const steps: Step[] = [
      {id: 's1', title: 'one', actions: [action('a.1')]},
      {id: 's2', title: 'two', actions: [action('b.2', {done: true})]},
      {id: 's3', title: 'three', actions: [action('c.3')]},
    ]
    const reports = await runSteps(steps, base(), {dryRun: false, mode: 'silent'})
    assert.deepEqual(events, ['check a.1', 'run a.1', 'check b.2', 'check c.3', 'run c.3'])
    assert.deepEqual(
      reports.map(r => [r.id, r.status]),
      [
        ['s1', 'done'],
        ['s2', 'already-done'],
        ['s3', 'done'],
      ],
    )
    assert.deepEqual(reports[0].sql, [{node: 'a', sql: '-- a.1'}])
    assert.deepEqual(reports[1].sql, [])
    assert.deepEqual(stepsOnDisk(), ['s1', 's2', 's3'])
  })

  it('check() true skips run()', async () => {
    const steps: Step[] = [{id: 's', title: 's', actions: [action('a.x', {done: true}), action('b.y', {done: true})]}]
    const [r] = await runSteps(steps, base(), {dryRun: false, mode: 'silent'})
    assert.equal(r.status, 'already-done')
    assert.ok(!events.some(e => e.startsWith('run')), events.join(', '))
  })

  it('actions within a step run concurrently', async () => {
    // each action waits until the other has started: only concurrent execution finishes
    let started = 0
    let release!: () => void
    const bothStarted = new Promise<void>(r => (release = r))
    const waitForOther = async () => {
      if (++started === 2) release()
      await Promise.race([
        bothStarted,
        new Promise((_, rej) => setTimeout(() => rej(new Error('the other action never started: not concurrent')), 500)),
      ])
    }
    const steps: Step[] = [{id: 'par', title: 'par', actions: [action('a.p', {run: waitForOther}), action('b.p', {run: waitForOther})]}]
    const [r] = await runSteps(steps, base(), {dryRun: false, mode: 'silent'})
    assert.equal(r.status, 'done')
    assert.equal(started, 2)
    assert.deepEqual(r.nodes, ['a', 'b'])
  })

  it('sequential steps run their actions one after another', async () => {
    let running = 0
    let maxRunning = 0
    const track = async () => {
      maxRunning = Math.max(maxRunning, ++running)
      await new Promise(r => setTimeout(r, 10))
      running--
    }
    const steps: Step[] = [{id: 'seq', title: 'seq', sequential: true, actions: [action('a.s', {run: track}), action('b.s', {run: track}), action('c.s', {run: track})]}]
    await runSteps(steps, base(), {dryRun: false, mode: 'silent'})
    assert.equal(maxRunning, 1)
    assert.deepEqual(
      events.filter(e => e.startsWith('run')),
      ['run a.s', 'run b.s', 'run c.s'],
    )
  })

  it('a failing action fails the run; its step is not recorded and later steps do not run', async () => {
    const steps: Step[] = [
      {id: 'ok', title: 'ok', actions: [action('a.ok')]},
      {id: 'bad', title: 'bad', actions: [action('a.bad', {fail: true}), action('b.fine')]},
      {id: 'after', title: 'after', actions: [action('a.after')]},
    ]
    await assert.rejects(runSteps(steps, base(), {dryRun: false, mode: 'silent'}), /a\.bad broke/)
    assert.ok(events.includes('run b.fine'), 'the sibling action still ran')
    assert.ok(!events.includes('check a.after') && !events.includes('run a.after'), events.join(', '))
    assert.deepEqual(stepsOnDisk(), ['ok'])
  })

  it('plain mode writes one line per step', async () => {
    const lines: string[] = []
    const steps: Step[] = [
      {id: 's1', title: 'first', actions: [action('a.1')]},
      {id: 's2', title: 'second', actions: [action('a.2', {done: true})]},
    ]
    await runSteps(steps, base(), {dryRun: false, mode: 'plain', write: l => lines.push(l)})
    assert.equal(lines[0], '→ s1: first')
    assert.match(lines[1], /^✔ s1 \(\d+ ms\)$/)
    assert.deepEqual(lines.slice(2), ['→ s2: second', '↓ s2: already done'])
  })

  it('dryRun returns planned/already-done with the pending SQL, without running or recording', async () => {
    const steps: Step[] = [
      {id: 'done', title: 'done', actions: [action('a.d', {done: true})]},
      {id: 'half', title: 'half', actions: [action('a.h', {done: true}), action('b.h')]},
    ]
    const reports = await runSteps(steps, base(), {dryRun: true, mode: 'silent'})
    assert.deepEqual(
      reports.map(r => [r.id, r.status]),
      [
        ['done', 'already-done'],
        ['half', 'planned'],
      ],
    )
    assert.deepEqual(reports[1].sql, [{node: 'b', sql: '-- b.h'}])
    assert.deepEqual(reports[1].nodes, ['a', 'b'])
    assert.ok(!events.some(e => e.startsWith('run')), events.join(', '))
    assert.deepEqual(stepsOnDisk(), [])
    // planSteps is the same thing
    const plan = await planSteps(steps, base())
    assert.deepEqual(
      plan.map(r => r.status),
      ['already-done', 'planned'],
    )
  })
})
