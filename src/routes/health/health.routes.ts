import { createRoute, z } from '@hono/zod-openapi'
import { jsonContent as json } from '../../lib/route-helpers'

const tags = ['Health']

export const DatabaseCheck = z
  .object({
    status: z.enum(['ok', 'down']),
    latencyMs: z.number(),
    driver: z.string().openapi({ example: 'pglite' }),
    migrations: z.enum(['applied', 'pending', 'unknown']),
    error: z.string().optional(),
  })
  .openapi('DatabaseCheck')

export const RedisCheck = z
  .object({
    status: z.enum(['ok', 'down', 'disabled']),
    latencyMs: z.number().optional(),
    error: z.string().optional(),
  })
  .openapi('RedisCheck')

export const Health = z
  .object({
    status: z.enum(['ok', 'degraded', 'down']),
    version: z.string(),
    environment: z.string(),
    uptimeSeconds: z.number(),
    checks: z.object({ database: DatabaseCheck, redis: RedisCheck }),
  })
  .openapi('Health')

const Probe = z.object({ status: z.string(), reason: z.string().optional() }).openapi('Probe')

export const health = createRoute({
  method: 'get',
  path: '/health',
  operationId: 'health',
  summary: 'Overall health with dependency checks',
  tags,
  responses: {
    200: json(Health, 'ok or degraded'),
    503: json(Health, 'down: the database does not answer or lacks migrations'),
  },
})

export const liveness = createRoute({
  method: 'get',
  path: '/health/liveness',
  operationId: 'liveness',
  summary: 'The process is up (touches no dependency)',
  tags,
  responses: { 200: json(Probe, 'alive') },
})

export const readiness = createRoute({
  method: 'get',
  path: '/health/readiness',
  operationId: 'readiness',
  summary: 'Ready for traffic: the database answers and migrations are applied',
  tags,
  responses: { 200: json(Probe, 'ready'), 503: json(Probe, 'not ready') },
})

export const database = createRoute({
  method: 'get',
  path: '/health/database',
  operationId: 'databaseHealth',
  summary: 'Database check',
  tags,
  responses: { 200: json(DatabaseCheck, 'ok'), 503: json(DatabaseCheck, 'down') },
})

export const redis = createRoute({
  method: 'get',
  path: '/health/redis',
  operationId: 'redisHealth',
  summary: 'Redis check (disabled when REDIS_URL is unset)',
  tags,
  responses: { 200: json(RedisCheck, 'ok or disabled'), 503: json(RedisCheck, 'down') },
})
