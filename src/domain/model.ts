/**
 * The vocabulary of the service: statuses, providers, roles and the shapes every layer
 * shares. Like everything in `src/domain/`, this imports nothing from the rest of `src/`
 * (docs/architecture.md, "Layers"), so the database schema, the services, the routes, the
 * agent runner and the client can all take it without a circle.
 */

export const providers = ['aws', 'azure', 'gcp', 'ncp', 'oci', 'alibaba', 'onprem', 'other'] as const
export type Provider = (typeof providers)[number]

/**
 * `quarantined`: taken out of service by staff or automatically (a streak of failed attempts,
 * docs/scheduler.md); it keeps heartbeating and finishing what it runs, takes nothing new,
 * and is not counted as capacity.
 */
export const agentStatuses = ['online', 'draining', 'maintenance', 'quarantined', 'error', 'offline'] as const
export type AgentStatus = (typeof agentStatuses)[number]

export const taskStatuses = ['pending', 'assigned', 'running', 'completed', 'failed', 'cancelled', 'timed_out'] as const
export type TaskStatus = (typeof taskStatuses)[number]

/** A task an agent holds: it takes one of the agent's slots. */
export const liveStatuses = ['assigned', 'running'] as const satisfies readonly TaskStatus[]

/**
 * Why a pending task waits: `scheduled` (its scheduledAt is ahead, it never ran) · `backoff`
 * (a retry delay is ahead) · `no_agent_for_type` (no online agent runs its type) ·
 * `no_matching_agent` (no online agent meets its requirements) · `agents_busy` (fitting
 * agents are all full) · `concurrency_limit` (its concurrency key has as many tasks
 * assigned or running as its limit) · `queued` (a fitting agent has a free slot; the next
 * placement takes it).
 */
export const pendingReasons = [
  'scheduled',
  'backoff',
  'no_agent_for_type',
  'no_matching_agent',
  'agents_busy',
  'concurrency_limit',
  'queued',
] as const
export type PendingReason = (typeof pendingReasons)[number]

/**
 * What an agent (or an operator on its behalf) may report through PATCH /tasks/{id}/status
 * or a heartbeat. `declined`: the agent does not run the task's type (its declaration was
 * stale); the task goes back to the queue, no attempt spent, never offered to it again.
 */
export const reportStatuses = ['running', 'completed', 'failed', 'cancelled', 'declined'] as const

/** An agent that declares no task types runs any (`*`). */
export const ANY_TASK_TYPE = '*'
export type ReportStatus = (typeof reportStatuses)[number]

/** Roles a JWT may claim. */
export const roles = ['admin', 'operator', 'viewer', 'agent'] as const
export type Role = (typeof roles)[number]

/**
 * Who a request acts as: a JWT's role, or `registration` for an `acpr_…` registration
 * token (never a JWT claim), which may do exactly one thing: POST /agents.
 */
export type PrincipalRole = Role | 'registration'

export interface Principal {
  /** The JWT's `sub`; for a registration token, the token's id. */
  sub: string
  role: PrincipalRole
  /** For role `agent`: the agent id (same as `sub`). */
  agentId?: string
}

export type Labels = Record<string, string>

/**
 * One failed attempt in an agent's failure streak (`fail_streak`, the streak rule in
 * ./agent-states.ts): the task, its type, the error code, and when (epoch seconds).
 */
export interface StreakEntry {
  t: string
  y: string
  c: string | null
  at: number
}
export type TaskError = { code: string; message: string }

/** What one sweep did (POST /scheduler/sweep answers it; the scheduler_state row keeps the last). */
export interface SweepSummary {
  expiredAgents: number
  requeued: number
  timedOut: number
  retried: number
  cancelled: number
  assigned: number
  /** Events past EVENT_RETENTION_DAYS deleted by this sweep. */
  eventsPruned: number
  /** Task log chunks past LOG_RETENTION_DAYS deleted by this sweep. */
  logsPruned: number
  durationMs: number
  /** Another sweep held the lock: the recovery steps were left to it. */
  skipped: boolean
  startedAt: string
}
