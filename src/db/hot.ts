import { getTableColumns, type Table } from 'drizzle-orm'
import { beatStatusSql, releasedLoadSql, streakAfterSql, takenLoadSql } from '../domain/agent-states'
import {
  fairGroupSql,
  fairOrderSql,
  grantedSql,
  heldByKeySql,
  releasedKeySql,
  releaseKeysSql,
  upsertKeysSql,
} from '../domain/concurrency'
import {
  type AgentSql,
  agentColumns,
  leastLoadedOrderSql,
  meetsRequirementsSql,
  pinnedQueueSql,
  queueOrderSql,
  shapeColumns,
  shapeQueueSql,
  takesWorkSql,
  taskColumns,
} from '../domain/fit'
import type { ReportStatus } from '../domain/model'
import {
  assignedEventRows,
  assignedEvents,
  assignSet,
  awaitingStartSql,
  endedLiveSet,
  holdsSql,
  requeueSet,
  secondsBetween,
  toCancelSql,
} from '../domain/sql'
import { move, reportAllowedSql } from '../domain/task-states'
import type { Db } from './client'
import { type AgentRow, agents, type TaskRow, tasks } from './schema'

/**
 * The hot path's SQL: every statement an agent's request (heartbeat, report) or a task
 * create runs, each with constant text, sent as a named statement so every connection
 * plans it once (planning was a third of Postgres's CPU on these paths when drizzle built
 * them per request). Each is one statement with no explicit transaction: the guards are in
 * its WHERE, the events and the agents' slot counts in its CTEs. Cold paths (admin CRUD,
 * statistics, the sweep) use drizzle's builders.
 *
 * Rows come back as JSON (`to_jsonb`) and are mapped by `fromJson`, so one statement can
 * return an agent, its tasks and a verdict together.
 */
export interface HotStatement {
  readonly name: string
  readonly text: string
}

type QueryClient = {
  query(
    config: { name: string; text: string; values: unknown[] } | string,
    values?: unknown[],
  ): Promise<{ rows: unknown[] }>
}

/** Runs a hot statement on the database's own client: named (prepared) where the driver has them. */
export async function hot<T>(db: Db, stmt: HotStatement, values: unknown[]): Promise<T[]> {
  const client = (db as unknown as { $client: QueryClient & { waitReady?: unknown } }).$client
  for (let attempt = 1; ; attempt++) {
    try {
      // PGlite (one in-process connection) takes text and values; pg and the Neon Pool take
      // a named statement, prepared once per connection.
      const res =
        client.waitReady !== undefined
          ? await client.query(stmt.text, values)
          : await client.query({ name: stmt.name, text: stmt.text, values })
      return res.rows as T[]
    } catch (err) {
      // Each statement is its own transaction, so one Postgres aborted for a deadlock or a
      // serialization failure changed nothing and can simply run again.
      const code = (err as { code?: unknown }).code
      if (attempt >= 4 || (code !== '40P01' && code !== '40001')) throw err
      await new Promise((r) => setTimeout(r, Math.random() * 10 * attempt))
    }
  }
}

const timestampColumns = (table: Table) =>
  Object.entries(getTableColumns(table)).map(([key, col]) => ({
    key,
    name: col.name,
    date: col.columnType === 'PgTimestamp',
  }))
const agentJsonColumns = timestampColumns(agents)
const taskJsonColumns = timestampColumns(tasks)

/** A row from `to_jsonb(...)`: JSON values as they are, timestamps as Dates, keys in camelCase. */
function fromJson<T>(columns: typeof agentJsonColumns, json: Record<string, unknown>): T {
  const out: Record<string, unknown> = {}
  for (const c of columns) {
    const v = json[c.name]
    out[c.key] = v === null || v === undefined ? null : c.date ? new Date(v as string) : v
  }
  return out as T
}
export const agentFromJson = (json: Record<string, unknown>) => fromJson<AgentRow>(agentJsonColumns, json)
export const taskFromJson = (json: Record<string, unknown>) => fromJson<TaskRow>(taskJsonColumns, json)

const QUEUE_ORDER = queueOrderSql('t')

/**
 * The fill: CTEs ending in `picked`, the ids of at most `limit` due pending tasks that fit
 * the agent row `from` (a CTE or table alias whose columns `agent` names), locked
 * `SKIP LOCKED`, best first in queue order. It never walks the whole queue: it reads the
 * shapes the agent fits (`task_shapes`, a few rows), then the head of each of those shapes'
 * queues (`tasks_shape_queue_idx`), and the head of the tasks pinned to the agent
 * (`tasks_pinned_queue_idx`); tasks of shapes no agent fits are never read. Each shape's
 * head holds at most `limit` rows, so the first `limit` of their union in queue order are
 * the queue's first `limit` that fit. A task the agent declined is passed over in its
 * shape's queue. `takes` is the agent's "takes work now" test (no rows when false).
 */
export const fillCtes = (o: {
  from: string
  agent: AgentSql
  takes: string
  limit: string
  now: string
  /** false: read without locking (a probe for whether a fill would give anything). */
  lock?: boolean
}) => {
  const lock = o.lock === false ? '' : 'FOR UPDATE OF t SKIP LOCKED'
  return `
fit_shapes AS (
  SELECT s.id FROM task_shapes s, ${o.from}
   WHERE ${o.takes} AND coalesce(${meetsRequirementsSql(o.agent, shapeColumns('s'))}, false)
     AND NOT ${heldByKeySql('s')}
), by_shape AS (
  SELECT q.id, q.priority FROM fit_shapes s CROSS JOIN ${o.from} CROSS JOIN LATERAL (
    SELECT t.id, t.priority FROM tasks t
     WHERE ${shapeQueueSql('t', 's.id', o.now)}
       AND NOT (${o.agent.id} = ANY(t.declined_by))
     ORDER BY ${QUEUE_ORDER}
     LIMIT ${o.limit}
       ${lock}) q
), pinned AS (
  SELECT t.id, t.priority FROM tasks t, ${o.from}
   WHERE ${o.takes} AND ${pinnedQueueSql('t', o.agent.id, o.now)}
     AND coalesce(${meetsRequirementsSql(o.agent, taskColumns('t'))}, false) AND NOT ${heldByKeySql('t')}
   ORDER BY ${QUEUE_ORDER}
   LIMIT ${o.limit}
     ${lock}
), picked AS (
  SELECT c.id FROM (SELECT * FROM by_shape UNION ALL SELECT * FROM pinned) c
   ORDER BY c.priority DESC, c.id
   LIMIT ${o.limit}
)`
}

