import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/client'
import { createHarness, type Harness } from './harness'

/**
 * The rollout invariants of docs/rollouts.md, with 200 simulated agents heartbeating over
 * HTTP (their reports batched in their heartbeats, sent all at once each round, so many
 * reports of one rollout's tasks race), some of them failing their task. A sampler reads
 * the rollout's targets as the rounds run; every sample must hold the invariants.
 */

let h: Harness
beforeAll(async () => {
  h = await createHarness({ RATE_LIMIT_PER_MINUTE: '0' })
})
afterAll(async () => {
  await h.close()
})

type Agent = Awaited<ReturnType<Harness['agent']>>

const N = 200

async function fleet(n: number) {
  const out: Agent[] = []
  // In parallel groups: registration and the first heartbeat are two calls each.
  for (let i = 0; i < n; i += 20) {
    out.push(
      ...(await Promise.all(Array.from({ length: Math.min(20, n - i) }, () => h.agent({ maxConcurrentTasks: 1 })))),
    )
  }
  return out
}

interface Sample {
  inFlight: number
  sum: number
  tasksLive: number
}

/** The rollout's targets in flight, their sum by state, and its tasks not ended, read in one statement. */
async function sample(id: string): Promise<Sample> {
  const [r] = await rowsOf<Sample>(
    h.database.db,
    sql`SELECT (SELECT count(*)::int FROM rollout_targets WHERE rollout_id = ${id} AND status IN ('dispatched', 'running')) AS "inFlight",
               (SELECT count(*)::int FROM rollout_targets WHERE rollout_id = ${id}) AS sum,
               (SELECT count(*)::int FROM tasks WHERE rollout_id = ${id} AND status IN ('pending', 'assigned', 'running')) AS "tasksLive"`,
  )
  return r as Sample
}

/**
 * One round: every agent heartbeats at once; one holding its rollout task reports it run and
 * ended (failed when it is in `fail`) in its next heartbeat. Every tenth agent samples the
 * rollout after its report, so samples fall among the racing reports. Returns how many
 * ended a task.
 */
async function round(id: string, agents: Agent[], fail: Set<string>, samples: Sample[]) {
  const results = await Promise.all(
    agents.map(async (a, i) => {
      const beat = await h.call('POST', '/api/v1/agents/heartbeat', { token: a.token, body: { agentId: a.id } })
      const held = beat.body.assignments as { id: string; attempt: number }[]
      if (held.length === 0) return 0
      const reports = held.flatMap((t) => [
        { taskId: t.id, status: 'running', attempt: t.attempt },
        fail.has(a.id)
          ? { taskId: t.id, status: 'failed', attempt: t.attempt, error: { code: 'exit_1', message: 'no' } }
          : { taskId: t.id, status: 'completed', attempt: t.attempt },
      ])
      const res = await h.call('POST', '/api/v1/agents/heartbeat', { token: a.token, body: { agentId: a.id, reports } })
      expect(res.status).toBe(200)
      if (i % 10 === 0) samples.push(await sample(id))
      return held.length
    }),
  )
  return results.reduce((x, y) => x + y, 0)
}

async function run(id: string, agents: Agent[], fail: Set<string>) {
  const samples: Sample[] = []
  for (let i = 0; i < 100; i++) {
    samples.push(await sample(id))
    const r = (await h.call('GET', `/api/v1/rollouts/${id}`)).body
    if (r.endedAt) break
    const ended = await round(id, agents, fail, samples)
    if (ended === 0) await h.sweep()
  }
  return samples
}

const rolloutEvents = (id: string) =>
  rowsOf<{ id: number; type: string; task_id: string | null }>(
    h.database.db,
    sql`SELECT id, type, task_id FROM events
         WHERE data->>'rolloutId' = ${id} AND (type LIKE 'rollout.%' OR type = 'task.created') ORDER BY id`,
  )

describe(`a rollout over ${N} agents`, () => {
  it('never has more than maxConcurrency in flight, dispatches nothing after the breach, and errs at most maxErrors + in flight', async () => {
    const agents = await fleet(N)
    // Every 7th agent fails its task: 28 would fail, the budget allows 5.
    const fail = new Set(agents.filter((_, i) => i % 7 === 3).map((a) => a.id))
    const created = await h.call('POST', '/api/v1/rollouts', {
      body: {
        name: 'invariants',
        task: { type: 'test.run' },
        target: { labels: { scope: h.scope() } },
        strategy: { maxConcurrency: '10%', maxErrors: 5 },
      },
    })
    expect(created.status).toBe(201)
    const id = created.body.id as string
    expect(created.body).toMatchObject({ targetCount: N, maxConcurrency: 20, maxErrors: 5 })
    const samples = await run(id, agents, fail)
    expect(samples.length).toBeGreaterThan(5)
    for (const s of samples) {
      expect(s.inFlight).toBeLessThanOrEqual(20)
      expect(s.tasksLive).toBeLessThanOrEqual(20)
      expect(s.sum).toBe(N)
    }
    const r = (await h.call('GET', `/api/v1/rollouts/${id}`)).body
    expect(r.status).toBe('failed')
    expect(Object.values(r.counts as Record<string, number>).reduce((a, b) => a + b, 0)).toBe(N)
    // At most maxErrors + the others in flight at the breach (maxConcurrency - 1) + the one that broke it.
    expect(r.errors).toBeGreaterThan(5)
    expect(r.errors).toBeLessThanOrEqual(5 + 20)
    const events = await rolloutEvents(id)
    const breach = events.find((e) => e.type === 'rollout.budget_exceeded')
    expect(breach).toBeDefined()
    const createdAfter = events.filter((e) => e.type === 'task.created' && e.id > (breach?.id ?? 0))
    expect(createdAfter).toEqual([])
    expect(r.counts.skipped).toBe(N - events.filter((e) => e.type === 'task.created').length)
  })

  it('with waves: wave N+1 dispatches nothing before every target of wave N ended', async () => {
    const agents = await fleet(40)
    const created = await h.call('POST', '/api/v1/rollouts', {
      body: {
        name: 'waves',
        task: { type: 'test.run' },
        target: { labels: { scope: h.scope() } },
        strategy: { maxConcurrency: 8, waves: [{ size: 5 }, { size: '25%' }, { size: '100%' }] },
      },
    })
    expect(created.status).toBe(201)
    const id = created.body.id as string
    expect(created.body.waves).toEqual([5, 10, 25])
    await run(id, agents, new Set())
    const r = (await h.call('GET', `/api/v1/rollouts/${id}`)).body
    expect(r).toMatchObject({ status: 'completed', counts: { succeeded: 40 } })
    // Each wave's first dispatch (its first task.created) comes after every task of the wave
    // before it ended (their ended events).
    const order = await rowsOf<{ wave: number; first_created: number; last_ended: number }>(
      h.database.db,
      sql`SELECT rt.wave,
                 min(e.id) FILTER (WHERE e.type = 'task.created') AS first_created,
                 max(e.id) FILTER (WHERE e.type IN ('task.completed', 'task.failed')) AS last_ended
            FROM rollout_targets rt JOIN events e ON e.task_id = rt.task_id
           WHERE rt.rollout_id = ${id} GROUP BY rt.wave ORDER BY rt.wave`,
    )
    expect(order.map((o) => o.wave)).toEqual([1, 2, 3])
    for (let w = 1; w < order.length; w++) {
      expect(Number(order[w]?.first_created)).toBeGreaterThan(Number(order[w - 1]?.last_ended))
    }
  })
})
