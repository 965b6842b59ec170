import type { Context } from 'hono'
import type { TaskRow } from '../../db/schema'
import type { PendingReason } from '../../domain/model'
import { ApiError } from '../../lib/errors'
import { etagOf } from '../../lib/etag'
import { describeError } from '../../lib/logger'
import { type AppBindings, type AppRouteHandler, serviceDeps as svc } from '../../middleware/context'
import { explainKey, explainNoFit, pendingReasonsFor, placeTask } from '../../services/placement'
import * as tasks from '../../services/tasks'
import { type TaskDto, toTaskDto } from '../dto'
import type {
  CancelRoute,
  CreateBatchRoute,
  CreateRoute,
  ExecuteRoute,
  GetRoute,
  ListRoute,
  RemoveRoute,
  ReportStatusRoute,
  RetryRoute,
  UpdateRoute,
} from './tasks.routes'

/** Tasks as the routes answer them, each pending one with why it waits (one query a page). */
async function presentAll(c: Context<AppBindings>, rows: TaskRow[]): Promise<TaskDto[]> {
  const reasons = await pendingReasonsFor(c.var.deps.database.db, rows, c.var.deps.clock.now())
  return rows.map((t) => toTaskDto(t, reasons.get(t.id), c.var.logger))
}

/**
 * Tasks a create has just committed, as it answers them: from the rows it wrote, with why
 * each pending one waits when that can be read. Nothing after the commit may turn the answer
 * into an error (a client told 5xx would create the task again): if the reasons cannot be
 * read (the database went away meanwhile), the tasks are answered without them.
 */
async function presentCreated(c: Context<AppBindings>, rows: TaskRow[]): Promise<TaskDto[]> {
  const reasons = await pendingReasonsFor(c.var.deps.database.db, rows, c.var.deps.clock.now()).catch(
    (err: unknown) => {
      c.var.logger?.warn('why new tasks wait could not be read; answered without pendingReason', {
        tasks: rows.length,
        error: describeError(err),
      })
      return new Map<string, PendingReason>()
    },
  )
  return rows.map((t) => toTaskDto(t, reasons.get(t.id), c.var.logger))
}

/** One task as every route answers it: with its ETag, and why it waits when pending. */
async function present(c: Context<AppBindings>, task: TaskRow): Promise<TaskDto> {
  c.header('ETag', etagOf(task.version))
  const [dto] = await presentAll(c, [task])
  return dto as TaskDto
}

export const create: AppRouteHandler<CreateRoute> = async (c) => {
  const { idempotencyKey: inBody, ...input } = c.req.valid('json')
  const inHeader = c.req.valid('header')['idempotency-key']
  if (inBody && inHeader && inBody !== inHeader) {
    throw new ApiError('validation_failed', 'The Idempotency-Key header and body idempotencyKey differ.', {
      errors: [{ path: 'body.idempotencyKey', message: 'differs from the Idempotency-Key header' }],
    })
  }
  const key = inBody ?? inHeader
  const { task, created } = await tasks.createTask(svc(c), input, key ? { key, owner: c.var.principal.sub } : undefined)
  c.header('Location', `/api/v1/tasks/${task.id}`)
  c.header('ETag', etagOf(task.version))
  const [dto] = (await presentCreated(c, [task])) as [TaskDto]
  return created ? c.json(dto, 201) : c.json(dto, 200)
}

export const createBatch: AppRouteHandler<CreateBatchRoute> = async (c) => {
  const { tasks: items } = c.req.valid('json')
  const { tasks: made, created } = await tasks.createTasks(
    svc(c),
    items.map(({ idempotencyKey, ...input }) => ({ input, ...(idempotencyKey ? { idempotencyKey } : {}) })),
    c.var.principal.sub,
  )
  return c.json({ items: await presentCreated(c, made), created }, 201)
}

export const list: AppRouteHandler<ListRoute> = async (c) => {
  const q = c.req.valid('query')
  const p = c.var.principal
  if (p.role === 'agent') {
    if (q.agentId && q.agentId !== p.agentId) throw new ApiError('forbidden', 'An agent token sees only its own tasks.')
    q.agentId = p.agentId
  }
  const result = await tasks.listTasks(svc(c).db, q)
  return c.json({ items: await presentAll(c, result.items), nextCursor: result.nextCursor }, 200)
}

export const get: AppRouteHandler<GetRoute> = async (c) => {
  const { id } = c.req.valid('param')
  const task = await tasks.getTask(svc(c), id)
  const p = c.var.principal
  // To an agent, another agent's task does not exist (its id tells nothing either way).
  if (p.role === 'agent' && task.agentId !== p.agentId) throw new ApiError('not_found', `No task with id ${id}.`)
  const dto = await present(c, task)
  // A pending task nothing takes now says why, requirement by requirement, as execute would.
  if (
    dto.pendingReason === 'no_agent_for_type' ||
    dto.pendingReason === 'no_matching_agent' ||
    dto.pendingReason === 'agents_busy'
  ) {
    dto.pendingDetails = (await explainNoFit(c.var.deps.database.db, task)).details
  } else if (dto.pendingReason === 'concurrency_limit' && task.concurrencyKey) {
    dto.pendingDetails = await explainKey(c.var.deps.database.db, task.concurrencyKey)
  }
  return c.json(dto, 200)
}

export const update: AppRouteHandler<UpdateRoute> = async (c) => {
  const { id } = c.req.valid('param')
  const row = await tasks.updateTask(svc(c), id, c.req.valid('json'), c.req.valid('header')['if-match'])
  return c.json(await present(c, row), 200)
}

export const reportStatus: AppRouteHandler<ReportStatusRoute> = async (c) => {
  const { id } = c.req.valid('param')
  const row = await tasks.reportTaskStatus(svc(c), id, c.var.principal, c.req.valid('json'))
  return c.json(await present(c, row), 200)
}

export const remove: AppRouteHandler<RemoveRoute> = async (c) => {
  const { id } = c.req.valid('param')
  await tasks.deleteTask(svc(c), id, c.req.valid('header')['if-match'])
  return c.body(null, 204)
}

export const execute: AppRouteHandler<ExecuteRoute> = async (c) => {
  const { taskId, agentId } = c.req.valid('json')
  const { task } = await placeTask(svc(c), taskId, agentId)
  return c.json(await present(c, task), 200)
}

export const cancel: AppRouteHandler<CancelRoute> = async (c) => {
  const { id } = c.req.valid('param')
  const { task, accepted } = await tasks.cancelTask(svc(c), id)
  const dto = await present(c, task)
  return accepted ? c.json(dto, 202) : c.json(dto, 200)
}

export const retry: AppRouteHandler<RetryRoute> = async (c) => {
  const { id } = c.req.valid('param')
  const row = await tasks.retryTask(svc(c), id)
  return c.json(await present(c, row), 200)
}
