import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type FitAgent, misfits } from '../src/domain/fit'
import { matchTasks, type TaskReq } from '../src/services/placement'
import { createHarness, type Harness, unique } from './harness'

let h: Harness
beforeAll(async () => {
  h = await createHarness()
})
afterAll(async () => {
  await h.close()
})

const execute = (taskId: string, agentId?: string) =>
  h.call('POST', '/api/v1/tasks/execute', { body: { taskId, ...(agentId ? { agentId } : {}) } })

describe('POST /api/v1/tasks/execute', () => {
  it('places on the least-loaded fitting agent', async () => {
    const cap = unique('cap')
    const busy = await h.agent({ capabilities: [cap], maxConcurrentTasks: 4 })
    const idle = await h.agent({ capabilities: [cap], maxConcurrentTasks: 4 })
    await h.agent({ capabilities: ['other'], maxConcurrentTasks: 10 }) // does not fit
    await h.assignedTask(busy.id, { requirements: { capabilities: [cap] } })

    const t = await h.pendingTask({ requirements: { capabilities: [cap] } })
    const res = await execute(t.id)
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({ status: 'assigned', agentId: idle.id, attempt: 1 })
    expect(res.headers.get('etag')).toBe(`"${res.body.version}"`)
    expect(res.body.assignedAt).toBe(h.clock.now().toISOString())
    const ev = (await h.events({ taskId: t.id })).at(-1)
    expect(ev).toMatchObject({
      type: 'task.assigned',
      agentId: idle.id,
      data: { from: 'pending', to: 'assigned', attempt: 1 },
    })
  })

  it('matches provider, region, labels and a pinned agent', async () => {
    const region = unique('r')
    const gcp = await h.agent({ provider: 'gcp', region, labels: { tier: 'gold', zone: 'a' } })
    const aws = await h.agent({ provider: 'aws', region, labels: { tier: 'gold' } })

    const byProvider = await h.pendingTask({ requirements: { provider: 'gcp', region } })
    expect((await execute(byProvider.id)).body.agentId).toBe(gcp.id)
    const byLabels = await h.pendingTask({ requirements: { region, labels: { tier: 'gold', zone: 'a' } } })
    expect((await execute(byLabels.id)).body.agentId).toBe(gcp.id)
    const pinned = await h.pendingTask({ requirements: { agentId: aws.id } })
    expect((await execute(pinned.id)).body.agentId).toBe(aws.id)
  })

  it('answers 409 no_agent_available with reasons when nothing fits, leaving the task pending', async () => {
    const cap = unique('rare')
    const t = await h.task({ requirements: { capabilities: [cap], region: 'nowhere-1' } })
    const res = await execute(t.id)
    expect(res.status).toBe(409)
    expect(res.body.code).toBe('no_agent_available')
    expect(res.body.reasons).toEqual(
      expect.arrayContaining([`no online agent has capabilities: ${cap}`, 'no online agent in region nowhere-1']),
    )
    const after = await h.call('GET', `/api/v1/tasks/${t.id}`)
    expect(after.body).toMatchObject({ status: 'pending', attempt: 0, version: 1, pendingReason: 'no_matching_agent' })
  })

  it('says when every fitting agent is full', async () => {
    const cap = unique('full')
    const a = await h.agent({ capabilities: [cap], maxConcurrentTasks: 1 })
    await h.assignedTask(a.id)
    const t = await h.pendingTask({ requirements: { capabilities: [cap] } })
    const res = await execute(t.id)
    expect(res.status).toBe(409)
    expect(res.body.reasons).toEqual(['all 1 fitting online agent(s) are at capacity'])
  })

  it('never places on a non-online agent', async () => {
    const cap = unique('status')
    const a = await h.agent({ capabilities: [cap] })
    const t = await h.pendingTask({ requirements: { capabilities: [cap] } })
    for (const status of ['draining', 'maintenance', 'error']) {
      await h.call('PATCH', `/api/v1/agents/${a.id}/status`, { body: { status } })
      const res = await execute(t.id)
      expect(res.status, status).toBe(409)
      const onIt = await execute(t.id, a.id)
      expect(onIt.status).toBe(409)
      expect(onIt.body.code).toBe('agent_cannot_take_task')
      expect(onIt.body.reasons).toContain(`agent is ${status}, not online`)
    }
  })

  it('on a named agent, refuses with the reasons when it cannot take the task', async () => {
    const a = await h.agent({ capabilities: ['cpu'], maxConcurrentTasks: 1, provider: 'aws' })
    const t = await h.pendingTask({ requirements: { capabilities: ['gpu'], provider: 'azure' } })
    const res = await execute(t.id, a.id)
    expect(res.status).toBe(409)
    expect(res.body.reasons).toEqual(['agent lacks capabilities: gpu', 'task needs provider azure, agent is aws'])

    const ok = await h.pendingTask()
    expect((await execute(ok.id, a.id)).status).toBe(200)
    const full = await h.pendingTask()
    const res2 = await execute(full.id, a.id)
    expect(res2.body.reasons).toEqual(['agent has no free slot (1/1)'])
  })

  it('refuses a task that is not pending (409) and unknown ids (404)', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    const res = await execute(t.id)
    expect(res.status).toBe(409)
    expect(res.body.code).toBe('invalid_transition')
    expect(res.body.allowed).toContain('running (report)')
    expect((await execute('0192f3c5-6d7e-7a1b-8c9d-0e1f2a3b4c5d')).status).toBe(404)
    const p = await h.pendingTask()
    expect((await execute(p.id, '0192f3c5-6d7e-7a1b-8c9d-0e1f2a3b4c5d')).status).toBe(404)
  })

  it('never exceeds an agent’s slots or assigns a task twice when executes race', async () => {
    const cap = unique('race')
    const agents = [
      await h.agent({ capabilities: [cap], maxConcurrentTasks: 2 }),
      await h.agent({ capabilities: [cap], maxConcurrentTasks: 3 }),
    ]
    const list = []
    for (let i = 0; i < 8; i++) list.push(await h.pendingTask({ requirements: { capabilities: [cap] } }))
    // every task executed twice at once: 16 calls for 8 tasks and 5 slots
    const results = await Promise.all([...list, ...list].map((t) => execute(t.id)))
    const placed = results.filter((r) => r.status === 200)
    expect(placed).toHaveLength(5)
    expect(new Set(placed.map((r) => r.body.id)).size).toBe(5)
    for (const r of results.filter((x) => x.status !== 200)) {
      expect(['no_agent_available', 'invalid_transition']).toContain(r.body.code)
    }
    for (const a of agents) {
      const got = await h.call('GET', `/api/v1/agents/${a.id}`)
      expect(got.body.activeTasks).toBeLessThanOrEqual(a.maxConcurrentTasks)
      const held = await h.call('GET', `/api/v1/tasks?agentId=${a.id}&status=assigned`)
      expect(held.body.items).toHaveLength(got.body.activeTasks)
    }
  })
})

