import { and, asc, eq, inArray, lt, sql } from 'drizzle-orm'
import type { Executor, Tx } from '../db/client'
import { rowsOf } from '../db/client'
import { bind, pgTextArray } from '../db/fragments'
import { taskFromJson } from '../db/hot'
import { getAgent, lockTask } from '../db/rows'
import { agents, type TaskRow, tasks } from '../db/schema'
import { withTx } from '../db/tx'
import { takenLoadSql } from '../domain/agent-states'
import { grantedSql, heldByKeySql, keyFull } from '../domain/concurrency'
import {
  agentColumns,
  FIT_RULE,
  type FitAgent,
  type FitTask,
  fits,
  leastLoadedOrderSql,
  lessLoaded,
  meetsRequirements,
  meetsRequirementsSql,
  misfits,
  pinnedQueueSql,
  queueOrderSql,
  shapeQueueSql,
  type TaskSql,
  takesWorkSql,
  taskColumns,
} from '../domain/fit'
import type { PendingReason } from '../domain/model'
import { assignedEvents, assignSet, secondsBetween } from '../domain/sql'
import { allowedMoves } from '../domain/task-states'
import { ApiError } from '../lib/errors'
import type { Metrics } from '../lib/metrics'
import { changed, type ServiceDeps } from './deps'
import { allShapes, shapeTask } from './shapes'

/**
 * Placement: which agent takes which pending task, by the rules of src/domain/fit.ts (the
 * fit rule, the queue's order, least loaded first).
 *
 * Correctness under concurrency comes from row locks, never process memory: the tasks
 * and agents a placement touches are locked (`FOR UPDATE`, `SKIP LOCKED` where another
 * placement may hold them), and one statement writes every assignment of a batch, bumps
 * the agents' load and appends the events.
 */

export type TaskReq = FitTask & Pick<TaskRow, 'id'>

export interface Assignment {
  taskId: string
  agentId: string
}

export interface AssignedRow {
  id: string
  agent_id: string
  attempt: number
  /** Seconds from the task's creation to this assignment (null when a stored time is infinite). */
  wait_s: number | null
  /** The task as written, when asked for (`whole`). */
  task?: Record<string, unknown>
}

/** Counts assignments and their create→assigned wait in this process's metrics. */
export function recordAssignments(metrics: Metrics | undefined, rows: AssignedRow[], via: PlacedVia): void {
  if (!metrics || rows.length === 0) return
  metrics.assigned.inc({ via }, rows.length)
  for (const r of rows) if (r.wait_s != null) metrics.createToAssigned.observe({}, Math.max(0, r.wait_s))
}

/** How a task reached its agent; recorded on the `task.assigned` event. */
export type PlacedVia = 'execute' | 'create' | 'batch' | 'heartbeat' | 'sweep' | 'rollout'

/**
 * Writes a batch of assignments in one statement: moves the tasks to assigned (bumping
 * the attempt, the fence for the agent's reports), adds the load to each agent and appends
 * a `task.assigned` event per task. The caller holds row locks on every task and agent
 * named; the `status = 'pending'` guard makes a stale pair a no-op rather than a double
 * assignment, and an agent that would go past its slots aborts the whole batch.
 */
