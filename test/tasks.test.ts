import { eq } from 'drizzle-orm'
import { testClient } from 'hono/testing'
import { v7 as uuidv7 } from 'uuid'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { tasks } from '../src/db/schema'
import { keys } from '../src/lib/kv'
import { type CallResult, createHarness, type Harness, unique } from './harness'

let h: Harness
beforeAll(async () => {
  h = await createHarness()
})
afterAll(async () => {
  await h.close()
})

const unknownId = '0192f3c5-6d7e-7a1b-8c9d-0e1f2a3b4c5d'
const agentLoad = async (id: string) => (await h.call('GET', `/api/v1/agents/${id}`)).body.activeTasks

describe('POST /api/v1/tasks', () => {
  it('creates a pending task with defaults, Location, ETag and a task.created event', async () => {
    const res = await h.call('POST', '/api/v1/tasks', { body: { name: 'build', type: 'ci.build' } })
    expect(res.status).toBe(201)
    expect(res.body).toMatchObject({
      name: 'build',
      type: 'ci.build',
      payload: {},
      priority: 5,
      maxAttempts: 3,
      timeoutSeconds: 300,
      status: 'pending',
      attempt: 0,
      failures: 0,
      lostCount: 0,
      agentId: null,
      cancelRequested: false,
      requirements: { capabilities: [], provider: null, region: null, labels: {}, agentId: null },
      version: 1,
    })
    expect(res.headers.get('location')).toBe(`/api/v1/tasks/${res.body.id}`)
    expect(res.headers.get('etag')).toBe('"1"')
    expect((await h.events({ taskId: res.body.id })).map((e) => e.type)).toEqual(['task.created'])
  })

  it('keeps every field given', async () => {
    const scheduledAt = '2030-01-01T00:00:00.000Z'
    const body = {
      name: 'render',
      type: 'render.frame',
      payload: { frame: 7, tags: ['a'] },
      priority: 9,
      requirements: { capabilities: ['gpu'], provider: 'gcp', region: 'us-central1', labels: { tier: 'gold' } },
      maxAttempts: 5,
      timeoutSeconds: 60,
      scheduledAt,
    }
    const res = await h.call('POST', '/api/v1/tasks', { body })
    expect(res.status).toBe(201)
    expect(res.body).toMatchObject({ ...body, requirements: { ...body.requirements, agentId: null } })
    expect(res.body.pendingReason).toBe('scheduled')
  })

  it('returns the first task with 200 on a repeated idempotency key (body or header)', async () => {
    const key = unique('idem')
    const first = await h.call('POST', '/api/v1/tasks', { body: { name: 'x', type: 't', idempotencyKey: key } })
    expect(first.status).toBe(201)
    const again = await h.call('POST', '/api/v1/tasks', { body: { name: 'x', type: 't', idempotencyKey: key } })
    expect(again.status).toBe(200)
    expect(again.body.id).toBe(first.body.id)
    const viaHeader = await h.call('POST', '/api/v1/tasks', {
      body: { name: 'x', type: 't' },
      headers: { 'idempotency-key': key },
    })
    expect(viaHeader.status).toBe(200)
    expect(viaHeader.body.id).toBe(first.body.id)
    expect((await h.events({ taskId: first.body.id })).filter((e) => e.type === 'task.created')).toHaveLength(1)
  })

  it('makes exactly one task when the same key races', async () => {
    const key = unique('race')
    const results = await Promise.all(
      Array.from({ length: 8 }, () =>
        h.call('POST', '/api/v1/tasks', { body: { name: 'r', type: 't' }, headers: { 'idempotency-key': key } }),
      ),
    )
    expect(results.filter((r) => r.status === 201)).toHaveLength(1)
    expect(results.filter((r) => r.status === 200)).toHaveLength(7)
    expect(new Set(results.map((r) => r.body.id)).size).toBe(1)
  })

  it('scopes keys to the caller, and refuses a key reused for a different request with 422', async () => {
    const key = unique('scoped')
    const alice = await h.token('operator', 'alice')
    const bob = await h.token('operator', 'bob')
    const later = '2099-01-01T00:00:00.000Z' // stays pending: placed on no other test's agent
    const body = {
      name: 'nightly',
      type: 'report',
      priority: 5,
      payload: { b: 2, a: 1 },
      scheduledAt: later,
      idempotencyKey: key,
    }
    const a1 = await h.call('POST', '/api/v1/tasks', { token: alice, body })
    expect(a1.status).toBe(201)
    // Another caller's same key is another task, never the first caller's.
    const b1 = await h.call('POST', '/api/v1/tasks', { token: bob, body })
    expect(b1.status).toBe(201)
    expect(b1.body.id).not.toBe(a1.body.id)
    // The same request again (defaults spelled out, keys reordered) is the same task…
    const same = {
      idempotencyKey: key,
      payload: { a: 1, b: 2 },
      type: 'report',
      name: 'nightly',
      maxAttempts: 3,
      scheduledAt: '2099-01-01T00:00:00Z',
    }
    const a2 = await h.call('POST', '/api/v1/tasks', { token: alice, body: same })
    expect(a2.status).toBe(200)
    expect(a2.body.id).toBe(a1.body.id)
    // Capabilities are a set: their order does not make it another request.
    const caps = { ...body, idempotencyKey: `${key}-caps`, requirements: { capabilities: ['gpu', 'arm'] } }
    const c1 = await h.call('POST', '/api/v1/tasks', { token: alice, body: caps })
    const c2 = await h.call('POST', '/api/v1/tasks', {
      token: alice,
      body: { ...caps, requirements: { capabilities: ['arm', 'gpu', 'arm'] } },
    })
    expect([c1.status, c2.status]).toEqual([201, 200])
    // …a different one under the same key is refused, and nothing is written.
    const before = (await h.events({ taskId: a1.body.id })).length
    const reused = await h.call('POST', '/api/v1/tasks', { token: alice, body: { ...body, priority: 9 } })
    expect(reused.status).toBe(422)
    expect(reused.body).toMatchObject({ code: 'idempotency_key_reused', taskId: a1.body.id })
    expect(reused.body.errors[0].path).toBe('body.idempotencyKey')
    expect((await h.events({ taskId: a1.body.id })).length).toBe(before)
    expect((await h.call('GET', `/api/v1/tasks/${a1.body.id}`)).body.priority).toBe(5)
  })

  it('refuses differing header and body keys with 422', async () => {
    const res = await h.call('POST', '/api/v1/tasks', {
      body: { name: 'x', type: 't', idempotencyKey: 'a' },
      headers: { 'idempotency-key': 'b' },
    })
    expect(res.status).toBe(422)
    expect(res.body.errors[0].path).toBe('body.idempotencyKey')
  })
})

