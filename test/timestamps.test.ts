import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/client'
import { createLogger } from '../src/lib/logger'
import { createHarness, type Harness, unique } from './harness'

/**
 * Timestamps at the edges. A request may name an instant from 2000-01-01 to the end of
 * 9999 only (one schema, `TimestampInput`), and a stored instant the API cannot write (a
 * row planted out of range) is answered as null and logged, never failing the answer.
 *
 * The poison task that started it: `scheduledAt: "0000-01-01T00:00:00Z"` was stored by
 * node-postgres as `0001-01-01 BC`, read back as an Invalid Date, and every answer holding
 * the task (its create, its page, its agent's heartbeat) failed with 500, forever.
 */
const logs: Record<string, unknown>[] = []
const logger = createLogger({ level: 'warn', format: 'json', write: (line) => logs.push(JSON.parse(line)) })

let h: Harness
beforeAll(async () => {
  h = await createHarness({ RATE_LIMIT_PER_MINUTE: '0' }, undefined, { logger })
})
afterAll(async () => h.close())

const tasksNamed = async (name: string) =>
  (await rowsOf<{ n: number }>(h.database.db, sql`SELECT count(*)::int AS n FROM tasks WHERE name = ${name}`))[0]?.n

const outOfRange = [
  '0000-01-01T00:00:00Z', // stored as 0001-01-01 BC by node-postgres
  '0001-01-01T00:00:00Z',
  '1999-12-31T23:59:59.999Z',
  '9999-12-31T23:00:00-05:00', // 10000-01-01T04:00Z
]

describe('an instant a request names', () => {
  it('refuses the poison task with 422 naming scheduledAt, writes nothing, and its agent keeps working', async () => {
    const a = await h.agent()
    const name = unique('poison')
    const res = await h.call('POST', '/api/v1/tasks', {
      body: { name, type: 'x', scheduledAt: '0000-01-01T00:00:00Z', requirements: { labels: { scope: h.scope() } } },
    })
    expect(res.status).toBe(422)
    expect(res.body.code).toBe('validation_failed')
    expect(res.body.errors).toEqual([{ path: 'body.scheduledAt', message: expect.stringContaining('2000-01-01') }])
    expect(await tasksNamed(name)).toBe(0)
    const hb = await h.call('POST', '/api/v1/agents/heartbeat', { token: a.token, body: { agentId: a.id } })
    expect(hb.status).toBe(200)
    expect(hb.body.assignments).toEqual([])
    // A task it may take still reaches it.
    const ok = await h.task({ name: unique('fine'), type: 'x' })
    expect(ok.status).toBe('assigned')
    expect(ok.agentId).toBe(a.id)
  })

  it('refuses scheduledAt outside 2000-01-01..9999-12-31 on create, batch and update alike', async () => {
    const t = await h.pendingTask()
    for (const scheduledAt of outOfRange) {
      const name = unique('range')
      const one = await h.call('POST', '/api/v1/tasks', { body: { name, type: 'x', scheduledAt } })
      expect(one.status, scheduledAt).toBe(422)
      expect(one.body.errors.map((e: { path: string }) => e.path)).toEqual(['body.scheduledAt'])

      const batch = await h.call('POST', '/api/v1/tasks/batch', {
        body: {
          tasks: [
            { name, type: 'x' },
            { name, type: 'x', scheduledAt },
          ],
        },
      })
      expect(batch.status, scheduledAt).toBe(422)
      expect(batch.body.errors.map((e: { path: string }) => e.path)).toEqual(['body.tasks.1.scheduledAt'])
      expect(await tasksNamed(name)).toBe(0)

      const put = await h.call('PUT', `/api/v1/tasks/${t.id}`, { body: { name: t.name, type: t.type, scheduledAt } })
      expect(put.status, scheduledAt).toBe(422)
      expect(put.body.errors.map((e: { path: string }) => e.path)).toEqual(['body.scheduledAt'])
    }
    const after = await h.call('GET', `/api/v1/tasks/${t.id}`)
    expect(after.body.version).toBe(t.version)
    expect(after.body.scheduledAt).toBe('2099-01-01T00:00:00.000Z')
  })

  it('takes the bounds themselves, and an offset, and answers them as stored', async () => {
    for (const [given, stored] of [
      ['2000-01-01T00:00:00Z', '2000-01-01T00:00:00.000Z'],
      ['9999-12-31T23:59:59.999Z', '9999-12-31T23:59:59.999Z'],
      ['9999-12-31T18:59:59.999-05:00', '9999-12-31T23:59:59.999Z'],
      ['2001-01-01T02:00:00+02:00', '2001-01-01T00:00:00.000Z'],
    ]) {
      const t = await h.task({ scheduledAt: given, requirements: { agentId: '00000000-0000-7000-8000-000000000000' } })
      expect(t.scheduledAt, given).toBe(stored)
      expect((await h.call('GET', `/api/v1/tasks/${t.id}`)).body.scheduledAt).toBe(stored)
    }
  })

  it('refuses a log line whose `at` is out of range, naming it, and stores none of the request', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    expect((await h.report(t.id, a.token, { status: 'running', attempt: t.attempt })).status).toBe(200)
    for (const at of outOfRange) {
      const res = await h.call('POST', `/api/v1/tasks/${t.id}/logs`, {
        token: a.token,
        body: {
          attempt: t.attempt,
          chunks: [
            { seq: 0, stream: 'stdout', data: 'fine\n', at: '2026-01-01T00:00:00Z' },
            { seq: 1, stream: 'stdout', data: 'poison\n', at },
          ],
        },
      })
      expect(res.status, at).toBe(422)
      expect(res.body.errors.map((e: { path: string }) => e.path)).toEqual(['body.chunks.1.at'])
    }
    expect((await h.call('GET', `/api/v1/tasks/${t.id}/logs`)).body.items).toEqual([])
  })

  it('says the range in the OpenAPI document', async () => {
    const doc = (await h.call('GET', '/openapi.json', { token: null })).body
    const input = doc.components.schemas.TaskCreateInput.properties.scheduledAt
    expect(input.description).toContain('2000-01-01')
    expect(input.description).toContain('9999-12-31')
  })
})

