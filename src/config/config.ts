/**
 * mmlite.yaml: load, validate (every problem at once, with file:line:column and the fix),
 * and write. See README.md "Configuration".
 */
import {existsSync, readFileSync} from 'node:fs'
import path from 'node:path'
import {Document, isMap, isScalar, isSeq, LineCounter, parseDocument, type Node as YNode} from 'yaml'
import {MmliteError, ExitCode} from '../errors.js'
import {parseConnInfo, type ConnInfo} from '../db/conninfo.js'
import {didYouMean} from '../util/text.js'
import {parseTableName, type TableName} from './tables.js'
import {objectNameCollisions} from '../cluster/naming.js'
import {atomicWritePrivate} from '../util/private-files.js'
import {noteState} from '../util/state-files.js'

export const NAME_RE = /^[a-z][a-z0-9_]*$/
export const NAME_MAX = 30

export interface NodeConfig {
  name: string
  /** the DSN as written in the file, ${VAR} not expanded (may contain a password: never print) */
  dsn: string
  peerDsn?: string
  conn: ConnInfo
  peerConn: ConnInfo
}

export interface HealthThresholds {
  lagWarningBytes: number
  lagWarningSeconds: number
  /** status warns about apply errors counted within this many seconds (health.error_window_seconds) */
  errorWindowSeconds: number
}

export interface Config {
  file: string
  cluster: string
  tables: TableName[]
  nodes: NodeConfig[]
  health: HealthThresholds
  /** PG 15+ subscriptions: disable the subscription on an apply error instead of retrying forever */
  disableOnError: boolean
}

export const DEFAULT_HEALTH: HealthThresholds = {lagWarningBytes: 10 * 1024 * 1024, lagWarningSeconds: 60, errorWindowSeconds: 600}

const TOP_KEYS = ['cluster', 'tables', 'nodes', 'health', 'disable_on_error']
const NODE_KEYS = ['name', 'dsn', 'peer_dsn']
const HEALTH_KEYS = ['lag_warning_bytes', 'lag_warning_seconds', 'error_window_seconds']

/** Which file: --config, else $MMLITE_CONFIG, else ./mmlite.yaml */
export function resolveConfigPath(flag?: string): string {
  return path.resolve(flag ?? process.env.MMLITE_CONFIG ?? 'mmlite.yaml')
}

interface Problem {
  node?: YNode | null
  message: string
}

export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): Config {
  if (!existsSync(file)) {
    throw new MmliteError(`configuration file ${file} not found`, {
      code: ExitCode.Config,
      suggestions: [
        'Run `mmlite init` on a terminal to create it with a wizard, or pass --config PATH (or set MMLITE_CONFIG).',
      ],
    })
  }
  const text = readFileSync(file, 'utf8')
  noteState(file, text)
  return parseConfig(text, file, env)
}

