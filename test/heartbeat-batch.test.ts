import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/client'
import { GroupCommit } from '../src/lib/group-commit'
import { Metrics } from '../src/lib/metrics'
import { heartbeat } from '../src/services/agents'
import type { ServiceDeps } from '../src/services/deps'
import { HeartbeatWriter } from '../src/services/heartbeat-writer'
import { createHarness, type Harness, unique } from './harness'
import { until } from './until'

/**
 * Heartbeats written together (natural batching, src/lib/group-commit.ts and
 * src/services/heartbeat-writer.ts), and long polls that wake without writing.
 */

let h: Harness
beforeAll(async () => {
  h = await createHarness()
})
afterAll(async () => {
  await h.close()
})

/** A histogram's count of observations and its `le="1"` bucket, from the text format. */
function histogram(text: string, name: string) {
  const count = Number(new RegExp(`^${name}_count (\\d+)`, 'm').exec(text)?.[1] ?? 0)
  const ones = Number(new RegExp(`^${name}_bucket\\{le="1"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0)
  const sum = Number(new RegExp(`^${name}_sum (\\S+)`, 'm').exec(text)?.[1] ?? 0)
  return { count, ones, sum }
}

const counter = (m: Metrics, name: string, labels: string) =>
  Number(new RegExp(`^${name}\\{${labels}\\} (\\d+)`, 'm').exec(m.render())?.[1] ?? 0)

describe('natural batching (GroupCommit)', () => {
  /** A run whose batches the test ends by hand. */
  function gated() {
    const batches: number[][] = []
    const gates: (() => void)[] = []
    const run = (items: number[]) => {
      batches.push(items)
      return new Promise<{ value: number }[]>((resolve) => {
        gates.push(() => resolve(items.map((x) => ({ value: x * 10 }))))
      })
    }
    const open = async () => {
      gates.shift()?.()
      await new Promise((r) => setTimeout(r, 0))
    }
    return { batches, run, open }
  }

  it('runs a lone item at once, gathers what arrives meanwhile into the next batch, one per key', async () => {
    const g = gated()
    const gc = new GroupCommit(g.run, { max: 3, inFlight: 1, key: (x: number) => String(x % 100) })
    const first = gc.submit(1)
    expect(g.batches).toEqual([[1]]) // no window: it started before submit returned
    const rest = [2, 3, 102, 4, 5].map((x) => gc.submit(x)) // 102 shares 2's key
    expect(gc.state).toEqual({ running: 1, queued: 5 })
    await g.open()
    expect(await first).toBe(10)
    expect(g.batches[1]).toEqual([2, 3, 4]) // at most 3, and 102 waits for the following batch
    await g.open()
    expect(g.batches[2]).toEqual([102, 5])
    await g.open()
    expect(await Promise.all(rest)).toEqual([20, 30, 1020, 40, 50])
    expect(gc.state).toEqual({ running: 0, queued: 0 })
  })

  it('runs up to inFlight batches at once', async () => {
    const g = gated()
    const gc = new GroupCommit(g.run, { max: 10, inFlight: 2 })
    const all = [1, 2, 3, 4].map((x) => gc.submit(x))
    expect(g.batches).toEqual([[1], [2]])
    await g.open()
    expect(g.batches[2]).toEqual([3, 4])
    await g.open()
    await g.open()
    expect(await Promise.all(all)).toEqual([10, 20, 30, 40])
  })

  it('fails every item of a batch whose run throws, and no other', async () => {
    let calls = 0
    const gc = new GroupCommit(
      async (items: number[]) => {
        calls++
        if (items.includes(13)) throw new Error('unlucky')
        return items.map((x) => ({ value: x }))
      },
      { max: 10, inFlight: 1 },
    )
    const [a, b, c] = [gc.submit(1), gc.submit(13), gc.submit(2)]
    expect(await a).toBe(1)
    await expect(b).rejects.toThrow('unlucky')
    await expect(c).rejects.toThrow('unlucky') // in 13's batch
    expect(await gc.submit(3)).toBe(3)
    expect(calls).toBe(3)
  })
})

describe('a batch of heartbeats', () => {
  it('N agents with reports and free slots in one statement: each task to one agent, no agent over its slots, each answered with its own', async () => {
    const N = 10
    const cap = unique('cap')
    const metrics = new Metrics()
    const writer = new HeartbeatWriter(h.database.db, h.clock, { batchSize: 64, inFlight: 1, metrics })
    const deps: ServiceDeps = {
      db: h.database.db,
      clock: h.clock,
      config: h.config,
      kv: h.kv,
      metrics,
      heartbeats: writer,
    }

    type Made = { id: string; token: string }
    const agents: Made[] = []
    for (let i = 0; i < N; i++) agents.push(await h.agent({ capabilities: [cap], maxConcurrentTasks: 3 }))
    const req = { requirements: { capabilities: [cap] } }
    // Each agent holds A (to complete in the batch), B (to start) and C (completed before,
    // reported again: a repeat).
    const held: { A: Made; B: Made; C: Made }[] = []
    for (const a of agents) {
      const [A, B, C] = [
        await h.assignedTask(a.id, req),
        await h.assignedTask(a.id, req),
        await h.assignedTask(a.id, req),
      ]
      expect((await h.report(C.id, a.token, { status: 'running', attempt: 1 })).status).toBe(200)
      expect((await h.report(C.id, a.token, { status: 'completed', attempt: 1 })).status).toBe(200)
      held.push({ A, B, C })
    }
    // The queue, while the agents drain (a create places nothing): 40 of the agents' shape,
    // two pinned to agent 0 (more urgent than any), and the most urgent one declined by agent 1.
    for (const a of agents) await h.call('PATCH', `/api/v1/agents/${a.id}/status`, { body: { status: 'draining' } })
    const queue = []
    for (let i = 0; i < 40; i++) queue.push(await h.task({ ...req, priority: 1 + (i % 9) }))
    const pinned = [
      await h.task({ requirements: { capabilities: [cap], agentId: agents[0]?.id }, priority: 10 }),
      await h.task({ requirements: { capabilities: [cap], agentId: agents[0]?.id }, priority: 10 }),
    ]
    const declined = await h.task({ ...req, priority: 10 })
    await h.database.db.execute(
      sql`UPDATE tasks SET declined_by = ARRAY[${agents[1]?.id}]::uuid[] WHERE id = ${declined.id}`,
    )
    const pendingBefore = await rowsOf<{ id: string }>(
      h.database.db,
      sql`SELECT id FROM tasks WHERE status = 'pending' AND ${cap} = ANY(req_capabilities)`,
    )
    expect(pendingBefore.length).toBe(43)

    // One heartbeat alone first (inFlight 1): the N submitted meanwhile make the next batch.
    const blocker = await h.agent({ capabilities: ['elsewhere'] })
    const first = heartbeat(deps, { agentId: blocker.id })
    const beats = agents.map((a, i) => {
      const mine = held[i] as (typeof held)[number]
      const next = held[(i + 1) % N] as (typeof held)[number]
      return heartbeat(deps, {
        agentId: a.id,
        status: 'online',
        runningTaskIds: [mine.B.id, next.B.id],
        reports: [
          { taskId: mine.A.id, attempt: 1, status: 'running' },
          { taskId: mine.A.id, attempt: 1, status: 'completed', result: { by: a.id } },
          { taskId: mine.B.id, attempt: 1, status: 'running', progress: i },
          { taskId: next.A.id, attempt: 1, status: 'completed' }, // another agent's: stale
          { taskId: mine.C.id, attempt: 1, status: 'completed' }, // already ended so: a repeat
        ],
      })
    })
    await first
    const results = await Promise.all(beats)
    const batches = histogram(metrics.render(), 'agenticcp_heartbeat_batch_agents')
    expect(batches).toEqual({ count: 2, ones: 1, sum: N + 1 }) // [blocker], then all N together

    const given = new Map<string, string>()
    for (const [i, r] of results.entries()) {
      const a = agents[i] as (typeof agents)[number]
      const mine = held[i] as (typeof held)[number]
      const next = held[(i + 1) % N] as (typeof held)[number]
      expect(r.agent.id).toBe(a.id)
      expect(r.agent.status).toBe('online')
      expect(r.reports.map((o) => [o.report.taskId, o.verdict])).toEqual([
        [mine.A.id, 'ok'],
        [mine.A.id, 'ok'],
        [mine.B.id, 'ok'],
        [next.A.id, 'stale_attempt'],
        [mine.C.id, 'repeat'],
      ])
      // Its own running task is not lost; the other agent's is.
      expect(r.cancellations).toEqual([next.B.id])
      // A ended and B runs: 2 free slots, and the new work is its own.
      expect(r.assignments.length).toBeLessThanOrEqual(2)
      for (const t of r.assignments) {
        expect(t.agentId).toBe(a.id)
        expect(t.status).toBe('assigned')
        expect(given.has(t.id), `task ${t.id} given twice`).toBe(false)
        given.set(t.id, a.id)
      }
      expect(r.agent.activeTasks).toBe(1 + r.assignments.length)
    }
    // Agent 0 takes its two pinned tasks (the best it was offered); nobody else does.
    expect(results[0]?.assignments.map((t) => t.id).sort()).toEqual(pinned.map((t) => t.id).sort())
    // The declined task never goes to agent 1; every slot but a few dropped ones is filled.
    if (given.has(declined.id)) expect(given.get(declined.id)).not.toBe(agents[1]?.id)
    expect(given.size).toBeGreaterThanOrEqual(2 * N - 2)

    // In the database: every agent's count is what it holds, within its slots.
    const load = await rowsOf<{ id: string; max: number; active: number; held: number }>(
      h.database.db,
      sql`SELECT a.id, a.max_concurrent_tasks AS max, a.active_tasks AS active,
            (SELECT count(*)::int FROM tasks t WHERE t.agent_id = a.id AND t.status IN ('assigned', 'running')) AS held
          FROM agents a WHERE a.id = ANY(${`{${agents.map((a) => a.id).join(',')}}`}::uuid[])`,
    )
    for (const r of load) {
      expect(r.active).toBe(r.held)
      expect(r.held).toBeLessThanOrEqual(r.max)
    }
    // Events exactly once: one assignment per task given (by its agent), one end per completed
    // task (started in the same heartbeat: the end says so, no task.started), a start per
    // started one.
    for (const [taskId, agentId] of given) {
      const ev = (await h.events({ taskId })).filter((e) => e.type === 'task.assigned')
      expect(ev).toHaveLength(1)
      expect(ev[0]).toMatchObject({ agentId, data: { via: 'heartbeat', attempt: 1 } })
    }
    for (const { A, B, C } of held) {
      const ofA = await h.events({ taskId: A.id })
      expect(ofA.map((e) => e.type)).toEqual(['task.created', 'task.assigned', 'task.completed'])
      expect(ofA.at(-1)?.data).toEqual({ from: 'assigned', to: 'completed', attempt: 1, started: true })
      expect((await h.events({ taskId: B.id })).map((e) => e.type)).toEqual([
        'task.created',
        'task.assigned',
        'task.started',
      ])
      expect((await h.events({ taskId: C.id })).filter((e) => e.type === 'task.completed')).toHaveLength(1)
    }
    // What was left in the queue is still pending, and of what was given, only the shape's
    // head: nothing from behind the first 2N of the queue went first.
    const order = [...pendingBefore.map((r) => r.id)]
    const byQueue = await rowsOf<{ id: string }>(
      h.database.db,
      sql`SELECT id FROM tasks WHERE id = ANY(${`{${order.join(',')}}`}::uuid[]) AND req_agent_id IS NULL
           ORDER BY priority DESC, id`,
    )
    const head = new Set(byQueue.slice(0, 2 * N).map((r) => r.id))
    for (const id of given.keys()) if (!pinned.some((p) => p.id === id)) expect(head.has(id)).toBe(true)
  })

  it('a heartbeat the database refuses fails alone; the others of its batch are answered', async () => {
    const metrics = new Metrics()
    const writer = new HeartbeatWriter(h.database.db, h.clock, { batchSize: 64, inFlight: 1, metrics })
    const ok = [await h.agent(), await h.agent(), await h.agent()]
    const entry = (agentId: string) => ({
      agentId,
      status: null,
      metrics: null,
      running: [],
      taskTypes: null,
      reports: null,
    })
    const blocker = writer.beat(entry((await h.agent()).id))
    const bad = writer.beat(entry('not-a-uuid'))
    const missing = writer.beat(entry('0192f3c5-6d7e-7a1b-8c9d-0e1f2a3b4c5d'))
    const good = ok.map((a) => writer.beat(entry(a.id)))
    await blocker
    await expect(bad).rejects.toThrow()
    await expect(missing).rejects.toMatchObject({ code: 'not_found' })
    const rows = await Promise.all(good)
    expect(rows.map((r) => r.agent.id)).toEqual(ok.map((a) => a.id))
    expect(histogram(metrics.render(), 'agenticcp_heartbeat_batch_agents')).toMatchObject({ count: 2, sum: 6 })
  })
})

describe('a long poll that wakes', () => {
  const deps = (metrics: Metrics): ServiceDeps => ({
    db: h.database.db,
    clock: h.clock,
    config: h.config,
    kv: h.kv,
    metrics,
  })

  const metricOf = async (series: string) => {
    const text: string = (await h.call('GET', '/metrics', { token: null })).body
    const line = text.split('\n').find((l) => l.startsWith(`${series} `))
    return Number(line?.split(' ')[1] ?? 0)
  }

  it('woken by a create placed on it, answers from the placement (no statement), as a read would', async () => {
    const a = await h.agent()
    const handed = await metricOf('agenticcp_long_poll_rechecks_total{write="handoff"}')
    const poll = h.call('POST', '/api/v1/agents/heartbeat', {
      token: a.token,
      body: { agentId: a.id, waitSeconds: 10 },
    })
    await new Promise((r) => setTimeout(r, 100))
    const task = await h.task()
    const res = await poll
    expect(res.status).toBe(200)
    expect(res.body.assignments.map((t: { id: string }) => t.id)).toEqual([task.id])
    expect(await metricOf('agenticcp_long_poll_rechecks_total{write="handoff"}')).toBe(handed + 1)
    // What it answered is what the database holds: the task assigned to it, the agent's load.
    const read = await h.call('GET', `/api/v1/tasks/${task.id}`)
    expect(res.body.assignments[0]).toEqual(read.body)
    expect(res.body.assignments[0]).toMatchObject({ status: 'assigned', agentId: a.id, attempt: 1 })
    const agent = await h.call('GET', `/api/v1/agents/${a.id}`)
    expect(res.body.agent).toEqual(agent.body)
    expect(res.body.agent.activeTasks).toBe(1)
  })

  it('woken by work placed by another path (execute), reads it without writing', async () => {
    const a = await h.agent()
    const later = new Date(h.clock.now().getTime() + 3_600_000)
    const task = await h.task({ scheduledAt: later.toISOString() }) // not due: not placed
    expect(task.status).toBe('pending')
    const reads = await metricOf('agenticcp_long_poll_rechecks_total{write="none"}')
    const poll = h.call('POST', '/api/v1/agents/heartbeat', {
      token: a.token,
      body: { agentId: a.id, waitSeconds: 10 },
    })
    await new Promise((r) => setTimeout(r, 100))
    const exec = await h.call('POST', '/api/v1/tasks/execute', { body: { taskId: task.id, agentId: a.id } })
    expect(exec.status, JSON.stringify(exec.body)).toBe(200)
    const res = await poll
    expect(res.status).toBe(200)
    expect(res.body.assignments.map((t: { id: string }) => t.id)).toEqual([task.id])
    expect(await metricOf('agenticcp_long_poll_rechecks_total{write="none"}')).toBeGreaterThan(reads)
  })

  it('refreshes its beat while it waits, so the sweep does not take it for dead', async () => {
    const metrics = new Metrics()
    const a = await h.agent()
    const poll = heartbeat(deps(metrics), { agentId: a.id, waitSeconds: 5 })
    h.clock.advance(60_000)
    await until('a refreshed beat', () => counter(metrics, 'agenticcp_long_poll_rechecks_total', 'write="touch"') > 0)
    const [row] = await rowsOf<{ at: Date }>(
      h.database.db,
      sql`SELECT last_heartbeat_at AS at FROM agents WHERE id = ${a.id}`,
    )
    expect(new Date(row?.at as Date).getTime()).toBe(h.clock.now().getTime())
    h.clock.advance(60_000) // 120 s since the first beat, 60 s since the refreshed one
    await h.sweep() // expires this file's other agents, silent all along
    const [after] = await rowsOf<{ status: string }>(h.database.db, sql`SELECT status FROM agents WHERE id = ${a.id}`)
    expect(after?.status).toBe('online')
    const answer = await poll
    expect(answer.agent.status).toBe('online')
  })

  it('fills free slots from the queue when a fitting task became due, with a heartbeat', async () => {
    const metrics = new Metrics()
    const a = await h.agent()
    const later = new Date(h.clock.now().getTime() + 10_000)
    const task = await h.task({ scheduledAt: later.toISOString() }) // not due: not placed
    expect(task.status).toBe('pending')
    const poll = heartbeat(deps(metrics), { agentId: a.id, waitSeconds: 6 })
    h.clock.advance(20_000) // due now; nothing notifies the poll: its next slice finds it
    const answer = await poll
    expect(answer.assignments.map((t) => t.id)).toEqual([task.id])
    expect(counter(metrics, 'agenticcp_long_poll_rechecks_total', 'write="beat"')).toBe(1)
  })
})
