import { describe, expect, it } from 'vitest'
import {
  type AgentState,
  checkAcked,
  checkCompletedOnce,
  checkFalseDeaths,
  checkIdempotency,
  checkOverlaps,
  checkStream,
  checkStuck,
  copiesFromMarks,
  HttpTally,
  INVARIANTS,
  type Prober,
  type Result,
  SlotTally,
  summarize,
  type TaskState,
} from '../scripts/chaos-checks'

/**
 * The checks of `npm run chaos` (scripts/chaos-checks.ts), each fed a run that keeps the
 * invariant and one that breaks it: a check that cannot fail proves nothing. The run itself
 * (processes, faults) is scripts/chaos.ts; CI runs it on Postgres (.ci/run).
 */
const T0 = 1_000_000

describe('no_overlap', () => {
  it('passes copies one after another, and fails a copy that starts while another is alive', () => {
    const ok = checkOverlaps(
      [
        { taskId: 'a', attempt: 1, holder: 'sim-0', start: T0, end: T0 + 1000 },
        { taskId: 'a', attempt: 2, holder: 'sim-1', start: T0 + 1000, end: T0 + 2000 },
        { taskId: 'b', attempt: 1, holder: 'sim-1', start: T0 + 500, end: T0 + 900 },
      ],
      T0,
    )
    expect(ok.violations).toEqual([])
    expect(ok.checked).toBe(3)
    const bad = checkOverlaps(
      [
        { taskId: 'a', attempt: 2, holder: 'sim-1', start: T0 + 800, end: T0 + 2000 },
        { taskId: 'a', attempt: 1, holder: 'sim-0', start: T0, end: T0 + 1000 },
      ],
      T0,
    )
    expect(bad.violations).toHaveLength(1)
    expect(bad.violations[0]).toMatch(
      /task a: attempt 2 \(sim-1\) started at \+0\.800s while attempt 1 \(sim-0\).*200 ms together/,
    )
  })

  it('reads the shell marks: a copy runs from its first mark to its last, killed or not', () => {
    const us = (ms: number) => String((T0 + ms) * 1000)
    const marks = [
      `start t1 1 ${us(0)} 100`,
      `tick t1 1 ${us(200)} 100`,
      `tick t1 1 ${us(400)} 100`, // then SIGKILL: no end
      `start t1 2 ${us(300)} 200`,
      `end t1 2 ${us(900)} 200`,
      'garbage line',
      '',
    ].join('\n')
    const copies = copiesFromMarks(marks)
    expect(copies).toHaveLength(2)
    expect(copies.find((c) => c.attempt === 1)).toMatchObject({ start: T0, end: T0 + 400 })
    const r = checkOverlaps(copies, T0)
    expect(r.violations).toHaveLength(1)
    expect(r.violations[0]).toContain('shell pid 200')
  })
})

