import { and, arrayContains, asc, desc, eq, gt, inArray, lt, sql } from 'drizzle-orm'
import { v7 as uuidv7 } from 'uuid'
import type { Db, Tx } from '../db/client'
import { bind } from '../db/fragments'
import { type AssignedHandoff, agentFromJson, hot, pollRead, taskFromJson } from '../db/hot'
import { queries } from '../db/prepared'
import { getAgent } from '../db/rows'
import { type AgentRow, agents, type TaskRow, tasks } from '../db/schema'
import { pgConstraint, pgErrorCode, withTx } from '../db/tx'
import { type AgentSetStatus, beatStatus, SETTABLE_STATUSES, STAFF_HELD } from '../domain/agent-states'
import { releaseKeysSql } from '../domain/concurrency'
import type { AgentStatus, Labels, Principal, Provider } from '../domain/model'
import { liveStatuses } from '../domain/model'
import { requeueSet } from '../domain/sql'
import { move } from '../domain/task-states'
import { ApiError } from '../lib/errors'
import { ifMatchOk } from '../lib/etag'
import { keys, reviveRow } from '../lib/kv'
import type { Woken } from '../lib/notifier'
import { decodeCursor, page, type SortOrder } from '../lib/pagination'
import { changed, type ServiceDeps } from './deps'
import { recordEvents } from './events'
import { type BeatRow, HeartbeatWriter } from './heartbeat-writer'
import { recordAssignments } from './placement'
import { consumeRegistrationToken } from './registration-tokens'
import { applyTaskReports, type ReportOutcome, type ReportRow, type TaskReport } from './tasks'

export interface AgentInput {
  name: string
  description?: string | null
  provider: Provider
  region?: string | null
  capabilities: string[]
  labels: Labels
  /** The task types it runs (`*`: any). */
  taskTypes: string[]
  maxConcurrentTasks: number
}

function nameTaken(err: unknown, name: string): never {
  if (pgErrorCode(err) === '23505' && pgConstraint(err) === 'agents_name_key') {
    throw new ApiError('name_taken', `An agent named "${name}" already exists.`, {
      errors: [{ path: 'body.name', message: 'already taken' }],
    })
  }
  throw err
}

const dedupe = (xs: string[]) => [...new Set(xs)]

/** The columns an operator sets (create and replace). */
const settings = (input: AgentInput) => ({
  name: input.name,
  description: input.description ?? null,
  provider: input.provider,
  region: input.region ?? null,
  capabilities: dedupe(input.capabilities),
  labels: input.labels,
  taskTypes: dedupe(input.taskTypes),
  maxConcurrentTasks: input.maxConcurrentTasks,
})

/** Inserts a new agent (offline) with its `agent.registered` event, in the caller's transaction. */
async function insertAgent(tx: Tx, input: AgentInput, now: Date, extra: Record<string, unknown> = {}) {
  const [row] = await tx
    .insert(agents)
    .values({
      id: uuidv7(),
      ...settings(input),
      status: 'offline',
      createdAt: now,
      updatedAt: now,
    })
    .returning()
  if (!row) throw new Error('insert returned no row')
  await recordEvents(tx, now, [
    {
      type: 'agent.registered',
      agentId: row.id,
      data: { name: row.name, provider: row.provider, region: row.region, ...extra },
    },
  ])
  return row
}

/** Registration by an admin or operator: a name already taken is 409, whatever its agent's status. */
export async function createAgent(deps: ServiceDeps, input: AgentInput): Promise<AgentRow> {
  const { db, clock } = deps
  const now = clock.now()
  try {
    const created = await withTx(db, (tx) => insertAgent(tx, input, now))
    await changed(deps, {})
    return created
  } catch (err) {
    nameTaken(err, input.name)
  }
}

/** As the Labels schema allows on an agent. */
const MAX_LABELS = 32

