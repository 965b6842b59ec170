import { createRoute, z } from '@hono/zod-openapi'
import { errorResponses as E } from '../../lib/errors'
import { jsonContent as json, security } from '../../lib/route-helpers'
import { authenticate, canRead } from '../../middleware/auth'
import { EVENT_ID_MAX, lastEventIdHeader } from '../cursors'
import { IdParam, storedTimestamp } from '../schemas'

const tags = ['Events']

export const Event = z
  .object({
    id: z.number().int().openapi({ description: 'Monotonic: resume with Last-Event-ID or ?after=' }),
    type: z.string().openapi({ example: 'task.assigned' }),
    time: storedTimestamp,
    agentId: z.uuid().nullable(),
    taskId: z.uuid().nullable(),
    data: z.record(z.string(), z.unknown()).openapi({
      description:
        'The change: from/to states, attempt, reason… A task end whose run started in the same report (no task.started was written) has `started: true`.',
    }),
  })
  .openapi('Event')

export const EventPage = z
  .object({
    items: z.array(Event),
    nextAfter: z.number().int().openapi({ description: 'Pass as ?after= for the next page (the last id seen)' }),
  })
  .openapi('EventPage')

const paging = {
  after: z.coerce
    .number()
    .int()
    .min(0)
    .max(EVENT_ID_MAX)
    .optional()
    .openapi({ description: 'Only events after this id. Streams without it start at the newest event.' }),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
}

export const EventQuery = z.object({
  ...paging,
  type: z
    .string()
    .max(100)
    .regex(/^[a-z_.]*$/, 'lowercase letters, dots and underscores')
    .optional()
    .openapi({ description: 'Type prefix: task. or task.completed' }),
  agentId: z.uuid().optional(),
  taskId: z.uuid().optional(),
})

export const list = createRoute({
  method: 'get',
  path: '/events',
  operationId: 'events',
  summary: 'The event log, as JSON pages or a live Server-Sent Events stream',
  description:
    'With `Accept: text/event-stream`: every event as it is committed (`id:` is the event id, `event:` its type, `data:` the Event JSON), a `: keep-alive` comment every 15 s. Reconnect with `Last-Event-ID` (or `?after=`) to get everything missed, exactly once. Otherwise: a JSON page of events after `after`.',
  tags,
  security,
  middleware: [authenticate, canRead] as const,
  request: {
    query: EventQuery,
    headers: z.object({
      'last-event-id': lastEventIdHeader(EVENT_ID_MAX),
    }),
  },
  responses: {
    200: {
      description: 'A page of events, or the stream',
      content: {
        'application/json': { schema: EventPage },
        'text/event-stream': { schema: z.string().openapi({ example: 'id: 42\nevent: task.assigned\ndata: {…}\n\n' }) },
      },
    },
    ...E.common,
  },
})

const history = (path: '/tasks/{id}/events' | '/agents/{id}/events', operationId: string, what: string) =>
  createRoute({
    method: 'get',
    path,
    operationId,
    summary: `The history of one ${what}, oldest first`,
    tags,
    security,
    middleware: [authenticate] as const,
    request: { params: IdParam, query: z.object(paging) },
    responses: { 200: json(EventPage, `Events of the ${what}`), ...E.common, ...E.notFound },
  })

export const taskHistory = history('/tasks/{id}/events', 'taskEvents', 'task')
export const agentHistory = history('/agents/{id}/events', 'agentEvents', 'agent')
