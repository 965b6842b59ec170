import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createClient } from '../src/client'
import { agentActions, drainAgent, quarantineAgent, releaseAgent, resumeAgent } from '../src/client/fleet'
import { type CallResult, createHarness, type Harness } from './harness'

/**
 * Fleet maintenance through the API: a drain with a deadline (its tasks asked to stop, then
 * requeued once without spending an attempt, never onto the drained agent, the agent ending
 * in its `then`), resume, quarantine by hand and timed, what a quarantined agent counts
 * for, and bulk actions with their selector. Automatic quarantine: test/quarantine.test.ts.
 */

let h: Harness
beforeAll(async () => {
  // Assigned tasks are not requeued for not starting here: the drain's requeue is what is watched.
  h = await createHarness({
    RATE_LIMIT_PER_MINUTE: '0',
    QUARANTINE_AFTER_FAILURES: '0',
    ASSIGN_TIMEOUT_SECONDS: '3600',
  })
})
afterAll(async () => {
  await h.close()
})

type Agent = Awaited<ReturnType<Harness['agent']>>
const ok = (res: CallResult, what: string) => {
  if (res.status >= 300) throw new Error(`${what}: ${res.status} ${JSON.stringify(res.body)}`)
  return res.body
}
const beat = (a: Agent, body: Record<string, unknown> = {}) =>
  h.call('POST', '/api/v1/agents/heartbeat', { token: a.token, body: { agentId: a.id, ...body } })
const get = async (path: string) => ok(await h.call('GET', `/api/v1/${path}`), path)
const post = (path: string, body?: unknown, token?: string) =>
  h.call('POST', `/api/v1/${path}`, { ...(body === undefined ? {} : { body }), ...(token ? { token } : {}) })

