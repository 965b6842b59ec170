import { createRoute, z } from '@hono/zod-openapi'
import { PERCENT, rolloutStatuses, STRATEGY_DEFAULTS, targetStatuses } from '../../domain/rollouts'
import { errorResponses as E } from '../../lib/errors'
import { jsonBody as body, jsonContent as json, security } from '../../lib/route-helpers'
import { authenticate, canRead, canWrite } from '../../middleware/auth'
import {
  Capability,
  checkShellPayload,
  csvOf,
  IdParam,
  JsonValue,
  Labels,
  Provider,
  page,
  paging,
  storedTimestamp,
  TaskType,
} from '../schemas'

const tags = ['Rollouts']

/** A count, or a percentage of the targets ("10%"): resolved against the target count at creation. */
const Amount = (min: number, what: string) =>
  z
    .union([
      z.number().int().min(min),
      z
        .string()
        .regex(PERCENT, 'a percentage such as "10%"')
        .refine((v) => Number.parseFloat(v) <= 100, {
          message: 'at most "100%"',
        }),
    ])
    .openapi({ description: `${what}: a count, or "N%" of the targets.`, example: '10%' })

const RolloutTask = z
  .strictObject({
    type: TaskType,
    payload: JsonValue.default({}),
    timeoutSeconds: z.number().int().min(1).max(604_800).default(300),
    maxAttempts: z.number().int().min(1).max(100).default(1),
    priority: z.number().int().min(1).max(10).default(5),
  })
  .superRefine(checkShellPayload)
  .openapi('RolloutTask')

const RolloutTarget = z
  .strictObject({
    capabilities: z.array(Capability).max(64).optional(),
    provider: Provider.nullish(),
    region: z.string().min(1).max(64).nullish(),
    labels: Labels.optional(),
    agentIds: z.array(z.uuid()).min(1).max(100_000).optional(),
  })
  .openapi('RolloutTargetSelector', {
    description:
      'Every registered agent that has these capabilities, provider, region and labels (and is one of agentIds, when given: at least one id) and runs the task’s type, except those draining or in maintenance. Frozen at creation.',
  })

const Strategy = z
  .strictObject({
    maxConcurrency: Amount(1, 'Most tasks in flight at once (default "100%")').optional(),
    maxErrors: Amount(0, 'Errors allowed; one more stops the rollout (default 0)').optional(),
    waves: z
      .array(z.strictObject({ size: Amount(1, 'Targets in the wave') }))
      .min(1)
      .max(100)
      .optional()
      .openapi({ description: 'In order; the last wave takes the rest (default: one wave).' }),
    bakeSeconds: z.number().int().min(0).max(604_800).optional(),
    pauseBetweenWaves: z.boolean().optional(),
    deliveryTimeoutSeconds: z.number().int().min(1).max(604_800).optional(),
  })
  .openapi('RolloutStrategy', {
    description: `Defaults: ${JSON.stringify(STRATEGY_DEFAULTS)}.`,
  })

export const RolloutCreateInput = z
  .strictObject({
    name: z.string().min(1).max(200),
    description: z.string().max(1000).nullish(),
    task: RolloutTask,
    target: RolloutTarget.default({}),
    strategy: Strategy.default({}),
  })
  .openapi('RolloutCreateInput')

export const RolloutRetryInput = z
  .strictObject({
    name: z.string().min(1).max(200).optional(),
    description: z.string().max(1000).nullish(),
    task: z
      .strictObject({
        payload: JsonValue.optional(),
        timeoutSeconds: z.number().int().min(1).max(604_800).optional(),
        maxAttempts: z.number().int().min(1).max(100).optional(),
        priority: z.number().int().min(1).max(10).optional(),
      })
      .optional(),
    strategy: Strategy.optional(),
  })
  .openapi('RolloutRetryInput')

