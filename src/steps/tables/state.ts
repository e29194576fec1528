/**
 * What the nodes say about the replicated tables: the members of the publication `<cluster>`
 * and of the announce publication `<cluster>_stage` on every node, and the publications and
 * known relations (pg_subscription_rel) of every subscription of the mesh. `classify` turns
 * that and `tables:` of mmlite.yaml into the work of the reconcile procedure (./index.ts).
 */
import type {Config} from '../../config/config.js'
import {makeTableName, type TableName} from '../../config/tables.js'
import {edgeName, fitName, publicationName} from '../../cluster/naming.js'
import type {Cluster} from '../../cluster/cluster.js'

/** The announce publication: lists tables being added, publishes nothing (publish = ''). */
export function stageName(cluster: string): string {
  return fitName(`${cluster}_stage`)
}

/** table identity independent of quoting */
export const keyOf = (t: {schema: string; name: string}) => JSON.stringify([t.schema, t.name])
export const tableOf = (k: string): TableName => {
  const [s, n] = JSON.parse(k) as [string, string]
  return makeTableName(s, n)
}

export interface SubState {
  name: string
  from: string
  to: string
  exists: boolean
  enabled: boolean
  pubs: string[]
  rels: Set<string>
}

export interface NodeState {
  shop: Set<string> | null
  stage: Set<string> | null
  subs: SubState[]
}

// pg_publication_rel, not the view pg_publication_tables: the view opens every published table
// (AccessShareLock, 15+), so it would wait on a table that a prepared `mmlite ddl`
// transaction holds locked (./prepared.ts); the publications mmlite makes are FOR TABLE lists
const PUBS_SQL = `SELECT p.pubname::pg_catalog.text AS pubname,
       (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(n.nspname, c.relname))
          FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE pr.prpubid = p.oid) AS tables
  FROM pg_catalog.pg_publication p WHERE p.pubname = ANY($1::pg_catalog.text[])`

const SUBS_SQL = `SELECT s.subname::pg_catalog.text AS subname, s.subenabled AS enabled, s.subpublications::pg_catalog.text[] AS pubs,
       (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(n.nspname, c.relname))
          FROM pg_catalog.pg_subscription_rel sr JOIN pg_catalog.pg_class c ON c.oid = sr.srrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE sr.srsubid = s.oid) AS rels
  FROM pg_catalog.pg_subscription s
 WHERE s.subname = ANY($1::pg_catalog.text[])
   AND s.subdbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())`

const keys = (rows: Array<[string, string]> | null) => new Set((rows ?? []).map(([s, n]) => JSON.stringify([s, n])))

export async function readNodeState(cfg: Config, cluster: Cluster, node: string): Promise<NodeState> {
  const c = cluster.node(node)
  const pub = publicationName(cfg.cluster)
  const stage = stageName(cfg.cluster)
  const pubs = await c.query<{pubname: string; tables: Array<[string, string]> | null}>(PUBS_SQL, [[pub, stage]])
  const inbound = cfg.nodes.filter(n => n.name !== node).map(n => ({from: n.name, name: edgeName(cfg.cluster, n.name, node)}))
  const subs = await c.query<{subname: string; enabled: boolean; pubs: string[]; rels: Array<[string, string]> | null}>(SUBS_SQL, [inbound.map(e => e.name)])
  const p = pubs.find(r => r.pubname === pub)
  const g = pubs.find(r => r.pubname === stage)
  return {
    shop: p ? keys(p.tables) : null,
    stage: g ? keys(g.tables) : null,
    subs: inbound.map(e => {
      const r = subs.find(s => s.subname === e.name)
      return {name: e.name, from: e.from, to: node, exists: Boolean(r), enabled: r?.enabled ?? false, pubs: r?.pubs ?? [], rels: keys(r?.rels ?? null)}
    }),
  }
}

export async function readState(cfg: Config, cluster: Cluster): Promise<Map<string, NodeState>> {
  const out = new Map<string, NodeState>()
  await Promise.all(cfg.nodes.map(async n => out.set(n.name, await readNodeState(cfg, cluster, n.name))))
  return out
}

export interface TableWork {
  /** every publication and subscription of the mesh exists: the reconcile procedure applies */
  meshComplete: boolean
  /** tables of the file that must become replicated */
  adds: string[]
  /** tables no longer in the file that something still replicates or announces */
  removes: string[]
  /** in `<cluster>` somewhere but not known to every subscription: published and re-added */
  broken: string[]
  /** in `<cluster>` on some nodes only although every subscription knows it (a run died between the activating commits) */
  partial: string[]
  /** the announce publication still lists tables */
  stageLeft: boolean
}

/** Pure: what the procedure has to do, from the desired tables and the nodes' state. */
export function classify(desired: string[], state: Map<string, NodeState>): TableWork {
  const nodes = [...state.values()]
  const subs = nodes.flatMap(n => n.subs)
  const meshComplete = nodes.every(n => n.shop !== null) && subs.every(s => s.exists)
  const work: TableWork = {meshComplete, adds: [], removes: [], broken: [], partial: [], stageLeft: nodes.some(n => (n.stage?.size ?? 0) > 0)}
  if (!meshComplete) return work
  const want = new Set(desired)
  const known = (k: string) => subs.every(s => s.rels.has(k))
  const inShop = (k: string) => nodes.filter(n => n.shop!.has(k)).length
  for (const k of desired) {
    const c = inShop(k)
    if (c === nodes.length && known(k)) continue
    if (c === 0) work.adds.push(k)
    else if (known(k)) work.partial.push(k)
    else {
      work.broken.push(k)
      work.adds.push(k)
    }
  }
  const everywhere = new Set<string>()
  for (const n of nodes) for (const k of [...n.shop!, ...(n.stage ?? [])]) everywhere.add(k)
  for (const s of subs) for (const k of s.rels) everywhere.add(k)
  for (const k of everywhere) if (!want.has(k)) work.removes.push(k)
  work.removes.sort()
  return work
}