describe('no_false_death', () => {
  const timeout = 6000
  const up: [number, number][] = [[T0, Number.POSITIVE_INFINITY]]
  const sim: Prober = { id: 'S', name: 'sim-0', kind: 'sim', attempts: [], alive: up }
  const runner: Prober = { id: 'R', name: 'runner-0', kind: 'runner', attempts: [], alive: up }

  it('fails an expiry of a sim that was up and sending heartbeats, and of a runner up throughout', () => {
    const r = checkFalseDeaths(
      [
        { seq: 10, agentId: 'S', at: T0 + 20_000 },
        { seq: 11, agentId: 'R', at: T0 + 20_000 },
      ],
      [{ ...sim, attempts: [T0 + 11_000, T0 + 15_500, T0 + 19_900] }, runner],
      timeout,
      [{ kind: 'SIGSTOP', start: T0 + 11_000, end: T0 + 20_000 }],
      T0,
    )
    expect(r.violations).toHaveLength(2)
    expect(r.violations[0]).toMatch(
      /sim-0 \(S\) expired at \+20\.000s \(event 10\) although it sent 2 heartbeat\(s\).*the last at \+19\.900s.*during the SIGSTOP/,
    )
    expect(r.violations[1]).toMatch(/runner runner-0 \(R\) expired/)
    expect(r.checked).toBe(4) // two expiries, two agents up through the stall
  })

  it('passes the expiry of an agent that was down within the window (crashed, restarted), or silent, or not ours', () => {
    const r = checkFalseDeaths(
      [
        { seq: 10, agentId: 'S', at: T0 + 20_000 },
        { seq: 11, agentId: 'R', at: T0 + 20_000 },
        { seq: 12, agentId: 'S2', at: T0 + 20_000 },
        { seq: 13, agentId: 'other', at: T0 + 20_000 },
      ],
      [
        // crashed at +10 s, silent until +19.8 s: up again, and its first heartbeat is in flight
        {
          ...sim,
          attempts: [T0 + 9_000, T0 + 19_800],
          alive: [
            [T0, T0 + 10_000],
            [T0 + 19_800, Number.POSITIVE_INFINITY],
          ],
        },
        // killed at +15 s, up again at +16 s
        {
          ...runner,
          alive: [
            [T0, T0 + 15_000],
            [T0 + 16_000, Number.POSITIVE_INFINITY],
          ],
        },
        // up, but its own loop sent nothing (a starved load generator): not held against the service
        { ...sim, id: 'S2', name: 'sim-2', attempts: [T0 + 9_000] },
      ],
      timeout,
      [],
      T0,
    )
    expect(r.violations).toEqual([])
    expect(r.checked).toBe(3)
  })
})

describe('stream_exactly_once', () => {
  const table = [1, 2, 3, 4, 5].map((seq) => ({ seq, type: seq % 2 ? 'task.created' : 'agent.updated' }))
  const log = (ids: number[], types = new Map(ids.map((id) => [id, id % 2 ? 'task.created' : 'agent.updated']))) => ({
    name: 's',
    ids,
    types,
    disorder: [] as string[],
    upTo: 5,
    filter: '',
  })

  it('passes every event once, and counts the table rows', () => {
    const r = checkStream(log([1, 2, 3, 4, 5, 6]), table) // 6 is past upTo: not judged
    expect(r.violations).toEqual([])
    expect(r.checked).toBe(5)
  })

  it('fails a repeat, a gap, an id the table lacks, a wrong type, and disorder', () => {
    expect(checkStream(log([1, 2, 3, 3, 4, 5]), table).violations[0]).toMatch(/more than once: 3×2/)
    expect(checkStream(log([1, 2, 4, 5]), table).violations[0]).toMatch(/never delivered: 3/)
    expect(checkStream(log([1, 2, 3, 4, 5]), table.slice(0, 4)).violations[0]).toMatch(/missing|not in the table: 5/)
    expect(checkStream(log([1, 2, 3, 4, 5], new Map([[1, 'agent.updated']])), table).violations[0]).toMatch(
      /another type/,
    )
    const disordered = { ...log([1, 2, 3, 4, 5]), disorder: ['id 2 came after 3'] }
    expect(checkStream(disordered, table).violations).toEqual(['s: id 2 came after 3'])
  })
})

describe('completed_once', () => {
  it('passes one ending per attempt, and a failed attempt whose retry was cancelled', () => {
    const r = checkCompletedOnce([
      { seq: 1, taskId: 'a', attempt: 1, type: 'task.failed' },
      { seq: 2, taskId: 'a', attempt: 2, type: 'task.completed' },
      { seq: 3, taskId: 'b', attempt: 1, type: 'task.failed' },
      { seq: 4, taskId: 'b', attempt: 1, type: 'task.cancelled' },
    ])
    expect(r.violations).toEqual([])
    expect(r.checked).toBe(1)
  })

  it('fails two completions of one attempt, and a completion beside another ending', () => {
    const r = checkCompletedOnce([
      { seq: 1, taskId: 'a', attempt: 1, type: 'task.completed' },
      { seq: 5, taskId: 'a', attempt: 1, type: 'task.completed' },
      { seq: 2, taskId: 'b', attempt: 1, type: 'task.timed_out' },
      { seq: 3, taskId: 'b', attempt: 1, type: 'task.completed' },
    ])
    expect(r.violations).toEqual([
      'task a attempt 1: task.completed (event 1), task.completed (event 5)',
      'task b attempt 1: task.timed_out (event 2), task.completed (event 3)',
    ])
  })
})

