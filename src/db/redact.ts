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
