import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createClient, ok } from '../src/client'
import { exitCodeOf, followRollout, progressLine, type RolloutView } from '../src/client/rollouts'
import { rowsOf } from '../src/db/client'
import { taskStatuses } from '../src/domain/model'
import { targetStatusOfTask, targetStatusOfTaskSql } from '../src/domain/rollouts'
import { createHarness, type Harness } from './harness'

/**
 * Rollouts against the real app and database (docs/rollouts.md): agents are simulated over
 * HTTP (heartbeats and reports with their own tokens), the sweep is run by hand at the
 * harness's clock.
 */

let h: Harness
beforeAll(async () => {
  h = await createHarness({ RATE_LIMIT_PER_MINUTE: '0' })
})
afterAll(async () => {
  await h.close()
})

type Agent = Awaited<ReturnType<Harness['agent']>>

/** `n` agents of this test (labelled with its scope), online, one slot each unless said. */
async function fleet(n: number, input: Record<string, unknown> = {}) {
  const out: Agent[] = []
  for (let i = 0; i < n; i++) out.push(await h.agent({ maxConcurrentTasks: 1, ...input }))
  return out
}

const target = () => ({ labels: { scope: h.scope() } })

async function create(body: Record<string, unknown>, opts: { token?: string; headers?: Record<string, string> } = {}) {
  return h.call('POST', '/api/v1/rollouts', {
    body: { name: 'upgrade', task: { type: 'test.run' }, target: target(), ...body },
    ...opts,
  })
}

const get = async (id: string) => (await h.call('GET', `/api/v1/rollouts/${id}`)).body

async function targets(id: string, query = '') {
  const res = await h.call('GET', `/api/v1/rollouts/${id}/targets?limit=500${query}`)
  expect(res.status).toBe(200)
  return res.body.items as {
    agentId: string
    status: string
    taskId: string | null
    wave: number
    attempt: number
    errorCode: string | null
  }[]
}

/** Ends every task of the rollout in flight: started, then completed, or failed for the agents in `fail`. */
async function finishInFlight(id: string, agents: Agent[], fail = new Set<string>()) {
  const tokens = new Map(agents.map((a) => [a.id, a.token]))
  const live = (await targets(id)).filter((t) => t.status === 'dispatched' || t.status === 'running')
  for (const t of live) {
    const task = (await h.call('GET', `/api/v1/tasks/${t.taskId}`)).body
    if (task.status !== 'assigned' && task.status !== 'running') continue
    const token = tokens.get(t.agentId) as string
    if (task.status === 'assigned') {
      expect((await h.report(task.id, token, { status: 'running', attempt: task.attempt })).status).toBe(200)
    }
    const end = fail.has(t.agentId)
      ? { status: 'failed', attempt: task.attempt, error: { code: 'exit_1', message: 'no' } }
      : { status: 'completed', attempt: task.attempt, result: { exitCode: 0, outputTail: 'ok\n' } }
    expect((await h.report(task.id, token, end)).status).toBe(200)
  }
  return live.length
}

const count = async (table: 'tasks' | 'rollouts') =>
  (await rowsOf<{ n: number }>(h.database.db, sql.raw(`SELECT count(*)::int AS n FROM ${table}`)))[0]?.n

const sumOf = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0)

