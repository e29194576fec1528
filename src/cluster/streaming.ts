/**
 * The `streaming` mode of mmlite's subscriptions (README "Large transactions: streaming").
 *
 *  - native links (both ends 16+): `streaming = on`. A large transaction is sent while it runs
 *    (the publisher does not spill it to disk and the transfer overlaps the transaction), the
 *    subscriber spools it to a file and applies it at its commit, in commit order. So the
 *    transaction an apply error stops is always the first one pending after the subscription's
 *    origin: skip-tx can tell it exactly. Not `parallel` (18's default): a parallel apply worker
 *    applies a streamed transaction while it arrives, so it can fail ahead of smaller
 *    transactions that committed earlier, which stay pending in front of it — the failing one
 *    cannot be told from the stream, and ALTER SUBSCRIPTION ... SKIP only skips the first
 *    transaction applied. The price: a big transaction is applied after its commit, not during.
 *  - plugin links (a node older than 16): `streaming = off` (the mmlite output plugin has no
 *    streaming callbacks); the publisher spills big transactions to disk until their commit.
 *  - subscribers older than 14 have no such option.
 */
import type {Mechanism} from './capabilities.js'

export type StreamingMode = 'off' | 'on' | 'parallel'

export function subscriptionStreamingOption(e: {subscriberVersion: number; mechanism: Mechanism}): 'on' | 'off' | null {
  if (e.subscriberVersion < 140000) return null
  return e.mechanism === 'native' ? 'on' : 'off'
}

/** pg_subscription.substream as text (a boolean before 16, a char since) → mode. */
export function streamingMode(substream: string | null | undefined): StreamingMode | null {
  switch (substream) {
    case 'f':
    case 'false':
      return 'off'
    case 't':
    case 'true':
      return 'on'
    case 'p':
      return 'parallel'
    default:
      return null
  }
}
