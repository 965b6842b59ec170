import { and, asc, desc, eq, gt, lt, lte, or, type SQL, sql } from 'drizzle-orm'
import type { Executor, Tx } from '../db/client'
import { rowsOf } from '../db/client'
import { ASSIGN_SET } from '../db/hot'
import { type AgentRow, agents, type Labels, type TaskRow, tasks } from '../db/schema'
import { withTx } from '../db/tx'
import { ApiError } from '../lib/errors'
import type { Metrics } from '../lib/metrics'
import { getAgent } from './agents'
import { changed, type ServiceDeps } from './deps'
import { type PendingReason, taskMoves } from './model'

/**
 * Placement: which agent takes which pending task. The rule (DESIGN.md): a task fits an
 * agent that is online, has a free slot, holds every required capability and matches
 * provider, region, labels and agentId where the task names them. Tasks go by priority
 * (high first), then age; among fitting agents the least loaded wins.
 *
 * Correctness under concurrency comes from row locks, never process memory: the tasks
 * and agents a placement touches are locked (`FOR UPDATE`, `SKIP LOCKED` where another
 * placement may hold them), and one statement writes every assignment of a batch, bumps
 * the agents' load and appends the events.
 */

export type TaskReq = Pick<TaskRow, 'id' | 'reqCapabilities' | 'reqProvider' | 'reqRegion' | 'reqLabels' | 'reqAgentId'>
export type AgentFit = Pick<
  AgentRow,
  'id' | 'status' | 'provider' | 'region' | 'capabilities' | 'labels' | 'maxConcurrentTasks' | 'activeTasks'
>

function labelsContain(have: Labels, want: Labels): boolean {
  for (const [k, v] of Object.entries(want)) if (have[k] !== v) return false
  return true
}

/** The hot-loop form of `misfits(task, agent).length === 0`. */
function fits(task: TaskReq, agent: AgentFit): boolean {
  if (agent.status !== 'online' || agent.activeTasks >= agent.maxConcurrentTasks) return false
  if (task.reqProvider && task.reqProvider !== agent.provider) return false
  if (task.reqRegion && task.reqRegion !== agent.region) return false
  if (task.reqAgentId && task.reqAgentId !== agent.id) return false
  for (const c of task.reqCapabilities) if (!agent.capabilities.includes(c)) return false
  return labelsContain(agent.labels, task.reqLabels)
}

/** Why `agent` cannot take `task` (empty when it can). */
export function misfits(task: TaskReq, agent: AgentFit): string[] {
  const out: string[] = []
  if (agent.status !== 'online') out.push(`agent is ${agent.status}, not online`)
  if (agent.activeTasks >= agent.maxConcurrentTasks) {
    out.push(`agent has no free slot (${agent.activeTasks}/${agent.maxConcurrentTasks})`)
  }
  const missing = task.reqCapabilities.filter((c) => !agent.capabilities.includes(c))
  if (missing.length) out.push(`agent lacks capabilities: ${missing.join(', ')}`)
  if (task.reqProvider && task.reqProvider !== agent.provider) {
    out.push(`task needs provider ${task.reqProvider}, agent is ${agent.provider}`)
  }
  if (task.reqRegion && task.reqRegion !== agent.region) {
    out.push(`task needs region ${task.reqRegion}, agent is in ${agent.region ?? 'no region'}`)
  }
  if (!labelsContain(agent.labels, task.reqLabels)) out.push('agent labels do not match the required labels')
  if (task.reqAgentId && task.reqAgentId !== agent.id) out.push(`task is pinned to agent ${task.reqAgentId}`)
  return out
}

/** SQL: agent row `agents` satisfies the static requirements of a task (capacity and status aside). */
function matchesTaskSql(t: TaskReq) {
  return and(
    sql`${agents.capabilities} @> ${pgTextArray(t.reqCapabilities)}::text[]`,
    t.reqProvider ? eq(agents.provider, t.reqProvider) : undefined,
    t.reqRegion ? eq(agents.region, t.reqRegion) : undefined,
    Object.keys(t.reqLabels).length ? sql`${agents.labels} @> ${JSON.stringify(t.reqLabels)}::jsonb` : undefined,
    t.reqAgentId ? eq(agents.id, t.reqAgentId) : undefined,
  )
}

/** A Postgres text[] literal, one bound parameter whatever the length. */
export function pgTextArray(values: readonly string[]): string {
  return `{${values.map((v) => `"${v.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`).join(',')}}`
}

