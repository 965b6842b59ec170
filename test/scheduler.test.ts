import { eq, sql } from 'drizzle-orm'
import pg from 'pg'
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest'
import { rowsOf } from '../src/db/client'
import { serviceStalls, tasks } from '../src/db/schema'
import { StallWatch } from '../src/lib/stalls'
import { withDatabase } from './global-setup'
import { createHarness, type Harness, onPostgres, unique } from './harness'

let h: Harness
beforeAll(async () => {
  h = await createHarness({
    HEARTBEAT_TIMEOUT_SECONDS: '90',
    ASSIGN_TIMEOUT_SECONDS: '120',
    CANCEL_GRACE_SECONDS: '30',
    RETRY_BACKOFF_BASE_SECONDS: '10',
    RETRY_BACKOFF_MAX_SECONDS: '25',
    MAX_LOST_COUNT: '2',
  })
})
afterAll(async () => {
  await h.close()
})
// The sweep works on the whole fleet, so each test here starts from empty tables.
beforeEach(async () => {
  await h.database.db.execute(
    sql`TRUNCATE agents, tasks, task_logs, task_log_totals, events, scheduler_state, service_stalls`,
  )
})

const sweep = () => h.sweep()
const get = async (id: string) => (await h.call('GET', `/api/v1/tasks/${id}`)).body
const agentOf = async (id: string) => (await h.call('GET', `/api/v1/agents/${id}`)).body
const beat = (a: { id: string; token: string }, body: Record<string, unknown> = {}) =>
  h.call('POST', '/api/v1/agents/heartbeat', { token: a.token, body: { agentId: a.id, ...body } })

describe('step 1: silent agents', () => {
  it('expires an agent past HEARTBEAT_TIMEOUT_SECONDS: assigned tasks back to pending, running ones fail agent_lost and retry', async () => {
    const a = await h.agent({ maxConcurrentTasks: 3 })
    const assigned = await h.assignedTask(a.id)
    const running = await h.assignedTask(a.id)
    const cancelling = await h.assignedTask(a.id)
    await h.report(running.id, a.token, { status: 'running', attempt: 1 })
    await h.report(cancelling.id, a.token, { status: 'running', attempt: 1 })
    h.clock.advance(80_000)
    await h.call('POST', `/api/v1/tasks/${cancelling.id}/cancel`) // still within CANCEL_GRACE_SECONDS at expiry

    h.clock.advance(9_000)
    expect((await sweep()).expiredAgents).toBe(0)
    h.clock.advance(2_000)
    const s = await sweep()
    expect(s).toMatchObject({ expiredAgents: 1, requeued: 1, cancelled: 1, retried: 1, skipped: false })

    expect(await agentOf(a.id)).toMatchObject({ status: 'offline', activeTasks: 0 })
    expect(await get(assigned.id)).toMatchObject({
      status: 'pending',
      agentId: null,
      attempt: 1,
      failures: 0,
      lostCount: 0,
    })
    const lost = await get(running.id)
    expect(lost).toMatchObject({ status: 'pending', lostCount: 1, failures: 0, error: { code: 'agent_lost' } })
    expect(lost.pendingReason).toBe('backoff')
    expect(await get(cancelling.id)).toMatchObject({ status: 'cancelled' })

    const types = (await h.events({ taskId: running.id })).map((e) => e.type)
    expect(types.slice(-2)).toEqual(['task.failed', 'task.requeued'])
    const agentEvents = (await h.events({ agentId: a.id })).filter((e) => e.type === 'agent.expired')
    expect(agentEvents).toHaveLength(1)
  })

  it('fences the lost agent when it comes back, and tells it to stop what it no longer holds', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    await h.report(t.id, a.token, { status: 'running', attempt: 1 })
    h.clock.advance(91_000)
    await sweep()
    const back = await beat(a, { runningTaskIds: [t.id] })
    expect(back.body.agent.status).toBe('online')
    expect(back.body.cancellations).toContain(t.id)
    const late = await h.report(t.id, a.token, { status: 'completed', attempt: 1 })
    expect(late.status).toBe(409)
    expect(late.body.code).toBe('stale_attempt')
  })

  it('stops retrying a task after MAX_LOST_COUNT agent losses', async () => {
    const t = await h.pendingTask()
    for (let loss = 1; loss <= 2; loss++) {
      const a = await h.agent()
      const placed = await h.call('POST', '/api/v1/tasks/execute', { body: { taskId: t.id, agentId: a.id } })
      expect(placed.status).toBe(200)
      await h.report(t.id, a.token, { status: 'running', attempt: placed.body.attempt })
      h.clock.advance(91_000)
      await sweep()
    }
    expect(await get(t.id)).toMatchObject({ status: 'failed', lostCount: 2, error: { code: 'agent_lost' } })
    h.clock.advance(3600_000)
    await sweep()
    expect((await get(t.id)).status).toBe('failed')
  })

  it('leaves an agent that keeps heartbeating alone', async () => {
    const a = await h.agent()
    for (let i = 0; i < 5; i++) {
      h.clock.advance(60_000)
      await beat(a)
      expect((await sweep()).expiredAgents).toBe(0)
    }
    expect((await agentOf(a.id)).status).toBe('online')
  })
})

