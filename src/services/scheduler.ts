import { type SQL, sql } from 'drizzle-orm'
import { rowsOf, type Tx } from '../db/client'
import { bind } from '../db/fragments'
import { schedulerState } from '../db/schema'
import { isDatabaseUnavailable, pgErrorCode, withTx } from '../db/tx'
import { releaseKeysSql } from '../domain/concurrency'
import type { SweepSummary } from '../domain/model'
import { endedLiveSet, outliveSet, releaseSlots, requeueSet } from '../domain/sql'
import { KILL_MARGIN_SECONDS, LOST_RUN_CODES, move, type TaskMove } from '../domain/task-states'
import { describeError } from '../lib/logger'
import { reconcileKeys } from './concurrency'
import { changed, type ServiceDeps } from './deps'
import { pruneEvents } from './events'
import { judgeStreaks, streakTimeouts, sweepFleet } from './fleet'
import { pruneLogs } from './logs'
import { type MigrationGate, missingObjectStates } from './migrations'
import { placePending } from './placement'
import { pruneRegistrationTokens } from './registration-tokens'
import { sweepRollouts } from './rollouts'
import { maintainShapes } from './shapes'
import { downtimeBefore, mergedStalls, pruneStalls, recordStalls, type Stalls, stalledSince } from './stalls'

/**
 * The sweep: the safety net that finds silent agents, overdue tasks and due retries, and
 * places whatever is pending. Called by the Workers cron, the Node/Bun timer and
 * POST /scheduler/sweep. Every step is set-based (one statement per kind of change) and
 * safe to run while other sweeps, executes, heartbeats and reports run:
 * - steps 1–3 run in one transaction under an advisory lock, so one sweep at a time does
 *   them (another finds the lock taken and skips them);
 * - rows are locked `SKIP LOCKED`, so nothing waits on a row another request is changing;
 *   such a row is simply left for the next sweep.
 */

export type { SweepSummary }

/** An arbitrary, fixed key for pg_try_advisory_xact_lock: "one sweep at a time". */
const SWEEP_LOCK_KEY = 7_240_431_001

type Count = { n: number; task_ids: string[]; agent_ids: string[] }
const none: Count = { n: 0, task_ids: [], agent_ids: [] }

/** The state table's moves the steps make (src/domain/task-states.ts). */
const LOST_ASSIGNED = move('agent_lost', 'assigned')
const LOST_FAILED = move('agent_lost', 'running', 'failed')
const LOST_CANCELLED = move('agent_lost', 'running', 'cancelled')
const GRACE_EXPIRED = move('cancel_grace_expired', 'running')
const TIMEOUT = move('timeout', 'running')
const NOT_STARTED = move('assign_timeout', 'assigned')
const RETRY = move('retry', 'failed')

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/** Error codes of a loss of the agent (retried with the lostCount backoff), as SQL. */
const LOSS_CODES_SQL = sql.raw(['agent_lost', ...LOST_RUN_CODES].map((c) => `'${c}'`).join(', '))

/**
 * Step 1. Agents silent past HEARTBEAT_TIMEOUT_SECONDS (of time the service could hear
 * them: stalls of the service do not count) go offline. Their assigned tasks
 * return to pending (no attempt used); running ones fail with `agent_lost` (counted in
 * lostCount, retried while under MAX_LOST_COUNT), or end cancelled if a cancel was asked.
 * An agent is expired only when all its live tasks could be locked, so its load and its
 * tasks always change together. An attempt an earlier timeout or cancel left possibly alive
 * on such an agent (`live_until`) is taken as ended: its retry may be placed.
 */