describe('drain with a deadline', () => {
  it('asks the held tasks to stop at the deadline, requeues the rest once after the grace, never onto the drained agent', async () => {
    const a = await h.agent({ maxConcurrentTasks: 3 })
    const [t1, t2, t3] = [await h.assignedTask(a.id), await h.assignedTask(a.id), await h.assignedTask(a.id)]
    for (const t of [t1, t2]) ok(await h.report(t.id, a.token, { status: 'running', attempt: t.attempt }), 'start')
    // t3 stays assigned (not started).
    const drained = ok(await post(`agents/${a.id}/drain`, { deadlineSeconds: 60 }), 'drain')
    expect(drained.status).toBe('draining')
    // biome-ignore lint/suspicious/noThenProperty: the drain's `then` (a status, never a function)
    expect(drained.drain).toEqual({ deadline: '2026-01-01T00:01:00.000Z', then: 'maintenance' })
    // A second agent, online, for the requeued tasks; a new task goes to it, never to a.
    const b = await h.agent({ maxConcurrentTasks: 5 })
    // The agent's own "online" does not undo an operator's drain; its answer says drain.
    const answer = ok(await beat(a, { status: 'online', runningTaskIds: [t1.id, t2.id] }), 'beat')
    expect(answer.agent.status).toBe('draining')
    // biome-ignore lint/suspicious/noThenProperty: the drain's `then` (a status, never a function)
    expect(answer.drain).toEqual({ deadline: '2026-01-01T00:01:00.000Z', then: 'maintenance', due: false })
    expect(answer.cancellations).toEqual([])

    // The deadline: the held tasks are asked to stop (not a cancel: not final, no cancelRequested).
    h.clock.advance(61_000)
    ok(await beat(b), 'beat b')
    ok(await post('scheduler/sweep'), 'sweep')
    const asked = ok(await beat(a, { runningTaskIds: [t1.id, t2.id] }), 'beat')
    expect([...asked.cancellations].sort()).toEqual([t1.id, t2.id, t3.id].sort())
    expect(asked.assignments).toEqual([]) // t3 is no longer one to start
    for (const t of [t1, t2]) {
      const now = await get(`tasks/${t.id}`)
      expect(now.status).toBe('running')
      expect(now.cancelRequested).toBe(false)
    }
    // The runner stops t1 and says why: a loss (lostCount), not a failure.
    const stopped = ok(
      await h.report(t1.id, a.token, {
        status: 'failed',
        attempt: t1.attempt,
        error: { code: 'agent_drained', message: 'drained' },
      }),
      'stop t1',
    )
    expect(stopped).toMatchObject({ status: 'failed', failures: 0, lostCount: 1 })

    // The grace: what it still holds (t2 running, t3 assigned) goes back to pending, once.
    h.clock.advance(h.config.cancelGraceSeconds * 1000 + 1000)
    ok(await beat(a, { runningTaskIds: [t2.id] }), 'beat')
    ok(await beat(b), 'beat b')
    ok(await post('scheduler/sweep'), 'sweep')
    for (const t of [t2, t3]) {
      const now = await get(`tasks/${t.id}`)
      expect(now.status).toBe('pending')
      expect(now).toMatchObject({ failures: 0, lostCount: 1 })
      const requeues = (await h.events({ taskId: t.id })).filter((e) => e.type === 'task.requeued')
      expect(requeues.map((e) => (e.data as { reason: string }).reason)).toEqual(['drain_requeue'])
    }
    // t2's run may still be alive on a: not placed before a reports its end (or 10 s pass).
    const early = ok(await beat(b), 'beat b')
    expect(early.assignments.map((t: { id: string }) => t.id)).not.toContain(t2.id)
    // a reports t2's end (late: it no longer holds it) and now holds nothing: it is drained.
    const end = ok(
      await beat(a, {
        reports: [
          { taskId: t2.id, attempt: t2.attempt, status: 'failed', error: { code: 'agent_drained', message: 'x' } },
        ],
      }),
      'beat',
    )
    expect(end.reports).toEqual([{ taskId: t2.id, ok: false, code: 'stale_attempt', attempt: t2.attempt }])
    expect(end.agent).toMatchObject({ status: 'maintenance', activeTasks: 0, drain: null })
    // The retry of t1 (its loss's backoff) and t2, t3: all onto b, none onto a.
    h.clock.advance(60_000)
    ok(await beat(a), 'beat a')
    ok(await post('scheduler/sweep'), 'sweep')
    const placed = ok(await beat(b), 'beat b')
    const onB = await Promise.all([t1, t2, t3].map((t) => get(`tasks/${t.id}`)))
    for (const t of onB)
      expect(t, JSON.stringify(placed.assignments.map((x: { id: string }) => x.id))).toMatchObject({
        agentId: b.id,
        status: 'assigned',
      })
    for (const t of onB) expect(t.failures).toBe(0)
    expect((await get(`agents/${a.id}`)).status).toBe('maintenance')
    const moves = (await h.events({ agentId: a.id })).filter((e) => e.type === 'agent.status_changed')
    // The sweep that put its last tasks back found it holding nothing: drained.
    expect(moves.slice(1).map((e) => e.data)).toEqual([
      { from: 'online', to: 'draining', by: 'admin', action: 'drain' },
      { from: 'draining', to: 'maintenance', by: 'sweep', action: 'drain' },
    ])

    // Resume: back online (it beats).
    const resumed = ok(await post(`agents/${a.id}/resume`), 'resume')
    expect(resumed).toMatchObject({ status: 'online', drain: null })
  })

  it('gives back the concurrency key of each task it requeues, in the statement that requeues it', async () => {
    const a = await h.agent({ maxConcurrentTasks: 2 })
    const key = `drained-key-${Date.now()}`
    const t = await h.assignedTask(a.id, { concurrency: { key, limit: 2 } })
    ok(await h.report(t.id, a.token, { status: 'running', attempt: t.attempt }), 'start')
    const keyRow = async () =>
      (await get('concurrency?limit=500')).items.find((k: { key: string }) => k.key === key) as Record<string, number>
    expect(await keyRow()).toMatchObject({ active: 1, pending: 0 })
    ok(await post(`agents/${a.id}/drain`, { deadlineSeconds: 1 }), 'drain')
    h.clock.advance(2_000)
    ok(await post('scheduler/sweep'), 'sweep') // the stop
    h.clock.advance(h.config.cancelGraceSeconds * 1000 + 1000)
    const corrections = async () => {
      const text: string = (await h.call('GET', '/metrics', { token: null })).body
      const line = text.split('\n').find((l) => l.startsWith('agenticcp_concurrency_key_corrections_total '))
      return Number(line?.split(' ')[1] ?? 0)
    }
    const before = await corrections()
    ok(await post('scheduler/sweep'), 'sweep') // the requeue
    expect((await get(`tasks/${t.id}`)).status).toBe('pending')
    expect(await keyRow()).toMatchObject({ active: 0, pending: 1 })
    // Given back by the requeue itself, not found off and corrected by the sweep's recount.
    expect(await corrections()).toBe(before)
  })

  it('moves an agent that holds nothing to its `then` at once; resume of a silent idle agent is offline', async () => {
    const a = await h.agent()
    // biome-ignore lint/suspicious/noThenProperty: the drain's `then` (a status, never a function)
    const out = ok(await post(`agents/${a.id}/drain`, { then: 'offline' }), 'drain')
    expect(out).toMatchObject({ status: 'offline', drain: null })
    // Resumed after its deadline: the stops its tasks were given are called off.
    const r = await h.agent()
    const kept = await h.assignedTask(r.id)
    ok(await post(`agents/${r.id}/drain`, { deadlineSeconds: 0 }), 'drain')
    ok(await post('scheduler/sweep'), 'sweep')
    expect(ok(await beat(r), 'beat').cancellations).toEqual([kept.id])
    expect(ok(await post(`agents/${r.id}/resume`), 'resume').status).toBe('online')
    const after = ok(await beat(r), 'beat')
    expect(after.cancellations).toEqual([])
    expect(after.assignments.map((t: { id: string }) => t.id)).toEqual([kept.id])
    const m = await h.agent()
    ok(await post(`agents/${m.id}/drain`, {}), 'drain')
    expect((await get(`agents/${m.id}`)).status).toBe('maintenance')
    h.clock.advance(h.config.heartbeatTimeoutSeconds * 1000 + 1000)
    expect(ok(await post(`agents/${m.id}/resume`), 'resume').status).toBe('offline')
    // Its next heartbeat brings it online.
    expect(ok(await beat(m), 'beat').agent.status).toBe('online')
  })

  it('refuses bad input (422), the wrong status (409), unknown agents (404) and viewers (403)', async () => {
    const a = await h.agent()
    for (const body of [
      { deadlineSeconds: -1 },
      { deadlineSeconds: 1.5 },
      { deadlineSeconds: 'soon' },
      { deadlineSeconds: 604_801 },
      // biome-ignore lint/suspicious/noThenProperty: the drain's `then` (a status, never a function)
      { then: 'online' },
      { extra: 1 },
    ]) {
      const res = await post(`agents/${a.id}/drain`, body)
      expect(res.status, JSON.stringify(body)).toBe(422)
    }
    for (const body of [
      {},
      { reason: '' },
      { reason: '  ' },
      { reason: 'x', minutes: 0 },
      { reason: 'x', minutes: 2.5 },
      { reason: 'x'.repeat(501) },
    ]) {
      const res = await post(`agents/${a.id}/quarantine`, body)
      expect(res.status, JSON.stringify(body)).toBe(422)
    }
    expect((await get(`agents/${a.id}`)).status).toBe('online') // nothing half-written
    expect((await post(`agents/${a.id}/resume`)).status).toBe(409)
    const rel = await post(`agents/${a.id}/release`)
    expect(rel.status).toBe(409)
    expect(rel.body.allowed).toEqual(['quarantined'])
    expect((await post('agents/01930000-0000-7000-8000-000000000001/drain', {})).status).toBe(404)
    const viewer = await h.token('viewer')
    expect((await post(`agents/${a.id}/drain`, {}, viewer)).status).toBe(403)
    expect((await post(`agents/${a.id}/quarantine`, { reason: 'x' }, viewer)).status).toBe(403)
    expect((await post(`agents/${a.id}/drain`, {}, a.token)).status).toBe(403)
  })
})