describe('step 2: timeouts', () => {
  it('times out a running task past timeoutSeconds, frees the slot, and retries it with backoff', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id, { timeoutSeconds: 120, maxAttempts: 2 })
    await h.report(t.id, a.token, { status: 'running', attempt: 1 })
    h.clock.advance(60_000)
    await beat(a)
    h.clock.advance(59_000)
    await beat(a)
    expect((await sweep()).timedOut).toBe(0)
    h.clock.advance(2_000)
    await beat(a)
    // Its run may still be alive on the agent: no retry until the agent says it ended.
    expect(await sweep()).toMatchObject({ timedOut: 1, retried: 0 })
    const end = { status: 'failed', attempt: 1, error: { code: 'timeout', message: 'killed' } }
    expect((await h.report(t.id, a.token, end)).status).toBe(409)
    expect(await sweep()).toMatchObject({ retried: 1 })
    const after = await get(t.id)
    expect(after).toMatchObject({
      status: 'pending',
      failures: 1,
      error: { code: 'timeout' },
      pendingReason: 'backoff',
    })
    expect((await agentOf(a.id)).activeTasks).toBe(0)
    const evs = (await h.events({ taskId: t.id })).map((e) => e.type)
    expect(evs.slice(-2)).toEqual(['task.timed_out', 'task.requeued'])
  })

  it('keeps a timed-out task that used its last attempt timed_out', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id, { timeoutSeconds: 5, maxAttempts: 1 })
    await h.report(t.id, a.token, { status: 'running', attempt: 1 })
    h.clock.advance(6_000)
    expect(await sweep()).toMatchObject({ timedOut: 1, retried: 0 })
    expect(await get(t.id)).toMatchObject({ status: 'timed_out', failures: 1 })
  })

  it('puts an assigned task not started within ASSIGN_TIMEOUT_SECONDS back to pending', async () => {
    const slow = await h.agent({ maxConcurrentTasks: 1 })
    const t = await h.assignedTask(slow.id)
    h.clock.advance(60_000)
    await beat(slow)
    expect((await sweep()).requeued).toBe(0)
    h.clock.advance(61_000)
    await beat(slow) // alive, but never starts the task
    // make the slow agent unable to take it again, so the requeue is visible
    await h.call('PATCH', `/api/v1/agents/${slow.id}/status`, { body: { status: 'draining' } })
    const s = await sweep()
    expect(s.requeued).toBe(1)
    expect(await get(t.id)).toMatchObject({ status: 'pending', agentId: null, attempt: 1 })
    expect((await agentOf(slow.id)).activeTasks).toBe(0)
    const late = await h.report(t.id, slow.token, { status: 'running', attempt: 1 })
    expect(late.status).toBe(409)
  })

  it('ends a running task as cancelled when its agent ignores the cancel past CANCEL_GRACE_SECONDS', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    await h.report(t.id, a.token, { status: 'running', attempt: 1 })
    await h.call('POST', `/api/v1/tasks/${t.id}/cancel`)
    h.clock.advance(29_000)
    expect((await sweep()).cancelled).toBe(0)
    h.clock.advance(2_000)
    expect((await sweep()).cancelled).toBe(1)
    expect(await get(t.id)).toMatchObject({ status: 'cancelled', cancelRequested: true })
    expect((await agentOf(a.id)).activeTasks).toBe(0)
  })
})

