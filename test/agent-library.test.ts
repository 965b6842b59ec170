import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import { Agent, loadState, type Task, TaskError } from '../src/agent'
import type { Report } from '../src/agent/api'
import { silentAgentLogger } from '../src/agent/log'
import { Outbox } from '../src/agent/outbox'
import { endReport, MAX_RESULT_BYTES } from '../src/agent/result'
import { ApiClientError, createClient, ok } from '../src/client'
import { createHarness, type Harness, unique } from './harness'
import { until } from './until'

/**
 * The runner as a library (`new Agent(…).handle(type, fn)`), in process against the real
 * app on the real database (PGlite, or Postgres in CI): handlers, progress, cancel through
 * `ctx.signal`, failures with codes, and a run that stops being this agent's.
 */
let h: Harness
const agents: Agent[] = []

beforeAll(async () => {
  h = await createHarness()
})
afterEach(async () => {
  for (const a of agents.splice(0)) {
    a.kill()
    await a.done().catch(() => {})
  }
})
afterAll(async () => h.close())

const appFetch: typeof fetch = async (input, init) => h.app.fetch(new Request(input as RequestInfo, init))

/**
 * Resolves once the service counts the agent online (its first heartbeat is in): a task
 * created from then on is placed on it at once, not at the end of its first long poll.
 */
const online = (agent: Agent) =>
  until('the agent online', async () => (await h.call('GET', `/api/v1/agents/${agent.id}`)).body.status === 'online')

async function agentWith(
  handlers: Record<string, (task: Task, ctx: Parameters<Parameters<Agent['handle']>[1]>[1]) => unknown>,
) {
  const admin = await h.token('admin')
  const api = createClient({ url: 'http://app', token: admin, fetch: appFetch })
  const scope = h.scope()
  const reg = await ok(api.api.v1['registration-tokens'].$post({ json: { maxUses: 1, labels: { scope } } }))
  const stateDir = mkdtempSync(join(tmpdir(), 'act-lib-'))
  const agent = new Agent({
    url: 'http://app',
    token: reg.token,
    name: unique('lib'),
    slots: 2,
    stateDir,
    cancelGraceSeconds: 1,
    maxWaitSeconds: 1,
    logger: silentAgentLogger,
    fetch: appFetch,
  })
  for (const [type, fn] of Object.entries(handlers)) agent.handle(type, fn)
  agents.push(agent)
  await agent.start()
  await online(agent)
  return { agent, api, stateDir }
}

const taskIn = (id: string, statuses: string[]) =>
  until(`task ${id} in ${statuses.join('|')}`, async () => {
    const t = (await h.call('GET', `/api/v1/tasks/${id}`)).body
    return statuses.includes(t.status) ? t : undefined
  })