describe('GET /api/v1/tasks', () => {
  it('filters by status (one or several), agentId, type and priority', async () => {
    const type = unique('type')
    const a = await h.agent({ maxConcurrentTasks: 5 })
    const p1 = await h.pendingTask({ type, priority: 1 })
    const p9 = await h.pendingTask({ type, priority: 9 })
    const assigned = await h.assignedTask(a.id, { type, priority: 5 })
    const running = await h.assignedTask(a.id, { type, priority: 5 })
    await h.report(running.id, a.token, { status: 'running', attempt: 1 })

    const ids = async (q: string) =>
      (await h.call('GET', `/api/v1/tasks?type=${type}&${q}`)).body.items.map((t: { id: string }) => t.id).sort()
    expect(await ids('')).toEqual([p1.id, p9.id, assigned.id, running.id].sort())
    expect(await ids('status=pending')).toEqual([p1.id, p9.id].sort())
    expect(await ids('status=assigned,running')).toEqual([assigned.id, running.id].sort())
    expect(await ids(`agentId=${a.id}`)).toEqual([assigned.id, running.id].sort())
    expect(await ids('priority=9')).toEqual([p9.id])
    expect((await h.call('GET', '/api/v1/tasks?status=pending,bogus')).status).toBe(422)
    expect((await h.call('GET', '/api/v1/tasks?priority=11')).status).toBe(422)
  })

  it('pages through every task exactly once', async () => {
    const type = unique('page')
    const made = []
    for (let i = 0; i < 7; i++) made.push((await h.task({ type })).id)
    const seen: string[] = []
    let cursor: string | null = null
    do {
      const q: string = cursor ? `&cursor=${cursor}` : ''
      const res = await h.call('GET', `/api/v1/tasks?type=${type}&limit=3&order=asc${q}`)
      seen.push(...res.body.items.map((t: { id: string }) => t.id))
      cursor = res.body.nextCursor
    } while (cursor)
    expect(seen).toEqual(made)
    // a cursor from one order is refused by the other
    const first = await h.call('GET', `/api/v1/tasks?type=${type}&limit=3&order=asc`)
    const mixed = await h.call('GET', `/api/v1/tasks?type=${type}&limit=3&order=desc&cursor=${first.body.nextCursor}`)
    expect(mixed.status).toBe(422)
  })
})

