import type { Context } from 'hono'
import type { RolloutRow } from '../../db/schema'
import { errorsOf } from '../../domain/rollouts'
import { isoColumns } from '../../lib/timestamps'
import { type AppBindings, type AppRouteHandler, serviceDeps as svc } from '../../middleware/context'
import * as rollouts from '../../services/rollouts'
import type {
  ControlRoute,
  CreateRoute,
  GetRoute,
  ListRoute,
  RetryRoute,
  TargetsRoute,
  WaitRoute,
} from './rollouts.routes'

type Counts = Awaited<ReturnType<typeof rollouts.countsOf>> extends Map<string, infer C> ? C : never

const iso = (d: Date | null) => (d ? d.toISOString() : null)

/** A rollout as every route answers it, with its targets counted by state. */
function toDto(c: Context<AppBindings>, r: RolloutRow, counts: Counts) {
  const times = isoColumns(r, ['createdAt', 'updatedAt', 'endedAt'] as const, { rolloutId: r.id }, c.var.logger)
  return {
    id: r.id,
    name: r.name,
    description: r.description,
    status: r.status,
    task: {
      type: r.taskType,
      payload: r.taskPayload,
      timeoutSeconds: r.taskTimeoutSeconds,
      maxAttempts: r.taskMaxAttempts,
      priority: r.taskPriority,
    },
    target: r.target as Record<string, unknown>,
    strategy: r.strategy as Record<string, unknown>,
    targetCount: r.targetCount,
    counts,
    errors: errorsOf(counts),
    maxErrors: r.maxErrors,
    maxConcurrency: r.maxConcurrency,
    wave: r.wave,
    waves: r.waves,
    bakeSeconds: r.bakeSeconds,
    pauseBetweenWaves: r.pauseBetweenWaves,
    deliveryTimeoutSeconds: r.deliveryTimeoutSeconds,
    retryOf: r.retryOf,
    version: r.version,
    createdAt: times.createdAt,
    updatedAt: times.updatedAt,
    endedAt: times.endedAt,
  }
}

async function present(c: Context<AppBindings>, r: RolloutRow) {
  const counts = await rollouts.countsOf(svc(c).db, [r.id])
  return toDto(c, r, counts.get(r.id) as Counts)
}

export const create: AppRouteHandler<CreateRoute> = async (c) => {
  const key = c.req.valid('header')['idempotency-key']
  const { rollout, created } = await rollouts.createRollout(
    svc(c),
    c.req.valid('json'),
    c.var.principal.sub,
    key ? { idempotencyKey: key } : {},
  )
  c.header('Location', `/api/v1/rollouts/${rollout.id}`)
  const dto = await present(c, rollout)
  return created ? c.json(dto, 201) : c.json(dto, 200)
}

export const list: AppRouteHandler<ListRoute> = async (c) => {
  const q = c.req.valid('query')
  const result = await rollouts.listRollouts(svc(c).db, q)
  const counts = await rollouts.countsOf(
    svc(c).db,
    result.items.map((r) => r.id),
  )
  return c.json(
    { items: result.items.map((r) => toDto(c, r, counts.get(r.id) as Counts)), nextCursor: result.nextCursor },
    200,
  )
}

export const get: AppRouteHandler<GetRoute> = async (c) => {
  const { id } = c.req.valid('param')
  return c.json(await present(c, await rollouts.getRollout(svc(c).db, id)), 200)
}

export const targets: AppRouteHandler<TargetsRoute> = async (c) => {
  const { id } = c.req.valid('param')
  const result = await rollouts.listTargets(svc(c).db, id, c.req.valid('query'))
  return c.json(
    {
      items: result.items.map(({ id: _id, dispatchedAt, endedAt, ...t }) => ({
        ...t,
        dispatchedAt: iso(dispatchedAt),
        endedAt: iso(endedAt),
      })),
      nextCursor: result.nextCursor,
    },
    200,
  )
}

/** How often a wait reads the rollout again: it answers within this of the end. */
const WAIT_POLL_MS = 250

export const wait: AppRouteHandler<WaitRoute> = async (c) => {
  const { id } = c.req.valid('param')
  const { timeoutSeconds } = c.req.valid('query')
  const db = svc(c).db
  const until = Date.now() + timeoutSeconds * 1000
  let row = await rollouts.getRollout(db, id)
  while (!row.endedAt && Date.now() < until && !c.req.raw.signal.aborted) {
    await new Promise((r) => setTimeout(r, Math.min(WAIT_POLL_MS, Math.max(0, until - Date.now()))))
    row = await rollouts.getRollout(db, id)
  }
  return c.json(await present(c, row), 200)
}

const control =
  (fn: typeof rollouts.pauseRollout): AppRouteHandler<ControlRoute> =>
  async (c) => {
    const { id } = c.req.valid('param')
    return c.json(await present(c, await fn(svc(c), id)), 200)
  }

export const pause = control(rollouts.pauseRollout)
export const resume = control(rollouts.resumeRollout)
export const cancel = control(rollouts.cancelRollout)

export const retry: AppRouteHandler<RetryRoute> = async (c) => {
  const { id } = c.req.valid('param')
  const key = c.req.valid('header')['idempotency-key']
  const override = (c.req.valid('json') ?? {}) as Parameters<typeof rollouts.retryRollout>[3]
  const { rollout, created } = await rollouts.retryRollout(svc(c), id, c.var.principal.sub, override, key)
  c.header('Location', `/api/v1/rollouts/${rollout.id}`)
  const dto = await present(c, rollout)
  return created ? c.json(dto, 201) : c.json(dto, 200)
}