export function parseConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env): Config {
  const lc = new LineCounter()
  const doc = parseDocument(text, {lineCounter: lc, prettyErrors: false, uniqueKeys: true})
  const where = (n?: YNode | null): string => {
    const off = n?.range?.[0]
    if (off === undefined) return file
    const {line, col} = lc.linePos(off)
    return `${file}:${line}:${col}`
  }
  const fail = (problems: string[]): never => {
    throw new MmliteError(
      problems.length === 1 ? `invalid configuration: ${problems[0]}` : `invalid configuration (${problems.length} problems)`,
      {code: ExitCode.Config, details: problems.length === 1 ? [] : problems},
    )
  }
  if (doc.errors.length > 0) {
    fail(
      doc.errors.map(e => {
        const pos = e.linePos?.[0] ?? lc.linePos(e.pos[0])
        return `${pos ? `${file}:${pos.line}:${pos.col}` : file}: YAML syntax error: ${e.message.split('\n')[0]}`
      }),
    )
  }
  const problems: Problem[] = []
  const root = doc.contents
  if (!isMap(root)) fail([`${file}: expected a mapping with keys cluster, tables, nodes`])
  const rootMap = root as import('yaml').YAMLMap

  const expand = (n: YNode | null | undefined, v: string): string =>
    v.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_m, name: string) => {
      const val = env[name]
      if (val === undefined) {
        problems.push({node: n, message: `environment variable \${${name}} is not set (export ${name}=... or write the value)`})
        return ''
      }
      return val
    })
  /**
   * A DSN: ${VAR} goes into the parsed VALUES, never into the DSN text (a variable holding
   * `x port=7803` stays a password). A DSN that is exactly one ${VAR} takes the whole DSN from it.
   */
  const dsnOf = (n: YNode | null | undefined, what: string): {text: string; conn?: ConnInfo} | undefined => {
    const raw = str(n, what, false)
    if (raw === undefined) return undefined
    const whole = /^\s*\$\{([A-Za-z_][A-Za-z0-9_]*)\}\s*$/.exec(raw)
    try {
      const conn = whole ? parseConnInfo(expand(n, raw), {env}) : parseConnInfo(raw, {env, expandValue: v => expand(n, v)})
      return {text: raw, conn}
    } catch (e) {
      problems.push({node: n, message: `${what}: ${(e as Error).message}`})
      return {text: raw}
    }
  }
  const str = (n: YNode | null | undefined, what: string, expandIt = true): string | undefined => {
    if (!n || !isScalar(n) || n.value === null || n.value === undefined) {
      problems.push({node: n, message: `${what} is required and must be a string`})
      return undefined
    }
    if (typeof n.value !== 'string') {
      problems.push({node: n, message: `${what} must be a string (quote it)`})
      return undefined
    }
    return expandIt ? expand(n, n.value) : n.value
  }
  const checkKeys = (m: import('yaml').YAMLMap, allowed: string[], ctx: string) => {
    for (const item of m.items) {
      const k = isScalar(item.key) ? String(item.key.value) : String(item.key)
      if (!allowed.includes(k)) {
        const dym = didYouMean(k, allowed)
        problems.push({
          node: item.key as YNode,
          message: `unknown key "${k}" in ${ctx}${dym ? ` (did you mean "${dym}"?)` : ''}; allowed: ${allowed.join(', ')}`,
        })
      }
    }
  }
  checkKeys(rootMap, TOP_KEYS, 'the top level')

  // cluster
  const clusterNode = rootMap.get('cluster', true) as YNode | undefined
  let cluster = ''
  if (!clusterNode) problems.push({node: root, message: 'missing "cluster:" (a name like "shop")'})
  else {
    cluster = str(clusterNode, 'cluster') ?? ''
    if (cluster) checkName(cluster, 'cluster', m => problems.push({node: clusterNode, message: m}))
  }

  // tables
  const tables: TableName[] = []
  const tablesNode = rootMap.get('tables', true) as YNode | undefined
  if (!tablesNode) problems.push({node: root, message: 'missing "tables:" (a list like "- public.users")'})
  else if (!isSeq(tablesNode)) problems.push({node: tablesNode, message: '"tables" must be a list of schema-qualified table names'})
  else {
    if (tablesNode.items.length === 0) problems.push({node: tablesNode, message: '"tables" is empty: list at least one table'})
    const seen = new Set<string>()
    for (const item of tablesNode.items as YNode[]) {
      const s = str(item, 'a table name')
      if (s === undefined) continue
      try {
        const t = parseTableName(s)
        if (seen.has(t.qualified)) problems.push({node: item, message: `table ${t.display} is listed twice`})
        seen.add(t.qualified)
        tables.push(t)
      } catch (e) {
        problems.push({node: item, message: (e as Error).message})
      }
    }
  }

  // nodes
  const nodes: NodeConfig[] = []
  const nodesNode = rootMap.get('nodes', true) as YNode | undefined
  if (!nodesNode) problems.push({node: root, message: 'missing "nodes:" (a list of {name, dsn})'})
  else if (!isSeq(nodesNode)) problems.push({node: nodesNode, message: '"nodes" must be a list of {name, dsn, peer_dsn}'})
  else {
    const names = new Map<string, YNode>()
    for (const item of nodesNode.items as YNode[]) {
      if (!isMap(item)) {
        problems.push({node: item, message: 'each node must be a mapping with name and dsn'})
        continue
      }
      checkKeys(item, NODE_KEYS, 'a node')
      const nameNode = item.get('name', true) as YNode | undefined
      const name = nameNode ? str(nameNode, 'node name') : undefined
      if (!nameNode) problems.push({node: item, message: 'node without "name:"'})
      if (name !== undefined) {
        checkName(name, `node name "${name}"`, m => problems.push({node: nameNode, message: m}))
        const prev = names.get(name)
        if (prev) problems.push({node: nameNode, message: `duplicate node "${name}" (first defined at ${where(prev)}); node names must be unique`})
        else names.set(name, nameNode!)
      }
      const dsnNode = item.get('dsn', true) as YNode | undefined
      if (!dsnNode) problems.push({node: item, message: `node "${name ?? '?'}" has no "dsn:"`})
      const d = dsnNode ? dsnOf(dsnNode, `dsn of node "${name ?? '?'}"`) : undefined
      const peerNode = item.get('peer_dsn', true) as YNode | undefined
      const p = peerNode ? dsnOf(peerNode, `peer_dsn of node "${name ?? '?'}"`) : undefined
      const dsn = d?.text
      const peerDsn = p?.text
      const conn = d?.conn
      const peerConn = p?.conn
      if (name && dsn !== undefined && conn) nodes.push({name, dsn, peerDsn, conn, peerConn: peerConn ?? conn})
    }
    if (nodesNode.items.length === 0) problems.push({node: nodesNode, message: '"nodes" is empty: list at least two nodes'})
  }

  // health
  const health = {...DEFAULT_HEALTH}
  const healthNode = rootMap.get('health', true) as YNode | undefined
  if (healthNode) {
    if (!isMap(healthNode)) problems.push({node: healthNode, message: '"health" must be a mapping'})
    else {
      checkKeys(healthNode, HEALTH_KEYS, '"health"')
      const num = (k: string): number | undefined => {
        const n = healthNode.get(k, true) as YNode | undefined
        if (!n) return undefined
        const v = isScalar(n) ? n.value : undefined
        if (typeof v !== 'number' || !(v >= 0)) {
          problems.push({node: n, message: `health.${k} must be a non-negative number`})
          return undefined
        }
        return v
      }
      health.lagWarningBytes = num('lag_warning_bytes') ?? health.lagWarningBytes
      health.lagWarningSeconds = num('lag_warning_seconds') ?? health.lagWarningSeconds
      health.errorWindowSeconds = num('error_window_seconds') ?? health.errorWindowSeconds
    }
  }
  let disableOnError = false
  const doeNode = rootMap.get('disable_on_error', true) as YNode | undefined
  if (doeNode) {
    if (!isScalar(doeNode) || typeof doeNode.value !== 'boolean') problems.push({node: doeNode, message: 'disable_on_error must be true or false'})
    else disableOnError = doeNode.value
  }

  if (problems.length > 0) fail(problems.map(p => `${where(p.node)}: ${p.message}`))

  const cfg: Config = {file, cluster, tables, nodes, health, disableOnError}
  const collisions = objectNameCollisions(cfg)
  if (collisions.length) fail(collisions.map(c => `${where(nodesNode)}: ${c}`))
  return cfg
}