describe('acked_tasks_kept and idempotent_create', () => {
  it('fails a lost create and a completion that did not stay', () => {
    const inDb = new Map([
      ['a', 'completed'],
      ['b', 'running'],
    ])
    expect(checkAcked(new Map([['a', 'create']]), new Set(['a']), inDb).violations).toEqual([])
    const r = checkAcked(
      new Map([
        ['a', 'create'],
        ['z', 'batch create'],
      ]),
      new Set(['b']),
      inDb,
    )
    expect(r.violations).toEqual([
      'task z (batch create) was acknowledged but is not in the database',
      'task b: its completion was acknowledged, but it is running',
    ])
    expect(r.checked).toBe(3)
  })

  it('fails a key answered with two tasks, and a key with two tasks in the database', () => {
    expect(checkIdempotency(new Map([['k', new Set(['a'])]]), []).violations).toEqual([])
    const r = checkIdempotency(new Map([['k', new Set(['a', 'b'])]]), [{ key: 'j', ids: ['c', 'd'] }])
    expect(r.violations).toHaveLength(2)
  })
})

describe('slots_respected and slot_counter_exact', () => {
  it('fails more held than slots, and a counter that differs from the tasks held (atomic samples only)', () => {
    const t = new SlotTally(T0)
    t.add({ at: T0, agent: 'a', max: 2, active: 2, held: 2, atomic: true, source: 'database' })
    t.add({ at: T0, agent: 'b', max: 2, active: 1, held: 0, atomic: false, source: 'API' }) // not comparable
    expect(t.over.violations).toEqual([])
    expect(t.counter.violations).toEqual([])
    t.add({ at: T0 + 1000, agent: 'a', max: 2, active: 2, held: 3, atomic: true, source: 'database' })
    t.add({ at: T0 + 1000, agent: 'c', max: 3, held: 4, atomic: false, source: 'handed to the sim agent' })
    expect(t.over.violations).toHaveLength(2)
    expect(t.counter.violations).toEqual(['a at +1.000s (database): activeTasks 2 but 3 task(s) held'])
    expect(t.over.checked).toBe(4)
    expect(t.counter.checked).toBe(2)
  })
})

describe('no_stuck_tasks', () => {
  const now = T0 + 100_000
  const timeouts = { assignMs: 5000, cancelGraceMs: 3000, heartbeatTimeoutMs: 6000, slackMs: 5000 }
  const task = (over: Partial<TaskState>): TaskState => ({
    id: 'x',
    type: 'chaos.sim',
    status: 'pending',
    attempt: 1,
    agentId: null,
    reqCapabilities: ['sim'],
    reqAgentId: null,
    declinedBy: [],
    cancelRequested: false,
    cancelRequestedAt: null,
    assignedAt: null,
    deadlineAt: null,
    finishedAt: null,
    availableAt: now - 60_000,
    autoRetry: false,
    ...over,
  })
  const agent: AgentState = {
    id: 'A',
    name: 'sim-0',
    status: 'online',
    taskTypes: ['chaos.sim'],
    capabilities: ['sim'],
    active: 0,
    max: 3,
    lastHeartbeatAt: now - 500,
  }

  it('passes what is within its timeouts, and pending work nobody can take', () => {
    const r = checkStuck(
      [
        task({ id: 'r', status: 'running', deadlineAt: now - 2000 }),
        task({ id: 'p', type: 'shell', reqCapabilities: ['shell'] }), // no agent runs shell
        task({ id: 'q', declinedBy: ['A'] }),
        task({ id: 'n', availableAt: now - 1000 }),
      ],
      [agent],
      now,
      10,
      timeouts,
    )
    expect(r.violations).toEqual([])
    expect(r.checked).toBe(11)
  })

  it('fails each kind of stuck', () => {
    const r = checkStuck(
      [
        task({ id: 'r', status: 'running', deadlineAt: now - 6000 }),
        task({
          id: 'c',
          status: 'running',
          cancelRequested: true,
          cancelRequestedAt: now - 9000,
          deadlineAt: now + 1e6,
        }),
        task({ id: 'a', status: 'assigned', assignedAt: now - 11_000 }),
        task({ id: 'f', status: 'failed', autoRetry: true, finishedAt: now - 6000 }),
        task({ id: 'p' }),
      ],
      [agent, { ...agent, id: 'B', name: 'sim-1', lastHeartbeatAt: now - 12_000 }],
      now,
      5,
      timeouts,
    )
    expect(r.violations.map((v) => v.split(':')[0])).toEqual([
      'task r (chaos.sim, attempt 1)',
      'task c (chaos.sim, attempt 1)',
      'task a (chaos.sim, attempt 1)',
      'task f (chaos.sim, attempt 1)',
      'task p (chaos.sim, attempt 1)',
      'agent sim-1 (B)',
    ])
  })
})

