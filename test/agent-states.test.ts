import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/client'
import { bind } from '../src/db/fragments'
import {
  type AgentSetStatus,
  BEAT_STATUS,
  type BeatContext,
  beatStatus,
  beatStatusSql,
  loadAfterBeat,
  releasedLoad,
  releasedLoadSql,
  resumedStatus,
  resumedStatusSql,
  SETTABLE_STATUSES,
  STAFF_HELD,
  STREAK_KEEP,
  type StreakEnd,
  streakAfter,
  streakAfterSql,
  streakCallsForJudgement,
  takenLoad,
  takenLoadSql,
} from '../src/domain/agent-states'
import { type AgentStatus, agentStatuses, type StreakEntry } from '../src/domain/model'
import { createHarness, type Harness } from './harness'

/**
 * The agent rules of src/domain/agent-states.ts exist in two forms: TypeScript (the
 * services) and SQL (the batched heartbeat statement, `heartbeats` in src/db/hot.ts, and the
 * slot release of every move that frees one). Over every pair of a stored status and a
 * reported one, and a matrix of loads, the SQL must say what the TypeScript says; and the
 * heartbeat statement, through the API, must leave each agent as the TypeScript says.
 */

let h: Harness
beforeAll(async () => {
  h = await createHarness({ RATE_LIMIT_PER_MINUTE: '0' })
})
afterAll(async () => {
  await h.close()
})

const reportable: (AgentSetStatus | null)[] = [null, ...SETTABLE_STATUSES.agent]
const pairs = agentStatuses.flatMap((current) => reportable.map((reported) => ({ current, reported })))
/** What else the rule reads: no staff drain, or one (with tasks still held, or none). */
const contexts: BeatContext[] = [
  { drainThen: null, active: 0 },
  { drainThen: null, active: 2 },
  { drainThen: 'maintenance', active: 0 },
  { drainThen: 'offline', active: 0 },
  { drainThen: 'maintenance', active: 2 },
]
const triples = pairs.flatMap((p) => contexts.map((ctx) => ({ ...p, ctx })))

