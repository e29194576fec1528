import {Errors, Flags} from '@oclif/core'
import path from 'node:path'
import chalk from 'chalk'
import {MmliteCommand, asMmliteError, errorLines} from '../ui/base-command.js'
import {colorEnabled} from '../ui/output.js'
import {runInit} from '../steps/init.js'
import {binDir} from '../local/server.js'
import {
  DEFAULT_WORKLOAD,
  DEMO_CLUSTER,
  DEMO_MAJORS,
  DemoRun,
  MAX_NODES,
  MIN_NODES,
  cleanupLeftovers,
  demoDir,
  PASS_FILE,
  type DemoMajor,
  type NodeRows,
} from '../local/demo.js'
import {MmliteError, ExitCode, errorMessage} from '../errors.js'

export interface DemoResult {
  cluster: string
  nodes: Array<{name: string; port: number; version: string}>
  rows: {perNode: NodeRows[]; converged: true}
  kept: boolean
  config: string
  /** servers of an earlier (kept or killed) demo that were stopped first (port null: it was still starting) */
  leftovers: Array<{name: string; port: number | null}>
}

export interface DemoStopResult {
  stopped: Array<{name: string; port: number | null}>
  dir: string
}

const CONVERGE_TIMEOUT_MS = 120_000

const describe = (list: Array<{name: string; port: number | null}>) =>
  list.map(s => `${s.name} (${s.port ? `port ${s.port}` : 'was still starting'})`).join(', ')

export default class Demo extends MmliteCommand {
  static override summary = 'Start a throw-away local cluster, build the mesh, write on every node at once and watch it converge.'
  static override description = `Starts N local PostgreSQL servers from the npm-packaged binaries, creates a small sample schema (public.customers, public.orders) on each, writes mmlite.yaml for them and runs the same init a user would. Then every node writes rows at the same time, and the demo waits until every node holds every row (same counts, same ids) and shows the status. The servers are stopped and removed at the end unless --keep is given.

Everything lives in <tmpdir>/mmlite-demo-<uid> ($MMLITE_DEMO_DIR); servers left there by a killed demo are stopped first, but a demo you kept is never touched: the demo refuses (exit 12) until \`mmlite demo --stop\` removes it. The servers listen on 127.0.0.1 only and require scram-sha-256 with random passwords, kept in <dir>/pgpass (mode 0600): no other OS user can connect. Point PGPASSFILE at that file to connect (a kept demo prints how).`

  static override examples = [
    '<%= config.bin %> demo',
    '<%= config.bin %> demo --nodes 5 --pg 16',
    '<%= config.bin %> demo --keep   # leave the servers running to play with them',
    '<%= config.bin %> demo --stop   # stop and remove the servers of a kept demo',
  ]

  /** no --config: the demo writes its own configuration (a flag accepted and ignored would mislead) */
  static override baseFlags = {...MmliteCommand.colorFlags} as unknown as typeof MmliteCommand.baseFlags

  static override flags = {
    nodes: Flags.integer({summary: `Number of servers (${MIN_NODES}..${MAX_NODES}).`, default: 3, min: MIN_NODES, max: MAX_NODES}),
    pg: Flags.string({summary: 'PostgreSQL major version of the servers.', options: DEMO_MAJORS.map(String), default: '18'}),
    keep: Flags.boolean({summary: 'Leave the servers running (stop them later with `mmlite demo --stop`).', default: false}),
    stop: Flags.boolean({summary: 'Stop and remove the servers of a kept demo, then exit.', default: false}),
  }

