/**
 * `COPY … TO STDOUT` as a Readable of the raw COPY data, for pg's Client#query (the same
 * submittable protocol as pg-copy-streams' `to`, whose socket take-over it follows). The
 * difference is the cost per row: the server sends one CopyData message per row, and instead
 * of slicing each into its own Buffer this strips the 5-byte message headers in place within
 * each socket chunk and pushes one Buffer per chunk (a copyWithin per row, no allocation).
 * The row count comes from the command tag (rowCount), like pg-copy-streams.
 */
import {Readable} from 'node:stream'
import type pg from 'pg'

const COPY_DATA = 0x64 // d
const COPY_DONE = 0x63 // c
const ERROR_RESPONSE = 0x45 // E
/** messages the server may send in the middle of a COPY OUT (and CopyOutResponse first) */
const SKIPPED = new Set([0x48 /* H CopyOutResponse */, 0x53 /* S ParameterStatus */, 0x4e /* N Notice */, 0x41 /* A Notification */])

interface PgConnection {
  stream: {
    read(): Buffer | null
    listeners(e: 'data'): Array<(b: Buffer) => void>
    on(e: string, f: (...a: never[]) => void): void
    removeListener(e: string, f: (...a: never[]) => void): void
    pause(): void
    resume(): void
  }
  query(text: string): void
}

export class CopyOut extends Readable implements pg.Submittable {
  rowCount = 0
  private connection?: PgConnection
  private pgHandler?: (b: Buffer) => void
  private readonly hdr = Buffer.alloc(5)
  private hdrLen = 0
  private code = 0
  private remaining = 0
  private inMessage = false
  private drained = false
  private forwarding = false
  private finished = false
  private readonly onReadable = () => this.forward()
  private resolveComplete: () => void = () => {}
  /** resolved when the server has finished the command (rowCount is then set) */
  readonly complete = new Promise<void>(resolve => (this.resolveComplete = resolve))

  constructor(private readonly text: string) {
    super({highWaterMark: 1 << 20})
  }

  /** called by pg when the query is sent */
  submit(conn: unknown): void {
    const connection = conn as PgConnection
    this.connection = connection
    const s = connection.stream
    const handlers = s.listeners('data')
    if (handlers.length !== 1) throw new Error('internal: unexpected listeners on the connection')
    const h = handlers[0]
    this.pgHandler = h
    s.removeListener('data', h)
    s.pause()
    this.forward()
    s.on('readable', this.onReadable)
    connection.query(this.text)
  }

  override _read(): void {
    this.drained = true
    this.forward()
  }

  private forward(): void {
    if (this.forwarding || !this.drained || !this.connection || this.finished) return
    this.forwarding = true
    let chunk: Buffer | null
    while (this.drained && !this.finished && (chunk = this.connection.stream.read()) !== null) this.drained = this.parse(chunk)
    this.forwarding = false
  }

  /** Give the connection back to pg with the bytes we did not consume. */
  private detach(rest: Buffer): void {
    this.finished = true
    const s = this.connection!.stream
    s.removeListener('readable', this.onReadable)
    s.on('data', this.pgHandler!)
    if (rest.length) this.pgHandler!(rest)
    process.nextTick(() => s.resume())
  }

  private parse(chunk: Buffer): boolean {
    const n = chunk.length
    let pos = 0
    let out = 0
    let done = false
    while (pos < n) {
      if (this.inMessage) {
        const k = Math.min(this.remaining, n - pos)
        if (this.code === COPY_DATA) {
          if (out !== pos) chunk.copyWithin(out, pos, pos + k)
          out += k
        }
        pos += k
        this.remaining -= k
        if (this.remaining === 0) this.inMessage = false
        continue
      }
      // a message header: code byte + int32 length (including itself), maybe split across chunks
      if (this.hdrLen === 0) {
        const code = chunk[pos]
        if (code === ERROR_RESPONSE) {
          // pg parses the error and fails the query (handleError)
          if (out > 0) this.push(chunk.subarray(0, out))
          this.detach(chunk.subarray(pos))
          return false
        }
        if (n - pos >= 5) {
          this.code = code
          this.remaining = chunk.readUInt32BE(pos + 1) - 4
          pos += 5
        } else {
          chunk.copy(this.hdr, 0, pos, n)
          this.hdrLen = n - pos
          pos = n
          break
        }
      } else {
        const k = Math.min(5 - this.hdrLen, n - pos)
        chunk.copy(this.hdr, this.hdrLen, pos, pos + k)
        this.hdrLen += k
        pos += k
        if (this.hdrLen < 5) break
        this.code = this.hdr[0]
        this.remaining = this.hdr.readUInt32BE(1) - 4
        this.hdrLen = 0
      }
      if (this.code === COPY_DATA || SKIPPED.has(this.code)) {
        this.inMessage = this.remaining > 0
        continue
      }
      if (this.code === COPY_DONE) {
        done = true
        break
      }
      // anything else ends the COPY: hand it (header included) back to pg
      this.hdr.writeUInt8(this.code, 0)
      this.hdr.writeUInt32BE(this.remaining + 4, 1)
      if (out > 0) this.push(chunk.subarray(0, out))
      this.push(null)
      this.detach(Buffer.concat([this.hdr, chunk.subarray(pos)]))
      return false
    }
    let ok = true
    if (out > 0) ok = this.push(chunk.subarray(0, out))
    if (done) {
      this.push(null)
      // CommandComplete (the row count) and ReadyForQuery go to pg
      this.detach(chunk.subarray(pos))
      return false
    }
    return ok
  }

  // ---- called by pg's Client for the active query

  handleError(err: Error): void {
    this.emit('error', err)
  }

  handleCommandComplete(msg: {text?: string}): void {
    const m = /COPY (\d+)/.exec(msg?.text ?? '')
    if (m) this.rowCount = Number(m[1])
  }

  handleReadyForQuery(): void {
    this.resolveComplete()
  }
}

export function copyOut(text: string): CopyOut {
  return new CopyOut(text)
}