/**
 * Registration by an agent itself, with a registration token (`principal.sub` is its id).
 * In one transaction: one use of the token is taken (a guarded update: 401 when it is
 * expired, used up or revoked by now), then the agent is made. So a registration that
 * fails (409, 422) rolls its use back, and racing ones never pass the token's `maxUses`.
 * The token's labels are set over the ones asked for: an admin chose them.
 *
 * A name whose agent is `offline` is taken over (`takeover: true`, answered 200): the agent
 * that restarts without its state, or replaces a dead host, keeps its id (and so the tasks
 * pinned to it with `requirements.agentId`, and its history). Its token version is bumped,
 * so every token the earlier process held is refused (401) from the commit on (the auth
 * caches are dropped as a token rotation drops them): the old process can no longer
 * heartbeat, report or read. Its settings become the ones sent; it stays offline until the
 * new process's first heartbeat. Tasks: an agent goes offline only through the sweep's
 * expiry, which moves all its live tasks in the same statement (assigned ones back to
 * pending, running ones failed with `agent_lost` and retried by the usual rules), and
 * nothing places work on an offline agent, so a taken-over agent holds no assigned or
 * running task; late reports of the old process about tasks it ran are refused by their
 * token (401), and would be by the attempt fence (409 stale_attempt) besides. (As with a
 * token rotation, a request of the old process authenticated just before the commit may
 * still land: the window of one request.) A name held by an agent in any other status
 * stays 409: it may be alive.
 */
export async function registerAgent(
  deps: ServiceDeps,
  input: AgentInput,
  registrationTokenId: string,
): Promise<{ agent: AgentRow; takeover: boolean }> {
  const { db, clock } = deps
  const now = clock.now()
  try {
    const out = await withTx(db, async (tx) => {
      const tokenLabels = await consumeRegistrationToken(tx, registrationTokenId, now)
      const labels = { ...input.labels, ...tokenLabels }
      if (Object.keys(labels).length > MAX_LABELS) {
        throw new ApiError('validation_failed', 'The request has invalid fields; see `errors`.', {
          errors: [{ path: 'body.labels', message: `with the registration token's labels, more than ${MAX_LABELS}` }],
        })
      }
      const wanted = { ...input, labels }
      const event = { registrationTokenId }
      const [existing] = await tx.select().from(agents).where(eq(agents.name, input.name)).for('update')
      if (!existing)
        return { agent: await insertAgent(tx, wanted, now, { ...event, takeover: false }), takeover: false }
      if (existing.status !== 'offline') {
        throw new ApiError(
          'name_taken',
          `An agent named "${input.name}" already exists and is ${existing.status}; only an offline agent's name can be taken over.`,
          { errors: [{ path: 'body.name', message: 'already taken' }] },
        )
      }
      const [row] = await tx
        .update(agents)
        .set({
          ...settings(wanted),
          tokenVersion: sql`${agents.tokenVersion} + 1`,
          version: sql`${agents.version} + 1`,
          updatedAt: now,
        })
        .where(eq(agents.id, existing.id))
        .returning()
      if (!row) throw new Error('update returned no row')
      await recordEvents(tx, now, [
        {
          type: 'agent.registered',
          agentId: row.id,
          data: { name: row.name, provider: row.provider, region: row.region, ...event, takeover: true },
        },
      ])
      return { agent: row, takeover: true }
    })
    await changed(deps, out.takeover ? { agents: [out.agent.id], auth: [out.agent.id] } : {})
    return out
  } catch (err) {
    nameTaken(err, input.name)
  }
}

export interface AgentFilters {
  status?: AgentStatus
  provider?: Provider
  region?: string
  capabilities?: string[]
  limit: number
  cursor?: string
  order: SortOrder
}

