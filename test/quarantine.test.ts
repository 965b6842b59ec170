import { sql } from 'drizzle-orm'
import { describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/client'
import { type CallResult, createHarness, type Harness } from './harness'

/**
 * Automatic quarantine, driven through the real heartbeats: a black hole (an agent that
 * fails everything it gets at once, many times faster than the healthy agents finish their
 * tasks) beside nine healthy agents, 500 tasks with maxAttempts 3; with quarantine on, and
 * off (QUARANTINE_AFTER_FAILURES=0) to count what it costs. And tasks that fail on every
 * agent: no agent is quarantined, and an event says the tasks are bad. Time moves by the
 * harness's clock, one second a round.
 */

const ok = (res: CallResult, what: string) => {
  if (res.status >= 300) throw new Error(`${what}: ${res.status} ${JSON.stringify(res.body)}`)
  return res.body
}

type Held = { id: string; attempt: number }[]
type Agent = Awaited<ReturnType<Harness['agent']>>

/** One heartbeat reporting every held task ended `status` (started and ended in one row); returns what it holds next. */
async function beat(h: Harness, a: Agent, held: Held, status: 'completed' | 'failed') {
  const reports = held.flatMap((t) => [
    { taskId: t.id, attempt: t.attempt, status: 'running' },
    {
      taskId: t.id,
      attempt: t.attempt,
      status,
      ...(status === 'failed' ? { error: { code: 'boom', message: 'it broke' } } : {}),
    },
  ])
  const answer = ok(
    await h.call('POST', '/api/v1/agents/heartbeat', { token: a.token, body: { agentId: a.id, reports } }),
    'beat',
  )
  return {
    held: (answer.assignments as { id: string; attempt: number }[]).map((t) => ({ id: t.id, attempt: t.attempt })),
    status: answer.agent.status as string,
  }
}

async function counts(h: Harness): Promise<Record<string, number>> {
  const rows = await rowsOf<{ status: string; n: number }>(
    h.database.db,
    sql`SELECT status, count(*)::int AS n FROM tasks GROUP BY status`,
  )
  return Object.fromEntries(rows.map((r) => [r.status, r.n]))
}

const settings = (afterFailures: string) => ({
  RATE_LIMIT_PER_MINUTE: '0',
  QUARANTINE_AFTER_FAILURES: afterFailures,
  RETRY_BACKOFF_BASE_SECONDS: '0',
  ASSIGN_TIMEOUT_SECONDS: '3600',
})

/**
 * The black hole's beats per round: it fails a task the moment it gets one, and polls far
 * more often than the healthy agents finish theirs (a round each, theirs take three), so it
 * is first to take what the sweep puts back (retries).
 */
const HOLE_BEATS = 2

async function blackHole(afterFailures: string) {
  const h = await createHarness(settings(afterFailures))
  try {
    const healthy: Agent[] = []
    for (let i = 0; i < 9; i++) healthy.push(await h.agent({ maxConcurrentTasks: 20 }))
    const hole = await h.agent({ maxConcurrentTasks: 5 })
    const tasks = Array.from({ length: 500 }, (_, i) => ({ name: `t${i}`, type: 'test.run', maxAttempts: 3 }))
    ok(await h.call('POST', '/api/v1/tasks/batch', { body: { tasks } }), 'batch')
    const held = new Map<string, Held>()
    const heldBy = async (a: Agent) => held.get(a.id) ?? []
    // The creates placed tasks already: each agent's first beat reads them; the healthy ones
    // have finished a first round before the black hole starts.
    for (const a of [...healthy, hole]) held.set(a.id, (await beat(h, a, [], 'completed')).held)
    for (const a of healthy) held.set(a.id, (await beat(h, a, await heldBy(a), 'completed')).held)
    let holeFailures = 0
    let failuresWhenQuarantined: number | null = null
    for (let round = 0; round < 80; round++) {
      ok(await h.call('POST', '/api/v1/scheduler/sweep'), 'sweep')
      for (let k = 0; k < (failuresWhenQuarantined === null ? HOLE_BEATS : 1); k++) {
        const mine = await heldBy(hole)
        const r = await beat(h, hole, mine, 'failed')
        holeFailures += mine.length
        held.set(hole.id, r.held)
        if (r.status === 'quarantined' && failuresWhenQuarantined === null) failuresWhenQuarantined = holeFailures
      }
      // A healthy agent's task takes three rounds.
      if (round % 3 === 2) {
        for (const a of healthy) held.set(a.id, (await beat(h, a, await heldBy(a), 'completed')).held)
      }
      h.clock.advance(1000)
      const c = await counts(h)
      if ((c.pending ?? 0) + (c.assigned ?? 0) + (c.running ?? 0) === 0 && !(await autoRetryDue(h))) break
    }
    const events = await h.events({ agentId: hole.id })
    return { counts: await counts(h), holeFailures, failuresWhenQuarantined, events }
  } finally {
    await h.close()
  }
}

async function autoRetryDue(h: Harness) {
  const [r] = await rowsOf<{ n: number }>(h.database.db, sql`SELECT count(*)::int AS n FROM tasks WHERE auto_retry`)
  return (r?.n ?? 0) > 0
}

describe('a black hole beside nine healthy agents, 500 tasks, maxAttempts 3', () => {
  it('is quarantined after 5 failures and the tasks complete; without quarantine, count what fails', async () => {
    const on = await blackHole('5')
    // Judged right after the beat that reported its 5th failure (that beat's answer had already
    // handed it its 5 slots' worth more: failed too, reported while quarantined).
    expect(on.failuresWhenQuarantined).toBe(10)
    expect(on.holeFailures).toBe(10)
    const quarantined = on.events.find((e) => e.type === 'agent.quarantined')
    expect(quarantined?.data).toMatchObject({
      by: 'system',
      automatic: true,
      evidence: { failures: 5, errorCodes: ['boom'], taskTypes: ['test.run'] },
    })
    expect((quarantined?.data as { evidence: { taskIds: string[] } } | undefined)?.evidence.taskIds).toHaveLength(5)
    const doneOn = on.counts.completed ?? 0
    expect(doneOn).toBeGreaterThanOrEqual(495) // ≥ 99%

    const off = await blackHole('0')
    expect(off.failuresWhenQuarantined).toBeNull()
    const failedOff = off.counts.failed ?? 0
    console.log(
      `black hole, 500 tasks, maxAttempts 3: with quarantine ${doneOn} completed, ${on.counts.failed ?? 0} failed ` +
        `(${on.holeFailures} attempts failed on it); without ${off.counts.completed ?? 0} completed, ${failedOff} failed ` +
        `(${off.holeFailures} attempts failed on it)`,
    )
    // Without quarantine, it burns attempts: more fail than with it.
    expect(off.holeFailures).toBeGreaterThan(on.holeFailures)
    expect(failedOff).toBeGreaterThan(on.counts.failed ?? 0)
  })
})

describe('tasks that fail on every agent', () => {
  it('quarantine no agent; one event says the tasks are bad', async () => {
    const h = await createHarness(settings('5'))
    try {
      const agents: Agent[] = []
      for (let i = 0; i < 3; i++) agents.push(await h.agent({ maxConcurrentTasks: 2 }))
      const tasks = Array.from({ length: 30 }, (_, i) => ({ name: `bad${i}`, type: 'bad.run', maxAttempts: 3 }))
      ok(await h.call('POST', '/api/v1/tasks/batch', { body: { tasks } }), 'batch')
      const held = new Map<string, Held>()
      for (let round = 0; round < 60; round++) {
        for (const a of agents) {
          const r = await beat(h, a, held.get(a.id) ?? [], 'failed')
          expect(r.status).toBe('online')
          held.set(a.id, r.held)
        }
        ok(await h.call('POST', '/api/v1/scheduler/sweep'), 'sweep')
        h.clock.advance(1000)
        const c = await counts(h)
        if ((c.pending ?? 0) + (c.assigned ?? 0) + (c.running ?? 0) === 0 && !(await autoRetryDue(h))) break
      }
      expect(await counts(h)).toEqual({ failed: 30 })
      const all = await h.events({})
      expect(all.filter((e) => e.type === 'agent.quarantined')).toEqual([])
      const said = all.filter((e) => e.type === 'tasks.failing_everywhere')
      expect(said).toHaveLength(1)
      expect(said[0]?.data).toMatchObject({ taskTypes: ['bad.run'], errorCodes: ['boom'] })
      expect((said[0]?.data as { agentIds: string[] } | undefined)?.agentIds.length).toBeGreaterThanOrEqual(2)
    } finally {
      await h.close()
    }
  })
})

describe('timeouts', () => {
  it('count as failed attempts: five timeouts in a row on three tasks quarantine the agent at the sweep', async () => {
    const h = await createHarness(settings('5'))
    try {
      const good = await h.agent({ maxConcurrentTasks: 1 })
      const slow = await h.agent({ maxConcurrentTasks: 3 })
      const done = await h.assignedTask(good.id, { type: 'slow.run' })
      ok(await h.report(done.id, good.token, { status: 'running', attempt: done.attempt }), 'start')
      ok(await h.report(done.id, good.token, { status: 'completed', attempt: done.attempt }), 'complete')
      for (const n of [3, 2]) {
        for (let i = 0; i < n; i++) {
          const t = await h.assignedTask(slow.id, { type: 'slow.run', timeoutSeconds: 1, maxAttempts: 1 })
          ok(await h.report(t.id, slow.token, { status: 'running', attempt: t.attempt }), 'start')
        }
        h.clock.advance(2000)
        ok(await h.call('POST', '/api/v1/scheduler/sweep'), 'sweep')
      }
      const a = ok(await h.call('GET', `/api/v1/agents/${slow.id}`), 'get')
      expect(a).toMatchObject({ status: 'quarantined' })
      const q = (await h.events({ agentId: slow.id })).find((e) => e.type === 'agent.quarantined')
      expect(q?.data).toMatchObject({ evidence: { failures: 5, errorCodes: ['timeout'], taskTypes: ['slow.run'] } })
    } finally {
      await h.close()
    }
  })
})