async function expireSilentAgents(tx: Tx, now: Date, d: ServiceDeps, stalls: Stalls) {
  const cutoff = new Date(now.getTime() - d.config.heartbeatTimeoutSeconds * 1000)
  const heard = sql`coalesce(a.last_heartbeat_at, a.updated_at)`
  // Agents whose heartbeat this process is handling now are alive, whatever was written.
  const hearing = `{${(d.stalls?.beingHeard() ?? []).filter((x) => UUID.test(x)).join(',')}}`
  const silent = sql`${heard} < ${cutoff} AND ${heard} + ${stalledSince(stalls, heard, now)} < ${cutoff}
    AND NOT (a.id = ANY(${hearing}::uuid[]))`
  const [r] = await rowsOf<{
    agents: number
    requeued: number
    failed: number
    cancelled: number
    agent_ids: string[]
    task_ids: string[]
  }>(
    tx,
    sql`
    WITH silent AS (
      -- A quarantined agent stays quarantined when silent (its quarantine is not escaped by
      -- going quiet); once it holds nothing there is nothing to expire.
      SELECT a.id FROM agents a
       WHERE a.status <> 'offline' AND NOT (a.status = 'quarantined' AND a.active_tasks = 0) AND ${silent}
    ), held AS (
      SELECT t.id, t.agent_id, t.status, t.cancel_requested, t.concurrency_key FROM tasks t
       WHERE t.agent_id IN (SELECT id FROM silent) AND t.status IN ('assigned', 'running')
       FOR UPDATE SKIP LOCKED
    ), locked AS (
      SELECT a.id, a.status, a.active_tasks FROM agents a
       WHERE a.id IN (SELECT id FROM silent) AND a.status <> 'offline' AND ${silent}
       FOR UPDATE SKIP LOCKED
    ), lost AS (
      SELECT l.id, l.status FROM locked l
       WHERE l.active_tasks = (SELECT count(*) FROM held h WHERE h.agent_id = l.id)
    ), tk AS (
      SELECT h.* FROM held h WHERE h.agent_id IN (SELECT id FROM lost)
    ), ag AS (
      UPDATE agents a SET status = CASE WHEN lost.status = 'quarantined' THEN 'quarantined' ELSE 'offline' END,
             active_tasks = 0, drain_then = NULL, drain_deadline = NULL, version = a.version + 1, updated_at = ${now}
        FROM lost WHERE a.id = lost.id
      RETURNING a.id, lost.status AS was, a.status AS now_status
    ), requeue AS (
      UPDATE tasks t SET ${bind(requeueSet(LOST_ASSIGNED, 't', '{{now}}', '{{now}}'), { now })}
        FROM tk WHERE t.id = tk.id AND tk.status = 'assigned'
      RETURNING t.id, tk.agent_id
    ), cancel AS (
      UPDATE tasks t SET status = 'cancelled', finished_at = ${now}, deadline_at = NULL,
             version = t.version + 1, updated_at = ${now}
        FROM tk WHERE t.id = tk.id AND tk.status = 'running' AND tk.cancel_requested
      RETURNING t.id, tk.agent_id, t.attempt
    ), fail AS (
      UPDATE tasks t SET status = 'failed', finished_at = ${now}, deadline_at = NULL,
             lost_count = t.lost_count + 1,
             auto_retry = t.lost_count + 1 < ${d.config.maxLostCount},
             error = jsonb_build_object('code', 'agent_lost', 'message', 'The agent stopped heartbeating while running the task.'),
             version = t.version + 1, updated_at = ${now}
        FROM tk WHERE t.id = tk.id AND tk.status = 'running' AND NOT tk.cancel_requested
      RETURNING t.id, tk.agent_id, t.attempt, t.lost_count
    ), relk AS (${bind(releaseKeysSql('tk', 'true', '{{now}}'), { now })}
    ), ended AS (
      UPDATE tasks t SET ${bind(endedLiveSet('t', '{{now}}'), { now })}
       WHERE t.live_agent_id IN (SELECT id FROM ag)
      RETURNING t.id
    ), ev AS (
      INSERT INTO events (type, agent_id, task_id, data, created_at)
      SELECT type, agent_id, task_id, data, ${now} FROM (
        SELECT 1 AS k, 'agent.expired' AS type, id AS agent_id, NULL::uuid AS task_id,
               jsonb_build_object('from', was, 'to', now_status, 'lastHeartbeatBefore', ${cutoff}::timestamptz) AS data FROM ag
        UNION ALL
        SELECT 2, ${LOST_ASSIGNED.event}::text, agent_id, id,
               jsonb_build_object('from', 'assigned', 'to', 'pending', 'reason', ${LOST_ASSIGNED.name}::text) FROM requeue
        UNION ALL
        SELECT 2, ${LOST_CANCELLED.event}::text, agent_id, id,
               jsonb_build_object('from', 'running', 'to', 'cancelled', 'attempt', attempt, 'reason', ${LOST_CANCELLED.name}::text) FROM cancel
        UNION ALL
        SELECT 2, ${LOST_FAILED.event}::text, agent_id, id,
               jsonb_build_object('from', 'running', 'to', 'failed', 'attempt', attempt, 'lostCount', lost_count,
                                  'error', jsonb_build_object('code', ${LOST_FAILED.name}::text)) FROM fail
      ) e ORDER BY k, task_id
      RETURNING 1
    )
    SELECT (SELECT count(*)::int FROM ag) AS agents, (SELECT count(*)::int FROM requeue) AS requeued,
           (SELECT count(*)::int FROM fail) AS failed, (SELECT count(*)::int FROM cancel) AS cancelled,
           coalesce((SELECT json_agg(id) FROM ag), '[]'::json) AS agent_ids,
           coalesce((SELECT json_agg(id) FROM (SELECT id FROM tk UNION ALL SELECT id FROM ended) x), '[]'::json) AS task_ids`,
  )
  return r ?? { agents: 0, requeued: 0, failed: 0, cancelled: 0, agent_ids: [], task_ids: [] }
}