export async function listAgents(db: Db, f: AgentFilters) {
  const after = decodeCursor(f.cursor, f.order)
  const where = and(
    f.status ? eq(agents.status, f.status) : undefined,
    f.provider ? eq(agents.provider, f.provider) : undefined,
    f.region ? eq(agents.region, f.region) : undefined,
    f.capabilities?.length ? arrayContains(agents.capabilities, f.capabilities) : undefined,
    after ? (f.order === 'asc' ? gt(agents.id, after) : lt(agents.id, after)) : undefined,
  )
  const rows = await db
    .select()
    .from(agents)
    .where(where)
    .orderBy(f.order === 'asc' ? asc(agents.id) : desc(agents.id))
    .limit(f.limit + 1)
  return page(rows, f.limit, f.order)
}

/** An agent by id for GET /agents/{id}: cached (Redis), dropped by every write that changes it. */
export async function readAgent(deps: Pick<ServiceDeps, 'db' | 'kv' | 'config'>, id: string): Promise<AgentRow> {
  const load = async () => (await queries(deps.db).agentById.execute({ id }))[0]
  const row = deps.kv
    ? await deps.kv.cached(keys.agent(id), deps.config.cacheTtlSeconds * 1000, load, reviveRow<AgentRow>)
    : await load()
  if (!row) throw new ApiError('not_found', `No agent with id ${id}.`)
  return row
}

/** What authentication needs on every agent-token call. */
export async function findAgentAuth(db: Db, id: string) {
  const [row] = await queries(db).agentAuth.execute({ id })
  return row
}

function checkVersion(row: { version: number }, ifMatch: string | undefined) {
  if (!ifMatchOk(ifMatch, row.version)) {
    throw new ApiError('precondition_failed', `If-Match does not match the current version ("${row.version}").`)
  }
}

export async function updateAgent(
  deps: ServiceDeps,
  id: string,
  input: AgentInput,
  ifMatch?: string,
): Promise<AgentRow> {
  const { db, clock } = deps
  const now = clock.now()
  try {
    const out = await withTx(db, async (tx) => {
      const current = await getAgent(tx, id, true)
      checkVersion(current, ifMatch)
      const [row] = await tx
        .update(agents)
        .set({
          ...settings(input),
          version: sql`${agents.version} + 1`,
          updatedAt: now,
        })
        .where(eq(agents.id, id))
        .returning()
      if (!row) throw new ApiError('not_found', `No agent with id ${id}.`)
      await recordEvents(tx, now, [{ type: 'agent.updated', agentId: id, data: { version: row.version } }])
      return row
    })
    await changed(deps, { agents: [id] })
    return out
  } catch (err) {
    nameTaken(err, input.name)
  }
}

/** Statuses each kind of caller may set (`SETTABLE_STATUSES`): offline is set only by expiry or deregistration. */
const settableByStaff: readonly AgentStatus[] = SETTABLE_STATUSES.staff
const settableByAgent: readonly AgentStatus[] = SETTABLE_STATUSES.agent

function assertAgentMove(current: AgentRow, next: AgentStatus, by: Principal['role']) {
  if (current.status === 'quarantined' && next !== current.status) {
    throw new ApiError('invalid_transition', 'The agent is quarantined; POST /agents/{id}/release ends a quarantine.', {
      allowed: [],
    })
  }
  if (by === 'agent') {
    // A status only staff set is only staff's to clear (maintenance, a staff drain).
    if ((STAFF_HELD.includes(current.status) || current.drainThen) && next !== current.status) {
      throw new ApiError('invalid_transition', `The agent is in ${current.status}; an operator must release it.`, {
        allowed: [],
      })
    }
    if (!settableByAgent.includes(next)) {
      throw new ApiError('forbidden', `An agent may set its status only to ${settableByAgent.join(', ')}.`)
    }
  } else if (!settableByStaff.includes(next)) {
    throw new ApiError('invalid_transition', `Status "${next}" is not set by hand.`, { allowed: [...settableByStaff] })
  }
}

