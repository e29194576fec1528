/**
 * The init wizard through the prompts seam: connections are tested as they are entered,
 * tables are offered from the first node, and the file it writes loads and works.
 */
import assert from 'node:assert/strict'
import path from 'node:path'
import {loadConfig} from '../../src/config/config.js'
import {freePort, stopAllStarted, type LocalServer} from '../../src/local/server.js'
import {runWizard} from '../../src/ui/wizard.js'
import type {Prompts} from '../../src/ui/prompts.js'
import * as h from '../helpers/cluster.js'

/** Scripted answers; input() runs the prompt's validate like the real prompt and re-asks on failure. */
function scripted(answers: string[], log: string[]): Prompts {
  const next = () => {
    const a = answers.shift()
    if (a === undefined) throw new Error('wizard asked more questions than scripted')
    return a
  }
  return {
    async input(o) {
      for (;;) {
        const a = next()
        const v = o.validate ? await o.validate(a) : true
        if (v === true) return a
        log.push(`rejected ${JSON.stringify(a)}: ${v}`)
      }
    },
    async confirm() {
      return next() === 'y'
    },
    async checkbox(o) {
      log.push(`offered: ${o.choices.map(c => c.value).join(',')}`)
      const pick = next().split(',')
      return o.choices.filter(c => pick.includes(c.value)).map(c => c.value)
    },
    async select(o) {
      return o.choices[0].value
    },
  }
}

describe('init wizard', function () {
  let servers: LocalServer[]
  after(() => stopAllStarted())

  it('tests each DSN, offers the first node\'s tables, writes a working mmlite.yaml', async () => {
    servers = await h.startServers([16, 16])
    await h.createSchema(servers)
    const dir = await h.tempDir()
    const file = path.join(dir, 'mmlite.yaml')
    const dead = `postgresql://postgres@127.0.0.1:${await freePort()}/postgres`
    const log: string[] = []
    const answers = [
      'Bad-Name', // rejected: not [a-z][a-z0-9_]*
      'shop',
      dead, // rejected: connection refused
      servers[0].dsn(),
      'alpha',
      servers[1].dsn(),
      'alpha', // rejected: taken
      'beta',
      '', // finish
      'public.users',
    ]
    await runWizard(file, scripted(answers, log), line => log.push(line))
    assert.match(log.join('\n'), /rejected "Bad-Name": the name must match/)
    assert.match(log.join('\n'), /rejected ".*127\.0\.0\.1.*": cannot connect to 127\.0\.0\.1:\d+\/postgres: .*refused/)
    assert.match(log.join('\n'), /rejected "alpha": alpha is taken/)
    assert.match(log.join('\n'), /offered: public\.departments,public\.users/)
    const cfg = loadConfig(file)
    assert.equal(cfg.cluster, 'shop')
    assert.deepEqual(cfg.nodes.map(n => n.name), ['alpha', 'beta'])
    assert.deepEqual(cfg.tables.map(t => t.display), ['public.users'])

    const r = await h.runCli(['init', '-c', file, '--yes'])
    assert.equal(r.code, 0, r.stderr)
    await h.sql(servers[1], "INSERT INTO public.users VALUES (1, 1, 'x', 'beta')")
    await h.waitConverged(servers, 'public.users', 1)
  })
})