  async run(): Promise<DemoResult | DemoStopResult> {
    const {flags} = await this.parse(Demo)
    const dir = demoDir()
    const bin = this.config.bin

    if (flags.stop && flags.keep) {
      throw new MmliteError('--stop and --keep cannot be used together', {code: ExitCode.Config, suggestions: ['`mmlite demo --stop` stops a kept demo; `mmlite demo --keep` starts one.']})
    }
    if (flags.stop) {
      const {stopped} = await cleanupLeftovers(dir, {force: true})
      const list = stopped.map(s => ({name: s.name, port: s.port || null}))
      if (list.length === 0) this.out(`No demo servers in ${dir}: nothing to stop.`)
      else this.out(`Stopped and removed ${list.length} demo server(s): ${describe(list)}; removed ${dir}.`)
      return {stopped: list, dir}
    }

    const major = Number(flags.pg) as DemoMajor
    binDir(major) // the binaries first: when they are missing, say so before touching anything
    const t0 = Date.now()
    const left = await cleanupLeftovers(dir)
    const leftovers = left.stopped.map(s => ({name: s.name, port: s.port || null}))
    if (leftovers.length) this.out(`Stopped ${leftovers.length} server(s) left by an earlier demo: ${describe(leftovers)}; removed ${dir}.`)

    const demo = new DemoRun(dir, major, flags.nodes)
    let interrupted = false
    const onSignal = (sig: NodeJS.Signals) => {
      if (interrupted) return
      interrupted = true
      process.stderr.write(`\n${sig}: stopping the demo servers…\n`)
      demo.teardownSync()
      process.stderr.write('demo servers stopped and removed\n')
      process.exit(sig === 'SIGINT' ? 130 : 143)
    }
    const onExit = () => demo.teardownSync()
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
    process.on('exit', onExit)

    let kept = false
    try {
      this.out(`Starting ${flags.nodes} PostgreSQL ${major} servers in ${dir} …`)
      await demo.prepare()
      const servers = await demo.startServers(s => this.out(`  ${s.name} listening on 127.0.0.1:${s.port}`))

      const cfg = await demo.writeConfig()
      await demo.createSchema()
      this.out(`Created public.customers and public.orders on every node; wrote ${demo.configFile}.`)
      this.out('')
      this.out(chalk.bold(`$ ${bin} init --yes -c ${demo.configFile}`))
      const init = await runInit(cfg, {
        noCopy: false,
        fixSettings: false,
        dryRun: false,
        timeoutMs: CONVERGE_TIMEOUT_MS,
        connectTimeoutMs: 10_000,
        mode: this.renderMode(),
        write: line => this.out(line),
        confirm: async () => {},
      })
      this.out(`Cluster "${cfg.cluster}" is initialized: ${init.links.length} links streaming.`)
      this.out('')

      const w = DEFAULT_WORKLOAD
      this.out(`Writing ${w.customers} customers and ${w.orders} orders on every node at the same time (${w.batches} transactions each) …`)
      const written = await demo.writeRows(w)
      const {rows, ms} = await demo.waitConverged(written, CONVERGE_TIMEOUT_MS)
      this.out(`Converged ${ms} ms after the last write: every node holds all ${written.customers.length} customers and ${written.orders.length} orders.`)
      this.out('')
      this.printTable(rows)
      this.out('')

      await this.showStatus(demo.configFile)

      const result: DemoResult = {
        cluster: DEMO_CLUSTER,
        nodes: servers.map(s => ({name: s.name, port: s.port, version: init.nodes.find(n => n.name === s.name)?.version ?? String(major)})),
        rows: {perNode: rows, converged: true},
        kept: flags.keep,
        config: demo.configFile,
        leftovers,
      }
      if (flags.keep) {
        await demo.keep()
        kept = true
        this.printKept(demo.configFile, servers)
      }
      return result
    } finally {
      process.removeListener('SIGINT', onSignal)
      process.removeListener('SIGTERM', onSignal)
      if (!kept) {
        try {
          await demo.teardown()
          this.out(`Stopped and removed the demo servers (${Math.round((Date.now() - t0) / 100) / 10} s in all).`)
        } catch (e) {
          for (const l of errorLines(asMmliteError(e as Error), process.stderr.isTTY === true && colorEnabled())) process.stderr.write(`${l}\n`)
          if (!process.exitCode) process.exitCode = 2
        }
      }
      process.removeListener('exit', onExit)
    }
  }

  private printTable(rows: NodeRows[]): void {
    const head = ['node', 'customers', 'orders', 'checksum']
    const body = rows.map(r => [r.node, String(r.customers), String(r.orders), r.checksum])
    const widths = head.map((h, i) => Math.max(h.length, ...body.map(b => b[i].length)))
    const fmt = (cells: string[]) => cells.map((c, i) => (i === 1 || i === 2 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd()
    this.out(chalk.bold(fmt(head)))
    for (const b of body) this.out(fmt(b))
  }

  /** Run `mmlite status` in-process when that command exists (not with --json: one JSON document only). */
  private async showStatus(file: string): Promise<void> {
    if (this.jsonEnabled()) return
    if (!this.config.findCommand('status')) {
      this.out(chalk.dim('(`mmlite status` is not available in this build: skipping the status report.)'))
      return
    }
    this.out(chalk.bold(`$ ${this.config.bin} status -c ${file}`))
    const before = process.exitCode
    try {
      const r = (await this.config.runCommand('status', ['-c', file])) as {health?: string} | undefined
      if (r?.health === 'ok') process.exitCode = before ?? 0
      else if (r?.health) this.out(chalk.yellow(`status reported ${r.health} right after convergence`))
    } catch (e) {
      if (!(e instanceof Errors.ExitError)) throw e
      // status already printed why; its exit code stays
      this.out(chalk.yellow(`status exited with code ${e.oclif.exit}`))
    }
    this.out('')
  }

  private printKept(file: string, servers: Array<{name: string; port: number; dsn(): string}>): void {
    const bin = this.config.bin
    this.out(chalk.bold('The demo servers keep running.'))
    this.out('Use the cluster (the passwords are in a 0600 libpq password file):')
    this.out(`  export MMLITE_CONFIG=${file}`)
    this.out(`  export PGPASSFILE=${path.join(path.dirname(file), PASS_FILE)}`)
    this.out(`  ${bin} status`)
    this.out('Connect to a node (any libpq client, with PGPASSFILE as above):')
    for (const s of servers) this.out(`  psql "${s.dsn()}"    # ${s.name}, port ${s.port}`)
    this.out('Stop and remove them:')
    this.out(`  ${bin} demo --stop`)
  }
}