/**
 * Agents' reports on tasks, as CTEs both the report statement and the heartbeat use: one
 * row per task (a caller with several reports on one task sends them in rounds; "running"
 * then an end is one row, `started`). Each is judged against the task locked as it is now
 * — `stale_attempt` when the reporting agent (the row's `agent_id`; null for staff) does
 * not hold it or the attempt is not the current one, `repeat` for the report that already
 * ended it, `invalid_transition` for a move the state machine does not allow, `not_found` —
 * and only the `ok` ones move (CTE `ru`), each with one event. A `started` row that finds
 * the task assigned (the run started and ended between two heartbeats) is stored as
 * assigned → its end (`started_at` set as a `running` report sets it) and writes only the
 * end's event, `{from: 'assigned', to, attempt, started: true}` (and `error` for a
 * failure): no `task.started` (docs/decisions.md, "One event for a run that started and
 * ended in one report").
 * A failure whose code the table counts as a loss of the agent (`lossCodes`: a runner that
 * restarted reports the runs it lost) is counted in lostCount, capped by the row's
 * `lost_cap` (MAX_LOST_COUNT), not in failures. A run's end reported by the agent an earlier
 * timeout or cancel left it on (`live_agent_id`, whatever the verdict) confirms it ended:
 * a retry waiting for that may be placed (CTE `rl`).
 * rows: jsonb array of {i, task_id, agent_id, attempt, status, started, progress, result,
 * has_result, error, lost_cap} · ids: the task ids as uuid[] (so the planner reads tasks by primary
 * key; a join on the JSON rows alone was planned as a scan of the whole table) · now ·
 * events: `insert` appends the reports' events (CTE `rev`); `rows` leaves them as rows
 * (i, k, type, agent_id, task_id, data) for the caller's one insert of all its events.
 */
/** How a report was taken: `ok` (applied), `repeat` (the report that already ended the task), or why not. */
export type ReportVerdict = 'ok' | 'repeat' | 'stale_attempt' | 'invalid_transition' | 'not_found'

/** A report as a row of the report statements (`reportCtes` in src/db/hot.ts). */
export interface ReportRow {
  /** Its index in its round (unique in a statement). */
  i: number
  task_id: string
  agent_id: string | null
  attempt: number
  status: ReportStatus
  started: boolean
  progress: number | null
  result: unknown
  has_result: boolean
  error: unknown
  lost_cap: number
}

/** A report statement's answer for one row. */
export type VerdictRow = {
  i: number
  verdict: ReportVerdict
  /** The agent that held the task when the report was judged. */
  holder: string | null
  task: Record<string, unknown> | null
}

const DECLINE = move('decline', 'assigned')
const START = move('start', 'assigned')
const FAIL = move('fail', 'running')
const LOSS_CODES = (FAIL.lossCodes ?? []).map((c) => `'${c}'`).join(', ') || 'NULL'

