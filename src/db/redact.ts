/** Password redaction for any text that may contain a DSN or conninfo. */
export const REDACTED = '********'

/**
 * Replace passwords in any free text that may hold a DSN: URI userinfo, `password=value`,
 * `password='quoted'` and the SQL-literal form `password=''quoted''` (conninfo inside a
 * SQL string literal, where `'` is doubled and libpq's `\'` becomes `\''`, or `\\''` in an E'' literal).
 * A safety net only: plans are rendered from a redacted conninfo in the first place.
 */
export function redactText(text: string): string {
  return text
    .replace(/(postgres(?:ql)?:\/\/[^:/@\s]*:)([^@\s]*)@/gi, `$1${REDACTED}@`)
    .replace(
      /(\b(?:ssl)?password\s*=\s*)(''(?:\\\\''|\\\\\\\\|\\''|\\\\|''''|[^'])*''|'(?:\\.|[^'\\])*'|[^\s'"]+)/gi,
      `$1${REDACTED}`,
    )
    .replace(/([?&](?:ssl)?password=)[^&\s]*/gi, `$1${REDACTED}`)
}

/**
 * What the terminal shows while a DSN is being typed: the password part masked even before the
 * DSN is complete (URI userinfo up to "@", `password=...`, `?password=...`).
 */
export function maskTypedDsn(v: string): string {
  const stars = (x: string) => '*'.repeat(Math.min(x.length, 8))
  return v
    .replace(/^(\s*postgres(?:ql)?:\/\/[^:/@?]*:)([^@/?]*)/i, (_m, a: string, pw: string) => a + stars(pw))
    .replace(/(\b(?:ssl)?password\s*=\s*)('(?:\\.|[^'\\])*'?|\S*)/gi, (_m, a: string, pw: string) => a + stars(pw))
    .replace(/([?&](?:ssl)?password=)([^&\s]*)/gi, (_m, a: string, pw: string) => a + stars(pw))
}
