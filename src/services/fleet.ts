import { and, arrayContains, eq, inArray, type SQL, sql } from 'drizzle-orm'
import { type Executor, rowsOf, type Tx } from '../db/client'
import { bind } from '../db/fragments'
import { agentFromJson } from '../db/hot'
import { type AgentRow, agents } from '../db/schema'
import { withTx } from '../db/tx'
import {
  ACTION_FROM,
  type AgentSelector,
  BEAT_STATUS,
  beatStatusSql,
  type DrainThen,
  type FleetAction,
  type QuarantinePolicy,
  resumedStatusSql,
  selectorIsEmpty,
  streakAfterSql,
  streakCallsForJudgement,
} from '../domain/agent-states'
import { releaseKeysSql } from '../domain/concurrency'
import type { StreakEntry } from '../domain/model'
import { liveSql, releaseSlots, requeueSet } from '../domain/sql'
import { KILL_MARGIN_SECONDS, move } from '../domain/task-states'
import { ApiError } from '../lib/errors'
import { changed, type ServiceDeps } from './deps'

/**
 * Fleet maintenance (docs/scheduler.md, "Drain and quarantine"): drains with a deadline,
 * maintenance, resume, quarantine and release, for one agent or for every agent a selector
 * matches (one statement per action), the sweep's fleet step, and automatic quarantine.
 * The statuses each action moves from, and the statuses it leaves, are the agent rules of
 * src/domain/agent-states.ts.
 */

/** Which agents a bulk action acts on: every field given must match. */
export interface ActionParams {
  /** Who acts: a role, or `system` (automatic quarantine), in the events. */
  by: string
  reason?: string
  /** quarantine: how long; absent: until released. */
  minutes?: number
  /** drain: when the tasks it still holds are asked to stop; absent: no deadline. */
  deadlineSeconds?: number
  /** drain: the status it ends in. */
  then?: DrainThen
  /** Added to the `agent.quarantined` event (automatic quarantine: its evidence). */
  extra?: Record<string, unknown>
}

function selectorWhere(s: AgentSelector): SQL {
  const where = and(
    s.ids?.length ? inArray(agents.id, s.ids) : undefined,
    s.capabilities?.length ? arrayContains(agents.capabilities, s.capabilities) : undefined,
    s.provider ? eq(agents.provider, s.provider) : undefined,
    s.region ? eq(agents.region, s.region) : undefined,
    Object.keys(s.labels ?? {}).length ? sql`${agents.labels} @> ${JSON.stringify(s.labels)}::jsonb` : undefined,
    s.status?.length ? inArray(agents.status, s.status) : undefined,
  )
  if (!where) throw new Error('an empty selector')
  return where
}

const CLEAR_DRAIN = 'drain_then = NULL, drain_deadline = NULL'
const CLEAR_QUARANTINE = 'quarantine_reason = NULL, quarantined_at = NULL, quarantine_until = NULL'

/**
 * One action on every agent `where` picks whose status the action moves from, in one
 * statement (agents locked in id order, each with its events). Returns the agents moved.
 */