const reportCtes = (rows: string, ids: string, now: string, events: 'insert' | 'rows' = 'insert') => `
rr AS (
  SELECT * FROM jsonb_to_recordset(${rows}::jsonb) AS r(i int, task_id uuid, agent_id uuid, attempt int, status text,
    started boolean, progress real, result jsonb, has_result boolean, error jsonb, lost_cap int)
), rc AS (
  SELECT t.* FROM tasks t WHERE t.id = ANY(${ids}::uuid[]) ORDER BY t.id FOR UPDATE
), rv AS (
  -- What each report does, as booleans: the planner takes a boolean it has no statistics for
  -- as true for half the rows (a comparison, for almost none), so it joins these rows to
  -- tasks by a hash or by key, never by a scan of tasks per row (which a plan made while the
  -- table was small would do, and a batch of heartbeats multiplies).
  SELECT x.*, x.verdict = 'ok' AND x.status <> 'declined' AS moves, x.verdict = 'ok' AND x.status = 'declined' AS declines,
         x.verdict <> 'ok' AND x.status IN ('completed', 'failed', 'cancelled') AS ends
    FROM (
  SELECT rr.*, rc.status AS was, rc.agent_id AS holder,
    f.from_status,
    (rr.status = '${FAIL.to}' AND f.from_status = '${FAIL.from[0]}' AND rr.error->>'code' IN (${LOSS_CODES})) AS lost,
    CASE
      WHEN rc.id IS NULL THEN 'not_found'
      WHEN rr.agent_id IS NOT NULL AND rc.agent_id IS DISTINCT FROM rr.agent_id THEN 'stale_attempt'
      WHEN rr.attempt <> rc.attempt THEN 'stale_attempt'
      WHEN rr.status = rc.status AND rc.status <> 'running' AND rc.finished_at IS NOT NULL THEN 'repeat'
      WHEN ${reportAllowedSql('f.from_status', 'rr.status', 'rc.cancel_requested')} THEN 'ok'
      ELSE 'invalid_transition'
    END AS verdict
  FROM rr LEFT JOIN rc ON rc.id = rr.task_id
  -- "running" then an end, in one row: judged as the end of a running task.
  CROSS JOIN LATERAL (SELECT CASE WHEN rr.started AND rc.status IN ('assigned', 'running') THEN 'running'
                                  ELSE rc.status END AS from_status) f
    ) x
), ru AS (
  UPDATE tasks t SET
    status = v.status,
    started_at = CASE WHEN v.was = 'assigned' AND (v.status = 'running' OR v.started) THEN ${now} ELSE t.started_at END,
    deadline_at = CASE WHEN v.status = 'running' AND v.was = 'assigned'
                         THEN ${now}::timestamptz + t.timeout_seconds * interval '1 second'
                       WHEN v.status = 'running' THEN t.deadline_at ELSE NULL END,
    progress = CASE WHEN v.status = 'completed' THEN 100
                    WHEN v.was = 'assigned' AND (v.status = 'running' OR v.started) THEN v.progress
                    WHEN v.status = 'running' THEN coalesce(v.progress, t.progress)
                    ELSE t.progress END,
    finished_at = CASE WHEN v.status = 'running' THEN t.finished_at ELSE ${now} END,
    result = CASE WHEN v.status = 'completed' THEN v.result
                  WHEN v.status = 'failed' AND v.has_result THEN v.result ELSE t.result END,
    error = CASE WHEN v.status = 'failed' THEN v.error ELSE t.error END,
    failures = t.failures + CASE WHEN v.status = 'failed' AND NOT v.lost THEN 1 ELSE 0 END,
    lost_count = t.lost_count + CASE WHEN v.lost THEN 1 ELSE 0 END,
    auto_retry = CASE WHEN v.lost THEN t.lost_count + 1 < coalesce(v.lost_cap, 1) AND NOT t.cancel_requested
                      WHEN v.status = 'failed'
                      THEN t.failures + 1 < t.max_attempts AND v.error->>'code' <> 'malformed_payload'
                           AND NOT t.cancel_requested
                      ELSE t.auto_retry END,
    version = t.version + 1, updated_at = ${now}
  FROM rv v WHERE t.id = ANY(${ids}::uuid[]) AND t.id = v.task_id AND v.moves
  RETURNING t.*, v.i, v.was, v.started, v.progress AS reported, t.agent_id AS holder
), rd AS (
  -- Declined: back to the queue (no attempt spent), never offered to that agent again.
  UPDATE tasks t SET ${requeueSet(DECLINE, 't', now, now)},
         declined_by = array_append(t.declined_by, t.agent_id)
  FROM rv v WHERE t.id = ANY(${ids}::uuid[]) AND t.id = v.task_id AND v.declines
  RETURNING t.*, v.i, v.was, v.started, v.progress AS reported, v.holder
), rl AS (
  -- The end of a run the service stopped waiting for, from its agent: it is over.
  UPDATE tasks t SET ${endedLiveSet('t', now)}
  FROM rv v WHERE t.id = ANY(${ids}::uuid[]) AND t.id = v.task_id AND v.ends
   AND t.live_agent_id = v.agent_id AND t.attempt = v.attempt
  RETURNING t.id
), done AS (
  -- Every task a report moved, with the agent that held it (holder).
  SELECT * FROM ru UNION ALL SELECT * FROM rd
), rev AS (${
  events === 'insert'
    ? `
  INSERT INTO events (type, agent_id, task_id, data, created_at)
  SELECT e.type, e.agent_id, e.task_id, e.data, ${now} FROM (`
    : ''
}
    SELECT u.i, 0 AS k, '${START.event}' AS type, u.agent_id, u.id AS task_id,
           jsonb_build_object('from', '${START.from[0]}', 'to', '${START.to}', 'attempt', u.attempt) AS data
      FROM ru u WHERE u.was = '${START.from[0]}' AND u.status = '${START.to}'
    UNION ALL
    -- An end: its event alone, from the state the task was stored in (\`was\`). A \`started\` row
    -- that found the task assigned writes no task.started: its end says \`started: true\`.
    SELECT u.i, 1, CASE WHEN u.status = 'running' THEN 'task.progress' ELSE 'task.' || u.status END,
           u.agent_id, u.id,
           CASE WHEN u.status = 'running' THEN jsonb_build_object('progress', u.reported, 'attempt', u.attempt)
                ELSE jsonb_build_object('from', u.was, 'to', u.status, 'attempt', u.attempt)
                     || CASE WHEN u.status = 'failed' THEN jsonb_build_object('error', u.error) ELSE '{}'::jsonb END
                     || CASE WHEN u.started AND u.was = '${START.from[0]}' THEN '{"started": true}'::jsonb ELSE '{}'::jsonb END
                END
      FROM ru u WHERE NOT (u.status = 'running' AND u.was = 'assigned')
    UNION ALL
    SELECT d.i, 1, '${DECLINE.event}', d.holder, d.id,
           jsonb_build_object('from', 'assigned', 'to', 'pending', 'attempt', d.attempt, 'reason', '${DECLINE.name}',
                              'error', v.error)
      FROM rd d JOIN rv v ON v.i = d.i${
        events === 'insert'
          ? `
  ) e ORDER BY e.i, e.k
  RETURNING 1`
          : ''
      }
)`

/**
 * A report's verdict (row `v` of `rv`), and what of its task the caller needs (`whole`: all
 * of it): the task as the report left it (`vd`, from `done`), or as it was (`vc`, from `rc`).
 */
const verdictJson = (whole: string) => `jsonb_build_object('i', v.i, 'verdict', v.verdict, 'holder', v.holder, 'task',
    CASE WHEN ${whole} THEN
      coalesce(to_jsonb(vd) - 'i' - 'was' - 'started' - 'reported' - 'holder', to_jsonb(vc))
    WHEN vd.id IS NOT NULL THEN
      jsonb_build_object('id', vd.id, 'agent_id', vd.agent_id, 'status', vd.status, 'attempt', vd.attempt,
                         'started_at', vd.started_at, 'finished_at', vd.finished_at, 'rollout_id', vd.rollout_id)
    WHEN vc.id IS NOT NULL THEN
      jsonb_build_object('id', vc.id, 'agent_id', vc.agent_id, 'status', vc.status, 'attempt', vc.attempt,
                         'rollout_id', vc.rollout_id)
    END)`

