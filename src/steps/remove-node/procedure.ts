/**
 * The steps of `mmlite remove-node X` (see ../remove-node.ts for the procedure and why).
 * With --force X is never contacted: no drain, X's own objects stay on it.
 */
import type {Config} from '../../config/config.js'
import type {Step} from '../../engine/types.js'
import {removeStepsContext, type RemovePlanInput} from './context.js'
import {drainStep} from './drain.js'
import {configStep, ownPublicationStep, ownSlotsStep, ownSubscriptionsStep, peerSlotsStep, peerSubscriptionsStep} from './links.js'

export function buildRemoveNodeSteps(cfg: Config, input: RemovePlanInput): Step[] {
  const sc = removeStepsContext(cfg, input)
  if (input.force) return [peerSubscriptionsStep(sc), peerSlotsStep(sc), configStep(sc)]
  return [drainStep(sc), peerSubscriptionsStep(sc), ownSubscriptionsStep(sc), peerSlotsStep(sc), ownSlotsStep(sc), ownPublicationStep(sc), configStep(sc)]
}
