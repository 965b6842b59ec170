import { z } from '@hono/zod-openapi'
import { ACTION_FROM, DRAIN_THEN, SETTABLE_STATUSES, selectorIsEmpty } from '../domain/agent-states'
import { KEY_LIMIT_MAX, KEY_MAX_LENGTH, KEY_PATTERN } from '../domain/concurrency'
import { ANY_TASK_TYPE, agentStatuses, pendingReasons, providers, reportStatuses, taskStatuses } from '../domain/model'
import { SHELL_TASK_TYPE, ShellPayload } from '../domain/shell'
import { EARLIEST_TIMESTAMP, isAcceptedInstant, LATEST_TIMESTAMP } from '../lib/timestamps'

/** Shared request and response schemas: the API contract in one place. */

export const MAX_JSON_DEPTH = 32

/** Nesting depth of a JSON value, giving up past `limit` (deep values are refused, not walked). */
function depthOver(value: unknown, limit: number): boolean {
  const stack: [unknown, number][] = [[value, 1]]
  while (stack.length) {
    const [v, d] = stack.pop() as [unknown, number]
    if (v === null || typeof v !== 'object') continue
    if (d > limit) return true
    for (const child of Object.values(v)) stack.push([child, d + 1])
  }
  return false
}

/** Any JSON value, nested at most MAX_JSON_DEPTH levels (deeper ones would exhaust the stack). */
export const JsonValue = z
  .unknown()
  .refine((v) => !depthOver(v, MAX_JSON_DEPTH), `nested deeper than ${MAX_JSON_DEPTH} levels`)

export const IdParam = z.object({
  id: z.uuid().openapi({ param: { name: 'id', in: 'path' }, example: '0192f3c5-6d7e-7a1b-8c9d-0e1f2a3b4c5d' }),
})

const timestamp = z.iso.datetime().openapi({ example: '2026-11-24T15:00:00.000Z' })
const nullableTimestamp = timestamp.nullable()
/**
 * A stored instant that is always set: null only when the stored value cannot be written
 * as ISO 8601 (a row edited out of range by hand), which the service logs instead of failing
 * the answer.
 */
export const storedTimestamp = timestamp.nullable().openapi({
  description: 'Always set; null only if the stored value cannot be written (out of range), which the service logs.',
})

/**
 * Every instant a request names, in a body or a query (a task's scheduledAt, a log line's
 * `at`, …): ISO 8601 with `Z` or an offset, from 2000-01-01 to the end of 9999 (UTC). The
 * one definition: outside it a value would be stored (`0000-01-01` as `0001-01-01 BC`)
 * and then unreadable, so it is refused here with 422 naming the field.
 */
export const TimestampInput = z.iso
  .datetime({ offset: true, abort: true })
  .refine((v) => isAcceptedInstant(new Date(v)), `must lie between ${EARLIEST_TIMESTAMP} and ${LATEST_TIMESTAMP}`)
  .openapi({
    type: 'string',
    format: 'date-time',
    description: `ISO 8601 with Z or an offset, from ${EARLIEST_TIMESTAMP} to ${LATEST_TIMESTAMP}.`,
    example: '2026-11-24T15:00:00Z',
  })

const token = (what: string, max: number) =>
  z
    .string()
    .min(1)
    .max(max)
    .regex(/^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$/, `${what}: letters, digits and . _ : / @ + - only`)

export const Capability = token('capability', 64).openapi({ example: 'gpu' })

/** A task type as tasks name it. */
export const TaskType = token('type', 100).openapi({ example: 'report.generate' })

/** The task types an agent runs: types as tasks name them, or `*` for any. */
export const TaskTypes = z
  .array(z.union([TaskType, z.literal(ANY_TASK_TYPE)]))
  .max(64)
  .openapi({
    description:
      'The task types this agent runs; `*` runs any, and none (`[]`) runs nothing. Tasks of other types are never placed on it.',
    example: ['shell', 'report.generate'],
  })
