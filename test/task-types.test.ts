import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHarness, type Harness } from './harness'

/**
 * Placement by task type: an agent declares the types it runs (`taskTypes`, `*` = any) and a
 * task goes only to an agent that runs its type — on every path (create, heartbeat, sweep,
 * execute) — waits with `no_agent_for_type` while no online agent does, and an agent handed
 * a type it does not run declines it without spending an attempt.
 */
let h: Harness
beforeAll(async () => {
  h = await createHarness({ RATE_LIMIT_PER_MINUTE: '0' })
})
afterAll(async () => {
  await h.close()
})

const get = async (id: string) => (await h.call('GET', `/api/v1/tasks/${id}`)).body
const beat = (a: { id: string; token: string }, body: Record<string, unknown> = {}) =>
  h.call('POST', '/api/v1/agents/heartbeat', { token: a.token, body: { agentId: a.id, ...body } })
const sweep = () => h.call('POST', '/api/v1/scheduler/sweep')

describe('declaring task types', () => {
  it('runs any type without a declaration, and keeps the one given on register, update and heartbeat', async () => {
    const any = await h.agent()
    expect(any.taskTypes).toEqual(['*'])
    const shell = await h.agent({ taskTypes: ['shell', 'shell'] })
    expect(shell.taskTypes).toEqual(['shell'])

    const current = (await h.call('GET', `/api/v1/agents/${shell.id}`)).body
    const put = await h.call('PUT', `/api/v1/agents/${shell.id}`, {
      body: {
        name: current.name,
        provider: current.provider,
        region: current.region,
        labels: current.labels,
        taskTypes: ['shell', 'etl.load'],
        maxConcurrentTasks: 2,
      },
    })
    expect(put.status).toBe(200)
    expect(put.body.taskTypes).toEqual(['shell', 'etl.load'])

    const before = (await h.call('GET', `/api/v1/agents/${shell.id}`)).body.version
    const hb = await beat(shell, { taskTypes: ['model.train'] })
    expect(hb.status).toBe(200)
    expect(hb.body.agent.taskTypes).toEqual(['model.train'])
    expect(hb.body.agent.version).toBe(before + 1)
    // A beat without taskTypes keeps the declaration, and the version.
    const again = await beat(shell)
    expect(again.body.agent.taskTypes).toEqual(['model.train'])
    expect(again.body.agent.version).toBe(before + 1)
  })

  it('refuses a declaration that is empty, too long or names no type (422, nothing written)', async () => {
    for (const taskTypes of [[], ['bad type'], Array.from({ length: 65 }, (_, i) => `t${i}`), ['**']]) {
      const res = await h.call('POST', '/api/v1/agents', {
        body: { name: `types-${taskTypes.length}`, provider: 'aws', taskTypes },
      })
      expect(res.status, JSON.stringify(taskTypes)).toBe(422)
      expect(res.body.errors[0].path).toMatch(/^body\.taskTypes/)
    }
    const a = await h.agent()
    const res = await beat(a, { taskTypes: [] })
    expect(res.status).toBe(422)
    expect((await h.call('GET', `/api/v1/agents/${a.id}`)).body.taskTypes).toEqual(['*'])
  })
})

