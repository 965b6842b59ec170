import { releasedLoadSql } from './agent-states'
import { type MoveGuard, move, TASK_MOVES, type TaskMove } from './task-states'

/**
 * Named SQL fragments for the pieces the placement and recovery statements share, each
 * written once. They take SQL expressions (a column, a `$n` parameter, or a `{{name}}`
 * marker that `bind` in src/db/fragments.ts turns into a bound value), so the hot path's
 * prepared statements (src/db/hot.ts) and the drizzle statements of the sweep and the
 * services build the same text. The fit rule and the orders are in ./fit.ts.
 */

const ASSIGN = move('assign', 'pending')
const START = move('start', 'assigned')

/**
 * Seconds from `from` to `to` (timestamptz expressions) as float8, or NULL when either is
 * infinite: Postgres before 17 refuses to subtract an infinite timestamp (22008), and one
 * row planted with `infinity` must not fail the statement that places it (a heartbeat).
 */
export const secondsBetween = (from: string, to: string) =>
  `CASE WHEN isfinite(${from}) AND isfinite(${to}) THEN extract(epoch FROM ${to} - ${from})::float8 END`

/** The SET items of what a move clears (its `clears` in the table). */
const clearing: Record<TaskMove['clears'][number], string> = {
  result: 'result = NULL',
  error: 'error = NULL',
  progress: 'progress = NULL',
  budget: 'failures = 0, lost_count = 0',
}

/**
 * The columns an assignment sets on task row `t`: a new attempt (the fence an agent's report
 * must echo) that starts clean — the previous attempt's result, error and progress stay in
 * the task's events, not on the task.
 */
export const assignSet = (t: string, now: string, agentId: string) => `status = '${ASSIGN.to}', agent_id = ${agentId},
       attempt = ${t}.attempt + 1, assigned_at = ${now}, started_at = NULL, finished_at = NULL, deadline_at = NULL,
       ${ASSIGN.clears.map((c) => clearing[c]).join(', ')}, cancel_requested = false, cancel_requested_at = NULL,
       drain_requested_at = NULL, live_agent_id = NULL, live_until = NULL, version = ${t}.version + 1, updated_at = ${now}`

/**
 * The `task.assigned` event of every row of `rows` (id, agent_id, attempt), placed by `via`,
 * as rows (type, agent_id, task_id, data) for an insert that also takes other events.
 */
export const assignedEventRows = (rows: string, via: string) => `
  SELECT '${ASSIGN.event}' AS type, agent_id, id AS task_id,
         jsonb_build_object('from', 'pending', 'to', 'assigned', 'attempt', attempt, 'via', ${via}) AS data
    FROM ${rows}`

/** The `task.assigned` event of every row of `rows` (id, agent_id, attempt), placed by `via`. */
export const assignedEvents = (rows: string, via: string, now: string) => `
  INSERT INTO events (type, agent_id, task_id, data, created_at)
  SELECT e.type, e.agent_id, e.task_id, e.data, ${now} FROM (${assignedEventRows(rows, via)}) e ORDER BY e.task_id
  RETURNING 1`

/**
 * Back to pending by move `m` (agent lost, not started in time, agent deregistered,
 * automatic or manual retry), on task row `t`. Every such move resets the same columns —
 * the run's agent, times and cancel request — and clears what the table says it clears: the
 * last `error` stays while a task waits out a retry backoff, so it still says why it failed,
 * and a manual retry also clears it and the budget. `attempt` is never lowered: a late
 * report of the run that was left is fenced off even if the same agent gets the task again.
 * Nor is a task requeued to be placed while its previous attempt may still be alive
 * (`live_until`, see `mayOutlive` in ./task-states.ts): `greatest` skips a NULL.
 */
export function requeueSet(m: TaskMove, t: string, now: string, availableAt: string): string {
  if (m.to !== 'pending') throw new Error(`move ${m.name} does not requeue`)
  return [
    "status = 'pending', agent_id = NULL",
    'assigned_at = NULL, started_at = NULL, finished_at = NULL, deadline_at = NULL',
    'cancel_requested = false, cancel_requested_at = NULL, drain_requested_at = NULL, auto_retry = false',
    ...m.clears.map((c) => clearing[c]),
    `available_at = greatest(${availableAt}, ${t}.live_until), version = ${t}.version + 1, updated_at = ${now}`,
  ].join(',\n       ')
}

/**
 * Gives back one slot per row of `rows` (its agent in column `agent`; `where` picks the rows
 * that left their agent) to its agent, agents in id order. Never below zero.
 */
export const releaseSlots = (rows: string, where = 'true', agent = 'agent_id') => `
  UPDATE agents a SET active_tasks = ${releasedLoadSql('a.active_tasks', 'c.n')}
    FROM (SELECT ${agent} AS agent_id, count(*)::int AS n FROM ${rows} WHERE ${agent} IS NOT NULL AND (${where})
          GROUP BY ${agent} ORDER BY ${agent}) c
   WHERE a.id = c.agent_id
  RETURNING 1`

