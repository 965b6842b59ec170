import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHarness, type Harness, unique } from './harness'

let h: Harness
beforeAll(async () => {
  h = await createHarness()
})
afterAll(async () => {
  await h.close()
})

const later = '2099-01-01T00:00:00Z'

describe('POST /api/v1/tasks/batch', () => {
  it('creates every task in request order and places what fits at once', async () => {
    const a = await h.agent({ maxConcurrentTasks: 3 })
    const scope = { labels: { scope: h.scope() } }
    const res = await h.call('POST', '/api/v1/tasks/batch', {
      body: {
        tasks: Array.from({ length: 5 }, (_, i) => ({
          name: `b-${i}`,
          type: 'batch.test',
          priority: 5,
          requirements: scope,
        })),
      },
    })
    expect(res.status).toBe(201)
    expect(res.body.created).toBe(5)
    expect(res.body.items.map((t: { name: string }) => t.name)).toEqual(['b-0', 'b-1', 'b-2', 'b-3', 'b-4'])
    const statuses = res.body.items.map((t: { status: string }) => t.status)
    expect(statuses.filter((s: string) => s === 'assigned')).toHaveLength(3) // the agent's three slots
    expect(statuses.filter((s: string) => s === 'pending')).toHaveLength(2)
    expect((await h.call('GET', `/api/v1/agents/${a.id}`)).body.activeTasks).toBe(3)
    for (const t of res.body.items) {
      expect((await h.events({ taskId: t.id })).filter((e) => e.type === 'task.created')).toHaveLength(1)
    }
  })

  it('returns the tasks earlier keys made, and refuses a key reused for another request, writing nothing', async () => {
    const k1 = unique('bk')
    const k2 = unique('bk')
    const items = [
      { name: 'one', type: 't', scheduledAt: later, idempotencyKey: k1 },
      { name: 'two', type: 't', scheduledAt: later, idempotencyKey: k2 },
      { name: 'three', type: 't', scheduledAt: later },
    ]
    const first = await h.call('POST', '/api/v1/tasks/batch', { body: { tasks: items } })
    expect(first.body.created).toBe(3)
    const again = await h.call('POST', '/api/v1/tasks/batch', { body: { tasks: items.slice(0, 2) } })
    expect(again.status).toBe(201)
    expect(again.body.created).toBe(0)
    expect(again.body.items.map((t: { id: string }) => t.id)).toEqual(
      first.body.items.slice(0, 2).map((t: { id: string }) => t.id),
    )
    // A single create with the same key and request is the same task too.
    const single = await h.call('POST', '/api/v1/tasks', { body: items[0] })
    expect(single.status).toBe(200)
    expect(single.body.id).toBe(first.body.items[0].id)

    const fresh = unique('bk')
    const before = (await h.call('GET', '/api/v1/tasks?limit=100&type=t')).body.items.length
    const reused = await h.call('POST', '/api/v1/tasks/batch', {
      body: {
        tasks: [
          { name: 'new', type: 't', scheduledAt: later, idempotencyKey: fresh },
          { name: 'changed', type: 't', scheduledAt: later, idempotencyKey: k2 },
        ],
      },
    })
    expect(reused.status).toBe(422)
    expect(reused.body.code).toBe('idempotency_key_reused')
    expect(reused.body.errors[0].path).toBe('body.tasks.1.idempotencyKey')
    expect((await h.call('GET', '/api/v1/tasks?limit=100&type=t')).body.items.length).toBe(before)
    // The same key twice in one batch, same request: one task.
    const dup = unique('bk')
    const twice = await h.call('POST', '/api/v1/tasks/batch', {
      body: {
        tasks: [
          { name: 'x', type: 't', scheduledAt: later, idempotencyKey: dup },
          { name: 'x', type: 't', scheduledAt: later, idempotencyKey: dup },
        ],
      },
    })
    expect(twice.body.created).toBe(1)
    expect(twice.body.items[0].id).toBe(twice.body.items[1].id)
    // The same key twice in one batch for two different tasks: refused whole, nothing written.
    const clash = unique('bk')
    const count = (await h.call('GET', '/api/v1/tasks?limit=100&type=t')).body.items.length
    const both = await h.call('POST', '/api/v1/tasks/batch', {
      body: {
        tasks: [
          { name: 'ok', type: 't', scheduledAt: later },
          { name: 'y', type: 't', scheduledAt: later, idempotencyKey: clash },
          { name: 'z', type: 't', scheduledAt: later, idempotencyKey: clash },
        ],
      },
    })
    expect(both.status).toBe(422)
    expect(both.body.errors[0].path).toBe('body.tasks.2.idempotencyKey')
    expect((await h.call('GET', '/api/v1/tasks?limit=100&type=t')).body.items.length).toBe(count)
  })

  it('refuses an empty batch, more than 1,000 tasks, and invalid items with 422', async () => {
    expect((await h.call('POST', '/api/v1/tasks/batch', { body: { tasks: [] } })).status).toBe(422)
    const many = Array.from({ length: 1001 }, (_, i) => ({ name: `m${i}`, type: 't' }))
    expect((await h.call('POST', '/api/v1/tasks/batch', { body: { tasks: many } })).status).toBe(422)
    const bad = await h.call('POST', '/api/v1/tasks/batch', {
      body: { tasks: [{ name: 'ok', type: 't' }, { name: '' }] },
    })
    expect(bad.status).toBe(422)
    expect(bad.body.errors.map((e: { path: string }) => e.path)).toEqual(
      expect.arrayContaining(['body.tasks.1.name', 'body.tasks.1.type']),
    )
    const viewer = await h.token('viewer')
    const denied = await h.call('POST', '/api/v1/tasks/batch', {
      token: viewer,
      body: { tasks: [{ name: 'a', type: 't' }] },
    })
    expect(denied.status).toBe(403)
  })
})
