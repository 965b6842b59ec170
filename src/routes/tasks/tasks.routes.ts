import { createRoute, z } from '@hono/zod-openapi'
import { errorResponses as E } from '../../lib/errors'
import { jsonBody as body, jsonContent as json, security } from '../../lib/route-helpers'
import { authenticate, canWrite, requireRole } from '../../middleware/auth'
import {
  ExecuteInput,
  etagHeader,
  IdParam,
  IfMatchHeader,
  page,
  Task,
  TaskBatchInput,
  TaskCreateInput,
  TaskListQuery,
  TaskStatusReport,
  TaskUpdateInput,
} from '../schemas'

const tags = ['Tasks']

export const create = createRoute({
  method: 'post',
  path: '/tasks',
  operationId: 'createTask',
  summary: 'Create a task',
  description:
    'Creates a pending task. With an idempotency key (body `idempotencyKey` or `Idempotency-Key` header) a repeat returns the existing task with 200.',
  tags,
  security,
  middleware: [authenticate, canWrite] as const,
  request: {
    headers: z.object({ 'idempotency-key': z.string().min(1).max(255).optional() }),
    body: body(TaskCreateInput),
  },
  responses: {
    201: { ...json(Task, 'Created'), headers: etagHeader },
    200: { ...json(Task, 'The task an earlier request with this idempotency key created'), headers: etagHeader },
    ...E.common,
    ...E.body,
  },
})

export const createBatch = createRoute({
  method: 'post',
  path: '/tasks/batch',
  operationId: 'createTasks',
  summary: 'Create up to 1,000 tasks at once',
  description:
    'Creates every task in one statement and places what fits at once. Items with an idempotency key this caller used before for the same request come back as the tasks those keys made; a key used for a different request refuses the whole batch (422 `idempotency_key_reused`, nothing written). `items` are in request order; `created` counts the new ones.',
  tags,
  security,
  middleware: [authenticate, canWrite] as const,
  request: { body: body(TaskBatchInput) },
  responses: {
    201: json(z.object({ items: z.array(Task), created: z.number().int() }).openapi('TaskBatch'), 'Created'),
    ...E.common,
    ...E.body,
  },
})

export const list = createRoute({
  method: 'get',
  path: '/tasks',
  operationId: 'listTasks',
  summary: 'List tasks',
  description:
    'Newest first by default; the filters combine. `name` is a prefix search over the newest 10,000 tasks only (names have no index). An agent token sees only the tasks it holds or held.',
  tags,
  security,
  middleware: [authenticate] as const,
  request: { query: TaskListQuery },
  responses: { 200: json(page(Task, 'TaskPage'), 'A page of tasks'), ...E.common },
})

export const execute = createRoute({
  method: 'post',
  path: '/tasks/execute',
  operationId: 'executeTask',
  summary: 'Place a pending task now',
  description:
    'Assigns the task to `agentId` when given (409 agent_cannot_take_task with reasons when it cannot), else to the best fitting agent (409 no_agent_available with reasons when none fits; the task stays pending). A task whose concurrency key is at its limit is refused with 409 concurrency_limit. An operator override: it places the task now even if its scheduledAt or retry backoff lies ahead.',
  tags,
  security,
  middleware: [authenticate, canWrite] as const,
  request: { body: body(ExecuteInput) },
  responses: {
    200: { ...json(Task, 'The assigned task'), headers: etagHeader },
    ...E.common,
    ...E.notFound,
    ...E.conflict,
    ...E.body,
  },
})

export const get = createRoute({
  method: 'get',
  path: '/tasks/{id}',
  operationId: 'getTask',
  summary: 'Get a task',
  description: 'A pending task carries `pendingReason`.',
  tags,
  security,
  middleware: [authenticate] as const,
  request: { params: IdParam },
  responses: {
    200: { ...json(Task, 'The task'), headers: etagHeader },
    ...E.common,
    ...E.notFound,
  },
})

export const update = createRoute({
  method: 'put',
  path: '/tasks/{id}',
  operationId: 'updateTask',
  summary: 'Replace a pending task’s definition',
  tags,
  security,
  middleware: [authenticate, canWrite] as const,
  request: { params: IdParam, headers: IfMatchHeader, body: body(TaskUpdateInput) },
  responses: {
    200: { ...json(Task, 'The updated task'), headers: etagHeader },
    ...E.common,
    ...E.notFound,
    ...E.conflict,
    ...E.precondition,
    ...E.body,
  },
})

export const reportStatus = createRoute({
  method: 'patch',
  path: '/tasks/{id}/status',
  operationId: 'reportTaskStatus',
  summary: 'Report a task’s progress or outcome',
  description:
    'How an agent reports. Fenced: the caller must be the agent holding the task (or an operator/admin) and `attempt` must be the task’s current attempt, else 409 stale_attempt.',
  tags,
  security,
  middleware: [authenticate, requireRole('admin', 'operator', 'agent')] as const,
  request: { params: IdParam, body: body(TaskStatusReport) },
  responses: {
    200: { ...json(Task, 'The task after the report'), headers: etagHeader },
    ...E.common,
    ...E.notFound,
    ...E.conflict,
    ...E.body,
  },
})

export const remove = createRoute({
  method: 'delete',
  path: '/tasks/{id}',
  operationId: 'deleteTask',
  summary: 'Delete a task',
  description: '409 while it is running: cancel it first.',
  tags,
  security,
  middleware: [authenticate, canWrite] as const,
  request: { params: IdParam, headers: IfMatchHeader },
  responses: {
    204: { description: 'Deleted' },
    ...E.common,
    ...E.notFound,
    ...E.conflict,
    ...E.precondition,
  },
})

export const cancel = createRoute({
  method: 'post',
  path: '/tasks/{id}/cancel',
  operationId: 'cancelTask',
  summary: 'Cancel a task',
  description:
    'A pending or assigned task is cancelled at once (200). A running one gets `cancelRequested` (202); its agent learns it from its next heartbeat and reports it cancelled.',
  tags,
  security,
  middleware: [authenticate, canWrite] as const,
  request: { params: IdParam },
  responses: {
    200: { ...json(Task, 'Cancelled'), headers: etagHeader },
    202: { ...json(Task, 'Cancel requested; the agent ends the task'), headers: etagHeader },
    ...E.common,
    ...E.notFound,
    ...E.conflict,
  },
})

export const retry = createRoute({
  method: 'post',
  path: '/tasks/{id}/retry',
  operationId: 'retryTask',
  summary: 'Retry a failed, cancelled or timed-out task',
  tags,
  security,
  middleware: [authenticate, canWrite] as const,
  request: { params: IdParam },
  responses: {
    200: { ...json(Task, 'Back to pending'), headers: etagHeader },
    ...E.common,
    ...E.notFound,
    ...E.conflict,
  },
})

export type CreateRoute = typeof create
export type CreateBatchRoute = typeof createBatch
export type ListRoute = typeof list
export type ExecuteRoute = typeof execute
export type GetRoute = typeof get
export type UpdateRoute = typeof update
export type ReportStatusRoute = typeof reportStatus
export type RemoveRoute = typeof remove
export type CancelRoute = typeof cancel
export type RetryRoute = typeof retry
