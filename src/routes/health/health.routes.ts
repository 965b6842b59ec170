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

/**
 * The probes: at the seed's paths under `/api/v1` (documented) and, for probes configured
 * before they moved, at the old root `/health…` paths (same handlers, left out of the document).
 */
function probes(hide: boolean) {
  const op = (id: string) => (hide ? `${id}Alias` : id)
  return {
    health: createRoute({
      method: 'get',
      path: '/health',
      operationId: op('health'),
      summary: 'Overall health with dependency checks',
      tags,
      hide,
      responses: {
        200: json(Health, 'ok or degraded'),
        503: json(Health, 'down: the database does not answer or lacks migrations'),
      },
    }),
    liveness: createRoute({
      method: 'get',
      path: '/health/liveness',
      operationId: op('liveness'),
      summary: 'The process is up (touches no dependency)',
      tags,
      hide,
      responses: { 200: json(Probe, 'alive') },
    }),
    readiness: createRoute({
      method: 'get',
      path: '/health/readiness',
      operationId: op('readiness'),
      summary: 'Ready for traffic: the database answers and migrations are applied',
      tags,
      hide,
      responses: { 200: json(Probe, 'ready'), 503: json(Probe, 'not ready') },
    }),
    database: createRoute({
      method: 'get',
      path: '/health/database',
      operationId: op('databaseHealth'),
      summary: 'Database check',
      tags,
      hide,
      responses: { 200: json(DatabaseCheck, 'ok'), 503: json(DatabaseCheck, 'down') },
    }),
    redis: createRoute({
      method: 'get',
      path: '/health/redis',
      operationId: op('redisHealth'),
      summary: 'Redis check (disabled when REDIS_URL is unset)',
      tags,
      hide,
      responses: { 200: json(RedisCheck, 'ok or disabled'), 503: json(RedisCheck, 'down') },
    }),
  }
}

/** Mounted under /api/v1. */
export const documented = probes(false)
/** Mounted at the root. */
export const aliases = probes(true)