async function act(
  deps: ServiceDeps,
  ex: Executor,
  where: SQL,
  action: FleetAction,
  p: ActionParams,
): Promise<AgentRow[]> {
  const now = deps.clock.now()
  // The selector is drizzle's (columns named `agents`.…): the statement reads the table unaliased.
  const silent = `coalesce(agents.last_heartbeat_at, agents.updated_at) < {{cutoff}}::timestamptz`
  let next: string
  let set: string
  switch (action) {
    case 'drain':
      // By the beat rule: an agent that holds nothing is drained at once.
      next = beatStatusSql("'draining'", 'NULL::text', { drainThen: '{{then}}::text', active: 'agents.active_tasks' })
      set = `drain_then = CASE WHEN s.next = 'draining' THEN {{then}}::text END,
             drain_deadline = CASE WHEN s.next = 'draining' THEN {{deadline}}::timestamptz END, ${CLEAR_QUARANTINE}`
      break
    case 'maintenance':
      next = "'maintenance'"
      set = `${CLEAR_DRAIN}, ${CLEAR_QUARANTINE}`
      break
    case 'resume':
      next = resumedStatusSql(silent, 'agents.active_tasks')
      set = `${CLEAR_DRAIN}, ${CLEAR_QUARANTINE}`
      break
    case 'quarantine':
      next = "'quarantined'"
      set = `${CLEAR_DRAIN}, quarantine_reason = {{reason}}::text, quarantined_at = {{now}}::timestamptz,
             quarantine_until = {{until}}::timestamptz, fail_streak = '[]'::jsonb`
      break
    case 'release':
      next = resumedStatusSql(silent, 'agents.active_tasks')
      set = `${CLEAR_DRAIN}, ${CLEAR_QUARANTINE}, fail_streak = '[]'::jsonb`
      break
  }
  const deadline = p.deadlineSeconds === undefined ? null : new Date(now.getTime() + p.deadlineSeconds * 1000)
  const until = p.minutes === undefined ? null : new Date(now.getTime() + p.minutes * 60_000)
  const then = p.then ?? 'maintenance'
  const values = {
    now,
    cutoff: new Date(now.getTime() - deps.config.heartbeatTimeoutSeconds * 1000),
    then,
    deadline,
    until,
    reason: p.reason ?? null,
    by: p.by,
    action,
    from: `{${ACTION_FROM[action].join(',')}}`,
    extra: JSON.stringify(
      action === 'quarantine'
        ? { reason: p.reason ?? null, until, by: p.by, ...p.extra }
        : action === 'release'
          ? { by: p.by, ...(p.reason ? { reason: p.reason } : {}) }
          : action === 'drain'
            ? { deadline, then, by: p.by }
            : {},
    ),
    extraType:
      action === 'quarantine'
        ? 'agent.quarantined'
        : action === 'release'
          ? 'agent.released'
          : action === 'drain'
            ? 'agent.drain_requested'
            : null,
  }
  const rows = await rowsOf<{ agent: Record<string, unknown> }>(
    ex,
    sql`
    WITH s AS (
      SELECT agents.id, agents.status AS was, ${bind(next, values)} AS next FROM agents
       WHERE ${where} AND agents.status = ANY(${values.from}::text[])
       ORDER BY agents.id FOR UPDATE
    ), upd AS (
      UPDATE agents g SET status = s.next, ${bind(set, values)}, version = g.version + 1, updated_at = ${now}
        FROM s WHERE g.id = s.id
      RETURNING g.*, s.was
    ), ev AS (
      INSERT INTO events (type, agent_id, data, created_at)
      SELECT e.type, e.agent_id, e.data, ${now} FROM (
        SELECT u.id AS agent_id, 1 AS k, 'agent.status_changed' AS type,
               jsonb_build_object('from', u.was, 'to', u.status, 'by', ${p.by}::text, 'action', ${action}::text) AS data
          FROM upd u WHERE u.status <> u.was
        UNION ALL
        SELECT u.id, 0, ${values.extraType}::text, ${values.extra}::jsonb FROM upd u WHERE ${values.extraType}::text IS NOT NULL
      ) e ORDER BY e.agent_id, e.k
      RETURNING 1
    )
    SELECT to_jsonb(u) - 'was' AS agent FROM upd u ORDER BY u.id`,
  )
  return rows.map((r) => agentFromJson(r.agent))
}

/**
 * Runs `act` and drops the cached copies of the agents it moved. A resume also calls off the
 * drain stops its agents' tasks were given (a separate statement after the agents', so tasks
 * are never locked after their agent; a task the sweep requeues in between stays requeued).
 */
