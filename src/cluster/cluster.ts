/** The set of node connections for one command run. */
import type {Config, NodeConfig} from '../config/config.js'
import {NodeConn, type QueryLogger} from '../db/node.js'
import {MmliteError, ExitCode} from '../errors.js'

export class Cluster {
  readonly conns = new Map<string, NodeConn>()

  constructor(
    readonly cfg: Config,
    opts: {connectTimeoutMs?: number; logger?: QueryLogger} = {},
    extraNodes: NodeConfig[] = [],
  ) {
    for (const n of [...cfg.nodes, ...extraNodes]) this.conns.set(n.name, new NodeConn(n, opts))
  }

  get names(): string[] {
    return [...this.conns.keys()]
  }

  node(name: string): NodeConn {
    const c = this.conns.get(name)
    if (!c) throw new MmliteError(`unknown node "${name}"`, {code: ExitCode.Config, suggestions: [`Known nodes: ${this.names.join(', ')}`]})
    return c
  }

  /** Run fn on every node concurrently; collect per-node results or errors. */
  async each<T>(fn: (c: NodeConn) => Promise<T>, names = this.names): Promise<Map<string, {ok: true; value: T} | {ok: false; error: unknown}>> {
    const out = new Map<string, {ok: true; value: T} | {ok: false; error: unknown}>()
    await Promise.all(
      names.map(async n => {
        try {
          out.set(n, {ok: true, value: await fn(this.node(n))})
        } catch (error) {
          out.set(n, {ok: false, error})
        }
      }),
    )
    return out
  }

  async close(): Promise<void> {
    await Promise.all([...this.conns.values()].map(c => c.close()))
  }
}
