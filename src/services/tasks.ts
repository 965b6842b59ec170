import { and, asc, desc, eq, gt, gte, ilike, inArray, lt, sql } from 'drizzle-orm'
import { v7 as uuidv7 } from 'uuid'
import { type Db, type Executor, rowsOf, type Tx } from '../db/client'
import { bind } from '../db/fragments'
import {
  type AssignedHandoff,
  applyReports,
  fillNew,
  hot,
  insertTasks as insertTasksStatement,
  type ReportRow,
  type ReportVerdict,
  taskFromJson,
  type VerdictRow,
} from '../db/hot'
import { queries } from '../db/prepared'
import { lockTask } from '../db/rows'
import { type TaskRow, tasks } from '../db/schema'
import { withTx } from '../db/tx'
import { releaseKeysSql, upsertKeysSql } from '../domain/concurrency'
import type { Labels, Principal, Provider, ReportStatus, TaskStatus } from '../domain/model'
import { releaseSlots, requeueSet } from '../domain/sql'
import { allowedMoves, allowedReports, LOST_RUN_CODES, moveFor, type TaskMove } from '../domain/task-states'
import { ApiError } from '../lib/errors'
import { ifMatchOk } from '../lib/etag'
import type { Outcome } from '../lib/group-commit'
import { keys, reviveRow } from '../lib/kv'
import { describeError } from '../lib/logger'
import { decodeCursor, page, type SortOrder } from '../lib/pagination'
import type { Created, CreateEntry, IdempotencyKey } from './create-writer'
import { changed, type ServiceDeps } from './deps'
import { recordEvents } from './events'
import { judgeStreaks } from './fleet'
import { recordAssignments } from './placement'
import { advanceRollouts } from './rollouts'
import { ensureShapes } from './shapes'

export type { ReportRow, ReportVerdict, VerdictRow }

export interface TaskInput {
  name: string
  type: string
  payload: unknown
  priority: number
  requirements: {
    capabilities: string[]
    provider?: Provider | null
    region?: string | null
    labels: Labels
    agentId?: string | null
  }
  maxAttempts: number
  timeoutSeconds: number
  scheduledAt?: Date | null
  /** At most `limit` tasks of `key` assigned or running at once (src/domain/concurrency.ts). */
  concurrency?: { key: string; limit: number } | null
  /** The tenant fair share alternates between (else the concurrency key). */
  fairnessKey?: string | null
}

function fields(input: TaskInput, now: Date) {
  const scheduledAt = input.scheduledAt ?? null
  return {
    name: input.name,
    type: input.type,
    payload: input.payload ?? {},
    priority: input.priority,
    reqCapabilities: [...new Set(input.requirements.capabilities)],
    reqProvider: input.requirements.provider ?? null,
    reqRegion: input.requirements.region ?? null,
    reqLabels: input.requirements.labels,
    reqAgentId: input.requirements.agentId ?? null,
    maxAttempts: input.maxAttempts,
    timeoutSeconds: input.timeoutSeconds,
    scheduledAt,
    availableAt: scheduledAt && scheduledAt > now ? scheduledAt : now,
    concurrencyKey: input.concurrency?.key ?? null,
    concurrencyLimit: input.concurrency?.limit ?? null,
    fairnessKey: input.fairnessKey ?? null,
  }
}

/** The 409 for a move the state table does not allow, with the moves it does. */
function refuse(task: TaskRow, what: string): never {
  throw new ApiError('invalid_transition', `The task is ${task.status}; ${what}.`, {
    allowed: allowedMoves(task.status),
  })
}

/**
 * A rollout's task is its rollout's to move (docs/rollouts.md): edited or retried by hand it
 * would run outside the rollout's maxConcurrency and budget, perhaps after the rollout ended.
 */
function refuseRolloutTask(task: TaskRow, what: string): void {
  if (!task.rolloutId) return
  throw new ApiError(
    'conflict',
    `The task belongs to rollout ${task.rolloutId}; it cannot be ${what} by hand: use POST /api/v1/rollouts/${task.rolloutId}/retry (or cancel).`,
    { rolloutId: task.rolloutId },
  )
}

function checkVersion(row: TaskRow, ifMatch: string | undefined) {
  if (!ifMatchOk(ifMatch, row.version)) {
    throw new ApiError('precondition_failed', `If-Match does not match the current version ("${row.version}").`)
  }
}