describe('matchTasks (in-memory placement for batches)', () => {
  const agent = (id: string, over: Partial<FitAgent> = {}): FitAgent => ({
    id,
    status: 'online',
    provider: 'aws',
    region: 'r1',
    capabilities: [],
    labels: {},
    taskTypes: ['*'],
    maxConcurrentTasks: 1,
    activeTasks: 0,
    ...over,
  })
  const task = (id: string, over: Partial<TaskReq> = {}): TaskReq => ({
    id,
    type: 'x',
    declinedBy: [],
    reqCapabilities: [],
    reqProvider: null,
    reqRegion: null,
    reqLabels: {},
    reqAgentId: null,
    ...over,
  })

  it('spreads by load and respects slots', () => {
    const pool = [agent('a', { maxConcurrentTasks: 2 }), agent('b', { maxConcurrentTasks: 1 })]
    const out = matchTasks([task('1'), task('2'), task('3'), task('4')], pool)
    expect(out).toEqual([
      { taskId: '1', agentId: 'a' },
      { taskId: '2', agentId: 'b' },
      { taskId: '3', agentId: 'a' },
    ])
  })

  it('lets a task nothing fits fall through without blocking the ones behind it', () => {
    const pool = [agent('gpu', { capabilities: ['gpu'] }), agent('cpu', { capabilities: ['cpu'] })]
    const out = matchTasks([task('t1', { reqCapabilities: ['tpu'] }), task('t2', { reqCapabilities: ['cpu'] })], pool)
    expect(out).toEqual([{ taskId: 't2', agentId: 'cpu' }])
  })

  it('explains misfits one by one', () => {
    const a = agent('a', { status: 'draining', activeTasks: 1, capabilities: ['x'], labels: { k: 'v' } })
    expect(
      misfits(task('t', { reqCapabilities: ['x', 'y'], reqRegion: 'r2', reqLabels: { k: 'w' }, reqAgentId: 'b' }), a),
    ).toEqual([
      'agent is draining, not online',
      'agent has no free slot (1/1)',
      'agent lacks capabilities: y',
      'task needs region r2, agent is in r1',
      'agent labels do not match the required labels',
      'task is pinned to agent b',
    ])
  })
})
