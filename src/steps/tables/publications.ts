/**
 * Publication steps of the table reconcile procedure (see ./index.ts for the argument):
 *   unpublish  tables leaving the file (or broken) leave `<cluster>` and the announce publication
 *   stage      the announce publication lists exactly the tables being added, publishes nothing
 *   unstage    the announce publication is empty again
 */
import {escapeIdentifier as qi} from '../../db/quote.js'
import {publicationName} from '../../cluster/naming.js'
import type {Action, Step, StepContext} from '../../engine/types.js'
import {readNodeState, stageName, tableOf} from './state.js'
import type {TablesCtx} from './index.js'
import {activated} from './activate.js'

const list = (ks: string[]) => ks.map(k => tableOf(k).qualified).join(', ')

export function dropTablesSql(pub: string, ks: string[]): string {
  return `ALTER PUBLICATION ${qi(pub)} DROP TABLE ${list(ks)}`
}

/** `<cluster>` and the announce publication drop the removed and broken tables on every node. */
export function unpublishStep(t: TablesCtx): Step {
  const gone = [...new Set([...t.work.removes, ...t.work.broken])]
  const pub = publicationName(t.cfg.cluster)
  const stage = stageName(t.cfg.cluster)
  const todo = async (ctx: StepContext, node: string) => {
    const s = await readNodeState(ctx.cfg, ctx.cluster, node)
    return {shop: gone.filter(k => s.shop?.has(k)), stage: gone.filter(k => s.stage?.has(k))}
  }
  const actions: Action[] = t.cfg.nodes.map(n => {
    const at = t.state.get(n.name)!
    const shopNow = gone.filter(k => at.shop?.has(k))
    const stageNow = gone.filter(k => at.stage?.has(k))
    return {
      node: n.name,
      label: `stop publishing ${gone.map(k => tableOf(k).display).join(', ')}`,
      sql: [...(shopNow.length ? [dropTablesSql(pub, shopNow)] : []), ...(stageNow.length ? [dropTablesSql(stage, stageNow)] : [])],
      check: async ctx => {
        const w = await todo(ctx, n.name)
        return w.shop.length === 0 && w.stage.length === 0
      },
      run: async ctx => {
        const w = await todo(ctx, n.name)
        const c = ctx.cluster.node(n.name)
        if (w.shop.length) await c.query(dropTablesSql(pub, w.shop))
        if (w.stage.length) await c.query(dropTablesSql(stage, w.stage))
      },
    }
  })
  return {id: 'tables-unpublish', title: `Stop replicating ${gone.map(k => tableOf(k).display).join(', ')} (their data stays)`, actions}
}

export function createStageSql(cluster: string, ks: string[]): string {
  return `CREATE PUBLICATION ${qi(stageName(cluster))}${ks.length ? ` FOR TABLE ${list(ks)}` : ''} WITH (publish = '')`
}

export function setStageTablesSql(cluster: string, ks: string[]): string[] {
  return [`ALTER PUBLICATION ${qi(stageName(cluster))} SET (publish = '')`, `ALTER PUBLICATION ${qi(stageName(cluster))} SET TABLE ${list(ks)}`]
}

const PUBLISH_SQL = `SELECT (p.pubinsert OR p.pubupdate OR p.pubdelete OR p.pubtruncate) AS publishes
  FROM pg_catalog.pg_publication p WHERE p.pubname = $1::pg_catalog.text`

/**
 * The announce publication `<cluster>_stage` on every node lists the tables being added and
 * publishes nothing, so subscriptions can learn the tables (REFRESH reads the publisher's
 * publications) before a single change of them is sent.
 */
export function stageStep(t: TablesCtx): Step {
  const adds = t.work.adds
  const want = new Set(adds)
  const stage = stageName(t.cfg.cluster)
  const ok = async (ctx: StepContext, node: string) => {
    const s = await readNodeState(ctx.cfg, ctx.cluster, node)
    if (!s.stage) return 'missing'
    const pubs = (await ctx.cluster.node(node).one<{publishes: boolean}>(PUBLISH_SQL, [stage]))!.publishes
    return !pubs && s.stage.size === want.size && adds.every(k => s.stage!.has(k)) ? 'ok' : 'differs'
  }
  const actions: Action[] = t.cfg.nodes.map(n => ({
    node: n.name,
    label: `announce ${adds.map(k => tableOf(k).display).join(', ')} in ${stage}`,
    sql: t.state.get(n.name)!.stage ? setStageTablesSql(t.cfg.cluster, adds) : [createStageSql(t.cfg.cluster, adds)],
    check: async ctx => (await ok(ctx, n.name)) === 'ok',
    run: async ctx => {
      const s = await ok(ctx, n.name)
      if (s === 'missing') await ctx.cluster.node(n.name).query(createStageSql(t.cfg.cluster, adds))
      else if (s === 'differs') for (const q of setStageTablesSql(t.cfg.cluster, adds)) await ctx.cluster.node(n.name).query(q)
    },
  }))
  return {id: 'tables-stage', title: `Announce ${adds.map(k => tableOf(k).display).join(', ')} on every node (publication ${stage}, publishes nothing)`, actions}
}

/** The announce publication is emptied once the tables are in `<cluster>` everywhere. */
export function unstageStep(t: TablesCtx): Step {
  const stage = stageName(t.cfg.cluster)
  const left = async (ctx: StepContext, node: string) => [...((await readNodeState(ctx.cfg, ctx.cluster, node)).stage ?? [])]
  const actions: Action[] = t.cfg.nodes.map(n => {
    const planned = [...new Set([...(t.state.get(n.name)!.stage ?? []), ...t.work.adds])]
    return {
      node: n.name,
      label: `empty ${stage}`,
      sql: planned.length ? [dropTablesSql(stage, planned)] : [],
      // before the activation the tables are not in <cluster> yet: the step is still to come
      check: async ctx => {
        const s = await readNodeState(ctx.cfg, ctx.cluster, n.name)
        return (s.stage?.size ?? 0) === 0 && (await activated(ctx, t))
      },
      run: async ctx => {
        const l = await left(ctx, n.name)
        if (l.length) await ctx.cluster.node(n.name).query(dropTablesSql(stage, l))
      },
    }
  })
  return {id: 'tables-unstage', title: `Empty the announce publication ${stage}`, actions}
}