export async function writeAssignments(
  tx: Executor,
  now: Date,
  pairs: Assignment[],
  via: PlacedVia,
  whole = false,
): Promise<AssignedRow[]> {
  if (pairs.length === 0) return []
  // Two uuid[] parameters: the planner sees their length (unnest's row estimate), so a
  // batch of one joins by primary key instead of scanning the table.
  const taskIds = `{${pairs.map((p) => p.taskId).join(',')}}`
  const agentIds = `{${pairs.map((p) => p.agentId).join(',')}}`
  const [out] = await rowsOf<{ loaded: number; expected: number; rows: AssignedRow[] }>(
    tx,
    sql`
    WITH v0 AS (
      SELECT v.*, t.concurrency_key, t.priority, 1 AS frank
        FROM unnest(${taskIds}::uuid[], ${agentIds}::uuid[]) WITH ORDINALITY AS v(id, agent_id, ord)
        JOIN tasks t ON t.id = v.id
    ), klock AS (
      SELECT k.key, k.key_limit, k.active FROM concurrency_keys k
       WHERE k.key = ANY(ARRAY(SELECT concurrency_key FROM v0 WHERE concurrency_key IS NOT NULL))
       ORDER BY k.key FOR UPDATE
    ), v AS (
      -- The admission rule: of a key's tasks, in the order given, as many as it has room for.
      SELECT v.id, v.agent_id, v.concurrency_key FROM (
        SELECT v0.*, row_number() OVER (PARTITION BY v0.concurrency_key ORDER BY v0.ord) AS r FROM v0) v
        LEFT JOIN klock k ON k.key = v.concurrency_key
       WHERE k.key IS NULL OR v.r <= ${sql.raw(grantedSql('k.active', 'k.key_limit', 'v.r'))}
    ), upd AS (
      UPDATE tasks t
         SET ${bind(assignSet('t', '{{now}}', 'v.agent_id'), { now })}
        FROM v
       WHERE t.id = v.id AND t.status = 'pending'
      RETURNING t.*, ${bind(secondsBetween('t.created_at', '{{now}}::timestamptz'), { now })} AS wait_s
    ), kup AS (
      UPDATE concurrency_keys k SET active = l.active + c.n, updated_at = ${now}
        FROM klock l JOIN (SELECT concurrency_key, count(*)::int AS n FROM upd GROUP BY concurrency_key) c
          ON c.concurrency_key = l.key
       WHERE k.key = l.key
      RETURNING 1
    ), load AS (
      UPDATE agents a SET active_tasks = ${sql.raw(takenLoadSql('a.active_tasks', 'c.n'))}
        FROM (SELECT agent_id, count(*)::int AS n FROM upd GROUP BY agent_id) c
       WHERE a.id = c.agent_id AND a.status = 'online' AND ${sql.raw(takenLoadSql('a.active_tasks', 'c.n'))} <= a.max_concurrent_tasks
      RETURNING a.id
    ), ev AS (${bind(assignedEvents('upd', '{{via}}::text', '{{now}}'), { via, now })})
    SELECT (SELECT count(*)::int FROM load) AS loaded,
           (SELECT count(DISTINCT agent_id)::int FROM upd) AS expected,
           coalesce((SELECT json_agg(json_build_object('id', u.id, 'agent_id', u.agent_id, 'attempt', u.attempt, 'wait_s', u.wait_s,
                                   'task', CASE WHEN ${whole} THEN to_jsonb(u) - 'wait_s' END)) FROM upd u), '[]'::json) AS rows`,
  )
  if (!out || out.loaded !== out.expected) {
    // Never reached while callers hold their locks; if it is, nothing of this batch commits.
    throw new Error(`placement would exceed an agent's slots (${out?.loaded}/${out?.expected} agents); batch aborted`)
  }
  return out.rows
}

/**
 * Greedy matching in memory: tasks in the order given (priority, then age), each onto
 * the least-loaded fitting agent that still has a slot. A task nothing fits is skipped,
 * so it never blocks the tasks behind it. Agents' load is updated as it goes.
 */
export function matchTasks(list: TaskReq[], pool: FitAgent[]): Assignment[] {
  const out: Assignment[] = []
  const byCap = new Map<string, FitAgent[]>()
  for (const a of pool) {
    for (const c of a.capabilities) {
      const posting = byCap.get(c)
      if (posting) posting.push(a)
      else byCap.set(c, [a])
    }
  }
  for (const t of list) {
    let candidates = pool
    for (const c of t.reqCapabilities) {
      const posting = byCap.get(c) ?? []
      if (posting.length < candidates.length) candidates = posting
    }
    let best: FitAgent | undefined
    for (const a of candidates) {
      if (a.activeTasks >= a.maxConcurrentTasks) continue
      if (best && !lessLoaded(a, best)) continue
      if (fits(t, a)) best = a
    }
    if (best) {
      best.activeTasks += 1
      out.push({ taskId: t.id, agentId: best.id })
    }
  }
  return out
}

const agentFitColumns = {
  id: agents.id,
  status: agents.status,
  provider: agents.provider,
  region: agents.region,
  capabilities: agents.capabilities,
  labels: agents.labels,
  taskTypes: agents.taskTypes,
  maxConcurrentTasks: agents.maxConcurrentTasks,
  activeTasks: agents.activeTasks,
}

