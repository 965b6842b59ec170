import { createRoute, z } from '@hono/zod-openapi'
import { errorResponses as E } from '../../lib/errors'
import { jsonBody as body, jsonContent as json, security } from '../../lib/route-helpers'
import { authenticate, canRead, requireRole } from '../../middleware/auth'
import { INT4_MAX, lastEventIdHeader } from '../cursors'
import { IdParam, storedTimestamp, TimestampInput } from '../schemas'

const tags = ['Tasks']

export const LogChunkInput = z
  .strictObject({
    seq: z.number().int().min(0).max(INT4_MAX).openapi({
      description:
        'Numbered by the agent per attempt, from 0: a chunk already stored is skipped, so a resend is harmless.',
    }),
    stream: z.enum(['stdout', 'stderr', 'system']),
    data: z.string().openapi({ description: 'Text (UTF-8); at most TASK_LOG_MAX_CHUNK_BYTES bytes.' }),
    at: TimestampInput.optional().openapi({ description: 'When the agent saw it.' }),
  })
  .openapi('LogChunkInput')

export const LogWrite = z
  .strictObject({
    attempt: z
      .number()
      .int()
      .min(0)
      .max(INT4_MAX)
      .openapi({ description: 'The attempt the agent runs (from its assignment).' }),
    chunks: z.array(LogChunkInput).min(1).openapi({ description: 'At most TASK_LOG_MAX_CHUNKS_PER_REQUEST.' }),
  })
  .openapi('LogWrite')

export const LogChunk = z
  .object({
    seq: z.number().int(),
    stream: z.enum(['stdout', 'stderr', 'system']),
    data: z.string(),
    at: storedTimestamp,
  })
  .openapi('LogChunk')

export const LogPage = z
  .object({
    taskId: z.uuid(),
    attempt: z.number().int(),
    items: z.array(LogChunk),
    nextAfter: z.number().int().openapi({ description: 'Pass as ?after= for the next page (the last seq given).' }),
    dropped: z.object({ bytes: z.number().int(), chunks: z.number().int() }).nullable().openapi({
      description: 'What was dropped of the middle to keep the attempt under TASK_LOG_MAX_BYTES_PER_ATTEMPT.',
    }),
    live: z.boolean().openapi({ description: 'The attempt still runs: more may come.' }),
  })
  .openapi('LogPage')

export const write = createRoute({
  method: 'post',
  path: '/tasks/{id}/logs',
  operationId: 'writeTaskLogs',
  summary: 'Append to a task’s log (its agent)',
  description:
    'Only the agent holding the task’s current attempt, echoing that `attempt` (else 409 `stale_attempt`: drop the log). Chunks are stored by `seq`; one already stored is skipped. Beyond TASK_LOG_MAX_BYTES_PER_ATTEMPT the oldest middle of the log is dropped (the first and the latest lines stay).',
  tags,
  security,
  middleware: [authenticate, requireRole('agent')] as const,
  request: { params: IdParam, body: body(LogWrite) },
  responses: {
    202: json(z.object({ stored: z.number().int(), skipped: z.number().int() }).openapi('LogWriteResult'), 'Stored'),
    ...E.common,
    ...E.body,
    ...E.notFound,
    ...E.conflict,
  },
})

export const read = createRoute({
  method: 'get',
  path: '/tasks/{id}/logs',
  operationId: 'taskLogs',
  summary: 'A task’s log: JSON pages, plain text, or followed live',
  description:
    'One attempt (default: the latest). JSON: chunks after `after` (a seq). `Accept: text/plain`: the whole attempt’s text. `Accept: text/event-stream`: every chunk as it is stored (`id:` its seq, `event:` its stream, `data:` the LogChunk JSON), resumed with `Last-Event-ID`; the stream ends (`event: end`) once the attempt is over and everything was sent.',
  tags,
  security,
  middleware: [authenticate, canRead] as const,
  request: {
    params: IdParam,
    query: z.object({
      attempt: z.coerce.number().int().min(0).max(INT4_MAX).optional(),
      after: z.coerce
        .number()
        .int()
        .min(-1)
        .max(INT4_MAX)
        .default(-1)
        .openapi({ description: 'Only chunks after this seq (at most 2147483647, as seqs are).' }),
      limit: z.coerce.number().int().min(1).max(5000).default(1000),
    }),
    headers: z.object({
      'last-event-id': lastEventIdHeader(INT4_MAX),
    }),
  },
  responses: {
    200: {
      description: 'A page, the text, or the stream',
      content: {
        'application/json': { schema: LogPage },
        'text/plain': { schema: z.string() },
        'text/event-stream': { schema: z.string().openapi({ example: 'id: 3\nevent: stdout\ndata: {…}\n\n' }) },
      },
    },
    ...E.common,
    ...E.notFound,
  },
})

export type WriteRoute = typeof write
export type ReadRoute = typeof read
