/**
 * Server minors with known bugs that hurt a logical-replication mesh. Each row: the affected
 * majors, the first fixed minor per major, what it does, and where it is documented.
 */
import type {DoctorInput, Finding, Severity} from '../types.js'

export interface KnownBug {
  id: string
  /** first fixed version_num per major (e.g. 160014 for 16.14); majors not listed are not affected */
  fixedIn: Record<number, number>
  severity: Severity
  what: string
  source: string
}

export const KNOWN_BUGS: KnownBug[] = [
  {
    id: 'slot-start-mid-transaction',
    fixedIn: {12: 120020, 13: 130016, 14: 140013, 15: 150008, 16: 160004},
    severity: 'warning',
    what: 'a logical slot created while transactions run can start decoding in the middle of one of them, so a node joining later (add-node) may miss or half-apply a transaction',
    source: 'PostgreSQL release notes 16.4 / 15.8 / 14.13 / 13.16 / 12.20 (2024-08-08): "Fix race condition ... logical replication slot creation"',
  },
  {
    id: 'CVE-2026-6638',
    fixedIn: {16: 160014, 17: 170010, 18: 180004},
    severity: 'critical',
    what: 'SQL injection through ALTER SUBSCRIPTION ... REFRESH PUBLICATION: a publisher-side table owner can run SQL as the subscription owner on the subscriber',
    source: 'PostgreSQL security advisory CVE-2026-6638, fixed in 18.4 / 17.10 / 16.14',
  },
]

/** The bugs a server of this version_num is affected by. */
export function bugsAffecting(versionNum: number): KnownBug[] {
  const major = Math.floor(versionNum / 10000)
  return KNOWN_BUGS.filter(b => b.fixedIn[major] !== undefined && versionNum < b.fixedIn[major])
}

function versionText(vn: number): string {
  return `${Math.floor(vn / 10000)}.${vn % 10000}`
}

export function checkMinors(input: DoctorInput): Finding[] {
  const out: Finding[] = []
  for (const n of input.nodes) {
    const f = n.facts
    if (!f) continue
    for (const b of bugsAffecting(f.versionNum)) {
      const major = Math.floor(f.versionNum / 10000)
      out.push({
        check: 'minors',
        severity: b.severity,
        node: n.name,
        object: `PostgreSQL ${f.version}`,
        message: `${n.name} runs PostgreSQL ${f.version}, affected by ${b.id}: ${b.what} (${b.source})`,
        fix: `Upgrade ${n.name} to PostgreSQL ${versionText(b.fixedIn[major])} or a later ${major}.x minor (a restart with the new binaries; no dump needed).`,
      })
    }
  }
  return out
}