describe('at most one live copy of a task', () => {
  // CANCEL_GRACE_SECONDS is 30 here, KILL_MARGIN_SECONDS 10: a timed-out run may live 40 s more.
  const timedOutOn = async (a: { id: string; token: string }, opts: Record<string, unknown> = {}) => {
    const t = await h.assignedTask(a.id, { timeoutSeconds: 5, maxAttempts: 3, ...opts })
    await h.report(t.id, a.token, { status: 'running', attempt: 1 })
    h.clock.advance(6_000)
    await beat(a)
    expect(await sweep()).toMatchObject({ timedOut: 1, retried: 0 })
    return t
  }

  it('places no retry of a timed-out task while its run may still live, unless its agent says it ended', async () => {
    const a = await h.agent()
    const other = await h.agent()
    const t = await timedOutOn(a)
    expect(await get(t.id)).toMatchObject({ status: 'timed_out', agentId: a.id })
    // Past the backoff, but within the cancel grace plus the kill margin: still not retried,
    // and the other agent is not handed it.
    h.clock.advance(39_000)
    await beat(a)
    expect((await sweep()).retried).toBe(0)
    expect((await beat(other)).body.assignments).toEqual([])
    h.clock.advance(2_000)
    await beat(a)
    expect((await sweep()).retried).toBe(1)
    expect((await get(t.id)).status).toBe('pending')
  })

  it('retries at once when the agent reports the end of the run, whatever the verdict', async () => {
    const a = await h.agent()
    const t = await timedOutOn(a)
    // Another agent's word does not count; a report of another attempt does not either.
    const other = await h.agent()
    const end = { status: 'failed', attempt: 1, error: { code: 'timeout', message: 'killed' } }
    expect((await h.report(t.id, other.token, end)).status).toBe(409)
    expect((await h.report(t.id, a.token, { ...end, attempt: 2 })).status).toBe(409)
    expect((await sweep()).retried).toBe(0)
    expect((await h.report(t.id, a.token, end)).status).toBe(409)
    expect((await sweep()).retried).toBe(1)
  })

  it('takes the run as ended when its agent is lost', async () => {
    const a = await h.agent()
    const t = await timedOutOn(a)
    h.clock.advance(91_000)
    expect(await sweep()).toMatchObject({ expiredAgents: 1, retried: 1 })
    expect((await get(t.id)).status).toBe('pending')
  })

  it('holds a manual retry of a timed-out task until the run ended, and places it once its agent says so', async () => {
    const a = await h.agent()
    const t = await timedOutOn(a, { maxAttempts: 1 })
    const retried = await h.call('POST', `/api/v1/tasks/${t.id}/retry`)
    expect(retried.status).toBe(200)
    expect(retried.body.status).toBe('pending')
    const b = await h.agent()
    expect((await beat(b)).body.assignments).toEqual([])
    const end = { status: 'failed', attempt: 1, error: { code: 'timeout', message: 'killed' } }
    expect((await h.report(t.id, a.token, end)).status).toBe(409)
    const given = (await beat(b)).body.assignments
    expect(given.map((x: { id: string }) => x.id)).toEqual([t.id])
  })

  it('holds a manual retry of a cancel its agent never confirmed for KILL_MARGIN_SECONDS', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    await h.report(t.id, a.token, { status: 'running', attempt: 1 })
    await h.call('POST', `/api/v1/tasks/${t.id}/cancel`)
    h.clock.advance(31_000)
    await beat(a)
    expect((await sweep()).cancelled).toBe(1)
    expect((await h.call('POST', `/api/v1/tasks/${t.id}/retry`)).status).toBe(200)
    const b = await h.agent()
    expect((await beat(b)).body.assignments).toEqual([])
    h.clock.advance(11_000)
    expect((await beat(b)).body.assignments.map((x: { id: string }) => x.id)).toEqual([t.id])
  })
})

