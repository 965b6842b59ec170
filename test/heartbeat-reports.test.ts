import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connectDatabase } from '../src/db/connect'
import { createHarness, freshPostgresUrl, type Harness, onPostgres } from './harness'
import { until } from './until'

let h: Harness
beforeAll(async () => {
  h = await createHarness()
})
afterAll(async () => {
  await h.close()
})

const beat = (a: { id: string; token: string }, body: Record<string, unknown> = {}) =>
  h.call('POST', '/api/v1/agents/heartbeat', { token: a.token, body: { agentId: a.id, ...body } })

describe('reports batched in the heartbeat', () => {
  it('applies every report in order, judges each on its own, and hands out the slots they free', async () => {
    const a = await h.agent({ maxConcurrentTasks: 2 })
    const t1 = await h.assignedTask(a.id)
    const t2 = await h.assignedTask(a.id)
    const other = await h.agent({ maxConcurrentTasks: 1 })
    const foreign = await h.assignedTask(other.id)
    const waiting = await h.task() // pending: every agent of this test is full
    expect(waiting.status).toBe('pending')

    const res = await beat(a, {
      reports: [
        { taskId: t1.id, attempt: 1, status: 'running', progress: 10 },
        { taskId: t1.id, attempt: 1, status: 'completed', result: { rows: 3 } },
        { taskId: t2.id, attempt: 1, status: 'running' },
        { taskId: t2.id, attempt: 7, status: 'completed' }, // not this attempt
        { taskId: foreign.id, attempt: 1, status: 'running' }, // another agent's task
        { taskId: t2.id, attempt: 1, status: 'cancelled' }, // no cancel was asked
        { taskId: '0192f3c5-6d7e-7a1b-8c9d-0e1f2a3b4c5d', attempt: 1, status: 'running' },
      ],
    })
    expect(res.status).toBe(200)
    expect(res.body.reports).toEqual([
      { taskId: t1.id, ok: true },
      { taskId: t1.id, ok: true },
      { taskId: t2.id, ok: true },
      { taskId: t2.id, ok: false, code: 'stale_attempt', attempt: 1 },
      { taskId: foreign.id, ok: false, code: 'stale_attempt', attempt: 1 },
      { taskId: t2.id, ok: false, code: 'invalid_transition', status: 'running' },
      { taskId: '0192f3c5-6d7e-7a1b-8c9d-0e1f2a3b4c5d', ok: false, code: 'not_found' },
    ])
    // t1 ended, so its slot went to the waiting task in the same answer.
    expect(res.body.assignments.map((t: { id: string }) => t.id)).toEqual([waiting.id])
    expect(res.body.agent.activeTasks).toBe(2)

    const get = async (id: string) => (await h.call('GET', `/api/v1/tasks/${id}`)).body
    expect(await get(t1.id)).toMatchObject({ status: 'completed', result: { rows: 3 }, progress: 100 })
    expect(await get(t2.id)).toMatchObject({ status: 'running' })
    expect(await get(foreign.id)).toMatchObject({ status: 'assigned', agentId: other.id })
    // Started and ended in one heartbeat: one event, the end's, saying it started.
    const types = (await h.events({ taskId: t1.id })).map((e) => e.type)
    expect(types).toEqual(['task.created', 'task.assigned', 'task.completed'])

    // Repeating a report that already ended the task is fine (a resend after a lost answer).
    const again = await beat(a, { reports: [{ taskId: t1.id, attempt: 1, status: 'completed' }] })
    expect(again.body.reports).toEqual([{ taskId: t1.id, ok: true }])
    expect((await h.events({ taskId: t1.id })).filter((e) => e.type === 'task.completed')).toHaveLength(1)
  })

  it('a run that started and ended between two heartbeats is one event: its end, with started: true', async () => {
    const runs = async () => {
      const text: string = (await h.call('GET', '/metrics', { token: null })).body
      const count = (status: string) =>
        Number(
          text
            .split('\n')
            .find((l) => l.startsWith(`agenticcp_task_run_duration_seconds_count{status="${status}"}`))
            ?.split(' ')
            .at(-1) ?? 0,
        )
      return { completed: count('completed'), failed: count('failed') }
    }
    const before = await runs()
    const a = await h.agent({ maxConcurrentTasks: 4 })
    const [done, failed, refused, resent] = [
      await h.assignedTask(a.id),
      await h.assignedTask(a.id, { maxAttempts: 1 }),
      await h.assignedTask(a.id, { maxAttempts: 1 }),
      await h.assignedTask(a.id),
    ]
    // `resent` was reported running before, and its answer was lost: the runner sends both again.
    expect((await beat(a, { reports: [{ taskId: resent.id, attempt: 1, status: 'running' }] })).status).toBe(200)
    h.clock.advance(1000)
    const error = { code: 'exit_1', message: 'boom' }
    const res = await beat(a, {
      reports: [
        { taskId: done.id, attempt: 1, status: 'running', progress: 10 },
        { taskId: done.id, attempt: 1, status: 'completed', result: { rows: 1 } },
        { taskId: failed.id, attempt: 1, status: 'running' },
        { taskId: failed.id, attempt: 1, status: 'failed', error },
        { taskId: refused.id, attempt: 1, status: 'failed', error }, // never ran: assigned → failed
        { taskId: resent.id, attempt: 1, status: 'running' },
        { taskId: resent.id, attempt: 1, status: 'completed' },
      ],
    })
    expect(res.body.reports.every((r: { ok: boolean }) => r.ok)).toBe(true)
    expect(res.body.agent.activeTasks).toBe(0)

    const history = async (id: string) =>
      (await h.events({ taskId: id })).filter((e) => e.type !== 'task.created' && e.type !== 'task.assigned')
    const only = async (id: string) => {
      const list = await history(id)
      expect(list, id).toHaveLength(1)
      return list[0]
    }
    // Stored as assigned → completed; the one event says so, and that the run started.
    expect(await only(done.id)).toMatchObject({
      type: 'task.completed',
      agentId: a.id,
      data: { from: 'assigned', to: 'completed', attempt: 1, started: true },
    })
    expect(await only(failed.id)).toMatchObject({
      type: 'task.failed',
      data: { from: 'assigned', to: 'failed', attempt: 1, started: true, error },
    })
    // A refusal never started: the same move without `started`.
    const refusal = await only(refused.id)
    expect(refusal).toMatchObject({ type: 'task.failed', data: { from: 'assigned', to: 'failed', attempt: 1, error } })
    expect(refusal?.data).not.toHaveProperty('started')
    // A run already started: its start was written then, its end is an ordinary one.
    const resentEvents = await history(resent.id)
    expect(resentEvents.map((e) => [e.type, e.data])).toEqual([
      ['task.started', { from: 'assigned', to: 'running', attempt: 1 }],
      ['task.completed', { from: 'running', to: 'completed', attempt: 1 }],
    ])

    // The run's start is still on the task, and its run time in the metrics, as for two reports.
    const get = async (id: string) => (await h.call('GET', `/api/v1/tasks/${id}`)).body
    const now = h.clock.now().toISOString()
    expect(await get(done.id)).toMatchObject({
      status: 'completed',
      startedAt: now,
      finishedAt: now,
      progress: 100,
      result: { rows: 1 },
    })
    expect(await get(failed.id)).toMatchObject({ status: 'failed', startedAt: now, finishedAt: now, error })
    expect((await get(refused.id)).startedAt).toBeNull()
    const after = await runs()
    expect(after.completed - before.completed).toBe(2) // done and resent
    expect(after.failed - before.failed).toBe(1) // failed; the refusal had no run
  })

  it('applies several reports on one task in order (progress between start and end)', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    const res = await beat(a, {
      reports: [
        { taskId: t.id, attempt: 1, status: 'running', progress: 5 },
        { taskId: t.id, attempt: 1, status: 'running', progress: 50 },
        { taskId: t.id, attempt: 1, status: 'running', progress: 90 },
        { taskId: t.id, attempt: 1, status: 'completed', result: 'done' },
      ],
    })
    expect(res.body.reports.map((r: { ok: boolean }) => r.ok)).toEqual([true, true, true, true])
    expect(res.body.assignments).toEqual([])
    expect(res.body.agent.activeTasks).toBe(0)
    expect((await h.call('GET', `/api/v1/tasks/${t.id}`)).body).toMatchObject({ status: 'completed', result: 'done' })
    const types = (await h.events({ taskId: t.id })).map((e) => e.type)
    expect(types).toEqual(['task.created', 'task.assigned', 'task.started', 'task.progress', 'task.completed'])
  })

  it('fails a task with its error, and without reports answers an empty list', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id, { maxAttempts: 1 })
    const res = await beat(a, {
      reports: [{ taskId: t.id, attempt: 1, status: 'failed', error: { code: 'exit_2', message: 'boom' } }],
    })
    expect(res.body.reports).toEqual([{ taskId: t.id, ok: true }])
    expect((await h.call('GET', `/api/v1/tasks/${t.id}`)).body).toMatchObject({
      status: 'failed',
      error: { code: 'exit_2', message: 'boom' },
    })
    expect((await beat(a)).body.reports).toEqual([])
  })

  it('takes the same report once whatever the case of its id; "running, cancelled" stays two reports', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    const res = await beat(a, {
      reports: [
        { taskId: t.id, attempt: 1, status: 'running' },
        { taskId: t.id.toUpperCase(), attempt: 1, status: 'completed' },
        { taskId: t.id.toUpperCase(), attempt: 1, status: 'failed' },
      ],
    })
    expect(res.body.reports.map((r: { ok: boolean; code?: string }) => r.code ?? 'ok')).toEqual([
      'ok',
      'ok',
      'invalid_transition',
    ])
    expect((await h.call('GET', `/api/v1/tasks/${t.id}`)).body.status).toBe('completed')
    // The first round (started and completed: one row, a statement of its own) wrote one event.
    expect((await h.events({ taskId: t.id })).map((e) => [e.type, e.data])).toEqual([
      ['task.created', expect.anything()],
      ['task.assigned', expect.anything()],
      ['task.completed', { from: 'assigned', to: 'completed', attempt: 1, started: true }],
    ])
    // No cancel was asked: the running report applies, the cancelled one is refused.
    const u = await h.assignedTask(a.id)
    const cancel = await beat(a, {
      reports: [
        { taskId: u.id, attempt: 1, status: 'running' },
        { taskId: u.id, attempt: 1, status: 'cancelled' },
      ],
    })
    expect(cancel.body.reports.map((r: { ok: boolean; code?: string }) => r.code ?? 'ok')).toEqual([
      'ok',
      'invalid_transition',
    ])
    expect((await h.call('GET', `/api/v1/tasks/${u.id}`)).body.status).toBe('running')
    expect(cancel.body.assignments.map((x: { id: string }) => x.id)).not.toContain(u.id)
  })

  it('refuses more than 1,000 reports, and malformed ones, with 422 and nothing applied', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    const many = Array.from({ length: 1001 }, () => ({ taskId: t.id, attempt: 1, status: 'running' }))
    expect((await beat(a, { reports: many })).status).toBe(422)
    const bad = await beat(a, { reports: [{ taskId: t.id, attempt: 1, status: 'running' }, { taskId: t.id }] })
    expect(bad.status).toBe(422)
    expect(bad.body.errors.some((e: { path: string }) => e.path.startsWith('body.reports.1'))).toBe(true)
    expect((await h.call('GET', `/api/v1/tasks/${t.id}`)).body.status).toBe('assigned')
  })

  it('an operator heartbeating for an agent reports as that agent, fenced the same way', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    const other = await h.agent()
    const foreign = await h.assignedTask(other.id)
    const res = await h.call('POST', '/api/v1/agents/heartbeat', {
      token: await h.token('operator'),
      body: {
        agentId: a.id,
        reports: [
          { taskId: t.id, attempt: 1, status: 'running' },
          { taskId: foreign.id, attempt: 1, status: 'running' },
        ],
      },
    })
    expect(res.body.reports.map((r: { ok: boolean }) => r.ok)).toEqual([true, false])
  })
})