export const Labels = z
  .record(
    z
      .string()
      .min(1)
      .max(63)
      .regex(/^[A-Za-z0-9][A-Za-z0-9._/-]*$/, 'label key: letters, digits, . _ / -'),
    z.string().max(256),
  )
  .refine((l) => Object.keys(l).length <= 32, 'at most 32 labels')
  .openapi({ example: { zone: 'a', tier: 'spot' } })

export const Provider = z.enum(providers).openapi({ example: 'aws' })
export const AgentStatus = z.enum(agentStatuses)
export const TaskStatus = z.enum(taskStatuses)

export const AgentInput = z
  .strictObject({
    name: z
      .string()
      .min(1)
      .max(128)
      .regex(/^[A-Za-z0-9][A-Za-z0-9._:@ -]*$/, 'letters, digits, space and . _ : @ - only, starting alphanumeric')
      .openapi({ example: 'aws-use1-worker-01' }),
    description: z.string().max(1000).nullish(),
    provider: Provider,
    region: z.string().min(1).max(64).nullish().openapi({ example: 'us-east-1' }),
    capabilities: z.array(Capability).max(64).default([]),
    labels: Labels.default({}),
    taskTypes: TaskTypes.default([ANY_TASK_TYPE]),
    maxConcurrentTasks: z.number().int().min(1).max(1000).default(1),
  })
  .openapi('AgentInput')

export const AgentDrain = z
  .object({
    deadline: nullableTimestamp.openapi({
      description:
        'When the tasks it still holds are asked to stop (and requeued CANCEL_GRACE_SECONDS later); null: none.',
    }),
    // biome-ignore lint/suspicious/noThenProperty: the drain's `then` (a status, never a function)
    then: z.enum(DRAIN_THEN).openapi({ description: 'The status it moves to once it holds nothing.' }),
  })
  .openapi('AgentDrain')

export const HeartbeatDrain = AgentDrain.extend({
  due: z.boolean().openapi({
    description:
      'The deadline has passed (by the service’s clock): what `cancellations` names is taken from this agent by the drain, to be reported `failed` with code `agent_drained`. Before it (or with no deadline) a cancellation is a cancel, reported `cancelled`.',
  }),
}).openapi('HeartbeatDrain')

export const Agent = z
  .object({
    id: z.uuid(),
    name: z.string(),
    description: z.string().nullable(),
    provider: Provider,
    region: z.string().nullable(),
    capabilities: z.array(z.string()),
    labels: z.record(z.string(), z.string()),
    taskTypes: z.array(z.string()),
    maxConcurrentTasks: z.number().int(),
    status: AgentStatus,
    activeTasks: z.number().int(),
    lastHeartbeatAt: nullableTimestamp,
    lastMetrics: z.record(z.string(), z.unknown()).nullable(),
    drain: AgentDrain.nullable().openapi({ description: 'A drain by staff in force (status draining), or null.' }),
    quarantine: z
      .object({
        reason: z.string(),
        since: nullableTimestamp,
        until: nullableTimestamp.openapi({ description: 'When it ends by itself; null: until released.' }),
      })
      .nullable()
      .openapi({ description: 'While quarantined: why, since when, until when; else null.' }),
    version: z.number().int(),
    createdAt: storedTimestamp,
    updatedAt: storedTimestamp,
  })
  .openapi('Agent')

export const AgentWithToken = Agent.extend({
  token: z
    .string()
    .openapi({ description: 'An agent-scoped JWT, shown once. POST /agents/{id}/token makes a fresh one.' }),
  tokenExpiresAt: timestamp,
}).openapi('AgentWithToken')

export const AgentToken = z.object({ token: z.string(), expiresAt: timestamp }).openapi('AgentToken')

export const RegistrationTokenInput = z
  .strictObject({
    description: z.string().max(1000).nullish().openapi({ example: 'aws us-east-1 autoscaling group' }),
    expiresInMinutes: z.number().int().min(1).optional().openapi({
      description: 'Default 1440 (a day); at most MAX_REGISTRATION_TOKEN_LIFETIME_MINUTES (default a year).',
      example: 60,
    }),
    maxUses: z
      .number()
      .int()
      .min(1)
      .max(2_147_483_647)
      .nullish()
      .openapi({ description: 'Registrations it allows; absent: any number until it expires.', example: 10 }),
    labels: Labels.default({}).openapi({
      description: 'Set on every agent registered with it, over the labels the agent asks for.',
    }),
  })
  .openapi('RegistrationTokenInput')