/**
 * One recovery step of the sweep, in one statement: lock the due tasks (`SKIP LOCKED`),
 * move them (`set`, on task row `t` joined to `due`), free one slot per task on its agent
 * when the task leaves assigned/running, and append an event per task. Returns how many
 * moved and which tasks and agents changed (for the cache).
 */
async function moveDue(
  tx: Tx,
  now: Date,
  step: { move: TaskMove; due: SQL; set: SQL; agentId: SQL; data: SQL },
): Promise<Count> {
  const release =
    step.move.slot === 'release'
      ? sql`, load AS (${sql.raw(releaseSlots('upd'))}), loadk AS (${bind(releaseKeysSql('upd', 'true', '{{now}}'), { now })})`
      : sql``
  const [r] = await rowsOf<Count>(
    tx,
    sql`
    WITH due AS (${step.due}
    ), upd AS (
      UPDATE tasks t SET ${step.set}
        FROM due WHERE t.id = due.due_id
      RETURNING t.id, ${step.agentId} AS agent_id, t.attempt, t.concurrency_key, due.*
    )${release}, ev AS (
      INSERT INTO events (type, agent_id, task_id, data, created_at)
      SELECT ${step.move.event}::text, agent_id, id, ${step.data}, ${now} FROM upd ORDER BY id
      RETURNING 1
    )
    SELECT count(*)::int AS n, coalesce(json_agg(id), '[]'::json) AS task_ids,
           coalesce(json_agg(DISTINCT agent_id) FILTER (WHERE agent_id IS NOT NULL), '[]'::json) AS agent_ids FROM upd`,
  )
  return r ?? none
}

/**
 * Step 2a. A running task whose cancel its agent did not confirm within CANCEL_GRACE_SECONDS
 * ends cancelled. Its run may still be alive there: a retry waits KILL_MARGIN_SECONDS more,
 * or until the agent reports the run's end.
 */
function expireCancels(tx: Tx, now: Date, d: ServiceDeps, limit: number, stalls: Stalls) {
  const cutoff = new Date(now.getTime() - d.config.cancelGraceSeconds * 1000)
  const until = new Date(now.getTime() + KILL_MARGIN_SECONDS * 1000)
  return moveDue(tx, now, {
    due: sql`SELECT id AS due_id FROM tasks
              WHERE status = 'running' AND cancel_requested AND cancel_requested_at < ${cutoff}
                AND cancel_requested_at + ${stalledSince(stalls, sql`cancel_requested_at`, now)} < ${cutoff}
              ORDER BY cancel_requested_at LIMIT ${limit} FOR UPDATE SKIP LOCKED`,
    move: GRACE_EXPIRED,
    set: sql`status = 'cancelled', finished_at = ${now}, deadline_at = NULL,
             ${bind(outliveSet(GRACE_EXPIRED, 't.agent_id', '{{until}}'), { until })},
             version = t.version + 1, updated_at = ${now}`,
    agentId: sql`t.agent_id`,
    data: sql`jsonb_build_object('from', 'running', 'to', 'cancelled', 'attempt', attempt, 'reason', ${GRACE_EXPIRED.name}::text)`,
  })
}

/**
 * Step 2b. Running tasks past their deadline (startedAt + timeoutSeconds, moved by the
 * service's stalls since they started) become timed_out. The run may still be alive on its
 * agent (asked to stop only now): a retry waits CANCEL_GRACE_SECONDS plus
 * KILL_MARGIN_SECONDS, or until the agent reports the run's end.
 */
