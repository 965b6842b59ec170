import { readFileSync } from 'node:fs'
import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/client'
import { type ReportStatus, reportStatuses, type TaskStatus, taskStatuses } from '../src/domain/model'
import { cancelAsksSql, cancelEndsSql } from '../src/domain/sql'
import { type MoveAction, type Mover, moveFor, TASK_MOVES, type TaskMove } from '../src/domain/task-states'
import { type CallResult, createHarness, type Harness } from './harness'

/**
 * Walks the task state table (src/domain/task-states.ts) against the running service.
 * From every situation a task can be in, every request that could move it is tried: each
 * move the table allows succeeds, with the effects the table gives it (the agent's slot,
 * the retry budget, what is cleared, the event); every other is refused with 409
 * `invalid_transition` and changes nothing. The sweep's moves are walked the same way:
 * each happens when its condition comes, and the sweep moves nothing the table does not let it.
 */

let h: Harness
beforeAll(async () => {
  // MAX_LOST_COUNT=1: a task that loses its agent stays failed (no automatic retry in the same sweep).
  h = await createHarness({ MAX_LOST_COUNT: '1', RATE_LIMIT_PER_MINUTE: '0' })
})
afterAll(async () => {
  await h.close()
})

type Agent = Awaited<ReturnType<Harness['agent']>>
// biome-ignore lint/suspicious/noExplicitAny: API bodies are read field by field
type Task = any
interface Situation {
  task: Task
  agent: Agent
}

const get = async (id: string): Promise<Task> => (await h.call('GET', `/api/v1/tasks/${id}`)).body
const load = async (agentId: string): Promise<number> =>
  (await h.call('GET', `/api/v1/agents/${agentId}`)).body.activeTasks ?? 0
const beat = (a: Agent, body: Record<string, unknown> = {}) =>
  h.call('POST', '/api/v1/agents/heartbeat', { token: a.token, body: { agentId: a.id, ...body } })
const sweep = () => h.call('POST', '/api/v1/scheduler/sweep')
const ok = (res: CallResult, what: string) => {
  if (res.status >= 300) throw new Error(`${what}: ${res.status} ${JSON.stringify(res.body)}`)
  return res.body
}

async function running(opts: Record<string, unknown> = {}): Promise<Situation> {
  const agent = await h.agent()
  const task = await h.assignedTask(agent.id, opts)
  ok(await h.report(task.id, agent.token, { status: 'running', attempt: task.attempt }), 'start')
  return { task: await get(task.id), agent }
}
async function failed(maxAttempts: number): Promise<Situation> {
  const s = await running({ maxAttempts })
  const error = { code: 'boom', message: 'it broke' }
  ok(await h.report(s.task.id, s.agent.token, { status: 'failed', attempt: s.task.attempt, error }), 'fail')
  return { ...s, task: await get(s.task.id) }
}
async function timedOut(retryDue: boolean): Promise<Situation> {
  const s = await running({ maxAttempts: 1, timeoutSeconds: 1 })
  h.clock.advance(5_000)
  await beat(s.agent)
  ok(await sweep(), 'sweep')
  if (retryDue) {
    // A timed-out task with retries left is requeued by the same sweep that timed it out;
    // the table still covers the instant in between (a sweep's batch limit can leave it there).
    await h.database.db.execute(sql`UPDATE tasks SET auto_retry = true WHERE id = ${s.task.id}`)
    // And the retry waits for the run the timeout left to be over: its agent says it ended.
    const end = { status: 'failed', attempt: s.task.attempt, error: { code: 'timeout', message: 'stopped' } }
    expect((await h.report(s.task.id, s.agent.token, end)).status).toBe(409)
  }
  const task = await get(s.task.id)
  expect(task.status).toBe('timed_out')
  return { ...s, task }
}

/** Every situation a task can be in: a status, and the flags the table's guards read. */
const situations: Record<string, () => Promise<Situation>> = {
  pending: async () => ({ agent: await h.agent(), task: await h.pendingTask() }),
  assigned: async () => {
    const agent = await h.agent()
    return { agent, task: await h.assignedTask(agent.id) }
  },
  running: () => running(),
  'running, cancel requested': async () => {
    const s = await running()
    ok(await h.call('POST', `/api/v1/tasks/${s.task.id}/cancel`), 'cancel')
    return { ...s, task: await get(s.task.id) }
  },
  completed: async () => {
    const s = await running()
    ok(await h.report(s.task.id, s.agent.token, { status: 'completed', attempt: s.task.attempt, result: 1 }), 'end')
    return { ...s, task: await get(s.task.id) }
  },
  'failed, no retry left': () => failed(1),
  'failed, retry due': () => failed(3),
  cancelled: async () => {
    const agent = await h.agent()
    const task = await h.assignedTask(agent.id)
    ok(await h.call('POST', `/api/v1/tasks/${task.id}/cancel`), 'cancel')
    return { agent, task: await get(task.id) }
  },
  'timed_out, no retry left': () => timedOut(false),
  'timed_out, retry due': () => timedOut(true),
}