describe('a runner that restarted', () => {
  it('counts the runs it lost (agent_restarted) like a lost agent: lostCount, retried past maxAttempts, capped by MAX_LOST_COUNT', async () => {
    const t = await h.pendingTask({ maxAttempts: 1 })
    const lost = { status: 'failed', error: { code: 'agent_restarted', message: 'restarted' } }
    for (let loss = 1; loss <= 2; loss++) {
      const a = await h.agent()
      const placed = await h.call('POST', '/api/v1/tasks/execute', { body: { taskId: t.id, agentId: a.id } })
      expect(placed.status).toBe(200)
      await h.report(t.id, a.token, { status: 'running', attempt: placed.body.attempt })
      expect((await h.report(t.id, a.token, { ...lost, attempt: placed.body.attempt })).status).toBe(200)
      expect(await get(t.id)).toMatchObject({ status: 'failed', failures: 0, lostCount: loss })
      h.clock.advance(60_000)
      expect((await sweep()).retried).toBe(loss < 2 ? 1 : 0)
    }
    expect(await get(t.id)).toMatchObject({ status: 'failed', lostCount: 2, failures: 0 })
  })
})

describe('stalls of the service', () => {
  // HEARTBEAT_TIMEOUT_SECONDS is 90 here. The watch reads the test's clock.
  const watchOn = () => {
    const w = new StallWatch(() => h.clock.now().getTime())
    w.start()
    w.stop() // its ticks are the test's: check() runs in each sweep
    return w
  }
  const sweepWith = (stalls: StallWatch) => h.sweep(stalls)

  it('declares no agent dead for a silence the service caused, and still finds a dead one within the timeout plus the stall', async () => {
    const alive = await h.agent()
    const dead = await h.agent()
    const t = await h.assignedTask(alive.id, { timeoutSeconds: 60 })
    await h.report(t.id, alive.token, { status: 'running', attempt: 1 })
    h.clock.advance(10_000)
    await beat(alive)
    await beat(dead)
    const watch = watchOn()
    // The process is paused for 100 s: no heartbeat can land meanwhile.
    h.clock.advance(100_000)
    const s = await sweepWith(watch)
    expect(s).toMatchObject({ expiredAgents: 0, timedOut: 0 })
    const [stall] = await h.database.db.select().from(serviceStalls)
    expect(stall).toMatchObject({ cause: 'paused' })
    // The live agent answers again; the dead one stays silent. (Later sweeps go without the
    // watch, whose check would take the test clock's jumps for stalls: the one recorded is
    // in the database, for every sweep.)
    await beat(alive)
    // The task's timeout moved by the stall too: 10 s of it ran before, 50 s are left after.
    h.clock.advance(49_000)
    await beat(alive)
    expect((await sweep()).timedOut).toBe(0)
    h.clock.advance(2_000)
    expect((await sweep()).timedOut).toBe(1)
    h.clock.advance(37_000)
    await beat(alive)
    expect((await sweep()).expiredAgents).toBe(0)
    // 90 s of heard silence: found, the stall added to its timeout, not more.
    h.clock.advance(3_000)
    expect((await sweep()).expiredAgents).toBe(1)
    expect(await agentOf(dead.id)).toMatchObject({ status: 'offline' })
    expect(await agentOf(alive.id)).toMatchObject({ status: 'online' })
  })

  it("moves a task's timeout by a stretch the database could not be reached", async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id, { timeoutSeconds: 60 })
    await h.report(t.id, a.token, { status: 'running', attempt: 1 })
    h.clock.advance(50_000)
    const watch = new StallWatch(() => h.clock.now().getTime()) // no watchdog: only the database's stretch
    watch.deaf(h.clock.now().getTime())
    h.clock.advance(20_000)
    // The agent's report could not land; the first sweep that reaches the database notes it.
    await beat(a)
    expect((await sweepWith(watch)).timedOut).toBe(0)
    expect((await h.database.db.select().from(serviceStalls)).map((r) => r.cause)).toEqual(['database'])
    h.clock.advance(9_000)
    await beat(a)
    expect((await sweepWith(watch)).timedOut).toBe(0)
    h.clock.advance(2_000)
    expect((await sweepWith(watch)).timedOut).toBe(1)
  })

  it('does not expire an agent whose heartbeat this process is handling, and does once it is handled', async () => {
    const a = await h.agent()
    const watch = new StallWatch(() => h.clock.now().getTime())
    const done = watch.hearing(a.id) // its beat waits for the database
    h.clock.advance(91_000)
    expect((await sweepWith(watch)).expiredAgents).toBe(0)
    done()
    expect((await sweepWith(watch)).expiredAgents).toBe(1)
  })

  it('records no stall while the process ticks, and expires as before', async () => {
    const a = await h.agent()
    const watch = watchOn()
    for (let i = 0; i < 91; i++) {
      h.clock.advance(1_000)
      watch.check() // the watchdog's tick, on time
    }
    expect((await sweepWith(watch)).expiredAgents).toBe(1)
    expect(await agentOf(a.id)).toMatchObject({ status: 'offline' })
    expect(await h.database.db.select().from(serviceStalls)).toEqual([])
  })
})