describe('placing by type', () => {
  const otherTypes = ['etl.load', 'model.train', 'report.generate', 'video.transcode', 'backup.snapshot']

  it('a shell-only agent beside tasks of five other types takes only shell ones; the others wait for an agent that runs them', async () => {
    const shell = await h.agent({ taskTypes: ['shell'], maxConcurrentTasks: 10 })
    const others = []
    for (const type of otherTypes) others.push(await h.task({ type }))
    const mine = await h.task({ type: 'shell', payload: { command: 'true' } })
    // The create's fast path placed the shell task, and only it.
    expect(mine.status).toBe('assigned')
    expect(mine.agentId).toBe(shell.id)
    for (const t of others) {
      const now = await get(t.id)
      expect(now).toMatchObject({ status: 'pending', pendingReason: 'no_agent_for_type' })
      expect(now.pendingDetails).toContain(
        `the online agents that meet its other requirements do not run tasks of type ${t.type}`,
      )
    }
    // Neither the heartbeat's fill nor the sweep hands them out.
    const hb = await beat(shell)
    expect(hb.body.assignments.map((t: { type: string }) => t.type)).toEqual(['shell'])
    await sweep()
    for (const t of others) expect((await get(t.id)).status).toBe('pending')
    // Execute without an agent: nobody runs it; onto the shell agent: refused, with why.
    const none = await h.call('POST', '/api/v1/tasks/execute', { body: { taskId: others[0].id } })
    expect(none.status).toBe(409)
    expect(none.body.code).toBe('no_agent_available')
    expect(none.body.reasons).toContain(
      'the online agents that meet its other requirements do not run tasks of type etl.load',
    )
    const onto = await h.call('POST', '/api/v1/tasks/execute', { body: { taskId: others[0].id, agentId: shell.id } })
    expect(onto.status).toBe(409)
    expect(onto.body.code).toBe('agent_cannot_take_task')
    expect(onto.body.reasons).toContain('agent does not run tasks of type etl.load (it runs: shell)')

    // An agent that runs two of them arrives: its first heartbeat takes exactly those.
    const etl = await h.agent({ taskTypes: ['etl.load', 'model.train'], maxConcurrentTasks: 10 }, { online: false })
    const first = await beat(etl)
    expect(first.body.assignments.map((t: { type: string }) => t.type).sort()).toEqual(['etl.load', 'model.train'])
    for (const t of others.slice(2)) {
      expect(await get(t.id)).toMatchObject({ status: 'pending', pendingReason: 'no_agent_for_type' })
    }
    // …and a runner that learns a new handler says so on its next heartbeat.
    const more = await beat(etl, { taskTypes: ['etl.load', 'model.train', 'report.generate'] })
    expect(more.body.assignments.map((t: { type: string }) => t.type)).toContain('report.generate')
  })

  it('the sweep places by type too', async () => {
    const shell = await h.agent({ taskTypes: ['shell'], maxConcurrentTasks: 5 })
    const busy = await h.agent({ taskTypes: ['etl.load'], maxConcurrentTasks: 1 })
    // Draining: nothing reaches them until the sweep after they come back.
    await beat(shell, { status: 'draining' })
    await beat(busy, { status: 'draining' })
    const etl = await h.task({ type: 'etl.load' })
    const sh = await h.task({ type: 'shell', payload: { command: 'true' } })
    expect((await get(etl.id)).status).toBe('pending')
    await beat(shell, { status: 'online', waitSeconds: 0 })
    // The heartbeat itself took the shell task; put the etl agent online without a fill of its own:
    await h.call('PATCH', `/api/v1/agents/${busy.id}/status`, { body: { status: 'online' } })
    await sweep()
    expect(await get(etl.id)).toMatchObject({ status: 'assigned', agentId: busy.id })
    expect(await get(sh.id)).toMatchObject({ status: 'assigned', agentId: shell.id })
  })
})