describe('the beat rule: TypeScript and SQL agree', () => {
  it('has a case for each of its reasons, each deciding some pair, and only staff hold maintenance and quarantine', () => {
    expect(STAFF_HELD).toEqual(['maintenance', 'quarantined'])
    const decided = new Set(triples.map((p) => BEAT_STATUS.find((c) => c.holds(p.current, p.reported, p.ctx))?.name))
    expect([...decided].sort()).toEqual(BEAT_STATUS.map((c) => c.name).sort())
    // The cases, said plainly.
    expect(beatStatus('maintenance', 'online')).toBe('maintenance')
    expect(beatStatus('offline', null)).toBe('online')
    expect(beatStatus('offline', 'draining')).toBe('draining')
    expect(beatStatus('error', null)).toBe('error')
    expect(beatStatus('draining', 'online')).toBe('online')
    expect(beatStatus('quarantined', 'online')).toBe('quarantined')
    // A staff drain holds over what the agent reports, and ends in its `then` once nothing is held.
    expect(beatStatus('draining', 'online', { drainThen: 'maintenance', active: 1 })).toBe('draining')
    expect(beatStatus('draining', null, { drainThen: 'maintenance', active: 0 })).toBe('maintenance')
    expect(beatStatus('draining', 'online', { drainThen: 'offline', active: 0 })).toBe('offline')
  })

  it('as SQL, over every pair of a stored and a reported status, with and without a staff drain', async () => {
    const rows = await rowsOf<{
      c: AgentStatus
      r: AgentSetStatus | null
      d: AgentStatus | null
      a: number
      next: AgentStatus
    }>(
      h.database.db,
      bind(
        `SELECT p.c, p.r, p.d, p.a, ${beatStatusSql('p.c', 'p.r', { drainThen: 'p.d', active: 'p.a' })} AS next
           FROM jsonb_to_recordset({{pairs}}::jsonb) AS p(c text, r text, d text, a int)`,
        {
          pairs: JSON.stringify(
            triples.map((p) => ({ c: p.current, r: p.reported, d: p.ctx.drainThen, a: p.ctx.active })),
          ),
        },
      ),
    )
    expect(rows).toHaveLength(triples.length)
    for (const row of rows) {
      expect(row.next, `${row.c} reported ${row.r}, drain ${row.d}, ${row.a} held`).toBe(
        beatStatus(row.c, row.r, { drainThen: row.d, active: row.a }),
      )
    }
  })

  it('resume: online, or offline when silent and holding nothing; TypeScript and SQL agree', async () => {
    const cases = [false, true].flatMap((silent) => [0, 1].map((active) => ({ silent, active })))
    const rows = await rowsOf<{ s: boolean; a: number; next: AgentStatus }>(
      h.database.db,
      bind(
        `SELECT x.s, x.a, ${resumedStatusSql('x.s', 'x.a')} AS next FROM jsonb_to_recordset({{cases}}::jsonb) AS x(s boolean, a int)`,
        { cases: JSON.stringify(cases.map((c) => ({ s: c.silent, a: c.active }))) },
      ),
    )
    for (const r of rows) expect(r.next).toBe(resumedStatus(r.s, r.a))
    expect(resumedStatus(true, 0)).toBe('offline')
    expect(resumedStatus(true, 1)).toBe('online')
    expect(resumedStatus(false, 0)).toBe('online')
  })

  it.each([
    ['without reports', false],
    ['with reports', true],
  ])('through the heartbeat statement (%s), every pair in one batch of heartbeats', async (_, withReports) => {
    const agents = []
    // Every pair without a staff drain, and a staff drain with nothing held, whatever is reported.
    const cases = [
      ...pairs.map((p) => ({ ...p, ctx: { drainThen: null, active: 0 } as BeatContext })),
      ...reportable.map((reported) => ({
        current: 'draining' as AgentStatus,
        reported,
        ctx: { drainThen: 'maintenance', active: 0 } as BeatContext,
      })),
    ]
    for (const p of cases) {
      const a = await h.agent({}, { online: false })
      await h.database.db.execute(
        sql`UPDATE agents SET status = ${p.current}, drain_then = ${p.ctx.drainThen} WHERE id = ${a.id}`,
      )
      agents.push({ ...p, a })
    }
    const unknownTask = '0192f3c5-6d7e-7a1b-8c9d-0e1f2a3b4c5d'
    const answers = await Promise.all(
      agents.map(({ a, reported }) =>
        h.call('POST', '/api/v1/agents/heartbeat', {
          token: a.token,
          body: {
            agentId: a.id,
            ...(reported ? { status: reported } : {}),
            ...(withReports ? { reports: [{ taskId: unknownTask, attempt: 1, status: 'running' }] } : {}),
          },
        }),
      ),
    )
    const stored = await rowsOf<{ id: string; status: AgentStatus }>(
      h.database.db,
      sql.raw(`SELECT id, status FROM agents WHERE id IN (${agents.map(({ a }) => `'${a.id}'`).join(', ')})`),
    )
    const byId = new Map(stored.map((r) => [r.id, r.status]))
    for (const [n, { a, current, reported, ctx }] of agents.entries()) {
      const next = beatStatus(current, reported, ctx)
      const what = `${current} reported ${reported}`
      expect(answers[n]?.status, what).toBe(200)
      if (withReports)
        expect(answers[n]?.body.reports, what).toEqual([{ taskId: unknownTask, ok: false, code: 'not_found' }])
      expect(answers[n]?.body.agent.status, what).toBe(next)
      expect(byId.get(a.id), what).toBe(next)
      const moved = (await h.events({ agentId: a.id })).filter((e) => e.type === 'agent.status_changed')
      expect(
        moved.map((e) => e.data),
        what,
      ).toEqual(next === current ? [] : [{ from: current, to: next, by: 'heartbeat' }])
    }
  })
})