describe('POST /api/v1/rollouts', () => {
  it('freezes the target set, answers 201 with targetCount and dispatches up to maxConcurrency as pinned tasks', async () => {
    const agents = await fleet(5)
    const res = await create({ strategy: { maxConcurrency: 2 } })
    expect(res.status).toBe(201)
    expect(res.headers.get('location')).toBe(`/api/v1/rollouts/${res.body.id}`)
    expect(res.body).toMatchObject({
      status: 'running',
      targetCount: 5,
      maxConcurrency: 2,
      maxErrors: 0,
      waves: [5],
      wave: 1,
      errors: 0,
      retryOf: null,
      endedAt: null,
      counts: { waiting: 3, dispatched: 2 },
    })
    expect(sumOf(res.body.counts)).toBe(5)
    const list = await targets(res.body.id)
    expect(list.map((t) => t.agentId)).toEqual(agents.map((a) => a.id).sort())
    for (const t of list.filter((x) => x.status === 'dispatched')) {
      const task = (await h.call('GET', `/api/v1/tasks/${t.taskId}`)).body
      // Placed at once on its agent (online, a free slot), pinned there, carrying the rollout.
      expect(task).toMatchObject({
        status: 'assigned',
        agentId: t.agentId,
        rolloutId: res.body.id,
        requirements: { agentId: t.agentId },
        maxAttempts: 1,
      })
    }
    // A new agent that matches later is not a target.
    await h.agent()
    expect((await get(res.body.id)).targetCount).toBe(5)
  })

  it('leaves out agents that do not run the type; 422 when none does, or none matches, writing nothing', async () => {
    await fleet(2, { taskTypes: ['deploy'] })
    await fleet(1, { taskTypes: ['other'] })
    const ok = await create({ task: { type: 'deploy' } })
    expect(ok.status).toBe(201)
    expect(ok.body.targetCount).toBe(2)
    const before = (await h.call('GET', '/api/v1/rollouts?limit=100')).body.items.length
    const unhandled = await create({ task: { type: 'nobody.runs.this' } })
    expect(unhandled.status).toBe(422)
    expect(unhandled.body.errors).toEqual([
      { path: 'body.task.type', message: expect.stringMatching(/no target runs/) },
    ])
    const empty = await create({ target: { labels: { scope: 'no-such-scope' } } })
    expect(empty.status).toBe(422)
    expect(empty.body.errors[0].path).toBe('body.target')
    expect((await h.call('GET', '/api/v1/rollouts?limit=100')).body.items.length).toBe(before)
  })

  it('leaves out agents taken out of service (draining, maintenance, quarantined); agentIds, when given, names at least one', async () => {
    const [a, b, c, d] = await fleet(4)
    const op = await h.token('operator')
    for (const [agent, status] of [
      [b, 'maintenance'],
      [c, 'draining'],
    ] as const) {
      const res = await h.call('PATCH', `/api/v1/agents/${agent?.id}/status`, { token: op, body: { status } })
      expect(res.status).toBe(200)
    }
    const q = await h.call('POST', `/api/v1/agents/${d?.id}/quarantine`, { token: op, body: { reason: 'suspect' } })
    expect(q.status).toBe(200)
    const made = await create({})
    expect(made.status).toBe(201)
    expect(made.body.targetCount).toBe(1)
    expect((await targets(made.body.id)).map((t) => t.agentId)).toEqual([a?.id])
    const before = await count('rollouts')
    const none = await create({ target: { ...target(), agentIds: [] } })
    expect(none.status).toBe(422)
    expect(none.body.errors[0].path).toBe('body.target.agentIds')
    expect(await count('rollouts')).toBe(before)
  })

  it('422 for bad percentages and waves that do not add up, each naming its field; nothing half-created', async () => {
    await fleet(3)
    const tasksBefore = await count('tasks')
    const before = await count('rollouts')
    for (const [strategy, path] of [
      [{ maxConcurrency: '150%' }, 'body.strategy.maxConcurrency'],
      [{ maxErrors: 'ten%' }, 'body.strategy.maxErrors'],
      [{ maxConcurrency: 0 }, 'body.strategy.maxConcurrency'],
      [{ waves: [{ size: 2 }, { size: 1 }, { size: 1 }] }, 'body.strategy.waves.1.size'],
      [{ waves: [{ size: '100%' }, { size: 1 }] }, 'body.strategy.waves.0.size'],
      [{ maxConcurrency: '0%' }, 'body.strategy.maxConcurrency'],
    ] as const) {
      const res = await create({ strategy })
      expect(res.status, JSON.stringify(strategy)).toBe(422)
      expect(res.body.code).toBe('validation_failed')
      expect(res.body.errors.map((e: { path: string }) => e.path)).toContain(path)
    }
    const after = await count('rollouts')
    const tasksAfter = await count('tasks')
    expect(after).toBe(before)
    expect(tasksAfter).toBe(tasksBefore)
  })

  it('honours Idempotency-Key: a repeat answers the first rollout with 200, another request with the key 422', async () => {
    await fleet(2)
    const headers = { 'idempotency-key': `k-${h.scope()}` }
    const first = await create({}, { headers })
    expect(first.status).toBe(201)
    const again = await create({}, { headers })
    expect(again.status).toBe(200)
    expect(again.body.id).toBe(first.body.id)
    const other = await create({ name: 'something else' }, { headers })
    expect(other.status).toBe(422)
    expect(other.body.code).toBe('idempotency_key_reused')
  })

  it('is for admins and operators; viewers read', async () => {
    await fleet(1)
    expect((await create({}, { token: await h.token('viewer') })).status).toBe(403)
    const made = await create({}, { token: await h.token('operator') })
    expect(made.status).toBe(201)
    const viewer = await h.token('viewer')
    expect((await h.call('GET', `/api/v1/rollouts/${made.body.id}`, { token: viewer })).status).toBe(200)
    expect((await h.call('POST', `/api/v1/rollouts/${made.body.id}/pause`, { token: viewer })).status).toBe(403)
    expect((await h.call('GET', '/api/v1/rollouts', { token: null })).status).toBe(401)
  })
})

