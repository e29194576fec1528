/**
 * Recent apply errors, for `status`: PostgreSQL counts a subscription's apply / table sync errors
 * since its statistics were last reset (pg_stat_subscription_stats, 15+) and keeps no time of the
 * last one. A single node restart or network blip adds one error that would stay there forever.
 * So `status` remembers, per link, the counts it saw and when they last rose
 * (`.mmlite/status-errors.json` next to the configuration) and warns only while the last rise is
 * within `health.error_window_seconds`. A count seen for the first time counts as risen now; a
 * count that went down (statistics reset) forgets the rise.
 */
import {mkdir, readFile, rename, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {stateDir} from '../engine/journal.js'

export interface ErrorCounts {
  apply: number
  sync: number
}

export interface ErrorEntry extends ErrorCounts {
  /** ISO time the counts were first seen higher than before; null when nothing rose since the last reset */
  changedAt: string | null
}

export type ErrorHistory = Record<string, ErrorEntry>

export function historyFile(cfgFile: string): string {
  return path.join(stateDir(cfgFile), 'status-errors.json')
}

/** Pure: the next history from the counts seen now (links without counts keep their entry). */
export function advanceHistory(prev: ErrorHistory, seen: Map<string, ErrorCounts>, now: Date): ErrorHistory {
  const next: ErrorHistory = {...prev}
  for (const [key, c] of seen) {
    const p = prev[key]
    let changedAt: string | null
    if (!p) changedAt = c.apply + c.sync > 0 ? now.toISOString() : null
    else if (c.apply < p.apply || c.sync < p.sync) changedAt = c.apply + c.sync > 0 ? now.toISOString() : null
    else if (c.apply > p.apply || c.sync > p.sync) changedAt = now.toISOString()
    else changedAt = p.changedAt
    next[key] = {apply: c.apply, sync: c.sync, changedAt}
  }
  return next
}

/** Seconds since the counts last rose, when that is within the window; else undefined. Pure. */
export function recentRise(e: ErrorEntry | undefined, now: Date, windowS: number): number | undefined {
  if (!e?.changedAt) return undefined
  const ago = (now.getTime() - Date.parse(e.changedAt)) / 1000
  return ago <= windowS ? Math.max(0, ago) : undefined
}

export async function readHistory(cfgFile: string): Promise<ErrorHistory> {
  try {
    const v = JSON.parse(await readFile(historyFile(cfgFile), 'utf8'))
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as ErrorHistory) : {}
  } catch {
    return {}
  }
}

/** Best effort: status never fails because its memory cannot be written. */
export async function writeHistory(cfgFile: string, h: ErrorHistory): Promise<void> {
  try {
    const dir = stateDir(cfgFile)
    await mkdir(dir, {recursive: true, mode: 0o700})
    const tmp = `${historyFile(cfgFile)}.${process.pid}.tmp`
    await writeFile(tmp, JSON.stringify(h, null, 2) + '\n', {mode: 0o600, flag: 'w'})
    await rename(tmp, historyFile(cfgFile))
  } catch {
    /* ignore */
  }
}