describe('GET /api/v1/tasks/{id} and pendingReason', () => {
  it('explains why a pending task waits', async () => {
    const cap = unique('cap')
    const scheduled = await h.task({ scheduledAt: '2099-01-01T00:00:00Z' })
    const nobody = await h.task({ requirements: { capabilities: [cap] } })
    const reason = async (id: string) => (await h.call('GET', `/api/v1/tasks/${id}`)).body.pendingReason
    expect(await reason(scheduled.id)).toBe('scheduled')
    expect(await reason(nobody.id)).toBe('no_matching_agent')

    // A fitting agent that is full: agents_busy.
    // (made online by an operator, not a heartbeat, so nothing pulls `nobody` onto it)
    const a = await h.agent({ capabilities: [cap], maxConcurrentTasks: 1 }, { online: false })
    await h.call('PATCH', `/api/v1/agents/${a.id}/status`, { body: { status: 'online' } })
    await h.assignedTask(a.id, { requirements: { capabilities: [cap] } })
    expect(await reason(nobody.id)).toBe('agents_busy')

    // A slot opens without a heartbeat or sweep yet (capacity raised): queued.
    await h.call('PUT', `/api/v1/agents/${a.id}`, {
      body: { name: a.name, provider: 'aws', capabilities: [cap], labels: a.labels, maxConcurrentTasks: 2 },
    })
    expect(await reason(nobody.id)).toBe('queued')

    // A retry backoff (set by the scheduler) reads as backoff.
    const later = new Date(h.clock.now().getTime() + 60_000)
    await h.database.db.update(tasks).set({ availableAt: later, attempt: 1 }).where(eq(tasks.id, nobody.id))
    await h.kv.invalidate([keys.task(nobody.id)]) // written behind the service's back
    expect(await reason(nobody.id)).toBe('backoff')

    const list = await h.call('GET', `/api/v1/tasks?status=pending&limit=100`)
    const inList = list.body.items.find((t: { id: string }) => t.id === scheduled.id)
    expect(inList.pendingReason).toBe('scheduled')
  })

  it('404s for an unknown id', async () => {
    const res = await h.call('GET', `/api/v1/tasks/${unknownId}`)
    expect(res.status).toBe(404)
    expect(res.headers.get('content-type')).toContain('application/problem+json')
  })
})

describe('PUT /api/v1/tasks/{id}', () => {
  it('replaces a pending task and bumps its version', async () => {
    const t = await h.task()
    const res = await h.call('PUT', `/api/v1/tasks/${t.id}`, {
      body: { name: 'renamed', type: 'other', priority: 2, payload: [1, 2] },
      headers: { 'if-match': `"${t.version}"` },
    })
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({ name: 'renamed', type: 'other', priority: 2, payload: [1, 2], version: 2 })
  })

  it('refuses once the task left pending (409 with the allowed moves), on a stale If-Match (412), unknown id (404)', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    const res = await h.call('PUT', `/api/v1/tasks/${t.id}`, { body: { name: 'x', type: 'y' } })
    expect(res.status).toBe(409)
    expect(res.body.code).toBe('invalid_transition')
    expect(res.body.allowed.length).toBeGreaterThan(0)

    const p = await h.task()
    const stale = await h.call('PUT', `/api/v1/tasks/${p.id}`, {
      body: { name: 'x', type: 'y' },
      headers: { 'if-match': '"7"' },
    })
    expect(stale.status).toBe(412)
    expect((await h.call('GET', `/api/v1/tasks/${p.id}`)).body.name).toBe(p.name)
    expect((await h.call('PUT', `/api/v1/tasks/${unknownId}`, { body: { name: 'x', type: 'y' } })).status).toBe(404)
  })
})

