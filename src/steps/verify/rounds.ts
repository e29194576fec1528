/**
 * Step: settle the differing keys. Round k: record L (every node's WAL insert position,
 * after the previous read), wait until every link has applied its publisher's changes up to
 * L, read the keys again on every node. A key equal everywhere was lag. A key whose version
 * (digest and xmin) is the same on every node as in the previous read, and still differs, is
 * divergent: each of those versions was committed before L, so every link had applied it
 * when we read. Keys still changing after the last round are unsettled.
 */
import {parseKeyId, readKeys, type RowVersion} from './rows.js'
import {currentLsns, waitApplied} from './settle.js'
import type {KeyReport, TableWork, VerifyContext} from './types.js'

const sameVersion = (a?: RowVersion, b?: RowVersion) => (a === undefined ? b === undefined : b !== undefined && a.digest === b.digest && a.xmin === b.xmin)

export async function settleRounds(ctx: VerifyContext): Promise<void> {
  const sessions = [...ctx.pool[0].values()]
  for (let round = 1; round <= ctx.opts.settleRounds; round++) {
    const pending = ctx.work.filter(w => w.candidates.size > 0)
    if (pending.length === 0) return
    ctx.result.settle.rounds = round
    const target = await currentLsns(sessions)
    ctx.opts.progress?.(`settling ${pending.reduce((a, w) => a + w.candidates.size, 0)} differing row(s): waiting until every link has applied up to ${[...target].map(([n, l]) => `${n} ${l}`).join(', ')}`)
    const waited = await waitApplied(ctx.result.cluster, sessions, target, ctx.opts.settleTimeoutMs)
    ctx.opts.progress?.(`every link has applied up to there; reading the differing rows again`)
    if (!waited.ok) {
      ctx.result.settle.lagging = waited.lagging
      return
    }
    for (const w of pending) {
      const keys = [...w.candidates.keys()]
      const now = await Promise.all(ctx.live.map(n => readKeys(ctx.pool[0].get(n)!, w.shapes.get(n)!, w.names, keys, {full: true, commitTs: ctx.opts.commitTs})))
      for (const k of keys) {
        const prev = w.candidates.get(k)!
        const cur = now.map(m => m.get(k))
        const d0 = cur[0]?.digest
        if (cur.every(v => v?.digest === d0)) w.candidates.delete(k)
        else if (cur.every((v, i) => sameVersion(v, prev[i]))) {
          w.divergent.set(k, cur)
          w.candidates.delete(k)
        } else w.candidates.set(k, cur)
      }
    }
  }
}

/** Step: rows still unsettled after a wait that timed out were read without their columns: read them now. */
export async function fillRows(ctx: VerifyContext): Promise<void> {
  for (const w of ctx.work) {
    const keys = [...w.candidates].filter(([, v]) => v.some(x => x && !x.row)).map(([k]) => k)
    if (keys.length === 0) continue
    const now = await Promise.all(ctx.live.map(n => readKeys(ctx.pool[0].get(n)!, w.shapes.get(n)!, w.names, keys, {full: true, commitTs: ctx.opts.commitTs})))
    for (const k of keys) w.candidates.set(k, now.map(m => m.get(k)))
  }
}

export function keyReport(ctx: VerifyContext, w: TableWork, id: string, versions: Array<RowVersion | undefined>): KeyReport {
  const key = parseKeyId(id)
  const ref = w.shapes.get(ctx.live[0])!
  const r: KeyReport = {key: Object.fromEntries(ref.key.map((k, i) => [k.name, key[i]])), versions: {}}
  ctx.live.forEach((n, i) => (r.versions[n] = versions[i] ? (versions[i]!.row ?? null) : null))
  if (ctx.opts.commitTs) r.committed = Object.fromEntries(ctx.live.map((n, i) => [n, versions[i]?.committed ?? null]))
  return r
}