/** The reports `v` with their tasks (`vd`, `vc`): joined, not looked up row by row. */
const VERDICT_FROM = 'rv v LEFT JOIN done vd ON vd.i = v.i LEFT JOIN rc vc ON vc.id = v.task_id'

/**
 * Per agent (`holder`), what the reports of `done` (with their verdicts `rv`) ended: `n`, the
 * tasks that left it (their slots are free again), and its failure streak's news by the
 * streak rule (src/domain/agent-states.ts): `last_ok`, the index of its last completed end,
 * and `fails`, the entries of the failed ends after it (a failure counted in `failures`, not
 * a loss), in order.
 */
const endedByAgent = (now: string) => `
  SELECT x.holder, count(*) FILTER (WHERE x.status <> 'running') AS n, max(x.last_ok) AS last_ok,
         jsonb_agg(x.entry ORDER BY x.i) FILTER (WHERE x.entry IS NOT NULL AND x.i > coalesce(x.last_ok, -1)) AS fails
    FROM (SELECT d.holder, d.i, d.status,
                 max(d.i) FILTER (WHERE d.status = 'completed') OVER (PARTITION BY d.holder) AS last_ok,
                 CASE WHEN d.status = 'failed' AND NOT v.lost
                      THEN jsonb_build_object('t', d.id, 'y', d.type, 'c', d.error->>'code',
                                              'at', extract(epoch FROM ${now}::timestamptz)::float8) END AS entry
            FROM done d JOIN rv v ON v.i = d.i) x
   GROUP BY x.holder`

/**
 * Reports on tasks (PATCH /tasks/{id}/status, and any round of a heartbeat's reports but
 * its last), set-based, with the slots of tasks that ended given back to their agents.
 * $1 report rows (jsonb) · $2 now · $3 task ids (uuid[]) · $4 whole tasks in the answer
 * Returns `reports`: one {i, verdict, task} per row.
 */
export const applyReports: HotStatement = {
  name: 'apply_reports',
  text: `
WITH ${reportCtes('$1', '$3', '$2')}, ended AS (${endedByAgent('$2')}
), rel AS (
  UPDATE agents a SET active_tasks = ${releasedLoadSql('a.active_tasks', 'e.n')},
         fail_streak = ${streakAfterSql('a.fail_streak', 'e.last_ok', 'e.fails')}
    FROM (SELECT * FROM ended WHERE holder IS NOT NULL AND n > 0 ORDER BY holder) e
   WHERE a.id = e.holder
  RETURNING 1
), relk AS (${releaseKeysSql('done', "status <> 'running'", '$2')}
)
SELECT (SELECT coalesce(jsonb_agg(${verdictJson('$4::boolean')} ORDER BY v.i), '[]'::jsonb) FROM ${VERDICT_FROM}) AS reports`,
}

/**
 * The fill of a batch of heartbeats: CTEs ending in `chosen` (id, agent_id), the due pending
 * tasks given to the agents of CTE `a` (columns as `agentColumns`, with `next` the status
 * the beat leaves and `active` the load after the reports, by the rules of
 * src/domain/agent-states.ts), each task to one agent, no agent
 * past its free slots. Per shape (`task_shapes`) that any of them fits, the head of its queue
 * (`tasks_shape_queue_idx`) is locked once `SKIP LOCKED`, as many rows as the free slots of
 * the agents that fit it; within a shape, the fitting agents' slots are numbered round-robin
 * (every agent's first slot, least loaded first, then every second slot…) and slot j is
 * joined to the shape's j-th task, the whole fit rule in the join (a task the slot's agent
 * declined, say, is not given). Tasks pinned to an agent come from its own queue
 * (`tasks_pinned_queue_idx`). Then each agent keeps the best of what it was offered, in
 * queue order, up to its free slots; a task dropped there simply stays pending. With one
 * agent this gives what a walk of the queue would: its free slots' worth from the head of
 * each shape it fits and of its pinned queue, the best of them first.
 */