function timeOutRunning(tx: Tx, now: Date, d: ServiceDeps, limit: number, stalls: Stalls) {
  const until = new Date(now.getTime() + (d.config.cancelGraceSeconds + KILL_MARGIN_SECONDS) * 1000)
  return moveDue(tx, now, {
    due: sql`SELECT id AS due_id FROM tasks
              WHERE status = 'running' AND deadline_at < ${now}
                AND deadline_at + ${stalledSince(stalls, sql`started_at`, now)} < ${now}
              ORDER BY deadline_at LIMIT ${limit} FOR UPDATE SKIP LOCKED`,
    move: TIMEOUT,
    // A task someone asked to cancel is never run again automatically.
    set: sql`status = 'timed_out', finished_at = ${now}, deadline_at = NULL, failures = t.failures + 1,
             ${bind(outliveSet(TIMEOUT, 't.agent_id', '{{until}}'), { until })},
             auto_retry = NOT t.cancel_requested AND t.failures + 1 < t.max_attempts,
             error = jsonb_build_object('code', 'timeout', 'message', 'The task ran past its timeoutSeconds (' || t.timeout_seconds || ' s).'),
             version = t.version + 1, updated_at = ${now}`,
    agentId: sql`t.agent_id`,
    data: sql`jsonb_build_object('from', 'running', 'to', 'timed_out', 'attempt', attempt)`,
  })
}

/** Step 2c. Assigned tasks not started within ASSIGN_TIMEOUT_SECONDS go back to pending for another agent. */
function requeueUnstarted(tx: Tx, now: Date, d: ServiceDeps, limit: number, stalls: Stalls) {
  const cutoff = new Date(now.getTime() - d.config.assignTimeoutSeconds * 1000)
  return moveDue(tx, now, {
    due: sql`SELECT id AS due_id, agent_id AS was_agent FROM tasks
              WHERE status = 'assigned' AND assigned_at < ${cutoff}
                AND assigned_at + ${stalledSince(stalls, sql`assigned_at`, now)} < ${cutoff}
              ORDER BY assigned_at LIMIT ${limit} FOR UPDATE SKIP LOCKED`,
    move: NOT_STARTED,
    set: bind(requeueSet(NOT_STARTED, 't', '{{now}}', '{{now}}'), { now }),
    agentId: sql`due.was_agent`,
    data: sql`jsonb_build_object('from', 'assigned', 'to', 'pending', 'attempt', attempt, 'reason', ${NOT_STARTED.name}::text)`,
  })
}

/**
 * Step 3. Failed and timed-out tasks with retries left (marked `auto_retry` when they
 * ended) return to pending after exponential backoff with jitter:
 * min(RETRY_BACKOFF_MAX_SECONDS, RETRY_BACKOFF_BASE_SECONDS · 2^(n−1)) · U(0.5, 1), where n
 * counts the task's failures (or its agent losses, for `agent_lost` and `agent_restarted`).
 * Not while the attempt that ended may still be alive on its agent (`live_until`).
 */
function scheduleRetries(tx: Tx, now: Date, d: ServiceDeps, limit: number) {
  const base = d.config.retryBackoffBaseSeconds
  const cap = d.config.retryBackoffMaxSeconds
  return moveDue(tx, now, {
    due: sql`SELECT id AS due_id, least(${cap}::float8, ${base}::float8 * power(2, greatest(
               CASE WHEN error->>'code' IN (${LOSS_CODES_SQL}) THEN lost_count ELSE failures END, 1) - 1))
             * (0.5 + random() / 2) AS delay
        FROM tasks WHERE auto_retry AND status IN ('failed', 'timed_out')
         AND (live_until IS NULL OR live_until <= ${now})
       LIMIT ${limit} FOR UPDATE SKIP LOCKED`,
    move: RETRY,
    set: bind(requeueSet(RETRY, 't', '{{now}}', '{{now}}::timestamptz + make_interval(secs => due.delay)'), { now }),
    agentId: sql`NULL::uuid`,
    data: sql`jsonb_build_object('to', 'pending', 'attempt', attempt, 'reason', ${RETRY.name}::text,
              'backoffSeconds', round(delay::numeric, 3), 'availableAt', ${now}::timestamptz + make_interval(secs => delay))`,
  })
}

/**
 * Before silence is judged: a stall of this process's event loop in progress is noted, the
 * end of a stretch the database could not be reached is noted once it answers, and what
 * was noted is written, so that this sweep (and any instance's) moves deadlines by it.
 */