describe('the controller', () => {
  it('dispatches the next targets in the request that reports an end, never past maxConcurrency, and completes', async () => {
    const agents = await fleet(5)
    const { body } = await create({ strategy: { maxConcurrency: 2 } })
    let rounds = 0
    for (;;) {
      const r = await get(body.id)
      expect(r.counts.dispatched + r.counts.running).toBeLessThanOrEqual(2)
      expect(sumOf(r.counts)).toBe(5)
      if (r.endedAt) break
      expect(await finishInFlight(body.id, agents)).toBeGreaterThan(0)
      expect(++rounds).toBeLessThan(10)
    }
    const done = await get(body.id)
    expect(done).toMatchObject({ status: 'completed', errors: 0, counts: { succeeded: 5 } })
    const events = await rowsOf<{ type: string }>(
      h.database.db,
      sql`SELECT type FROM events WHERE data->>'rolloutId' = ${body.id} AND type LIKE 'rollout.%' ORDER BY id`,
    )
    expect(events.map((e) => e.type)).toEqual(['rollout.created', 'rollout.ended'])
    const items = await targets(body.id)
    expect(items.every((t) => t.status === 'succeeded')).toBe(true)
    const one = (await h.call('GET', `/api/v1/rollouts/${body.id}/targets?status=succeeded&limit=1`)).body
    expect(one.items[0]).toMatchObject({ exitCode: 0, outputTail: 'ok\n', errorCode: null, attempt: 1 })
    expect(one.nextCursor).toBeTruthy()
  })

  it('advances on reports batched in a heartbeat too', async () => {
    const agents = await fleet(2)
    const { body } = await create({ strategy: { maxConcurrency: 1 } })
    const [first] = (await targets(body.id)).filter((t) => t.status === 'dispatched')
    const agent = agents.find((a) => a.id === first?.agentId) as Agent
    const task = (await h.call('GET', `/api/v1/tasks/${first?.taskId}`)).body
    const hb = await h.call('POST', '/api/v1/agents/heartbeat', {
      token: agent.token,
      body: {
        agentId: agent.id,
        reports: [
          { taskId: task.id, status: 'running', attempt: task.attempt },
          { taskId: task.id, status: 'completed', attempt: task.attempt },
        ],
      },
    })
    expect(hb.status).toBe(200)
    expect((await get(body.id)).counts).toMatchObject({ succeeded: 1, dispatched: 1 })
  })

  it('maxErrors 0: the first failure stops dispatch, in flight finishes, the rest are skipped, the rollout fails', async () => {
    const agents = await fleet(6)
    const { body } = await create({ strategy: { maxConcurrency: 2 } })
    const live = (await targets(body.id)).filter((t) => t.status === 'dispatched')
    // One of the two in flight fails; the other is still running when it does.
    const failing = live[0]?.agentId as string
    await finishInFlight(body.id, agents, new Set([failing]))
    const r = await get(body.id)
    expect(r).toMatchObject({ status: 'failed', errors: 1, maxErrors: 0 })
    expect(r.counts).toMatchObject({ failed: 1, succeeded: 1, skipped: 4, waiting: 0, dispatched: 0 })
    expect(r.endedAt).not.toBeNull()
    expect(sumOf(r.counts)).toBe(6)
    const types = await rowsOf<{ type: string }>(
      h.database.db,
      sql`SELECT type FROM events WHERE data->>'rolloutId' = ${body.id} AND type LIKE 'rollout.%' ORDER BY id`,
    )
    expect(types.map((e) => e.type)).toEqual(['rollout.created', 'rollout.budget_exceeded', 'rollout.ended'])
  })

  it('dispatches nothing after the budget is exceeded, and what was in flight finishes', async () => {
    const agents = await fleet(8)
    const { body } = await create({ strategy: { maxConcurrency: 4, maxErrors: 1 } })
    const live = (await targets(body.id)).filter((t) => t.status === 'dispatched')
    expect(live).toHaveLength(4)
    await finishInFlight(body.id, agents, new Set(live.slice(0, 2).map((t) => t.agentId)))
    const r = await get(body.id)
    // Two errors > 1: the budget broke while the other two were in flight; they finished.
    expect(r).toMatchObject({ status: 'failed', errors: 2 })
    const after = await targets(body.id)
    const dispatched = after.filter((t) => t.taskId !== null)
    // Nothing was dispatched after the breach: at most the first four plus what the
    // successes before it made room for.
    expect(after.filter((t) => t.status === 'skipped').length).toBe(8 - dispatched.length)
    expect(r.errors).toBeLessThanOrEqual(1 + 3)
  })

  it('waves: the next starts only when the previous ended and its bake time passed', async () => {
    const agents = await fleet(4)
    const { body } = await create({ strategy: { waves: [{ size: 1 }, { size: '100%' }], bakeSeconds: 60 } })
    expect(body).toMatchObject({ waves: [1, 3], wave: 1, counts: { dispatched: 1, waiting: 3 } })
    await finishInFlight(body.id, agents)
    expect(await get(body.id)).toMatchObject({ wave: 1, counts: { succeeded: 1, waiting: 3 } })
    h.clock.advance(59_000)
    await h.sweep()
    expect((await get(body.id)).wave).toBe(1)
    h.clock.advance(1_000)
    await h.sweep()
    const r = await get(body.id)
    expect(r).toMatchObject({ wave: 2, counts: { succeeded: 1, dispatched: 3 } })
    await finishInFlight(body.id, agents)
    expect(await get(body.id)).toMatchObject({ status: 'completed', counts: { succeeded: 4 } })
  })

  it('pauseBetweenWaves: pauses at the gate; resume starts the next wave at once', async () => {
    const agents = await fleet(3)
    const { body } = await create({
      strategy: { waves: [{ size: 1 }, { size: 1 }, { size: 1 }], pauseBetweenWaves: true },
    })
    await finishInFlight(body.id, agents)
    expect(await get(body.id)).toMatchObject({ status: 'paused', wave: 1, counts: { succeeded: 1, waiting: 2 } })
    await h.sweep()
    expect((await get(body.id)).counts.waiting).toBe(2)
    const resumed = await h.call('POST', `/api/v1/rollouts/${body.id}/resume`)
    expect(resumed.status).toBe(200)
    expect(resumed.body).toMatchObject({ status: 'running', wave: 2, counts: { dispatched: 1, waiting: 1 } })
  })

  it('pause stops dispatch at once (in flight goes on); resume dispatches again', async () => {
    const agents = await fleet(4)
    const { body } = await create({ strategy: { maxConcurrency: 2 } })
    const paused = await h.call('POST', `/api/v1/rollouts/${body.id}/pause`)
    expect(paused.body).toMatchObject({ status: 'paused', counts: { dispatched: 2 } })
    await finishInFlight(body.id, agents)
    expect(await get(body.id)).toMatchObject({ status: 'paused', counts: { succeeded: 2, waiting: 2, dispatched: 0 } })
    // Paused again: fine. Resumed: dispatches.
    expect((await h.call('POST', `/api/v1/rollouts/${body.id}/pause`)).status).toBe(200)
    const resumed = await h.call('POST', `/api/v1/rollouts/${body.id}/resume`)
    expect(resumed.body).toMatchObject({ status: 'running', counts: { dispatched: 2 } })
  })

  it('cancel: cancels tasks in flight (asking running ones), skips the rest, ends once nothing is in flight', async () => {
    const agents = await fleet(4)
    const { body } = await create({ strategy: { maxConcurrency: 2 } })
    const [a, b] = (await targets(body.id)).filter((t) => t.status === 'dispatched')
    const running = (await h.call('GET', `/api/v1/tasks/${a?.taskId}`)).body
    const token = agents.find((x) => x.id === a?.agentId)?.token as string
    await h.report(running.id, token, { status: 'running', attempt: running.attempt })
    const res = await h.call('POST', `/api/v1/rollouts/${body.id}/cancel`)
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({
      status: 'cancelled',
      endedAt: null,
      counts: { skipped: 2, cancelled: 1, running: 1 },
    })
    expect((await h.call('GET', `/api/v1/tasks/${b?.taskId}`)).body.status).toBe('cancelled')
    expect((await h.call('GET', `/api/v1/tasks/${running.id}`)).body.cancelRequested).toBe(true)
    await h.report(running.id, token, { status: 'cancelled', attempt: running.attempt })
    const end = await get(body.id)
    expect(end).toMatchObject({ status: 'cancelled', counts: { cancelled: 2, skipped: 2 } })
    expect(end.endedAt).not.toBeNull()
    const again = await h.call('POST', `/api/v1/rollouts/${body.id}/resume`)
    expect(again.status).toBe(409)
    expect(again.body.code).toBe('invalid_transition')
  })

  it('an offline agent’s target ends undeliverable after the delivery timeout, counted as an error', async () => {
    const online = await fleet(1)
    await h.agent({ maxConcurrentTasks: 1 }, { online: false })
    const { body } = await create({ strategy: { deliveryTimeoutSeconds: 120, maxErrors: 1 } })
    await finishInFlight(body.id, online)
    expect(await get(body.id)).toMatchObject({ status: 'running', counts: { succeeded: 1, dispatched: 1 } })
    h.clock.advance(119_000)
    await h.sweep()
    expect((await get(body.id)).counts.dispatched).toBe(1)
    h.clock.advance(1_000)
    await h.sweep()
    const r = await get(body.id)
    expect(r).toMatchObject({ status: 'completed', errors: 1, counts: { succeeded: 1, undeliverable: 1 } })
    const [u] = await targets(body.id, '&status=undeliverable')
    expect((await h.call('GET', `/api/v1/tasks/${u?.taskId}`)).body).toMatchObject({
      status: 'cancelled',
      error: { code: 'undeliverable' },
    })
  })

  it('a busy online agent’s target waits for its slot, never undeliverable; one taken out of service meanwhile is', async () => {
    const [busy, away] = await fleet(2)
    // Each agent's one slot is held by a task of its own, running, outside the rollout.
    for (const agent of [busy, away]) {
      const t = await h.assignedTask(agent?.id)
      expect((await h.report(t.id, agent?.token as string, { status: 'running', attempt: 1 })).status).toBe(200)
    }
    const { body } = await create({ strategy: { deliveryTimeoutSeconds: 60, maxErrors: 1 } })
    expect((await get(body.id)).counts.dispatched).toBe(2)
    const op = await h.token('operator')
    const res = await h.call('PATCH', `/api/v1/agents/${away?.id}/status`, {
      token: op,
      body: { status: 'maintenance' },
    })
    expect(res.status).toBe(200)
    h.clock.advance(61_000)
    await h.sweep()
    const r = await get(body.id)
    expect(r.counts).toMatchObject({ dispatched: 1, undeliverable: 1 })
    const [u] = await targets(body.id, '&status=undeliverable')
    expect(u?.agentId).toBe(away?.id)
    h.clock.advance(600_000)
    await h.sweep()
    expect((await get(body.id)).counts.dispatched).toBe(1) // the busy one still waits
  })

  it('a failed rollout still finishing can be cancelled (its tasks in flight), and stays failed', async () => {
    const agents = await fleet(2)
    const { body } = await create({ strategy: { maxConcurrency: 2 } })
    const [first, second] = await targets(body.id)
    const task = (await h.call('GET', `/api/v1/tasks/${first?.taskId}`)).body
    const token = agents.find((a) => a.id === first?.agentId)?.token as string
    await h.report(task.id, token, { status: 'running', attempt: 1 })
    await h.report(task.id, token, { status: 'failed', attempt: 1, error: { code: 'exit_1', message: 'no' } })
    expect(await get(body.id)).toMatchObject({ status: 'failed', endedAt: null, counts: { dispatched: 1 } })
    const res = await h.call('POST', `/api/v1/rollouts/${body.id}/cancel`)
    expect(res.status).toBe(200)
    const r = await get(body.id)
    expect(r).toMatchObject({ status: 'failed', counts: { failed: 1, cancelled: 1, dispatched: 0 } })
    expect(r.endedAt).not.toBeNull()
    expect((await h.call('GET', `/api/v1/tasks/${second?.taskId}`)).body.status).toBe('cancelled')
  })

  it('its tasks are its own: a hand retry or edit of one is refused (409) with the rollout named', async () => {
    await fleet(2)
    const { body } = await create({ strategy: { maxConcurrency: 1 } })
    const [first, second] = await targets(body.id)
    expect((await h.call('POST', `/api/v1/tasks/${first?.taskId}/cancel`)).status).toBe(200)
    const retry = await h.call('POST', `/api/v1/tasks/${first?.taskId}/retry`)
    expect(retry.status).toBe(409)
    expect(retry.body).toMatchObject({ code: 'conflict', rolloutId: body.id })
    const next = (await targets(body.id)).find((t) => t.agentId === second?.agentId)
    expect(next?.status).toBe('dispatched')
    const edit = await h.call('PUT', `/api/v1/tasks/${next?.taskId}`, { body: { name: 'x', type: 'test.run' } })
    expect(edit.status).toBe(409)
    expect(edit.body.rolloutId).toBe(body.id)
  })

  it('a retry’s payload override is checked as a create’s: a bad shell payload is 422, nothing made', async () => {
    const agents = await fleet(1, { taskTypes: ['shell'] })
    const { body } = await create({ task: { type: 'shell', payload: { command: 'true' } } })
    await finishInFlight(body.id, agents, new Set([agents[0]?.id as string]))
    expect((await get(body.id)).status).toBe('failed')
    const before = await count('rollouts')
    const bad = await h.call('POST', `/api/v1/rollouts/${body.id}/retry`, { body: { task: { payload: { bogus: 1 } } } })
    expect(bad.status).toBe(422)
    expect(bad.body.errors[0].path).toMatch(/^body\.task\.payload/)
    expect(await count('rollouts')).toBe(before)
    const good = await h.call('POST', `/api/v1/rollouts/${body.id}/retry`, {
      body: { task: { payload: { command: 'ls' } } },
    })
    expect(good.status).toBe(201)
  })

  it('retry covers exactly the targets that did not succeed, linked by retryOf', async () => {
    const agents = await fleet(4)
    const { body } = await create({ strategy: { maxErrors: '100%' } })
    const failing = new Set(agents.slice(0, 2).map((a) => a.id))
    await finishInFlight(body.id, agents, failing)
    expect(await get(body.id)).toMatchObject({ status: 'completed', errors: 2 })
    const retry = await h.call('POST', `/api/v1/rollouts/${body.id}/retry`, {
      body: { strategy: { maxConcurrency: 1 } },
    })
    expect(retry.status).toBe(201)
    expect(retry.body).toMatchObject({ retryOf: body.id, targetCount: 2, maxConcurrency: 1 })
    expect(new Set((await targets(retry.body.id)).map((t) => t.agentId))).toEqual(failing)
    // Not while it runs.
    const busy = await h.call('POST', `/api/v1/rollouts/${retry.body.id}/retry`, { body: {} })
    expect(busy.status).toBe(409)
  })
})