/** A task's requirements as bound values, for the SQL forms of the fit rule. */
const requirementValues = (t: FitTask) => ({
  type: t.type,
  declinedBy: `{${t.declinedBy.join(',')}}`,
  caps: pgTextArray(t.reqCapabilities),
  provider: t.reqProvider,
  region: t.reqRegion,
  labels: JSON.stringify(t.reqLabels),
  agentId: t.reqAgentId,
})
const REQUIRED: TaskSql = {
  type: '{{type}}::text',
  declinedBy: '{{declinedBy}}::uuid[]',
  capabilities: '{{caps}}::text[]',
  provider: '{{provider}}::text',
  region: '{{region}}::text',
  labels: '{{labels}}::jsonb',
  agentId: '{{agentId}}::uuid',
}
const G = agentColumns('g')
const fitColumnsSql = `g.id, g.status, g.provider, g.region, g.capabilities, g.labels, g.task_types AS "taskTypes",
  g.max_concurrent_tasks AS "maxConcurrentTasks", g.active_tasks AS "activeTasks"`

/**
 * Locks the least-loaded agent that takes work and fits `task`, or none. Prefers an agent
 * no other placement holds; with `wait`, waits for one when all are held.
 */
async function lockBestAgent(tx: Tx, task: FitTask, wait: boolean): Promise<FitAgent | undefined> {
  const query = (lock: string) =>
    rowsOf<FitAgent>(
      tx,
      bind(
        `SELECT ${fitColumnsSql} FROM agents g
          WHERE ${takesWorkSql(G)} AND ${meetsRequirementsSql(G, REQUIRED)}
          ORDER BY ${leastLoadedOrderSql(G)} LIMIT 1 ${lock}`,
        requirementValues(task),
      ),
    )
  const [free] = await query('FOR UPDATE SKIP LOCKED')
  if (free || !wait) return free
  const [waited] = await query('FOR UPDATE')
  return waited
}

/**
 * Why a due pending task waits, from what the online agents offer: a fitting one with a free
 * slot (`queued`), fitting ones all full (`agents_busy`), ones that meet every other
 * requirement but do not run its type (`no_agent_for_type`), or none that meet its
 * requirements (`no_matching_agent`).
 */
function waitReason(c: { free: boolean; fitting: boolean; fitsButType: boolean }): PendingReason {
  if (c.free) return 'queued'
  if (c.fitting) return 'agents_busy'
  return c.fitsButType ? 'no_agent_for_type' : 'no_matching_agent'
}

/** Why nothing can take `task` now: one line per requirement no online agent meets, or capacity. */
export async function explainNoFit(db: Executor, task: FitTask): Promise<{ reason: PendingReason; details: string[] }> {
  const named = FIT_RULE.filter((r) => r.named(task))
  const online = `${G.status} = 'online'`
  const meets = meetsRequirementsSql(G, REQUIRED)
  const [c] = await rowsOf<Record<string, number>>(
    db,
    bind(
      `SELECT count(*) FILTER (WHERE ${online})::int AS online,
        ${named.map((r) => `count(*) FILTER (WHERE ${online} AND ${r.sql(G, REQUIRED)})::int AS "${r.name}",`).join('\n')}
        ${named.map((r) => `count(*) FILTER (WHERE ${online} AND ${meetsRequirementsSql(G, REQUIRED, r.name)})::int AS "but_${r.name}",`).join('\n')}
        count(*) FILTER (WHERE ${online} AND ${meets})::int AS fitting,
        count(*) FILTER (WHERE ${takesWorkSql(G)} AND ${meets})::int AS free
       FROM agents g`,
      requirementValues(task),
    ),
  )
  const n = (k: string) => c?.[k] ?? 0
  const reason = waitReason({ free: n('free') > 0, fitting: n('fitting') > 0, fitsButType: n('but_type') > 0 })
  if (reason === 'queued') return { reason, details: [`${n('free')} fitting agent(s) have a free slot`] }
  if (reason === 'agents_busy')
    return { reason, details: [`all ${n('fitting')} fitting online agent(s) are at capacity`] }
  const details: string[] = []
  if (n('online') === 0) details.push('no agent is online')
  else {
    // The requirements that alone stand between online agents and the task, else every one
    // that no online agent meets at all.
    for (const r of named) if (n(`but_${r.name}`) > 0) details.push(r.blocks(task))
    if (details.length === 0) for (const r of named) if (n(r.name) === 0) details.push(r.nobody(task))
    if (details.length === 0) details.push('no online agent meets all requirements together')
  }
  return { reason, details }
}