describe('the streak rule: TypeScript and SQL agree', () => {
  const entry = (t: string, at = 100): StreakEntry => ({ t, y: 'x', c: 'boom', at })
  const failed = (t: string): StreakEnd => ({ kind: 'failed', entry: entry(t) })
  const done: StreakEnd = { kind: 'completed' }
  const other: StreakEnd = { kind: 'other' }
  const long = Array.from({ length: STREAK_KEEP }, (_, i) => entry(`old${i}`))
  const cases: { streak: StreakEntry[]; ends: StreakEnd[] }[] = [
    { streak: [], ends: [] },
    { streak: [entry('a')], ends: [other] },
    { streak: [entry('a')], ends: [failed('b'), failed('c')] },
    { streak: [entry('a')], ends: [done] },
    { streak: [entry('a')], ends: [failed('b'), done, failed('c')] },
    { streak: [entry('a')], ends: [done, failed('b'), other, failed('c')] },
    { streak: long, ends: [failed('n1'), failed('n2')] },
    { streak: [], ends: Array.from({ length: STREAK_KEEP + 3 }, (_, i) => failed(`f${i}`)) },
  ]

  it('over streaks and reports in order: a completed end clears it, failed ends extend it, the last STREAK_KEEP kept', async () => {
    const rows = await rowsOf<{ n: number; after: StreakEntry[] }>(
      h.database.db,
      bind(
        `WITH e AS (
           SELECT x.n, x.i, x.kind, x.entry,
                  max(x.i) FILTER (WHERE x.kind = 'completed') OVER (PARTITION BY x.n) AS last_ok
             FROM jsonb_to_recordset({{ends}}::jsonb) AS x(n int, i int, kind text, entry jsonb)
         ), g AS (
           SELECT n, max(last_ok) AS last_ok,
                  jsonb_agg(entry ORDER BY i) FILTER (WHERE kind = 'failed' AND i > coalesce(last_ok, -1)) AS fails
             FROM e GROUP BY n
         )
         SELECT c.n, ${streakAfterSql('c.streak', 'g.last_ok', 'g.fails')} AS after
           FROM jsonb_to_recordset({{cases}}::jsonb) AS c(n int, streak jsonb) LEFT JOIN g ON g.n = c.n ORDER BY c.n`,
        {
          cases: JSON.stringify(cases.map((c, n) => ({ n, streak: c.streak }))),
          ends: JSON.stringify(
            cases.flatMap((c, n) =>
              c.ends.map((e, i) => ({ n, i, kind: e.kind, entry: e.kind === 'failed' ? e.entry : null })),
            ),
          ),
        },
      ),
    )
    expect(rows).toHaveLength(cases.length)
    for (const [n, c] of cases.entries()) expect(rows[n]?.after, `case ${n}`).toEqual(streakAfter(c.streak, c.ends))
    expect(streakAfter([entry('a')], [failed('b'), done, failed('c')])).toEqual([entry('c')])
    expect(streakAfter(long, [failed('n')])).toHaveLength(STREAK_KEEP)
  })

  it('the trigger: the last N all failed, within the window, on at least 3 tasks; 0 is off', () => {
    const p = { afterFailures: 5, windowSeconds: 600 }
    const five = ['a', 'b', 'c', 'd', 'e'].map((t) => entry(t, 1000))
    expect(streakCallsForJudgement(five, 1000, p)).toEqual(five)
    expect(streakCallsForJudgement(five.slice(1), 1000, p)).toBeNull()
    expect(streakCallsForJudgement(five, 1601, p)).toBeNull() // the oldest left the window
    expect(streakCallsForJudgement([entry('a', 1000), ...five.slice(1)], 1600, p)).toEqual([
      entry('a', 1000),
      ...five.slice(1),
    ])
    const twoTasks = ['a', 'b', 'a', 'b', 'a'].map((t) => entry(t, 1000))
    expect(streakCallsForJudgement(twoTasks, 1000, p)).toBeNull()
    expect(streakCallsForJudgement(five, 1000, { ...p, afterFailures: 0 })).toBeNull()
  })
})