describe('targets follow their tasks', () => {
  it('by one rule in both forms: the SQL the controller runs agrees with the TypeScript for every task state', async () => {
    for (const status of taskStatuses) {
      for (const autoRetry of [false, true]) {
        const [row] = await rowsOf<{ target: string }>(
          h.database.db,
          sql.raw(
            `SELECT ${targetStatusOfTaskSql('t')} AS target FROM (SELECT '${status}'::text AS status, ${autoRetry} AS auto_retry) t`,
          ),
        )
        expect(row?.target, `${status} auto_retry=${autoRetry}`).toBe(targetStatusOfTask({ status, autoRetry }))
      }
    }
  })

  it('a task cancelled by hand: its target is cancelled (not an error) and the next is dispatched at once', async () => {
    await fleet(2)
    const { body } = await create({ strategy: { maxConcurrency: 1 } })
    const [first] = (await targets(body.id)).filter((t) => t.status === 'dispatched')
    expect((await h.call('POST', `/api/v1/tasks/${first?.taskId}/cancel`)).status).toBe(200)
    expect(await get(body.id)).toMatchObject({ errors: 0, counts: { cancelled: 1, dispatched: 1 } })
  })

  it('a task past its timeout: the target is timed_out, an error', async () => {
    const agents = await fleet(2)
    const { body } = await create({ task: { type: 'test.run', timeoutSeconds: 60 }, strategy: { maxErrors: 2 } })
    for (const t of await targets(body.id)) {
      const task = (await h.call('GET', `/api/v1/tasks/${t.taskId}`)).body
      const token = agents.find((a) => a.id === t.agentId)?.token as string
      expect((await h.report(task.id, token, { status: 'running', attempt: task.attempt })).status).toBe(200)
    }
    h.clock.advance(61_000)
    for (const a of agents)
      await h.call('POST', '/api/v1/agents/heartbeat', { token: a.token, body: { agentId: a.id } })
    await h.sweep()
    const r = await get(body.id)
    expect(r).toMatchObject({ status: 'completed', errors: 2, counts: { timed_out: 2 } })
  })

  it('an agent lost mid-task is a retry, not a failure: the target stays in flight and succeeds on its return', async () => {
    const [agent] = (await fleet(1)) as [Agent]
    // A delivery timeout longer than the retry's backoff: the retry waits that long undelivered.
    const { body } = await create({ strategy: { deliveryTimeoutSeconds: h.config.retryBackoffMaxSeconds + 60 } })
    const [t] = await targets(body.id)
    let task = (await h.call('GET', `/api/v1/tasks/${t?.taskId}`)).body
    await h.report(task.id, agent.token, { status: 'running', attempt: task.attempt })
    // Silent past HEARTBEAT_TIMEOUT_SECONDS: the sweep fails the run agent_lost, a loss with a retry due.
    h.clock.advance((h.config.heartbeatTimeoutSeconds + 1) * 1000)
    await h.sweep()
    // The same sweep queued its retry (after a backoff), pinned to the same agent.
    expect((await h.call('GET', `/api/v1/tasks/${task.id}`)).body).toMatchObject({
      status: 'pending',
      lostCount: 1,
      error: { code: 'agent_lost' },
    })
    expect(await get(body.id)).toMatchObject({ status: 'running', errors: 0, counts: { dispatched: 1 } })
    // The retry is placed after its backoff; the agent comes back and finishes it.
    h.clock.advance(h.config.retryBackoffMaxSeconds * 1000 + 1000)
    await h.sweep()
    const hb = await h.call('POST', '/api/v1/agents/heartbeat', { token: agent.token, body: { agentId: agent.id } })
    expect(hb.body.assignments.map((x: { id: string }) => x.id)).toEqual([task.id])
    task = hb.body.assignments[0]
    await h.report(task.id, agent.token, { status: 'running', attempt: task.attempt })
    await h.report(task.id, agent.token, { status: 'completed', attempt: task.attempt })
    expect(await get(body.id)).toMatchObject({ status: 'completed', errors: 0, counts: { succeeded: 1 } })
    expect((await targets(body.id))[0]?.attempt).toBe(2)
  })
})