async function noteStalls(deps: ServiceDeps): Promise<void> {
  const watch = deps.stalls
  if (!watch) return
  watch.check()
  if (watch.isDeaf) {
    await rowsOf(deps.db, sql`SELECT 1`)
    watch.heard()
  }
  await recordStalls(deps.db, watch)
}

export async function runSweep(deps: ServiceDeps, at?: Date): Promise<SweepSummary> {
  const started = performance.now()
  await noteStalls(deps)
  const now = at ?? deps.clock.now()
  const clock = { now: () => now }
  const limit = deps.config.sweepBatchSize
  const recovery = await withTx(deps.db, async (tx) => {
    const [lock] = await rowsOf<{ got: boolean }>(tx, sql`SELECT pg_try_advisory_xact_lock(${SWEEP_LOCK_KEY}) AS got`)
    if (!lock?.got) return null
    const stalls = await mergedStalls(tx, now)
    const lost = await expireSilentAgents(tx, now, deps, stalls)
    const fleet = await sweepFleet(tx, now, deps, limit)
    const graceCancelled = await expireCancels(tx, now, deps, limit, stalls)
    const timedOut = await timeOutRunning(tx, now, deps, limit, stalls)
    // A timeout is a failed attempt of its agent's streak (automatic quarantine, judged below).
    const streaked = deps.config.quarantineAfterFailures > 0 ? await streakTimeouts(tx, now, timedOut.task_ids) : []
    const unstarted = await requeueUnstarted(tx, now, deps, limit, stalls)
    const retried = await scheduleRetries(tx, now, deps, limit)
    const steps = [graceCancelled, timedOut, unstarted, retried]
    return {
      expiredAgents: lost.agents,
      requeued: lost.requeued + unstarted.n + fleet.requeued,
      timedOut: timedOut.n,
      retried: retried.n,
      cancelled: lost.cancelled + graceCancelled.n,
      tasks: [...lost.task_ids, ...fleet.tasks, ...steps.flatMap((x) => x.task_ids)],
      agents: [...lost.agent_ids, ...fleet.agents, ...steps.flatMap((x) => x.agent_ids)],
      streaked,
    }
  })
  if (recovery) await changed(deps, { tasks: recovery.tasks, agents: recovery.agents })
  if (recovery) {
    const corrected = await reconcileKeys(deps.db, now)
    if (corrected > 0) {
      deps.metrics?.keyCorrections.inc({}, corrected)
      deps.logger?.warn('the sweep corrected the count of concurrency keys', { keys: corrected })
    }
  }
  if (recovery?.streaked.length) await judgeStreaks({ ...deps, clock }, recovery.streaked)
  // Every shape of a pending task in the shape table (the retries and requeues above among
  // them) before placement reads it; empty shapes marked, old empty ones deleted.
  await maintainShapes(deps.db, now)
  const assigned = await placePending(
    { db: deps.db, clock, notifier: deps.notifier, kv: deps.kv, metrics: deps.metrics },
    limit,
  )
  // Rollouts not over: bake timers, gates, delivery timeouts, and targets following the
  // tasks the steps above moved (src/services/rollouts.ts).
  await sweepRollouts(deps, now, limit)
  // Housekeeping: prune old events. (Numbering new ones is left to their readers: the
  // sweep's own time goes to placement.)
  const eventsPruned =
    deps.config.eventRetentionDays > 0
      ? await pruneEvents(deps.db, new Date(now.getTime() - deps.config.eventRetentionDays * 86_400_000), limit)
      : 0
  // And registration tokens expired for over a week (until then the list shows them expired),
  // and stalls too old to move any deadline.
  await pruneRegistrationTokens(deps.db, now, limit)
  await pruneStalls(deps.db, now)
  const logsPruned =
    deps.config.logRetentionDays > 0
      ? await pruneLogs(deps.db, new Date(now.getTime() - deps.config.logRetentionDays * 86_400_000), limit)
      : 0
  const summary: SweepSummary = {
    expiredAgents: recovery?.expiredAgents ?? 0,
    requeued: recovery?.requeued ?? 0,
    timedOut: recovery?.timedOut ?? 0,
    retried: recovery?.retried ?? 0,
    cancelled: recovery?.cancelled ?? 0,
    assigned,
    eventsPruned,
    logsPruned,
    durationMs: Math.round((performance.now() - started) * 10) / 10,
    skipped: recovery === null,
    startedAt: now.toISOString(),
  }
  const m = deps.metrics
  if (m) {
    m.sweeps.inc({ result: summary.skipped ? 'skipped' : 'ran' })
    m.sweepDuration.observe({}, summary.durationMs / 1000)
    m.expired.inc({}, summary.expiredAgents)
    m.requeued.inc({}, summary.requeued)
    m.retried.inc({}, summary.retried)
    m.timedOut.inc({}, summary.timedOut)
  }
  await deps.db
    .insert(schedulerState)
    .values({ id: 1, lastRunAt: now, lastSummary: summary, runs: 1 })
    .onConflictDoUpdate({
      target: schedulerState.id,
      set: { lastRunAt: now, lastSummary: summary, runs: sql`${schedulerState.runs} + 1` },
    })
  return summary
}