export async function setAgentStatus(
  deps: ServiceDeps,
  id: string,
  status: AgentStatus,
  by: Principal,
  ifMatch?: string,
): Promise<AgentRow> {
  const { db, clock } = deps
  const now = clock.now()
  const out = await withTx(db, async (tx) => {
    const current = await getAgent(tx, id, true)
    checkVersion(current, ifMatch)
    assertAgentMove(current, status, by.role)
    if (current.status === status) return current
    // A status set by hand ends a staff drain (its deadline and `then` with it).
    const [row] = await tx
      .update(agents)
      .set({ status, drainThen: null, drainDeadline: null, version: sql`${agents.version} + 1`, updatedAt: now })
      .where(eq(agents.id, id))
      .returning()
    if (!row) throw new ApiError('not_found', `No agent with id ${id}.`)
    await recordEvents(tx, now, [
      { type: 'agent.status_changed', agentId: id, data: { from: current.status, to: status, by: by.role } },
    ])
    return row
  })
  await changed(deps, { agents: [id] })
  return out
}

/** The move of the tasks a force-deleted agent held (the same from assigned and running). */
const DEREGISTERED = move('agent_deregistered', 'running')

/**
 * Deregisters an agent. While it holds assigned or running tasks this is refused unless
 * `force`, which puts those tasks back to pending (their attempt is not counted, and the
 * bumped attempt on the next assignment fences any late report from this agent).
 */
export async function deleteAgent(deps: ServiceDeps, id: string, force: boolean, ifMatch?: string) {
  const { db, clock } = deps
  const now = clock.now()
  const lockHeld = (tx: Tx) =>
    tx
      .select({ id: tasks.id, status: tasks.status })
      .from(tasks)
      .where(and(eq(tasks.agentId, id), inArray(tasks.status, [...liveStatuses])))
      .for('update')
  const requeued = await withTx(db, async (tx) => {
    // Tasks before their agent, the order every report and cancel takes, so none deadlocks with this.
    await lockHeld(tx)
    const current = await getAgent(tx, id, true)
    checkVersion(current, ifMatch)
    // Re-read under the agent lock: a placement that committed in between is now visible.
    const held = await lockHeld(tx)
    if (held.length > 0 && !force) {
      throw new ApiError(
        'agent_has_active_tasks',
        `The agent holds ${held.length} assigned or running task(s); pass force=true to put them back to pending.`,
        { taskIds: held.map((t) => t.id) },
      )
    }
    if (held.length > 0) {
      await tx.execute(
        bind(
          `WITH rq AS (
             UPDATE tasks t SET ${requeueSet(DEREGISTERED, 't', '{{now}}', '{{now}}')} WHERE t.id = ANY({{ids}}::uuid[])
             RETURNING t.concurrency_key
           ), relk AS (${releaseKeysSql('rq', 'true', '{{now}}')})
           SELECT 1`,
          {
            now,
            ids: `{${held.map((t) => t.id).join(',')}}`,
          },
        ),
      )
    }
    await tx.delete(agents).where(eq(agents.id, id))
    await recordEvents(tx, now, [
      ...held.map((t) => ({
        type: DEREGISTERED.event,
        taskId: t.id,
        agentId: id,
        data: { from: t.status, to: DEREGISTERED.to, reason: DEREGISTERED.name },
      })),
      { type: 'agent.deregistered', agentId: id, data: { name: current.name, requeued: held.length } },
    ])
    return held.map((t) => t.id)
  })
  await changed(deps, { agents: [id], auth: [id], tasks: requeued })
}

/** Bumps the agent's token version: tokens minted before stop working. */
export async function rotateAgentToken(deps: ServiceDeps, id: string): Promise<number> {
  const { db, clock } = deps
  const now = clock.now()
  const version = await withTx(db, async (tx) => {
    const [row] = await tx
      .update(agents)
      .set({ tokenVersion: sql`${agents.tokenVersion} + 1`, updatedAt: now })
      .where(eq(agents.id, id))
      .returning({ tokenVersion: agents.tokenVersion })
    if (!row) throw new ApiError('not_found', `No agent with id ${id}.`)
    await recordEvents(tx, now, [{ type: 'agent.token_rotated', agentId: id, data: {} }])
    return row.tokenVersion
  })
  await changed(deps, { auth: [id], agents: [id] })
  return version
}

