/** Poll a condition (never sleep blindly): short intervals first, capped, with a deadline. */
import {MmliteError, ExitCode} from '../errors.js'

export const sleep = (ms: number) => new Promise<void>(r => setTimeout(r, ms))

export async function pollUntil(
  cond: () => Promise<boolean>,
  opts: {timeoutMs: number; what: string; hint?: string; minIntervalMs?: number; maxIntervalMs?: number},
): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs
  let interval = opts.minIntervalMs ?? 50
  const max = opts.maxIntervalMs ?? 200
  for (;;) {
    if (await cond()) return
    if (Date.now() >= deadline) {
      throw new MmliteError(`timed out after ${Math.round(opts.timeoutMs / 1000)} s waiting for ${opts.what}`, {
        code: ExitCode.Timeout,
        suggestions: opts.hint ? [opts.hint] : [],
      })
    }
    await sleep(Math.min(interval, Math.max(0, deadline - Date.now())))
    interval = Math.min(max, Math.ceil(interval * 1.5))
  }
}
