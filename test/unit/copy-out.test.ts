/**
 * The COPY OUT reader without a server: a fake connection delivers a server's byte stream
 * (CopyOutResponse, one CopyData per row, a Notice in between, CopyDone, CommandComplete,
 * ReadyForQuery) cut into chunks at every possible boundary; the reader yields exactly the rows'
 * bytes and hands everything after CopyDone back to pg's handler, byte for byte.
 */
import assert from 'node:assert/strict'
import {EventEmitter} from 'node:events'
import {CopyOut} from '../../src/steps/add-node/copy-out.js'

function msg(code: string, body: Buffer): Buffer {
  const h = Buffer.alloc(5)
  h.write(code, 0, 'latin1')
  h.writeUInt32BE(body.length + 4, 1)
  return Buffer.concat([h, body])
}

/** A socket: read() in paused mode, 'data' events once resumed (as net.Socket). */
class FakeStream extends EventEmitter {
  queue: Buffer[] = []
  flowing = true
  read(): Buffer | null {
    return this.queue.shift() ?? null
  }
  pause(): void {
    this.flowing = false
  }
  resume(): void {
    this.flowing = true
    for (let b = this.read(); b; b = this.read()) this.emit('data', b)
  }
  deliver(b: Buffer): void {
    if (this.flowing) this.emit('data', b)
    else {
      this.queue.push(b)
      this.emit('readable')
    }
  }
}

async function runWith(chunks: Buffer[]): Promise<{data: Buffer; handed: Buffer; rowCount: number}> {
  const stream = new FakeStream()
  const handed: Buffer[] = []
  const pgHandler = (b: Buffer) => handed.push(b)
  stream.on('data', pgHandler)
  const src = new CopyOut('COPY t TO STDOUT')
  src.submit({stream, query: () => {}})
  const got: Buffer[] = []
  src.on('data', (b: Buffer) => got.push(Buffer.from(b)))
  const ended = new Promise(r => src.on('end', r))
  for (const c of chunks) {
    stream.deliver(Buffer.from(c))
    await new Promise(r => setImmediate(r))
  }
  await ended
  src.handleCommandComplete({text: 'COPY 3'})
  return {data: Buffer.concat(got), handed: Buffer.concat(handed), rowCount: src.rowCount}
}

describe('COPY OUT reader', () => {
  const rows = [Buffer.from('row one\n'), Buffer.from('second row, longer\n'), Buffer.from('3\n')]
  const tail = Buffer.concat([msg('C', Buffer.from('COPY 3\0')), msg('Z', Buffer.from('I'))])
  const wire = Buffer.concat([
    msg('H', Buffer.from([0, 0, 1, 0, 0])),
    msg('d', rows[0]),
    msg('N', Buffer.from('Snotice\0\0')),
    msg('d', rows[1]),
    msg('d', rows[2]),
    msg('c', Buffer.alloc(0)),
    tail,
  ])

  it('yields exactly the rows, for every single cut of the stream, and hands the rest back to pg', async () => {
    for (let cut = 0; cut <= wire.length; cut++) {
      const r = await runWith([wire.subarray(0, cut), wire.subarray(cut)].filter(b => b.length))
      assert.deepEqual(r.data, Buffer.concat(rows), `cut at ${cut}`)
      assert.deepEqual(r.handed, tail, `cut at ${cut}`)
      assert.equal(r.rowCount, 3)
    }
  })

  it('byte by byte', async () => {
    const r = await runWith([...wire].map(b => Buffer.from([b])))
    assert.deepEqual(r.data, Buffer.concat(rows))
    assert.deepEqual(r.handed, tail)
  })

  it('an ErrorResponse in the middle goes to pg whole, after the rows before it', async () => {
    const err = Buffer.concat([msg('E', Buffer.from('SERROR\0Mboom\0\0')), msg('Z', Buffer.from('I'))])
    const stream = new FakeStream()
    const handed: Buffer[] = []
    stream.on('data', (b: Buffer) => handed.push(b))
    const src = new CopyOut('COPY t TO STDOUT')
    src.submit({stream, query: () => {}})
    const got: Buffer[] = []
    src.on('data', (b: Buffer) => got.push(Buffer.from(b)))
    stream.deliver(Buffer.concat([msg('H', Buffer.from([0, 0, 0])), msg('d', rows[0]), err]))
    await new Promise(r => setImmediate(r))
    assert.deepEqual(Buffer.concat(got), rows[0])
    assert.deepEqual(Buffer.concat(handed), err)
  })
})
