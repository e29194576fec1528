/**
 * A parser for the pgoutput logical replication protocol (version 1, text tuples, no
 * streaming): the messages `pg_logical_slot_peek_binary_changes(slot, ..., 'proto_version',
 * '1', 'publication_names', ...)` returns, one bytea per message, for slots using pgoutput or
 * mmlite (which is pgoutput with origin filtering). Pure: bytes in, transactions out.
 *
 * Messages (all integers big-endian; strings NUL-terminated):
 *   B  Begin     final_lsn int64 (LSN of the commit record: what ALTER SUBSCRIPTION SKIP expects),
 *                commit timestamp int64 (µs since 2000-01-01 UTC), xid int32
 *   C  Commit    flags int8, commit_lsn int64, end_lsn int64 (end of the commit record: the
 *                position a subscription's origin reaches once it applied the transaction), ts int64
 *   O  Origin    lsn int64, name string
 *   R  Relation  oid int32, namespace string ('' = pg_catalog), name string, replica identity int8,
 *                ncols int16, per column: flags int8 (1 = part of the key), name string, type oid int32, typmod int32
 *   Y  Type      oid int32, namespace string, name string
 *   I  Insert    relation oid int32, 'N' TupleData
 *   U  Update    relation oid int32, optional ('K' key | 'O' old row) TupleData, 'N' TupleData
 *   D  Delete    relation oid int32, ('K' | 'O') TupleData
 *   T  Truncate  nrelations int32, options int8 (1 cascade, 2 restart identity), oids int32[]
 *   M  Message   flags int8, lsn int64, prefix string, length int32, content
 * TupleData: ncols int16, per column 'n' (null) | 'u' (unchanged TOASTed value) | 't' len int32 + text | 'b' len + binary.
 */

import {formatLsn} from '../db/lsn.js'

export interface RelColumn {
  name: string
  /** part of the publisher's replica identity (primary key, identity index, or every column with FULL) */
  key: boolean
  typeOid: number
  typmod: number
}

export interface Relation {
  oid: number
  schema: string
  name: string
  /** d default (primary key), n nothing, f full, i index */
  replicaIdentity: string
  columns: RelColumn[]
}

/** Column values of one tuple: text, null; columns holding an unchanged TOAST value are absent and listed in `unchanged`. */
export interface TupleValues {
  values: Record<string, string | null>
  unchanged: string[]
}

export interface Change {
  op: 'insert' | 'update' | 'delete' | 'truncate'
  /** schema-qualified, for display ("public.users"); truncate: every table, comma separated */
  table: string
  schema: string
  name: string
  /** column names in table order */
  columns: string[]
  /** the replica identity columns and their values identifying the row (old key when sent, else from the new row) */
  key: Record<string, string | null>
  /** insert and update: the new row */
  new?: TupleValues
  /** update (when the key changed or REPLICA IDENTITY FULL) and delete: the old key / row */
  old?: TupleValues
  /** truncate only */
  truncate?: {tables: string[]; cascade: boolean; restartIdentity: boolean}
}

export interface DecodedTx {
  xid: number
  /** the LSN of the transaction's first change (the lsn of its Begin row in a SQL peek), when known */
  firstLsn?: string
  /** LSN of the commit record: ALTER SUBSCRIPTION ... SKIP (lsn = finalLsn) */
  finalLsn: string
  /** end of the commit record: a subscription's origin is here once it applied (or skipped) the transaction */
  endLsn: string
  /** ISO 8601 */
  commitTime: string
  /** set when the transaction itself was replicated in from elsewhere (never for origin-filtered slots) */
  origin?: {name: string; lsn: string}
  /** every change of the transaction (insert, update, delete, truncate) */
  changeCount: number
  /** its first changes: all of them, or the first `keepChanges` when the decoder bounds them */
  changes: Change[]
  /** logical decoding messages ('M'), if the output had any */
  messages: number
}

const PG_EPOCH_MS = 946_684_800_000n

/** µs since 2000-01-01 UTC → ISO 8601 (millisecond precision) */
export function pgTimestampToIso(us: bigint): string {
  return new Date(Number(PG_EPOCH_MS + us / 1000n)).toISOString()
}

// ------------------------------------------------------------------------------------ reader

class Reader {
  private pos = 0
  constructor(private readonly buf: Buffer) {}

  get done(): boolean {
    return this.pos >= this.buf.length
  }

