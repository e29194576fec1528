/** Poll a condition (never sleep blindly): short intervals first, capped, with a deadline. */
import {MmliteError, ExitCode} from '../errors.js'

export const sleep = (ms: number) => new Promise<void>(r => setTimeout(r, ms))

let commandDeadline: number | undefined

/** The whole command's wait budget (its --timeout): every later pollUntil ends by then at the latest. */
export function setWaitDeadline(at: number | undefined): void {
  commandDeadline = at
}

export async function pollUntil(
  cond: () => Promise<boolean>,
  opts: {timeoutMs: number; what: string; hint?: string; minIntervalMs?: number; maxIntervalMs?: number},
): Promise<void> {
  const own = Date.now() + opts.timeoutMs
  const deadline = commandDeadline === undefined ? own : Math.min(own, commandDeadline)
  let interval = opts.minIntervalMs ?? 50
  const max = opts.maxIntervalMs ?? 200
  for (;;) {
    if (await cond()) return
    if (Date.now() >= deadline) {
      const whole = deadline < own
      const waited = Math.round((Date.now() - (own - opts.timeoutMs)) / 1000)
      throw new MmliteError(`timed out after ${waited} s waiting for ${opts.what}${whole ? ' (the end of --timeout, the whole wait of the command)' : ''}`, {
        code: ExitCode.Timeout,
        suggestions: [...(opts.hint ? [opts.hint] : []), ...(whole ? ['Re-run the same command to continue, with a longer --timeout (e.g. --timeout 30m).'] : [])],
      })
    }
    await sleep(Math.min(interval, Math.max(0, deadline - Date.now())))
    interval = Math.min(max, Math.ceil(interval * 1.5))
  }
}
