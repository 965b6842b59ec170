import { createRouter } from '../../lib/create-app'
import { checkDatabase } from '../../services/health'
import * as routes from './health.routes'

export const healthRouter = createRouter()
  .openapi(routes.health, async (c) => {
    const { config, database, startedAt } = c.var.deps
    const db = await checkDatabase(database)
    // Without its migrations the service cannot serve a request: that is down, not degraded.
    const status = db.status === 'ok' && db.migrations === 'applied' ? 'ok' : 'down'
    const body = {
      status,
      version: config.appVersion,
      environment: config.environment,
      uptimeSeconds: Math.round((Date.now() - (startedAt ?? new Date()).getTime()) / 1000),
      checks: { database: db, redis: { status: 'disabled' as const } },
    } as const
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
  .openapi(routes.redis, (c) => c.json({ status: 'disabled' as const }, 200))