export async function schedulerStatus(deps: Pick<ServiceDeps, 'db'>) {
  const [row] = await deps.db.select().from(schedulerState)
  return row ?? null
}

/**
 * Why a sweep failed, as the reason its "paused" line gives: one line per kind of failure
 * (a different error after the first is said too). A table or column the database lacks
 * makes the migration gate ask again.
 */
export function sweepFailure(err: unknown, migrations?: MigrationGate): string {
  if (isDatabaseUnavailable(err)) return 'the database is unreachable or busy'
  const state = pgErrorCode(err)
  if (state && missingObjectStates.has(state)) migrations?.recheck()
  return `the sweep failed (${state ? `SQLSTATE ${state}` : err instanceof Error ? err.name : 'error'})`
}

type SweepLog = {
  info(msg: string, f?: Record<string, unknown>): void
  debug(msg: string, f?: Record<string, unknown>): void
  warn(msg: string, f?: Record<string, unknown>): void
  error(msg: string, f?: Record<string, unknown>): void
}

/**
 * The in-process sweep timer for Node and Bun (Workers use the cron trigger instead): a
 * sweep every SWEEP_INTERVAL_SECONDS, never two at once in this process (other instances
 * are kept out by the sweep's advisory lock). What it cannot do
 * is said once per change of state, not once per tick: "paused" with the reason when the
 * database is unreachable, lacks migrations or a sweep fails, then "resumed" when a sweep
 * runs again. A failure is described without the query's bound values. Returns a stop
 * function that waits for a sweep in progress.
 */
export function startSweepTimer(deps: ServiceDeps, log: SweepLog, migrations?: MigrationGate): () => Promise<void> {
  const seconds = deps.config.sweepIntervalSeconds
  if (seconds <= 0) return async () => {}
  let running: Promise<void> | null = null
  let problem = '' // the reason the last tick did not sweep; '' while sweeping
  // This process started now: the time since the service last swept (no instance was
  // running, or none could sweep) is a stall, noted once the database can say when that was.
  const startedAt = Date.now()
  let downtimeNoted = false
  const paused = (reason: string, error?: unknown) => {
    if (reason !== problem) {
      const fields = { reason, ...(error === undefined ? {} : { error: describeError(error) }) }
      if (error === undefined || isDatabaseUnavailable(error)) log.warn('sweep paused', fields)
      else log.error('sweep paused', fields)
    }
    problem = reason
  }
  const tick = () => {
    if (running) return
    const tickAt = Date.now()
    running = (async () => {
      if (migrations && !(await migrations.isCurrent(deps.db))) {
        return paused('the database lacks migrations this version needs: run `npm run db:migrate`')
      }
      if (!downtimeNoted) {
        const down = await downtimeBefore(deps.db, startedAt)
        if (down) deps.stalls?.add(down)
        downtimeNoted = true
      }
      const s = await runSweep(deps)
      if (problem) log.info('sweep resumed', { after: problem })
      problem = ''
      const busy = s.expiredAgents + s.requeued + s.timedOut + s.retried + s.cancelled + s.assigned > 0
      ;(busy ? log.info : log.debug)('sweep', { ...s })
    })()
      .catch((err: unknown) => {
        // The database did not answer: agents could not reach it either, from this tick on.
        if (isDatabaseUnavailable(err)) deps.stalls?.deaf(tickAt)
        deps.metrics?.sweeps.inc({ result: 'failed' })
        paused(sweepFailure(err, migrations), err)
      })
      .finally(() => {
        running = null
      })
  }
  const timer = setInterval(tick, seconds * 1000)
  ;(timer as { unref?: () => void }).unref?.()
  return async () => {
    clearInterval(timer)
    await running
  }
}