export interface Assignment {
  taskId: string
  agentId: string
}

export interface AssignedRow {
  id: string
  agent_id: string
  attempt: number
  /** Seconds from the task's creation to this assignment. */
  wait_s: number
}

/** Counts assignments and their create→assigned wait in this process's metrics. */
export function recordAssignments(metrics: Metrics | undefined, rows: AssignedRow[], via: PlacedVia): void {
  if (!metrics || rows.length === 0) return
  metrics.assigned.inc({ via }, rows.length)
  for (const r of rows) metrics.createToAssigned.observe({}, Math.max(0, r.wait_s))
}

/** How a task reached its agent; recorded on the `task.assigned` event. */
export type PlacedVia = 'execute' | 'create' | 'batch' | 'heartbeat' | 'sweep'

/** The columns an assignment sets on task row `t` (one place for every placement path). */
/**
 * The columns an assignment sets on task row `t` (one text for every placement path: the
 * hot statements use it with `$2` as the time; here the time is bound in its place).
 */
const assignSet = (now: Date, agentId: SQL) =>
  sql`${sql.join(
    ASSIGN_SET.split('$2').map((part) => sql.raw(part)),
    sql`${now}`,
  )}, agent_id = ${agentId}`
/** The `task.assigned` event of every row in CTE `upd`. */
const assignEvents = (now: Date, via: PlacedVia) => sql`
      INSERT INTO events (type, agent_id, task_id, data, created_at)
      SELECT 'task.assigned', agent_id, id,
             jsonb_build_object('from', 'pending', 'to', 'assigned', 'attempt', attempt, 'via', ${via}::text), ${now}
        FROM upd ORDER BY id
      RETURNING 1`
