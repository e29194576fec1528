/**
 * The old-minor guard (src/steps/slot-guard.ts, issue #7.8): minors before 12.20 / 13.16 /
 * 14.13 / 15.8 / 16.4 may start a new logical slot in the middle of a transaction. The guard
 * is shared by the copy strategy (slots P→X, tested in add-node.test.ts), the standby
 * strategy (slot S→X, tested here through its preflight) and init (every node; a one-line
 * hook in init.ts calling slotStartProblems). The test servers are all fixed minors, so the
 * old ones are only reachable here, by version number.
 */
import assert from 'node:assert/strict'
import {mkdtemp} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {parseConfig} from '../../src/config/config.js'
import type {Cluster} from '../../src/cluster/cluster.js'
import {Journal} from '../../src/engine/journal.js'
import type {AddNodeContext} from '../../src/steps/add-node-context.js'
import {standbyPreflight} from '../../src/steps/add-node-standby.js'
import {slotCreationExact, slotStartProblems} from '../../src/steps/slot-guard.js'

describe('old-minor slot guard', () => {
  it('knows the first fixed minor of each major', () => {
    for (const [v, ok] of [
      [120019, false],
      [120020, true],
      [130015, false],
      [130016, true],
      [140012, false],
      [140013, true],
      [150007, false],
      [150008, true],
      [160003, false],
      [160004, true],
      [170000, true],
      [180000, true],
      [110022, false],
    ] as const) {
      assert.equal(slotCreationExact(v), ok, String(v))
    }
  })

  it('one problem per affected node, naming the slot and the fix; unknown versions are left to preflight', () => {
    const versions = new Map([
      ['a', 150007],
      ['b', 150008],
      ['c', 140012],
    ])
    const problems = slotStartProblems(['a', 'b', 'c', 'd'], versions, n => `the slots init creates on ${n}`)
    assert.deepEqual(problems.map(p => [p.node, p.check]), [
      ['a', 'version'],
      ['c', 'version'],
    ])
    assert.match(problems[0].message, /PostgreSQL 15\.7 may create a logical slot whose start is in the middle of a transaction.*the slots init creates on a/)
    assert.equal(problems[1].fix, 'Upgrade c to the latest minor release of PostgreSQL 14.')
  })

  for (const [v, expect] of [
    [150007, true],
    [150008, false],
    [160003, true],
    [170000, false],
  ] as const) {
    it(`standby preflight ${expect ? 'refuses' : 'accepts'} a source on ${Math.floor(v / 10000)}.${v % 10000} (slot S→X)`, async () => {
      const text = (withX: boolean) => `cluster: shop
tables: [public.users]
nodes:
  - {name: s, dsn: "postgresql://repl@s.example:5432/app"}
  - {name: p, dsn: "postgresql://repl@p.example:5432/app"}
${withX ? '  - {name: x, dsn: "postgresql://repl@x.example:5432/app"}\n' : ''}`
      const cfg = parseConfig(text(false), 'mmlite.yaml', {})
      const full = parseConfig(text(true), 'mmlite.yaml', {})
      const sub = (node: string) => [{oid: '16400', subname: 'shop_p_s', enabled: true, slot: 'shop_p_s', workers: node === 's' ? 1 : 0}]
      const answer = (node: string, sql: string): unknown[] => {
        if (sql.includes('AS in_recovery'))
          return [{in_recovery: true, sysid: '7', version_num: v, database: 'app', primary_slot_name: '', receiver: {status: 'streaming', sender_host: 's.example', sender_port: 5432, received_tli: 1}}]
        if (sql.includes('inet_server_addr')) return [{sysid: '7', version_num: v, database: 'app', port: 5432, server_addr: null, socket_dirs: '', tli: 1}]
        if (sql.includes('s.subslotname AS slot')) return sub(node)
        if (sql.includes('PKGLIBDIR')) return [{present: true}]
        return []
      }
      const node = (name: string) => ({
        name,
        node: full.nodes.find(n => n.name === name)!,
        async query(sql: string) {
          return answer(name, sql)
        },
        async one(sql: string) {
          return answer(name, sql)[0]
        },
      })
      const dir = await mkdtemp(path.join(os.tmpdir(), 'mmlite-unit-guard-'))
      const ctx: AddNodeContext = {
        cfg,
        full,
        x: full.nodes.find(n => n.name === 'x')!,
        source: 's',
        others: ['p'],
        versions: new Map([
          ['s', v],
          ['p', 180000],
          ['x', v],
        ]),
        cluster: {node} as unknown as Cluster,
        journal: Journal.open(path.join(dir, 'mmlite.yaml'), 'shop'),
        timeoutMs: 1000,
        jobs: 1,
      }
      const problems = await standbyPreflight(ctx)
      const version = problems.filter(p => p.check === 'version')
      assert.deepEqual(version.map(p => p.node), expect ? ['s'] : [], JSON.stringify(problems))
      if (expect) assert.match(version[0].message, /the slot shop_s_x \(s→x\) could miss part of a transaction/)
      assert.deepEqual(problems.filter(p => p.check !== 'version'), [], 'no other problem in this fixture')
    })
  }
})