/**
 * Places one pending task now (POST /tasks/execute): on `agentId` when given, else on
 * the best fitting agent. Refuses with 409 and the reasons when nothing fits; the task
 * then stays pending, unchanged.
 */
export async function placeTask(
  { db, clock, notifier, kv, metrics }: Pick<ServiceDeps, 'db' | 'clock' | 'notifier' | 'kv' | 'metrics'>,
  taskId: string,
  agentId?: string,
): Promise<{ task: TaskRow; attempt: number }> {
  const now = clock.now()
  const out = await withTx(db, async (tx) => {
    const task = await lockTask(tx, taskId)
    if (task.status !== 'pending') {
      throw new ApiError('invalid_transition', `The task is ${task.status}; only a pending task can be placed.`, {
        allowed: allowedMoves(task.status),
      })
    }
    if (task.concurrencyKey) {
      const [k] = await rowsOf<{ key: string; limit: number; active: number }>(
        tx,
        sql`SELECT key, key_limit AS "limit", active FROM concurrency_keys WHERE key = ${task.concurrencyKey} FOR UPDATE`,
      )
      if (k && keyFull(k.active, k.limit)) {
        throw new ApiError('concurrency_limit', 'The task’s concurrency key is at its limit; it stays pending.', {
          reasons: [`concurrency key ${k.key} has ${k.active} of ${k.limit} tasks assigned or running`],
        })
      }
    }
    let target: FitAgent | undefined
    if (agentId) {
      const agent = await getAgent(tx, agentId, true)
      const why = misfits(task, agent)
      if (why.length) {
        throw new ApiError('agent_cannot_take_task', `Agent ${agent.name} cannot take this task.`, { reasons: why })
      }
      target = agent
    } else {
      target = await lockBestAgent(tx, task, true)
      if (!target) {
        const { details } = await explainNoFit(tx, task)
        throw new ApiError('no_agent_available', 'No agent can take this task now; it stays pending.', {
          reasons: details,
        })
      }
    }
    const [row] = await writeAssignments(tx, now, [{ taskId, agentId: target.id }], 'execute')
    if (!row) throw new Error('assignment of a locked pending task wrote nothing')
    const [updated] = await tx.select().from(tasks).where(eq(tasks.id, taskId))
    if (!updated) throw new Error('task vanished inside its transaction')
    return { task: updated, attempt: row.attempt, row }
  })
  recordAssignments(metrics, [out.row], 'execute')
  await changed({ kv }, { tasks: [taskId], agents: [out.task.agentId] })
  if (out.task.agentId) notifier?.notify([out.task.agentId])
  return out
}

/**
 * Why each pending task is waiting, for a page of tasks in one query:
 * scheduled (scheduledAt ahead, never ran) · backoff (retry delay ahead) · else `waitReason`.
 */
