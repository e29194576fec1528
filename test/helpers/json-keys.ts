/**
 * The --json key convention (README "JSON output"): every key of every document is camelCase,
 * /^[a-z][a-zA-Z0-9]*$/, except in the maps whose keys are data, not schema (README lists them):
 *
 *  - rows and primary keys, keyed by the table's own column names: `key`, `before`, `after`,
 *    `new`, `old`, `target`, `row` of an array element (verify/repair/skip-tx), and each value of
 *    verify's `versions`;
 *  - maps keyed by node name: verify's `startLsn`, and per table `rows`, `versions`, `committed`;
 *    repair's `script`.
 *
 * Paths are written `$.a[].b`; the keys of a data map appear as `*` in the paths below it.
 */

export const JSON_KEY = /^[a-z][a-zA-Z0-9]*$/

/** maps keyed by column names (a row or a primary key) */
const COLUMN_MAPS = [/\[\]\.(key|before|after|new|old|target|row)$/, /\.versions\.\*$/]
/** maps keyed by node names */
const NODE_MAPS = [/^\$(\.before|\.after)?\.startLsn$/, /\.tables\[\]\.(rows|divergent\[\]\.versions|unsettled\[\]\.versions|divergent\[\]\.committed|unsettled\[\]\.committed)$/, /^\$\.script$/]

/** Every key anywhere in v that breaks the convention, as `path: "key"`. */
export function badJsonKeys(v: unknown, path = '$'): string[] {
  const out: string[] = []
  if (Array.isArray(v)) {
    for (const x of v) out.push(...badJsonKeys(x, `${path}[]`))
  } else if (v !== null && typeof v === 'object') {
    const data = [...COLUMN_MAPS, ...NODE_MAPS].some(r => r.test(path))
    for (const [k, x] of Object.entries(v)) {
      if (!data && !JSON_KEY.test(k)) out.push(`${path}: ${JSON.stringify(k)}`)
      out.push(...badJsonKeys(x, `${path}.${data ? '*' : k}`))
    }
  }
  return [...new Set(out)]
}
