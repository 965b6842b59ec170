import { createRoute, z } from '@hono/zod-openapi'
import { errorResponses as E } from '../../lib/errors'
import { jsonContent as json, security } from '../../lib/route-helpers'
import { authenticate, canRead } from '../../middleware/auth'

const counts = (description: string) => z.record(z.string(), z.number().int()).openapi({ description })
const outcomes = z.object({
  completed: z.number().int(),
  failed: z.number().int(),
  timedOut: z.number().int(),
  cancelled: z.number().int(),
})
const percentiles = z.object({ p50: z.number().nullable(), p95: z.number().nullable(), sample: z.number().int() })

export const AgentStatistics = z
  .object({
    total: z.number().int(),
    byStatus: counts('Agents per status'),
    byProvider: counts('Agents per provider'),
    slots: z
      .object({
        total: z.number().int().openapi({ description: 'Slots of online agents' }),
        used: z.number().int().openapi({ description: 'Assigned or running tasks held by online agents' }),
        free: z.number().int().openapi({ description: 'Free slots of online agents' }),
      })
      .openapi({
        description:
          'The slots that take work, all three over the same agents (the online ones). Tasks held by agents that are not online are in activeTasksByStatus.',
      }),
    activeTasksByStatus: counts(
      'Assigned or running tasks held, per agent status: `online` equals slots.used; the others are held by agents that take no new work (draining, maintenance, error, offline)',
    ),
  })
  .openapi('AgentStatistics')

export const TaskStatistics = z
  .object({
    total: z.number().int(),
    byStatus: counts('Tasks per status'),
    queue: z.object({
      pending: z.number().int(),
      byPriority: counts('Pending tasks per priority (1–10)'),
      oldestPendingAgeSeconds: z.number().int().nullable(),
    }),
    recent: z.object({
      last5Minutes: outcomes,
      last60Minutes: outcomes,
      successRate: z
        .number()
        .nullable()
        .openapi({ description: 'completed / (completed + failed + timed out), last hour' }),
      completedPerMinute: z.array(z.number().int()).openapi({ description: 'Last 60 minutes, oldest first' }),
    }),
    durationSeconds: percentiles.openapi({
      description: 'Run time of tasks completed in the last hour (newest 10,000)',
    }),
    createToAssignedSeconds: percentiles.openapi({
      description: 'Wait before placement, tasks finished in the last hour',
    }),
    failuresByCode: z
      .object({
        codes: z
          .array(z.object({ code: z.string(), count: z.number().int() }))
          .openapi({ description: 'The 20 commonest codes, most first (ties by code)' }),
        other: z.number().int().openapi({ description: 'Failures with a code beyond those 20' }),
        sample: z.number().int().openapi({ description: 'Failures counted' }),
      })
      .openapi({
        description:
          'Tasks that ended failed or timed out in the last hour (the newest 10,000), per `error.code`; a failure without a code counts under its status. A task retried since is not among them until it ends again.',
      }),
  })
  .openapi('TaskStatistics')

export const agents = createRoute({
  method: 'get',
  path: '/agents/statistics',
  operationId: 'agentStatistics',
  summary: 'The fleet: agents by status and provider, slots used and free',
  tags: ['Agents'],
  security,
  middleware: [authenticate, canRead] as const,
  responses: { 200: json(AgentStatistics, 'Fleet statistics'), ...E.common },
})

export const tasks = createRoute({
  method: 'get',
  path: '/tasks/statistics',
  operationId: 'taskStatistics',
  summary: 'The queue: tasks by status, depth by priority, recent outcomes and failures by code, durations, latency',
  tags: ['Tasks'],
  security,
  middleware: [authenticate, canRead] as const,
  responses: { 200: json(TaskStatistics, 'Queue statistics'), ...E.common },
})
