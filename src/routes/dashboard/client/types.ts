/** What the page reads from the API (`/api/v1`): only the fields it uses. */

export interface Page<T> {
  items: T[]
}

export interface Agent {
  id: string
  name: string
  description: string | null
  status: string
  provider: string
  region: string | null
  capabilities: string[]
  labels: Record<string, string>
  /** The task types it runs ('*': any). */
  taskTypes?: string[]
  activeTasks: number
  maxConcurrentTasks: number
  lastHeartbeatAt: string | null
  lastMetrics: Record<string, unknown> | null
  /** A drain by an operator in force. */
  drain?: { deadline: string | null; then: string } | null
  /** While quarantined: why, since when, until when (null: until released). */
  quarantine?: { reason: string; since: string | null; until: string | null } | null
  version: number
  createdAt: string
  updatedAt: string
}

export interface Task {
  id: string
  name: string
  type: string
  status: string
  priority: number
  agentId: string | null
  attempt: number
  maxAttempts: number
  failures: number
  lostCount: number
  progress: number | null
  pendingReason: string | null
  timeoutSeconds: number
  idempotencyKey: string | null
  version: number
  cancelRequested: boolean
  requirements: unknown
  payload: unknown
  result: unknown
  error: { code: string; message: string } | null
  createdAt: string
  scheduledAt: string | null
  assignedAt: string | null
  startedAt: string | null
  finishedAt: string | null
  updatedAt: string
}

/** An event's data: what `describe` and the feed look at (the rest varies by type). */
export interface EventData {
  name?: string
  from?: string
  to?: string
  reason?: string
  via?: string
  attempt?: number
  /** On a report's end: the run started in the same report (no task.started was written). */
  started?: boolean
  error?: unknown
  progress?: number | null
  type?: string
  priority?: number
  provider?: string
  region?: string | null
  takeover?: boolean
  requeued?: number
  status?: string
}

export interface FleetEvent {
  id: number
  type: string
  time: string
  agentId: string | null
  taskId: string | null
  data: EventData | null
}

export interface LogChunk {
  seq: number
  stream: string
  data: string
}

export interface AgentStatistics {
  total: number
  byStatus: Record<string, number>
  /** Over the online agents alone: total, used and free. */
  slots: { used: number; free: number; total: number }
  /** Tasks held per agent status (online: slots.used). */
  activeTasksByStatus: Record<string, number>
}

export interface TaskStatistics {
  total: number
  byStatus: Record<string, number>
  queue: { pending: number; byPriority: Record<string, number>; oldestPendingAgeSeconds: number | null }
  recent: {
    last60Minutes: { completed: number; failed: number; timedOut: number }
    successRate: number | null
    /** Completed tasks per minute over the last hour, oldest first; the last is the minute under way. */
    completedPerMinute: number[]
  }
  durationSeconds: { p50: number | null }
  createToAssignedSeconds: { p50: number | null; p95: number | null }
  /** Failed or timed-out in the last hour, per error code: the commonest, most first. */
  failuresByCode: { codes: { code: string; count: number }[]; other: number; sample: number }
}
