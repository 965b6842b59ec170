import { createRouter } from '../../lib/create-app'
import { checkDatabase } from '../../services/health'
import * as routes from './health.routes'

export const healthRouter = createRouter()
  .openapi(routes.health, async (c) => {
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
  })
  .openapi(routes.liveness, (c) => c.json({ status: 'ok' }, 200))
  .openapi(routes.readiness, async (c) => {
    const db = await checkDatabase(c.var.deps.database)
    if (db.status !== 'ok') return c.json({ status: 'not_ready', reason: 'database does not answer' }, 503)
    if (db.migrations !== 'applied') return c.json({ status: 'not_ready', reason: 'migrations not applied' }, 503)
    return c.json({ status: 'ready' }, 200)
  })
  .openapi(routes.database, async (c) => {
    const db = await checkDatabase(c.var.deps.database)
    return db.status === 'ok' ? c.json(db, 200) : c.json(db, 503)
  })
  .openapi(routes.redis, async (c) => {
    const redis = await c.var.deps.kv.health()
    return redis.status === 'down' ? c.json(redis, 503) : c.json(redis, 200)
  })