export const RegistrationToken = z
  .object({
    id: z.uuid(),
    description: z.string().nullable(),
    labels: z.record(z.string(), z.string()),
    maxUses: z.number().int().nullable(),
    uses: z.number().int().openapi({ description: 'Agents registered with it so far.' }),
    expiresAt: storedTimestamp,
    expired: z.boolean(),
    createdBy: z.string().openapi({ description: 'The `sub` of the token that made it.' }),
    createdAt: storedTimestamp,
  })
  .openapi('RegistrationToken')

export const RegistrationTokenWithSecret = RegistrationToken.extend({
  token: z.string().openapi({
    description:
      'The secret (`acpr_…`), shown once: only its SHA-256 is stored. An agent sends it as `Authorization: Bearer acpr_…` to POST /agents.',
    example: 'acpr_ZXhhbXBsZS1leGFtcGxlLWV4YW1wbGUtZXhhbXBsZSE',
  }),
}).openapi('RegistrationTokenWithSecret')

export const AgentStatusInput = z
  .strictObject({
    status: z.enum(SETTABLE_STATUSES.staff).openapi({
      description: 'Operators may set online, draining, maintenance or error; an agent online, draining or error.',
    }),
  })
  .openapi('AgentStatusInput')

const deadlineSeconds = z.number().int().min(0).max(604_800).openapi({
  description:
    'Seconds from now until the tasks it still holds are asked to stop (then requeued CANCEL_GRACE_SECONDS later, without spending an attempt); absent: no deadline, it waits for them to end. At most a week.',
  example: 600,
})
const drainThen = z.enum(DRAIN_THEN).openapi({
  description: 'The status it moves to once it holds nothing (default maintenance).',
})
const quarantineReason = z.string().trim().min(1).max(500).openapi({ example: 'fails every task it gets' })
const quarantineMinutes = z.number().int().min(1).max(525_600).openapi({
  description: 'How long; absent: until released. At most a year.',
  example: 60,
})

export const DrainInput = z
  // biome-ignore lint/suspicious/noThenProperty: the drain's `then` (a status, never a function)
  .strictObject({ deadlineSeconds: deadlineSeconds.optional(), then: drainThen.optional() })
  .openapi('DrainInput')

export const QuarantineInput = z
  .strictObject({ reason: quarantineReason, minutes: quarantineMinutes.optional() })
  .openapi('QuarantineInput')

export const AgentSelector = z
  .strictObject({
    capabilities: z.array(z.string().min(1).max(100)).max(50).optional().openapi({ description: 'All of them.' }),
    provider: Provider.optional(),
    region: z.string().min(1).max(100).optional(),
    labels: Labels.optional().openapi({ description: 'All of them, with these values.' }),
    status: z.array(AgentStatus).max(agentStatuses.length).optional().openapi({ description: 'Any of them.' }),
    ids: z.array(z.uuid()).max(1000).optional().openapi({ description: 'At most 1000.' }),
  })
  .openapi('AgentSelector')

export const AgentActionInput = z
  .strictObject({
    selector: AgentSelector,
    action: z.enum(Object.keys(ACTION_FROM) as [keyof typeof ACTION_FROM, ...(keyof typeof ACTION_FROM)[]]),
    reason: quarantineReason.optional().openapi({ description: 'Required for quarantine.' }),
    minutes: quarantineMinutes.optional().openapi({ description: 'quarantine: how long; absent: until released.' }),
    deadlineSeconds: deadlineSeconds.optional(),
    // biome-ignore lint/suspicious/noThenProperty: the drain's `then` (a status, never a function)
    then: drainThen.optional(),
  })
  .superRefine((v, ctx) => {
    if (selectorIsEmpty(v.selector)) {
      ctx.addIssue({
        code: 'custom',
        path: ['selector'],
        message:
          'must name at least one of capabilities, provider, region, labels, status, ids (never the whole fleet)',
      })
    }
    if (v.action === 'quarantine' && !v.reason) {
      ctx.addIssue({ code: 'custom', path: ['reason'], message: 'required for quarantine' })
    }
    const only = (field: 'minutes' | 'deadlineSeconds' | 'then', action: string) => {
      if (v[field] !== undefined && v.action !== action) {
        ctx.addIssue({ code: 'custom', path: [field], message: `only with action ${action}` })
      }
    }
    only('minutes', 'quarantine')
    only('deadlineSeconds', 'drain')
    only('then', 'drain')
  })
  .openapi('AgentActionInput')

