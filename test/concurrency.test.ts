import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/client'
import { runSweep } from '../src/services/scheduler'
import { createHarness, type Harness, onPostgres } from './harness'

/**
 * The "never twice, never over capacity" proof. On real Postgres (READ COMMITTED, a pool
 * of connections) many sweeps, executes, heartbeats (written in batches of several agents,
 * half of them carrying the agents' reports), reports, cancels, creates, an agent delete and
 * an agent expiry run at once over hundreds of tasks and dozens of agents,
 * while a checker keeps reading the invariants. Then everything is driven to an end and
 * the event log is audited task by task. Time comes from the injected clock.
 */

const AGENTS = 36
const TASKS = 400
const ROUNDS = 8
const CAPS = ['cpu', 'gpu', 'docker', 'arm']
const PROVIDERS = ['aws', 'gcp', 'azure'] as const

let seed = 42
const rand = () => {
  seed = (seed * 1103515245 + 12345) % 2 ** 31
  return seed / 2 ** 31
}
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T
const some = <T>(xs: readonly T[], max: number) => xs.filter(() => rand() < max / xs.length)

type Agent = { id: string; token: string; maxConcurrentTasks: number }

let h: Harness
beforeAll(async () => {
  h = await createHarness({ MAX_LOST_COUNT: '3', RETRY_BACKOFF_BASE_SECONDS: '1', RETRY_BACKOFF_MAX_SECONDS: '4' })
})
afterAll(async () => {
  await h.close()
})

// Said in the test output, so a run without Postgres does not pass for one with it.
if (!onPostgres())
  console.warn('skipped: under concurrency on Postgres: no Postgres (set TEST_DATABASE_URL=postgres://…)')
