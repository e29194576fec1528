/**
 * Minor releases on which a new logical slot may start in the middle of a transaction
 * (issue #7.8), as one guard for every procedure that creates slots while the node takes
 * writes.
 *
 * Before PostgreSQL 12.20 / 13.16 / 14.13 / 15.8 / 16.4, a logical slot created WITHOUT
 * exporting a snapshot (pg_create_logical_replication_slot, CREATE_REPLICATION_SLOT ...
 * NOEXPORT_SNAPSHOT) could restore a snapshot another slot had serialized and reach its
 * consistent point in the middle of a running transaction, whose later changes would then be
 * decoded without the earlier ones (commit bb19b700 "Fix possibility of logical decoding
 * partial transaction changes", test_decoding/specs/skip_snapshot_restore.spec). Where mmlite
 * creates such slots on a node that may be committing local transactions at that moment:
 *  - init: every node's slots (the nodes may take writes while init runs);
 *  - add-node --strategy copy: the slot P→X on every other node P (S→X exports a snapshot,
 *    which never restores a serialized one);
 *  - add-node --strategy standby: the slot S→X on the source (pg_copy_logical_replication_slot
 *    copies an existing slot's positions and builds no snapshot).
 * The new node's own outbound slots are exempt: it takes no writes until add-node has
 * finished, and what it applies from others carries an origin and is never sent.
 */
import type {Problem} from './preflight.js'

/** The first fixed minor of each affected major (17 and later were released with the fix). */
export const SLOT_START_FIXED_MINOR: Readonly<Record<number, number>> = {12: 20, 13: 16, 14: 13, 15: 8, 16: 4}

/** Whether a logical slot created on a server of `versionNum` (server_version_num) starts at a point no running transaction straddles. */
export function slotCreationExact(versionNum: number): boolean {
  const major = Math.floor(versionNum / 10000)
  const minor = versionNum % 10000
  const fixed = SLOT_START_FIXED_MINOR[major]
  return major >= 17 || (fixed !== undefined && minor >= fixed)
}

export function formatVersion(v: number): string {
  return `${Math.floor(v / 10000)}.${v % 10000}`
}

/**
 * One problem per node of `nodes` whose version (from `versions`; unknown ones are skipped,
 * preflight reports them unreachable) may start a new slot mid-transaction. `what` says what
 * the slot is for, e.g. "the slot node2→node4".
 */
export function slotStartProblems(nodes: string[], versions: ReadonlyMap<string, number>, what: (node: string) => string): Problem[] {
  const out: Problem[] = []
  for (const node of nodes) {
    const v = versions.get(node)
    if (v === undefined || slotCreationExact(v)) continue
    out.push({
      node,
      check: 'version',
      message: `PostgreSQL ${formatVersion(v)} may create a logical slot whose start is in the middle of a transaction (fixed in 12.20, 13.16, 14.13, 15.8, 16.4 and 17): ${what(node)} could miss part of a transaction`,
      fix: `Upgrade ${node} to the latest minor release of PostgreSQL ${Math.floor(v / 10000)}.`,
    })
  }
  return out
}