const F = agentColumns('f')
const NO_RELEASE = 'SELECT NULL::text AS key, 0 AS n WHERE false'
const batchFillCtes = (now: string, released = NO_RELEASE) => `
slots AS (
  SELECT a.id, a.status, a.provider, a.region, a.capabilities, a.labels, a.task_types, a.max_concurrent_tasks,
         a.active AS active_tasks, a.max_concurrent_tasks - a.active AS free
    FROM a WHERE ${takesWorkSql({ ...agentColumns('a'), status: 'a.next', activeTasks: 'a.active' })}
), kreleased AS (${released}
), fit_shapes AS (
  -- A shape whose concurrency key is full is not read; one with a key reads no more than its room.
  SELECT s.id, s.fair_group, array_agg(f.id ORDER BY f.id) AS ids,
         (CASE WHEN k.key IS NULL THEN sum(f.free)
               ELSE ${grantedSql(releasedKeySql('k.active', 'coalesce(min(r.n), 0)'), 'k.key_limit', 'sum(f.free)')} END)::int AS want
    FROM task_shapes s JOIN slots f ON coalesce(${meetsRequirementsSql(F, shapeColumns('s'))}, false)
    LEFT JOIN concurrency_keys k ON k.key = s.concurrency_key LEFT JOIN kreleased r ON r.key = s.concurrency_key
   GROUP BY s.id, s.fair_group, k.key, k.key_limit, k.active
), by_shape AS (
  -- Passed over: tasks every agent of the batch that fits the shape declined.
  SELECT q.*, s.ids, s.fair_group
    FROM fit_shapes s CROSS JOIN LATERAL (
      SELECT t.id, t.shape, t.priority, t.type, t.declined_by, t.req_capabilities, t.req_provider, t.req_region,
             t.req_labels, t.req_agent_id, t.concurrency_key
        FROM tasks t
       WHERE ${shapeQueueSql('t', 's.id', now)}
         AND NOT (t.declined_by @> s.ids)
       ORDER BY ${QUEUE_ORDER}
       LIMIT s.want
         FOR UPDATE OF t SKIP LOCKED) q
   WHERE s.want > 0
), ranked AS (
  -- Fair share: within the shapes that fit the same agents, the heads in fair order (each
  -- tenant's first task, then each one's second…), numbered j.
  SELECT b.*, row_number() OVER (PARTITION BY b.ids ORDER BY ${fairOrderSql('b')}) AS j
    FROM (SELECT b.*, row_number() OVER (PARTITION BY b.ids, b.fair_group, b.priority ORDER BY b.id) AS frank
            FROM by_shape b) b
), sets AS (
  SELECT ids, count(*)::int AS n FROM ranked GROUP BY ids
), set_slots AS (
  SELECT st.ids, f.id AS agent_id,
         row_number() OVER (PARTITION BY st.ids ORDER BY n.slot, ${leastLoadedOrderSql(F)}) AS j
    FROM sets st JOIN slots f ON f.id = ANY(st.ids)
   CROSS JOIN LATERAL generate_series(1, least(f.free, st.n)) AS n(slot)
), paired AS MATERIALIZED (
  -- The j-th head of a set of agents to the j-th slot of that set, planned alone: joined
  -- together with the agents and the fit rule, the planner (which cannot estimate these
  -- CTEs) matched every head with every slot first, heads × slots² rows for a batch.
  SELECT q.*, ss.agent_id AS slot_agent FROM ranked q JOIN set_slots ss ON ss.ids = q.ids AND ss.j = q.j
), offered AS (
  SELECT q.id, q.priority, q.frank, q.concurrency_key, f.id AS agent_id, f.free
    FROM paired q JOIN slots f ON f.id = q.slot_agent
   WHERE coalesce(${meetsRequirementsSql(F, taskColumns('q'))}, false)
  UNION ALL
  SELECT p.id, p.priority, 1, p.concurrency_key, f.id, f.free FROM slots f CROSS JOIN LATERAL (
    SELECT t.id, t.priority, t.concurrency_key FROM tasks t
     WHERE ${pinnedQueueSql('t', 'f.id', now)}
       AND coalesce(${meetsRequirementsSql(F, taskColumns('t'))}, false) AND NOT ${heldByKeySql('t')}
     ORDER BY ${QUEUE_ORDER}
     LIMIT f.free
       FOR UPDATE OF t SKIP LOCKED) p
), picked_by_agent AS (
  SELECT o.id, o.agent_id, o.priority, o.frank, o.concurrency_key
    FROM (SELECT o.*, row_number() OVER (PARTITION BY o.agent_id ORDER BY ${fairOrderSql('o')}) AS r FROM offered o) o
   WHERE o.r <= o.free
), kwant AS (
  SELECT concurrency_key AS key FROM picked_by_agent WHERE concurrency_key IS NOT NULL
  UNION SELECT key FROM kreleased
), klock AS (
  -- The keys' rows, locked in key order and read as they are now (not as of the statement's
  -- start): another instance's assignment of the same key waits here, then counts.
  SELECT k.key, k.key_limit, ${releasedKeySql('k.active', 'coalesce(r.n, 0)')} AS active, k.active AS was
    FROM (SELECT k.* FROM concurrency_keys k WHERE k.key = ANY(ARRAY(SELECT key FROM kwant)) ORDER BY k.key FOR UPDATE) k
    LEFT JOIN kreleased r ON r.key = k.key
), chosen AS (
  -- The admission rule: of a key's tasks picked, best first, as many as it has room for.
  SELECT c.id, c.agent_id, c.concurrency_key FROM picked_by_agent c WHERE c.concurrency_key IS NULL
  UNION ALL
  SELECT c.id, c.agent_id, c.concurrency_key
    FROM (SELECT c.*, row_number() OVER (PARTITION BY c.concurrency_key ORDER BY ${fairOrderSql('c')}) AS r
            FROM picked_by_agent c WHERE c.concurrency_key IS NOT NULL) c
    LEFT JOIN klock k ON k.key = c.concurrency_key
   WHERE k.key IS NULL OR c.r <= ${grantedSql('k.active', 'k.key_limit', 'c.r')}
), kup AS (
  UPDATE concurrency_keys k SET active = l.active + coalesce(g.n, 0), updated_at = ${now}
    FROM klock l LEFT JOIN (SELECT concurrency_key AS key, count(*)::int AS n FROM chosen
                             WHERE concurrency_key IS NOT NULL GROUP BY concurrency_key) g ON g.key = l.key
   WHERE k.key = l.key AND l.active + coalesce(g.n, 0) <> l.was
  RETURNING 1
)`

const STATUS_CHANGED = "'agent.status_changed'"

/** An agent's load in the heartbeat statement (row `c`), after its reports' ends (`e`), by the load rule. */
const activeAfterReports = (withReports: boolean) =>
  withReports ? releasedLoadSql('c.active_tasks', 'coalesce(e.n, 0)') : 'c.active_tasks'

/**
 * Heartbeats of several agents (a batch: one entry per agent), in one statement: applies
 * their reports (the CTEs above, each agent's slots for the tasks that ended given back),
 * records each beat (last heartbeat, metrics, declared task types; the status by the beat
 * rule, `beatStatusSql` in src/domain/agent-states.ts: an offline agent comes back online, a
 * reported status applies except over an operator's maintenance; the load by the load rule,
 * less the tasks its reports ended, plus those it is given), fills the
 * agents that are then online with free slots from the queue (`batchFillCtes`), appends
 * every event in one insert (the reports', `agent.status_changed` when a status moves,
 * `task.assigned`), and reads, per agent, what its answer needs: the agent, its assigned
 * tasks (those it already had, and those just given), the running ones to cancel, the
 * reported running ids it no longer holds, and its reports' verdicts. Locks: the reported
 * tasks, then the agents, each set in id order — the order every report, cancel, delete and
 * sweep takes (tasks before their agent), so two batches, or a batch and any of those,
 * never deadlock; the fill's tasks are taken `SKIP LOCKED`. Each agent row is read under its
 * lock, so its free slots count every report committed before.
 * $1 now · $2 the beats (jsonb array of {agent_id, status (reported, or null), metrics
 * (or null), running (uuid array), task_types (declared, or null)}) · $3 their agent ids
 * (uuid[]) · $4 report rows (jsonb, agent_id = the reporting agent, `i` unique in the batch)
 * · $5 their task ids (uuid[]). `heartbeatsPlain`: the same without reports ($1–$3), the
 * steady beat, with nothing to plan for them. Rows: one per agent found.
 */