  private need(n: number): void {
    if (this.pos + n > this.buf.length) throw new PgoutputError(`message truncated at byte ${this.pos} (need ${n} more of ${this.buf.length})`)
  }

  byte(): string {
    this.need(1)
    return String.fromCharCode(this.buf[this.pos++])
  }

  int8(): number {
    this.need(1)
    return this.buf.readInt8(this.pos++)
  }

  int16(): number {
    this.need(2)
    const v = this.buf.readInt16BE(this.pos)
    this.pos += 2
    return v
  }

  int32(): number {
    this.need(4)
    const v = this.buf.readInt32BE(this.pos)
    this.pos += 4
    return v
  }

  uint32(): number {
    this.need(4)
    const v = this.buf.readUInt32BE(this.pos)
    this.pos += 4
    return v
  }

  int64(): bigint {
    this.need(8)
    const v = this.buf.readBigInt64BE(this.pos)
    this.pos += 8
    return v
  }

  uint64(): bigint {
    this.need(8)
    const v = this.buf.readBigUInt64BE(this.pos)
    this.pos += 8
    return v
  }

  string(): string {
    const end = this.buf.indexOf(0, this.pos)
    if (end < 0) throw new PgoutputError(`unterminated string at byte ${this.pos}`)
    const s = this.buf.toString('utf8', this.pos, end)
    this.pos = end + 1
    return s
  }

  bytes(n: number): Buffer {
    this.need(n)
    const b = this.buf.subarray(this.pos, this.pos + n)
    this.pos += n
    return b
  }
}

export class PgoutputError extends Error {
  constructor(message: string) {
    super(`pgoutput: ${message}`)
    this.name = 'PgoutputError'
  }
}

// ------------------------------------------------------------------------------------ decoder

function tuple(r: Reader, rel: Relation): TupleValues {
  const n = r.int16()
  const values: Record<string, string | null> = {}
  const unchanged: string[] = []
  for (let i = 0; i < n; i++) {
    const col = rel.columns[i]?.name ?? `column${i + 1}`
    const kind = r.byte()
    if (kind === 'n') values[col] = null
    else if (kind === 'u') unchanged.push(col)
    else if (kind === 't') values[col] = r.bytes(r.int32()).toString('utf8')
    else if (kind === 'b') values[col] = '\\x' + r.bytes(r.int32()).toString('hex')
    else throw new PgoutputError(`unknown tuple column kind ${JSON.stringify(kind)}`)
  }
  return {values, unchanged}
}

function keyOf(rel: Relation, t: TupleValues): Record<string, string | null> {
  const key: Record<string, string | null> = {}
  for (const c of rel.columns) if (c.key && c.name in t.values) key[c.name] = t.values[c.name]
  return key
}

function qualified(rel: Relation): string {
  return `${rel.schema || 'pg_catalog'}.${rel.name}`
}

/**
 * Decode a stream of pgoutput messages into transactions (complete ones only: Begin … Commit).
 * `relations` carries Relation messages across calls (they are sent once per session and
 * relation, before the first change of a table).
 */
export interface DecoderOptions {
  /** keep at most this many changes per transaction in `changes` (changeCount counts them all); default: all */
  keepChanges?: number
  /** every change of the transaction with this final LSN also goes to `sink` (drained by the caller) */
  capture?: {finalLsn: string; sink: Change[]}
}

export class PgoutputDecoder {
  readonly relations = new Map<number, Relation>()
  private current?: DecodedTx
  private capturing = false
  constructor(private readonly opts: DecoderOptions = {}) {}

  private add(tx: DecodedTx, ch: Change): void {
    tx.changeCount++
    if (this.opts.keepChanges === undefined || tx.changes.length < this.opts.keepChanges) tx.changes.push(ch)
    if (this.capturing) this.opts.capture!.sink.push(ch)
  }