describe('step 3: retries', () => {
  it('retries a failure after exponential backoff with jitter, capped, until maxAttempts', async () => {
    const a = await h.agent()
    const t = await h.pendingTask({ maxAttempts: 3 })
    const delays: number[] = []
    for (let attempt = 1; attempt <= 3; attempt++) {
      await h.database.db.update(tasks).set({ availableAt: h.clock.now() }).where(eq(tasks.id, t.id))
      const placed = await h.call('POST', '/api/v1/tasks/execute', { body: { taskId: t.id, agentId: a.id } })
      expect(placed.body.attempt).toBe(attempt)
      await h.report(t.id, a.token, { status: 'failed', attempt, error: { code: 'exit_1', message: 'exit 1' } })
      const s = await sweep()
      if (attempt < 3) {
        expect(s.retried).toBe(1)
        const row = (await h.database.db.select().from(tasks).where(eq(tasks.id, t.id)))[0]
        expect(row?.status).toBe('pending')
        delays.push(((row?.availableAt.getTime() ?? 0) - h.clock.now().getTime()) / 1000)
      } else {
        expect(s.retried).toBe(0)
      }
    }
    // base 10 s: first delay in [5, 10], second (doubled, capped at 25) in [10, 20]
    expect(delays[0]).toBeGreaterThanOrEqual(5)
    expect(delays[0]).toBeLessThanOrEqual(10)
    expect(delays[1]).toBeGreaterThanOrEqual(10)
    expect(delays[1]).toBeLessThanOrEqual(20)
    expect(await get(t.id)).toMatchObject({ status: 'failed', failures: 3, attempt: 3 })
  })

  it('starts each attempt clean: a task that failed, then completed on a retry, shows no old error', async () => {
    const a = await h.agent()
    const t = await h.pendingTask({ maxAttempts: 2 })
    await h.call('POST', '/api/v1/tasks/execute', { body: { taskId: t.id, agentId: a.id } })
    await h.report(t.id, a.token, { status: 'running', attempt: 1, progress: 40 })
    await h.report(t.id, a.token, {
      status: 'failed',
      attempt: 1,
      error: { code: 'exit_2', message: 'boom' },
      result: { partial: true },
    })
    expect((await sweep()).retried).toBe(1)
    await h.database.db.update(tasks).set({ availableAt: h.clock.now() }).where(eq(tasks.id, t.id))
    const second = await h.call('POST', '/api/v1/tasks/execute', { body: { taskId: t.id, agentId: a.id } })
    expect(second.body).toMatchObject({ attempt: 2, status: 'assigned', error: null, result: null, progress: null })
    expect(second.body.finishedAt).toBeNull()
    await h.report(t.id, a.token, { status: 'running', attempt: 2 })
    const done = await h.report(t.id, a.token, { status: 'completed', attempt: 2, result: { rows: 7 } })
    expect(done.body).toMatchObject({ status: 'completed', error: null, result: { rows: 7 }, attempt: 2 })
    // The first attempt's story stays in the events.
    const failed = (await h.events({ taskId: t.id })).find((e) => e.type === 'task.failed')
    expect(failed?.data).toMatchObject({ attempt: 1, error: { code: 'exit_2', message: 'boom' } })
  })

  it('never retries malformed_payload failures or cancelled tasks', async () => {
    const a = await h.agent()
    const bad = await h.assignedTask(a.id)
    await h.report(bad.id, a.token, {
      status: 'failed',
      attempt: 1,
      error: { code: 'malformed_payload', message: 'no' },
    })
    const cancelled = await h.pendingTask()
    await h.call('POST', `/api/v1/tasks/${cancelled.id}/cancel`)
    h.clock.advance(3600_000)
    await beat(a)
    expect((await sweep()).retried).toBe(0)
    expect((await get(bad.id)).status).toBe('failed')
    expect((await get(cancelled.id)).status).toBe('cancelled')
  })
})