describe('DELETE /api/v1/tasks/{id}', () => {
  it('deletes pending, assigned (freeing the slot) and finished tasks, not running ones', async () => {
    const a = await h.agent({ maxConcurrentTasks: 3 })
    const pending = await h.task()
    expect((await h.call('DELETE', `/api/v1/tasks/${pending.id}`)).status).toBe(204)
    expect((await h.call('GET', `/api/v1/tasks/${pending.id}`)).status).toBe(404)

    const assigned = await h.assignedTask(a.id)
    expect(await agentLoad(a.id)).toBe(1)
    expect((await h.call('DELETE', `/api/v1/tasks/${assigned.id}`)).status).toBe(204)
    expect(await agentLoad(a.id)).toBe(0)

    const running = await h.assignedTask(a.id)
    await h.report(running.id, a.token, { status: 'running', attempt: 1 })
    const refused = await h.call('DELETE', `/api/v1/tasks/${running.id}`)
    expect(refused.status).toBe(409)
    expect(refused.body.code).toBe('invalid_transition')
    expect((await h.call('GET', `/api/v1/tasks/${running.id}`)).body.status).toBe('running')

    await h.report(running.id, a.token, { status: 'completed', attempt: 1 })
    expect((await h.call('DELETE', `/api/v1/tasks/${running.id}`)).status).toBe(204)
    expect((await h.call('DELETE', `/api/v1/tasks/${unknownId}`)).status).toBe(404)
  })
})

describe('POST /api/v1/tasks/{id}/cancel', () => {
  it('cancels pending and assigned tasks at once (200), freeing the slot', async () => {
    const a = await h.agent()
    const pending = await h.task()
    const res = await h.call('POST', `/api/v1/tasks/${pending.id}/cancel`)
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({ status: 'cancelled' })
    expect(res.body.finishedAt).not.toBeNull()

    const assigned = await h.assignedTask(a.id)
    const res2 = await h.call('POST', `/api/v1/tasks/${assigned.id}/cancel`)
    expect(res2.status).toBe(200)
    expect(res2.body.status).toBe('cancelled')
    expect(await agentLoad(a.id)).toBe(0)
  })

  it('asks the agent to stop a running task (202), then the agent ends it cancelled', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    await h.report(t.id, a.token, { status: 'running', attempt: 1 })
    const res = await h.call('POST', `/api/v1/tasks/${t.id}/cancel`)
    expect(res.status).toBe(202)
    expect(res.body).toMatchObject({ status: 'running', cancelRequested: true })
    const again = await h.call('POST', `/api/v1/tasks/${t.id}/cancel`)
    expect(again.status).toBe(202)

    const hb = await h.call('POST', '/api/v1/agents/heartbeat', { token: a.token, body: { agentId: a.id } })
    expect(hb.body.cancellations).toEqual([t.id])
    const done = await h.report(t.id, a.token, { status: 'cancelled', attempt: 1 })
    expect(done.status).toBe(200)
    expect(done.body.status).toBe('cancelled')
    expect(await agentLoad(a.id)).toBe(0)
    const types = (await h.events({ taskId: t.id })).map((e) => e.type)
    expect(types).toEqual(['task.created', 'task.assigned', 'task.started', 'task.cancel_requested', 'task.cancelled'])
  })

  it('refuses to cancel a finished task (409) and 404s an unknown one', async () => {
    const t = await h.task()
    await h.call('POST', `/api/v1/tasks/${t.id}/cancel`)
    const res = await h.call('POST', `/api/v1/tasks/${t.id}/cancel`)
    expect(res.status).toBe(409)
    expect(res.body.code).toBe('invalid_transition')
    expect(res.body.allowed).toEqual(['pending (retry)'])
    expect((await h.call('POST', `/api/v1/tasks/${unknownId}/cancel`)).status).toBe(404)
  })
})

describe('POST /api/v1/tasks/{id}/retry', () => {
  it('puts failed and cancelled tasks back to pending with a fresh budget', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    await h.report(t.id, a.token, { status: 'failed', attempt: 1, error: { code: 'boom', message: 'it broke' } })
    const res = await h.call('POST', `/api/v1/tasks/${t.id}/retry`)
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({
      status: 'pending',
      agentId: null,
      attempt: 1,
      failures: 0,
      error: null,
      finishedAt: null,
    })

    const c = await h.task()
    await h.call('POST', `/api/v1/tasks/${c.id}/cancel`)
    expect((await h.call('POST', `/api/v1/tasks/${c.id}/retry`)).body.status).toBe('pending')
  })

  it('refuses pending, running and completed tasks (409)', async () => {
    const a = await h.agent()
    const pending = await h.task()
    expect((await h.call('POST', `/api/v1/tasks/${pending.id}/retry`)).status).toBe(409)
    const t = await h.assignedTask(a.id)
    await h.report(t.id, a.token, { status: 'running', attempt: 1 })
    expect((await h.call('POST', `/api/v1/tasks/${t.id}/retry`)).status).toBe(409)
    await h.report(t.id, a.token, { status: 'completed', attempt: 1 })
    const res = await h.call('POST', `/api/v1/tasks/${t.id}/retry`)
    expect(res.status).toBe(409)
    expect(res.body.allowed).toEqual([])
  })
})