const assignReturning = (now: Date) =>
  sql`t.id, t.agent_id, t.attempt, extract(epoch FROM ${now}::timestamptz - t.created_at)::float8 AS wait_s`

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
): Promise<AssignedRow[]> {
  if (pairs.length === 0) return []
  // Two uuid[] parameters: the planner sees their length (unnest's row estimate), so a
  // batch of one joins by primary key instead of scanning the table.
  const taskIds = `{${pairs.map((p) => p.taskId).join(',')}}`
  const agentIds = `{${pairs.map((p) => p.agentId).join(',')}}`
  const [out] = await rowsOf<{ loaded: number; expected: number; rows: AssignedRow[] }>(
    tx,
    sql`
    WITH v AS (
      SELECT * FROM unnest(${taskIds}::uuid[], ${agentIds}::uuid[]) AS v(id, agent_id)
    ), upd AS (
      UPDATE tasks t
         SET ${assignSet(now, sql.raw('v.agent_id'))}
        FROM v
       WHERE t.id = v.id AND t.status = 'pending'
      RETURNING ${assignReturning(now)}
    ), load AS (
      UPDATE agents a SET active_tasks = a.active_tasks + c.n
        FROM (SELECT agent_id, count(*)::int AS n FROM upd GROUP BY agent_id) c
       WHERE a.id = c.agent_id AND a.status = 'online' AND a.active_tasks + c.n <= a.max_concurrent_tasks
      RETURNING a.id
    ), ev AS (${assignEvents(now, via)})
    SELECT (SELECT count(*)::int FROM load) AS loaded,
           (SELECT count(DISTINCT agent_id)::int FROM upd) AS expected,
           coalesce((SELECT json_agg(json_build_object('id', id, 'agent_id', agent_id, 'attempt', attempt, 'wait_s', wait_s)) FROM upd), '[]'::json) AS rows`,
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
export function matchTasks(list: TaskReq[], pool: AgentFit[]): Assignment[] {
  const out: Assignment[] = []
  const byCap = new Map<string, AgentFit[]>()
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
    let best: AgentFit | undefined
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

/**
 * Least loaded first (DESIGN.md). Ties go to the agent with fewer capabilities, which
 * keeps specialised agents (gpu, arm…) free for the tasks only they can take, then to the
 * one with more free slots.
 */
function lessLoaded(a: AgentFit, b: AgentFit): boolean {
  if (a.activeTasks !== b.activeTasks) return a.activeTasks < b.activeTasks
  if (a.capabilities.length !== b.capabilities.length) return a.capabilities.length < b.capabilities.length
  const fa = a.maxConcurrentTasks - a.activeTasks
  const fb = b.maxConcurrentTasks - b.activeTasks
  if (fa !== fb) return fa > fb
  return a.id < b.id
}

const agentFitColumns = {
  id: agents.id,
  status: agents.status,
  provider: agents.provider,
  region: agents.region,
  capabilities: agents.capabilities,
  labels: agents.labels,
  maxConcurrentTasks: agents.maxConcurrentTasks,
  activeTasks: agents.activeTasks,
}

/** `lessLoaded` as SQL ORDER BY terms. */
const leastLoadedOrder = [
  asc(agents.activeTasks),
  asc(sql`cardinality(${agents.capabilities})`),
  desc(sql`${agents.maxConcurrentTasks} - ${agents.activeTasks}`),
  asc(agents.id),
]

/**
 * Locks the least-loaded online agent with a free slot that fits `task`, or none. Prefers
 * an agent no other placement holds; with `wait`, waits for one when all are held.
 */
async function lockBestAgent(tx: Tx, task: TaskReq, wait: boolean): Promise<AgentFit | undefined> {
  const query = () =>
    tx
      .select(agentFitColumns)
      .from(agents)
      .where(and(eq(agents.status, 'online'), lt(agents.activeTasks, agents.maxConcurrentTasks), matchesTaskSql(task)))
      .orderBy(...leastLoadedOrder)
      .limit(1)
  const [free] = await query().for('update', { skipLocked: true })
  if (free || !wait) return free
  const [waited] = await query().for('update')
  return waited
}

/** Why nothing can take `task` now: one line per requirement no online agent meets, or capacity. */
export async function explainNoFit(db: Executor, task: TaskReq): Promise<{ reason: PendingReason; details: string[] }> {
  const has = (cond: ReturnType<typeof sql>) => sql<number>`count(*) FILTER (WHERE ${cond})::int`
  const online = sql`${agents.status} = 'online'`
  const match = matchesTaskSql(task) ?? sql`true`
  const [c] = await db
    .select({
      online: has(online),
      caps: has(sql`${online} AND ${agents.capabilities} @> ${pgTextArray(task.reqCapabilities)}::text[]`),
      provider: has(sql`${online} AND ${task.reqProvider ? eq(agents.provider, task.reqProvider) : sql`true`}`),
      region: has(sql`${online} AND ${task.reqRegion ? eq(agents.region, task.reqRegion) : sql`true`}`),
      labels: has(sql`${online} AND ${agents.labels} @> ${JSON.stringify(task.reqLabels)}::jsonb`),
      pinned: has(sql`${online} AND ${task.reqAgentId ? eq(agents.id, task.reqAgentId) : sql`true`}`),
      fitting: has(sql`${online} AND ${match}`),
      free: has(sql`${online} AND ${match} AND ${agents.activeTasks} < ${agents.maxConcurrentTasks}`),
    })
    .from(agents)
  if (!c) return { reason: 'no_matching_agent', details: ['no agents'] }
  if (c.free > 0) return { reason: 'queued', details: [`${c.free} fitting agent(s) have a free slot`] }
  if (c.fitting > 0) {
    return { reason: 'agents_busy', details: [`all ${c.fitting} fitting online agent(s) are at capacity`] }
  }
  const details: string[] = []
  if (c.online === 0) details.push('no agent is online')
  else {
    if (c.caps === 0) details.push(`no online agent has capabilities: ${task.reqCapabilities.join(', ')}`)
    if (c.provider === 0) details.push(`no online agent on provider ${task.reqProvider}`)
    if (c.region === 0) details.push(`no online agent in region ${task.reqRegion}`)
    if (c.labels === 0) details.push(`no online agent has labels ${JSON.stringify(task.reqLabels)}`)
    if (c.pinned === 0) details.push(`pinned agent ${task.reqAgentId} is not online`)
    if (details.length === 0) details.push('no online agent meets all requirements together')
  }
  return { reason: 'no_matching_agent', details }
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
    const [task] = await tx.select().from(tasks).where(eq(tasks.id, taskId)).for('update')
    if (!task) throw new ApiError('not_found', `No task with id ${taskId}.`)
    if (task.status !== 'pending') {
      throw new ApiError('invalid_transition', `The task is ${task.status}; only a pending task can be placed.`, {
        allowed: [...taskMoves[task.status]],
      })
    }
    let target: AgentFit | undefined
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
 * scheduled (scheduledAt ahead, never ran) · backoff (retry delay ahead) · no_matching_agent ·
 * agents_busy (fitting agents all full) · queued (a fitting agent has a free slot; the next
 * placement takes it).
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
  const rows = await rowsOf<{ id: string; free: boolean; fitting: boolean }>(
    db,
    sql`
    SELECT t.id,
      EXISTS (SELECT 1 FROM agents a WHERE a.status = 'online' AND ${fitsSql} AND a.active_tasks < a.max_concurrent_tasks) AS free,
      EXISTS (SELECT 1 FROM agents a WHERE a.status = 'online' AND ${fitsSql}) AS fitting
    FROM tasks t WHERE t.id = ANY(${`{${probes.join(',')}}`}::uuid[])`,
  )
  const reasonOf = new Map(
    rows.map((r) => [r.id, (r.free ? 'queued' : r.fitting ? 'agents_busy' : 'no_matching_agent') as PendingReason]),
  )
  for (const ids of byKind.values()) {
    const reason = reasonOf.get(ids[0] as string)
    if (reason) for (const id of ids) out.set(id, reason)
  }
  return out
}

/** The fit rule between aliases `a` (agents) and `t` (tasks), for set-based queries. */
export const fitsSql = sql.raw(`(a.capabilities @> t.req_capabilities
  AND (t.req_provider IS NULL OR a.provider = t.req_provider)
  AND (t.req_region IS NULL OR a.region = t.req_region)
  AND a.labels @> t.req_labels
  AND (t.req_agent_id IS NULL OR a.id = t.req_agent_id))`)

const taskReqColumns = {
  id: tasks.id,
  reqCapabilities: tasks.reqCapabilities,
  reqProvider: tasks.reqProvider,
  reqRegion: tasks.reqRegion,
  reqLabels: tasks.reqLabels,
  reqAgentId: tasks.reqAgentId,
}

/**
 * Places due pending tasks (the sweep's last step): batches of up to `batchSize` tasks in
 * queue order, each batch in its own transaction with its tasks and the free online agents
 * locked `SKIP LOCKED` (so concurrent sweeps, executes and heartbeats take disjoint rows),
 * matched in memory and written in one statement. Stops when no slot is left or the
 * queue is exhausted; tasks nothing can take are passed over, never blocking the rest.
 */
export async function placePending(
  { db, clock, notifier, kv, metrics }: Pick<ServiceDeps, 'db' | 'clock' | 'notifier' | 'kv' | 'metrics'>,
  batchSize: number,
  maxTasks = Number.POSITIVE_INFINITY,
  via: PlacedVia = 'sweep',
): Promise<number> {
  const now = clock.now()
  let assigned = 0
  let scanned = 0
  let after: { priority: number; id: string } | undefined
  const pending: string[] = []
  const placedTasks: string[] = []
  while (scanned < maxTasks) {
    pending.length = 0
    placedTasks.length = 0
    const result = await withTx(db, async (tx) => {
      const pool = await tx
        .select(agentFitColumns)
        .from(agents)
        .where(and(eq(agents.status, 'online'), lt(agents.activeTasks, agents.maxConcurrentTasks)))
        .for('update', { skipLocked: true })
      if (pool.length === 0) return { placed: 0, batch: [] as { priority: number; id: string }[], noSlots: true }
      const batch = await tx
        .select({ ...taskReqColumns, priority: tasks.priority })
        .from(tasks)
        .where(
          and(
            eq(tasks.status, 'pending'),
            lte(tasks.availableAt, now),
            after
              ? or(lt(tasks.priority, after.priority), and(eq(tasks.priority, after.priority), gt(tasks.id, after.id)))
              : undefined,
          ),
        )
        // Spelled as the queue's index has it (DESC NULLS LAST), or Postgres sorts the queue.
        .orderBy(sql`${tasks.priority} DESC NULLS LAST`, asc(tasks.id))
        .limit(batchSize)
        .for('update', { skipLocked: true })
      const pairs = matchTasks(batch, pool)
      const rows = await writeAssignments(tx, now, pairs, via)
      recordAssignments(metrics, rows, via)
      pending.push(...rows.map((r) => r.agent_id))
      placedTasks.push(...rows.map((r) => r.id))
      const slotsLeft = pool.some((a) => a.activeTasks < a.maxConcurrentTasks)
      return { placed: rows.length, batch, noSlots: !slotsLeft }
    })
    assigned += result.placed
    scanned += result.batch.length
    await changed({ kv }, { tasks: placedTasks, agents: pending })
    notifier?.notify(pending)
    const last = result.batch.at(-1)
    if (result.noSlots || result.batch.length < batchSize || !last) break
    after = { priority: last.priority, id: last.id }
  }
  return assigned
}
