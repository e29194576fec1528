/**
 * Dead ends a user must not hit (real CLI, real PostgreSQL 16):
 *  - remove nodes down to one, then `add-node` grows the cluster again; rows written on both
 *    nodes afterwards are on both, with identical contents;
 *  - the init wizard offers a table without a primary key but does not pre-select it.
 * (A second `mmlite demo` never deleting a kept demo: demo.test.ts.)
 */
import assert from 'node:assert/strict'
import path from 'node:path'
import {rm} from 'node:fs/promises'
import {loadConfig} from '../../src/config/config.js'
import {stopAllStarted, type LocalServer} from '../../src/local/server.js'
import {runWizard} from '../../src/ui/wizard.js'
import type {Prompts} from '../../src/ui/prompts.js'
import * as h from '../helpers/cluster.js'

describe('dead ends', function () {
  this.timeout(300_000)
  let servers: LocalServer[]
  let dir: string

  before(async () => {
    servers = await h.startServers([16, 16, 16])
    await h.createSchema(servers)
    dir = await h.tempDir()
  })
  after(async () => {
    await stopAllStarted()
    if (dir) await rm(dir, {recursive: true, force: true})
  })

  it('remove-node down to one node, then add-node onto it: rows written on both nodes reach both', async () => {
    const [s1, s2, s3] = servers
    await h.sql(s1, "INSERT INTO public.departments SELECT g, 'dept ' || g FROM generate_series(1, 20) g")
    const cfg = await h.writeConfig(dir, [s1, s2])
    const init = await h.runCli(['init', '-c', cfg, '--yes'])
    assert.equal(init.code, 0, init.stdout + init.stderr)
    await h.writeOnEveryNode([s1, s2], 20, 1_000_000)
    await h.waitConverged([s1, s2], 'public.users', 40)

    const removed = await h.runCli(['remove-node', 'node2', '-c', cfg, '--yes'])
    assert.equal(removed.code, 0, removed.stdout + removed.stderr)
    assert.deepEqual(loadConfig(cfg).nodes.map(n => n.name), ['node1'])
    await h.writeOnEveryNode([s1], 10, 2_000_000) // written while the cluster has one node

    const added = await h.runCli(['add-node', 'node3', '--dsn', s3.dsn(), '-c', cfg, '--yes', '--json'], {timeoutMs: 300_000})
    assert.equal(added.code, 0, added.stdout + added.stderr)
    assert.deepEqual(loadConfig(cfg).nodes.map(n => n.name), ['node1', 'node3'])

    // both directions after the join, on top of the copy
    await h.writeOnEveryNode([s1, s3], 15, 3_000_000)
    await h.waitConverged([s1, s3], 'public.users', 40 + 10 + 30)
    await h.waitConverged([s1, s3], 'public.departments', 20)
    const ids = await h.sql<{n: number}>(s3, 'SELECT count(*)::int AS n FROM public.users WHERE id >= 3100000 AND id < 3200000')
    assert.equal(ids[0].n, 15, "node3's own rows")
    const fromOne = await h.sql<{n: number}>(s3, 'SELECT count(*)::int AS n FROM public.users WHERE id >= 3000000 AND id < 3100000')
    assert.equal(fromOne[0].n, 15, "node1's rows on node3")
    // node2 is out: nothing written after its removal reached it
    assert.equal((await h.sql<{n: number}>(s2, 'SELECT count(*)::int AS n FROM public.users WHERE id >= 2000000'))[0].n, 0)
  })

  it('the init wizard does not pre-select a table without a primary key', async () => {
    const [s1, , s3] = servers
    await h.sql(s1, 'CREATE TABLE public.nopk (v text)')
    await h.sql(s1, 'CREATE TABLE public.full_ident (v text)')
    await h.sql(s1, 'ALTER TABLE public.full_ident REPLICA IDENTITY FULL')
    const offered: Array<{value: string; checked?: boolean}> = []
    const answers = ['wiz', s1.dsn(), 'a', s3.dsn(), 'b', '']
    const prompts: Prompts = {
      async input(o) {
        const a = answers.shift()
        if (a === undefined) throw new Error('more questions than scripted')
        const v = o.validate ? await o.validate(a) : true
        if (v !== true) throw new Error(`rejected ${a}: ${v}`)
        return a
      },
      async confirm() {
        return false
      },
      async checkbox(o) {
        offered.push(...o.choices.map(c => ({value: c.value as string, checked: (c as {checked?: boolean}).checked})))
        return o.choices.filter(c => (c as {checked?: boolean}).checked).map(c => c.value)
      },
      async select(o) {
        return o.choices[0].value
      },
    }
    const file = path.join(dir, 'wizard.yaml')
    await runWizard(file, prompts, () => {})
    const byName = Object.fromEntries(offered.map(o => [o.value, o.checked]))
    assert.deepEqual(byName, {'public.departments': true, 'public.full_ident': true, 'public.nopk': false, 'public.users': true})
    assert.deepEqual(loadConfig(file).tables.map(t => t.display).sort(), ['public.departments', 'public.full_ident', 'public.users'])
  })
})