export async function pendingReasonsFor(db: Executor, list: TaskRow[], now: Date): Promise<Map<string, PendingReason>> {
  const out = new Map<string, PendingReason>()
  // Tasks with the same requirements wait for the same reason: ask once per kind (a batch
  // of a thousand alike tasks is one probe, not a thousand).
  const byKind = new Map<string, string[]>()
  for (const t of list) {
    if (t.status !== 'pending') continue
    // A task that never ran waits for its scheduledAt; one that ran before waits out a retry backoff.
    if (t.availableAt > now) {
      out.set(t.id, t.attempt > 0 ? 'backoff' : 'scheduled')
      continue
    }
    const kind = JSON.stringify([
      t.type,
      [...t.declinedBy].sort(),
      [...t.reqCapabilities].sort(),
      t.reqProvider,
      t.reqRegion,
      Object.entries(t.reqLabels).sort(),
      t.reqAgentId,
    ])
    const same = byKind.get(kind)
    if (same) same.push(t.id)
    else byKind.set(kind, [t.id])
  }
  if (byKind.size === 0) return out
  const probes = [...byKind.values()].map((ids) => ids[0] as string)
  const rows = await rowsOf<{ id: string; free: boolean; fitting: boolean; fitsButType: boolean }>(
    db,
    sql`
    SELECT t.id,
      EXISTS (SELECT 1 FROM agents a WHERE ${sql.raw(`${takesWorkSql(A)} AND ${FITS}`)}) AS free,
      EXISTS (SELECT 1 FROM agents a WHERE ${sql.raw(`${A.status} = 'online' AND ${FITS}`)}) AS fitting,
      EXISTS (SELECT 1 FROM agents a WHERE ${sql.raw(`${A.status} = 'online' AND ${FITS_BUT_TYPE}`)}) AS "fitsButType"
    FROM tasks t WHERE t.id = ANY(${`{${probes.join(',')}}`}::uuid[])`,
  )
  const reasonOf = new Map(rows.map((r) => [r.id, waitReason(r)]))
  for (const ids of byKind.values()) {
    const reason = reasonOf.get(ids[0] as string)
    if (reason) for (const id of ids) out.set(id, reason)
  }
  // A task agents could take (or will, once one is free) whose key is full waits for its key.
  const keyed = [
    ...new Set(list.flatMap((t) => (t.status === 'pending' && t.concurrencyKey ? [t.concurrencyKey] : []))),
  ]
  if (keyed.length > 0) {
    const full = new Set((await keysOf(db, keyed)).filter((k) => keyFull(k.active, k.limit)).map((k) => k.key))
    for (const t of list) {
      const r = out.get(t.id)
      if (t.concurrencyKey && full.has(t.concurrencyKey) && (r === 'queued' || r === 'agents_busy')) {
        out.set(t.id, 'concurrency_limit')
      }
    }
  }
  return out
}

/** The rows of concurrency keys `keys` (those that exist). */
export async function keysOf(db: Executor, keys: string[]): Promise<{ key: string; limit: number; active: number }[]> {
  if (keys.length === 0) return []
  return rowsOf(
    db,
    sql`SELECT key, key_limit AS "limit", active FROM concurrency_keys WHERE key = ANY(${pgTextArray(keys)}::text[])`,
  )
}

/** Why a task waits for its concurrency key, for `pendingDetails`. */
export async function explainKey(db: Executor, key: string): Promise<string[]> {
  const [k] = await keysOf(db, [key])
  if (!k) return []
  return [`concurrency key ${key} has ${k.active} of ${k.limit} tasks assigned or running`]
}

const A = agentColumns('a')
const FITS = meetsRequirementsSql(A, taskColumns('t'))
const FITS_BUT_TYPE = meetsRequirementsSql(A, taskColumns('t'), 'type')

const taskReqColumns = {
  id: tasks.id,
  type: tasks.type,
  declinedBy: tasks.declinedBy,
  reqCapabilities: tasks.reqCapabilities,
  reqProvider: tasks.reqProvider,
  reqRegion: tasks.reqRegion,
  reqLabels: tasks.reqLabels,
  reqAgentId: tasks.reqAgentId,
}

/**
 * The first `limit` due pending tasks in queue order (after `after`, when given) among the
 * queues of shapes `shapeIds` and of the tasks pinned to `agentIds`, read without locks:
 * the head of each of those queues (at most `limit` rows each, by its index), merged.
 */
const SHAPE_QUEUE = sql.raw(shapeQueueSql('t', 's.id'))
const PINNED_QUEUE = sql.raw(pinnedQueueSql('t', 'g.id'))
const HELD = sql.raw(heldByKeySql('t'))

function queueHeads(
  tx: Tx,
  o: { shapeIds: string[]; agentIds: string[]; now: Date; after?: { priority: number; id: string }; limit: number },
) {
  const after = o.after
    ? sql`AND (t.priority < ${o.after.priority} OR (t.priority = ${o.after.priority} AND t.id > ${o.after.id}::uuid))`
    : sql``
  const cols = sql`t.id, t.priority`
  const order = sql.raw(queueOrderSql('t'))
  return rowsOf<{ id: string; priority: number }>(
    tx,
    sql`
    SELECT c.id, c.priority FROM (
      SELECT q.* FROM unnest(${`{${o.shapeIds.join(',')}}`}::uuid[]) AS s(id) CROSS JOIN LATERAL (
        SELECT ${cols} FROM tasks t
         WHERE ${SHAPE_QUEUE} AND t.available_at <= ${o.now} ${after}
         ORDER BY ${order} LIMIT ${o.limit}) q
      UNION ALL
      SELECT q.* FROM unnest(${`{${o.agentIds.join(',')}}`}::uuid[]) AS g(id) CROSS JOIN LATERAL (
        SELECT ${cols} FROM tasks t
         WHERE ${PINNED_QUEUE} AND t.available_at <= ${o.now} ${after} AND NOT ${HELD}
         ORDER BY ${order} LIMIT ${o.limit}) q
    ) c
    ORDER BY c.priority DESC, c.id
    LIMIT ${o.limit}`,
  )
}