export const AgentActionResult = z
  .object({
    count: z.number().int().openapi({ description: 'Agents moved.' }),
    ids: z.array(z.uuid()).openapi({ description: 'Their ids, in order.' }),
  })
  .openapi('AgentActionResult')

const reportFields = {
  status: z.enum(reportStatuses),
  attempt: z.number().int().min(0).openapi({ description: 'The attempt the agent ran (from the assignment).' }),
  progress: z.number().min(0).max(100).optional(),
  result: JsonValue.optional(),
  error: z
    .strictObject({ code: z.string().min(1).max(100).optional(), message: z.string().min(1).max(4000) })
    .optional(),
}

export const HeartbeatReport = z.strictObject({ taskId: z.uuid(), ...reportFields }).openapi('HeartbeatReport', {
  description: 'A report on one of this agent’s tasks, as PATCH /tasks/{id}/status takes it.',
})

export const MAX_HEARTBEAT_REPORTS = 1000

export const HeartbeatInput = z
  .strictObject({
    agentId: z.uuid(),
    reports: z.array(HeartbeatReport).max(MAX_HEARTBEAT_REPORTS).optional().openapi({
      description:
        'Reports on this agent’s tasks, applied in order before new work is handed out (several for one task, e.g. running then completed, are fine). Each is judged on its own: see `reports` in the answer.',
    }),
    status: z.enum(SETTABLE_STATUSES.agent).optional(),
    metrics: z
      .record(z.string().max(100), JsonValue)
      .refine((m) => Object.keys(m).length <= 100, 'at most 100 metrics')
      .optional()
      .openapi({ example: { cpu: 0.42, memoryMb: 2048 } }),
    runningTaskIds: z.array(z.uuid()).max(1000).optional(),
    taskTypes: TaskTypes.optional().openapi({
      description: 'When sent, replaces the task types this agent runs (a runner sends its handlers).',
    }),
    waitSeconds: z.number().min(0).max(30).optional().openapi({
      description:
        'Long poll: with nothing to do, answer as soon as work lands on this agent, or after this many seconds.',
    }),
  })
  .openapi('HeartbeatInput')

const Requirements = z
  .strictObject({
    capabilities: z.array(Capability).max(64).default([]),
    provider: Provider.nullish(),
    region: z.string().min(1).max(64).nullish(),
    labels: Labels.default({}),
    agentId: z.uuid().nullish(),
  })
  .openapi('Requirements')

/** A concurrency or fairness key (src/domain/concurrency.ts). */
const FlowKey = (what: string) =>
  z
    .string()
    .min(1, `${what} must not be empty`)
    .max(KEY_MAX_LENGTH, `${what} is at most ${KEY_MAX_LENGTH} characters`)
    .regex(
      KEY_PATTERN,
      `${what} takes letters, digits and . _ : / @ = + - (starting with a letter or digit), no spaces`,
    )

export const ConcurrencyInput = z
  .strictObject({
    key: FlowKey('concurrency.key').openapi({ example: 'tenant-a:reports' }),
    limit: z.number().int().min(1, 'concurrency.limit must be at least 1').max(KEY_LIMIT_MAX).openapi({
      description: 'At most this many tasks of the key assigned or running at once (the newest create sets it).',
    }),
  })
  .openapi('Concurrency', {
    description:
      'At most `limit` tasks with this key are assigned or running at once, across the whole fleet. A task held back waits with pendingReason `concurrency_limit`.',
  })

