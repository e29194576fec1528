/**
 * `mmlite status` health classification: pure functions over collected probes
 * (src/cluster/status.ts evaluate / classifyLink / overallHealth / exitCodeFor),
 * plus the renderer's layout and its colours: only status cells/words are coloured, each in its
 * health's colour, and nothing at all without colour support. (The renderer never sees a DSN;
 * passwords are redacted when status is collected: see test/integration/status.test.ts.)
 */
import assert from 'node:assert/strict'
import {
  evaluate,
  exitCodeFor,
  linkKey,
  PAUSED_REASON,
  type NodeProbe,
  type SlotRow,
  type StatusResult,
  type SubRow,
  type UnfinishedOp,
} from '../../src/cluster/status.js'
import {edgeName} from '../../src/cluster/naming.js'
import {DEFAULT_HEALTH} from '../../src/config/config.js'
import chalk from 'chalk'
import {renderStatus} from '../../src/ui/status-view.js'
import {normalizeWatchArg} from '../../src/commands/status.js'

const CLUSTER = 'shop'
const MB = 1024 * 1024

function slot(from: string, to: string, over: Partial<SlotRow> = {}): SlotRow {
  return {
    slot_name: edgeName(CLUSTER, from, to),
    active: true,
    wal_status: 'reserved',
    confirmed_flush_lsn: '0/1000',
    restart_lsn: '0/F00',
    lag_bytes: 0,
    retained_bytes: 256,
    ...over,
  }
}

function sub(from: string, to: string, over: Partial<SubRow> = {}): SubRow {
  return {
    subname: edgeName(CLUSTER, from, to),
    enabled: true,
    worker_pid: 4242,
    last_msg_age_s: 1.5,
    latest_end_lsn: '0/1000',
    apply_error_count: 0,
    sync_error_count: 0,
    conflicts: null,
    ...over,
  }
}

/** A healthy full mesh of `names` (PG 16), every slot and subscription in place. */
function mesh(names: string[], versionNum = 160004): NodeProbe[] {
  return names.map(n => ({
    name: n,
    target: `127.0.0.1:5432/${n}`,
    reachable: true,
    version: String(versionNum / 10000),
    versionNum,
    data: {
      in_recovery: false,
      current_lsn: '0/1000',
      publication: true,
      slots: names.filter(o => o !== n).map(o => slot(n, o)),
      subscriptions: names.filter(o => o !== n).map(o => sub(o, n)),
    },
  }))
}

function node(probes: NodeProbe[], name: string): NodeProbe {
  return probes.find(p => p.name === name)!
}

function slotOf(probes: NodeProbe[], from: string, to: string): SlotRow {
  return node(probes, from).data!.slots.find(s => s.slot_name === edgeName(CLUSTER, from, to))!
}

function subOf(probes: NodeProbe[], from: string, to: string): SubRow {
  return node(probes, to).data!.subscriptions.find(s => s.subname === edgeName(CLUSTER, from, to))!
}

function unreachable(probes: NodeProbe[], name: string): void {
  const p = node(probes, name)
  p.reachable = false
  p.error = 'connection refused (connect ECONNREFUSED 127.0.0.1:5432): is the server running and listening there?'
  p.errorKind = 'refused'
  p.version = null
  p.versionNum = null
  delete p.data
}

function run(probes: NodeProbe[], opts: {unfinished?: UnfinishedOp[]; thresholds?: typeof DEFAULT_HEALTH; errorsRecent?: Map<string, number>} = {}): StatusResult {
  return evaluate({
    cluster: CLUSTER,
    probes,
    thresholds: opts.thresholds ?? DEFAULT_HEALTH,
    unfinished: opts.unfinished ?? [],
    checkedAt: new Date('2025-01-01T00:00:00Z'),
    errorsRecent: opts.errorsRecent,
  })
}

function link(r: StatusResult, from: string, to: string) {
  const l = r.links.find(x => x.from === from && x.to === to)
  assert.ok(l, `link ${from}→${to}`)
  return l
}

