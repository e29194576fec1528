/**
 * The repair audit: `.mmlite/repair-<time>.jsonl` (0600 in a 0700 directory), one JSON object a
 * line: a header, then per transaction every change with the row it replaced (`before`, null =
 * absent) and the row written (`after`, null = deleted) — enough to undo by hand — written and
 * fsynced before the transaction commits, then a `committed` line after it.
 */
import path from 'node:path'
import {appendPrivate, atomicWritePrivate} from '../../util/private-files.js'
import {stamp} from '../verify/report.js'
import type {Change} from './plan.js'

export class Audit {
  private constructor(readonly file: string) {}

  static async create(dir: string, header: Record<string, unknown>): Promise<Audit> {
    const file = path.join(dir, `repair-${stamp()}.jsonl`)
    await atomicWritePrivate(file, JSON.stringify({event: 'start', at: new Date().toISOString(), ...header}) + '\n', {privateDir: true})
    return new Audit(file)
  }

  /** appended (never through a symbolic link) and fsynced before returning */
  private async append(lines: Array<Record<string, unknown>>): Promise<void> {
    await appendPrivate(this.file, lines.map(l => JSON.stringify(l) + '\n').join(''), {sync: true})
  }

  async record(node: string, changes: Change[]): Promise<void> {
    await this.append(changes.map(c => ({event: 'change', node, table: c.table, key: c.key, action: c.action, source: c.source, before: c.before, after: c.after, sql: c.sql})))
  }

  async committed(node: string, count: number): Promise<void> {
    await this.append([{event: 'committed', node, changes: count, at: new Date().toISOString()}])
  }
}
