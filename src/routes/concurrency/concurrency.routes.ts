import { createRoute, z } from '@hono/zod-openapi'
import { errorResponses as E } from '../../lib/errors'
import { jsonContent as json, security } from '../../lib/route-helpers'
import { authenticate, canRead } from '../../middleware/auth'
import { page } from '../schemas'

const tags = ['Tasks']

export const ConcurrencyKey = z
  .object({
    key: z.string(),
    limit: z.number().int().openapi({ description: 'The limit its newest create named' }),
    active: z.number().int().openapi({ description: 'Its tasks assigned or running now' }),
    pending: z.number().int().openapi({ description: 'Its tasks waiting (pending)' }),
    updatedAt: z.iso.datetime(),
  })
  .openapi('ConcurrencyKey')

export const list = createRoute({
  method: 'get',
  path: '/concurrency',
  operationId: 'listConcurrencyKeys',
  summary: 'Concurrency keys: limits, live and waiting tasks',
  description:
    'Every concurrency key tasks were created with, in key order, with its limit, how many of its tasks are assigned or running, and how many wait. Paginated by key.',
  tags,
  security,
  middleware: [authenticate, canRead] as const,
  request: {
    query: z.object({
      limit: z.coerce.number().int().min(1).max(500).default(100),
      cursor: z.string().max(512).optional().openapi({ description: 'nextCursor of the previous page' }),
    }),
  },
  responses: { 200: json(page(ConcurrencyKey, 'ConcurrencyKeyPage'), 'Keys'), ...E.common },
})