describe('no_http_500', () => {
  it('counts every answer, passes 2xx, 4xx and 503, and fails any other 5xx, also one only the server log saw', () => {
    const h = new HttpTally()
    h.answer('create', 'POST', '/api/v1/tasks', 201, 'r1', '')
    h.answer('report', 'PATCH', '/api/v1/tasks/x/status', 409, 'r2', '')
    h.answer('heartbeat', 'POST', '/api/v1/agents/heartbeat', 503, 'r3', '')
    h.failed('heartbeat', 'ECONNREFUSED')
    expect(h.result()).toEqual({ name: 'no_http_500', checked: 3, violations: [] })
    // The server logs a request before its client reads the answer: the line comes first.
    h.serverLine({ status: 500, requestId: 'r4', method: 'POST', path: '/api/v1/tasks' })
    h.answer('create', 'POST', '/api/v1/tasks', 500, 'r4', '{"code":"internal_error"}')
    h.serverLine({ status: 502, requestId: 'r9', method: 'POST', path: '/api/v1/agents/heartbeat' })
    h.serverLine({ status: 503, requestId: 'r8', method: 'POST', path: '/api/v1/agents/heartbeat' })
    expect(h.result().violations).toHaveLength(2)
    expect(h.result().violations[1]).toMatch(/→ 502 \(server log, request r9/)
  })
})

describe('the table', () => {
  const results: Result[] = [
    { name: 'no_overlap', checked: 10, violations: ['x'] },
    { name: 'acked_tasks_kept', checked: 5, violations: [] },
    { name: 'no_false_death', checked: 0, violations: [] },
    { name: 'no_http_500', checked: 3, violations: [] },
  ]

  it('lists every invariant in order, and fails a violation or a check that checked nothing', () => {
    const s = summarize(results, new Set())
    expect(s.table.split('\n').map((l) => l.split(/\s+/)[0])).toEqual([
      'invariant',
      expect.stringMatching(/^-+$/),
      'acked_tasks_kept',
      'no_overlap',
      'no_false_death',
      'no_http_500',
    ])
    expect(s.table).toMatch(/no_overlap\s+10\s+1\s+FAIL/)
    expect(s.table).toMatch(/no_false_death\s+0\s+0\s+NOT CHECKED/)
    expect(s.failing).toEqual(['no_overlap', 'no_false_death'])
  })

  it('--allow lets named invariants fail, and says when an allowed one passes', () => {
    const s = summarize(results, new Set(['no_overlap', 'no_false_death', 'no_http_500']))
    expect(s.failing).toEqual([])
    expect(s.table).toMatch(/no_overlap\s+10\s+1\s+allowed \(known failing\)/)
    expect(s.allowedButPassing).toEqual(['no_http_500'])
  })

  it('names ten invariants, each described', () => {
    expect(Object.keys(INVARIANTS)).toHaveLength(10)
    for (const text of Object.values(INVARIANTS)) expect(text.length).toBeGreaterThan(20)
  })
})
