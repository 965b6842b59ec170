import type { AppRouteHandler } from '../../middleware/context'
import { createRouter } from '../../middleware/router'
import { checkDatabase } from '../../services/health'
import * as routes from './health.routes'

type R = typeof routes.documented

const health: AppRouteHandler<R['health']> = async (c) => {
  const { config, database, startedAt, kv } = c.var.deps
  const [db, redis] = await Promise.all([checkDatabase(database), kv.health()])
  // Without its migrations the service cannot serve a request: that is down, not degraded.
  // Without Redis it serves everything from Postgres, slower: degraded.
  const status: 'ok' | 'degraded' | 'down' =
    db.status !== 'ok' || db.migrations !== 'applied' ? 'down' : redis.status === 'down' ? 'degraded' : 'ok'
  const body = {
    status,
    version: config.appVersion,
    environment: config.environment,
    uptimeSeconds: Math.round((Date.now() - (startedAt ?? new Date()).getTime()) / 1000),
    checks: { database: db, redis },
  }
  return status === 'down' ? c.json(body, 503) : c.json(body, 200)
}

const liveness: AppRouteHandler<R['liveness']> = (c) => c.json({ status: 'ok' }, 200)

const readiness: AppRouteHandler<R['readiness']> = async (c) => {
  const db = await checkDatabase(c.var.deps.database)
  if (db.status !== 'ok') return c.json({ status: 'not_ready', reason: 'database does not answer' }, 503)
  if (db.migrations !== 'applied') return c.json({ status: 'not_ready', reason: 'migrations not applied' }, 503)
  return c.json({ status: 'ready' }, 200)
}

const database: AppRouteHandler<R['database']> = async (c) => {
  const db = await checkDatabase(c.var.deps.database)
  return db.status === 'ok' ? c.json(db, 200) : c.json(db, 503)
}

const redis: AppRouteHandler<R['redis']> = async (c) => {
  const r = await c.var.deps.kv.health()
  return r.status === 'down' ? c.json(r, 503) : c.json(r, 200)
}

/** Mounted under /api/v1: the probes at the seed's paths, in the OpenAPI document. */
export const healthRouter = createRouter()
  .openapi(routes.documented.health, health)
  .openapi(routes.documented.liveness, liveness)
  .openapi(routes.documented.readiness, readiness)
  .openapi(routes.documented.database, database)
  .openapi(routes.documented.redis, redis)

/** Mounted at the root: the same probes at /health…, for probes configured before they moved. */
export const healthAliasRouter = createRouter()
  .openapi(routes.aliases.health, health)
  .openapi(routes.aliases.liveness, liveness)
  .openapi(routes.aliases.readiness, readiness)
  .openapi(routes.aliases.database, database)
  .openapi(routes.aliases.redis, redis)
