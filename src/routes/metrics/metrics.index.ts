import { createRoute, z } from '@hono/zod-openapi'
import { rolloutStatuses } from '../../domain/rollouts'
import { ApiError, errorResponses as E } from '../../lib/errors'
import { createRouter } from '../../middleware/router'
import { rolloutsByStatus } from '../../services/rollouts'
import { agentStatistics, taskStatistics } from '../../services/statistics'

const route = createRoute({
  method: 'get',
  path: '/metrics',
  operationId: 'metrics',
  summary: 'Prometheus metrics (text exposition format)',
  description:
    'HTTP requests and durations, agents, tasks and rollouts by status, queue depth, sweeps, assignments, expiries, requeues, retries, create→assigned and run-time histograms. Public unless METRICS_TOKEN is set; then send `Authorization: Bearer <METRICS_TOKEN>`.',
  tags: ['Health'],
  responses: {
    200: {
      description: 'Metrics',
      content: { 'text/plain': { schema: z.string().openapi({ example: 'agenticcp_tasks{status="pending"} 3' }) } },
    },
    401: E.common[401],
  },
})

/** Constant-time string comparison, so the token cannot be guessed byte by byte. */
function sameSecret(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a)
  const y = new TextEncoder().encode(b)
  let diff = x.length ^ y.length
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0)
  return diff === 0
}

export const metricsRouter = createRouter().openapi(route, async (c) => {
  const { config, database, metrics, clock, startedAt, streams, longPolls } = c.var.deps
  if (config.metricsToken) {
    const given = /^Bearer\s+(.+)$/i.exec(c.req.header('authorization') ?? '')?.[1] ?? ''
    if (!sameSecret(given, config.metricsToken))
      throw new ApiError('unauthorized', 'GET /metrics wants the METRICS_TOKEN.')
  }
  // Fleet and queue gauges come from the database at scrape time, so every instance agrees.
  const [agents, tasks, rollouts] = await Promise.all([
    agentStatistics(database.db),
    taskStatistics(database.db, clock.now()),
    rolloutsByStatus(database.db),
  ])
  for (const status of rolloutStatuses) metrics.rollouts.set({ status }, rollouts[status] ?? 0)
  for (const [status, n] of Object.entries(agents.byStatus)) metrics.agents.set({ status }, n)
  for (const [state, n] of Object.entries(agents.slots)) metrics.slots.set({ state }, n)
  for (const [status, n] of Object.entries(tasks.byStatus)) metrics.tasks.set({ status }, n)
  metrics.queueDepth.reset()
  for (let p = 1; p <= 10; p++) metrics.queueDepth.set({ priority: String(p) }, tasks.queue.byPriority[String(p)] ?? 0)
  metrics.oldestPending.set({}, tasks.queue.oldestPendingAgeSeconds ?? 0)
  metrics.info.set({ version: config.appVersion, environment: config.environment }, 1)
  metrics.uptime.set({}, Math.round((Date.now() - (startedAt ?? new Date()).getTime()) / 1000))
  metrics.eventStreams.set({}, streams.open)
  metrics.longPolls.set({}, longPolls.waiting)
  const statements = database.statements?.()
  if (statements !== undefined) metrics.dbStatements.setTotal({}, statements)
  return c.text(metrics.render(), 200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8' })
})