/** Gives the slot of a live task that left `agentId` back, and its concurrency key's. */
async function releaseSlot(tx: Tx, agentId: string | null, key: string | null, now: Date) {
  if (agentId) {
    await tx.execute(
      bind(`WITH left_agent AS (SELECT {{agentId}}::uuid AS agent_id) ${releaseSlots('left_agent')}`, { agentId }),
    )
  }
  if (key) {
    await tx.execute(
      bind(
        `WITH left_task AS (SELECT {{key}}::text AS concurrency_key) ${releaseKeysSql('left_task', 'true', '{{now}}')}`,
        {
          key,
          now,
        },
      ),
    )
  }
}

/** Moves task `id` back to pending by move `m` (src/domain/sql.ts), returning the task as it is then. */
async function requeue(tx: Tx, id: string, m: TaskMove, now: Date): Promise<TaskRow> {
  const [row] = await rowsOf<{ task: Record<string, unknown> }>(
    tx,
    bind(
      `UPDATE tasks t SET ${requeueSet(m, 't', '{{now}}', '{{now}}')} WHERE t.id = {{id}} RETURNING to_jsonb(t) AS task`,
      {
        now,
        id,
      },
    ),
  )
  if (!row) throw new ApiError('not_found', `No task with id ${id}.`)
  return taskFromJson(row.task)
}

