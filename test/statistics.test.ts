import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/client'
import { createHarness, type Harness } from './harness'

let h: Harness
beforeAll(async () => {
  h = await createHarness({ HEARTBEAT_TIMEOUT_SECONDS: '90' })
})
afterAll(async () => {
  await h.close()
})
// Statistics cover the whole fleet: each test starts from empty tables.
beforeEach(async () => {
  await h.database.db.execute(
    sql`TRUNCATE agents, tasks, task_logs, task_log_totals, events, task_counts, scheduler_state`,
  )
  await h.kv.invalidate(['agenticcp:stats:agents', 'agenticcp:stats:tasks'])
})

/** What the counters say, against a plain count of the rows. */
async function countersMatchRows() {
  const counted = await rowsOf<{ status: string; n: number }>(
    h.database.db,
    sql`SELECT status, count(*)::int AS n FROM tasks GROUP BY status ORDER BY status`,
  )
  const kept = await rowsOf<{ status: string; n: number }>(
    h.database.db,
    sql`SELECT status, sum(n)::int AS n FROM task_counts GROUP BY status HAVING sum(n) <> 0 ORDER BY status`,
  )
  expect(kept).toEqual(counted)
}

describe('GET /api/v1/agents/statistics', () => {
  it('counts agents by status and provider, and online slots used and free', async () => {
    const a = await h.agent({ provider: 'aws', maxConcurrentTasks: 2 })
    await h.agent({ provider: 'aws', maxConcurrentTasks: 3 })
    await h.agent({ provider: 'gcp', maxConcurrentTasks: 4 })
    const d = await h.agent({ provider: 'azure', maxConcurrentTasks: 5 })
    await h.call('PATCH', `/api/v1/agents/${d.id}/status`, { body: { status: 'draining' } })
    await h.agent({ provider: 'onprem' }, { online: false })
    await h.assignedTask(a.id)

    const res = await h.call('GET', '/api/v1/agents/statistics', { token: await h.token('viewer') })
    expect(res.status).toBe(200)
    expect(res.body).toEqual({
      total: 5,
      byStatus: { online: 3, draining: 1, maintenance: 0, quarantined: 0, error: 0, offline: 1 },
      byProvider: { aws: 2, gcp: 1, azure: 1, onprem: 1 },
      slots: { total: 9, used: 1, free: 8 },
      activeTasksByStatus: { online: 1, draining: 0, maintenance: 0, quarantined: 0, error: 0, offline: 0 },
    })
  })

  it('counts slots total, used and free over the same agents (the online ones); tasks held elsewhere apart', async () => {
    // The figure an operator saw: "196 used · 0 free of 155", used counting every agent.
    const on = await h.agent({ maxConcurrentTasks: 3 })
    const over = await h.agent({ maxConcurrentTasks: 2 })
    const draining = await h.agent({ maxConcurrentTasks: 4 })
    const down = await h.agent({ maxConcurrentTasks: 2 })
    // A quarantined agent is not capacity either, whatever its slots.
    const isolated = await h.agent({ maxConcurrentTasks: 5 })
    for (const a of [on, over, over, draining, draining, draining, down, isolated]) await h.assignedTask(a.id)
    await h.call('PATCH', `/api/v1/agents/${draining.id}/status`, { body: { status: 'draining' } })
    await h.call('PATCH', `/api/v1/agents/${down.id}/status`, { body: { status: 'maintenance' } })
    await h.call('POST', `/api/v1/agents/${isolated.id}/quarantine`, { body: { reason: 'suspect' } })
    expect((await h.call('GET', '/api/v1/agents/statistics')).body.slots, 'online: 3 + 2 slots, 1 + 2 used').toEqual({
      total: 5,
      used: 3,
      free: 2,
    })

    // An online agent whose maximum is lowered below what it holds has no free slot (not -1).
    const a = (await h.call('GET', `/api/v1/agents/${over.id}`)).body
    const lowered = await h.call('PUT', `/api/v1/agents/${over.id}`, {
      body: { name: a.name, provider: a.provider, region: a.region, labels: a.labels, maxConcurrentTasks: 1 },
    })
    expect(lowered.body).toMatchObject({ status: 'online', activeTasks: 2, maxConcurrentTasks: 1 })
    const s = (await h.call('GET', '/api/v1/agents/statistics')).body
    expect(s.slots).toEqual({ total: 4, used: 3, free: 2 })
    expect(s.activeTasksByStatus).toEqual({
      online: 3,
      draining: 3,
      maintenance: 1,
      quarantined: 1,
      error: 0,
      offline: 0,
    })
  })
})

