/**
 * PostgreSQL LSNs (pg_lsn text such as '16/B374D848': two hex numbers of up to 32 bits, the
 * high and low half of a 64-bit WAL position) as bigints that compare and subtract correctly.
 * Text comparison is wrong ('0/9' > '0/10', '0/FFFFFFFF' > '1/0').
 */

const LSN_RE = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/

/** Whether `s` is pg_lsn text (no surrounding whitespace). */
export function isLsn(s: string): boolean {
  return LSN_RE.test(s)
}

/** '16/B374D848' → 0x16B374D848n. Throws on anything that is not pg_lsn text. */
export function parseLsn(lsn: string): bigint {
  const m = LSN_RE.exec(lsn)
  if (!m) throw new Error(`not an LSN: ${JSON.stringify(lsn)} (expected two hex numbers such as 16/B374D848)`)
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`)
}

/** bigint → '16/B374D848' (PostgreSQL's %X/%X). */
export function formatLsn(v: bigint): string {
  if (v < 0n || v > 0xffffffffffffffffn) throw new Error(`LSN out of range: ${v}`)
  return `${(v >> 32n).toString(16).toUpperCase()}/${(v & 0xffffffffn).toString(16).toUpperCase()}`
}

/** Order of two LSNs: -1 when a is before b, 1 when after, 0 when the same position. */
export function compareLsn(a: string, b: string): -1 | 0 | 1 {
  const x = parseLsn(a)
  const y = parseLsn(b)
  return x < y ? -1 : x > y ? 1 : 0
}
