/**
 * One transaction per node, committed on every node only once the work succeeded on all of
 * them; a failure anywhere rolls every node back (so does a kill: the sessions die with the
 * process). Used by the table activation (./activate.ts) and by `mmlite ddl` (../ddl/index.ts).
 */
import type pg from 'pg'
import {escapeLiteral as ql} from '../../db/quote.js'
import type {StepContext} from '../../engine/types.js'

export function lockTimeoutSql(ms: number): string {
  return `SET LOCAL lock_timeout = ${ql(`${ms}ms`)}`
}

export async function commitTogether<T>(
  ctx: StepContext,
  nodes: string[],
  opts: {appName: string; lockTimeoutMs: number; setup?: string[]},
  body: (sessions: Map<string, pg.Client>) => Promise<T>,
): Promise<T> {
  const sessions = new Map<string, pg.Client>()
  let committed = false
  try {
    await Promise.all(
      nodes.map(async n => {
        const s = await ctx.cluster.node(n).newSession(opts.appName)
        sessions.set(n, s)
        await s.query('BEGIN')
        await s.query(lockTimeoutSql(opts.lockTimeoutMs))
        for (const q of opts.setup ?? []) await s.query(q)
      }),
    )
    const r = await body(sessions)
    // every node is ready: commit everywhere at once
    await Promise.all(nodes.map(n => sessions.get(n)!.query('COMMIT')))
    committed = true
    return r
  } finally {
    await Promise.all(
      [...sessions.values()].map(async s => {
        if (!committed) await s.query('ROLLBACK').catch(() => {})
        await s.end().catch(() => {})
      }),
    )
  }
}