const heartbeatsText = (withReports: boolean) => `
WITH ${
  withReports
    ? `${reportCtes('$4', '$5', '$1', 'rows')}, ended AS (${endedByAgent('$1')}
), `
    : ''
}beats AS (
  SELECT * FROM jsonb_to_recordset($2::jsonb)
    AS b(agent_id uuid, status text, metrics jsonb, running uuid[], task_types text[])
), cur AS (
  -- Tasks before their agents, the order every report, cancel, delete and sweep takes: with
  -- reports, the reported tasks are locked (rc) before these rows, or two of them deadlock.
  SELECT g.id, g.status, g.provider, g.region, g.capabilities, g.labels, g.task_types, g.max_concurrent_tasks,
         g.active_tasks, g.drain_then
    FROM agents g WHERE g.id = ANY($3::uuid[]) ${withReports ? 'AND (SELECT count(*) FROM rc) >= 0' : ''}
   ORDER BY g.id FOR UPDATE
), a AS (
  SELECT c.id, c.status, c.provider, c.region, c.capabilities, c.labels, c.max_concurrent_tasks, c.active_tasks,
         c.status AS was, coalesce(b.task_types, c.task_types) AS task_types, c.task_types AS declared,
         b.task_types IS NOT NULL AS declaring, b.metrics, b.running,
         ${activeAfterReports(withReports)} AS active,
         ${beatStatusSql('c.status', 'b.status', { drainThen: 'c.drain_then', active: activeAfterReports(withReports) })} AS next
         ${withReports ? ', e.last_ok, e.fails' : ''}
    FROM cur c JOIN beats b ON b.agent_id = c.id
    ${withReports ? 'LEFT JOIN ended e ON e.holder = c.id' : ''}
), ${batchFillCtes(
  '$1',
  withReports
    ? "SELECT concurrency_key AS key, count(*)::int AS n FROM done WHERE status <> 'running' AND concurrency_key IS NOT NULL GROUP BY concurrency_key"
    : undefined,
)}, given AS (
  -- By key (= ANY of an array): a join on the CTE alone was planned as a scan of all tasks.
  UPDATE tasks t SET ${assignSet('t', '$1', 'c.agent_id')}
    FROM chosen c WHERE t.id = ANY(ARRAY(SELECT id FROM chosen)) AND t.id = c.id
  RETURNING t.*, ${secondsBetween('t.created_at', '$1::timestamptz')} AS wait_s
), given_by AS (
  SELECT v.agent_id, count(*) AS n, jsonb_agg(to_jsonb(v) ORDER BY v.priority DESC, v.id) AS rows
    FROM given v GROUP BY v.agent_id
), upd AS (
  UPDATE agents g
     SET status = a.next, last_heartbeat_at = $1, last_metrics = coalesce(a.metrics, g.last_metrics),
         task_types = a.task_types,
         active_tasks = ${takenLoadSql('a.active', 'coalesce(gb.n, 0)')},${
           withReports
             ? `
         fail_streak = ${streakAfterSql('g.fail_streak', 'a.last_ok', 'a.fails')},`
             : ''
         }
         drain_then = CASE WHEN a.next = 'draining' THEN g.drain_then END,
         drain_deadline = CASE WHEN a.next = 'draining' THEN g.drain_deadline END,
         version = g.version + CASE WHEN a.next <> a.was OR (a.declaring AND a.task_types <> a.declared) THEN 1 ELSE 0 END,
         updated_at = CASE WHEN a.next <> a.was OR (a.declaring AND a.task_types <> a.declared) THEN $1 ELSE g.updated_at END
    FROM a LEFT JOIN given_by gb ON gb.agent_id = a.id WHERE g.id = a.id
  RETURNING g.*, a.was
), ev AS (
  INSERT INTO events (type, agent_id, task_id, data, created_at)
  SELECT e.type, e.agent_id, e.task_id, e.data, $1 FROM (${
    withReports
      ? `
    SELECT 0 AS g, r.i, r.k, r.type, r.agent_id, r.task_id, r.data FROM rev r
    UNION ALL`
      : ''
  }
    SELECT 1, 0, 0, ${STATUS_CHANGED}, u.id, NULL::uuid,
           jsonb_build_object('from', u.was, 'to', u.status, 'by', 'heartbeat') FROM upd u WHERE u.status <> u.was
    UNION ALL
    SELECT 2, 0, 0, x.type, x.agent_id, x.task_id, x.data FROM (${assignedEventRows('given', "'heartbeat'")}) x
  ) e(g, i, k, type, agent_id, task_id, data) ORDER BY e.g, e.i, e.k, e.agent_id, e.task_id
  RETURNING 1
), assigned AS (
  -- The statement's snapshot still shows reported tasks as they were: leave those out.
  SELECT t.agent_id, jsonb_agg(to_jsonb(t) ORDER BY t.priority DESC, t.id) AS rows
    FROM tasks t WHERE ${awaitingStartSql('t', 'ANY($3::uuid[])')}
     ${withReports ? 'AND NOT EXISTS (SELECT 1 FROM done WHERE done.id = t.id)' : ''}
   GROUP BY t.agent_id
), cancel AS (
  SELECT t.agent_id, array_agg(t.id ORDER BY t.id) AS ids
    FROM tasks t WHERE ${toCancelSql('t', 'ANY($3::uuid[])')}
     ${withReports ? "AND NOT EXISTS (SELECT 1 FROM done WHERE done.id = t.id AND done.status <> 'running')" : ''}
   GROUP BY t.agent_id
), lost AS (
  SELECT a.id AS agent_id, array_agg(r.id ORDER BY r.id) AS ids FROM a CROSS JOIN unnest(a.running) AS r(id)
   WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = r.id AND ${holdsSql('t', 'a.id')})
   GROUP BY a.id${
     withReports
       ? `
), verdicts AS (
  SELECT v.agent_id, jsonb_agg(${verdictJson('false')} ORDER BY v.i) AS rows FROM ${VERDICT_FROM} GROUP BY v.agent_id`
       : ''
   }
)
SELECT u.id AS agent_id, to_jsonb(u) - 'was' AS agent, u.status <> u.was AS moved,
  coalesce(x.rows, '[]'::jsonb) AS assigned, coalesce(gb.rows, '[]'::jsonb) AS given,
  coalesce(c.ids, '{}') AS cancel, coalesce(l.ids, '{}') AS lost,
  ${withReports ? "coalesce(vr.rows, '[]'::jsonb)" : "'[]'::jsonb"} AS reports
FROM upd u
LEFT JOIN assigned x ON x.agent_id = u.id LEFT JOIN given_by gb ON gb.agent_id = u.id
LEFT JOIN cancel c ON c.agent_id = u.id LEFT JOIN lost l ON l.agent_id = u.id
${withReports ? 'LEFT JOIN verdicts vr ON vr.agent_id = u.id' : ''}`

export const heartbeats: HotStatement = { name: 'heartbeats', text: heartbeatsText(true) }
export const heartbeatsPlain: HotStatement = { name: 'heartbeats_plain', text: heartbeatsText(false) }

/**
 * What a long poll that woke (or whose wait slice ended) tells its agent, read without a
 * write: the agent, its assigned tasks, the running ones to cancel, the reported running
 * ids it no longer holds (as `heartbeats` reads them), and `fillable`: whether the agent
 * takes work and a due pending task that fits it is in the queue (read unlocked: then a
 * heartbeat's fill is worth its write).
 * $1 agent id · $2 now · $3 running ids (uuid[])
 */
export const pollRead: HotStatement = {
  name: 'poll_read',
  text: `
WITH a AS (
  SELECT * FROM agents WHERE id = $1
), ${fillCtes({ from: 'a', agent: agentColumns('a'), takes: takesWorkSql(agentColumns('a')), limit: '1', now: '$2', lock: false })}
SELECT to_jsonb(a) AS agent, false AS moved,
  (SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY t.priority DESC, t.id), '[]'::jsonb)
     FROM tasks t WHERE ${awaitingStartSql('t', '$1')}) AS assigned,
  '[]'::jsonb AS given,
  (SELECT coalesce(array_agg(t.id ORDER BY t.id), '{}')
     FROM tasks t WHERE ${toCancelSql('t', '$1')}) AS cancel,
  (SELECT coalesce(array_agg(r.id ORDER BY r.id), '{}') FROM unnest($3::uuid[]) AS r(id)
    WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = r.id AND ${holdsSql('t', '$1')})) AS lost,
  '[]'::jsonb AS reports,
  EXISTS (SELECT 1 FROM picked) AS fillable
FROM a`,
}

/**
 * The beats of agents waiting in long polls, in one statement: their last heartbeat moves to
 * `now` (never back), agents in id order; an offline agent is left alone (a heartbeat brings
 * it back, with its event). $1 now · $2 agent ids (uuid[])
 */
export const touchBeats: HotStatement = {
  name: 'touch_beats',
  text: `
WITH l AS (
  SELECT id FROM agents WHERE id = ANY($2::uuid[]) AND status <> 'offline' ORDER BY id FOR UPDATE
)
UPDATE agents g SET last_heartbeat_at = greatest(g.last_heartbeat_at, $1::timestamptz)
  FROM l WHERE g.id = l.id`,
}

/**
 * Adds the shapes of the task rows `from` (a CTE or table with the tasks' columns) that the
 * shape table lacks, with `now` as their creation time. Pinned tasks have none. Writes
 * nothing when the shape is there: no row lock, so creates of one shape never wait on each
 * other.
 */
export const addShapesSql = (from: string, now: string) => `
  INSERT INTO task_shapes (id, type, req_capabilities, req_provider, req_region, req_labels, fair_group, concurrency_key,
                           created_at)
  SELECT DISTINCT ON (shape) shape, type, req_capabilities, req_provider, req_region, req_labels, ${fairGroupSql()},
         concurrency_key, ${now}
    FROM ${from} WHERE req_agent_id IS NULL
  ON CONFLICT (id) DO NOTHING`

/**
 * Creates a batch of tasks in one statement (no explicit transaction): their
 * `task.created` events and new shapes with them, and the tasks that the batch's
 * idempotency keys made before read in the same snapshot. An item whose key was used for a
 * different request is not written (`reused` names them); with `$3` (all or nothing: one
 * POST /tasks/batch) nothing is, and the caller refuses the batch; without it (concurrent
 * single creates written together) the others are. An item whose key another request (or
 * an earlier item) takes while this one runs is neither made nor prior: the caller reads
 * it afterwards.
 * $1 items (jsonb: i, id, name, type, payload, priority, req_capabilities, req_provider,
 * req_region, req_labels, req_agent_id, max_attempts, timeout_seconds, scheduled_at,
 * available_at, idempotency_key, idempotency_owner, idempotency_hash) · $2 now ·
 * $3 all or nothing
 */
export const insertTasks: HotStatement = {
  name: 'insert_tasks',
  text: `
WITH v AS (
  SELECT * FROM jsonb_to_recordset($1::jsonb) AS v(
    i int, id uuid, name text, type text, payload text, priority smallint, req_capabilities text[],
    req_provider text, req_region text, req_labels jsonb, req_agent_id uuid, max_attempts int,
    timeout_seconds int, scheduled_at timestamptz, available_at timestamptz, idempotency_key text,
    idempotency_owner text, idempotency_hash text, concurrency_key text, concurrency_limit int, fairness_key text)
), prior AS (
  SELECT v.i, t.* FROM v JOIN tasks t
    ON t.idempotency_owner = v.idempotency_owner AND t.idempotency_key = v.idempotency_key
   WHERE v.idempotency_key IS NOT NULL
), reused AS (
  SELECT p.i, p.id FROM prior p JOIN v ON v.i = p.i WHERE p.idempotency_hash IS DISTINCT FROM v.idempotency_hash
), ins AS (
  INSERT INTO tasks (id, name, type, payload, priority, req_capabilities, req_provider, req_region, req_labels,
                     req_agent_id, max_attempts, timeout_seconds, scheduled_at, available_at, idempotency_key,
                     idempotency_owner, idempotency_hash, concurrency_key, concurrency_limit, fairness_key, status,
                     created_at, updated_at)
  SELECT id, name, type, payload::jsonb, priority, req_capabilities, req_provider, req_region, req_labels,
         req_agent_id, max_attempts, timeout_seconds, scheduled_at, available_at, idempotency_key,
         idempotency_owner, idempotency_hash, concurrency_key, concurrency_limit, fairness_key, 'pending', $2, $2
    FROM v
   WHERE (NOT $3::boolean OR NOT EXISTS (SELECT 1 FROM reused)) AND NOT EXISTS (SELECT 1 FROM prior p WHERE p.i = v.i)
   ORDER BY i
  ON CONFLICT (idempotency_owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
  RETURNING *
), ev AS (
  INSERT INTO events (type, task_id, data, created_at)
  SELECT 'task.created', id, jsonb_build_object('name', name, 'type', type, 'priority', priority), $2
    FROM ins ORDER BY id
  RETURNING 1
), sh AS (${addShapesSql('ins', '$2')}
  RETURNING 1
), keys AS (${upsertKeysSql('(SELECT v.i, ins.concurrency_key, ins.concurrency_limit FROM ins JOIN v ON v.id = ins.id) x', '$2')}
  RETURNING 1
)
SELECT coalesce((SELECT jsonb_agg(to_jsonb(ins)) FROM ins), '[]'::jsonb) AS made,
       coalesce((SELECT jsonb_agg(to_jsonb(p) - 'i' || jsonb_build_object('_i', p.i)) FROM prior p), '[]'::jsonb) AS prior,
       coalesce((SELECT jsonb_agg(jsonb_build_object('i', r.i, 'id', r.id)) FROM reused r), '[]'::jsonb) AS reused`,
}

/**
 * What a placement hands the long poll of an agent it gave work (src/lib/notifier.ts): the
 * agent's row and the tasks given, as the placement's statement returned them.
 */
export interface AssignedHandoff {
  agent: Record<string, unknown>
  tasks: Record<string, unknown>[]
}

/**
 * Placement right after creates, in one statement: up to `$4` of the least-loaded online
 * agents with a free slot that fit one of the new tasks (by the new tasks' shapes, or
 * being the agent one is pinned to), locked `SKIP LOCKED` (never waiting on a placement in
 * progress: a task left pending here goes on that agent's next heartbeat), filled from the
 * queue as a batch of heartbeats fills (`batchFillCtes`), so the new tasks never jump older
 * or more urgent ones that fit the same agents. Never holds a lock across round trips.
 * $1 now · $2 shapes of the new due tasks (uuid[]) · $3 agents new due tasks are pinned to
 * (uuid[]) · $4 most agents · $5 how they were placed (`create` or `batch`, in the events)
 * Returns `rows`: the tasks given, whole, each with `wait_s`; `agents`: the agents given
 * them, as the statement left them (what a woken long poll of theirs answers).
 */
export const fillNew: HotStatement = {
  name: 'fill_new',
  text: `
WITH a AS (
  SELECT g.id, g.status, g.provider, g.region, g.capabilities, g.labels, g.task_types, g.max_concurrent_tasks,
         g.status AS next, g.active_tasks AS active
    FROM agents g
   WHERE ${takesWorkSql(agentColumns('g'))}
     AND (g.id = ANY($3::uuid[]) OR EXISTS (
           SELECT 1 FROM task_shapes s
            WHERE s.id = ANY($2::uuid[]) AND coalesce(${meetsRequirementsSql(agentColumns('g'), shapeColumns('s'))}, false)))
   ORDER BY ${leastLoadedOrderSql(agentColumns('g'))}
   LIMIT $4
     FOR UPDATE OF g SKIP LOCKED
), ${batchFillCtes('$1')}, given AS (
  UPDATE tasks t SET ${assignSet('t', '$1', 'c.agent_id')}
    FROM chosen c WHERE t.id = ANY(ARRAY(SELECT id FROM chosen)) AND t.id = c.id
  RETURNING t.*, ${secondsBetween('t.created_at', '$1::timestamptz')} AS wait_s
), given_by AS (
  SELECT agent_id, count(*)::int AS n FROM given GROUP BY agent_id
), load AS (
  UPDATE agents g SET active_tasks = ${takenLoadSql('g.active_tasks', 'gb.n')} FROM given_by gb WHERE g.id = gb.agent_id
  RETURNING g.*
), ev AS (${assignedEvents('given', '$5::text', '$1')}
)
SELECT coalesce((SELECT jsonb_agg(to_jsonb(given) ORDER BY given.priority DESC, given.id) FROM given), '[]'::jsonb) AS rows,
  coalesce((SELECT jsonb_agg(to_jsonb(load)) FROM load), '[]'::jsonb) AS agents`,
}
