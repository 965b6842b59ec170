import { sql } from 'drizzle-orm'
import {
  bigint,
  boolean,
  check,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  real,
  smallint,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from 'drizzle-orm/pg-core'

import type { AgentStatus, Labels, Provider, StreakEntry, SweepSummary, TaskError, TaskStatus } from '../domain/model'
import type { RolloutStatus, StrategyInput, TargetStatus } from '../domain/rollouts'
import type { StallCause } from '../lib/stalls'

const ts = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' })

/**
 * Ids are UUIDv7, made by the app: they sort by creation time, so "oldest first" and the
 * list cursors use the primary key and need no extra index.
 */
export const agents = pgTable(
  'agents',
  {
    id: uuid('id').primaryKey(),
    name: text('name').notNull(),
    description: text('description'),
    provider: text('provider').$type<Provider>().notNull(),
    region: text('region'),
    capabilities: text('capabilities').array().notNull().default(sql`'{}'::text[]`),
    labels: jsonb('labels').$type<Labels>().notNull().default({}),
    /** The task types it runs; `*` is any. Declared on register, update and heartbeat. */
    taskTypes: text('task_types').array().notNull().default(sql`'{*}'::text[]`),
    maxConcurrentTasks: integer('max_concurrent_tasks').notNull().default(1),
    /** Tasks assigned to or running on this agent; kept in the same transaction as every task move. */
    activeTasks: integer('active_tasks').notNull().default(0),
    status: text('status').$type<AgentStatus>().notNull().default('offline'),
    lastHeartbeatAt: ts('last_heartbeat_at'),
    lastMetrics: jsonb('last_metrics').$type<Record<string, unknown>>(),
    /** Agent tokens carry it as `tv`; rotating the token bumps it, so older tokens stop working. */
    tokenVersion: integer('token_version').notNull().default(1),
    /**
     * A drain by staff (POST /agents/{id}/drain): the status the agent moves to once it holds
     * nothing, and when the tasks it still holds are asked to stop (null: no deadline).
     * Null while no drain by staff is in force (an agent's own `draining` has neither).
     */
    drainThen: text('drain_then').$type<AgentStatus>(),
    drainDeadline: ts('drain_deadline'),
    /** Set while `quarantined`: why, since when, and until when (null: until released). */
    quarantineReason: text('quarantine_reason'),
    quarantinedAt: ts('quarantined_at'),
    quarantineUntil: ts('quarantine_until'),
    /**
     * Its latest failed attempts since its last completed one (the streak rule,
     * src/domain/agent-states.ts), newest last, at most STREAK_KEEP: what automatic
     * quarantine judges.
     */
    failStreak: jsonb('fail_streak').$type<StreakEntry[]>().notNull().default([]),
    version: integer('version').notNull().default(1),
    createdAt: ts('created_at').notNull(),
    updatedAt: ts('updated_at').notNull(),
  },
  (t) => [
    uniqueIndex('agents_name_key').on(t.name),
    index('agents_status_idx').on(t.status, t.id),
    index('agents_provider_idx').on(t.provider, t.id),
    index('agents_region_idx').on(t.region, t.id),
    index('agents_capabilities_idx').using('gin', t.capabilities),
    // No index on last_heartbeat_at: the sweep's silence test reads it through coalesce()
    // (no index could serve it), and without one a heartbeat changes no indexed column, so
    // its update is HOT (no index entries at all; fillfactor 50 leaves the room, migration 0002).
    check('agents_active_tasks_check', sql`active_tasks >= 0`),
    check('agents_max_concurrent_check', sql`max_concurrent_tasks >= 1`),
  ],
)

export const tasks = pgTable(
  'tasks',
  {
    id: uuid('id').primaryKey(),
    name: text('name').notNull(),
    type: text('type').notNull(),
    payload: jsonb('payload').$type<unknown>().notNull().default({}),
    priority: smallint('priority').notNull().default(5),
    reqCapabilities: text('req_capabilities').array().notNull().default(sql`'{}'::text[]`),
    reqProvider: text('req_provider').$type<Provider>(),
    reqRegion: text('req_region'),
    reqLabels: jsonb('req_labels').$type<Labels>().notNull().default({}),
    reqAgentId: uuid('req_agent_id'),
    /** Agents that declined the task (they do not run its type): it is not offered to them again. */
    declinedBy: uuid('declined_by').array().notNull().default(sql`'{}'::uuid[]`),
    /** The agent holding the task now (assigned/running) or that last held it. No FK: history outlives agents. */
    agentId: uuid('agent_id'),
    status: text('status').$type<TaskStatus>().notNull().default('pending'),
    /** Bumped on every assignment; the fence an agent's report must echo. */
    attempt: integer('attempt').notNull().default(0),
    maxAttempts: integer('max_attempts').notNull().default(3),
    /** Runs that ended failed or timed_out through the task's own fault (agent losses excluded). */
    failures: integer('failures').notNull().default(0),
    lostCount: integer('lost_count').notNull().default(0),
    timeoutSeconds: integer('timeout_seconds').notNull().default(300),
    scheduledAt: ts('scheduled_at'),
    /** Not placed before this time: max(createdAt, scheduledAt), or the end of a retry backoff. */
    availableAt: ts('available_at').notNull(),
    idempotencyKey: text('idempotency_key'),
    /** Who used the key (the token's `sub`): keys are scoped to their caller. */
    idempotencyOwner: text('idempotency_owner'),
    /** SHA-256 of the normalised create request, so reusing a key for another request is refused. */
    idempotencyHash: text('idempotency_hash'),
    cancelRequested: boolean('cancel_requested').notNull().default(false),
    cancelRequestedAt: ts('cancel_requested_at'),
    /** Running tasks: startedAt + timeoutSeconds, past which the sweep times the task out. */
    deadlineAt: ts('deadline_at'),
    /** Set when a failed/timed-out task has retries left; the sweep requeues it with backoff. */
    autoRetry: boolean('auto_retry').notNull().default(false),
    /**
     * After a timeout or an unconfirmed cancel, the attempt that ended may still run on
     * `liveAgentId` until `liveUntil` (the cancel grace plus a kill margin): no retry of the
     * task is placed before then, unless that agent reports the attempt's end or is lost.
     */
    liveAgentId: uuid('live_agent_id'),
    liveUntil: ts('live_until'),
    /**
     * A drain's stop request (its agent's drain deadline passed while it held the task): not
     * final like a cancel; the task goes back to pending once (`drain_requeue`).
     */
    drainRequestedAt: ts('drain_requested_at'),
    /**
     * The task's requirement class (its type, capabilities, provider, region and labels, as
     * a hash; `task_shape()` in migration 0007): placement reads the queue shape by shape
     * (`taskShapes`). Computed by Postgres, never written.
     */
    shape: uuid('shape').generatedAlwaysAs(
      sql`task_shape_keyed(type, req_capabilities, req_provider, req_region, req_labels, fairness_key, concurrency_key)`,
    ),
    /**
     * Flow control (src/domain/concurrency.ts): at most the key's limit of tasks with this key
     * are assigned or running at once; `concurrencyLimit` is the limit this task was created
     * with (the key row's limit is the newest create's). `fairnessKey`: the tenant placement
     * alternates between within a priority (else the concurrency key). Both are part of the
     * shape (migration 0010), so each tenant's tasks are a queue of their own.
     */
    concurrencyKey: text('concurrency_key'),
    concurrencyLimit: integer('concurrency_limit'),
    fairnessKey: text('fairness_key'),
    /** The rollout whose target this task is (src/services/rollouts.ts); null for any other task. */
    rolloutId: uuid('rollout_id'),
    progress: real('progress'),
    result: jsonb('result').$type<unknown>(),
    error: jsonb('error').$type<TaskError>(),
    version: integer('version').notNull().default(1),
    createdAt: ts('created_at').notNull(),
    assignedAt: ts('assigned_at'),
    startedAt: ts('started_at'),
    finishedAt: ts('finished_at'),
    updatedAt: ts('updated_at').notNull(),
  },
  (t) => [
    // Only tasks made with a key carry an entry (most have none: every version of them would).
    uniqueIndex('tasks_idempotency_key_idx')
      .on(t.idempotencyOwner, t.idempotencyKey)
      .where(sql`idempotency_key IS NOT NULL`),
    index('tasks_status_idx').on(t.status, t.id),
    index('tasks_agent_idx').on(t.agentId, t.id),
    // An agent's live work (heartbeat, capacity checks, agent loss).
    index('tasks_agent_active_idx').on(t.agentId).where(sql`status IN ('assigned', 'running')`),
    index('tasks_type_idx').on(t.type, t.id),
    // The queue: pending tasks by priority (high first), then age (UUIDv7 order), per shape
    // (unpinned tasks) and per pinned agent: what placement reads (docs/scheduler.md).
    index('tasks_shape_queue_idx')
      .on(t.shape, t.priority.desc(), t.id)
      .where(sql`status = 'pending' AND req_agent_id IS NULL`),
    // Flow control: a key's live tasks (the sweep's recount) and its waiting ones (GET /concurrency).
    index('tasks_concurrency_idx')
      .on(t.concurrencyKey, t.status)
      .where(sql`concurrency_key IS NOT NULL AND status IN ('pending', 'assigned', 'running')`),
    index('tasks_pinned_queue_idx')
      .on(t.reqAgentId, t.priority.desc(), t.id)
      .where(sql`status = 'pending' AND req_agent_id IS NOT NULL`),
    // The sweep's recovery steps: overdue running tasks, unconfirmed cancels, unstarted
    // assignments, due retries.
    index('tasks_running_deadline_idx').on(t.deadlineAt).where(sql`status = 'running'`),
    index('tasks_cancel_requested_idx').on(t.cancelRequestedAt).where(sql`status = 'running' AND cancel_requested`),
    index('tasks_drain_requested_idx').on(t.drainRequestedAt).where(sql`drain_requested_at IS NOT NULL`),
    index('tasks_assigned_at_idx').on(t.assignedAt).where(sql`status = 'assigned'`),
    index('tasks_auto_retry_idx').on(t.id).where(sql`auto_retry`),
    // Statistics: recent outcomes and durations. (The oldest pending task is the first
    // pending id, by tasks_status_idx: ids are UUIDv7.)
    index('tasks_finished_idx').on(t.finishedAt, t.status).where(sql`finished_at IS NOT NULL`),
    check('tasks_priority_check', sql`priority BETWEEN 1 AND 10`),
    check('tasks_attempt_check', sql`attempt >= 0`),
  ],
)

/**
 * The append-only event log. `id` is assigned at insert, in no particular commit order;
 * `seq` is the public, monotonic event id: stamped on committed rows by one sequencer at a
 * time (services/events.ts), so a reader that resumes after seq N can never miss a row
 * that commits later with a smaller number.
 */
export const events = pgTable(
  'events',
  {
    id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
    seq: bigint('seq', { mode: 'number' }),
    type: text('type').notNull(),
    agentId: uuid('agent_id'),
    taskId: uuid('task_id'),
    data: jsonb('data').$type<Record<string, unknown>>().notNull().default({}),
    createdAt: ts('created_at').notNull(),
  },
  (t) => [
    // The reading indexes hold numbered events only: an event gets its entries once, when
    // the sequencer numbers it, not also when it is inserted unnumbered.
    uniqueIndex('events_seq_idx').on(t.seq).where(sql`seq IS NOT NULL`),
    index('events_unsequenced_idx').on(t.id).where(sql`seq IS NULL`),
    index('events_task_seq_idx').on(t.taskId, t.seq).where(sql`seq IS NOT NULL`),
    index('events_agent_seq_idx').on(t.agentId, t.seq).where(sql`seq IS NOT NULL`),
  ],
)

/** The last event `seq` handed out (one row): pruning old events never lowers it. */
export const eventSequence = pgTable('event_sequence', {
  id: integer('id').primaryKey().default(1),
  last: bigint('last', { mode: 'number' }).notNull().default(0),
})

/**
 * Task counts by status and priority, kept by statement-level triggers on `tasks` (the
 * custom migrations 0001, 0002) in 256 shards (by backend), so concurrent writers rarely touch the
 * same row; statistics sum the shards instead of counting a million rows.
 */
export const taskCounts = pgTable(
  'task_counts',
  {
    status: text('status').$type<TaskStatus>().notNull(),
    priority: smallint('priority').notNull(),
    shard: smallint('shard').notNull(),
    n: bigint('n', { mode: 'number' }).notNull().default(0),
  },
  (t) => [primaryKey({ columns: [t.status, t.priority, t.shard] })],
)

/**
 * Registration tokens (`acpr_…`): an admin or operator makes one, a new agent presents it
 * once to register itself (POST /agents). Only the SHA-256 of the secret is kept, so the
 * table leaks nothing that registers an agent. `uses` is consumed by a guarded update in
 * the registration's own transaction, so a failed registration costs nothing and racing
 * ones cannot pass `max_uses`.
 */
export const registrationTokens = pgTable(
  'registration_tokens',
  {
    id: uuid('id').primaryKey(),
    /** Lower-case hex SHA-256 of the whole token (`acpr_` included). */
    tokenHash: text('token_hash').notNull(),
    description: text('description'),
    /** Set on every agent registered with the token, over the labels it asks for. */
    labels: jsonb('labels').$type<Labels>().notNull().default({}),
    /** Null: any number of registrations until it expires. */
    maxUses: integer('max_uses'),
    uses: integer('uses').notNull().default(0),
    expiresAt: ts('expires_at').notNull(),
    /** The `sub` of the token that made it. */
    createdBy: text('created_by').notNull(),
    createdAt: ts('created_at').notNull(),
  },
  (t) => [
    uniqueIndex('registration_tokens_token_hash_key').on(t.tokenHash),
    // The sweep prunes tokens long expired.
    index('registration_tokens_expires_at_idx').on(t.expiresAt),
    check('registration_tokens_uses_check', sql`uses >= 0`),
    check('registration_tokens_max_uses_check', sql`max_uses IS NULL OR max_uses >= 1`),
  ],
)

/**
 * Stretches during which the service could not hear agents: a server process paused (its
 * event loop stalled), the database unreachable, or no server running. Deadlines (agent
 * silence, task timeouts, cancel grace, assign timeout) move by the time they overlap.
 */
export const serviceStalls = pgTable(
  'service_stalls',
  {
    id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
    startedAt: ts('started_at').notNull(),
    endedAt: ts('ended_at').notNull(),
    /** `paused` (event loop), `database` (unreachable), `down` (no server was running). */
    cause: text('cause').$type<StallCause>().notNull(),
    /** Which process noticed it (host:pid, or `worker`). */
    observer: text('observer').notNull(),
  },
  (t) => [
    index('service_stalls_ended_at_idx').on(t.endedAt),
    check('service_stalls_order_check', sql`ended_at >= started_at`),
  ],
)

/**
 * The requirement classes of queued tasks (`tasks.shape`): a small table placement reads
 * first, so that it looks only into the queues of the shapes an agent fits. A create adds
 * its task's shape; the sweep adds any shape a pending task has and the table lacks, marks
 * the ones with no pending task (`emptySince`) and deletes those empty for an hour.
 * Pinned tasks are queued by their agent and have no row here.
 */
export const taskShapes = pgTable('task_shapes', {
  id: uuid('id').primaryKey(),
  type: text('type').notNull(),
  reqCapabilities: text('req_capabilities').array().notNull(),
  reqProvider: text('req_provider').$type<Provider>(),
  reqRegion: text('req_region'),
  reqLabels: jsonb('req_labels').$type<Labels>().notNull(),
  createdAt: ts('created_at').notNull(),
  emptySince: ts('empty_since'),
  /** The tenant its tasks count as in fair share (their fairness key, else concurrency key); null: none. */
  fairGroup: text('fair_group'),
  /** The concurrency key of its tasks (part of the shape); null: none. */
  concurrencyKey: text('concurrency_key'),
})
export type TaskShapeRow = typeof taskShapes.$inferSelect

/**
 * Concurrency keys (src/domain/concurrency.ts): each key's limit (the newest create's) and
 * its count of live (assigned or running) tasks, moved in the same statement as each of
 * their assignments, ends, requeues and losses; the sweep recounts it from the tasks.
 */
export const concurrencyKeys = pgTable(
  'concurrency_keys',
  {
    key: text('key').primaryKey(),
    keyLimit: integer('key_limit').notNull(),
    active: integer('active').notNull().default(0),
    createdAt: ts('created_at').notNull(),
    updatedAt: ts('updated_at').notNull(),
  },
  () => [
    check('concurrency_keys_limit_check', sql`key_limit >= 1`),
    check('concurrency_keys_active_check', sql`active >= 0`),
  ],
)
export type ConcurrencyKeyRow = typeof concurrencyKeys.$inferSelect

/** One row: what the last sweep did, for GET /scheduler/status across instances. */
export const schedulerState = pgTable('scheduler_state', {
  id: integer('id').primaryKey().default(1),
  lastRunAt: ts('last_run_at'),
  lastSummary: jsonb('last_summary').$type<SweepSummary>(),
  runs: bigint('runs', { mode: 'number' }).notNull().default(0),
  /** When `tasks.failing_everywhere` was last said (at most once per QUARANTINE_WINDOW_SECONDS). */
  failingEverywhereAt: ts('failing_everywhere_at'),
})

/** What a rollout's target selects (frozen into its targets at creation). */
export interface RolloutTargetSpec {
  capabilities?: string[]
  provider?: Provider | null
  region?: string | null
  labels?: Labels
  agentIds?: string[]
}

/**
 * Rollouts (docs/rollouts.md): one task on every agent of a target set frozen at creation,
 * in waves, within an error budget. The strategy is kept as asked and as resolved against
 * the target count (max_concurrency, max_errors, waves: each wave's size). `wave` is the
 * wave started last; `wave_ended_at` when its last target ended (the bake runs from there).
 * The controller serialises on this row (FOR UPDATE) every time it moves the rollout.
 */
export const rollouts = pgTable(
  'rollouts',
  {
    id: uuid('id').primaryKey(),
    name: text('name').notNull(),
    description: text('description'),
    status: text('status').$type<RolloutStatus>().notNull().default('running'),
    taskType: text('task_type').notNull(),
    taskPayload: jsonb('task_payload').$type<unknown>().notNull().default({}),
    taskTimeoutSeconds: integer('task_timeout_seconds').notNull(),
    taskMaxAttempts: integer('task_max_attempts').notNull(),
    taskPriority: smallint('task_priority').notNull(),
    target: jsonb('target').$type<RolloutTargetSpec>().notNull().default({}),
    strategy: jsonb('strategy').$type<StrategyInput>().notNull().default({}),
    maxConcurrency: integer('max_concurrency').notNull(),
    maxErrors: integer('max_errors').notNull(),
    waves: integer('waves').array().notNull(),
    bakeSeconds: integer('bake_seconds').notNull(),
    pauseBetweenWaves: boolean('pause_between_waves').notNull(),
    deliveryTimeoutSeconds: integer('delivery_timeout_seconds').notNull(),
    targetCount: integer('target_count').notNull(),
    wave: integer('wave').notNull().default(1),
    waveStartedAt: ts('wave_started_at'),
    waveEndedAt: ts('wave_ended_at'),
    retryOf: uuid('retry_of'),
    idempotencyKey: text('idempotency_key'),
    idempotencyOwner: text('idempotency_owner'),
    idempotencyHash: text('idempotency_hash'),
    createdBy: text('created_by').notNull(),
    version: integer('version').notNull().default(1),
    createdAt: ts('created_at').notNull(),
    updatedAt: ts('updated_at').notNull(),
    endedAt: ts('ended_at'),
  },
  (t) => [
    uniqueIndex('rollouts_idempotency_key_idx')
      .on(t.idempotencyOwner, t.idempotencyKey)
      .where(sql`idempotency_key IS NOT NULL`),
    // The list's status filter, newest first; the sweep's rollouts not over.
    index('rollouts_status_idx').on(t.status, t.id),
    index('rollouts_open_idx').on(t.id).where(sql`ended_at IS NULL`),
    check('rollouts_max_concurrency_check', sql`max_concurrency >= 1`),
    check('rollouts_max_errors_check', sql`max_errors >= 0`),
  ],
)

/**
 * A rollout's targets, one per agent, frozen at creation: its wave, its status (the target
 * table in src/domain/rollouts.ts), and its task once dispatched. No foreign key to the
 * agent: the history outlives it (its name is kept).
 */
export const rolloutTargets = pgTable(
  'rollout_targets',
  {
    rolloutId: uuid('rollout_id')
      .notNull()
      .references(() => rollouts.id, { onDelete: 'cascade' }),
    agentId: uuid('agent_id').notNull(),
    agentName: text('agent_name').notNull(),
    /** 0-based, in the order targets were taken (agents by id): the dispatch order. */
    ordinal: integer('ordinal').notNull(),
    wave: integer('wave').notNull(),
    status: text('status').$type<TargetStatus>().notNull().default('waiting'),
    taskId: uuid('task_id'),
    attempt: integer('attempt').notNull().default(0),
    dispatchedAt: ts('dispatched_at'),
    endedAt: ts('ended_at'),
  },
  (t) => [
    primaryKey({ columns: [t.rolloutId, t.agentId] }),
    // Counts by status, the waiting targets of started waves in dispatch order, the targets in
    // flight (the controller) and the targets page's filters.
    index('rollout_targets_status_idx').on(t.rolloutId, t.status, t.wave, t.ordinal),
    // The targets page in order.
    index('rollout_targets_ordinal_idx').on(t.rolloutId, t.ordinal),
  ],
)

export type RolloutRow = typeof rollouts.$inferSelect
export type RolloutTargetRow = typeof rolloutTargets.$inferSelect

export const schema = {
  agents,
  tasks,
  rollouts,
  rolloutTargets,
  events,
  schedulerState,
  serviceStalls,
  taskCounts,
  eventSequence,
  registrationTokens,
}

export type AgentRow = typeof agents.$inferSelect
export type TaskRow = typeof tasks.$inferSelect
export type EventRow = typeof events.$inferSelect
export type RegistrationTokenRow = typeof registrationTokens.$inferSelect

/**
 * Task output, as agents send it: chunks of stdout, stderr or system lines, per attempt,
 * numbered by the agent (`seq`), so a resent chunk is skipped, not doubled. Deleted with
 * their task; pruned after LOG_RETENTION_DAYS.
 */
export const taskLogs = pgTable(
  'task_logs',
  {
    taskId: uuid('task_id')
      .notNull()
      .references(() => tasks.id, { onDelete: 'cascade' }),
    attempt: integer('attempt').notNull(),
    seq: integer('seq').notNull(),
    stream: text('stream').$type<'stdout' | 'stderr' | 'system'>().notNull(),
    data: text('data').notNull(),
    /** octet_length(data): what counts against TASK_LOG_MAX_BYTES_PER_ATTEMPT. */
    bytes: integer('bytes').notNull(),
    /** When the agent saw it (or, without its word, when it was stored). */
    at: ts('at').notNull(),
    createdAt: ts('created_at').notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.taskId, t.attempt, t.seq] }),
    // Retention deletes by age.
    index('task_logs_created_at_idx').on(t.createdAt),
    check('task_logs_stream_check', sql`stream IN ('stdout', 'stderr', 'system')`),
  ],
)

/**
 * Per attempt: the bytes its log holds, and the middle dropped to stay under
 * TASK_LOG_MAX_BYTES_PER_ATTEMPT (chunks `dropped_from`..`dropped_to`, which a resend does
 * not bring back).
 */
export const taskLogTotals = pgTable(
  'task_log_totals',
  {
    taskId: uuid('task_id')
      .notNull()
      .references(() => tasks.id, { onDelete: 'cascade' }),
    attempt: integer('attempt').notNull(),
    bytes: bigint('bytes', { mode: 'number' }).notNull().default(0),
    droppedBytes: bigint('dropped_bytes', { mode: 'number' }).notNull().default(0),
    droppedChunks: integer('dropped_chunks').notNull().default(0),
    droppedFrom: integer('dropped_from'),
    droppedTo: integer('dropped_to'),
  },
  (t) => [primaryKey({ columns: [t.taskId, t.attempt] })],
)