describe.runIf(onPostgres())('lock order', () => {
  it('a heartbeat with reports locks the reported tasks before its agent, as every other writer does', async () => {
    const url = await freshPostgresUrl()
    const p = await createHarness({}, await connectDatabase(url, { poolMax: 5 }))
    const other = new pg.Client({ connectionString: url })
    await other.connect()
    try {
      const a = await p.agent()
      const t = await p.assignedTask(a.id)
      // Someone holds the agent row (as a cancel, a delete or the sweep would, after its tasks).
      await other.query('BEGIN')
      await other.query('SELECT 1 FROM agents WHERE id = $1 FOR UPDATE', [a.id])
      const beating = p.call('POST', '/api/v1/agents/heartbeat', {
        token: a.token,
        body: { agentId: a.id, reports: [{ taskId: t.id, attempt: 1, status: 'running' }] },
      })
      // Wait until the heartbeat waits for that lock…
      await until('the heartbeat to wait for the agent row', async () => {
        const { rows } = await other.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity
            WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`,
        )
        return rows[0]?.n > 0
      })
      // …by then it must already hold the task: taking it now fails instead of deadlocking.
      const taken = await other.query('SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE NOWAIT', [t.id]).then(
        () => 'taken',
        (err: { code?: string }) => err.code,
      )
      expect(taken).toBe('55P03')
      await other.query('ROLLBACK')
      const res = await beating
      expect(res.status).toBe(200)
      expect(res.body.reports).toEqual([{ taskId: t.id, ok: true }])
    } finally {
      await other.end().catch(() => {})
      await p.close()
    }
  })
})