/**
 * Places due pending tasks (the sweep's last step): batches of up to `batchSize` tasks in
 * queue order, each batch in its own transaction with the free online agents locked
 * `SKIP LOCKED` (so concurrent sweeps, executes and heartbeats take disjoint rows). A batch
 * reads only the queues that a free agent could take from: the shapes (src/services/shapes.ts)
 * that fit one of them, and the tasks pinned to one of them, so tasks nothing can take cost
 * nothing however many there are. Its tasks are locked `SKIP LOCKED` (one a heartbeat is
 * placing is passed over), matched in memory by the whole fit rule and written in one
 * statement. Stops when no slot is left or those queues are exhausted.
 */
export async function placePending(
  { db, clock, notifier, kv, metrics }: Pick<ServiceDeps, 'db' | 'clock' | 'notifier' | 'kv' | 'metrics'>,
  batchSize: number,
  maxTasks = Number.POSITIVE_INFINITY,
  via: PlacedVia = 'sweep',
  /** Receives the tasks placed, as written. */
  placed?: TaskRow[],
): Promise<number> {
  const now = clock.now()
  let assigned = 0
  let scanned = 0
  let after: { priority: number; id: string } | undefined
  const placedOn: string[] = []
  const placedTasks: string[] = []
  while (scanned < maxTasks) {
    placedOn.length = 0
    placedTasks.length = 0
    const result = await withTx(db, async (tx) => {
      const pool = await tx
        .select(agentFitColumns)
        .from(agents)
        .where(and(eq(agents.status, 'online'), lt(agents.activeTasks, agents.maxConcurrentTasks)))
        .for('update', { skipLocked: true })
      const none = { placed: 0, heads: [] as { priority: number; id: string }[], noSlots: true }
      if (pool.length === 0) return none
      const shapes = await allShapes(tx)
      const full = new Set(
        (await keysOf(tx, [...new Set(shapes.flatMap((s) => (s.concurrencyKey ? [s.concurrencyKey] : [])))]))
          .filter((k) => keyFull(k.active, k.limit))
          .map((k) => k.key),
      )
      // A shape whose concurrency key is full is not read (its tasks wait for the key).
      const shapeIds = shapes
        .filter((s) => !(s.concurrencyKey && full.has(s.concurrencyKey)))
        .filter((s) => pool.some((a) => meetsRequirements(shapeTask(s), a)))
        .map((s) => s.id)
      const heads = await queueHeads(tx, { shapeIds, agentIds: pool.map((a) => a.id), now, after, limit: batchSize })
      if (heads.length === 0) return { ...none, noSlots: false }
      const batch = await tx
        .select(taskReqColumns)
        .from(tasks)
        .where(
          and(
            inArray(
              tasks.id,
              heads.map((h) => h.id),
            ),
            eq(tasks.status, 'pending'),
          ),
        )
        .orderBy(sql`${tasks.priority} DESC NULLS LAST`, asc(tasks.id))
        .for('update', { skipLocked: true })
      const pairs = matchTasks(batch, pool)
      const rows = await writeAssignments(tx, now, pairs, via, placed !== undefined)
      recordAssignments(metrics, rows, via)
      if (placed) for (const r of rows) if (r.task) placed.push(taskFromJson(r.task))
      placedOn.push(...rows.map((r) => r.agent_id))
      placedTasks.push(...rows.map((r) => r.id))
      const slotsLeft = pool.some((a) => a.activeTasks < a.maxConcurrentTasks)
      return { placed: rows.length, heads, noSlots: !slotsLeft }
    })
    assigned += result.placed
    scanned += result.heads.length
    await changed({ kv }, { tasks: placedTasks, agents: placedOn })
    notifier?.notify(placedOn)
    const last = result.heads.at(-1)
    if (result.noSlots || result.heads.length < batchSize || !last) break
    after = { priority: last.priority, id: last.id }
  }
  return assigned
}
