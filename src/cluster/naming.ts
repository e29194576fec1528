/**
 * Deterministic names of everything mmlite creates (documented in README.md "Objects").
 *
 *   publication on every node          <cluster>
 *   slot on publisher A for edge A→B   <cluster>_<A>_<B>
 *   subscription on B for edge A→B     <cluster>_<A>_<B>   (same name as the slot it uses)
 *
 * PostgreSQL names are at most 63 bytes; a longer name keeps its first 54 characters and
 * gets "_" + 8 hex digits of a hash of the full name. Two different edges that would get the
 * same name (node names with underscores can do that: a_b→c and a→b_c) are rejected when the
 * configuration is loaded.
 */
import {createHash} from 'node:crypto'

const MAX = 63

export function fitName(full: string): string {
  if (full.length <= MAX) return full
  const h = createHash('sha256').update(full).digest('hex').slice(0, 8)
  return `${full.slice(0, MAX - 9)}_${h}`
}

export function publicationName(cluster: string): string {
  return fitName(cluster)
}

export function edgeName(cluster: string, from: string, to: string): string {
  return fitName(`${cluster}_${from}_${to}`)
}

export const slotName = edgeName
export const subscriptionName = edgeName

/** Advisory lock key for the cluster: stable 63-bit integer from the cluster name. */
export function lockKey(cluster: string): bigint {
  const h = createHash('sha256').update(`mmlite:${cluster}`).digest()
  return h.readBigInt64BE(0)
}

export function objectNameCollisions(cfg: {cluster: string; nodes: {name: string}[]}): string[] {
  const seen = new Map<string, string>()
  const out: string[] = []
  for (const a of cfg.nodes)
    for (const b of cfg.nodes) {
      if (a.name === b.name) continue
      const n = edgeName(cfg.cluster, a.name, b.name)
      const prev = seen.get(n)
      if (prev) out.push(`edges ${prev} and ${a.name}→${b.name} would both be named "${n}"; rename one of these nodes`)
      else seen.set(n, `${a.name}→${b.name}`)
    }
  return out
}