const count = z.number().int()
const Counts = z.object({
  waiting: count,
  dispatched: count,
  running: count,
  succeeded: count,
  failed: count,
  timed_out: count,
  undeliverable: count,
  cancelled: count,
  skipped: count,
} satisfies Record<(typeof targetStatuses)[number], typeof count>)

export const Rollout = z
  .object({
    id: z.uuid(),
    name: z.string(),
    description: z.string().nullable(),
    status: z.enum(rolloutStatuses),
    task: z.object({
      type: z.string(),
      payload: z.unknown(),
      timeoutSeconds: z.number().int(),
      maxAttempts: z.number().int(),
      priority: z.number().int(),
    }),
    target: z.record(z.string(), z.unknown()),
    strategy: z.record(z.string(), z.unknown()).openapi({ description: 'As asked.' }),
    targetCount: z.number().int(),
    counts: Counts.openapi({ description: 'Targets by state; they sum to targetCount.' }),
    errors: z.number().int().openapi({ description: 'failed + timed_out + undeliverable' }),
    maxErrors: z.number().int().openapi({ description: 'Resolved to a count: errors above it stop the rollout.' }),
    maxConcurrency: z.number().int().openapi({ description: 'Resolved to a count.' }),
    wave: z.number().int().openapi({ description: 'The wave started last (1-based).' }),
    waves: z.array(z.number().int()).openapi({ description: 'Each wave’s size.' }),
    bakeSeconds: z.number().int(),
    pauseBetweenWaves: z.boolean(),
    deliveryTimeoutSeconds: z.number().int(),
    retryOf: z.uuid().nullable(),
    version: z.number().int(),
    createdAt: storedTimestamp,
    updatedAt: storedTimestamp,
    endedAt: z.string().nullable().openapi({ description: 'When the rollout ended (nothing left in flight).' }),
  })
  .openapi('Rollout')

export const RolloutTargetItem = z
  .object({
    agentId: z.uuid(),
    agentName: z.string(),
    wave: z.number().int(),
    status: z.enum(targetStatuses),
    taskId: z.uuid().nullable(),
    attempt: z.number().int(),
    exitCode: z.number().int().nullable(),
    errorCode: z.string().nullable(),
    outputTail: z.string().nullable(),
    dispatchedAt: z.string().nullable(),
    endedAt: z.string().nullable(),
  })
  .openapi('RolloutTargetItem')

const idempotency = z.object({ 'idempotency-key': z.string().min(1).max(255).optional() })

export const create = createRoute({
  method: 'post',
  path: '/rollouts',
  operationId: 'createRollout',
  summary: 'Run one task on every matching agent, in waves, within an error budget',
  description:
    'Freezes the target set (every registered agent the target selects that runs the task’s type), resolves the strategy against it and dispatches the first tasks. 422 for an empty target set, a type no target runs, or a strategy that does not fit (bad percentages, waves that do not add up); nothing is written then. With an Idempotency-Key, a repeat answers the first rollout with 200. See docs/rollouts.md.',
  tags,
  security,
  middleware: [authenticate, canWrite] as const,
  request: { headers: idempotency, body: body(RolloutCreateInput) },
  responses: {
    201: json(Rollout, 'Created'),
    200: json(Rollout, 'The rollout an earlier request with this idempotency key created'),
    ...E.common,
    ...E.body,
  },
})

export const list = createRoute({
  method: 'get',
  path: '/rollouts',
  operationId: 'listRollouts',
  summary: 'List rollouts',
  description: 'Newest first, paged.',
  tags,
  security,
  middleware: [authenticate, canRead] as const,
  request: {
    query: z.object({
      status: csvOf(rolloutStatuses)
        .optional()
        .openapi({ type: 'string', description: 'One status or a comma-separated list' }),
      limit: paging.limit,
      cursor: paging.cursor,
    }),
  },
  responses: { 200: json(page(Rollout, 'RolloutPage'), 'A page of rollouts'), ...E.common },
})