export interface HeartbeatInput {
  agentId: string
  status?: AgentSetStatus
  metrics?: Record<string, unknown>
  runningTaskIds?: string[]
  /** Reports on this agent's tasks, applied before the beat (so their slots are free for new work). */
  reports?: Omit<TaskReport, never>[]
  /** Long poll: when there is nothing to do, wait up to this long for work to arrive. */
  waitSeconds?: number
  /** The task types it runs now (replaces its declaration); absent: unchanged. */
  taskTypes?: string[]
}

export interface HeartbeatResult {
  agent: AgentRow
  assignments: TaskRow[]
  cancellations: string[]
  /** One per report in the request, in its order. */
  reports: ReportOutcome[]
}

/** How often a waiting heartbeat re-reads the database even without a notification. */
const WAIT_SLICE_MS = 2000

/** A long poll writes its agent's beat at most this often (it is read-only otherwise). */
const TOUCH_EVERY_MS = 1000

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal?.addEventListener('abort', done, { once: true })
  })

/** The work a placement handed a woken long poll (src/lib/notifier.ts), if it did. */
function handoffOf(woke: Woken | undefined): AssignedHandoff | undefined {
  if (typeof woke !== 'object') return undefined
  const h = woke.handoff as Partial<AssignedHandoff> | undefined
  return h?.agent && Array.isArray(h.tasks) && h.tasks.length > 0 ? (h as AssignedHandoff) : undefined
}

/** The app's writer, or (no shared one: Workers, tests) one for this heartbeat alone. */
const writerFor = (deps: ServiceDeps) =>
  deps.heartbeats ?? new HeartbeatWriter(deps.db, deps.clock, { batchSize: 1, inFlight: 1, metrics: deps.metrics })

/**
 * A heartbeat: applies the agent's reports, records the beat, hands an agent with free
 * slots fitting pending tasks, and reads what to tell it: the tasks assigned to it and not
 * yet started, and the tasks it should stop (cancel requested, or ones it reports running
 * that it no longer holds). All of it is one statement, written together with the other
 * heartbeats in flight (`HeartbeatWriter`, src/services/heartbeat-writer.ts). (Several
 * reports on one task beyond "running, then its end" take a statement per extra round
 * first.) With `waitSeconds`, an agent with nothing to do is answered as soon as work lands
 * on it (or when the wait ends): a long poll instead of a busy poll. While it waits, each
 * wake (a notification, or every WAIT_SLICE_MS) reads again without writing (`pollRead`):
 * the work that landed on it was written by whoever placed it. It writes only to refresh
 * the beat (at most every TOUCH_EVERY_MS, batched), or a whole heartbeat when the agent has
 * free slots and a fitting task waits in the queue (a fill that gives something). `signal`
 * ends the wait early with the answer it has (the route aborts it when a newer long poll of
 * the agent arrives, src/lib/long-polls.ts, or when the client leaves).
 */