/** JSON with object keys sorted, so equal requests serialise equally. */
function canonical(v: unknown): string {
  if (v instanceof Date) return JSON.stringify(v.toISOString())
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`
  if (v && typeof v === 'object') {
    const entries = Object.entries(v).filter(([, x]) => x !== undefined)
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonical(x)}`).join(',')}}`
  }
  return JSON.stringify(v ?? null)
}

/** What a create request asks for, as a hash: defaults applied, so leaving one out equals sending it. */
async function requestHash(input: TaskInput): Promise<string> {
  const f = fields(input, new Date(0))
  const normalised = {
    ...f,
    reqCapabilities: [...f.reqCapabilities].sort(), // a set: its order means nothing
    availableAt: undefined, // derived from the time of the call, not from the request
    // Left out when not asked for: requests made before flow control hash as they did.
    concurrencyKey: f.concurrencyKey ?? undefined,
    concurrencyLimit: f.concurrencyLimit ?? undefined,
    fairnessKey: f.fairnessKey ?? undefined,
  }
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(canonical(normalised)))
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('')
}

/**
 * Creates a task. With an idempotency key, a repeat of the same request by the same caller
 * returns the task the first call made (`created: false`) instead of a second one, also
 * when two such calls race; the same key with a different request is refused (422
 * `idempotency_key_reused`, as Stripe does), and other callers' keys are never seen.
 * Creates that arrive while others are being written are written with them (`creates`,
 * src/services/create-writer.ts): one statement inserts them all with their events, one
 * more places them; alone (Workers, scripts), a create is a batch of one.
 */
export async function createTask(
  deps: ServiceDeps,
  input: TaskInput,
  idempotency?: IdempotencyKey,
): Promise<{ task: TaskRow; created: boolean }> {
  const hash = idempotency ? await requestHash(input) : null
  const entry: CreateEntry = { idempotency, hash, values: insertValues(input, deps.clock.now(), idempotency, hash) }
  if (deps.creates) return deps.creates.create(entry)
  const [outcome] = await writeCreates(deps, [entry])
  if (!outcome) throw new Error('a create answered nothing')
  if ('error' in outcome) throw outcome.error
  return outcome.value
}

/**
 * Writes concurrent single creates together: one statement inserts them (`insertTasks`,
 * each item on its own: a key reused for a different request fails that create alone),
 * then one places what it can (`placeNew`: best effort, the task is saved already; if it
 * fails, the tasks stay pending for the next heartbeat or sweep, and each client still gets
 * its 201, since answering an error would invite a duplicate). One outcome per entry.
 */
export async function writeCreates(deps: ServiceDeps, entries: CreateEntry[]): Promise<Outcome<Created>[]> {
  const written = await insertBatch(deps.db, deps.clock.now(), entries, false)
  const outcomes = await Promise.all(
    entries.map(async (e, i): Promise<Outcome<Created>> => {
      const made = written.made.get(e.values.id)
      if (made) return { value: { task: made, created: true } }
      const reused = written.reused.get(i)
      if (reused && e.idempotency) return { error: keyReused(e.idempotency.key, reused) }
      const prior = written.prior.get(i)
      if (prior) return { value: { task: prior, created: false } }
      if (!e.idempotency)
        return { error: new Error('the insert wrote nothing for a create without an idempotency key') }
      // Its key was taken meanwhile, by another request or an earlier create of this batch.
      try {
        return { value: { task: await existingFor(deps.db, e.idempotency, e.hash), created: false } }
      } catch (error) {
        return { error }
      }
    }),
  )
  const placed = await placeNewSafely(deps, [...written.made.values()], 'create')
  return outcomes.map((o) =>
    'value' in o && o.value.created ? { value: { ...o.value, task: placed.get(o.value.task.id) ?? o.value.task } } : o,
  )
}

/** The 422 for an idempotency key that made task `taskId` from a different request. */
function keyReused(key: string, taskId: string, path = 'body.idempotencyKey'): ApiError {
  return new ApiError(
    'idempotency_key_reused',
    `Idempotency key "${key}" was used for a different request (task ${taskId}); use a new key for a new task.`,
    { errors: [{ path, message: 'already used for a different request' }], taskId },
  )
}

/**
 * Inserts the batch (`insertTasks` in src/db/hot.ts): the tasks made (by id), the tasks
 * earlier requests made with an item's key (by item), and the items whose key was used for
 * a different request (by item: the task it made).
 */
async function insertBatch(db: Db, now: Date, entries: CreateEntry[], allOrNothing: boolean) {
  const [row] = await hot<{
    made: Record<string, unknown>[]
    prior: (Record<string, unknown> & { _i: number })[]
    reused: { i: number; id: string }[]
  }>(db, insertTasksStatement, [JSON.stringify(entries.map((p, i) => ({ ...p.values, i }))), now, allOrNothing])
  if (!row) throw new Error('the insert of a batch answered no row')
  return {
    made: new Map(row.made.map((t) => [String(t.id), taskFromJson(t)])),
    prior: new Map(row.prior.map((t) => [t._i, taskFromJson(t)])),
    reused: new Map(row.reused.map((r) => [r.i, r.id])),
  }
}

/**
 * Places new tasks at once where fitting agents have free slots (`fillNew` in
 * src/db/hot.ts: one statement, agents taken `SKIP LOCKED`, filled from the queue in its
 * order, so new tasks never jump older or more urgent ones). Best effort: on failure the
 * tasks stay pending (the next heartbeat or sweep places them). Returns the tasks it
 * assigned, by id (older queued ones among them).
 */
async function placeNewSafely(
  deps: ServiceDeps,
  made: TaskRow[],
  via: 'create' | 'batch',
): Promise<Map<string, TaskRow>> {
  try {
    const placed = await placeNew(deps, made, via)
    if (placed.length === 0) await changed(deps, {})
    return new Map(placed.map((t) => [t.id, t]))
  } catch (err) {
    deps.logger?.warn('placing new tasks at once failed; the next heartbeat or sweep will place them', {
      error: describeError(err),
    })
    if (made.length > 0) await changed(deps, {}).catch(() => {})
    return new Map()
  }
}

/**
 * What a long poll of each agent given work answers when this placement wakes it (the
 * agent as the statement left it, the tasks it was given), so it need not read them again.
 */
function handoffs(agents: Record<string, unknown>[], rows: Record<string, unknown>[]): Map<string, AssignedHandoff> {
  const out = new Map<string, AssignedHandoff>()
  for (const agent of agents) out.set(String(agent.id), { agent, tasks: [] })
  for (const { wait_s: _, ...task } of rows) out.get(String(task.agent_id))?.tasks.push(task)
  return out
}

/** Most agents one placement after creates takes (each has at least one free slot). */
const PLACE_NEW_AGENTS = 1000

async function placeNew(deps: ServiceDeps, made: TaskRow[], via: 'create' | 'batch'): Promise<TaskRow[]> {
  const now = deps.clock.now()
  const due = made.filter((t) => t.status === 'pending' && t.availableAt <= now)
  if (due.length === 0) return []
  const shapes = new Set<string>()
  const pinned = new Set<string>()
  for (const t of due) {
    if (t.reqAgentId) pinned.add(t.reqAgentId.toLowerCase())
    else if (t.shape) shapes.add(t.shape)
  }
  const [out] = await hot<{
    rows: (Record<string, unknown> & { wait_s: number })[]
    agents: Record<string, unknown>[]
  }>(deps.db, fillNew, [
    now,
    `{${[...shapes].sort().join(',')}}`,
    `{${[...pinned].sort().join(',')}}`,
    Math.min(due.length, PLACE_NEW_AGENTS),
    via,
  ])
  const rows = out?.rows ?? []
  if (rows.length === 0) return []
  const placed = rows.map(taskFromJson)
  recordAssignments(
    deps.metrics,
    rows.map((r) => ({ id: String(r.id), agent_id: String(r.agent_id), attempt: Number(r.attempt), wait_s: r.wait_s })),
    via,
  )
  const agentIds = [...new Set(placed.map((t) => t.agentId as string))]
  await changed(deps, { agents: agentIds, tasks: placed.map((t) => t.id) })
  deps.notifier?.notify(agentIds, handoffs(out?.agents ?? [], rows))
  return placed
}

/** The task an idempotency key made, or the 422 when it was made by another request. */
async function existingFor(db: Executor, idempotency: IdempotencyKey, hash: string | null): Promise<TaskRow> {
  const [existing] = await db
    .select()
    .from(tasks)
    .where(and(eq(tasks.idempotencyOwner, idempotency.owner), eq(tasks.idempotencyKey, idempotency.key)))
  if (!existing) throw new ApiError('conflict', 'The idempotency key is in use by a task being deleted; try again.')
  if (existing.idempotencyHash !== hash) throw keyReused(idempotency.key, existing.id)
  return existing
}

/** The insert's parameters (see `insertTasks` in src/db/hot.ts). */
function insertValues(input: TaskInput, now: Date, idempotency: IdempotencyKey | undefined, hash: string | null) {
  const f = fields(input, now)
  return {
    id: uuidv7(),
    name: f.name,
    type: f.type,
    payload: JSON.stringify(f.payload),
    priority: f.priority,
    req_capabilities: f.reqCapabilities,
    req_provider: f.reqProvider,
    req_region: f.reqRegion,
    req_labels: f.reqLabels,
    req_agent_id: f.reqAgentId,
    max_attempts: f.maxAttempts,
    timeout_seconds: f.timeoutSeconds,
    scheduled_at: f.scheduledAt,
    available_at: f.availableAt,
    idempotency_key: idempotency?.key ?? null,
    idempotency_owner: idempotency?.owner ?? null,
    idempotency_hash: hash,
    concurrency_key: f.concurrencyKey,
    concurrency_limit: f.concurrencyLimit,
    fairness_key: f.fairnessKey,
  }
}

/**
 * Creates up to 1,000 tasks (MAX_BATCH_TASKS, src/routes/schemas.ts) in one statement (one
 * transaction: a key reused for a different request refuses the whole batch, nothing
 * written), then places what it can in one more (`placeNew`, as a single create does).
 * Items with an idempotency key the caller used before come back as the tasks those keys
 * made.
 */
export async function createTasks(
  deps: ServiceDeps,
  items: { input: TaskInput; idempotencyKey?: string }[],
  owner: string,
): Promise<{ tasks: TaskRow[]; created: number }> {
  const { db, clock } = deps
  const now = clock.now()
  const prepared: CreateEntry[] = await Promise.all(
    items.map(async ({ input, idempotencyKey }) => {
      const idempotency = idempotencyKey ? { key: idempotencyKey, owner } : undefined
      const hash = idempotency ? await requestHash(input) : null
      return { idempotency, hash, values: insertValues(input, now, idempotency, hash) }
    }),
  )
  // One key twice in the batch: the same request is one task; different ones refuse it all.
  const firstWithKey = new Map<string, number>()
  for (const [i, p] of prepared.entries()) {
    if (!p.idempotency) continue
    const first = firstWithKey.get(p.idempotency.key)
    if (first === undefined) firstWithKey.set(p.idempotency.key, i)
    else if (prepared[first]?.hash !== p.hash) {
      throw new ApiError(
        'idempotency_key_reused',
        `Idempotency key "${p.idempotency.key}" is used for two different tasks of the batch (items ${first} and ${i}).`,
        { errors: [{ path: `body.tasks.${i}.idempotencyKey`, message: 'already used for a different request' }] },
      )
    }
  }
  const written = await insertBatch(db, now, prepared, true)
  const [reused] = written.reused
  if (reused) {
    const [i, taskId] = reused
    throw keyReused(prepared[i]?.idempotency?.key ?? '', taskId, `body.tasks.${i}.idempotencyKey`)
  }
  const out: TaskRow[] = []
  for (const [i, p] of prepared.entries()) {
    const task = written.made.get(p.values.id) ?? written.prior.get(i)
    if (task) out.push(task)
    else if (p.idempotency) {
      // Its key was taken by another request (or an earlier item of this batch) meanwhile.
      try {
        out.push(await existingFor(db, p.idempotency, p.hash))
      } catch (err) {
        if (err instanceof ApiError && err.code === 'idempotency_key_reused') {
          throw new ApiError('idempotency_key_reused', err.detail, {
            ...err.extras,
            errors: [{ path: `body.tasks.${i}.idempotencyKey`, message: 'already used for a different request' }],
          })
        }
        throw err
      }
    } else throw new Error('batch insert wrote nothing for an item without an idempotency key')
  }
  if (written.made.size === 0) return { tasks: out, created: 0 }
  // The answer shows the tasks as placement wrote them (older queued tasks it placed too are not in it).
  const placed = await placeNewSafely(deps, [...written.made.values()], 'batch')
  return { tasks: out.map((t) => placed.get(t.id) ?? t), created: written.made.size }
}

export async function getTask(deps: Pick<ServiceDeps, 'db' | 'kv' | 'config'>, id: string): Promise<TaskRow> {
  const { db, kv } = deps
  const load = async () => (await queries(db).taskById.execute({ id }))[0]
  const row = kv
    ? await kv.cached(keys.task(id), deps.config.cacheTtlSeconds * 1000, load, reviveRow<TaskRow>)
    : await load()
  if (!row) throw new ApiError('not_found', `No task with id ${id}.`)
  return row
}

export interface TaskFilters {
  status?: TaskStatus[]
  agentId?: string
  type?: string
  priority?: number
  /** A prefix of the name, any case; searched among the newest NAME_SEARCH_WINDOW tasks only. */
  name?: string
  limit: number
  cursor?: string
  order: SortOrder
}

/**
 * How many of the newest tasks a name search reads. Names have no index, on purpose (every
 * index is written again on each status change), so the search is bounded instead: it
 * walks the primary key from the newest task down to the NAME_SEARCH_WINDOW-th, whatever
 * the table's size.
 */
export const NAME_SEARCH_WINDOW = 10_000

/** A name prefix for LIKE: its wildcards and the escape character taken literally. */
const likePrefix = (s: string) => `${s.replace(/[\\%_]/g, (c) => `\\${c}`)}%`

export async function listTasks(db: Db, f: TaskFilters) {
  const after = decodeCursor(f.cursor, f.order)
  // Ids are UUIDv7 (creation order): the newest N tasks are those from the N-th newest id up
  // (every task, when there are fewer).
  const newest = sql`coalesce((SELECT id FROM ${tasks} ORDER BY id DESC OFFSET ${NAME_SEARCH_WINDOW - 1} LIMIT 1),
    '00000000-0000-0000-0000-000000000000'::uuid)`
  const rows = await db
    .select()
    .from(tasks)
    .where(
      and(
        f.status?.length ? inArray(tasks.status, f.status) : undefined,
        f.agentId ? eq(tasks.agentId, f.agentId) : undefined,
        f.type ? eq(tasks.type, f.type) : undefined,
        f.priority ? eq(tasks.priority, f.priority) : undefined,
        f.name ? and(gte(tasks.id, newest), ilike(tasks.name, likePrefix(f.name))) : undefined,
        after ? (f.order === 'asc' ? gt(tasks.id, after) : lt(tasks.id, after)) : undefined,
      ),
    )
    .orderBy(f.order === 'asc' ? asc(tasks.id) : desc(tasks.id))
    .limit(f.limit + 1)
  return page(rows, f.limit, f.order)
}

export async function updateTask(deps: ServiceDeps, id: string, input: TaskInput, ifMatch?: string) {
  const { db, clock } = deps
  const now = clock.now()
  const out = await withTx(db, async (tx) => {
    const current = await lockTask(tx, id)
    checkVersion(current, ifMatch)
    refuseRolloutTask(current, 'edited')
    if (current.status !== 'pending') refuse(current, 'only a pending task can be edited')
    const next = fields(input, now)
    // Editing a task waiting out a retry backoff does not cut the backoff short.
    if (current.attempt > 0 && current.availableAt > next.availableAt) next.availableAt = current.availableAt
    const [row] = await tx
      .update(tasks)
      .set({ ...next, version: sql`${tasks.version} + 1`, updatedAt: now })
      .where(eq(tasks.id, id))
      .returning()
    if (!row) throw new ApiError('not_found', `No task with id ${id}.`)
    await ensureShapes(tx, [id], now) // its requirements may have changed
    if (row.concurrencyKey) {
      await tx.execute(
        bind(
          upsertKeysSql(
            '(SELECT 0 AS i, {{key}}::text AS concurrency_key, {{limit}}::int AS concurrency_limit) x',
            '{{now}}',
          ),
          { key: row.concurrencyKey, limit: row.concurrencyLimit, now },
        ),
      )
    }
    await recordEvents(tx, now, [{ type: 'task.updated', taskId: id, data: { version: row.version } }])
    return row
  })
  await changed(deps, { tasks: [id] })
  return out
}

export async function deleteTask(deps: ServiceDeps, id: string, ifMatch?: string) {
  const { db, clock } = deps
  const now = clock.now()
  const agentId = await withTx(db, async (tx) => {
    const current = await lockTask(tx, id)
    checkVersion(current, ifMatch)
    if (current.status === 'running') refuse(current, 'cancel it before deleting it')
    if (current.status === 'assigned') await releaseSlot(tx, current.agentId, current.concurrencyKey, now)
    await tx.delete(tasks).where(eq(tasks.id, id))
    await recordEvents(tx, now, [
      { type: 'task.deleted', taskId: id, agentId: current.agentId, data: { status: current.status } },
    ])
    return current.agentId
  })
  await changed(deps, { tasks: [id], agents: [agentId] })
}

export interface StatusReport {
  status: ReportStatus
  attempt: number
  progress?: number
  result?: unknown
  error?: { code?: string; message: string }
}

export interface TaskReport extends StatusReport {
  taskId: string
}

export interface ReportOutcome {
  report: TaskReport
  verdict: ReportVerdict
  /**
   * The task after the report (or as it is, when refused); absent when not found. Unless
   * asked whole, only its id, agent, status, attempt and run times are filled in.
   */
  task?: TaskRow
}

/**
 * Applies agents' reports on tasks, set-based (`applyReports` in src/db/hot.ts: one
 * statement per round, no explicit transaction). Fenced: with `reporter` (an agent's id),
 * only reports on tasks that agent holds, for the task's current attempt, apply; anything
 * else is `stale_attempt`, so a late report from an earlier attempt or a lost agent cannot
 * overwrite a newer one. Several reports on one task are applied in the order given (a
 * round for each: running, then completed). One refused report never fails the others.
 */
export async function applyTaskReports(
  deps: ServiceDeps,
  reporter: string | null,
  reports: TaskReport[],
  /** The tasks whole in the outcomes (else only id, agent, status, attempt and run times). */
  whole = false,
  /**
   * Runs the last round in a statement of the caller's (the heartbeat's, so reports and
   * beat are one statement); gets the rows and returns the verdicts.
   */
  last?: (rows: ReportRow[]) => Promise<VerdictRow[]>,
): Promise<ReportOutcome[]> {
  const { db, clock } = deps
  const outcomes = new Array<ReportOutcome>(reports.length)
  // One row per task per round. "running" directly followed by an end of the same attempt
  // is one row (`started`): one update of the task instead of two, and one event, its end
  // with `started: true` (a progress event the running report would have made on an already running task is not).
  type Row = { at: number[]; report: TaskReport; started: boolean }
  const rounds: Row[][] = []
  const seen = new Map<string, number>()
  // Ids compare as strings here: one spelling per task, or two rows could name one task.
  const list = reports.map((r) => ({ ...r, taskId: r.taskId.toLowerCase() }))
  for (let i = 0; i < list.length; i++) {
    const r = list[i] as TaskReport
    const next = list[i + 1]
    // Only an end that a running task may always reach (cancelled needs a prior cancel request,
    // which an assigned task never has: judged merged, both reports would be refused).
    const merge =
      r.status === 'running' &&
      next?.taskId === r.taskId &&
      next.attempt === r.attempt &&
      (next.status === 'completed' || next.status === 'failed')
    const row: Row = merge
      ? { at: [i, i + 1], report: { ...next, progress: r.progress }, started: true }
      : { at: [i], report: r, started: false }
    if (merge) i++
    const k = seen.get(r.taskId) ?? 0
    seen.set(r.taskId, k + 1)
    const round = rounds[k] ?? []
    round.push(row)
    rounds[k] = round
  }
  if (rounds.length === 0 && last) await last([])
  const touched = { tasks: new Set<string>(), agents: new Set<string>() }
  // Rollouts whose tasks the reports moved: advanced after them, in this request.
  const rolloutIds = new Set<string>()
  // Agents whose reports ended attempts failed (not lost): their streaks are judged after.
  const failedOn = new Set<string>()
  for (const [n, round] of rounds.entries()) {
    const payload = round.map(
      ({ report: r, started }, i): ReportRow => ({
        i,
        task_id: r.taskId,
        agent_id: reporter,
        attempt: r.attempt,
        status: r.status,
        started,
        progress: r.progress ?? null,
        result: r.result ?? null,
        has_result: r.result !== undefined,
        error:
          r.status === 'failed'
            ? { code: r.error?.code ?? 'failed', message: r.error?.message ?? 'failed' }
            : (r.error ?? null),
        lost_cap: deps.config.maxLostCount,
      }),
    )
    const verdicts =
      last && n === rounds.length - 1
        ? await last(payload)
        : ((
            await hot<{ reports: VerdictRow[] }>(db, applyReports, [
              JSON.stringify(payload),
              clock.now(),
              `{${payload.map((r) => r.task_id).join(',')}}`,
              whole,
            ])
          )[0]?.reports ?? [])
    for (const v of verdicts) {
      const task = v.task ? taskFromJson(v.task) : undefined
      for (const at of round[v.i]?.at ?? []) {
        outcomes[at] = { report: reports[at] as TaskReport, verdict: v.verdict, ...(task ? { task } : {}) }
      }
      if (v.verdict === 'ok' && task) {
        touched.tasks.add(task.id)
        if (task.rolloutId) rolloutIds.add(task.rolloutId)
        if (task.agentId) touched.agents.add(task.agentId)
        if (v.holder) touched.agents.add(v.holder)
        const code = round[v.i]?.report.error?.code
        if (task.status === 'failed' && v.holder && !(LOST_RUN_CODES as readonly string[]).includes(code ?? '')) {
          failedOn.add(v.holder)
        }
        if (task.finishedAt && task.startedAt && task.status !== 'running') {
          deps.metrics?.runDuration.observe(
            { status: task.status },
            (task.finishedAt.getTime() - task.startedAt.getTime()) / 1000,
          )
        }
      }
    }
  }
  if (touched.tasks.size) await changed(deps, { tasks: touched.tasks, agents: touched.agents })
  if (rolloutIds.size) await advanceRollouts(deps, rolloutIds)
  if (failedOn.size) await judgeStreaks(deps, failedOn)
  return outcomes
}

/**
 * An agent's report on one task (PATCH /tasks/{id}/status): `applyTaskReports` for one
 * report, its refusal told as the matching problem. Repeating the report that ended the
 * task is answered with the task, unchanged.
 */
export async function reportTaskStatus(deps: ServiceDeps, id: string, by: Principal, report: StatusReport) {
  const reporter = by.role === 'agent' ? (by.agentId ?? null) : null
  const [out] = await applyTaskReports(deps, reporter, [{ ...report, taskId: id }], true)
  const task = out?.task
  if (!out || !task || out.verdict === 'not_found') throw new ApiError('not_found', `No task with id ${id}.`)
  if (out.verdict === 'ok' || out.verdict === 'repeat') return task
  if (out.verdict === 'stale_attempt') {
    if (reporter && task.agentId !== reporter) {
      throw new ApiError('stale_attempt', 'This agent does not hold the task (it was requeued or reassigned).', {
        attempt: task.attempt,
      })
    }
    throw new ApiError(
      'stale_attempt',
      `Attempt ${report.attempt} is not the task's current attempt ${task.attempt}.`,
      {
        attempt: task.attempt,
      },
    )
  }
  throw new ApiError(
    'invalid_transition',
    `A ${task.status} task cannot be reported ${report.status}${
      report.status === 'cancelled' && task.status === 'running' ? ' (no cancel was requested)' : ''
    }.`,
    { allowed: allowedReports(task) },
  )
}