describe('declining a task', () => {
  it('puts it back without spending an attempt, frees the slot, and never offers it to that agent again', async () => {
    const stale = await h.agent({ maxConcurrentTasks: 2 }) // declares any type, but does not run etl.load
    const t = await h.task({ type: 'etl.load' })
    expect(t).toMatchObject({ status: 'assigned', agentId: stale.id, attempt: 1 })

    const res = await beat(stale, {
      reports: [
        { taskId: t.id, attempt: 1, status: 'declined', error: { code: 'unsupported_type', message: 'no handler' } },
      ],
    })
    expect(res.body.reports).toEqual([{ taskId: t.id, ok: true }])
    // Not handed straight back in the same answer, nor on the next beats.
    expect(res.body.assignments.map((x: { id: string }) => x.id)).not.toContain(t.id)
    expect(res.body.agent.activeTasks).toBe(0)
    expect((await beat(stale)).body.assignments).toEqual([])
    await sweep()
    const back = await get(t.id)
    expect(back).toMatchObject({ status: 'pending', agentId: null, attempt: 1, failures: 0, lostCount: 0 })
    expect(back.pendingReason).toBe('no_matching_agent')
    expect(back.pendingDetails).toContain('the online agents that would fit it declined it')
    const events = await h.events({ taskId: t.id })
    expect(events.at(-1)).toMatchObject({
      type: 'task.requeued',
      agentId: stale.id,
      data: { from: 'assigned', to: 'pending', reason: 'decline', error: { code: 'unsupported_type' } },
    })

    // An agent that runs it takes it, as the next attempt.
    const etl = await h.agent({ taskTypes: ['etl.load'] }, { online: false })
    const taken = (await beat(etl)).body.assignments
    expect(taken.map((x: { id: string; attempt: number }) => [x.id, x.attempt])).toEqual([[t.id, 2]])
  })

  it('is refused from any state but assigned, and from an agent that does not hold the task', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    await h.report(t.id, a.token, { status: 'running', attempt: t.attempt })
    const late = await h.report(t.id, a.token, { status: 'declined', attempt: t.attempt })
    expect(late.status).toBe(409)
    expect(late.body.code).toBe('invalid_transition')
    const other = await h.agent()
    const t2 = await h.assignedTask(a.id)
    const notMine = await h.report(t2.id, other.token, { status: 'declined', attempt: t2.attempt })
    expect(notMine.status).toBe(409)
    expect(notMine.body.code).toBe('stale_attempt')
  })
})

describe('shell payloads at create', () => {
  it('refuses a shell task whose payload the runner would refuse (422, nothing written), and takes a good one', async () => {
    const bad = [
      { payload: {}, path: 'body.payload.command' },
      { payload: { command: 'x'.repeat(900_000) }, path: 'body.payload.command' },
      { payload: { command: 'ls', env: { 'BAD-NAME': '1' } }, path: 'body.payload.env.BAD-NAME' },
      { payload: { command: 'ls', extra: 1 }, path: 'body.payload' },
    ]
    for (const { payload, path } of bad) {
      const name = `shell-bad-${path}-${JSON.stringify(payload).length}`
      const res = await h.call('POST', '/api/v1/tasks', { body: { name, type: 'shell', payload } })
      expect(res.status, path).toBe(422)
      expect(res.body.errors.map((e: { path: string }) => e.path).join(' ')).toContain(path)
      const listed = await h.call('GET', '/api/v1/tasks?type=shell&limit=100')
      expect(listed.body.items.map((x: { name: string }) => x.name)).not.toContain(name)
    }
    const batch = await h.call('POST', '/api/v1/tasks/batch', {
      body: {
        tasks: [
          { name: 'ok', type: 'shell', payload: { command: ['ls', '-l'] } },
          { name: 'bad', type: 'shell' },
        ],
      },
    })
    expect(batch.status).toBe(422)
    expect(batch.body.errors[0].path).toBe('body.tasks.1.payload.command')
    const good = await h.call('POST', '/api/v1/tasks', {
      body: { name: 'shell-good', type: 'shell', payload: { command: 'echo hi', env: { A: '1' }, cwd: '/tmp' } },
    })
    expect(good.status).toBe(201)
    // Other types' payloads are theirs to define.
    expect(
      (await h.call('POST', '/api/v1/tasks', { body: { name: 'free', type: 'etl.load', payload: {} } })).status,
    ).toBe(201)
    const edit = await h.call('PUT', `/api/v1/tasks/${good.body.id}`, {
      body: { name: 'shell-good', type: 'shell', payload: { command: '' } },
    })
    expect([409, 422]).toContain(edit.status)
  })
})