describe('reads', () => {
  it('GET /rollouts filters by status and pages; targets filter by wave; wait answers at the end or the timeout', async () => {
    const agents = await fleet(3)
    const { body } = await create({ strategy: { waves: [{ size: 1 }, { size: 2 }] } })
    const running = (await h.call('GET', '/api/v1/rollouts?status=running&limit=100')).body
    expect(running.items.map((r: { id: string }) => r.id)).toContain(body.id)
    const paged = await h.call('GET', '/api/v1/rollouts?limit=1')
    expect(paged.body.items).toHaveLength(1)
    expect(paged.body.nextCursor).toBeTruthy()
    expect((await h.call('GET', '/api/v1/rollouts?status=nope')).status).toBe(422)
    expect((await targets(body.id, '&wave=2')).map((t) => t.wave)).toEqual([2, 2])
    const timedOut = await h.call('GET', `/api/v1/rollouts/${body.id}/wait?timeoutSeconds=0`)
    expect(timedOut.body).toMatchObject({ status: 'running', endedAt: null })
    const waiting = h.call('GET', `/api/v1/rollouts/${body.id}/wait?timeoutSeconds=30`)
    await finishInFlight(body.id, agents)
    await finishInFlight(body.id, agents)
    const ended = await waiting
    expect(ended.body).toMatchObject({ status: 'completed', counts: { succeeded: 3 } })
    expect((await h.call('GET', '/api/v1/rollouts/0192f3c5-6d7e-7a1b-8c9d-0e1f2a3b4c5d')).status).toBe(404)
    const metrics = (await h.call('GET', '/metrics')).body as string
    expect(metrics).toMatch(/agenticcp_rollouts\{status="completed"\} [1-9]/)
    expect(metrics).toMatch(/agenticcp_rollouts_created_total [1-9]/)
    expect(metrics).toMatch(/agenticcp_rollout_targets_ended_total\{status="succeeded"\} [1-9]/)
    // Skipped by the budgets broken earlier in this file.
    expect(metrics).toMatch(/agenticcp_rollout_targets_ended_total\{status="skipped"\} [1-9]/)
  })
})

