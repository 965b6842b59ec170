import { sql } from 'drizzle-orm'
import { v7 as uuidv7 } from 'uuid'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Database } from '../src/db/client'
import { rowsOf } from '../src/db/client'
import { bind, pgTextArray } from '../src/db/fragments'
import { fillCtes } from '../src/db/hot'
import { agents, tasks } from '../src/db/schema'
import {
  agentColumns,
  FIT_RULE,
  FITS_QUEUE_SQL,
  type FitAgent,
  type FitTask,
  fits,
  meetsRequirements,
  meetsRequirementsSql,
  misfits,
  type TaskSql,
  takesWork,
  takesWorkSql,
} from '../src/domain/fit'
import { agentStatuses, type Provider } from '../src/domain/model'
import { maintainShapes } from '../src/services/shapes'
import { freshDatabase } from './harness'

/**
 * The fit rule exists in two forms (src/domain/fit.ts): TypeScript (the sweep's in-memory
 * matching, `misfits`) and SQL (the heartbeat's fill, the create's fast path, execute,
 * pendingReason). Over a generated matrix of agents and tasks — every requirement named or
 * not, met or not, with nulls, quotes and the statuses and loads an agent can have — the
 * SQL forms (two tables joined, a task's requirements as bound values, and the fill through
 * the shape table) must say exactly what the TypeScript says, pair by pair.
 */

/** A small seeded generator (mulberry32), so a failure reproduces. */
function rng(seed: number) {
  let a = seed
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
const random = rng(17)
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)] as T
const subset = <T>(xs: readonly T[], p = 0.4): T[] => xs.filter(() => random() < p)

const capabilityPool = ['cpu', 'gpu', 'arm', 'docker', 'we"ird\\cap', 'ünicode']
const providerPool: Provider[] = ['aws', 'gcp', 'onprem']
const regionPool = ['us-east-1', 'eu-west-1']
const labelPool: [string, string][] = [
  ['zone', 'a'],
  ['zone', 'b'],
  ['tier', 'spot'],
  ['team', "o'brien"],
]
const typePool = ['shell', 'etl.load', 'model.train']
const labelsOf = (pairs: [string, string][]) => Object.fromEntries(pairs)

let database: Database
const agentList: FitAgent[] = []
const taskList: (FitTask & { id: string })[] = []

beforeAll(async () => {
  database = await freshDatabase()
  const now = new Date('2026-01-01T00:00:00Z')
  for (let i = 0; i < 40; i++) {
    const max = 1 + Math.floor(random() * 3)
    agentList.push({
      id: uuidv7(),
      status: i < 30 ? 'online' : pick(agentStatuses),
      provider: pick(providerPool),
      region: random() < 0.2 ? null : pick(regionPool),
      capabilities: subset(capabilityPool, 0.5),
      labels: labelsOf(subset(labelPool)),
      // A quarter run any type, as agents registered without a declaration do.
      taskTypes: random() < 0.25 ? ['*'] : subset(typePool, 0.5),
      maxConcurrentTasks: max,
      activeTasks: random() < 0.25 ? max : Math.floor(random() * max),
    })
  }
  for (let i = 0; i < 60; i++) {
    const pinned = random() < 0.15 ? (random() < 0.7 ? pick(agentList).id : uuidv7()) : null
    taskList.push({
      id: uuidv7(),
      type: pick(typePool),
      declinedBy: random() < 0.15 ? [pick(agentList).id] : [],
      reqCapabilities: subset(capabilityPool, 0.25),
      reqProvider: random() < 0.4 ? pick(providerPool) : null,
      reqRegion: random() < 0.3 ? pick(regionPool) : null,
      reqLabels: labelsOf(subset(labelPool, 0.2)),
      reqAgentId: pinned,
    })
  }
  await database.db.insert(agents).values(
    agentList.map((a, i) => ({
      ...a,
      capabilities: [...a.capabilities],
      taskTypes: [...a.taskTypes],
      name: `fit-${i}`,
      provider: a.provider as Provider,
      createdAt: now,
      updatedAt: now,
    })),
  )
  await database.db.insert(tasks).values(
    taskList.map((t, i) => ({
      id: t.id,
      name: `fit-${i}`,
      type: t.type,
      declinedBy: [...t.declinedBy],
      reqCapabilities: [...t.reqCapabilities],
      reqProvider: t.reqProvider as Provider | null,
      reqRegion: t.reqRegion,
      reqLabels: t.reqLabels,
      reqAgentId: t.reqAgentId,
      availableAt: now,
      createdAt: now,
      updatedAt: now,
    })),
  )
})
afterAll(async () => {
  await database?.close()
})