async function actAndTell(deps: ServiceDeps, where: SQL, action: FleetAction, p: ActionParams) {
  const moved = await act(deps, deps.db, where, action, p)
  let tasks: string[] = []
  if (action === 'resume' && moved.length) {
    const rows = await rowsOf<{ id: string }>(
      deps.db,
      sql`UPDATE tasks SET drain_requested_at = NULL, version = version + 1, updated_at = ${deps.clock.now()}
           WHERE agent_id = ANY(${`{${moved.map((a) => a.id).join(',')}}`}::uuid[])
             AND ${sql.raw(liveSql('tasks'))} AND drain_requested_at IS NOT NULL
          RETURNING id`,
    )
    tasks = rows.map((r) => r.id)
  }
  if (moved.length) await changed(deps, { agents: moved.map((a) => a.id), tasks })
  return moved
}

/**
 * One agent's action (POST /agents/{id}/drain, …/quarantine, …/release, …/resume): 404 for
 * an unknown agent, 409 when its status is not one the action moves from.
 */
export async function agentAction(
  deps: ServiceDeps,
  id: string,
  action: FleetAction,
  p: ActionParams,
): Promise<AgentRow> {
  const [moved] = await actAndTell(deps, eq(agents.id, id), action, p)
  if (moved) return moved
  const [row] = await deps.db.select({ status: agents.status }).from(agents).where(eq(agents.id, id))
  if (!row) throw new ApiError('not_found', `No agent with id ${id}.`)
  const from: readonly string[] = ACTION_FROM[action]
  throw new ApiError(
    'invalid_transition',
    `The agent is ${row.status}; ${action} applies to an agent that is ${from.join(', ')}${
      row.status === 'quarantined' ? ' (release it first)' : ''
    }.`,
    { allowed: [...from] },
  )
}

/** A bulk action (POST /agents/actions): every agent the selector matches whose status the action moves from. */
export async function bulkAction(deps: ServiceDeps, selector: AgentSelector, action: FleetAction, p: ActionParams) {
  if (selectorIsEmpty(selector)) throw new Error('an empty selector')
  const moved = await actAndTell(deps, selectorWhere(selector), action, p)
  return { count: moved.length, ids: moved.map((a) => a.id) }
}

/** How many of the window's newest completions a judgement reads for one of the failing types. */
const JUDGE_SCAN = 10_000

/** The automatic quarantine settings. */
export const quarantinePolicy = (c: ServiceDeps['config']): QuarantinePolicy => ({
  afterFailures: c.quarantineAfterFailures,
  windowSeconds: c.quarantineWindowSeconds,
})

/**
 * Automatic quarantine, after reports that ended attempts failed (a heartbeat's, or
 * PATCH /tasks/{id}/status): reads the streaks of the agents that reported them (one
 * statement), and judges those the quarantine trigger calls for (src/domain/agent-states.ts).
 */
export async function judgeStreaks(deps: ServiceDeps, agentIds: Iterable<string>): Promise<void> {
  const policy = quarantinePolicy(deps.config)
  const ids = [...new Set(agentIds)]
  if (policy.afterFailures <= 0 || ids.length === 0) return
  const rows = await deps.db
    .select({ id: agents.id, status: agents.status, failStreak: agents.failStreak })
    .from(agents)
    .where(inArray(agents.id, ids))
  const nowSeconds = deps.clock.now().getTime() / 1000
  for (const r of rows) {
    if (r.status === 'online' && streakCallsForJudgement(r.failStreak, nowSeconds, policy)) await judge(deps, r.id)
  }
}

/**
 * The judgement: the agent's last failed attempts (`last`) are its fault when another agent
 * completed a task of those types within the window (the tasks can succeed): it is
 * quarantined for QUARANTINE_MINUTES, with the evidence in `agent.quarantined`. Else, when
 * other agents failed tasks of those types within the window too, the tasks are bad, not the
 * agent: `tasks.failing_everywhere` (at most once per window). Either way the streak starts
 * again, so an agent is judged at most once per QUARANTINE_AFTER_FAILURES failures.
 */