describe('Agent (library)', () => {
  it('registers once (identity kept), runs a handler with progress, and reports its result', async () => {
    let release: () => void = () => {}
    const gate = new Promise<void>((r) => (release = r))
    const { agent } = await agentWith({
      'etl.load': async (task, ctx) => {
        ctx.log('loading\n', 'stdout')
        ctx.log('careful\n', 'stderr')
        ctx.progress(40)
        await gate
        return { rows: 12, day: (task.payload as { day: string }).day }
      },
    })
    expect(agent.id).toMatch(/^[0-9a-f-]{36}$/)
    const task = await h.task({ type: 'etl.load', payload: { day: '2026-11-25' } })
    await until('progress 40', async () => (await h.call('GET', `/api/v1/tasks/${task.id}`)).body.progress === 40)
    expect(agent.running).toBe(1)
    release()
    const done = await taskIn(task.id, ['completed', 'failed'])
    expect(done).toMatchObject({ status: 'completed', result: { rows: 12, day: '2026-11-25' }, progress: 100 })
    // ctx.log went to the task's log before the report.
    const log = (await h.call('GET', `/api/v1/tasks/${task.id}/logs`)).body
    expect(log.items.map((c: { stream: string; data: string }) => [c.stream, c.data])).toEqual([
      ['stdout', 'loading\n'],
      ['stderr', 'careful\n'],
    ])
  })

  it('fails with the code of a TaskError (kept result) or handler_error, and refuses unknown types by name', async () => {
    await agentWith({
      coded: () => {
        throw new TaskError('quota_exceeded', 'Out of quota.', { used: 5 })
      },
      broken: () => {
        throw new Error('boom')
      },
    })
    const coded = await h.task({ type: 'coded', maxAttempts: 1 })
    const broken = await h.task({ type: 'broken', maxAttempts: 1 })
    const unknown = await h.task({ type: 'nobody.handles', maxAttempts: 1 })
    expect(await taskIn(coded.id, ['failed'])).toMatchObject({
      error: { code: 'quota_exceeded', message: 'Out of quota.' },
      result: { used: 5 },
    })
    expect(await taskIn(broken.id, ['failed'])).toMatchObject({ error: { code: 'handler_error', message: 'boom' } })
    const refused = await taskIn(unknown.id, ['failed'])
    expect(refused.error.code).toBe('unsupported_type')
    expect(refused.error.message).toContain('nobody.handles')
  })

  it('aborts ctx.signal on a cancel and reports the task cancelled', async () => {
    let aborted = false
    await agentWith({
      long: (_task, ctx) =>
        new Promise((resolve) => {
          ctx.signal.addEventListener('abort', () => {
            aborted = true
            resolve('stopped')
          })
        }),
    })
    const task = await h.task({ type: 'long' })
    await taskIn(task.id, ['running'])
    expect((await h.call('POST', `/api/v1/tasks/${task.id}/cancel`)).status).toBe(202)
    expect(await taskIn(task.id, ['cancelled', 'completed', 'failed'])).toMatchObject({ status: 'cancelled' })
    expect(aborted).toBe(true)
  })

  it('a handler that ignores the cancel is given up on after the grace and reported cancelled', async () => {
    await agentWith({ stubborn: () => new Promise(() => {}) })
    const task = await h.task({ type: 'stubborn' })
    await taskIn(task.id, ['running'])
    await h.call('POST', `/api/v1/tasks/${task.id}/cancel`)
    expect(await taskIn(task.id, ['cancelled', 'completed', 'failed'])).toMatchObject({ status: 'cancelled' })
  })

  it('times a task out locally: failed with code timeout', async () => {
    await agentWith({ slow: (_t, ctx) => new Promise((r) => ctx.signal.addEventListener('abort', () => r(null))) })
    const task = await h.task({ type: 'slow', timeoutSeconds: 1, maxAttempts: 1 })
    const done = await taskIn(task.id, ['failed', 'timed_out'])
    expect(done.error.code).toBe('timeout')
  })

  it('a run that is no longer this agent’s is aborted, and the new attempt runs', async () => {
    const signals: AbortSignal[] = []
    await agentWith({
      held: (_task, ctx) => {
        signals.push(ctx.signal)
        return new Promise(() => {})
      },
    })
    // A day's timeout: the clock jumps below must end the run by the agent's silence, never
    // by a timeout (which a heartbeat landing first with the new time would leave as the cause).
    const task = await h.task({ type: 'held', maxAttempts: 3, timeoutSeconds: 86_400 })
    expect((await taskIn(task.id, ['running'])).attempt).toBe(1)
    // The service stops hearing the agent (its clock jumps past the heartbeat timeout): the
    // sweep takes the agent offline and requeues its task; the agent comes back and is
    // handed attempt 2 of the same task (its old run is told to stop: a cancellation for a task
    // it no longer holds).
    // (A heartbeat in flight may land with the new time before the sweep reads it: then
    // the jump is tried again.)
    await until(
      'the sweep to requeue the task of the silent agent',
      async () => {
        h.clock.advance(10 * 60_000)
        expect((await h.call('POST', '/api/v1/scheduler/sweep')).status).toBe(200)
        return (await h.call('GET', `/api/v1/tasks/${task.id}`)).body.lostCount >= 1
      },
      { everyMs: 200 },
    )
    await until('the old run to be stopped', () => signals[0]?.aborted)
    h.clock.advance(10 * 60_000) // past the requeue's backoff
    await until('attempt 2 running', async () => {
      const t = (await h.call('GET', `/api/v1/tasks/${task.id}`)).body
      return t.status === 'running' && t.attempt === 2
    })
    expect(signals).toHaveLength(2)
    expect(signals[0]?.aborted).toBe(true)
    expect(signals[1]?.aborted).toBe(false)
    const t = (await h.call('GET', `/api/v1/tasks/${task.id}`)).body
    expect(t).toMatchObject({ failures: 0, error: null })
    expect(t.lostCount).toBeGreaterThanOrEqual(1)
  })

  it('a restart from the state dir reports the runs the old process lost (agent_restarted), and they are retried at once', async () => {
    const api = createClient({ url: 'http://app', token: await h.token('admin'), fetch: appFetch })
    const reg = await ok(
      api.api.v1['registration-tokens'].$post({ json: { maxUses: 1, labels: { scope: h.scope() } } }),
    )
    const base = {
      url: 'http://app',
      name: unique('lib'),
      stateDir: mkdtempSync(join(tmpdir(), 'act-lib-')),
      cancelGraceSeconds: 1,
      maxWaitSeconds: 1,
      logger: silentAgentLogger,
    }
    let cut = false
    const cuttable: typeof fetch = (input, init) =>
      cut ? Promise.reject(new TypeError('fetch failed')) : appFetch(input, init)
    const first = new Agent({ ...base, token: reg.token, fetch: cuttable }).handle('hang', () => new Promise(() => {}))
    // Not stopped with the others: it stands for a dead process, whose reports never go out,
    // so its loop only ends at its last chance (grace + 10 s after kill). Nothing waits for it.
    onTestFinished(() => first.kill())
    await first.start()
    await online(first)
    // A day's timeout: nothing but the restart may end the run.
    const task = await h.task({ type: 'hang', maxAttempts: 3, timeoutSeconds: 86_400 })
    expect((await taskIn(task.id, ['running'])).attempt).toBe(1)
    // The first process dies without a word (from here on it reaches nothing) and a new one
    // starts from the same state dir, with no token: the same agent, which never went silent.
    cut = true
    const second = new Agent({ ...base, token: '', fetch: appFetch }).handle('hang', () => 'second run')
    agents.push(second)
    await second.start()
    expect(second.id).toBe(first.id)
    await until('the lost run reported failed', async () => {
      const t = (await h.call('GET', `/api/v1/tasks/${task.id}`)).body
      return t.attempt === 1 && t.status === 'failed' ? true : t.failures === 1
    })
    const events = (await h.call('GET', `/api/v1/tasks/${task.id}/events`)).body.items as {
      type: string
      data: unknown
    }[]
    const failed = events.filter((e) => e.type === 'task.failed')
    expect(failed).toHaveLength(1)
    expect(JSON.stringify(failed[0]?.data)).toContain('agent_restarted')
    // The sweep puts it back to pending with a backoff, and once that has passed the
    // restarted agent takes attempt 2 (the clock moves in steps shorter than the heartbeat
    // timeout, between which the agent beats, so it stays online).
    await until(
      'the sweep to retry it and the agent to take it',
      async () => {
        h.clock.advance(30_000)
        expect((await h.call('POST', '/api/v1/scheduler/sweep')).status).toBe(200)
        return !['failed', 'pending'].includes((await h.call('GET', `/api/v1/tasks/${task.id}`)).body.status)
      },
      { everyMs: 500 },
    )
    const done = await taskIn(task.id, ['completed'])
    expect(done).toMatchObject({ attempt: 2, agentId: first.id, result: 'second run', failures: 1, lostCount: 0 })
  })

  it('drains on stop: takes nothing new, finishes what runs, reports it', async () => {
    let release: () => void = () => {}
    const gate = new Promise<void>((r) => (release = r))
    const { agent } = await agentWith({ job: () => gate.then(() => 'ok') })
    const first = await h.task({ type: 'job' })
    await taskIn(first.id, ['running'])
    const stopping = agent.stop(30)
    await until(
      'draining status',
      async () => (await h.call('GET', `/api/v1/agents/${agent.id}`)).body.status === 'draining',
    )
    const second = await h.task({ type: 'job' })
    release()
    await stopping
    expect((await h.call('GET', `/api/v1/tasks/${first.id}`)).body).toMatchObject({ status: 'completed', result: 'ok' })
    expect((await h.call('GET', `/api/v1/tasks/${second.id}`)).body.status).toBe('pending')
  })

  it('refuses a bad registration token with AgentFatalError (not a retry loop)', async () => {
    const agent = new Agent({
      url: 'http://app',
      token: 'acpr_not-a-real-token-at-all',
      stateDir: false,
      logger: silentAgentLogger,
      fetch: appFetch,
    })
    await expect(agent.start()).rejects.toThrow(/Registration refused/)
  })

  it('the typed client turns problem answers into ApiClientError with the code', async () => {
    const api = createClient({ url: 'http://app', token: await h.token('viewer'), fetch: appFetch })
    const err = await ok(api.api.v1.tasks[':id'].$get({ param: { id: '00000000-0000-0000-0000-000000000000' } })).catch(
      (e: unknown) => e,
    )
    expect(err).toBeInstanceOf(ApiClientError)
    expect(err).toMatchObject({ status: 404, code: 'not_found' })
    const refused = await ok(api.api.v1.tasks.$post({ header: {}, json: { name: 'x', type: 'y' } })).catch((e) => e)
    expect(refused).toMatchObject({ status: 403, code: 'forbidden' })
  })

  it('keeps its identity in the state dir and reuses it', async () => {
    const { agent, stateDir } = await agentWith({})
    expect(loadState(stateDir)?.id).toBe(agent.id)
  })
})