describe('GET /api/v1/tasks/statistics', () => {
  it('reports status counts, queue depth by priority, recent outcomes, durations and placement latency', async () => {
    const t0 = h.clock.now().getTime()
    const slow = await h.pendingTask({ priority: 2 })
    await h.pendingTask({ priority: 2 })
    await h.pendingTask({ priority: 9 })
    const a = await h.agent({ maxConcurrentTasks: 10 })
    // Three tasks that run 10, 20 and 30 s; one that fails; one cancelled.
    for (const seconds of [10, 20, 30]) {
      const t = await h.assignedTask(a.id)
      await h.report(t.id, a.token, { status: 'running', attempt: 1 })
      h.clock.advance(seconds * 1000)
      await h.report(t.id, a.token, { status: 'completed', attempt: 1 })
    }
    const f = await h.assignedTask(a.id, { maxAttempts: 1 })
    await h.report(f.id, a.token, { status: 'failed', attempt: 1 })
    const c = await h.pendingTask()
    await h.call('POST', `/api/v1/tasks/${c.id}/cancel`)
    const r = await h.assignedTask(a.id)
    await h.report(r.id, a.token, { status: 'running', attempt: 1 })

    const res = await h.call('GET', '/api/v1/tasks/statistics')
    expect(res.status).toBe(200)
    const s = res.body
    expect(s.total).toBe(9)
    expect(s.byStatus).toEqual({
      pending: 3,
      assigned: 0,
      running: 1,
      completed: 3,
      failed: 1,
      cancelled: 1,
      timed_out: 0,
    })
    expect(s.queue).toEqual({
      pending: 3,
      byPriority: { '2': 2, '9': 1 },
      oldestPendingAgeSeconds: Math.round((h.clock.now().getTime() - t0) / 1000),
    })
    expect(s.recent.last60Minutes).toEqual({ completed: 3, failed: 1, timedOut: 0, cancelled: 1 })
    expect(s.recent.successRate).toBe(0.75)
    expect(s.recent.completedPerMinute).toHaveLength(60)
    expect(s.recent.completedPerMinute.reduce((x: number, y: number) => x + y, 0)).toBe(3)
    expect(s.durationSeconds).toEqual({ p50: 20, p95: 29, sample: 3 })
    expect(s.createToAssignedSeconds.sample).toBe(4)
    expect(slow.status).toBe('pending')

    h.clock.advance(10 * 60_000)
    // No write happened, so a cached copy (Redis, up to 2 s) may still be served: drop it.
    await h.kv.invalidate(['agenticcp:stats:tasks'])
    const later = (await h.call('GET', '/api/v1/tasks/statistics')).body
    expect(later.recent.last5Minutes).toEqual({ completed: 0, failed: 0, timedOut: 0, cancelled: 0 })
    expect(later.recent.last60Minutes.completed).toBe(3)
  })

  it('keeps its counters equal to the rows through every kind of write, set-based sweeps included', async () => {
    const a = await h.agent({ maxConcurrentTasks: 20 })
    const made = []
    for (let i = 0; i < 12; i++) made.push(await h.task({ priority: 1 + (i % 10) }))
    await countersMatchRows()
    for (const t of made.slice(0, 4)) await h.report(t.id, a.token, { status: 'running', attempt: t.attempt })
    await h.report(made[0]?.id, a.token, { status: 'completed', attempt: 1 })
    await h.call('POST', `/api/v1/tasks/${made[1]?.id}/cancel`)
    await h.call('DELETE', `/api/v1/tasks/${made[5]?.id}`)
    await countersMatchRows()
    h.clock.advance(400_000) // past the timeouts and the heartbeat timeout: one sweep moves many rows
    await h.sweep()
    await countersMatchRows()
    await h.call('DELETE', `/api/v1/agents/${a.id}?force=true`)
    await countersMatchRows()
  })
})