async function judge(deps: ServiceDeps, id: string): Promise<void> {
  const policy = quarantinePolicy(deps.config)
  const now = deps.clock.now()
  const nowSeconds = now.getTime() / 1000
  const cutoff = new Date(now.getTime() - policy.windowSeconds * 1000)
  const moved = await withTx(deps.db, async (tx) => {
    const [a] = await tx
      .select({ status: agents.status, failStreak: agents.failStreak })
      .from(agents)
      .where(eq(agents.id, id))
      .for('update')
    const last = a?.status === 'online' ? streakCallsForJudgement(a.failStreak, nowSeconds, policy) : null
    if (!last) return false
    const types = [...new Set(last.map((e) => e.y))]
    const evidence = {
      failures: last.length,
      taskIds: [...new Set(last.map((e) => e.t))],
      errorCodes: [...new Set(last.map((e) => e.c ?? 'failed'))],
      taskTypes: types,
    }
    const typeList = `{${types.map((t) => `"${t.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`).join(',')}}`
    // Bounded: the newest JUDGE_SCAN completions of the window (tasks_finished_idx, newest
    // first), so a judgement costs the same when nothing matches (tasks failing everywhere).
    const [completedElsewhere] = await rowsOf<{ id: string }>(
      tx,
      sql`SELECT c.id FROM (
            SELECT id, type, agent_id FROM tasks
             WHERE finished_at >= ${cutoff} AND finished_at <= ${now} AND status = 'completed'
             ORDER BY finished_at DESC LIMIT ${JUDGE_SCAN}) c
           WHERE c.type = ANY(${typeList}::text[]) AND c.agent_id <> ${id} LIMIT 1`,
    )
    if (completedElsewhere) {
      const reason = `automatic: its last ${last.length} attempts failed (${evidence.taskIds.length} tasks, within ${policy.windowSeconds} s) while other agents completed tasks of the same types`
      await act(deps, tx, eq(agents.id, id), 'quarantine', {
        by: 'system',
        reason,
        minutes: deps.config.quarantineMinutes,
        extra: { automatic: true, evidence },
      })
      return true
    }
    const others = await rowsOf<{ id: string }>(
      tx,
      sql`SELECT g.id FROM agents g WHERE g.id <> ${id} AND g.fail_streak <> '[]'::jsonb AND EXISTS (
            SELECT 1 FROM jsonb_array_elements(g.fail_streak) e
             WHERE e->>'y' = ANY(${typeList}::text[]) AND (e->>'at')::float8 >= ${nowSeconds - policy.windowSeconds})
          ORDER BY g.id LIMIT 10`,
    )
    if (others.length) {
      // At most once per window (the row of the sweep's state keeps when it was last said).
      const said = await rowsOf(
        tx,
        sql`INSERT INTO scheduler_state (id, failing_everywhere_at) VALUES (1, ${now})
            ON CONFLICT (id) DO UPDATE SET failing_everywhere_at = excluded.failing_everywhere_at
             WHERE scheduler_state.failing_everywhere_at IS NULL OR scheduler_state.failing_everywhere_at <= ${cutoff}
            RETURNING 1`,
      )
      if (said.length) {
        await tx.execute(
          sql`INSERT INTO events (type, data, created_at) VALUES ('tasks.failing_everywhere', ${JSON.stringify({
            message: 'Tasks of these types fail on every agent that runs them: the tasks are bad, not the agents.',
            agentIds: [id, ...others.map((o) => o.id)],
            ...evidence,
          })}::jsonb, ${now})`,
        )
      }
    }
    await tx
      .update(agents)
      .set({ failStreak: [] as StreakEntry[] })
      .where(eq(agents.id, id))
    return false
  })
  if (moved) await changed(deps, { agents: [id] })
}

/**
 * The sweep's timeouts extend their agents' streaks (the streak rule: a timeout is counted in
 * `failures` too), in the sweep's transaction after the timed-out tasks were moved (tasks
 * before agents, agents in id order). Returns the agents, for `judgeStreaks` after it.
 */