  /** Feed one message (with its row's lsn from a SQL peek); returns the transaction when the message was its Commit. */
  push(msg: Buffer, lsn?: string): DecodedTx | undefined {
    const r = new Reader(msg)
    const type = r.byte()
    switch (type) {
      case 'B': {
        const finalLsn = formatLsn(r.uint64())
        const ts = r.int64()
        const xid = r.uint32()
        this.current = {xid, ...(lsn ? {firstLsn: lsn} : {}), finalLsn, endLsn: '', commitTime: pgTimestampToIso(ts), changeCount: 0, changes: [], messages: 0}
        this.capturing = this.opts.capture?.finalLsn === finalLsn
        return undefined
      }
      case 'C': {
        r.int8()
        const commitLsn = formatLsn(r.uint64())
        const endLsn = formatLsn(r.uint64())
        const tx = this.current
        if (!tx) throw new PgoutputError('Commit without Begin')
        if (commitLsn !== tx.finalLsn) throw new PgoutputError(`Commit LSN ${commitLsn} differs from Begin's final LSN ${tx.finalLsn}`)
        tx.endLsn = endLsn
        this.current = undefined
        this.capturing = false
        return tx
      }
      case 'O': {
        const lsn = formatLsn(r.uint64())
        const name = r.string()
        if (this.current) this.current.origin = {name, lsn}
        return undefined
      }
      case 'R': {
        const oid = r.uint32()
        const schema = r.string()
        const name = r.string()
        const replicaIdentity = String.fromCharCode(r.int8())
        const n = r.int16()
        const columns: RelColumn[] = []
        for (let i = 0; i < n; i++) {
          const flags = r.int8()
          columns.push({key: (flags & 1) === 1, name: r.string(), typeOid: r.uint32(), typmod: r.int32()})
        }
        this.relations.set(oid, {oid, schema, name, replicaIdentity, columns})
        return undefined
      }
      case 'Y':
        return undefined
      case 'I':
      case 'U':
      case 'D': {
        const tx = this.inTx(type)
        const rel = this.relation(r.uint32())
        const base = {table: qualified(rel), schema: rel.schema || 'pg_catalog', name: rel.name, columns: rel.columns.map(c => c.name)}
        let kind = r.byte()
        if (type === 'I') {
          if (kind !== 'N') throw new PgoutputError(`Insert: expected N, got ${JSON.stringify(kind)}`)
          const nw = tuple(r, rel)
          this.add(tx, {op: 'insert', ...base, key: keyOf(rel, nw), new: nw})
          return undefined
        }
        let old: TupleValues | undefined
        if (kind === 'K' || kind === 'O') {
          old = tuple(r, rel)
          if (type === 'D') {
            this.add(tx, {op: 'delete', ...base, key: keyOf(rel, old), old})
            return undefined
          }
          kind = r.byte()
        } else if (type === 'D') throw new PgoutputError(`Delete: expected K or O, got ${JSON.stringify(kind)}`)
        if (kind !== 'N') throw new PgoutputError(`Update: expected N, got ${JSON.stringify(kind)}`)
        const nw = tuple(r, rel)
        this.add(tx, {op: 'update', ...base, key: keyOf(rel, old ?? nw), new: nw, ...(old ? {old} : {})})
        return undefined
      }
      case 'T': {
        const tx = this.inTx(type)
        const n = r.int32()
        const flags = r.int8()
        const rels: Relation[] = []
        for (let i = 0; i < n; i++) rels.push(this.relation(r.uint32()))
        const tables = rels.map(qualified)
        this.add(tx, {
          op: 'truncate',
          table: tables.join(', '),
          schema: rels[0]?.schema ?? '',
          name: rels[0]?.name ?? '',
          columns: [],
          key: {},
          truncate: {tables, cascade: (flags & 1) === 1, restartIdentity: (flags & 2) === 2},
        })
        return undefined
      }
      case 'M':
        if (this.current) this.current.messages++
        return undefined
      default:
        throw new PgoutputError(`unsupported message type ${JSON.stringify(type)} (streamed or two-phase output is not requested)`)
    }
  }

  private inTx(type: string): DecodedTx {
    if (!this.current) throw new PgoutputError(`${type} outside a transaction`)
    return this.current
  }

  private relation(oid: number): Relation {
    const rel = this.relations.get(oid)
    if (!rel) throw new PgoutputError(`change for relation ${oid} before its Relation message`)
    return rel
  }
}

/** Decode a whole sequence of messages; a trailing incomplete transaction is left out. */
export function decodeMessages(msgs: Buffer[], lsns?: string[], opts?: DecoderOptions): DecodedTx[] {
  const d = new PgoutputDecoder(opts)
  const out: DecodedTx[] = []
  for (const [i, m] of msgs.entries()) {
    const tx = d.push(m, lsns?.[i])
    if (tx) out.push(tx)
  }
  return out
}