describe('PATCH /api/v1/tasks/{id}/status (agent reports)', () => {
  it('runs the happy path: assigned → running → progress → completed, with slots and events', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    expect(t).toMatchObject({ status: 'assigned', agentId: a.id, attempt: 1 })
    expect(await agentLoad(a.id)).toBe(1)

    h.clock.advance(1000)
    const start = await h.report(t.id, a.token, { status: 'running', attempt: 1, progress: 5 })
    expect(start.status).toBe(200)
    expect(start.body).toMatchObject({ status: 'running', progress: 5, startedAt: h.clock.now().toISOString() })

    const prog = await h.report(t.id, a.token, { status: 'running', attempt: 1, progress: 60 })
    expect(prog.body).toMatchObject({ status: 'running', progress: 60 })

    h.clock.advance(1000)
    const done = await h.report(t.id, a.token, { status: 'completed', attempt: 1, result: { rows: 3 } })
    expect(done.status).toBe(200)
    expect(done.body).toMatchObject({ status: 'completed', result: { rows: 3 }, progress: 100 })
    expect(done.body.finishedAt).toBe(h.clock.now().toISOString())
    expect(await agentLoad(a.id)).toBe(0)

    const types = (await h.events({ taskId: t.id })).map((e) => e.type)
    expect(types).toEqual(['task.created', 'task.assigned', 'task.started', 'task.progress', 'task.completed'])
  })

  it('records failures from assigned or running, with the error, counting them', async () => {
    const a = await h.agent()
    const t1 = await h.assignedTask(a.id)
    const f1 = await h.report(t1.id, a.token, { status: 'failed', attempt: 1 })
    expect(f1.body).toMatchObject({ status: 'failed', failures: 1, error: { code: 'failed' } })

    const t2 = await h.assignedTask(a.id)
    await h.report(t2.id, a.token, { status: 'running', attempt: 1 })
    const f2 = await h.report(t2.id, a.token, {
      status: 'failed',
      attempt: 1,
      error: { code: 'oom', message: 'out of memory' },
    })
    expect(f2.body).toMatchObject({ status: 'failed', error: { code: 'oom', message: 'out of memory' } })
    expect(await agentLoad(a.id)).toBe(0)
  })

  it('refuses every other move with 409 and the allowed ones, changing nothing', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    const early = await h.report(t.id, a.token, { status: 'completed', attempt: 1 })
    expect(early.status).toBe(409)
    expect(early.body).toMatchObject({ code: 'invalid_transition', allowed: ['running', 'failed', 'declined'] })
    const noCancel = await h.report(t.id, a.token, { status: 'cancelled', attempt: 1 })
    expect(noCancel.status).toBe(409)

    await h.report(t.id, a.token, { status: 'running', attempt: 1 })
    const unasked = await h.report(t.id, a.token, { status: 'cancelled', attempt: 1 })
    expect(unasked.status).toBe(409)
    expect(unasked.body.allowed).toEqual(['running', 'completed', 'failed'])

    await h.report(t.id, a.token, { status: 'completed', attempt: 1 })
    const after = await h.report(t.id, a.token, { status: 'failed', attempt: 1 })
    expect(after.status).toBe(409)
    expect(after.body.allowed).toEqual([])
    const got = await h.call('GET', `/api/v1/tasks/${t.id}`)
    expect(got.body.status).toBe('completed')

    const p = await h.task()
    const onPending = await h.call('PATCH', `/api/v1/tasks/${p.id}/status`, { body: { status: 'running', attempt: 0 } })
    expect(onPending.status).toBe(409)
  })

  it('answers a repeated final report with the task, unchanged', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    await h.report(t.id, a.token, { status: 'running', attempt: 1 })
    const first = await h.report(t.id, a.token, { status: 'completed', attempt: 1, result: 1 })
    const again = await h.report(t.id, a.token, { status: 'completed', attempt: 1, result: 2 })
    expect(again.status).toBe(200)
    expect(again.body).toEqual(first.body)
  })

  it('fences reports: wrong attempt or an agent that no longer holds the task gets 409 stale_attempt', async () => {
    const a = await h.agent()
    const b = await h.agent()
    const t = await h.assignedTask(a.id)
    // a is slow; the operator cancels and retries; b gets attempt 2
    await h.call('POST', `/api/v1/tasks/${t.id}/cancel`)
    await h.call('POST', `/api/v1/tasks/${t.id}/retry`)
    const moved = await h.call('POST', '/api/v1/tasks/execute', { body: { taskId: t.id, agentId: b.id } })
    expect(moved.body).toMatchObject({ agentId: b.id, attempt: 2 })

    for (const attempt of [1, 2]) {
      const late = await h.report(t.id, a.token, { status: 'running', attempt })
      expect(late.status).toBe(409)
      expect(late.body.code).toBe('stale_attempt')
    }
    const wrongAttempt = await h.report(t.id, b.token, { status: 'running', attempt: 1 })
    expect(wrongAttempt.status).toBe(409)
    expect(wrongAttempt.body).toMatchObject({ code: 'stale_attempt', attempt: 2 })
    expect((await h.call('GET', `/api/v1/tasks/${t.id}`)).body.status).toBe('assigned')

    const ok = await h.report(t.id, b.token, { status: 'running', attempt: 2 })
    expect(ok.status).toBe(200)
  })

  it('fences the same agent across its own attempts', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    await h.call('POST', `/api/v1/tasks/${t.id}/cancel`)
    await h.call('POST', `/api/v1/tasks/${t.id}/retry`)
    await h.call('POST', '/api/v1/tasks/execute', { body: { taskId: t.id, agentId: a.id } })
    expect((await h.report(t.id, a.token, { status: 'running', attempt: 1 })).status).toBe(409)
    expect((await h.report(t.id, a.token, { status: 'running', attempt: 2 })).status).toBe(200)
  })

  it('lets an operator report for an agent, not a viewer', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    const viewer = await h.call('PATCH', `/api/v1/tasks/${t.id}/status`, {
      token: await h.token('viewer'),
      body: { status: 'running', attempt: 1 },
    })
    expect(viewer.status).toBe(403)
    const op = await h.call('PATCH', `/api/v1/tasks/${t.id}/status`, {
      token: await h.token('operator'),
      body: { status: 'failed', attempt: 1, error: { message: 'operator gave up' } },
    })
    expect(op.status).toBe(200)
    expect(op.body.error).toEqual({ code: 'failed', message: 'operator gave up' })
  })

  it('validates the report (progress range, status values, attempt) with 422', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    const res = await h.report(t.id, a.token, { status: 'done', attempt: -1, progress: 101 })
    expect(res.status).toBe(422)
    expect(res.body.errors.map((e: { path: string }) => e.path).sort()).toEqual([
      'body.attempt',
      'body.progress',
      'body.status',
    ])
    expect((await h.report(unknownId, a.token, { status: 'running', attempt: 1 })).status).toBe(404)
  })
})

