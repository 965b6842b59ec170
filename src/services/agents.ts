import { and, arrayContains, asc, desc, eq, gt, inArray, lt, sql } from 'drizzle-orm'
import { v7 as uuidv7 } from 'uuid'
import type { Db, Executor, Tx } from '../db/client'
import { type AgentRow, agents, type Labels, tasks } from '../db/schema'
import { pgConstraint, pgErrorCode, withTx } from '../db/tx'
import type { Principal } from '../lib/context'
import { ApiError } from '../lib/errors'
import { decodeCursor, page, type SortOrder } from '../lib/pagination'
import type { ServiceDeps } from './deps'
import { recordEvents } from './events'
import { type AgentStatus, activeStatuses, ifMatchOk, type Provider } from './model'
import { fillAgent } from './placement'

export interface AgentInput {
  name: string
  description?: string | null
  provider: Provider
  region?: string | null
  capabilities: string[]
  labels: Labels
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

export async function createAgent({ db, clock }: ServiceDeps, input: AgentInput): Promise<AgentRow> {
  const now = clock.now()
  try {
    return await withTx(db, async (tx) => {
      const [row] = await tx
        .insert(agents)
        .values({
          id: uuidv7(),
          name: input.name,
          description: input.description ?? null,
          provider: input.provider,
          region: input.region ?? null,
          capabilities: dedupe(input.capabilities),
          labels: input.labels,
          maxConcurrentTasks: input.maxConcurrentTasks,
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
          data: { name: row.name, provider: row.provider, region: row.region },
        },
      ])
      return row
    })
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

export async function getAgent(db: Executor, id: string, lock = false): Promise<AgentRow> {
  const q = db.select().from(agents).where(eq(agents.id, id))
  const [row] = lock ? await q.for('update') : await q
  if (!row) throw new ApiError('not_found', `No agent with id ${id}.`)
  return row
}

/** What authentication needs on every agent-token call. */
export async function findAgentAuth(db: Db, id: string) {
  const [row] = await db
    .select({ id: agents.id, tokenVersion: agents.tokenVersion })
    .from(agents)
    .where(eq(agents.id, id))
  return row
}

function checkVersion(row: { version: number }, ifMatch: string | undefined) {
  if (!ifMatchOk(ifMatch, row.version)) {
    throw new ApiError('precondition_failed', `If-Match does not match the current version ("${row.version}").`)
  }
}

export async function updateAgent(
  { db, clock }: ServiceDeps,
  id: string,
  input: AgentInput,
  ifMatch?: string,
): Promise<AgentRow> {
  const now = clock.now()
  try {
    return await withTx(db, async (tx) => {
      const current = await getAgent(tx, id, true)
      checkVersion(current, ifMatch)
      const [row] = await tx
        .update(agents)
        .set({
          name: input.name,
          description: input.description ?? null,
          provider: input.provider,
          region: input.region ?? null,
          capabilities: dedupe(input.capabilities),
          labels: input.labels,
          maxConcurrentTasks: input.maxConcurrentTasks,
          version: sql`${agents.version} + 1`,
          updatedAt: now,
        })
        .where(eq(agents.id, id))
        .returning()
      if (!row) throw new ApiError('not_found', `No agent with id ${id}.`)
      await recordEvents(tx, now, [{ type: 'agent.updated', agentId: id, data: { version: row.version } }])
      return row
    })
  } catch (err) {
    nameTaken(err, input.name)
  }
}

/** Statuses each kind of caller may set. Offline is set only by expiry or deregistration. */
const settableByStaff: AgentStatus[] = ['online', 'draining', 'maintenance', 'error']
const settableByAgent: AgentStatus[] = ['online', 'draining', 'error']

function assertAgentMove(current: string, next: AgentStatus, by: Principal['role']) {
  if (by === 'agent') {
    if (current === 'maintenance' && next !== 'maintenance') {
      throw new ApiError('invalid_transition', 'The agent is in maintenance; an operator must release it.', {
        allowed: [],
      })
    }
    if (!settableByAgent.includes(next)) {
      throw new ApiError('forbidden', `An agent may set its status only to ${settableByAgent.join(', ')}.`)
    }
  } else if (!settableByStaff.includes(next)) {
    throw new ApiError('invalid_transition', `Status "${next}" is not set by hand.`, { allowed: settableByStaff })
  }
}

export async function setAgentStatus(
  { db, clock }: ServiceDeps,
  id: string,
  status: AgentStatus,
  by: Principal,
  ifMatch?: string,
): Promise<AgentRow> {
  const now = clock.now()
  return withTx(db, async (tx) => {
    const current = await getAgent(tx, id, true)
    checkVersion(current, ifMatch)
    assertAgentMove(current.status, status, by.role)
    if (current.status === status) return current
    const [row] = await tx
      .update(agents)
      .set({ status, version: sql`${agents.version} + 1`, updatedAt: now })
      .where(eq(agents.id, id))
      .returning()
    if (!row) throw new ApiError('not_found', `No agent with id ${id}.`)
    await recordEvents(tx, now, [
      { type: 'agent.status_changed', agentId: id, data: { from: current.status, to: status, by: by.role } },
    ])
    return row
  })
}

/**
 * Deregisters an agent. While it holds assigned or running tasks this is refused unless
 * `force`, which puts those tasks back to pending (their attempt is not counted, and the
 * bumped attempt on the next assignment fences any late report from this agent).
 */
export async function deleteAgent({ db, clock }: ServiceDeps, id: string, force: boolean, ifMatch?: string) {
  const now = clock.now()
  const lockHeld = (tx: Tx) =>
    tx
      .select({ id: tasks.id, status: tasks.status })
      .from(tasks)
      .where(and(eq(tasks.agentId, id), inArray(tasks.status, [...activeStatuses])))
      .for('update')
  await withTx(db, async (tx) => {
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
      await tx
        .update(tasks)
        .set({
          status: 'pending',
          agentId: null,
          assignedAt: null,
          startedAt: null,
          deadlineAt: null,
          progress: null,
          cancelRequested: false,
          cancelRequestedAt: null,
          availableAt: now,
          version: sql`${tasks.version} + 1`,
          updatedAt: now,
        })
        .where(
          inArray(
            tasks.id,
            held.map((t) => t.id),
          ),
        )
    }
    await tx.delete(agents).where(eq(agents.id, id))
    await recordEvents(tx, now, [
      ...held.map((t) => ({
        type: 'task.requeued',
        taskId: t.id,
        agentId: id,
        data: { from: t.status, to: 'pending', reason: 'agent_deregistered' },
      })),
      { type: 'agent.deregistered', agentId: id, data: { name: current.name, requeued: held.length } },
    ])
  })
}

/** Bumps the agent's token version: tokens minted before stop working. */
export async function rotateAgentToken({ db, clock }: ServiceDeps, id: string): Promise<number> {
  const now = clock.now()
  return withTx(db, async (tx) => {
    const [row] = await tx
      .update(agents)
      .set({ tokenVersion: sql`${agents.tokenVersion} + 1`, updatedAt: now })
      .where(eq(agents.id, id))
      .returning({ tokenVersion: agents.tokenVersion })
    if (!row) throw new ApiError('not_found', `No agent with id ${id}.`)
    await recordEvents(tx, now, [{ type: 'agent.token_rotated', agentId: id, data: {} }])
    return row.tokenVersion
  })
}

export interface HeartbeatInput {
  agentId: string
  status?: 'online' | 'draining' | 'error'
  metrics?: Record<string, unknown>
  runningTaskIds?: string[]
}

export interface HeartbeatResult {
  agent: AgentRow
  assignments: (typeof tasks.$inferSelect)[]
  cancellations: string[]
}

/**
 * Records a beat and tells the agent what to do: the tasks assigned to it and not yet
 * started, and the tasks it should stop (cancel requested, or ones it reports running
 * that it no longer holds).
 */
export async function heartbeat({ db, clock }: ServiceDeps, input: HeartbeatInput): Promise<HeartbeatResult> {
  const now = clock.now()
  return withTx(db, async (tx) => {
    const current = await getAgent(tx, input.agentId, true)
    let next: AgentStatus = current.status
    if (current.status !== 'maintenance') {
      next = input.status ?? (current.status === 'offline' ? 'online' : current.status)
    }
    const [agent] = await tx
      .update(agents)
      .set({
        status: next,
        lastHeartbeatAt: now,
        ...(input.metrics !== undefined ? { lastMetrics: input.metrics } : {}),
        ...(next !== current.status ? { version: sql`${agents.version} + 1`, updatedAt: now } : {}),
      })
      .where(eq(agents.id, input.agentId))
      .returning()
    if (!agent) throw new ApiError('not_found', `No agent with id ${input.agentId}.`)
    if (next !== current.status) {
      await recordEvents(tx, now, [
        {
          type: 'agent.status_changed',
          agentId: agent.id,
          data: { from: current.status, to: next, by: 'heartbeat' },
        },
      ])
    }
    // An agent with free slots is given fitting pending tasks in this same answer.
    const filled = await fillAgent(tx, now, agent, 'heartbeat')
    agent.activeTasks += filled.length
    const held = await tx
      .select()
      .from(tasks)
      .where(and(eq(tasks.agentId, agent.id), inArray(tasks.status, [...activeStatuses])))
      .orderBy(desc(tasks.priority), asc(tasks.id))
    const assignments = held.filter((t) => t.status === 'assigned')
    const heldIds = new Set(held.map((t) => t.id))
    const cancellations = [
      ...held.filter((t) => t.status === 'running' && t.cancelRequested).map((t) => t.id),
      ...dedupe(input.runningTaskIds ?? []).filter((id) => !heldIds.has(id)),
    ]
    return { agent, assignments, cancellations }
  })
}