interface Action {
  name: string
  action: MoveAction
  by: Mover
  /** For a report: the status reported. */
  to?: TaskStatus | ReportStatus
  run(s: Situation): Promise<CallResult>
}

const actions: Action[] = [
  {
    name: 'POST /tasks/execute',
    action: 'place',
    by: 'placement',
    run: (s) => h.call('POST', '/api/v1/tasks/execute', { body: { taskId: s.task.id, agentId: s.agent.id } }),
  },
  ...reportStatuses.flatMap((to): Action[] => [
    {
      name: `an operator reports ${to}`,
      action: 'report',
      by: 'staff',
      to,
      run: (s) =>
        h.call('PATCH', `/api/v1/tasks/${s.task.id}/status`, { body: { status: to, attempt: s.task.attempt } }),
    },
    {
      name: `its agent reports ${to}`,
      action: 'report',
      by: 'agent',
      to,
      run: (s) => h.report(s.task.id, s.agent.token, { status: to, attempt: s.task.attempt }),
    },
  ]),
  {
    name: 'POST /tasks/{id}/cancel',
    action: 'cancel',
    by: 'staff',
    run: (s) => h.call('POST', `/api/v1/tasks/${s.task.id}/cancel`),
  },
  {
    name: 'POST /tasks/{id}/retry',
    action: 'retry',
    by: 'staff',
    run: (s) => h.call('POST', `/api/v1/tasks/${s.task.id}/retry`),
  },
  {
    name: 'DELETE /agents/{id}?force=true',
    action: 'deregister',
    by: 'staff',
    run: (s) => h.call('DELETE', `/api/v1/agents/${s.agent.id}?force=true`),
  },
]

/** The task row's flags the table's guards read. */
const guarded = (t: Task) => ({ status: t.status as TaskStatus, cancelRequested: t.cancelRequested, autoRetry: false })

async function autoRetryOf(id: string): Promise<boolean> {
  const r = await h.database.db.execute(sql`SELECT auto_retry FROM tasks WHERE id = ${id}`)
  return (r as unknown as { rows: { auto_retry: boolean }[] }).rows[0]?.auto_retry ?? false
}

/** Checks what the table says move `m` does, on the task before and after, and the agent's load. */
async function expectEffects(m: TaskMove, before: Task, after: Task, loads: { before: number; after: number }) {
  expect(after.status).toBe(m.to)
  if (m.to === 'running' && m.name === 'request_cancel') expect(after.cancelRequested).toBe(true)
  if (m.action !== 'deregister' && m.action !== 'sweep') {
    expect(loads.after - loads.before).toBe(m.slot === 'take' ? 1 : m.slot === 'release' ? -1 : 0)
  }
  const budget = m.clears.includes('budget')
  expect(after.failures).toBe(budget ? 0 : before.failures + (m.counts === 'failure' ? 1 : 0))
  expect(after.lostCount).toBe(budget ? 0 : before.lostCount + (m.counts === 'loss' ? 1 : 0))
  for (const field of m.clears.filter((c) => c !== 'budget')) expect(after[field], field).toBeNull()
  const events = await h.events({ taskId: after.id })
  expect(events.at(-1)?.type).toBe(m.event)
}