describe('typed client', () => {
  it('testClient infers request and response types from the routes', async () => {
    const client = testClient(h.app)
    const headers = { authorization: `Bearer ${await h.token('operator')}` }
    const created = await client.api.v1.tasks.$post(
      { json: { name: 'typed', type: 'typed.client', scheduledAt: '2099-01-01T00:00:00Z' }, header: {} },
      { headers },
    )
    expect(created.status).toBe(201)
    if (created.status !== 201) return
    const task = await created.json()
    const got = await client.api.v1.tasks[':id'].$get({ param: { id: task.id } }, { headers })
    expect(got.status).toBe(200)
    if (got.status !== 200) return
    const body = await got.json()
    // `body.status` is typed as the TaskStatus union; the comparison below type-checks only if so.
    const status: 'pending' | 'assigned' | 'running' | 'completed' | 'failed' | 'cancelled' | 'timed_out' = body.status
    expect(status).toBe('pending')
  })
})

describe('GET /api/v1/tasks?name= (prefix, any case, over the newest 10,000 tasks)', () => {
  const names = async (query: string) => {
    const res = await h.call('GET', `/api/v1/tasks?${query}`)
    expect(res.status).toBe(200)
    return res.body.items.map((t: { name: string }) => t.name)
  }

  it('finds tasks whose name starts with the text, in any case, newest first; wildcards are literal', async () => {
    const p = unique('find')
    for (const n of ['Report-Daily', 'report-weekly', 'a%b', 'a_b', 'axb', 'a\\b'])
      await h.pendingTask({ name: `${p}-${n}` })
    await h.pendingTask({ name: `x-${p}-report` })
    const q = (s: string) => `name=${encodeURIComponent(s)}`
    expect(await names(q(`${p}-report`))).toEqual([`${p}-report-weekly`, `${p}-Report-Daily`])
    expect(await names(q(`${p.toUpperCase()}-REPORT-D`))).toEqual([`${p}-Report-Daily`])
    expect(await names(q(`${p}-a%`))).toEqual([`${p}-a%b`])
    expect(await names(q(`${p}-a_`))).toEqual([`${p}-a_b`])
    expect(await names(q(`${p}-a\\`))).toEqual([`${p}-a\\b`])
    expect(await names(`${q(`${p}-report`)}&order=asc`)).toEqual([`${p}-Report-Daily`, `${p}-report-weekly`])
    expect(await names(q(`${p}-nothing`))).toEqual([])
  })

  it('combines with the other filters and pages with the cursor', async () => {
    const p = unique('find')
    const a = await h.agent()
    const running = await h.assignedTask(a.id, { name: `${p}-one`, type: 'find.a' })
    await h.report(running.id, a.token, { status: 'running', attempt: running.attempt })
    await h.pendingTask({ name: `${p}-two`, type: 'find.a' })
    await h.pendingTask({ name: `${p}-three`, type: 'find.b' })
    expect(await names(`name=${p}&type=find.a`)).toEqual([`${p}-two`, `${p}-one`])
    expect(await names(`name=${p}&status=running`)).toEqual([`${p}-one`])
    expect(await names(`name=${p}&agentId=${a.id}`)).toEqual([`${p}-one`])
    const seen: string[] = []
    let cursor: string | null = null
    do {
      const res: CallResult = await h.call('GET', `/api/v1/tasks?name=${p}&limit=1${cursor ? `&cursor=${cursor}` : ''}`)
      seen.push(...res.body.items.map((t: { name: string }) => t.name))
      cursor = res.body.nextCursor
    } while (cursor)
    expect(seen).toEqual([`${p}-three`, `${p}-two`, `${p}-one`])
  })

  it('refuses an empty or overlong name with 422', async () => {
    for (const bad of ['', 'x'.repeat(201)]) {
      const res = await h.call('GET', `/api/v1/tasks?name=${bad}`)
      expect(res.status).toBe(422)
      expect(res.body.errors.map((e: { path: string }) => e.path)).toEqual(['query.name'])
    }
  })

  it('searches the newest 10,000 tasks only: an older one is not matched by name, yet found by id and type', async () => {
    const p = unique('find')
    const old = await h.pendingTask({ name: `${p}-old`, type: `${p}.type` })
    // 10,000 newer tasks, written straight to the table (cancelled: nothing places them).
    const now = h.clock.now()
    for (let i = 0; i < 10; i++) {
      await h.database.db.insert(tasks).values(
        Array.from({ length: 1000 }, (_, k) => ({
          id: uuidv7(),
          name: `filler-${i}-${k}`,
          type: 'find.filler',
          status: 'cancelled' as const,
          availableAt: now,
          createdAt: now,
          updatedAt: now,
        })),
      )
    }
    const recent = await h.pendingTask({ name: `${p}-new`, type: `${p}.type` })
    expect(await names(`name=${p}`)).toEqual([`${p}-new`])
    expect((await h.call('GET', `/api/v1/tasks/${old.id}`)).body.name).toBe(`${p}-old`)
    expect(await names(`type=${p}.type`)).toEqual([`${p}-new`, `${p}-old`])
    // The edge: the 10,000th newest (the second filler written) is in reach, the 10,001st is not.
    expect(await names('name=filler-0-1&order=asc&limit=1')).toEqual(['filler-0-1'])
    expect(await names('name=filler-0-0')).toEqual([])
    expect(recent.id > old.id).toBe(true)
  })
})
