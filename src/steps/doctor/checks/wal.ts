/**
 * WAL kept for slots: an unbounded max_slot_wal_keep_size lets a down node fill the disk; a
 * bounded one smaller than an hour of WAL invalidates a peer's slots after a short outage.
 * Slots near or past invalidation, and when an inactive slot will hit the limit at the
 * measured WAL rate.
 */
import {formatBytes, formatSeconds} from '../../../util/text.js'
import type {DoctorInput, Finding} from '../types.js'

const GB = 1024 ** 3
const HOUR = 3600
/** an inactive slot invalidated within this long is a warning, later an info */
const FORECAST_WARN_S = 6 * HOUR

/** A bound that holds at least `hours` of WAL at `rate` bytes/s, at least 1 GB, in whole GB. */
export function suggestedKeepSize(rate: number | null, hours = 4): string {
  const bytes = Math.max(GB, (rate ?? 0) * hours * HOUR)
  return `${Math.ceil(bytes / GB)}GB`
}

export function checkWal(input: DoctorInput): Finding[] {
  const out: Finding[] = []
  const prefix = `${input.cfg.cluster}_`
  for (const n of input.nodes) {
    const f = n.facts
    if (!f) continue
    const fixSql = `ALTER SYSTEM SET max_slot_wal_keep_size = '${suggestedKeepSize(f.walRate)}'; SELECT pg_catalog.pg_reload_conf();`
    if (f.maxSlotWalKeepSize === null) {
      out.push({check: 'wal', severity: 'info', node: n.name, object: 'max_slot_wal_keep_size', message: `PostgreSQL ${f.version} cannot bound the WAL that slots keep (max_slot_wal_keep_size needs 13+): a down peer makes WAL grow until the disk is full`, fix: `Watch pg_replication_slots and disk space on ${n.name}, or upgrade to 13+.`})
    } else if (f.maxSlotWalKeepSize < 0) {
      out.push({check: 'wal', severity: 'warning', node: n.name, object: 'max_slot_wal_keep_size', message: `max_slot_wal_keep_size is unlimited (-1) on ${n.name}: while a peer is down its slot keeps all WAL and the disk can fill up`, fix: fixSql})
    } else if (f.walRate !== null && f.maxSlotWalKeepSize < f.walRate * HOUR) {
      out.push({check: 'wal', severity: 'warning', node: n.name, object: 'max_slot_wal_keep_size', message: `max_slot_wal_keep_size (${formatBytes(f.maxSlotWalKeepSize)}) on ${n.name} holds less than one hour of WAL at the measured rate (${formatBytes(f.walRate)}/s): a peer down for longer loses its slot and must be re-added`, fix: fixSql})
    }
    for (const s of f.slots) {
      if (s.slot_type !== 'logical') continue
      const ours = s.slot_name.startsWith(prefix)
      const base = {check: 'slots', node: n.name, object: `slot ${s.slot_name}`}
      const reAdd = ours ? ` The way back for the node it serves: mmlite remove-node <node> --force, then mmlite add-node.` : ''
      if (s.wal_status === 'lost') {
        out.push({...base, severity: 'critical', message: `slot ${s.slot_name} on ${n.name} is invalidated (wal_status = lost): the WAL its subscriber still needs is gone.${reAdd}`, fix: ours ? 'mmlite remove-node <node> --force --yes; then mmlite add-node <node> --dsn ...' : `SELECT pg_catalog.pg_drop_replication_slot('${s.slot_name.replace(/'/g, "''")}');`})
        continue
      }
      if (s.wal_status === 'unreserved') {
        out.push({...base, severity: 'critical', message: `slot ${s.slot_name} on ${n.name} keeps more WAL than max_slot_wal_keep_size (wal_status = unreserved): it is invalidated at the next checkpoint unless its subscriber catches up now.${reAdd}`, fix: `Bring its subscriber back now, or raise max_slot_wal_keep_size on ${n.name}: ${fixSql}`})
        continue
      }
      if (s.wal_status === 'extended') {
        out.push({...base, severity: 'warning', message: `slot ${s.slot_name} on ${n.name} keeps more WAL than max_wal_size (wal_status = extended, ${formatBytes(s.retained_bytes)} retained)`, fix: `Check that its subscriber is running and keeping up (mmlite status).`})
      }
      if (!s.active && s.safe_wal_size !== null && f.walRate && f.walRate > 0) {
        const eta = s.safe_wal_size / f.walRate
        out.push({
          ...base,
          severity: eta < FORECAST_WARN_S ? 'warning' : 'info',
          message: `slot ${s.slot_name} on ${n.name} is inactive and retains ${formatBytes(s.retained_bytes)}; at the measured WAL rate (${formatBytes(f.walRate)}/s) it is invalidated in about ${formatSeconds(eta)}`,
          fix: `Bring its subscriber back before then (mmlite status shows the link), or raise max_slot_wal_keep_size: ${fixSql}`,
        })
      } else if (!s.active && ours) {
        out.push({...base, severity: 'warning', message: `slot ${s.slot_name} on ${n.name} is inactive and retains ${formatBytes(s.retained_bytes)} of WAL`, fix: 'Check the link with mmlite status.'})
      }
    }
  }
  return out
}