describe('the task state table, walked against the service', () => {
  const cases = Object.keys(situations).flatMap((situation) => actions.map((a) => [situation, a.name] as const))

  it.each(cases)('%s: %s', async (situation, actionName) => {
    const make = situations[situation]
    const action = actions.find((a) => a.name === actionName)
    if (!make || !action) throw new Error('unknown case')
    const s = await make()
    const before = await get(s.task.id)
    const flags = { ...guarded(before), autoRetry: await autoRetryOf(before.id) }
    const m = moveFor(flags, action.action, action.by, action.to)
    const loadBefore = await load(s.agent.id)
    const res = await action.run(s)
    const after = await get(s.task.id)

    if (action.action === 'deregister') {
      // Deleting the agent always succeeds; only the tasks it holds move.
      expect(res.status).toBe(204)
      if (m) await expectEffects(m, before, after, { before: 0, after: 0 })
      else expect(after.version).toBe(before.version)
      return
    }
    if (m) {
      expect(res.status, JSON.stringify(res.body)).toBeLessThan(300)
      await expectEffects(m, before, after, { before: loadBefore, after: await load(s.agent.id) })
      return
    }
    const repeat = action.action === 'report' && action.to === before.status && before.finishedAt !== null
    if (action.by === 'agent' && before.agentId !== s.agent.id) {
      // The fence comes first: an agent's report on a task it does not hold is stale.
      expect(res.status).toBe(409)
      expect(res.body.code).toBe('stale_attempt')
    } else if (repeat) {
      // Repeating the report that ended a task answers 200 with the task unchanged (an
      // agent retrying after a lost answer); it is not a move.
      expect(res.status).toBe(200)
    } else {
      expect(res.status, JSON.stringify(res.body)).toBe(409)
      expect(res.body.code).toBe('invalid_transition')
      expect(Array.isArray(res.body.allowed)).toBe(true)
    }
    expect(after.version).toBe(before.version)
    expect(await load(s.agent.id)).toBe(loadBefore)
  })
})

describe("the sweep's moves", () => {
  const DAY = 86_400_000
  const sweepMoves = TASK_MOVES.filter((m) => m.action === 'sweep')

  /** How to bring about each sweep move's condition, on a fresh situation. */
  const triggers: Record<
    string,
    { from: string; to?: TaskStatus; make?: () => Promise<Situation>; bring(s: Situation): Promise<void> }[]
  > = {
    agent_lost: [
      { from: 'assigned', bring: async () => void h.clock.advance(DAY) },
      { from: 'running', to: 'failed', bring: async () => void h.clock.advance(DAY) },
      { from: 'running, cancel requested', to: 'cancelled', bring: async () => void h.clock.advance(DAY) },
    ],
    assign_timeout: [
      {
        from: 'assigned',
        bring: async (s) => {
          // Draining: it keeps the task but takes nothing new, so the sweep's placement
          // does not hand the requeued task straight back to it.
          ok(await beat(s.agent, { status: 'draining' }), 'drain')
          h.clock.advance(h.config.assignTimeoutSeconds * 1000 + 1000)
          await beat(s.agent)
        },
      },
    ],
    cancel_grace_expired: [
      {
        from: 'running, cancel requested',
        bring: async (s) => {
          h.clock.advance(h.config.cancelGraceSeconds * 1000 + 1000)
          await beat(s.agent, { runningTaskIds: [s.task.id] })
        },
      },
    ],
    timeout: [
      {
        from: 'running',
        // Its last attempt: with retries left, the same sweep would requeue it at once.
        make: () => running({ maxAttempts: 1, timeoutSeconds: 1 }),
        bring: async (s) => {
          h.clock.advance(s.task.timeoutSeconds * 1000 + 1000)
          await beat(s.agent, { runningTaskIds: [s.task.id] })
        },
      },
    ],
    drain_requeue: ['assigned', 'running'].map((from) => ({
      from,
      bring: async (s: Situation) => {
        // Drained with a deadline now: the next sweep asks it to stop (not final), and the
        // one CANCEL_GRACE_SECONDS later puts the task back, the agent still beating.
        ok(await h.call('POST', `/api/v1/agents/${s.agent.id}/drain`, { body: { deadlineSeconds: 0 } }), 'drain')
        ok(await sweep(), 'sweep')
        const answer = ok(await beat(s.agent, { runningTaskIds: from === 'running' ? [s.task.id] : [] }), 'beat')
        expect(answer.cancellations).toEqual([s.task.id])
        // biome-ignore lint/suspicious/noThenProperty: the drain's `then` (a status, never a function)
        expect(answer.drain).toMatchObject({ then: 'maintenance' })
        expect((await get(s.task.id)).status).toBe(from)
        h.clock.advance(h.config.cancelGraceSeconds * 1000 + 1000)
        await beat(s.agent, { runningTaskIds: from === 'running' ? [s.task.id] : [] })
      },
    })),
    retry: [
      { from: 'failed, retry due', bring: async () => void h.clock.advance(1000) },
      { from: 'timed_out, retry due', bring: async () => void h.clock.advance(1000) },
    ],
  }

  it('has a trigger for every sweep move in the table', () => {
    for (const m of sweepMoves) {
      for (const from of m.from) {
        const hit = (triggers[m.name] ?? []).some((t) => t.from.startsWith(from) && (t.to ?? m.to) === m.to)
        expect(hit, `${m.name} from ${from} to ${m.to}`).toBe(true)
      }
    }
  })

  const cases = Object.entries(triggers).flatMap(([name, list]) => list.map((t) => [name, t.from, t] as const))
  it.each(cases)('%s from %s', async (name, from, trigger) => {
    const s = await (trigger.make ?? situations[from])?.()
    if (!s) throw new Error('unknown situation')
    const before = await get(s.task.id)
    const m = sweepMoves.find(
      (x) => x.name === name && x.from.includes(before.status) && (!trigger.to || x.to === trigger.to),
    )
    if (!m) throw new Error(`no sweep move ${name} from ${before.status}`)
    await trigger.bring(s)
    ok(await sweep(), 'sweep')
    const after = await get(s.task.id)
    await expectEffects(m, before, after, { before: 0, after: 0 })
    // The slot invariant: the agent's load is what it holds.
    const held = await h.call('GET', `/api/v1/tasks?agentId=${s.agent.id}&status=assigned,running`)
    expect(await load(s.agent.id)).toBe(held.body.items.length)
  })

  it.each(['pending', 'completed', 'cancelled', 'failed, no retry left', 'timed_out, no retry left'])(
    'moves nothing from %s, however long it waits',
    async (situation) => {
      const s =
        situation === 'pending'
          ? { agent: await h.agent(), task: await h.task({ requirements: { capabilities: ['nobody-has-this'] } }) }
          : await situations[situation]?.()
      if (!s) throw new Error('unknown situation')
      const before = await get(s.task.id)
      expect(moveFor({ ...guarded(before), autoRetry: await autoRetryOf(before.id) }, 'sweep', 'sweep')).toBeUndefined()
      h.clock.advance(DAY)
      ok(await sweep(), 'sweep')
      const after = await get(s.task.id)
      expect(after.status).toBe(before.status)
      expect(after.version).toBe(before.version)
    },
  )
})

