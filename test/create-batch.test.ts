import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Outcome } from '../src/lib/group-commit'
import { Metrics } from '../src/lib/metrics'
import { type Created, type CreateEntry, CreateWriter } from '../src/services/create-writer'
import { createHarness, type Harness, unique } from './harness'

/**
 * Single creates written together (natural batching: src/services/create-writer.ts and
 * `writeCreates` in src/services/tasks.ts): one statement inserts the creates in flight,
 * one more places them, and each create is answered with its own task, or its own error.
 */

let h: Harness
beforeAll(async () => {
  h = await createHarness()
})
afterAll(async () => {
  await h.close()
})

/** The create batch histogram: how many batches, how many creates in them. */
async function batches() {
  const text: string = (await h.call('GET', '/metrics', { token: null })).body
  const count = Number(/^agenticcp_create_batch_tasks_count (\d+)/m.exec(text)?.[1] ?? 0)
  const sum = Number(/^agenticcp_create_batch_tasks_sum (\S+)/m.exec(text)?.[1] ?? 0)
  return { count, sum }
}

describe('POST /api/v1/tasks, concurrent creates', () => {
  it('share statements, each answered with its own task, all placed at once on the free agent', async () => {
    const a = await h.agent({ maxConcurrentTasks: 50 })
    const before = await batches()
    const names = Array.from({ length: 40 }, () => unique('c'))
    const answers = await Promise.all(
      names.map((name) =>
        h.call('POST', '/api/v1/tasks', {
          body: { name, type: 'test.run', requirements: { labels: { scope: h.scope() } } },
        }),
      ),
    )
    expect(answers.map((r) => r.status)).toEqual(names.map(() => 201))
    expect(answers.map((r) => r.body.name)).toEqual(names)
    expect(new Set(answers.map((r) => r.body.id)).size).toBe(40)
    const after = await batches()
    expect(after.sum - before.sum).toBe(40)
    // Fewer statements than creates: some batch held several.
    expect(after.count - before.count).toBeLessThan(40)
    // All placed at once on the one agent that fits: by their own batch's placement, or by
    // one that ran after their insert committed (then the answer, written before, says pending).
    expect(answers.every((r) => ['assigned', 'pending'].includes(r.body.status))).toBe(true)
    for (const r of answers) {
      const t = (await h.call('GET', `/api/v1/tasks/${r.body.id}`)).body
      expect([t.status, t.agentId]).toEqual(['assigned', a.id])
    }
    const agent = (await h.call('GET', `/api/v1/agents/${a.id}`)).body
    expect(agent.activeTasks).toBe(40)
    for (const r of answers.slice(0, 5)) {
      const evs = (await h.call('GET', `/api/v1/tasks/${r.body.id}/events`)).body.items
      expect(evs.map((e: { type: string }) => e.type)).toEqual(['task.created', 'task.assigned'])
      expect(evs[1].data).toMatchObject({ via: 'create', attempt: 1 })
    }
  })

  it('judge each idempotency key on its own: a reused key fails alone, a repeat gets the first task', async () => {
    const body = { name: unique('k'), type: 'test.run', requirements: { labels: { scope: h.scope() } } }
    const key = unique('key')
    const first = await h.call('POST', '/api/v1/tasks', { body, headers: { 'idempotency-key': key } })
    expect(first.status).toBe(201)
    const [clash, repeat, ...others] = await Promise.all([
      h.call('POST', '/api/v1/tasks', { body: { ...body, priority: 9 }, headers: { 'idempotency-key': key } }),
      h.call('POST', '/api/v1/tasks', { body, headers: { 'idempotency-key': key } }),
      ...Array.from({ length: 8 }, () => h.call('POST', '/api/v1/tasks', { body: { ...body, name: unique('o') } })),
    ])
    expect(clash?.status).toBe(422)
    expect(clash?.body).toMatchObject({ code: 'idempotency_key_reused', taskId: first.body.id })
    expect(repeat?.status).toBe(200)
    expect(repeat?.body.id).toBe(first.body.id)
    expect(others.map((r) => r.status)).toEqual(others.map(() => 201))
    // Two new creates with one new key, racing: one task, both answered with it.
    const fresh = unique('key')
    const pair = await Promise.all(
      [0, 1].map(() => h.call('POST', '/api/v1/tasks', { body, headers: { 'idempotency-key': fresh } })),
    )
    expect(pair.map((r) => r.status).sort()).toEqual([200, 201])
    expect(pair[0]?.body.id).toBe(pair[1]?.body.id)
  })
})

describe('CreateWriter', () => {
  it('writes each create of a failed batch again alone, so only the bad one fails', async () => {
    const calls: number[] = []
    const write = async (entries: CreateEntry[]): Promise<Outcome<Created>[]> => {
      calls.push(entries.length)
      // A stand-in for a statement the database refuses for one of its rows.
      if (entries.some((e) => e.values.id === 'bad')) throw new Error('value too long for type')
      await new Promise((r) => setTimeout(r, 5))
      return entries.map((e) => ({ value: { task: { id: e.values.id } as Created['task'], created: true } }))
    }
    const metrics = new Metrics()
    const writer = new CreateWriter(write, { batchSize: 64, inFlight: 1, metrics })
    const entry = (id: string): CreateEntry => ({ hash: null, values: { id } })
    const lone = writer.create(entry('a')) // alone and at once
    const rest = ['b', 'bad', 'c'].map((id) => writer.create(entry(id))) // together, next
    expect((await lone).task.id).toBe('a')
    const settled = await Promise.allSettled(rest)
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'fulfilled'])
    expect(settled[0]?.status === 'fulfilled' && settled[0].value.task.id).toBe('b')
    expect(settled[2]?.status === 'fulfilled' && settled[2].value.task.id).toBe('c')
    expect(calls).toEqual([1, 3, 1, 1, 1])
    expect(metrics.render()).toMatch(/^agenticcp_create_batch_tasks_sum 4$/m)
  })

  it('fails the whole batch at once when the database is unreachable (each gets the 503)', async () => {
    let calls = 0
    const down = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' })
    const writer = new CreateWriter(
      async () => {
        calls++
        await new Promise((r) => setTimeout(r, 5))
        throw down
      },
      { batchSize: 64, inFlight: 1 },
    )
    const all = await Promise.allSettled(['a', 'b', 'c'].map((id) => writer.create({ hash: null, values: { id } })))
    expect(all.every((s) => s.status === 'rejected' && s.reason === down)).toBe(true)
    expect(calls).toBe(2) // the lone first, then the two that waited: never one by one
  })
})