describe('the load rule: TypeScript and SQL agree', () => {
  it('over a matrix of loads, ends and tasks given: never below zero', async () => {
    const cases = []
    for (let active = 0; active <= 3; active++)
      for (let left = 0; left <= 5; left++) for (let taken = 0; taken <= 2; taken++) cases.push({ active, left, taken })
    const rows = await rowsOf<{ released: number; after: number }>(
      h.database.db,
      bind(
        `SELECT ${releasedLoadSql('x.active', 'x.left_')}::int AS released,
                ${takenLoadSql(releasedLoadSql('x.active', 'x.left_'), 'x.taken')}::int AS after
           FROM jsonb_to_recordset({{cases}}::jsonb) AS x(n int, active int, left_ int, taken int)
          ORDER BY x.n`,
        { cases: JSON.stringify(cases.map((c, n) => ({ n, active: c.active, left_: c.left, taken: c.taken }))) },
      ),
    )
    expect(rows).toHaveLength(cases.length)
    for (const [n, c] of cases.entries()) {
      expect(rows[n]?.released, JSON.stringify(c)).toBe(releasedLoad(c.active, c.left))
      expect(rows[n]?.after, JSON.stringify(c)).toBe(loadAfterBeat(c.active, c.left, c.taken))
      expect(loadAfterBeat(c.active, c.left, c.taken)).toBe(takenLoad(releasedLoad(c.active, c.left), c.taken))
    }
    expect(releasedLoad(1, 3)).toBe(0)
  })

  it('through a heartbeat: what it held, less what its reports ended, plus what it is given', async () => {
    const a = await h.agent({ maxConcurrentTasks: 3 })
    const held = [await h.assignedTask(a.id), await h.assignedTask(a.id), await h.assignedTask(a.id)]
    const queued = [await h.task(), await h.task(), await h.task()] // the agent is full: they wait
    for (const t of queued) expect(t.status).toBe('pending')
    const [A, B] = held
    const res = await h.call('POST', '/api/v1/agents/heartbeat', {
      token: a.token,
      body: {
        agentId: a.id,
        reports: [
          { taskId: A.id, attempt: 1, status: 'running' },
          { taskId: A.id, attempt: 1, status: 'completed' },
          { taskId: B.id, attempt: 1, status: 'failed', error: { code: 'no', message: 'refused' } },
        ],
      },
    })
    expect(res.status).toBe(200)
    const given = res.body.assignments.filter((t: { id: string }) => queued.some((q) => q.id === t.id)).length
    expect(given).toBe(2) // the two slots the reports freed
    expect(res.body.agent.activeTasks).toBe(loadAfterBeat(3, 2, given))
    const [row] = await rowsOf<{ n: number; held: number }>(
      h.database.db,
      sql`SELECT active_tasks AS n,
                 (SELECT count(*)::int FROM tasks WHERE agent_id = ${a.id} AND status IN ('assigned', 'running')) AS held
            FROM agents WHERE id = ${a.id}`,
    )
    expect(row).toEqual({ n: 3, held: 3 })
  })

  it('a count already off never goes below zero', async () => {
    const a = await h.agent({ maxConcurrentTasks: 2 })
    const t = await h.assignedTask(a.id)
    // The stored count says it holds nothing (a count gone off), and its report ends a task.
    await h.database.db.execute(sql`UPDATE agents SET active_tasks = 0 WHERE id = ${a.id}`)
    const res = await h.call('POST', '/api/v1/agents/heartbeat', {
      token: a.token,
      body: { agentId: a.id, reports: [{ taskId: t.id, attempt: 1, status: 'failed', error: { message: 'x' } }] },
    })
    expect(res.body.reports).toEqual([{ taskId: t.id, ok: true }])
    expect(res.body.agent.activeTasks).toBe(loadAfterBeat(0, 1, 0))
    expect(res.body.agent.activeTasks).toBe(0)
  })
})