describe('the typed client', () => {
  it('creates a rollout and follows it to its end with a progress line; exit 0 only for completed', async () => {
    const agents = await fleet(2)
    const appFetch: typeof fetch = async (input, init) => h.app.fetch(new Request(input as RequestInfo, init))
    const api = createClient({ url: 'http://app', token: await h.token('operator'), fetch: appFetch })
    const made: RolloutView = await ok(
      api.api.v1.rollouts.$post({
        json: { name: 'via-client', task: { type: 'test.run' }, target: target(), strategy: { maxConcurrency: 1 } },
        header: {},
      }),
    )
    expect(made).toMatchObject({ targetCount: 2, status: 'running' })
    expect(progressLine(made)).toBe(
      'via-client running · wave 1/1 · 0/2 done (0 ok) · 1 in flight · errors 0/0 · 1 waiting',
    )
    const lines: string[] = []
    const following = followRollout(api, made.id, (r) => lines.push(progressLine(r)), 1)
    await finishInFlight(made.id, agents)
    await finishInFlight(made.id, agents)
    const end = await following
    expect(end.status).toBe('completed')
    expect(exitCodeOf(end)).toBe(0)
    expect(lines.at(-1)).toBe('via-client completed (ended) · wave 1/1 · 2/2 done (2 ok) · 0 in flight · errors 0/0')
    expect(exitCodeOf({ status: 'failed' })).toBe(1)
    expect(exitCodeOf({ status: 'cancelled' })).toBe(1)
  })
})