const taskFields = {
  name: z.string().min(1).max(200).openapi({ example: 'nightly-report' }),
  type: TaskType,
  payload: JsonValue.default({}).openapi({
    description: 'Any JSON value the agent needs.',
    example: { day: '2026-11-24' },
  }),
  priority: z.number().int().min(1).max(10).default(5).openapi({ description: '1–10, higher first' }),
  requirements: Requirements.default({ capabilities: [], labels: {} }),
  maxAttempts: z.number().int().min(1).max(100).default(3),
  timeoutSeconds: z.number().int().min(1).max(604_800).default(300),
  scheduledAt: TimestampInput.nullish()
    .transform((v) => (v ? new Date(v) : null))
    .openapi({
      type: 'string',
      format: 'date-time',
      description: `Not placed before this time (${EARLIEST_TIMESTAMP} to ${LATEST_TIMESTAMP}).`,
    }),
  concurrency: ConcurrencyInput.nullish(),
  fairnessKey: FlowKey('fairnessKey').nullish().openapi({
    description:
      'The tenant placement alternates between within a priority (default: the concurrency key). Tasks with neither key count as one tenant.',
    example: 'tenant-a',
  }),
}

/**
 * A task of the built-in `shell` type carries the payload the runner's shell handler takes
 * ({command, env?, cwd?}, the same schema and limits): refused here with 422, not accepted
 * and failed later on the runner.
 */
export const checkShellPayload = (t: { type: string; payload: unknown }, ctx: z.RefinementCtx) => {
  if (t.type !== SHELL_TASK_TYPE) return
  const parsed = ShellPayload.safeParse(t.payload)
  if (parsed.success) return
  for (const issue of parsed.error.issues) {
    ctx.addIssue({ code: 'custom', path: ['payload', ...issue.path.map(String)], message: issue.message })
  }
}

export const TaskCreateInput = z
  .strictObject({
    ...taskFields,
    idempotencyKey: z
      .string()
      .min(1)
      .max(255)
      .optional()
      .openapi({ description: 'Or the Idempotency-Key header: a repeat returns the first task with 200.' }),
  })
  .superRefine(checkShellPayload)
  .openapi('TaskCreateInput')

export const TaskUpdateInput = z.strictObject(taskFields).superRefine(checkShellPayload).openapi('TaskUpdateInput')

export const MAX_BATCH_TASKS = 1000

export const TaskBatchInput = z
  .strictObject({
    tasks: z.array(TaskCreateInput).min(1).max(MAX_BATCH_TASKS).openapi({
      description: 'Up to 1,000 tasks, each as POST /tasks takes it (idempotency keys per item).',
    }),
  })
  .openapi('TaskBatchInput')

export const Task = z
  .object({
    id: z.uuid(),
    name: z.string(),
    type: z.string(),
    payload: z.unknown(),
    priority: z.number().int(),
    requirements: z.object({
      capabilities: z.array(z.string()),
      provider: z.string().nullable(),
      region: z.string().nullable(),
      labels: z.record(z.string(), z.string()),
      agentId: z.uuid().nullable(),
    }),
    agentId: z.uuid().nullable(),
    status: TaskStatus,
    attempt: z.number().int().openapi({ description: 'Bumped on every assignment; a report must echo it.' }),
    maxAttempts: z.number().int(),
    failures: z.number().int().openapi({ description: 'Runs that failed or timed out (lost agents excluded).' }),
    lostCount: z.number().int(),
    timeoutSeconds: z.number().int(),
    scheduledAt: nullableTimestamp,
    idempotencyKey: z.string().nullable(),
    cancelRequested: z.boolean(),
    rolloutId: z
      .uuid()
      .nullable()
      .openapi({ description: 'The rollout whose target this task is (docs/rollouts.md).' }),
    concurrency: z.object({ key: z.string(), limit: z.number().int() }).nullable().openapi({
      description: 'Its concurrency key and the limit it was created with (the key’s limit is the newest create’s).',
    }),
    fairnessKey: z.string().nullable(),
    pendingReason: z.enum(pendingReasons).nullable(),
    pendingDetails: z.array(z.string()).optional().openapi({
      description:
        'GET /tasks/{id} of a pending task that no agent can take now: which requirement no online agent meets, or that they are busy.',
    }),
    progress: z.number().nullable(),
    result: z.unknown(),
    error: z.object({ code: z.string(), message: z.string() }).nullable(),
    version: z.number().int(),
    createdAt: storedTimestamp,
    assignedAt: nullableTimestamp,
    startedAt: nullableTimestamp,
    finishedAt: nullableTimestamp,
    updatedAt: storedTimestamp,
  })
  .openapi('Task')