export function checkName(name: string, what: string, report: (m: string) => void): void {
  if (!NAME_RE.test(name)) {
    const fixed = name.toLowerCase().replace(/[^a-z0-9_]/g, '_').replace(/^[^a-z]+/, '')
    report(`${what} must match [a-z][a-z0-9_]* (lower-case letter, then letters, digits, _)${fixed ? `; e.g. "${fixed.slice(0, NAME_MAX)}"` : ''}`)
  } else if (name.length > NAME_MAX) {
    report(`${what} is ${name.length} characters long; at most ${NAME_MAX} are allowed`)
  }
}

/** Write a new config file (wizard) atomically. */
export async function writeNewConfig(
  file: string,
  cfg: {cluster: string; tables: string[]; nodes: {name: string; dsn: string; peer_dsn?: string}[]},
): Promise<void> {
  const doc = new Document({cluster: cfg.cluster, tables: cfg.tables, nodes: cfg.nodes})
  doc.commentBefore = ' mmlite cluster configuration (see README.md "Configuration")'
  await atomicWrite(file, doc.toString())
}

/** Add or remove a node in an existing file, keeping comments and formatting. */
export async function editConfigNodes(
  file: string,
  edit: {add?: {name: string; dsn: string; peer_dsn?: string}; remove?: string},
): Promise<void> {
  const text = readFileSync(file, 'utf8')
  noteState(file, text)
  const doc = parseDocument(text)
  const nodes = doc.get('nodes', true)
  if (!isSeq(nodes)) throw new MmliteError(`${file}: "nodes" is not a list`, {code: ExitCode.Config})
  if (edit.remove) {
    const idx = nodes.items.findIndex(n => isMap(n) && n.get('name') === edit.remove)
    if (idx >= 0) nodes.items.splice(idx, 1)
  }
  if (edit.add) {
    const exists = nodes.items.some(n => isMap(n) && n.get('name') === edit.add!.name)
    if (!exists) nodes.items.push(doc.createNode(edit.add))
  }
  await atomicWrite(file, doc.toString())
}

/**
 * Record `disable_on_error: true` in an existing file, keeping comments and formatting (the key
 * is updated in place, or appended). Returns false when the file already said so.
 * Used by `init --disable-on-error` (and `add-node --disable-on-error`).
 */
export async function recordDisableOnError(file: string): Promise<boolean> {
  const doc = parseDocument(readFileSync(file, 'utf8'))
  if (doc.get('disable_on_error') === true) return false
  doc.set('disable_on_error', true)
  await atomicWrite(file, doc.toString())
  return true
}

/** Write a file atomically (0600, exclusive temp file, no symbolic link followed). */
export async function atomicWrite(file: string, content: string): Promise<void> {
  await atomicWritePrivate(file, content)
}
