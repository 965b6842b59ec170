import type { AgentRow, TaskRow } from '../db/schema'
import type { DrainThen } from '../domain/agent-states'
import type { AgentStatus, Labels, PendingReason, Provider, TaskError, TaskStatus } from '../domain/model'
import type { Logger } from '../lib/logger'
import { isoColumns } from '../lib/timestamps'

/** Rows as the API answers them (the schemas in ./schemas.ts describe the same shapes). */

export interface AgentDto {
  id: string
  name: string
  description: string | null
  provider: Provider
  region: string | null
  capabilities: string[]
  labels: Labels
  taskTypes: string[]
  maxConcurrentTasks: number
  status: AgentStatus
  activeTasks: number
  lastHeartbeatAt: string | null
  lastMetrics: Record<string, unknown> | null
  drain: { deadline: string | null; then: DrainThen } | null
  quarantine: { reason: string; since: string | null; until: string | null } | null
  version: number
  createdAt: string | null
  updatedAt: string | null
}

const agentTimes = [
  'lastHeartbeatAt',
  'createdAt',
  'updatedAt',
  'drainDeadline',
  'quarantinedAt',
  'quarantineUntil',
] as const

/** An agent as answers show it; `log` hears of a timestamp it could not write. */
export function toAgentDto(a: AgentRow, log?: Logger): AgentDto {
  const times = isoColumns(a, agentTimes, { agentId: a.id }, log)
  return {
    id: a.id,
    name: a.name,
    description: a.description,
    provider: a.provider,
    region: a.region,
    capabilities: a.capabilities,
    labels: a.labels,
    taskTypes: a.taskTypes,
    maxConcurrentTasks: a.maxConcurrentTasks,
    status: a.status,
    activeTasks: a.activeTasks,
    lastHeartbeatAt: times.lastHeartbeatAt,
    lastMetrics: a.lastMetrics ?? null,
    drain:
      // biome-ignore lint/suspicious/noThenProperty: the drain's `then` (a status, never a function)
      a.status === 'draining' && a.drainThen ? { deadline: times.drainDeadline, then: a.drainThen as DrainThen } : null,
    quarantine:
      a.status === 'quarantined'
        ? { reason: a.quarantineReason ?? '', since: times.quarantinedAt, until: times.quarantineUntil }
        : null,
    version: a.version,
    createdAt: times.createdAt,
    updatedAt: times.updatedAt,
  }
}

export interface TaskDto {
  id: string
  name: string
  type: string
  payload: unknown
  priority: number
  requirements: {
    capabilities: string[]
    provider: Provider | null
    region: string | null
    labels: Labels
    agentId: string | null
  }
  agentId: string | null
  status: TaskStatus
  attempt: number
  maxAttempts: number
  failures: number
  lostCount: number
  timeoutSeconds: number
  scheduledAt: string | null
  idempotencyKey: string | null
  cancelRequested: boolean
  /** The rollout whose target this task is, if any. */
  rolloutId: string | null
  concurrency: { key: string; limit: number } | null
  fairnessKey: string | null
  pendingReason: PendingReason | null
  /** GET /tasks/{id} of a pending task nothing can take: why, requirement by requirement. */
  pendingDetails?: string[]
  progress: number | null
  result: unknown
  error: TaskError | null
  version: number
  createdAt: string | null
  assignedAt: string | null
  startedAt: string | null
  finishedAt: string | null
  updatedAt: string | null
}

const taskTimes = ['scheduledAt', 'createdAt', 'assignedAt', 'startedAt', 'finishedAt', 'updatedAt'] as const

/** A task as answers show it; `log` hears of a timestamp it could not write. */
export function toTaskDto(t: TaskRow, pendingReason: PendingReason | null = null, log?: Logger): TaskDto {
  const times = isoColumns(t, taskTimes, { taskId: t.id }, log)
  return {
    id: t.id,
    name: t.name,
    type: t.type,
    payload: t.payload,
    priority: t.priority,
    requirements: {
      capabilities: t.reqCapabilities,
      provider: t.reqProvider,
      region: t.reqRegion,
      labels: t.reqLabels,
      agentId: t.reqAgentId,
    },
    agentId: t.agentId,
    status: t.status,
    attempt: t.attempt,
    maxAttempts: t.maxAttempts,
    failures: t.failures,
    lostCount: t.lostCount,
    timeoutSeconds: t.timeoutSeconds,
    scheduledAt: times.scheduledAt,
    idempotencyKey: t.idempotencyKey,
    cancelRequested: t.cancelRequested,
    rolloutId: t.rolloutId ?? null,
    concurrency: t.concurrencyKey ? { key: t.concurrencyKey, limit: t.concurrencyLimit ?? 1 } : null,
    fairnessKey: t.fairnessKey ?? null,
    pendingReason: t.status === 'pending' ? pendingReason : null,
    progress: t.progress,
    result: t.result ?? null,
    error: t.error ?? null,
    version: t.version,
    createdAt: times.createdAt,
    assignedAt: times.assignedAt,
    startedAt: times.startedAt,
    finishedAt: times.finishedAt,
    updatedAt: times.updatedAt,
  }
}
