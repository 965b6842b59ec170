import { cpSync, existsSync, mkdtempSync, readFileSync, utimesSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import { Agent, AgentFatalError, loadState, type Task, TaskError, TaskLog } from '../src/agent'
import type { Report } from '../src/agent/api'
import { procStat } from '../src/agent/groups'
import { LOCK_FILE } from '../src/agent/lock'
import { createLogger, silentAgentLogger } from '../src/agent/log'
import { unreachableCause } from '../src/agent/net'
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
  logger = silentAgentLogger,
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
    logger,
    fetch: appFetch,
  })
  for (const [type, fn] of Object.entries(handlers)) agent.handle(type, fn)
  agents.push(agent)
  await agent.start()
  await online(agent)
  return { agent, api, stateDir }
}

/** A handler that runs until its run is asked to stop (ctx.signal), and whether it was. */
function stoppable() {
  const out = {
    aborted: false,
    handler: (_task: unknown, ctx: { signal: AbortSignal }) =>
      new Promise<string>((resolve) => {
        ctx.signal.addEventListener('abort', () => {
          out.aborted = true
          resolve('stopped')
        })
      }),
  }
  return out
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

  it('fails with the code of a TaskError (kept result) or handler_error; a type it has no handler for never reaches it', async () => {
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
    // A type it has no handler for is never handed to it (it declared the types it runs):
    // the task waits, saying why and naming its type.
    const refused = await until('the unknown type to wait', async () => {
      const t = (await h.call('GET', `/api/v1/tasks/${unknown.id}`)).body
      return t.pendingReason === 'no_agent_for_type' ? t : undefined
    })
    expect(refused).toMatchObject({ status: 'pending', attempt: 0, error: null })
    expect(refused.pendingDetails.join(' ')).toContain('nobody.handles')
  })

  it('declares the types it has handlers for (registering, and in a heartbeat when one is added)', async () => {
    const { agent } = await agentWith({ 'etl.load': () => 'loaded' })
    const declared = async () => (await h.call('GET', `/api/v1/agents/${agent.id}`)).body.taskTypes
    expect(await declared()).toEqual(['etl.load'])
    const later = await h.task({ type: 'etl.report' })
    await until('etl.report to wait', async () => {
      const t = (await h.call('GET', `/api/v1/tasks/${later.id}`)).body
      return t.pendingReason === 'no_agent_for_type'
    })
    agent.handle('etl.report', () => 'reported')
    await until('the new type declared', async () => (await declared()).includes('etl.report'))
    expect(await declared()).toEqual(['etl.load', 'etl.report'])
    expect(await taskIn(later.id, ['completed', 'failed'])).toMatchObject({ status: 'completed', result: 'reported' })
  })

  it('with no handler at all declares that it runs nothing, and is handed nothing', async () => {
    const { agent } = await agentWith({})
    expect((await h.call('GET', `/api/v1/agents/${agent.id}`)).body.taskTypes).toEqual([])
    const t = await h.task({ type: 'etl.load' })
    expect((await h.call('GET', `/api/v1/tasks/${t.id}`)).body).toMatchObject({
      status: 'pending',
      pendingReason: 'no_agent_for_type',
    })
  })

  it('declines a task of a type it has no handler for (a stale declaration): back to the queue, no attempt spent, never handed to it again; one log line per type', async () => {
    const lines: { msg: string; type?: string }[] = []
    const logger = createLogger({ format: 'json', write: (l) => lines.push(JSON.parse(l)) })
    const { agent } = await agentWith({ known: () => 'ok' }, logger)
    const declared = async () => (await h.call('GET', `/api/v1/agents/${agent.id}`)).body.taskTypes
    expect(await declared()).toEqual(['known'])
    /** An operator's PUT (its settings as they are) saying it runs any type. */
    const runsAnything = async () => {
      const a = (await h.call('GET', `/api/v1/agents/${agent.id}`)).body
      const body = {
        name: a.name,
        provider: a.provider,
        capabilities: a.capabilities,
        labels: a.labels,
        maxConcurrentTasks: a.maxConcurrentTasks,
        taskTypes: ['*'],
      }
      expect((await h.call('PUT', `/api/v1/agents/${agent.id}`, { body })).status).toBe(200)
    }
    const tasks = [
      ...(await Promise.all([1, 2, 3].map(() => h.task({ type: 'etl.load', maxAttempts: 1 })))),
      ...(await Promise.all([1, 2].map(() => h.task({ type: 'model.train', maxAttempts: 1 })))),
    ]
    // The service is told it runs anything (an operator, or a declaration from before a
    // handler went): it is handed those tasks, declines each, and says again what it runs.
    // Told again whenever it has said so, until it has declined all five.
    const total = () => Object.values(agent.declined).reduce((n, k) => n + k, 0)
    await until(
      'all five declined',
      async () => {
        if (total() >= 5) return true
        if (!(await declared()).includes('*')) await runsAnything()
        return false
      },
      { everyMs: 100 },
    )
    expect(agent.declined).toEqual({ 'etl.load': 3, 'model.train': 2 })
    await until('its own types declared again', async () => !(await declared()).includes('*'))
    for (const t of tasks) {
      const got = (await h.call('GET', `/api/v1/tasks/${t.id}`)).body
      expect(got).toMatchObject({ status: 'pending', attempt: 1, failures: 0, lostCount: 0, agentId: null })
    }
    // One line per type, not per task.
    const said = lines.filter((l) => l.msg.startsWith('declining tasks of type'))
    expect(said.map((l) => l.type)).toEqual(['etl.load', 'model.train'])
    expect(said[0]?.msg).toMatch(
      /^declining tasks of type etl\.load: no handler \(first seen \d{4}-.*\); this agent runs: known$/,
    )
    // Declined is final for this agent: told again that it runs anything, it is not handed them.
    await runsAnything()
    const known = await h.task({ type: 'known' })
    expect(await taskIn(known.id, ['completed', 'failed'])).toMatchObject({ status: 'completed', agentId: agent.id })
    expect(total()).toBe(5)
    for (const t of tasks) {
      const got = (await h.call('GET', `/api/v1/tasks/${t.id}`)).body
      expect(got.status).toBe('pending')
      expect(got.pendingReason).not.toBe('queued')
    }
  })

  it('aborts ctx.signal on a cancel and reports the task cancelled', async () => {
    const stops = stoppable()
    await agentWith({ long: stops.handler })
    const task = await h.task({ type: 'long' })
    await taskIn(task.id, ['running'])
    expect((await h.call('POST', `/api/v1/tasks/${task.id}/cancel`)).status).toBe(202)
    expect(await taskIn(task.id, ['cancelled', 'completed', 'failed'])).toMatchObject({ status: 'cancelled' })
    expect(stops.aborted).toBe(true)
  })

  it('drained by an operator past its deadline: stops the run and reports it agent_drained (a loss, no attempt spent)', async () => {
    const stops = stoppable()
    const { agent } = await agentWith({ long: stops.handler })
    const task = await h.task({ type: 'long' })
    await taskIn(task.id, ['running'])
    expect((await h.call('POST', `/api/v1/agents/${agent.id}/drain`, { body: { deadlineSeconds: 0 } })).status).toBe(
      200,
    )
    await h.sweep() // the deadline passed: its task is asked to stop
    const stopped = await taskIn(task.id, ['failed', 'cancelled', 'completed'])
    expect(stopped).toMatchObject({ status: 'failed', failures: 0, lostCount: 1, error: { code: 'agent_drained' } })
    expect(stops.aborted).toBe(true)
  })

  it('cancelled by a user while its agent is drained, before the drain is due: reports it cancelled, not drained', async () => {
    const stops = stoppable()
    const { agent } = await agentWith({ long: stops.handler })
    const task = await h.task({ type: 'long' })
    await taskIn(task.id, ['running'])
    const drain = await h.call('POST', `/api/v1/agents/${agent.id}/drain`, { body: { deadlineSeconds: 3600 } })
    expect(drain.status).toBe(200)
    expect((await h.call('POST', `/api/v1/tasks/${task.id}/cancel`)).status).toBe(202)
    const ended = await taskIn(task.id, ['failed', 'cancelled', 'completed'])
    expect(ended).toMatchObject({ status: 'cancelled', lostCount: 0, failures: 0 })
    expect(stops.aborted).toBe(true)
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
    // (The first, in this process, still holds its dir: the new one starts from a copy of the
    // state it left, as a dead process leaves it; its lock would name a process that is gone.)
    cut = true
    const copy = mkdtempSync(join(tmpdir(), 'act-lib-'))
    cpSync(join(base.stateDir, 'agent.json'), join(copy, 'agent.json'))
    const second = new Agent({ ...base, stateDir: copy, token: '', fetch: appFetch }).handle('hang', () => 'second run')
    agents.push(second)
    await second.start()
    expect(second.id).toBe(first.id)
    await until('the lost run reported failed', async () => {
      const t = (await h.call('GET', `/api/v1/tasks/${task.id}`)).body
      return t.attempt === 1 && t.status === 'failed' ? true : t.lostCount === 1
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
    // The run was lost with the old process, not failed: it counts like a lost agent.
    expect(done).toMatchObject({ attempt: 2, agentId: first.id, result: 'second run', failures: 0, lostCount: 1 })
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

  it('holds its state dir: a second agent on it is refused by name, a lock left by a process that is gone is taken over', async () => {
    const { agent, stateDir } = await agentWith({})
    const lock = join(stateDir, LOCK_FILE)
    const holder = () => JSON.parse(readFileSync(lock, 'utf8'))
    expect(holder()).toMatchObject({ pid: process.pid, host: hostname(), start: procStat(process.pid)?.start })
    const again = () => {
      const a = new Agent({ url: 'http://app', token: '', stateDir, logger: silentAgentLogger, fetch: appFetch })
      agents.push(a)
      return a
    }
    // Held by a live agent (here, of this very process): refused before it does anything.
    const second = again()
    const refused = await second.start().catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(AgentFatalError)
    expect((refused as Error).message).toMatch(new RegExp(`in use by runner process ${process.pid}\\b`))
    expect(second.id).toBeUndefined()
    // Held by another live process of this host (pid 1, as it started): refused by its pid.
    await agent.stop(5)
    expect(existsSync(lock)).toBe(false) // released on a clean stop
    const init = procStat(1)
    if (init) {
      writeFileSync(lock, JSON.stringify({ pid: 1, start: init.start, host: hostname() }))
      await expect(again().start()).rejects.toThrow(/in use by runner process 1\b/)
      // The same pid started at another time is another process: the lock is stale.
      writeFileSync(lock, JSON.stringify({ pid: 1, start: init.start + 1, host: hostname() }))
      const reused = again()
      await reused.start()
      expect(reused.id).toBe(agent.id)
      expect(holder().pid).toBe(process.pid)
      await reused.stop(5)
    }
    // A pid no process has (above the largest pid_max): taken over.
    writeFileSync(lock, JSON.stringify({ pid: 2 ** 22 + 1, start: 1, host: hostname() }))
    const third = again()
    await third.start()
    expect(third.id).toBe(agent.id)
    expect(holder().pid).toBe(process.pid)
    await third.stop(5)
    // Another host's runner (a shared volume): its pid means nothing here; its lease does.
    writeFileSync(lock, JSON.stringify({ pid: 4242, host: 'elsewhere', since: '2026-01-01T00:00:00.000Z' }))
    await expect(again().start()).rejects.toThrow(/in use by runner process 4242 on elsewhere/)
    const old = new Date(Date.now() - 60_000)
    utimesSync(lock, old, old)
    const fourth = again()
    await fourth.start()
    expect(fourth.id).toBe(agent.id)
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

  it('a burst the service cannot take: whole lines dropped, each gap marked where it is with its own bytes and lines', async () => {
    type Chunk = { seq: number; stream: string; data: string }
    const stored = new Map<number, Chunk>()
    // A slow service: each request waits until the test lets it through.
    const waiting: (() => void)[] = []
    const log = new TaskLog(
      (chunks) =>
        new Promise((resolve) =>
          waiting.push(() => {
            for (const c of chunks) if (!stored.has(c.seq)) stored.set(c.seq, c)
            resolve('ok')
          }),
        ),
      { flushMs: 1, chunkChars: 1000, batchChars: 4000, maxChars: 20_000 },
    )
    const letOneThrough = async () => {
      waiting.shift()?.()
      await new Promise((r) => setImmediate(r))
    }
    // 40 times the bound, written in pieces cut anywhere (mid-line), a stderr line now and then
    // between two pieces of a stdout line; the service takes a request now and then.
    let out = ''
    for (let i = 1; i <= 70_000; i++) out += `line ${i}\n`
    let errs = 0
    for (let at = 0, k = 0; at < out.length; at += 777, k++) {
      log.write(out.slice(at, at + 777), 'stdout')
      if (k % 50 === 0) log.write(`err ${++errs}\n`, 'stderr')
      if (k % 200 === 199) await letOneThrough()
    }
    const drained = log.drain(10_000)
    while (!log.empty) await letOneThrough()
    expect(await drained).toBe(true)
    const chunks = [...stored.values()].sort((a, b) => a.seq - b.seq)
    const markers = chunks.filter((c) => c.stream === 'system')
    expect(markers.length).toBeGreaterThan(1)
    // Each stream's text is whole lines, in order, the first and the last kept.
    const linesOf = (stream: string) =>
      chunks
        .filter((c) => c.stream === stream)
        .map((c) => c.data)
        .join('')
        .split('\n')
    const outLines = linesOf('stdout')
    expect(outLines.pop()).toBe('')
    expect(outLines.every((l) => /^line \d+$/.test(l))).toBe(true)
    const numbers = outLines.map((l) => Number(l.slice(5)))
    expect(numbers[0]).toBe(1)
    expect(numbers.at(-1)).toBe(70_000)
    expect(numbers.every((n, i) => i === 0 || n > (numbers[i - 1] as number))).toBe(true)
    const errLines = linesOf('stderr')
    expect(errLines.pop()).toBe('')
    expect(errLines.every((l) => /^err \d+$/.test(l))).toBe(true)
    // The markers add up to exactly what is missing (each counts its own gap, not a running total).
    const kept = new Set([...outLines, ...errLines])
    const all = [...out.split('\n').slice(0, -1), ...Array.from({ length: errs }, (_, i) => `err ${i + 1}`)]
    const missing = all.filter((l) => !kept.has(l))
    const counted = markers.map((m) => {
      const found = /^\[agent\] (\d+) bytes \((\d+) lines\) of output dropped here: .*\n$/.exec(m.data)
      if (!found) throw new Error(`not a marker: ${m.data}`)
      return { bytes: Number(found[1]), lines: Number(found[2]) }
    })
    expect(counted.reduce((n, m) => n + m.lines, 0)).toBe(missing.length)
    expect(counted.reduce((n, m) => n + m.bytes, 0)).toBe(missing.reduce((n, l) => n + l.length + 1, 0))
    // Each stands in its gap: between the last stdout line before it and the first after, the
    // lines missing are as many as it (and the markers next to it) say. Here: each gap is
    // between kept lines whose numbers jump.
    let prev = 0
    let between = 0
    let partial = ''
    for (const c of chunks) {
      if (c.stream === 'system') between += 1
      if (c.stream !== 'stdout') continue
      const parts = (partial + c.data).split('\n')
      partial = parts.pop() ?? ''
      for (const l of parts) {
        const n = Number(l.slice(5))
        if (n !== prev + 1) expect(between, `a marker between line ${prev} and line ${n}`).toBeGreaterThan(0)
        prev = n
        between = 0
      }
    }
    expect(prev).toBe(70_000)
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
    expect(endReport(task, 'drain', { ok: false, err: new Error('aborted') })).toMatchObject({
      status: 'failed',
      error: { code: 'agent_drained' },
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

describe('a service the runner cannot reach', () => {
  /** A port nothing listens on (taken, then let go). */
  const closedPort = async () => {
    const s = createServer()
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
    const { port } = s.address() as AddressInfo
    await new Promise((r) => s.close(r))
    return port
  }
  const causeOf = (u: string, init?: RequestInit) =>
    fetch(u, init).then(
      () => undefined,
      (err: unknown) => unreachableCause(err),
    )

  it('names the cause fetch keeps in err.cause: refused, DNS, TLS, a timeout, fetch’s own refusal', async () => {
    expect(await causeOf(`http://127.0.0.1:${await closedPort()}/`)).toMatchObject({
      code: 'ECONNREFUSED',
      text: expect.stringMatching(/^connection refused.*\(ECONNREFUSED\)$/),
    })
    const dns = await causeOf('http://agenticcp.invalid/')
    expect(dns?.code).toMatch(/^(ENOTFOUND|EAI_AGAIN)$/)
    expect(dns?.text).toContain('(DNS)')
    // https:// to a plain HTTP server; and one that never answers, with a time limit.
    const plain = createServer(() => {})
    await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r))
    onTestFinished(() => {
      plain.closeAllConnections()
      plain.close()
    })
    const { port } = plain.address() as AddressInfo
    expect(await causeOf(`https://127.0.0.1:${port}/`)).toMatchObject({
      code: expect.stringMatching(/SSL|TLS/),
      text: expect.stringMatching(/^TLS handshake failed/),
    })
    expect(await causeOf(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(200) })).toEqual({
      code: 'timeout',
      text: 'no answer in time (timeout)',
    })
    expect(await causeOf('http://127.0.0.1:9/')).toEqual({ code: 'fetch_failed', text: 'fetch failed: bad port' })
  })

  it('logs every try with the URL, the cause and the delay it then waits, and nothing longer goes unsaid', async () => {
    const url = `http://127.0.0.1:${await closedPort()}`
    const lines: { at: number; line: { msg: string; retryInMs: number } }[] = []
    const logger = createLogger({ format: 'json', write: (l) => lines.push({ at: Date.now(), line: JSON.parse(l) }) })
    const agent = new Agent({ url, token: 'acpr_unused', stateDir: false, logger })
    agents.push(agent)
    void agent.start().catch(() => {})
    const tries = () => lines.filter((l) => l.line.msg.startsWith('service unreachable'))
    await until('four tries', () => tries().length >= 4)
    agent.kill()
    for (const { line } of tries()) {
      expect(line).toMatchObject({ url, code: 'ECONNREFUSED' })
      expect(line.msg).toMatch(
        new RegExp(`^service unreachable at ${url} \\(registration\\): .*; retrying in \\d+(\\.\\d)? s$`),
      )
    }
    // The next line comes when the delay announced has passed (a refused try fails at once).
    const [a, b, c, d] = tries()
    for (const [before, after] of [
      [a, b],
      [b, c],
      [c, d],
    ] as const) {
      if (!before || !after) throw new Error('four tries expected')
      expect(after.at - before.at).toBeGreaterThanOrEqual(before.line.retryInMs - 5)
      expect(after.at - before.at).toBeLessThan(before.line.retryInMs + 2000)
    }
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
