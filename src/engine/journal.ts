/**
 * The journal: a JSON file next to the configuration (`.mmlite/journal.json`), written
 * atomically (temp file + fsync + rename) every time a value or a finished step is recorded,
 * so a run killed at any point can be resumed by re-running the same command.
 *
 * It lives on the operator's side, not on the nodes: nothing mmlite records about an
 * operation can travel to another node through replication or a physical clone.
 * Finished operations are appended to `.mmlite/history.jsonl`.
 * `.mmlite/` is 0700 and its files 0600 (util/private-files.ts): they hold operation details.
 */
import {existsSync, readFileSync} from 'node:fs'
import path from 'node:path'
import {appendPrivate, atomicWritePrivate} from '../util/private-files.js'
import {noteState} from '../util/state-files.js'
import {MmliteError, ExitCode} from '../errors.js'

export interface Operation {
  command: string
  startedAt: string
  updatedAt: string
  steps: Record<string, string>
  values: Record<string, unknown>
}

interface JournalFile {
  version: 1
  cluster: string
  operations: Record<string, Operation>
}

export function stateDir(configFile: string): string {
  return path.join(path.dirname(configFile), '.mmlite')
}

export class Journal {
  private data: JournalFile
  private current?: string

  private constructor(
    readonly file: string,
    cluster: string,
  ) {
    if (existsSync(file)) {
      try {
        const text = readFileSync(file, 'utf8')
        noteState(file, text)
        this.data = JSON.parse(text) as JournalFile
      } catch (e) {
        throw new MmliteError(`journal ${file} is not valid JSON: ${(e as Error).message}`, {
          code: ExitCode.Config,
          suggestions: ['If no mmlite run is unfinished, move the file away and re-run.'],
        })
      }
      if (this.data.cluster !== cluster) {
        throw new MmliteError(`journal ${file} belongs to cluster "${this.data.cluster}", not "${cluster}"`, {
          code: ExitCode.Config,
          suggestions: ['Keep one mmlite.yaml per directory, or pass the matching --config.'],
        })
      }
    } else {
      noteState(file, null)
      this.data = {version: 1, cluster, operations: {}}
    }
  }

  static open(configFile: string, cluster: string): Journal {
    return new Journal(path.join(stateDir(configFile), 'journal.json'), cluster)
  }

  /** Operations started and not finished (possibly by a killed run). */
  unfinished(): Array<{key: string; op: Operation}> {
    return Object.entries(this.data.operations).map(([key, op]) => ({key, op}))
  }

  /** Start or resume the operation `key` (e.g. "init", "add-node:node4"). Returns true when resuming. */
  async begin(key: string, command: string): Promise<boolean> {
    this.current = key
    const now = new Date().toISOString()
    const existing = this.data.operations[key]
    if (existing) {
      existing.updatedAt = now
      await this.save()
      return true
    }
    this.data.operations[key] = {command, startedAt: now, updatedAt: now, steps: {}, values: {}}
    await this.save()
    return false
  }

  private op(): Operation {
    if (!this.current || !this.data.operations[this.current]) throw new Error('journal: no operation begun')
    return this.data.operations[this.current]
  }

  get<T>(name: string): T | undefined {
    if (!this.current) return undefined
    return this.data.operations[this.current]?.values[name] as T | undefined
  }

  async set(name: string, value: unknown): Promise<void> {
    const op = this.op()
    op.values[name] = value
    op.updatedAt = new Date().toISOString()
    await this.save()
  }

  async stepDone(stepId: string): Promise<void> {
    const op = this.op()
    op.steps[stepId] = new Date().toISOString()
    op.updatedAt = op.steps[stepId]
    await this.save()
  }

  async finish(result: 'completed' | 'abandoned' = 'completed'): Promise<void> {
    if (!this.current) return
    const op = this.data.operations[this.current]
    delete this.data.operations[this.current]
    await this.save()
    if (op) {
      await appendPrivate(
        path.join(path.dirname(this.file), 'history.jsonl'),
        JSON.stringify({key: this.current, result, finishedAt: new Date().toISOString(), ...op}) + '\n',
      )
    }
    this.current = undefined
  }

  /** saves are queued: concurrent actions may record values at the same time */
  private saving: Promise<void> = Promise.resolve()

  private save(): Promise<void> {
    const next = this.saving.then(async () => {
      await atomicWritePrivate(this.file, JSON.stringify(this.data, null, 2) + '\n', {privateDir: true})
    })
    this.saving = next.catch(() => {})
    return next
  }
}