describe('docs/architecture.md', () => {
  it('shows the state table as it is: one row per move, with its states, slot, count and event', () => {
    const doc = readFileSync('docs/architecture.md', 'utf8')
    const rows = doc
      .split('\n')
      .filter((l) => /^\| `[a-z_]+` \| [a-z_, ]+ → /.test(l))
      .map((l) =>
        l
          .split('|')
          .slice(1, -1)
          .map((c) => c.trim()),
      )
      .map(([name, states, , , slot, counts, , event]) => ({ name, states, slot, counts, event }))
    expect(rows.length).toBe(TASK_MOVES.length)
    for (const m of TASK_MOVES) {
      const row = rows.find((r) => r.name === `\`${m.name}\`` && r.states?.startsWith(`${m.from.join(', ')} → ${m.to}`))
      expect(row, `${m.name}: ${m.from.join(', ')} → ${m.to}`).toBeDefined()
      expect(row?.slot, `${m.name} slot`).toBe(m.slot === 'keep' ? '' : m.slot)
      expect(row?.counts, `${m.name} counts`).toBe(m.counts ?? '')
      expect(row?.event, `${m.name} event`).toBe(`\`${m.event}\``)
    }
  })
})

describe('a staff cancel in SQL (cancelEndsSql, cancelAsksSql: what a rollout cancel and a delivery timeout run)', () => {
  it('agrees with the table for every status, with and without a retry due or a cancel asked', async () => {
    for (const status of taskStatuses) {
      for (const autoRetry of [false, true]) {
        for (const cancelRequested of [false, true]) {
          const m = moveFor({ status, autoRetry, cancelRequested }, 'cancel', 'staff')
          const [row] = await rowsOf<{ ends: boolean; asks: boolean }>(
            h.database.db,
            sql.raw(`SELECT ${cancelEndsSql('t')} AS ends, ${cancelAsksSql('t')} AS asks
                       FROM (SELECT '${status}'::text AS status, ${autoRetry} AS auto_retry,
                                    ${cancelRequested} AS cancel_requested) t`),
          )
          const what = `${status} autoRetry=${autoRetry} cancelRequested=${cancelRequested}`
          expect(row?.ends, what).toBe(m?.to === 'cancelled')
          expect(row?.asks, what).toBe(m !== undefined && m.to !== 'cancelled')
        }
      }
    }
  })
})