export const get = createRoute({
  method: 'get',
  path: '/rollouts/{id}',
  operationId: 'getRollout',
  summary: 'Get a rollout, with its targets counted by state',
  tags,
  security,
  middleware: [authenticate, canRead] as const,
  request: { params: IdParam },
  responses: { 200: json(Rollout, 'The rollout'), ...E.common, ...E.notFound },
})

export const targets = createRoute({
  method: 'get',
  path: '/rollouts/{id}/targets',
  operationId: 'listRolloutTargets',
  summary: 'A rollout’s targets',
  description: 'In target order (agent id), paged; filter by status (comma-separated) and wave.',
  tags,
  security,
  middleware: [authenticate, canRead] as const,
  request: {
    params: IdParam,
    query: z.object({
      status: csvOf(targetStatuses).optional().openapi({ type: 'string' }),
      wave: z.coerce.number().int().min(1).optional(),
      limit: z.coerce.number().int().min(1).max(500).default(100),
      cursor: paging.cursor,
    }),
  },
  responses: {
    200: json(page(RolloutTargetItem, 'RolloutTargetPage'), 'A page of targets'),
    ...E.common,
    ...E.notFound,
  },
})

export const wait = createRoute({
  method: 'get',
  path: '/rollouts/{id}/wait',
  operationId: 'waitRollout',
  summary: 'Wait for a rollout to end',
  description:
    'Long poll: answers within a second of the rollout’s end (`endedAt` set), or with its current state when `timeoutSeconds` (default 30, at most 60) pass.',
  tags,
  security,
  middleware: [authenticate, canRead] as const,
  request: {
    params: IdParam,
    query: z.object({ timeoutSeconds: z.coerce.number().int().min(0).max(60).default(30) }),
  },
  responses: { 200: json(Rollout, 'The rollout, ended or as it is at the timeout'), ...E.common, ...E.notFound },
})

const control = (name: 'pause' | 'resume' | 'cancel', summary: string, description: string) =>
  createRoute({
    method: 'post',
    path: `/rollouts/{id}/${name}`,
    operationId: `${name}Rollout`,
    summary,
    description,
    tags,
    security,
    middleware: [authenticate, canWrite] as const,
    request: { params: IdParam },
    responses: { 200: json(Rollout, 'The rollout after it'), ...E.common, ...E.notFound, ...E.conflict },
  })

export const pause = control('pause', 'Pause a rollout', 'Stops dispatch at once; tasks in flight go on.')
export const resume = control(
  'resume',
  'Resume a paused rollout',
  'At a gate (pauseBetweenWaves), the next wave starts at once.',
)
export const cancel = control(
  'cancel',
  'Cancel a rollout',
  'Cancels its tasks in flight (running ones are asked to stop) and skips the waiting targets; it ends cancelled once nothing is in flight.',
)

export const retry = createRoute({
  method: 'post',
  path: '/rollouts/{id}/retry',
  operationId: 'retryRollout',
  summary: 'Retry the targets that did not succeed',
  description:
    'A new rollout over the targets of this ended one that did not succeed, with the same task and strategy unless the body overrides them (`{}` for none), linked by `retryOf`. 409 while the rollout is not over.',
  tags,
  security,
  middleware: [authenticate, canWrite] as const,
  request: {
    params: IdParam,
    headers: idempotency,
    body: body(RolloutRetryInput),
  },
  responses: {
    201: json(Rollout, 'The new rollout'),
    200: json(Rollout, 'The rollout an earlier request with this idempotency key created'),
    ...E.common,
    ...E.notFound,
    ...E.conflict,
    ...E.body,
  },
})

export type CreateRoute = typeof create
export type ListRoute = typeof list
export type GetRoute = typeof get
export type TargetsRoute = typeof targets
export type WaitRoute = typeof wait
export type ControlRoute = typeof pause
export type RetryRoute = typeof retry