describe('a cancel request is final', () => {
  it('never retries a task whose cancel was requested, when it then times out or fails', async () => {
    const a = await h.agent({ maxConcurrentTasks: 2 })
    const slow = await h.assignedTask(a.id, { timeoutSeconds: 10, maxAttempts: 3 })
    const failing = await h.assignedTask(a.id, { maxAttempts: 3 })
    for (const t of [slow, failing]) {
      await h.report(t.id, a.token, { status: 'running', attempt: 1 })
      expect((await h.call('POST', `/api/v1/tasks/${t.id}/cancel`)).status).toBe(202)
    }
    await h.report(failing.id, a.token, { status: 'failed', attempt: 1, error: { message: 'interrupted' } })
    h.clock.advance(11_000) // past slow's timeout, within CANCEL_GRACE_SECONDS (30)
    await beat(a)
    expect(await sweep()).toMatchObject({ timedOut: 1, retried: 0 })
    h.clock.advance(3600_000)
    await beat(a)
    expect((await sweep()).retried).toBe(0)
    expect(await get(slow.id)).toMatchObject({ status: 'timed_out', cancelRequested: true })
    expect(await get(failing.id)).toMatchObject({ status: 'failed', cancelRequested: true })
  })

  it('calls off the automatic retry of a failed task when it is cancelled', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id, { maxAttempts: 3 })
    await h.report(t.id, a.token, { status: 'failed', attempt: 1, error: { message: 'flaky' } })
    const res = await h.call('POST', `/api/v1/tasks/${t.id}/cancel`)
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({ status: 'cancelled', error: { message: 'flaky' } })
    h.clock.advance(3600_000)
    expect((await sweep()).retried).toBe(0)
    expect((await get(t.id)).status).toBe('cancelled')
  })
})

describe('step 4: placement', () => {
  it('places due tasks by priority then age, least-loaded agent first, without blocking on tasks nothing fits', async () => {
    const cap = unique('cap')
    const a1 = await h.agent({ capabilities: [cap], maxConcurrentTasks: 2 }, { online: false })
    const a2 = await h.agent({ capabilities: [cap], maxConcurrentTasks: 1 }, { online: false })
    const stuck = await h.task({ priority: 10, requirements: { capabilities: ['nobody-has-this'] } })
    const low = await h.task({ priority: 1, requirements: { capabilities: [cap] } })
    const mid1 = await h.task({ priority: 5, requirements: { capabilities: [cap] } })
    const mid2 = await h.task({ priority: 5, requirements: { capabilities: [cap] } })
    const high = await h.task({ priority: 9, requirements: { capabilities: [cap] } })
    const later = await h.task({
      priority: 10,
      requirements: { capabilities: [cap] },
      scheduledAt: '2026-06-01T00:00:00Z',
    })
    for (const a of [a1, a2]) await h.call('PATCH', `/api/v1/agents/${a.id}/status`, { body: { status: 'online' } })

    const s = await sweep()
    expect(s.assigned).toBe(3)
    expect((await get(high.id)).status).toBe('assigned')
    expect((await get(mid1.id)).status).toBe('assigned')
    expect((await get(mid2.id)).status).toBe('assigned')
    expect((await get(low.id)).status).toBe('pending')
    expect((await get(stuck.id)).pendingReason).toBe('no_matching_agent')
    expect((await get(later.id)).pendingReason).toBe('scheduled')
    expect((await agentOf(a1.id)).activeTasks).toBe(2)
    expect((await agentOf(a2.id)).activeTasks).toBe(1)
    expect((await get(high.id)).agentId).toBe(a1.id)
    expect((await get(mid1.id)).agentId).toBe(a2.id)
  })

  it('gives nothing to draining, maintenance or error agents', async () => {
    const cap = unique('cap')
    const agents = []
    for (const status of ['draining', 'maintenance', 'error']) {
      const a = await h.agent({ capabilities: [cap] })
      await h.call('PATCH', `/api/v1/agents/${a.id}/status`, { body: { status } })
      agents.push(a)
    }
    const t = await h.task({ requirements: { capabilities: [cap] } })
    expect((await sweep()).assigned).toBe(0)
    expect(await get(t.id)).toMatchObject({ status: 'pending', pendingReason: 'no_matching_agent' })
  })
})