/**
 * Cancels a task, by the state table's `cancel` moves: pending or assigned ones end at once
 * (`accepted: false`), as does a failed or timed-out one still waiting for its automatic
 * retry; a running one gets `cancelRequested` and ends when its agent reports it cancelled
 * (`accepted: true`).
 */
export async function cancelTask(deps: ServiceDeps, id: string): Promise<{ task: TaskRow; accepted: boolean }> {
  const { db, clock, notifier } = deps
  const now = clock.now()
  const out = await withTx(db, async (tx) => {
    const task = await lockTask(tx, id)
    if (task.status === 'running' && task.cancelRequested) return { task, accepted: true }
    const m = moveFor(task, 'cancel', 'staff')
    if (!m) refuse(task, 'it can no longer be cancelled')
    if (m.to === 'running') {
      const [row] = await tx
        .update(tasks)
        .set({ cancelRequested: true, cancelRequestedAt: now, version: sql`${tasks.version} + 1`, updatedAt: now })
        .where(eq(tasks.id, id))
        .returning()
      await recordEvents(tx, now, [
        { type: m.event, taskId: id, agentId: task.agentId, data: { attempt: task.attempt } },
      ])
      return { task: row ?? task, accepted: true }
    }
    if (m.slot === 'release') await releaseSlot(tx, task.agentId, task.concurrencyKey, now)
    const [row] = await tx
      .update(tasks)
      .set({
        status: m.to,
        autoRetry: false,
        // A task called off while waiting for its retry keeps the time its last run ended.
        finishedAt: m.name === 'cancel_retry' ? task.finishedAt : now,
        version: sql`${tasks.version} + 1`,
        updatedAt: now,
      })
      .where(eq(tasks.id, id))
      .returning()
    await recordEvents(tx, now, [
      { type: m.event, taskId: id, agentId: task.agentId, data: { from: task.status, to: m.to } },
    ])
    return { task: row ?? task, accepted: false }
  })
  await changed(deps, { tasks: [id], agents: [out.task.agentId] })
  // The agent learns of the cancel request at once if it is long-polling.
  if (out.accepted && out.task.agentId) notifier?.notify([out.task.agentId])
  // A rollout's target follows its task at once (a cancelled one frees its slot in flight).
  if (out.task.rolloutId && !out.accepted) await advanceRollouts(deps, [out.task.rolloutId])
  return out
}

/**
 * Puts a failed, cancelled or timed-out task back to pending by hand. The retry budget
 * starts afresh (`failures` and `lostCount` reset); `attempt` keeps counting, so reports
 * from earlier runs stay fenced off.
 */
export async function retryTask(deps: ServiceDeps, id: string): Promise<TaskRow> {
  const { db, clock } = deps
  const now = clock.now()
  const out = await withTx(db, async (tx) => {
    const task = await lockTask(tx, id)
    refuseRolloutTask(task, 'retried')
    const m = moveFor(task, 'retry', 'staff')
    if (!m) refuse(task, 'only failed, cancelled or timed-out tasks can be retried')
    const row = await requeue(tx, id, m, now)
    await ensureShapes(tx, [id], now) // back in the queue: its shape may have been pruned meanwhile
    await recordEvents(tx, now, [{ type: m.event, taskId: id, data: { from: task.status, to: m.to, reason: m.name } }])
    return row
  })
  await changed(deps, { tasks: [id] })
  return out
}