describe('status health classification', () => {
  it('healthy mesh: every link ok, overall ok, exit 0, result shape', () => {
    const r = run(mesh(['a', 'b', 'c']))
    assert.equal(r.health, 'ok')
    assert.equal(exitCodeFor(r.health), 0)
    assert.equal(r.cluster, CLUSTER)
    assert.equal(r.checkedAt, '2025-01-01T00:00:00.000Z')
    assert.equal(r.links.length, 6)
    assert.deepEqual(r.unfinished, [])
    for (const l of r.links) {
      assert.equal(l.status, 'ok')
      assert.deepEqual(l.reasons, [])
    }
    assert.deepEqual(link(r, 'a', 'b'), {
      from: 'a',
      to: 'b',
      mechanism: 'native',
      status: 'ok',
      reasons: [],
      subscriptionEnabled: true,
      workerRunning: true,
      slotActive: true,
      walStatus: 'reserved',
      lagBytes: 0,
      retainedBytes: 256,
      lastMsgAgeSeconds: 1.5,
      lagSeconds: 0,
      applyErrorCount: 0,
      syncErrorCount: 0,
    })
    assert.deepEqual(r.nodes[0], {name: 'a', target: '127.0.0.1:5432/a', reachable: true, version: '16.0004', versionNum: 160004})
  })

  it('mechanism is plugin when either end is older than 16', () => {
    const p = mesh(['a', 'b'])
    node(p, 'b').versionNum = 150004
    const r = run(p)
    assert.equal(link(r, 'a', 'b').mechanism, 'plugin')
    assert.equal(link(r, 'b', 'a').mechanism, 'plugin')
  })

  it('warning when lag exceeds lagWarningBytes (and not at the threshold)', () => {
    const p = mesh(['a', 'b'])
    slotOf(p, 'a', 'b').lag_bytes = 10 * MB
    assert.equal(run(p).health, 'ok', 'exactly at the threshold is fine')
    slotOf(p, 'a', 'b').lag_bytes = 10 * MB + 1
    const r = run(p)
    assert.equal(link(r, 'a', 'b').status, 'warning')
    assert.match(link(r, 'a', 'b').reasons[0], /^lag 10\.0 MB > 10\.0 MB$/)
    assert.equal(link(r, 'b', 'a').status, 'ok')
    assert.equal(r.health, 'warning')
    assert.equal(exitCodeFor(r.health), 1)
    // thresholds from flags/config are honoured
    assert.equal(run(p, {thresholds: {...DEFAULT_HEALTH, lagWarningBytes: 20 * MB, lagWarningSeconds: 60}}).health, 'ok')
  })

  it('warning when the link lags more than lagWarningSeconds (walsender flush_lag); an idle link (old last message, no lag) is ok', () => {
    const p = mesh(['a', 'b'])
    subOf(p, 'b', 'a').last_msg_age_s = 75
    assert.equal(run(p).health, 'ok', 'idle: only keepalives, nothing to apply')
    assert.equal(link(run(p), 'b', 'a').lagSeconds, 0)
    slotOf(p, 'b', 'a').lag_s = 75
    const r = run(p)
    assert.equal(link(r, 'b', 'a').status, 'warning')
    assert.match(link(r, 'b', 'a').reasons.join(), /lag 1m15s > 1m0s/)
    assert.equal(link(r, 'b', 'a').lagSeconds, 75)
    assert.equal(r.health, 'warning')
    assert.equal(run(p, {thresholds: {...DEFAULT_HEALTH, lagWarningSeconds: 120}}).health, 'ok')
  })

  it('warning for wal_status unreserved and for RECENT apply errors only', () => {
    const p = mesh(['a', 'b'])
    slotOf(p, 'a', 'b').wal_status = 'unreserved'
    subOf(p, 'b', 'a').apply_error_count = 3
    const old = run(p)
    assert.equal(link(old, 'b', 'a').status, 'ok', 'errors counted long ago do not warn')
    assert.equal(link(old, 'b', 'a').applyErrorCount, 3)
    const r = run(p, {errorsRecent: new Map([[linkKey('b', 'a'), 42]])})
    assert.equal(link(r, 'a', 'b').status, 'warning')
    assert.match(link(r, 'a', 'b').reasons[0], /unreserved/)
    assert.equal(link(r, 'b', 'a').status, 'warning')
    assert.match(link(r, 'b', 'a').reasons[0], /3 apply error\(s\) since stats reset, the last counted 42s ago \(`mmlite status --reset-errors` resets the counts\)/)
    assert.equal(link(r, 'b', 'a').errorsRecentSeconds, 42)
    assert.equal(r.health, 'warning')
  })

  it('critical for a disabled subscription (and its stopped worker)', () => {
    const p = mesh(['a', 'b'])
    Object.assign(subOf(p, 'a', 'b'), {enabled: false, worker_pid: null, last_msg_age_s: null})
    const r = run(p)
    const l = link(r, 'a', 'b')
    assert.equal(l.status, 'critical')
    assert.deepEqual(l.reasons, ['subscription disabled', 'apply worker not running'])
    assert.equal(l.subscriptionEnabled, false)
    assert.equal(l.workerRunning, false)
    assert.equal(r.health, 'critical')
    assert.equal(exitCodeFor(r.health), 2)
  })

  it('critical for an enabled subscription whose apply worker is not running', () => {
    const p = mesh(['a', 'b'])
    subOf(p, 'a', 'b').worker_pid = null
    assert.deepEqual(link(run(p), 'a', 'b').reasons, ['apply worker not running'])
  })

  it('critical for an inactive slot, a missing slot, a missing subscription', () => {
    const p = mesh(['a', 'b', 'c'])
    slotOf(p, 'a', 'b').active = false
    node(p, 'b').data!.slots = node(p, 'b').data!.slots.filter(s => s.slot_name !== edgeName(CLUSTER, 'b', 'c'))
    node(p, 'a').data!.subscriptions = node(p, 'a').data!.subscriptions.filter(s => s.subname !== edgeName(CLUSTER, 'c', 'a'))
    const r = run(p)
    assert.deepEqual(link(r, 'a', 'b').reasons, ['slot inactive'])
    assert.equal(link(r, 'a', 'b').status, 'critical')
    assert.equal(link(r, 'a', 'b').slotActive, false)
    assert.deepEqual(link(r, 'b', 'c').reasons, ['slot missing on b'])
    assert.equal(link(r, 'b', 'c').slotActive, null)
    assert.equal(link(r, 'b', 'c').lagBytes, null)
    assert.deepEqual(link(r, 'c', 'a').reasons, ['subscription missing on a'])
    assert.equal(link(r, 'c', 'a').subscriptionEnabled, null)
    assert.equal(r.health, 'critical')
  })

  it('critical for wal_status lost, even when otherwise streaming', () => {
    const p = mesh(['a', 'b'])
    slotOf(p, 'b', 'a').wal_status = 'lost'
    const r = run(p)
    assert.equal(link(r, 'b', 'a').status, 'critical')
    assert.match(link(r, 'b', 'a').reasons[0], /lost/)
    assert.equal(link(r, 'b', 'a').walStatus, 'lost')
  })

  it('critical for a missing publication on the publisher', () => {
    const p = mesh(['a', 'b'])
    node(p, 'a').data!.publication = false
    const r = run(p)
    assert.equal(link(r, 'a', 'b').status, 'critical')
    assert.equal(link(r, 'b', 'a').status, 'ok')
  })

  it('critical for every link touching an unreachable node; the node carries the reason', () => {
    const p = mesh(['a', 'b', 'c'])
    unreachable(p, 'b')
    const r = run(p)
    assert.equal(r.health, 'critical')
    assert.equal(exitCodeFor(r.health), 2)
    for (const l of r.links) {
      if (l.from === 'b' || l.to === 'b') {
        assert.equal(l.status, 'critical', `${l.from}→${l.to}`)
        assert.ok(l.reasons.includes('b unreachable'), l.reasons.join())
        assert.equal(l.mechanism, null)
      } else assert.equal(l.status, 'ok', `${l.from}→${l.to}`)
    }
    const b = r.nodes.find(n => n.name === 'b')!
    assert.equal(b.reachable, false)
    assert.match(b.error!, /connection refused/)
    assert.deepEqual(Object.keys(b), ['name', 'target', 'reachable', 'error', 'version', 'versionNum'])
  })

  it('an unreachable node alone (no links at all) is critical', () => {
    const p = mesh(['a', 'b'])
    unreachable(p, 'b')
    assert.equal(run(p).health, 'critical')
  })

  it('a reachable node whose status query failed is critical', () => {
    const p = mesh(['a', 'b'])
    delete node(p, 'a').data
    node(p, 'a').error = 'status query failed: permission denied'
    node(p, 'a').errorKind = 'query'
    const r = run(p)
    assert.equal(r.health, 'critical')
    assert.match(link(r, 'a', 'b').reasons[0], /cannot read status of a/)
  })

  it('unknown (exit 3) when no node at all could be reached', () => {
    const p = mesh(['a', 'b'])
    unreachable(p, 'a')
    unreachable(p, 'b')
    const r = run(p)
    assert.equal(r.health, 'unknown')
    assert.equal(exitCodeFor(r.health), 3)
    assert.equal(r.links.length, 2)
    for (const l of r.links) {
      assert.equal(l.status, 'unknown', 'nothing is known about a link neither end of which answered')
      assert.ok(l.reasons.includes('a unreachable') && l.reasons.includes('b unreachable'), l.reasons.join())
    }
  })

  it('a link between two unreachable nodes is unknown; links with a reachable end are critical; overall critical', () => {
    const p = mesh(['a', 'b', 'c'])
    unreachable(p, 'b')
    unreachable(p, 'c')
    const r = run(p)
    assert.equal(r.health, 'critical')
    const st = (f: string, t: string) => r.links.find(l => l.from === f && l.to === t)!.status
    assert.equal(st('b', 'c'), 'unknown')
    assert.equal(st('c', 'b'), 'unknown')
    for (const [f, t] of [['a', 'b'], ['b', 'a'], ['a', 'c'], ['c', 'a']]) assert.equal(st(f, t), 'critical')
  })

  it('paused: a subscription disabled by an unfinished run is paused (critical level) with the reason', () => {
    const p = mesh(['a', 'b', 'c'])
    Object.assign(subOf(p, 'a', 'c'), {enabled: false, worker_pid: null, last_msg_age_s: null})
    slotOf(p, 'a', 'c').active = false
    const unfinished: UnfinishedOp[] = [
      {
        key: 'add-node:c',
        command: 'add-node',
        startedAt: '2025-01-01T00:00:00.000Z',
        values: {pausedSubscriptions: [{node: 'c', subscription: edgeName(CLUSTER, 'a', 'c')}], other: 1},
      },
    ]
    const r = run(p, {unfinished})
    const l = link(r, 'a', 'c')
    assert.equal(l.status, 'paused')
    assert.deepEqual(l.reasons, [PAUSED_REASON('add-node')])
    assert.equal(l.reasons[0], 'paused by unfinished mmlite add-node run; re-run it to finish')
    assert.equal(link(r, 'c', 'a').status, 'ok', 'the reverse link is not paused')
    assert.equal(r.health, 'critical')
    assert.equal(exitCodeFor(r.health), 2)
    assert.deepEqual(r.unfinished, [{key: 'add-node:c', command: 'add-node', startedAt: '2025-01-01T00:00:00.000Z'}])
  })

  it('paused keeps reasons a pause does not explain (unreachable, lost slot)', () => {
    const p = mesh(['a', 'b'])
    subOf(p, 'a', 'b').enabled = false
    slotOf(p, 'a', 'b').wal_status = 'lost'
    const r = run(p, {
      unfinished: [{key: 'k', command: 'remove-node', startedAt: 'x', values: {pausedSubscriptions: [{node: 'b', subscription: edgeName(CLUSTER, 'a', 'b')}]}}],
    })
    const l = link(r, 'a', 'b')
    assert.equal(l.status, 'paused')
    assert.equal(l.reasons.length, 2)
    assert.match(l.reasons[1], /lost/)
  })

  it('an unfinished run without paused subscriptions is listed but changes no link', () => {
    const r = run(mesh(['a', 'b']), {unfinished: [{key: 'init', command: 'init', startedAt: 't', values: {}}]})
    assert.equal(r.health, 'ok')
    assert.deepEqual(r.unfinished, [{key: 'init', command: 'init', startedAt: 't'}])
  })

  it('PG 18 conflict counters are passed through; absent otherwise', () => {
    const p = mesh(['a', 'b'], 180000)
    subOf(p, 'a', 'b').conflicts = {confl_insert_exists: 2, confl_update_missing: 1}
    const r = run(p)
    assert.deepEqual(link(r, 'a', 'b').conflicts, {insertExists: 2, updateMissing: 1})
    assert.equal('conflicts' in link(r, 'b', 'a'), false)
  })

  it('exit code mapping', () => {
    assert.equal(exitCodeFor('ok'), 0)
    assert.equal(exitCodeFor('warning'), 1)
    assert.equal(exitCodeFor('critical'), 2)
    assert.equal(exitCodeFor('unknown'), 3)
  })
})