describe('fast placement', () => {
  it('places a new task at once when a fitting agent has a free slot (201 already assigned)', async () => {
    const a = await h.agent()
    const t = await h.task()
    expect(t).toMatchObject({ status: 'assigned', agentId: a.id, attempt: 1 })
    const ev = (await h.events({ taskId: t.id })).find((e) => e.type === 'task.assigned')
    expect(ev?.data.via).toBe('create')
  })

  it('does not let a new task jump older or higher-priority ones that fit the same agent', async () => {
    const a = await h.agent({ maxConcurrentTasks: 1 }, { online: false })
    const older = await h.task({ priority: 8 })
    await h.call('PATCH', `/api/v1/agents/${a.id}/status`, { body: { status: 'online' } })
    const newer = await h.task({ priority: 3 })
    expect((await get(older.id)).status).toBe('assigned')
    expect(newer.status).toBe('pending')
  })

  it('hands an agent fitting pending tasks in its heartbeat answer', async () => {
    const a = await h.agent({ maxConcurrentTasks: 2 }, { online: false })
    const t1 = await h.task()
    const t2 = await h.task()
    const t3 = await h.task()
    const res = await beat(a)
    expect(res.body.assignments.map((t: { id: string }) => t.id)).toEqual([t1.id, t2.id])
    expect(res.body.agent.activeTasks).toBe(2)
    expect((await get(t3.id)).status).toBe('pending')
    const ev = (await h.events({ taskId: t1.id })).find((e) => e.type === 'task.assigned')
    expect(ev?.data.via).toBe('heartbeat')
  })
})

describe('scheduler endpoints', () => {
  it('POST /scheduler/sweep runs one for an admin and GET /scheduler/status shows it', async () => {
    const before = (await h.call('GET', '/api/v1/scheduler/status')).body
    expect(before).toMatchObject({ runs: 0, lastRunAt: null, lastSummary: null })
    const res = await h.call('POST', '/api/v1/scheduler/sweep')
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({
      expiredAgents: expect.any(Number),
      assigned: expect.any(Number),
      durationMs: expect.any(Number),
      skipped: false,
      startedAt: h.clock.now().toISOString(),
    })
    const status = await h.call('GET', '/api/v1/scheduler/status', { token: await h.token('viewer') })
    expect(status.status).toBe(200)
    expect(status.body.runs).toBe(before.runs + 1)
    expect(status.body.lastSummary).toEqual(res.body)
    expect(status.body.lastRunAt).toBe(res.body.startedAt)
    expect(status.body.sweepIntervalSeconds).toBe(h.config.sweepIntervalSeconds)
  })

  it('is admin only', async () => {
    expect((await h.call('POST', '/api/v1/scheduler/sweep', { token: await h.token('operator') })).status).toBe(403)
    expect((await h.call('POST', '/api/v1/scheduler/sweep', { token: null })).status).toBe(401)
  })

  it.runIf(onPostgres())('skips the recovery steps while another sweep holds the lock (Postgres)', async () => {
    const [row] = await rowsOf<{ db: string }>(h.database.db, sql`select current_database() as db`)
    const url = withDatabase(inject('pgAdminUrl'), row?.db ?? '')
    const other = new pg.Client({ connectionString: url })
    await other.connect()
    try {
      await other.query('BEGIN')
      await other.query('SELECT pg_advisory_xact_lock(7240431001)')
      const s = await sweep()
      expect(s.skipped).toBe(true)
      await other.query('COMMIT')
      expect((await sweep()).skipped).toBe(false)
    } finally {
      await other.end()
    }
  })
})
