import type { AgentRow, Labels, TaskError, TaskRow } from '../db/schema'

export const providers = ['aws', 'azure', 'gcp', 'ncp', 'oci', 'alibaba', 'onprem', 'other'] as const
export type Provider = (typeof providers)[number]

export const agentStatuses = ['online', 'draining', 'maintenance', 'error', 'offline'] as const
export type AgentStatus = (typeof agentStatuses)[number]

export const taskStatuses = ['pending', 'assigned', 'running', 'completed', 'failed', 'cancelled', 'timed_out'] as const
export type TaskStatus = (typeof taskStatuses)[number]

export const terminalStatuses: readonly TaskStatus[] = ['completed', 'failed', 'cancelled', 'timed_out']
export const activeStatuses: readonly TaskStatus[] = ['assigned', 'running']

export const pendingReasons = ['scheduled', 'backoff', 'no_matching_agent', 'agents_busy', 'queued'] as const
export type PendingReason = (typeof pendingReasons)[number]

/** What an agent (or an operator on its behalf) may report through PATCH /tasks/{id}/status. */
export const reportStatuses = ['running', 'completed', 'failed', 'cancelled'] as const
export type ReportStatus = (typeof reportStatuses)[number]

/**
 * Every move a task may make, by who makes it. Anything else is refused with 409 and
 * the moves allowed from the task's current state.
 */
export const taskMoves: Record<TaskStatus, readonly string[]> = {
  pending: ['assigned (placement)', 'cancelled (cancel)'],
  assigned: ['running (report)', 'failed (report)', 'cancelled (cancel)', 'pending (agent lost or slow)'],
  running: [
    'running (progress report)',
    'completed (report)',
    'failed (report)',
    'cancelled (report, after a cancel request)',
    'timed_out (sweep)',
    'cancelRequested (cancel)',
  ],
  completed: [],
  failed: ['pending (retry)', 'cancelled (cancel, while an automatic retry is due)'],
  cancelled: ['pending (retry)'],
  timed_out: ['pending (retry)', 'cancelled (cancel, while an automatic retry is due)'],
}

/** Report moves allowed from a state; `cancelled` needs a prior cancel request. */
export function allowedReports(task: Pick<TaskRow, 'status' | 'cancelRequested'>): ReportStatus[] {
  switch (task.status) {
    case 'assigned':
      return ['running', 'failed']
    case 'running':
      return task.cancelRequested ? ['running', 'completed', 'failed', 'cancelled'] : ['running', 'completed', 'failed']
    default:
      return []
  }
}

export interface AgentDto {
  id: string
  name: string
  description: string | null
  provider: Provider
  region: string | null
  capabilities: string[]
  labels: Labels
  maxConcurrentTasks: number
  status: AgentStatus
  activeTasks: number
  lastHeartbeatAt: string | null
  lastMetrics: Record<string, unknown> | null
  version: number
  createdAt: string
  updatedAt: string
}

const iso = (d: Date | null) => (d ? d.toISOString() : null)

export function toAgentDto(a: AgentRow): AgentDto {
  return {
    id: a.id,
    name: a.name,
    description: a.description,
    provider: a.provider,
    region: a.region,
    capabilities: a.capabilities,
    labels: a.labels,
    maxConcurrentTasks: a.maxConcurrentTasks,
    status: a.status,
    activeTasks: a.activeTasks,
    lastHeartbeatAt: iso(a.lastHeartbeatAt),
    lastMetrics: a.lastMetrics ?? null,
    version: a.version,
    createdAt: a.createdAt.toISOString(),
    updatedAt: a.updatedAt.toISOString(),
  }
}

export interface Requirements {
  capabilities: string[]
  provider?: string | null
  region?: string | null
  labels?: Labels
  agentId?: string | null
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
  pendingReason: PendingReason | null
  progress: number | null
  result: unknown
  error: TaskError | null
  version: number
  createdAt: string
  assignedAt: string | null
  startedAt: string | null
  finishedAt: string | null
  updatedAt: string
}

export function toTaskDto(t: TaskRow, pendingReason: PendingReason | null = null): TaskDto {
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
    scheduledAt: iso(t.scheduledAt),
    idempotencyKey: t.idempotencyKey,
    cancelRequested: t.cancelRequested,
    pendingReason: t.status === 'pending' ? pendingReason : null,
    progress: t.progress,
    result: t.result ?? null,
    error: t.error ?? null,
    version: t.version,
    createdAt: t.createdAt.toISOString(),
    assignedAt: iso(t.assignedAt),
    startedAt: iso(t.startedAt),
    finishedAt: iso(t.finishedAt),
    updatedAt: t.updatedAt.toISOString(),
  }
}

/** Parses an If-Match header (`"3"`, `W/"3"`, `*`, or a list) and checks it against a version. */
export function ifMatchOk(header: string | undefined, version: number): boolean {
  if (header === undefined) return true
  return header
    .split(',')
    .map((s) => s.trim().replace(/^W\//, '').replace(/^"|"$/g, ''))
    .some((v) => v === '*' || v === String(version))
}

export const etagOf = (version: number) => `"${version}"`