describe('quarantine by hand', () => {
  it('keeps the agent beating and finishing its work, gives it nothing new, does not count it as capacity, ends by the timer', async () => {
    const a = await h.agent({ maxConcurrentTasks: 4 })
    const held = await h.assignedTask(a.id)
    const at = h.clock.now().getTime()
    const q = ok(await post(`agents/${a.id}/quarantine`, { reason: 'flaky disk', minutes: 5 }), 'quarantine')
    expect(q).toMatchObject({
      status: 'quarantined',
      quarantine: {
        reason: 'flaky disk',
        since: new Date(at).toISOString(),
        until: new Date(at + 5 * 60_000).toISOString(),
      },
    })
    // Not capacity: statistics and metrics count online agents' slots only.
    const stats = await get('agents/statistics')
    expect(stats.byStatus.quarantined).toBeGreaterThanOrEqual(1)
    const metrics = (await h.call('GET', '/metrics', { token: null })).body as string
    const line = metrics.split('\n').find((l) => l.startsWith('agenticcp_agents{status="quarantined"}'))
    expect(Number(line?.split(' ').at(-1))).toBe(stats.byStatus.quarantined)
    const slotsLine = metrics.split('\n').find((l) => l.startsWith('agenticcp_agent_slots{state="total"}'))
    expect(Number(slotsLine?.split(' ').at(-1))).toBe(stats.slots.total)
    const online = (await get('agents?status=online&limit=100')).items as { maxConcurrentTasks: number }[]
    expect(stats.slots.total).toBe(online.reduce((n, x) => n + x.maxConcurrentTasks, 0))

    // It beats (its own "online" does not end it), finishes what it holds, gets nothing new.
    const waiting = await h.task()
    const b1 = ok(await beat(a, { status: 'online' }), 'beat')
    expect(b1.agent.status).toBe('quarantined')
    expect(b1.assignments.map((t: { id: string }) => t.id)).toEqual([held.id])
    ok(await h.report(held.id, a.token, { status: 'running', attempt: held.attempt }), 'start')
    ok(await h.report(held.id, a.token, { status: 'completed', attempt: held.attempt }), 'complete')
    expect((await get(`tasks/${waiting.id}`)).status).toBe('pending')
    // Neither the agent nor an operator's PATCH lifts it: release does.
    expect(
      (await h.call('PATCH', `/api/v1/agents/${a.id}/status`, { token: a.token, body: { status: 'online' } })).status,
    ).toBe(409)
    expect((await h.call('PATCH', `/api/v1/agents/${a.id}/status`, { body: { status: 'online' } })).status).toBe(409)
    // Silent for a while, it stays quarantined (the sweep's expiry does not end it).
    h.clock.advance(h.config.heartbeatTimeoutSeconds * 1000 + 1000)
    ok(await post('scheduler/sweep'), 'sweep')
    expect((await get(`agents/${a.id}`)).status).toBe('quarantined')
    // The timer: the sweep releases it (silent, holding nothing: offline until it beats).
    h.clock.advance(5 * 60_000)
    ok(await post('scheduler/sweep'), 'sweep')
    expect(await get(`agents/${a.id}`)).toMatchObject({ status: 'offline', quarantine: null })
    const types = (await h.events({ agentId: a.id })).map((e) => e.type)
    expect(types.filter((t) => t === 'agent.quarantined' || t === 'agent.released')).toEqual([
      'agent.quarantined',
      'agent.released',
    ])
    expect(ok(await beat(a), 'beat').agent.status).toBe('online')
  })

  it('release by hand ends it at once; an open-ended one has no until', async () => {
    const a = await h.agent()
    const q = ok(await post(`agents/${a.id}/quarantine`, { reason: 'investigating' }), 'quarantine')
    expect(q.quarantine.until).toBeNull()
    h.clock.advance(365 * 86_400_000)
    ok(await beat(a), 'beat')
    ok(await post('scheduler/sweep'), 'sweep')
    expect((await get(`agents/${a.id}`)).status).toBe('quarantined')
    expect((await post(`agents/${a.id}/drain`, {})).status).toBe(409)
    expect(ok(await post(`agents/${a.id}/release`), 'release')).toMatchObject({ status: 'online', quarantine: null })
  })
})