describe('status rendering', () => {
  it('shows nodes and links (≤ 4 nodes), the matrix with --matrix or above 4 nodes', () => {
    const p = mesh(['a', 'b'])
    unreachable(p, 'b')
    const r = run(p)
    const text = renderStatus(r).join('\n')
    assert.match(text, /Cluster: shop/)
    assert.match(text, /\| Node +\| Target/)
    assert.match(text, /\| Link +\| Mech/)
    assert.match(text, /a → b/)
    assert.match(text, /b unreachable/)
    assert.match(text, /b: connection refused/)
    assert.doesNotMatch(text, /Lag: from/)
    const m = renderStatus(r, {matrix: true}).join('\n')
    assert.match(m, /Lag: from/)
    assert.doesNotMatch(m, /\| Link +\| Mech/)
    const big = renderStatus(run(mesh(['a', 'b', 'c', 'd', 'e']))).join('\n')
    assert.match(big, /Lag: from/)
    assert.doesNotMatch(big, /\| Link +\| Mech/)
  })

  it('colours only statuses, each in its colour; no escape codes without colour support', () => {
    const p = mesh(['a', 'b', 'c'])
    unreachable(p, 'c')
    const r = run(p, {unfinished: [{key: 'init', command: 'init', startedAt: 't'}]})
    const level = chalk.level
    try {
      chalk.level = 0
      assert.doesNotMatch(renderStatus(r).join('\n'), /\x1b\[/)
      chalk.level = 1
      const text = renderStatus(r).join('\n')
      // every coloured segment: ESC[<colour>m text ESC[39m
      const segments = [...text.matchAll(/\x1b\[(\d+)m([^\x1b]*)\x1b\[39m/g)].map(m => ({code: Number(m[1]), text: m[2].trim()}))
      assert.ok(segments.length >= 4, `coloured segments: ${JSON.stringify(segments)}`)
      assert.equal(text.replace(/\x1b\[(\d+)m([^\x1b]*)\x1b\[39m/g, '$2').includes('\x1b'), false, 'no escape outside the segments')
      const colour: Record<string, number> = {ok: 32, reachable: 32, warning: 33, critical: 31, unreachable: 31, 'query failed': 31, unknown: 31, paused: 35}
      for (const seg of segments) {
        if (seg.text.startsWith('! unfinished mmlite init run')) {
          assert.equal(seg.code, 33)
          continue
        }
        const want = colour[seg.text.toLowerCase()]
        assert.ok(want !== undefined, `coloured text that is not a status: ${JSON.stringify(seg.text)}`)
        assert.equal(seg.code, want, `colour of ${seg.text}`)
      }
      // the statuses that must be there, coloured: overall, the unreachable node, a critical link
      for (const t of ['CRITICAL', 'unreachable', 'reachable', 'critical']) assert.ok(segments.some(x => x.text === t), `${t} coloured`)
    } finally {
      chalk.level = level
    }
  })

  it('lists unfinished runs', () => {
    const text = renderStatus(run(mesh(['a', 'b']), {unfinished: [{key: 'init', command: 'init', startedAt: 't'}]})).join('\n')
    assert.match(text, /unfinished mmlite init run/)
  })

  it('--watch takes an optional value', () => {
    assert.deepEqual(normalizeWatchArg(['--watch']), ['--watch=2'])
    assert.deepEqual(normalizeWatchArg(['--watch', '--json']), ['--watch=2', '--json'])
    assert.deepEqual(normalizeWatchArg(['--watch', '5']), ['--watch', '5'])
    assert.deepEqual(normalizeWatchArg(['--watch', '0.5', '-c', 'x']), ['--watch', '0.5', '-c', 'x'])
    assert.deepEqual(normalizeWatchArg(['--', '--watch']), ['--', '--watch'])
  })
})