describe('the runner’s parts', () => {
  const running = (i: number): Report => ({ taskId: `t${i}`, attempt: 1, status: 'running' })

  it('the outbox sends in order, at most 1,000 reports and 512 KiB a heartbeat, and puts back what went unanswered', () => {
    const outbox = new Outbox(() => {})
    outbox.addFirst(Array.from({ length: 1500 }, (_, i) => running(i)))
    const first = outbox.take()
    expect(first).toHaveLength(1000)
    expect(first[0]?.taskId).toBe('t0')
    outbox.putBack(first)
    expect(outbox.size).toBe(1500)
    expect(outbox.take()[999]?.taskId).toBe('t999')
    expect(outbox.take()).toHaveLength(500)
    const big = 'x'.repeat(200 * 1024)
    outbox.addFirst([1, 2, 3].map((i) => ({ ...running(i), status: 'completed', result: big })))
    expect(outbox.take()).toHaveLength(2)
    expect(outbox.take()).toHaveLength(1)
    // One report too large alone still goes (the service judges it).
    outbox.addFirst([{ ...running(4), status: 'completed', result: 'x'.repeat(600 * 1024) }])
    expect(outbox.take()).toHaveLength(1)
  })

  it('the outbox folds progress into a waiting running report and drops what is no longer the agent’s', () => {
    const outbox = new Outbox(() => {})
    outbox.addFirst([running(1), { ...running(2), attempt: 2 }])
    outbox.progress('t1', 1, 40)
    outbox.progress('t1', 1, 60)
    outbox.progress('t3', 1, 10)
    outbox.drop('t2', 2)
    expect(outbox.take()).toEqual([
      { taskId: 't1', attempt: 1, status: 'running', progress: 60 },
      { taskId: 't3', attempt: 1, status: 'running', progress: 10 },
    ])
  })

  it('a run’s end: its result, result_too_large, a TaskError’s code and bounded result, or why it was stopped', () => {
    const task = { id: 't', attempt: 2, timeoutSeconds: 7 } as Task
    expect(endReport(task, undefined, { ok: true, result: { n: 1 } })).toEqual({
      taskId: 't',
      attempt: 2,
      status: 'completed',
      result: { n: 1 },
    })
    expect(endReport(task, undefined, { ok: true, result: undefined })).toEqual({
      taskId: 't',
      attempt: 2,
      status: 'completed',
    })
    const huge = 'x'.repeat(MAX_RESULT_BYTES)
    expect(endReport(task, undefined, { ok: true, result: huge })).toMatchObject({
      status: 'failed',
      error: { code: 'result_too_large' },
    })
    expect(endReport(task, undefined, { ok: false, err: new TaskError('exit_3', 'bad', huge) })).toMatchObject({
      status: 'failed',
      error: { code: 'exit_3', message: 'bad' },
      result: { omitted: expect.stringContaining('left out') },
    })
    expect(endReport(task, undefined, { ok: false, err: 'thrown' })).toMatchObject({
      error: { code: 'handler_error', message: 'thrown' },
    })
    expect(endReport(task, 'cancel', { ok: false, err: new Error('aborted') })).toEqual({
      taskId: 't',
      attempt: 2,
      status: 'cancelled',
    })
    expect(endReport(task, 'timeout', { ok: true, result: 1 })).toMatchObject({
      status: 'failed',
      error: { code: 'timeout', message: expect.stringContaining('(7 s)') },
    })
    expect(endReport(task, 'stopped', { ok: false, err: new TaskError('signal_SIGTERM', 'x', { out: 'y' }) })).toEqual({
      taskId: 't',
      attempt: 2,
      status: 'failed',
      result: { out: 'y' },
      error: { code: 'agent_stopped', message: 'The agent stopped before the task finished.' },
    })
  })
})

describe('the runner and the client stand alone', () => {
  it('import nothing from the server but types (so they can ship as their own package)', async () => {
    const { readdirSync, readFileSync } = await import('node:fs')
    const offending: string[] = []
    for (const dir of ['src/agent', 'src/client']) {
      for (const file of readdirSync(dir)) {
        const text = readFileSync(join(dir, file), 'utf8')
        for (const m of text.matchAll(/^import\s+(type\s+)?[^'"]*from\s+'([^']+)'/gm)) {
          const [line, typeOnly, from = ''] = m
          // The domain is shared on purpose (it imports nothing of the server either: npm run lint:deps).
          const inside =
            from.startsWith('./') || from === '../client' || from === '../agent' || from.startsWith('../domain/')
          const external = !from.startsWith('.')
          if (!inside && !external && !typeOnly) offending.push(`${dir}/${file}: ${line}`)
        }
      }
    }
    expect(offending).toEqual([])
  })
})
