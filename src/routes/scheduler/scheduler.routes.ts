import { createRoute, z } from '@hono/zod-openapi'
import { errorResponses as E } from '../../lib/errors'
import { jsonContent as json, security } from '../../lib/route-helpers'
import { authenticate, canRead, requireRole } from '../../middleware/auth'

const tags = ['Scheduler']

export const SweepSummary = z
  .object({
    expiredAgents: z.number().int().openapi({ description: 'Silent agents set offline' }),
    requeued: z
      .number()
      .int()
      .openapi({ description: 'Assigned tasks back to pending (agent lost or not started in time)' }),
    timedOut: z.number().int(),
    retried: z.number().int().openapi({ description: 'Failed/timed-out tasks back to pending after backoff' }),
    cancelled: z.number().int(),
    assigned: z.number().int(),
    eventsPruned: z.number().int().openapi({ description: 'Events older than EVENT_RETENTION_DAYS deleted' }),
    logsPruned: z.number().int().openapi({ description: 'Task log chunks older than LOG_RETENTION_DAYS deleted' }),
    durationMs: z.number(),
    skipped: z.boolean().openapi({ description: 'Another sweep held the lock; only placement ran' }),
    startedAt: z.iso.datetime(),
  })
  .openapi('SweepSummary')

export const SchedulerStatus = z
  .object({
    lastRunAt: z.iso.datetime().nullable(),
    lastSummary: SweepSummary.nullable(),
    runs: z.number().int().openapi({ description: 'Sweeps recorded in this database, by every instance' }),
    sweepIntervalSeconds: z
      .number()
      .int()
      .openapi({ description: 'This instance’s timer (0 = off; Workers use the cron)' }),
    stalls: z
      .array(
        z.object({
          startedAt: z.iso.datetime(),
          endedAt: z.iso.datetime(),
          seconds: z.number(),
          cause: z.enum(['paused', 'database', 'down']).openapi({
            description:
              'paused: a server process did not run (its event loop stalled); database: it could not reach the database; down: no server swept',
          }),
          observer: z.string().openapi({ description: 'The process that noticed it (pid N, or worker)' }),
        }),
      )
      .openapi({
        description:
          'The newest stretches (up to 10) during which the service could not hear agents: deadlines (agent silence, task timeouts, cancel grace, assign timeout) move by the time they overlap',
      }),
  })
  .openapi('SchedulerStatus')

export const sweep = createRoute({
  method: 'post',
  path: '/scheduler/sweep',
  operationId: 'runSweep',
  summary: 'Run one scheduler sweep now',
  description:
    'Expires silent agents, times out and requeues overdue tasks, schedules retries, then places pending tasks. Returns what it did.',
  tags,
  security,
  middleware: [authenticate, requireRole('admin')] as const,
  responses: { 200: json(SweepSummary, 'What the sweep did'), ...E.common },
})

export const status = createRoute({
  method: 'get',
  path: '/scheduler/status',
  operationId: 'schedulerStatus',
  summary: 'The last sweep: when and what it did',
  tags,
  security,
  middleware: [authenticate, canRead] as const,
  responses: { 200: json(SchedulerStatus, 'Scheduler status'), ...E.common },
})