/**
 * The SET items of a move that may leave its attempt alive on agent `agent` (`mayOutlive`):
 * no retry is placed before `until`, unless that agent reports the attempt's end first.
 */
export const outliveSet = (m: TaskMove, agent: string, until: string) => {
  if (!m.mayOutlive) throw new Error(`move ${m.name} does not leave its attempt alive`)
  return `live_agent_id = ${agent}, live_until = ${until}`
}

/**
 * The SET items that clear what `outliveSet` left on task row `t` once the attempt is known
 * to have ended (its agent reported it, or the agent was lost): a retry already waiting for
 * it may be placed at once.
 */
export const endedLiveSet = (t: string, now: string) => `live_agent_id = NULL, live_until = NULL,
       available_at = CASE WHEN ${t}.status = 'pending' AND ${t}.available_at = ${t}.live_until
                           THEN ${now}::timestamptz ELSE ${t}.available_at END`

/**
 * What a heartbeat's answer reads of the tasks an agent holds (task alias `t`, agent id
 * expression `agent`): those assigned and not started (its `assignments`), those to stop
 * (its `cancellations`: running with a cancel asked, or held when its drain's deadline
 * passed: a drain stop, `drain_requested_at`), and any it holds at all (a reported running
 * id it does not hold is one to stop).
 */
export const awaitingStartSql = (t: string, agent: string) =>
  `${t}.agent_id = ${agent} AND ${t}.status = '${ASSIGN.to}' AND ${t}.drain_requested_at IS NULL`
export const toCancelSql = (t: string, agent: string) =>
  `${t}.agent_id = ${agent} AND ${t}.status IN ('${ASSIGN.to}', '${START.to}')
     AND ((${t}.status = '${START.to}' AND ${t}.cancel_requested) OR ${t}.drain_requested_at IS NOT NULL)`
export const holdsSql = (t: string, agent: string) => `${t}.agent_id = ${agent} AND ${liveSql(t)}`

/** The task is held by an agent (assigned or running): it takes one of its slots (and its key's). */
export const liveSql = (t: string) => `${t}.status IN ('${ASSIGN.to}', '${START.to}')`

/** Staff cancels, by the state table: those that end the task at once, and the one that asks its agent. */
const CANCELS = TASK_MOVES.filter((m) => m.action === 'cancel' && m.by.includes('staff'))
const CANCEL_ENDS = CANCELS.filter((m) => m.to === 'cancelled')
const CANCEL_ASKS = CANCELS.filter((m) => m.to !== 'cancelled')
const inList = (xs: readonly string[]) => xs.map((x) => `'${x}'`).join(', ')
const guardSql = (t: string, when: MoveGuard | undefined) =>
  when === undefined
    ? ''
    : when === 'not_cancel_requested'
      ? ` AND NOT ${t}.cancel_requested`
      : when === 'drain_requested'
        ? ` AND ${t}.drain_requested_at IS NOT NULL`
        : ` AND ${t}.${when}`
const movesSql = (t: string, ms: readonly TaskMove[]) =>
  `(${ms.map((m) => `(${t}.status IN (${inList(m.from)})${guardSql(t, m.when)})`).join(' OR ')})`

/** Whether a staff cancel ends task row `t` at once (pending, assigned, or a retry due). */
export const cancelEndsSql = (t: string) => movesSql(t, CANCEL_ENDS)
/** Whether a staff cancel asks the agent of task row `t` to end it (running). */
export const cancelAsksSql = (t: string) => movesSql(t, CANCEL_ASKS)
/** Whether a cancel that ends a task that was `was` (a status expression) gives back its agent's slot. */
export const cancelReleasesSql = (was: string) =>
  `${was} IN (${inList(CANCEL_ENDS.filter((m) => m.slot === 'release').flatMap((m) => m.from))})`

/**
 * The SET items of a staff cancel that ends task row `t` (it was `was`): cancelled, no retry;
 * a task called off while waiting for its retry keeps the time its last run ended.
 */
export const cancelSet = (t: string, was: string, now: string) => {
  const keeps = CANCEL_ENDS.filter((m) => m.when === 'auto_retry').flatMap((m) => m.from)
  return `status = 'cancelled', auto_retry = false,
         finished_at = CASE WHEN ${was} IN (${inList(keeps)}) THEN ${t}.finished_at ELSE ${now} END,
         version = ${t}.version + 1, updated_at = ${now}`
}

/** The SET items of a staff cancel that asks the agent of task row `t` to end it. */
export const requestCancelSet = (t: string, now: string) =>
  `cancel_requested = true, cancel_requested_at = ${now}, version = ${t}.version + 1, updated_at = ${now}`