describe('GET /api/v1/tasks/statistics: failuresByCode', () => {
  it('counts the last hour’s failed and timed-out tasks per error code, most first, the rest summed', async () => {
    const a = await h.agent({ maxConcurrentTasks: 100 })
    const fail = async (code: string | null, opts: Record<string, unknown> = {}) => {
      const t = await h.assignedTask(a.id, { maxAttempts: 1, ...opts })
      const error = code ? { code, message: `failed with ${code}` } : { message: 'no code given' }
      expect((await h.report(t.id, a.token, { status: 'failed', attempt: t.attempt, error })).status).toBe(200)
      return t
    }
    // Over an hour ago: not counted.
    await fail('stale_code')
    h.clock.advance(61 * 60_000)
    for (let i = 0; i < 6; i++) await fail('unsupported_type')
    await fail('exit_1')
    await fail('exit_1')
    await fail(null)
    // A failed task retried since is waiting again, not failed: not counted.
    const retried = await fail('retried_code')
    expect((await h.call('POST', `/api/v1/tasks/${retried.id}/retry`)).status).toBe(200)
    // A timed-out one counts under the code the sweep gives it.
    const slow = await h.assignedTask(a.id, { maxAttempts: 1, timeoutSeconds: 5 })
    await h.report(slow.id, a.token, { status: 'running', attempt: slow.attempt })
    h.clock.advance(10_000)
    await h.call('POST', '/api/v1/agents/heartbeat', { token: a.token, body: { agentId: a.id } })
    await h.sweep()
    expect((await h.call('GET', `/api/v1/tasks/${slow.id}`)).body.status).toBe('timed_out')
    // Completed and cancelled tasks are not failures.
    const ok = await h.assignedTask(a.id)
    await h.report(ok.id, a.token, { status: 'running', attempt: ok.attempt })
    await h.report(ok.id, a.token, { status: 'completed', attempt: ok.attempt })
    await h.call('POST', `/api/v1/tasks/${(await h.pendingTask()).id}/cancel`)

    const s = (await h.call('GET', '/api/v1/tasks/statistics')).body
    expect(s.failuresByCode).toEqual({
      codes: [
        { code: 'unsupported_type', count: 6 },
        { code: 'exit_1', count: 2 },
        // A report without a code is stored with code "failed"; ties go by code.
        { code: 'failed', count: 1 },
        { code: 'timeout', count: 1 },
      ],
      other: 0,
      sample: 10,
    })
    // The same failures as the hour's outcomes (with nothing retried in between).
    expect(s.recent.last60Minutes.failed + s.recent.last60Minutes.timedOut).toBe(10)

    // Past 20 codes, the rest are summed, not listed.
    for (let i = 0; i < 22; i++) await fail(`code_${String(i).padStart(2, '0')}`)
    const many = (await h.call('GET', '/api/v1/tasks/statistics')).body.failuresByCode
    expect(many.codes).toHaveLength(20)
    expect(many.codes.slice(0, 2)).toEqual([
      { code: 'unsupported_type', count: 6 },
      { code: 'exit_1', count: 2 },
    ])
    expect(many.sample).toBe(32)
    expect(many.other).toBe(32 - many.codes.reduce((n: number, c: { count: number }) => n + c.count, 0))
    expect(many.other).toBe(6)
  })
})