export async function streakTimeouts(tx: Tx, now: Date, taskIds: readonly string[]): Promise<string[]> {
  if (taskIds.length === 0) return []
  const rows = await rowsOf<{ id: string }>(
    tx,
    sql`
    WITH x AS (
      SELECT t.agent_id, jsonb_agg(jsonb_build_object('t', t.id, 'y', t.type, 'c', 'timeout',
               'at', extract(epoch FROM ${now}::timestamptz)::float8) ORDER BY t.id) AS fails
        FROM tasks t WHERE t.id = ANY(${`{${taskIds.join(',')}}`}::uuid[]) AND t.agent_id IS NOT NULL
       GROUP BY t.agent_id ORDER BY t.agent_id
    )
    UPDATE agents g SET fail_streak = ${sql.raw(streakAfterSql('g.fail_streak', 'NULL::int', 'x.fails'))}
      FROM x WHERE g.id = x.agent_id
    RETURNING g.id`,
  )
  return rows.map((r) => r.id)
}

const DRAIN_REQUEUE = move('drain_requeue', 'running')
const DRAINED = BEAT_STATUS.find((c) => c.name === 'drained') as (typeof BEAT_STATUS)[number]

/**
 * The sweep's fleet step (in its recovery transaction): (a) tasks held by an agent whose
 * drain deadline passed get a drain stop (`drain_requested_at`: in its `cancellations`, not
 * final); (b) those still held CANCEL_GRACE_SECONDS after it go back to pending, once, by the
 * state table's `drain_requeue` (lostCount + 1, no attempt spent; no retry placed before
 * the drained agent reports the run's end or KILL_MARGIN_SECONDS pass); (c) draining agents
 * that hold nothing move to their drain's `then`; (d) quarantines past their `until` end.
 */