export async function heartbeat(
  deps: ServiceDeps,
  input: HeartbeatInput,
  signal?: AbortSignal,
): Promise<HeartbeatResult> {
  const { db, clock, notifier } = deps
  const id = input.agentId
  const writer = writerFor(deps)
  const running = dedupe(input.runningTaskIds ?? [])
  const beat = (reports: ReportRow[] | null) =>
    writer.beat({
      agentId: id,
      status: input.status ?? null,
      metrics: input.metrics ?? null,
      running,
      taskTypes: input.taskTypes ? dedupe(input.taskTypes) : null,
      reports,
    })
  let row: BeatRow | undefined
  // Until the beat is written, this process has heard the agent: its sweep must not expire
  // it for a silence that is only the wait for the database (src/lib/stalls.ts).
  let heard = deps.stalls?.hearing(id)
  let reports: ReportOutcome[]
  try {
    reports = input.reports?.length
      ? await applyTaskReports(deps, id, input.reports, false, async (rows) => {
          row = await beat(rows)
          return row.reports
        })
      : []
    if (!row) row = await beat(null)
  } finally {
    heard?.()
  }
  let wrote = Date.now()
  /** A woken long poll: what it tells the agent, read; written only as said above. */
  const recheck = async (): Promise<BeatRow> => {
    heard = deps.stalls?.hearing(id)
    try {
      const [read] = await hot<BeatRow & { fillable: boolean }>(db, pollRead, [
        id,
        clock.now(),
        `{${running.join(',')}}`,
      ])
      if (!read) throw new ApiError('not_found', `No agent with id ${id}.`)
      // Free slots and a fitting task waiting, or a beat would move its status (it went offline
      // meanwhile, another instance's sweep): a whole heartbeat (its fill, or its way back online).
      const status = read.agent.status as AgentStatus
      const ctx = {
        drainThen: (read.agent.drain_then as AgentStatus | null) ?? null,
        active: Number(read.agent.active_tasks),
      }
      if (read.fillable || beatStatus(status, null, ctx) !== status) {
        deps.metrics?.longPollRechecks.inc({ write: 'beat' })
        const out = await beat(null)
        wrote = Date.now()
        return out
      }
      if (Date.now() - wrote < TOUCH_EVERY_MS) {
        deps.metrics?.longPollRechecks.inc({ write: 'none' })
        return read
      }
      const at = clock.now()
      await writer.touch(id)
      wrote = Date.now()
      deps.metrics?.longPollRechecks.inc({ write: 'touch' })
      // As written: the beat moves forward, never back.
      const last = read.agent.last_heartbeat_at ? new Date(String(read.agent.last_heartbeat_at)) : null
      if (!last || last < at) read.agent.last_heartbeat_at = at.toISOString()
      return read
    } finally {
      heard?.()
    }
  }
  const until = Date.now() + (input.waitSeconds ?? 0) * 1000
  for (let first = true; ; first = false) {
    if (!row) row = await recheck()
    const given = row.given.map(taskFromJson)
    if (given.length) {
      recordAssignments(
        deps.metrics,
        row.given.map((r) => ({ id: String(r.id), agent_id: id, attempt: Number(r.attempt), wait_s: r.wait_s })),
        'heartbeat',
      )
    }
    // The agent row changed (last heartbeat); events and counts only if its status moved
    // or it was given work.
    if (first || given.length || row.moved) {
      await changed(deps, { agents: [id], tasks: given.map((t) => t.id), eventful: row.moved || given.length > 0 })
    }
    const answer = {
      agent: agentFromJson(row.agent),
      assignments: [...row.assigned.map(taskFromJson), ...given],
      cancellations: dedupe([...row.cancel, ...row.lost]),
      reports,
    }
    row = undefined
    const left = until - Date.now()
    if (answer.assignments.length > 0 || answer.cancellations.length > 0 || left <= 0) return answer
    if (signal?.aborted || notifier?.closed) return answer
    const woke = notifier
      ? await notifier.wait(id, Math.min(left, WAIT_SLICE_MS), signal)
      : await sleep(Math.min(left, WAIT_SLICE_MS), signal).then(() => false)
    // Ended (a newer long poll of this agent, the client gone): what it has, no further beat.
    if (signal?.aborted) return answer
    // Woken by a placement in this process that gave it work: the placement's rows are the
    // answer, as a read would have found them then (no statement at all).
    const handed = handoffOf(woke)
    if (handed) {
      deps.metrics?.longPollRechecks.inc({ write: 'handoff' })
      row = { agent: handed.agent, assigned: handed.tasks, given: [], cancel: [], lost: [], moved: false, reports: [] }
    }
  }
}