export const TaskStatusReport = z.strictObject(reportFields).openapi('TaskStatusReport')

export const ExecuteInput = z.strictObject({ taskId: z.uuid(), agentId: z.uuid().optional() }).openapi('ExecuteInput')

export const HeartbeatResponse = z
  .object({
    agent: Agent,
    assignments: z.array(Task).openapi({ description: 'Tasks assigned to this agent and not yet started.' }),
    cancellations: z.array(z.uuid()).openapi({
      description:
        'Tasks to stop: running ones with a cancel request, those held when a drain’s deadline passed, and reported ones this agent no longer holds.',
    }),
    heartbeatIntervalSeconds: z.number().int(),
    drain: HeartbeatDrain.nullable().openapi({
      description:
        'While an operator drains this agent: take nothing new, keep reporting what runs; once `due`, stop what `cancellations` names (report it failed with code `agent_drained`).',
    }),
    reports: z
      .array(
        z.object({
          taskId: z.uuid(),
          ok: z.boolean(),
          code: z.enum(['stale_attempt', 'invalid_transition', 'not_found']).optional(),
          attempt: z.number().int().optional().openapi({ description: 'With stale_attempt: the current attempt.' }),
          status: TaskStatus.optional().openapi({ description: 'With invalid_transition: the task’s status.' }),
        }),
      )
      .openapi({
        description:
          'One per report sent, in order: ok (applied, or a repeat of the report that ended the task), else why not. `stale_attempt` means the run is no longer this agent’s: stop it.',
      }),
  })
  .openapi('HeartbeatResponse')

export const paging = {
  limit: z.coerce.number().int().min(1).max(100).default(50),
  cursor: z.string().max(512).optional().openapi({ description: 'nextCursor of the previous page' }),
  order: z.enum(['asc', 'desc']).default('desc').openapi({ description: 'By creation time' }),
}

export const page = <T extends z.ZodType>(item: T, name: string) =>
  z.object({ items: z.array(item), nextCursor: z.string().nullable() }).openapi(name)

/** A comma-separated query value of `values` (at least one). */
export const csvOf = <T extends readonly [string, ...string[]]>(values: T) =>
  z
    .string()
    .transform((s) =>
      s
        .split(',')
        .map((v) => v.trim())
        .filter(Boolean),
    )
    .pipe(z.array(z.enum(values)).min(1))

export const AgentListQuery = z.object({
  status: AgentStatus.optional(),
  provider: Provider.optional(),
  region: z.string().max(64).optional(),
  capability: z
    .string()
    .max(1000)
    .transform((s) =>
      s
        .split(',')
        .map((v) => v.trim())
        .filter(Boolean),
    )
    .pipe(z.array(Capability).max(64))
    .optional()
    .openapi({ type: 'string', description: 'Comma-separated; agents having all of them' }),
  ...paging,
})

export const TaskListQuery = z.object({
  status: csvOf(taskStatuses)
    .optional()
    .openapi({ type: 'string', description: 'One status or a comma-separated list' }),
  agentId: z.uuid().optional(),
  type: z.string().max(100).optional(),
  priority: z.coerce.number().int().min(1).max(10).optional(),
  name: z.string().min(1).max(200).optional().openapi({
    description:
      'Tasks whose name starts with this, in any case. Names are not indexed: this searches the newest 10,000 tasks only (older ones are never matched), so it stays as fast on a table of millions.',
  }),
  ...paging,
})

export const IfMatchHeader = z.object({
  'if-match': z.string().max(200).optional().openapi({ description: 'ETag from a GET; 412 when it no longer matches' }),
})

export const etagHeader = {
  ETag: { description: 'The resource version, for If-Match', schema: { type: 'string' as const } },
}