export async function sweepFleet(tx: Tx, now: Date, d: ServiceDeps, limit: number) {
  const graceCutoff = new Date(now.getTime() - d.config.cancelGraceSeconds * 1000)
  const until = new Date(now.getTime() + KILL_MARGIN_SECONDS * 1000)
  const silentCutoff = new Date(now.getTime() - d.config.heartbeatTimeoutSeconds * 1000)
  const [r] = await rowsOf<{ stopped: string[]; requeued: string[]; agents: string[] }>(
    tx,
    sql`
    WITH stop AS (
      SELECT t.id FROM tasks t JOIN agents a ON a.id = t.agent_id
       WHERE a.status = 'draining' AND a.drain_then IS NOT NULL AND a.drain_deadline <= ${now}
         AND ${sql.raw(liveSql('t'))} AND t.drain_requested_at IS NULL
       ORDER BY t.id LIMIT ${limit} FOR UPDATE OF t SKIP LOCKED
    ), st AS (
      UPDATE tasks t SET drain_requested_at = ${now}, version = t.version + 1, updated_at = ${now}
        FROM stop WHERE t.id = stop.id
      RETURNING t.id, t.agent_id, t.status, t.attempt
    ), due AS (
      SELECT id, agent_id, status FROM tasks
       WHERE drain_requested_at < ${graceCutoff} AND ${sql.raw(liveSql('tasks'))}
       ORDER BY drain_requested_at LIMIT ${limit} FOR UPDATE SKIP LOCKED
    ), rq AS (
      UPDATE tasks t SET ${bind(requeueSet(DRAIN_REQUEUE, 't', '{{now}}', '{{until}}'), { now, until })},
             lost_count = t.lost_count + 1, live_agent_id = due.agent_id, live_until = ${until}
        FROM due WHERE t.id = due.id
      RETURNING t.id, due.agent_id, due.status AS was, t.attempt, t.lost_count, t.concurrency_key
    ), load AS (${sql.raw(releaseSlots('rq'))}
    ), loadk AS (${bind(releaseKeysSql('rq', 'true', '{{now}}'), { now })}
    ), ev AS (
      INSERT INTO events (type, agent_id, task_id, data, created_at)
      SELECT e.type, e.agent_id, e.task_id, e.data, ${now} FROM (
        SELECT 1 AS k, 'task.cancel_requested' AS type, agent_id, id AS task_id,
               jsonb_build_object('attempt', attempt, 'reason', 'agent_drained', 'final', false) AS data FROM st
        UNION ALL
        SELECT 2, ${DRAIN_REQUEUE.event}::text, agent_id, id,
               jsonb_build_object('from', was, 'to', 'pending', 'attempt', attempt, 'reason', ${DRAIN_REQUEUE.name}::text,
                                  'lostCount', lost_count) FROM rq
      ) e ORDER BY e.k, e.task_id
      RETURNING 1
    )
    SELECT coalesce((SELECT json_agg(id) FROM st), '[]'::json) AS stopped,
           coalesce((SELECT json_agg(id) FROM rq), '[]'::json) AS requeued,
           coalesce((SELECT json_agg(DISTINCT agent_id) FROM (SELECT agent_id FROM st UNION ALL SELECT agent_id FROM rq) x), '[]'::json) AS agents`,
  )
  // Agents: after the tasks (the lock order every request takes), in id order.
  const drainedHolds = DRAINED.holdsSql('g.status', 'NULL', { drainThen: 'g.drain_then', active: 'g.active_tasks' })
  const [m] = await rowsOf<{ agents: string[]; drained: number; released: number }>(
    tx,
    sql`
    WITH dr AS (
      SELECT g.id, g.status AS was, g.drain_then AS next FROM agents g
       WHERE g.status = 'draining' AND ${sql.raw(drainedHolds)}
       ORDER BY g.id LIMIT ${limit} FOR UPDATE SKIP LOCKED
    ), rl AS (
      SELECT g.id, g.status AS was,
             ${bind(resumedStatusSql('coalesce(g.last_heartbeat_at, g.updated_at) < {{cutoff}}::timestamptz', 'g.active_tasks'), { cutoff: silentCutoff })} AS next
        FROM agents g
       WHERE g.status = 'quarantined' AND g.quarantine_until <= ${now}
       ORDER BY g.id LIMIT ${limit} FOR UPDATE SKIP LOCKED
    ), moves AS (
      SELECT *, 'drain' AS why FROM dr UNION ALL SELECT *, 'timer' FROM rl
    ), upd AS (
      UPDATE agents g SET status = m.next, ${sql.raw(CLEAR_DRAIN)}, ${sql.raw(CLEAR_QUARANTINE)},
             fail_streak = CASE WHEN m.why = 'timer' THEN '[]'::jsonb ELSE g.fail_streak END,
             version = g.version + 1, updated_at = ${now}
        FROM moves m WHERE g.id = m.id
      RETURNING g.id, g.status, m.was, m.why
    ), ev AS (
      INSERT INTO events (type, agent_id, data, created_at)
      SELECT e.type, e.agent_id, e.data, ${now} FROM (
        SELECT u.id AS agent_id, 1 AS k, 'agent.status_changed' AS type,
               jsonb_build_object('from', u.was, 'to', u.status, 'by', 'sweep', 'action', u.why) AS data FROM upd u
        UNION ALL
        SELECT u.id, 0, 'agent.released', jsonb_build_object('by', 'sweep', 'reason', 'its quarantine ended')
          FROM upd u WHERE u.why = 'timer'
      ) e ORDER BY e.agent_id, e.k
      RETURNING 1
    )
    SELECT coalesce((SELECT json_agg(id) FROM upd), '[]'::json) AS agents,
           (SELECT count(*)::int FROM upd WHERE why = 'drain') AS drained,
           (SELECT count(*)::int FROM upd WHERE why = 'timer') AS released`,
  )
  return {
    requeued: r?.requeued.length ?? 0,
    tasks: [...(r?.stopped ?? []), ...(r?.requeued ?? [])],
    agents: [...(r?.agents ?? []), ...(m?.agents ?? [])],
  }
}