describe.runIf(onPostgres())('under concurrency on Postgres', () => {
  it('never assigns a task twice, never overfills an agent, and ends every task where the rules say', async () => {
    const statuses = new Map<number, number>()
    const note = (s: number) => statuses.set(s, (statuses.get(s) ?? 0) + 1)
    const call: Harness['call'] = async (...args) => {
      const r = await h.call(...args)
      note(r.status)
      return r
    }
    const deps = { db: h.database.db, clock: h.clock, config: h.config, kv: h.kv }

    // --- fleet and queue ------------------------------------------------------------
    const agents: Agent[] = []
    for (let i = 0; i < AGENTS; i++) {
      const a = await h.agent({
        provider: pick(PROVIDERS),
        capabilities: some(CAPS, 2.5),
        maxConcurrentTasks: 1 + Math.floor(rand() * 5),
      })
      agents.push(a)
    }
    const createTask = () =>
      call('POST', '/api/v1/tasks', {
        body: {
          name: 'storm',
          type: 'storm',
          priority: 1 + Math.floor(rand() * 10),
          maxAttempts: 3,
          requirements: {
            capabilities: rand() < 0.04 ? ['nobody'] : some(CAPS, 1),
            ...(rand() < 0.2 ? { provider: pick(PROVIDERS) } : {}),
          },
        },
      })
    for (let i = 0; i < TASKS; i += 40) await Promise.all(Array.from({ length: 40 }, createTask))

    // --- the checker ---------------------------------------------------------------
    let stop = false
    let checks = 0
    const violations: string[] = []
    const checker = (async () => {
      while (!stop) {
        const rows = await rowsOf<{ id: string; max: number; active: number; held: number }>(
          h.database.db,
          sql`SELECT a.id, a.max_concurrent_tasks AS max, a.active_tasks AS active,
                (SELECT count(*)::int FROM tasks t WHERE t.agent_id = a.id AND t.status IN ('assigned', 'running')) AS held
              FROM agents a`,
        )
        for (const r of rows) {
          if (r.held > r.max) violations.push(`agent ${r.id} holds ${r.held} > ${r.max}`)
          if (r.active !== r.held) violations.push(`agent ${r.id} counter ${r.active} != held ${r.held}`)
        }
        checks++
      }
    })()

    // --- the storm -----------------------------------------------------------------
    const pendingIds = async () =>
      (await rowsOf<{ id: string }>(h.database.db, sql`SELECT id FROM tasks WHERE status = 'pending'`)).map((r) => r.id)
    type Held = { id: string; status: string; attempt: number; cancelRequested: boolean }
    const beat = (a: Agent, reports: Record<string, unknown>[] = []) =>
      call('POST', '/api/v1/agents/heartbeat', { token: a.token, body: { agentId: a.id, reports } })
    /**
     * The same reports as the PATCHes below, in a heartbeat (running and its end as one
     * row where both go; a late duplicate of an earlier attempt), so that the batches of
     * concurrent heartbeats carry reports of many agents at once.
     */
    const reportInBeat = async (a: Agent, held: Held[], finish: boolean) => {
      const reports: Record<string, unknown>[] = []
      for (const t of held) {
        if (t.status === 'assigned') {
          reports.push({ taskId: t.id, status: 'running', attempt: t.attempt })
          if (rand() < 0.2) reports.push({ taskId: t.id, status: 'running', attempt: t.attempt - 1 })
          if (finish || rand() < 0.3) reports.push({ taskId: t.id, status: 'completed', attempt: t.attempt })
        } else if (t.cancelRequested) {
          reports.push({ taskId: t.id, status: 'cancelled', attempt: t.attempt })
        } else if (finish || rand() < 0.6) {
          const fail = !finish && rand() < 0.15
          reports.push(
            fail
              ? { taskId: t.id, status: 'failed', attempt: t.attempt, error: { code: 'exit_1', message: 'boom' } }
              : { taskId: t.id, status: 'completed', attempt: t.attempt, result: { by: a.id } },
          )
        }
      }
      if (reports.length) await beat(a, reports)
    }
    const work = async (a: Agent, finish: boolean) => {
      const hb = await beat(a)
      if (hb.status !== 200) return
      const mine = await call('GET', `/api/v1/tasks?agentId=${a.id}&status=assigned,running&limit=100`, {
        token: a.token,
      })
      if (rand() < 0.5) return reportInBeat(a, mine.body.items ?? [], finish)
      await Promise.all(
        (mine.body.items ?? []).map(async (t: Held) => {
          const path = `/api/v1/tasks/${t.id}/status`
          if (t.status === 'assigned') {
            await call('PATCH', path, { token: a.token, body: { status: 'running', attempt: t.attempt } })
            // a late duplicate of the same report: must be harmless
            if (rand() < 0.2)
              await call('PATCH', path, { token: a.token, body: { status: 'running', attempt: t.attempt - 1 } })
          } else if (t.cancelRequested) {
            await call('PATCH', path, { token: a.token, body: { status: 'cancelled', attempt: t.attempt } })
          } else if (finish || rand() < 0.6) {
            const fail = !finish && rand() < 0.15
            await call('PATCH', path, {
              token: a.token,
              body: fail
                ? { status: 'failed', attempt: t.attempt, error: { code: 'exit_1', message: 'boom' } }
                : { status: 'completed', attempt: t.attempt, result: { by: a.id } },
            })
          }
        }),
      )
    }

    const silent = agents[0] as Agent // stops heartbeating: expired mid-storm
    const deleted = agents[1] as Agent // force-deleted mid-storm
    const live = agents.slice(2)
    for (let round = 0; round < ROUNDS; round++) {
      h.clock.advance(round === 5 ? 95_000 : 5_000) // round 5 jumps past HEARTBEAT_TIMEOUT_SECONDS
      const pending = await pendingIds()
      const jobs: Promise<unknown>[] = [
        ...Array.from({ length: 4 }, () => runSweep(deps)),
        call('POST', '/api/v1/scheduler/sweep'),
        ...Array.from({ length: 30 }, () => {
          const taskId = pick(pending.length ? pending : ['0192f3c5-6d7e-7a1b-8c9d-0e1f2a3b4c5d'])
          return call('POST', '/api/v1/tasks/execute', {
            body: rand() < 0.5 ? { taskId } : { taskId, agentId: pick(live).id },
          })
        }),
        ...live.map((a) => work(a, false)),
        ...Array.from({ length: 8 }, () =>
          call('POST', `/api/v1/tasks/${pick(pending.length ? pending : [''])}/cancel`),
        ),
        ...Array.from({ length: 15 }, createTask),
      ]
      if (round < 5) jobs.push(work(silent, false))
      if (round === 3) jobs.push(call('DELETE', `/api/v1/agents/${deleted.id}?force=true`))
      if (round < 3) jobs.push(work(deleted, false))
      await Promise.all(jobs)
    }

    // --- drain: every live agent finishes what it gets until nothing is left ----------
    for (let i = 0; i < 60; i++) {
      h.clock.advance(5_000)
      await runSweep(deps)
      await Promise.all(live.map((a) => work(a, true)))
      const [open] = await rowsOf<{ n: number }>(
        h.database.db,
        sql`SELECT count(*)::int AS n FROM tasks
             WHERE status IN ('pending', 'assigned', 'running') AND NOT 'nobody' = ANY(req_capabilities)
                OR (status IN ('failed', 'timed_out') AND auto_retry)`,
      )
      if (open?.n === 0) break
    }
    stop = true
    await checker

    // --- verdict -------------------------------------------------------------------
    expect(violations).toEqual([])
    expect(checks).toBeGreaterThan(10)
    expect([...statuses.keys()].filter((s) => s >= 500)).toEqual([])
    // The storm's heartbeats were written in batches of several agents (src/services/heartbeat-writer.ts).
    const metrics: string = (await h.call('GET', '/metrics', { token: null })).body
    const batches = Number(/^agenticcp_heartbeat_batch_agents_count (\d+)/m.exec(metrics)?.[1] ?? 0)
    const alone = Number(/^agenticcp_heartbeat_batch_agents_bucket\{le="1"\} (\d+)/m.exec(metrics)?.[1] ?? 0)
    const beats = Number(/^agenticcp_heartbeat_batch_agents_sum (\d+)/m.exec(metrics)?.[1] ?? 0)
    console.log(`concurrency: ${beats} heartbeats in ${batches} statements, ${batches - alone} of several agents`)
    expect(batches - alone, 'batches of more than one agent').toBeGreaterThan(10)
    // The creates, 40 at a time, in batches of several (src/services/create-writer.ts).
    const createBatches = Number(/^agenticcp_create_batch_tasks_count (\d+)/m.exec(metrics)?.[1] ?? 0)
    const creates = Number(/^agenticcp_create_batch_tasks_sum (\d+)/m.exec(metrics)?.[1] ?? 0)
    console.log(`concurrency: ${creates} creates in ${createBatches} insert statements`)
    expect(creates).toBeGreaterThanOrEqual(TASKS)
    expect(createBatches, 'creates written several to a statement').toBeLessThan(creates / 2)

    const final = await rowsOf<{ status: string; unfittable: boolean; auto_retry: boolean; n: number }>(
      h.database.db,
      sql`SELECT status, 'nobody' = ANY(req_capabilities) AS unfittable, auto_retry, count(*)::int AS n
            FROM tasks GROUP BY 1, 2, 3`,
    )
    for (const r of final) {
      if (r.unfittable) expect(['pending', 'cancelled'], JSON.stringify(r)).toContain(r.status)
      else expect(['completed', 'cancelled', 'failed'], JSON.stringify(r)).toContain(r.status)
      expect(r.auto_retry).toBe(false)
    }
    const completed = final.filter((r) => r.status === 'completed').reduce((n, r) => n + r.n, 0)
    expect(completed).toBeGreaterThan(TASKS / 2)

    const [idle] = await rowsOf<{ n: number }>(
      h.database.db,
      sql`SELECT coalesce(sum(active_tasks), 0)::int AS n FROM agents`,
    )
    expect(idle?.n).toBe(0)
    const [expired] = await rowsOf<{ status: string }>(
      h.database.db,
      sql`SELECT status FROM agents WHERE id = ${silent.id}`,
    )
    expect(expired?.status).toBe('offline')

    // The event log, task by task: an assignment only after the previous holder let go,
    // attempts strictly rising, one start per attempt (task.started, or an end that says the
    // run started in the same report), at most one completion, last.
    const events = await rowsOf<{ task_id: string; type: string; attempt: number | null; started: boolean }>(
      h.database.db,
      sql`SELECT task_id, type, (data->>'attempt')::int AS attempt, coalesce((data->>'started')::boolean, false) AS started
            FROM events WHERE task_id IS NOT NULL ORDER BY id`,
    )
    const byTask = new Map<string, { type: string; attempt: number | null; started: boolean }[]>()
    for (const e of events) byTask.set(e.task_id, [...(byTask.get(e.task_id) ?? []), e])
    const releases = new Set(['task.requeued', 'task.failed', 'task.timed_out', 'task.cancelled', 'task.completed'])
    let audited = 0
    for (const [id, list] of byTask) {
      let held = false
      let lastAttempt = 0
      const started = new Set<number>()
      let completions = 0
      for (const e of list) {
        if (e.type === 'task.assigned') {
          expect(held, `task ${id} assigned while held`).toBe(false)
          expect(e.attempt ?? 0, `task ${id} attempt did not rise`).toBeGreaterThan(lastAttempt)
          lastAttempt = e.attempt ?? 0
          held = true
        } else if (e.type === 'task.started') {
          expect(started.has(e.attempt ?? -1), `task ${id} started twice in attempt ${e.attempt}`).toBe(false)
          started.add(e.attempt ?? -1)
        } else if (releases.has(e.type)) {
          if (e.started) {
            expect(started.has(e.attempt ?? -1), `task ${id} started twice in attempt ${e.attempt}`).toBe(false)
            started.add(e.attempt ?? -1)
          }
          held = false
          if (e.type === 'task.completed') completions++
        }
      }
      expect(completions).toBeLessThanOrEqual(1)
      if (completions === 1) expect(list.at(-1)?.type).toBe('task.completed')
      audited++
    }
    expect(audited).toBeGreaterThanOrEqual(TASKS)
  }, 180_000)
})