describe('bulk actions', () => {
  it('acts on the agents the selector matches whose status allows it, and returns their count and ids', async () => {
    const group = h.scope()
    const as = [
      await h.agent({ labels: { pool: `a-${group}` }, capabilities: ['gpu'] }),
      await h.agent({ labels: { pool: `a-${group}` }, capabilities: ['gpu'] }),
      await h.agent({ labels: { pool: `a-${group}` } }),
    ]
    const other = await h.agent({ labels: { pool: `b-${group}` }, capabilities: ['gpu'] })
    const q = ok(
      await post('agents/actions', {
        selector: { labels: { pool: `a-${group}` }, capabilities: ['gpu'] },
        action: 'quarantine',
        reason: 'bad batch of hosts',
        minutes: 10,
      }),
      'quarantine',
    )
    expect(q).toEqual({ count: 2, ids: [as[0]?.id, as[1]?.id].sort() })
    expect((await get(`agents/${other.id}`)).status).toBe('online')
    expect((await get(`agents/${as[2]?.id}`)).status).toBe('online')
    // Drain by ids: the quarantined one is left as it is.
    const d = ok(
      await post('agents/actions', { selector: { ids: as.map((a) => a.id) }, action: 'drain', deadlineSeconds: 30 }),
      'drain',
    )
    expect(d).toEqual({ count: 1, ids: [as[2]?.id] })
    expect((await get(`agents/${as[2]?.id}`)).status).toBe('maintenance') // held nothing
    const r = ok(
      await post('agents/actions', {
        selector: { status: ['quarantined'], labels: { pool: `a-${group}` } },
        action: 'release',
      }),
      'release',
    )
    expect(r.count).toBe(2)
    const back = ok(
      await post('agents/actions', { selector: { ids: as.map((a) => a.id) }, action: 'resume' }),
      'resume',
    )
    expect(back).toEqual({ count: 1, ids: [as[2]?.id] })
    const m = ok(await post('agents/actions', { selector: { ids: [other.id] }, action: 'maintenance' }), 'maintenance')
    expect(m).toEqual({ count: 1, ids: [other.id] })
  })

  it('refuses an empty selector, a quarantine without a reason, too many ids (422) and viewers (403)', async () => {
    for (const body of [
      { action: 'drain' },
      { selector: {}, action: 'drain' },
      { selector: { ids: [], labels: {}, capabilities: [] }, action: 'drain' },
      { selector: { region: 'r' }, action: 'quarantine' },
      { selector: { region: 'r' }, action: 'explode' },
      { selector: { region: 'r' }, action: 'release', minutes: 5 },
      { selector: { region: 'r' }, action: 'quarantine', reason: 'x', deadlineSeconds: 5 },
      {
        selector: { ids: Array.from({ length: 1001 }, () => '01930000-0000-7000-8000-000000000001') },
        action: 'drain',
      },
      { selector: { ids: ['nope'] }, action: 'drain' },
    ]) {
      const res = await post('agents/actions', body)
      expect(res.status, JSON.stringify(body).slice(0, 100)).toBe(422)
    }
    const empty = await post('agents/actions', { selector: {}, action: 'drain' })
    expect(empty.body.errors).toEqual([expect.objectContaining({ path: 'body.selector' })])
    const viewer = await h.token('viewer')
    expect((await post('agents/actions', { selector: { region: 'r' }, action: 'drain' }, viewer)).status).toBe(403)
  })
})

describe('the typed client', () => {
  it('drains, resumes, quarantines, releases and acts in bulk', async () => {
    const api = createClient({
      url: 'http://service',
      token: await h.token('operator'),
      fetch: (async (input: RequestInfo | URL, init?: RequestInit) =>
        h.app.request(input instanceof Request ? input : String(input), init)) as typeof fetch,
    })
    const a = await h.agent()
    expect((await drainAgent(api, a.id, { deadlineSeconds: 10 })).status).toBe('maintenance')
    expect((await resumeAgent(api, a.id)).status).toBe('online')
    expect((await quarantineAgent(api, a.id, { reason: 'testing' })).quarantine?.reason).toBe('testing')
    expect((await releaseAgent(api, a.id)).status).toBe('online')
    expect(await agentActions(api, { selector: { ids: [a.id] }, action: 'maintenance' })).toEqual({
      count: 1,
      ids: [a.id],
    })
  })
})
