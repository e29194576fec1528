/**
 * The repair audit: `.mmlite/repair-<time>.jsonl` (0600 in a 0700 directory), one JSON object a
 * line: a header, then per transaction every change with the row it replaced (`before`, null =
 * absent) and the row written (`after`, null = deleted) — enough to undo by hand — written and
 * fsynced before the transaction commits, then a `committed` line after it.
 */
import {appendFileSync, fsyncSync, openSync, closeSync} from 'node:fs'
import {stamp, writePrivateFile} from '../verify/report.js'
import type {Change} from './plan.js'

export class Audit {
  private constructor(readonly file: string) {}

  static create(dir: string, header: Record<string, unknown>): Audit {
    const file = writePrivateFile(dir, `repair-${stamp()}.jsonl`, JSON.stringify({event: 'start', at: new Date().toISOString(), ...header}) + '\n')
    return new Audit(file)
  }

  private append(obj: Record<string, unknown>): void {
    appendFileSync(this.file, JSON.stringify(obj) + '\n')
    const fd = openSync(this.file, 'r')
    try {
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
  }

  async record(node: string, changes: Change[]): Promise<void> {
    for (const c of changes) this.append({event: 'change', node, table: c.table, key: c.key, action: c.action, source: c.source, before: c.before, after: c.after, sql: c.sql})
  }

  async committed(node: string, count: number): Promise<void> {
    this.append({event: 'committed', node, changes: count, at: new Date().toISOString()})
  }
}