/**
 * Values a row can hold that the drivers read as an Invalid Date (PGlite and node-postgres
 * alike: drizzle and `to_jsonb` both hand the text to `new Date`), or as a Date that
 * `toISOString` cannot write in four digits.
 */
const planted = {
  bc: '0001-01-01 BC', // what the poison task stored
  infinity: 'infinity',
  max: '294276-12-31', // Postgres's last day
  year10000: '10000-01-01', // a valid Date, written `+010000-…`
}

describe('a stored timestamp the API cannot write', () => {
  const warningsFor = (key: string, id: string) =>
    logs.filter((l) => l.level === 'warn' && l[key] === id && String(l.msg).includes('cannot write'))

  it('is answered as null and logged once per answer; the task, its pages and its agent’s heartbeats still answer 200', async () => {
    const a = await h.agent({ maxConcurrentTasks: 3 })
    const bad = await h.assignedTask(a.id, { name: unique('bad') })
    const good = await h.assignedTask(a.id, { name: unique('good') })
    const db = h.database.db
    await db.execute(sql`
      UPDATE tasks SET scheduled_at = ${planted.bc}::timestamptz, created_at = ${planted.infinity}::timestamptz,
        assigned_at = ${planted.max}::timestamptz, updated_at = ${planted.year10000}::timestamptz
       WHERE id = ${bad.id}`)
    await db.execute(sql`UPDATE agents SET created_at = '-infinity'::timestamptz WHERE id = ${a.id}`)
    logs.length = 0

    const one = await h.call('GET', `/api/v1/tasks/${bad.id}`)
    expect(one.status, JSON.stringify(one.body)).toBe(200)
    expect(one.body).toMatchObject({
      id: bad.id,
      status: 'assigned',
      scheduledAt: null,
      createdAt: null,
      assignedAt: null,
      updatedAt: null,
    })
    expect(warningsFor('taskId', bad.id)).toEqual([
      expect.objectContaining({ columns: ['scheduledAt', 'createdAt', 'assignedAt', 'updatedAt'] }),
    ])

    const list = await h.call('GET', `/api/v1/tasks?agentId=${a.id}`)
    expect(list.status, JSON.stringify(list.body)).toBe(200)
    expect(list.body.items.map((t: { id: string }) => t.id).sort()).toEqual([bad.id, good.id].sort())
    const goodOne = list.body.items.find((t: { id: string }) => t.id === good.id)
    expect(goodOne.createdAt).toBe(good.createdAt)
    expect(goodOne.assignedAt).toBe(good.assignedAt)

    logs.length = 0
    const hb = await h.call('POST', '/api/v1/agents/heartbeat', { token: a.token, body: { agentId: a.id } })
    expect(hb.status, JSON.stringify(hb.body)).toBe(200)
    expect(hb.body.agent.createdAt).toBeNull()
    expect(hb.body.agent.updatedAt).not.toBeNull()
    const held = hb.body.assignments.find((t: { id: string }) => t.id === bad.id)
    expect(held).toMatchObject({ scheduledAt: null, createdAt: null, assignedAt: null, updatedAt: null })
    expect(warningsFor('taskId', bad.id)).toHaveLength(1)
    expect(warningsFor('agentId', a.id)).toEqual([expect.objectContaining({ columns: ['createdAt'] })])

    // The sweep, past the assign timeout, still runs over it (and requeues it, as it should).
    expect((await h.call('POST', '/api/v1/scheduler/sweep')).status).toBe(200)

    // And the agent can run it: nothing about it is stuck.
    const run = await h.report(bad.id, a.token, { status: 'running', attempt: bad.attempt })
    expect(run.status, JSON.stringify(run.body)).toBe(200)
    const done = await h.report(bad.id, a.token, { status: 'completed', attempt: bad.attempt, result: { ok: 1 } })
    expect(done.status, JSON.stringify(done.body)).toBe(200)
    expect(done.body).toMatchObject({ status: 'completed', scheduledAt: null, createdAt: null })

    expect((await h.call('GET', `/api/v1/agents/${a.id}`)).status).toBe(200)
    expect((await h.call('GET', '/api/v1/agents')).status).toBe(200)
    expect((await h.call('GET', '/api/v1/tasks/statistics')).status).toBe(200)
    expect((await h.call('GET', '/api/v1/agents/statistics')).status).toBe(200)
  })

  it('does not stop a planted pending task from being placed: by a heartbeat, a create, the sweep', async () => {
    const a = await h.agent({ maxConcurrentTasks: 10 }, { online: false })
    const plant = async () => {
      const t = await h.pendingTask({ requirements: { agentId: a.id } })
      // Due now, and created at an instant Postgres before 17 cannot subtract from.
      await h.database.db.execute(
        sql`UPDATE tasks SET created_at = 'infinity', available_at = '2000-01-01T00:00:00Z' WHERE id = ${t.id}`,
      )
      return t.id as string
    }
    const statusOf = async (id: string) => {
      const res = await h.call('GET', `/api/v1/tasks/${id}`)
      expect(res.status, JSON.stringify(res.body)).toBe(200)
      expect(res.body.createdAt).toBeNull()
      return res.body.status
    }

    const byHeartbeat = await plant()
    const hb = await h.call('POST', '/api/v1/agents/heartbeat', { token: a.token, body: { agentId: a.id } })
    expect(hb.status, JSON.stringify(hb.body)).toBe(200)
    expect(hb.body.assignments.map((t: { id: string }) => t.id)).toEqual([byHeartbeat])

    const byCreate = await plant()
    const fresh = await h.call('POST', '/api/v1/tasks', {
      body: { name: unique('fresh'), type: 'test.run', requirements: { agentId: a.id } },
    })
    expect(fresh.status, JSON.stringify(fresh.body)).toBe(201)
    expect(await statusOf(byCreate)).toBe('assigned')

    await h.call('PATCH', `/api/v1/agents/${a.id}/status`, { body: { status: 'draining' } })
    const bySweep = await plant()
    await h.call('PATCH', `/api/v1/agents/${a.id}/status`, { body: { status: 'online' } })
    const sweep = await h.call('POST', '/api/v1/scheduler/sweep')
    expect(sweep.status, JSON.stringify(sweep.body)).toBe(200)
    expect(await statusOf(bySweep)).toBe('assigned')
    expect((await h.call('GET', '/api/v1/tasks/statistics')).status).toBe(200)
  })

  it('in an event, a log line or a registration token: null, and the page still answers', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    expect((await h.report(t.id, a.token, { status: 'running', attempt: t.attempt })).status).toBe(200)
    const write = await h.call('POST', `/api/v1/tasks/${t.id}/logs`, {
      token: a.token,
      body: { attempt: t.attempt, chunks: [{ seq: 0, stream: 'stdout', data: 'hello\n' }] },
    })
    expect(write.status).toBe(202)
    const token = await h.call('POST', '/api/v1/registration-tokens', { body: { description: 'planted' } })
    expect(token.status).toBe(201)
    const db = h.database.db
    await db.execute(sql`UPDATE events SET created_at = ${planted.bc}::timestamptz WHERE task_id = ${t.id}`)
    await db.execute(sql`UPDATE task_logs SET at = ${planted.max}::timestamptz WHERE task_id = ${t.id}`)
    await db.execute(
      sql`UPDATE registration_tokens SET created_at = ${planted.year10000}::timestamptz WHERE id = ${token.body.id}`,
    )
    logs.length = 0

    const history = await h.call('GET', `/api/v1/tasks/${t.id}/events`)
    expect(history.status, JSON.stringify(history.body)).toBe(200)
    expect(history.body.items.length).toBeGreaterThan(0)
    for (const e of history.body.items) expect(e.time).toBeNull()
    const all = await h.call('GET', `/api/v1/events?after=0&limit=1000&taskId=${t.id}`)
    expect(all.status).toBe(200)
    expect(all.body.items.every((e: { time: unknown }) => e.time === null)).toBe(true)
    expect(logs.some((l) => l.level === 'warn' && String(l.msg).includes('cannot write') && 'eventId' in l)).toBe(true)

    const log = await h.call('GET', `/api/v1/tasks/${t.id}/logs`)
    expect(log.status, JSON.stringify(log.body)).toBe(200)
    expect(log.body.items).toEqual([{ seq: 0, stream: 'stdout', data: 'hello\n', at: null }])

    const tokens = await h.call('GET', '/api/v1/registration-tokens?limit=100')
    expect(tokens.status).toBe(200)
    expect(tokens.body.items.find((r: { id: string }) => r.id === token.body.id)).toMatchObject({
      createdAt: null,
      expiresAt: token.body.expiresAt,
    })
    expect(warningsFor('registrationId', token.body.id)).toHaveLength(1)
  })
})