const pairKey = (taskId: string, agentId: string) => `${taskId} ${agentId}`

/** Every (task, agent) pair the TypeScript form says fits. */
function expected(rule: (t: FitTask, a: FitAgent) => boolean): string[] {
  const out: string[] = []
  for (const t of taskList) for (const a of agentList) if (rule(t, a)) out.push(pairKey(t.id, a.id))
  return out.sort()
}

describe('the fit rule: TypeScript and SQL agree', () => {
  it('generates a matrix where every requirement both holds and fails', () => {
    for (const r of FIT_RULE) {
      const named = taskList.filter((t) => r.named(t))
      expect(named.length, r.name).toBeGreaterThan(0)
      const outcomes = new Set(named.flatMap((t) => agentList.map((a) => r.meets(t, a))))
      expect([...outcomes].sort(), r.name).toEqual([false, true])
    }
    const all = expected(fits)
    expect(all.length).toBeGreaterThan(20)
    expect(all.length).toBeLessThan((taskList.length * agentList.length) / 2)
  })

  it('joining agents and tasks (the queue scan form)', async () => {
    const rows = await rowsOf<{ task_id: string; agent_id: string }>(
      database.db,
      sql.raw(`SELECT t.id AS task_id, a.id AS agent_id FROM tasks t, agents a
                WHERE ${takesWorkSql(agentColumns('a'))} AND ${FITS_QUEUE_SQL}`),
    )
    expect(rows.map((r) => pairKey(r.task_id, r.agent_id)).sort()).toEqual(expected(fits))
    const meets = await rowsOf<{ task_id: string; agent_id: string }>(
      database.db,
      sql.raw(`SELECT t.id AS task_id, a.id AS agent_id FROM tasks t, agents a WHERE ${FITS_QUEUE_SQL}`),
    )
    expect(meets.map((r) => pairKey(r.task_id, r.agent_id)).sort()).toEqual(expected(meetsRequirements))
  })

  it("with a task's requirements as bound values (the create's and execute's form)", async () => {
    const required: TaskSql = {
      type: '{{type}}::text',
      declinedBy: '{{declinedBy}}::uuid[]',
      capabilities: '{{caps}}::text[]',
      provider: '{{provider}}::text',
      region: '{{region}}::text',
      labels: '{{labels}}::jsonb',
      agentId: '{{agentId}}::uuid',
    }
    const got: string[] = []
    for (const t of taskList) {
      const rows = await rowsOf<{ id: string }>(
        database.db,
        bind(
          `SELECT a.id FROM agents a
            WHERE ${takesWorkSql(agentColumns('a'))} AND ${meetsRequirementsSql(agentColumns('a'), required)}`,
          {
            type: t.type,
            declinedBy: `{${t.declinedBy.join(',')}}`,
            caps: pgTextArray(t.reqCapabilities),
            provider: t.reqProvider,
            region: t.reqRegion,
            labels: JSON.stringify(t.reqLabels),
            agentId: t.reqAgentId,
          },
        ),
      )
      for (const r of rows) got.push(pairKey(t.id, r.id))
    }
    expect(got.sort()).toEqual(expected(fits))
  })

  it("through the shapes (every fill's form: the shapes an agent fits, then their queues and its pinned one)", async () => {
    await database.db.execute(sql`DELETE FROM task_shapes`)
    await maintainShapes(database.db, new Date())
    const got: string[] = []
    for (const a of agentList) {
      const rows = await rowsOf<{ id: string }>(
        database.db,
        sql.raw(
          `WITH a AS (SELECT * FROM agents WHERE id = '${a.id}'), ${fillCtes({
            from: 'a',
            agent: agentColumns('a'),
            takes: takesWorkSql(agentColumns('a')),
            limit: '100000',
            now: 'now()',
          })} SELECT id FROM picked`,
        ),
      )
      for (const r of rows) got.push(pairKey(r.id, a.id))
    }
    expect(got.sort()).toEqual(expected(fits))
  })

  it('misfits names a reason exactly when the pair does not fit', () => {
    for (const t of taskList) {
      for (const a of agentList) {
        const why = misfits(t, a)
        expect(why.length === 0, `${t.id} on ${a.id}: ${why.join('; ')}`).toBe(fits(t, a))
        if (!takesWork(a)) expect(why.length).toBeGreaterThan(0)
      }
    }
  })
})
