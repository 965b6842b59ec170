import { sql } from 'drizzle-orm'
import pg from 'pg'
import { v7 as uuidv7 } from 'uuid'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createClient, ok } from '../src/client'
import { type Database, rowsOf } from '../src/db/client'
import { connectDatabase } from '../src/db/connect'
import {
  granted,
  grantedSql,
  KEY_MAX_LENGTH,
  keyFull,
  keyFullSql,
  releasedKey,
  releasedKeySql,
} from '../src/domain/concurrency'
import { heartbeat } from '../src/services/agents'
import type { ServiceDeps } from '../src/services/deps'
import { HeartbeatWriter } from '../src/services/heartbeat-writer'
import { maintainShapes } from '../src/services/shapes'
import { createHarness, freshPostgresUrl, type Harness, onPostgres, unique } from './harness'

/**
 * Flow control (src/domain/concurrency.ts, docs/scheduler.md "Concurrency keys" and "Fair
 * share"): a key's limit holds across a batch of heartbeats, agents lost mid-run and two
 * server instances; the key's stored count agrees with its tasks; tenants share slots.
 */

let h: Harness
beforeAll(async () => {
  h = await createHarness()
})
afterAll(async () => {
  await h.close()
})

const depsOf = (x: Harness, batchSize = 64, inFlight = 2): ServiceDeps => ({
  db: x.database.db,
  clock: x.clock,
  config: x.config,
  kv: x.kv,
  heartbeats: new HeartbeatWriter(x.database.db, x.clock, { batchSize, inFlight }),
})

/** `n` online agents with `slots` slots each that run only tasks of `type` (written by SQL: fast). */
async function agentsOf(x: Harness, n: number, type: string, slots = 1): Promise<string[]> {
  const ids = Array.from({ length: n }, () => uuidv7())
  const now = x.clock.now()
  await x.database.db.execute(sql`
    INSERT INTO agents (id, name, provider, task_types, max_concurrent_tasks, status, last_heartbeat_at, created_at, updated_at)
    SELECT id, ${unique('a')} || '-' || ord, 'aws', ARRAY[${type}]::text[], ${slots}, 'online', ${now}, ${now}, ${now}
      FROM unnest(${`{${ids.join(',')}}`}::uuid[]) WITH ORDINALITY AS u(id, ord)`)
  return ids
}

/** Tasks created through POST /tasks/batch, 1,000 a call. */
async function batch(x: Harness, items: Record<string, unknown>[]) {
  for (let i = 0; i < items.length; i += 1000) {
    const res = await x.call('POST', '/api/v1/tasks/batch', { body: { tasks: items.slice(i, i + 1000) } })
    expect(res.status, JSON.stringify(res.body)).toBe(201)
  }
}

type Held = Map<string, { id: string; attempt: number }[]>

/**
 * One wave: every agent in `ids` heartbeats at once (written in batches), reporting what it
 * held as run and completed; returns what each holds now.
 */
async function wave(deps: ServiceDeps, ids: string[], held: Held): Promise<Held> {
  const out: Held = new Map()
  await Promise.all(
    ids.map(async (agentId) => {
      const mine = held.get(agentId) ?? []
      const r = await heartbeat(deps, {
        agentId,
        status: 'online',
        reports: mine.flatMap((t) => [
          { taskId: t.id, status: 'running' as const, attempt: t.attempt },
          { taskId: t.id, status: 'completed' as const, attempt: t.attempt },
        ]),
      })
      out.set(
        agentId,
        r.assignments.map((t) => ({ id: t.id, attempt: t.attempt })),
      )
    }),
  )
  return out
}

/** A key's live tasks counted, and its stored count. */
async function keyCounts(x: Harness, key: string) {
  const [r] = await rowsOf<{ live: number; active: number | null; pending: number }>(
    x.database.db,
    sql`SELECT (SELECT count(*)::int FROM tasks WHERE concurrency_key = ${key} AND status IN ('assigned', 'running')) AS live,
               (SELECT count(*)::int FROM tasks WHERE concurrency_key = ${key} AND status = 'pending') AS pending,
               (SELECT active FROM concurrency_keys WHERE key = ${key}) AS active`,
  )
  return r as { live: number; active: number | null; pending: number }
}

describe('the rules, TypeScript and SQL', () => {
  it('admission, release and fullness agree over a matrix', async () => {
    const cases: [number, number, number][] = []
    for (const active of [0, 1, 3, 5, 8])
      for (const limit of [1, 3, 5]) for (const n of [0, 1, 2, 6]) cases.push([active, limit, n])
    const values = cases.map(([a, l, n]) => `(${a}, ${l}, ${n})`).join(', ')
    const rows = await rowsOf<{ g: number; r: number; f: boolean }>(
      h.database.db,
      sql.raw(`SELECT ${grantedSql('a', 'l', 'n')} AS g, ${releasedKeySql('a', 'n')} AS r, ${keyFullSql('a', 'l')} AS f
                 FROM (VALUES ${values}) AS v(a, l, n)`),
    )
    expect(rows.map((r) => [Number(r.g), Number(r.r), r.f])).toEqual(
      cases.map(([a, l, n]) => [granted(a, l, n), releasedKey(a, n), keyFull(a, l)]),
    )
  })
})

describe('concurrency keys', () => {
  it('200 agents claiming at once in batched heartbeats never hold more than the limit', async () => {
    const type = unique('burst')
    const key = unique('k')
    const LIMIT = 7
    const deps = depsOf(h)
    const ids = await agentsOf(h, 200, type)
    await batch(h, [
      // Three tenants share the key: three queues (shapes) whose heads one statement reads.
      ...Array.from({ length: 40 }, (_, i) => ({
        name: `k${i}`,
        type,
        concurrency: { key, limit: LIMIT },
        fairnessKey: `t${i % 3}`,
      })),
      ...Array.from({ length: 150 }, (_, i) => ({ name: `free${i}`, type })),
    ])
    let held: Held = new Map()
    let most = 0
    for (let w = 0; w < 12; w++) {
      held = await wave(deps, ids, held)
      const c = await keyCounts(h, key)
      expect(c.live).toBeLessThanOrEqual(LIMIT)
      expect(c.active).toBe(c.live)
      most = Math.max(most, c.live)
      if (c.pending === 0 && c.live === 0) break
    }
    expect(most).toBe(LIMIT) // the limit was reached, never passed
    const done = await keyCounts(h, key)
    expect(done).toEqual({ live: 0, active: 0, pending: 0 })
  })

  it('agents killed mid-run leave no slot behind once they expire; the sweep recounts a count gone wrong', async () => {
    const type = unique('lost')
    const key = unique('k')
    const deps = depsOf(h)
    const ids = await agentsOf(h, 10, type)
    await batch(
      h,
      Array.from({ length: 12 }, (_, i) => ({ name: `k${i}`, type, concurrency: { key, limit: 4 } })),
    )
    const held = await wave(deps, ids, new Map())
    expect((await keyCounts(h, key)).live).toBe(4)
    // Two of the four start running; then all four agents go silent.
    const holders = ids.filter((a) => (held.get(a) ?? []).length > 0)
    for (const a of holders.slice(0, 2)) {
      const t = (held.get(a) ?? [])[0] as { id: string; attempt: number }
      await heartbeat(deps, { agentId: a, reports: [{ taskId: t.id, status: 'running', attempt: t.attempt }] })
    }
    h.clock.advance((h.config.heartbeatTimeoutSeconds + 1) * 1000)
    const alive = ids.filter((a) => !holders.includes(a))
    // The others beat meanwhile (so they stay online), but the key is full: nothing new.
    await wave(deps, alive, new Map())
    expect((await keyCounts(h, key)).live).toBe(4)
    await h.sweep()
    const [dead] = await rowsOf<{ n: number }>(
      h.database.db,
      sql`SELECT count(*)::int AS n FROM agents WHERE status = 'offline' AND id = ANY(${`{${holders.join(',')}}`}::uuid[])`,
    )
    expect(dead?.n).toBe(4)
    const after = await keyCounts(h, key)
    // The sweep freed the four slots and placed four more of the key on the live agents.
    expect(after.active).toBe(after.live)
    expect(after.live).toBe(4)
    const onDead = await rowsOf<{ n: number }>(
      h.database.db,
      sql`SELECT count(*)::int AS n FROM tasks WHERE concurrency_key = ${key} AND status IN ('assigned', 'running')
            AND agent_id = ANY(${`{${holders.join(',')}}`}::uuid[])`,
    )
    expect(onDead[0]?.n).toBe(0)
    // A count gone wrong (written by hand) is put right by the next sweep.
    await h.database.db.execute(sql`UPDATE concurrency_keys SET active = 0 WHERE key = ${key}`)
    await h.sweep()
    expect((await keyCounts(h, key)).active).toBe(4)
  })

  it('a held-back task says concurrency_limit; GET /concurrency counts; execute refuses it', async () => {
    const key = unique('k')
    const a = await h.agent({ maxConcurrentTasks: 3 })
    const first = await h.task({ concurrency: { key, limit: 1 } })
    expect(first.status).toBe('assigned')
    const second = await h.task({ concurrency: { key, limit: 1 } })
    expect(second.status).toBe('pending')
    expect(second.pendingReason).toBe('concurrency_limit')
    expect(second.concurrency).toEqual({ key, limit: 1 })
    const got = await h.call('GET', `/api/v1/tasks/${second.id}`)
    expect(got.body.pendingReason).toBe('concurrency_limit')
    expect(got.body.pendingDetails).toEqual([`concurrency key ${key} has 1 of 1 tasks assigned or running`])
    const ex = await h.call('POST', '/api/v1/tasks/execute', { body: { taskId: second.id, agentId: a.id } })
    expect(ex.status).toBe(409)
    expect(ex.body.code).toBe('concurrency_limit')
    const list = await h.call('GET', '/api/v1/concurrency?limit=500', { token: await h.token('viewer') })
    expect(list.status).toBe(200)
    expect(list.body.items.find((k: { key: string }) => k.key === key)).toMatchObject({
      limit: 1,
      active: 1,
      pending: 1,
    })
    expect((await h.call('GET', '/api/v1/concurrency', { token: a.token })).status).toBe(403)
    // The typed client has the route.
    const api = createClient({
      url: 'http://local',
      token: await h.token('viewer'),
      fetch: async (input, init) => h.app.request(input instanceof Request ? input : String(input), init),
    })
    const typed = await ok(api.api.v1.concurrency.$get({ query: { limit: '500' } }))
    expect(typed.items.some((k) => k.key === key && k.pending === 1)).toBe(true)
    // Paged by key.
    const one = await h.call('GET', '/api/v1/concurrency?limit=1')
    expect(one.body.items).toHaveLength(1)
    expect(one.body.nextCursor).toBeTypeOf('string')
    const next = await h.call('GET', `/api/v1/concurrency?limit=1&cursor=${one.body.nextCursor}`)
    expect(next.body.items[0].key > one.body.items[0].key).toBe(true)
    // The newest create's limit is the key's: raised to 2, the waiting task goes.
    await h.task({ concurrency: { key, limit: 2 }, scheduledAt: '2099-01-01T00:00:00Z' })
    expect((await h.call('POST', '/api/v1/tasks/execute', { body: { taskId: second.id } })).status).toBe(200)
    // The first ends: the key's count follows.
    await h.report(first.id, a.token, { status: 'running', attempt: 1 })
    await h.report(first.id, a.token, { status: 'completed', attempt: 1 })
    expect(await keyCounts(h, key)).toMatchObject({ live: 1, active: 1 })
  })

  it('refuses a bad limit, key or fairnessKey with 422 and writes nothing', async () => {
    const name = unique('bad')
    const bad: Record<string, unknown>[] = [
      { concurrency: { key: 'k', limit: 0 } },
      { concurrency: { key: 'k', limit: -3 } },
      { concurrency: { key: 'k', limit: 1.5 } },
      { concurrency: { key: 'k' } },
      { concurrency: { key: 'x'.repeat(KEY_MAX_LENGTH + 1), limit: 1 } },
      { concurrency: { key: 'has space', limit: 1 } },
      { concurrency: { key: '', limit: 1 } },
      { fairnessKey: 'tenant a' },
      { fairnessKey: 'x'.repeat(KEY_MAX_LENGTH + 1) },
      { fairnessKey: 7 },
    ]
    for (const b of bad) {
      const res = await h.call('POST', '/api/v1/tasks', { body: { name, type: 'x', ...b } })
      expect(res.status, JSON.stringify(b)).toBe(422)
      expect(res.body.errors.length).toBeGreaterThan(0)
    }
    // One bad item refuses the whole batch.
    const res = await h.call('POST', '/api/v1/tasks/batch', {
      body: {
        tasks: [
          { name, type: 'x', concurrency: { key: name, limit: 2 } },
          { name, type: 'x', ...bad[0] },
        ],
      },
    })
    expect(res.status).toBe(422)
    expect(res.body.errors[0].path).toMatch(/^body\.tasks\.1\.concurrency\.limit/)
    const [n] = await rowsOf<{ tasks: number; keys: number }>(
      h.database.db,
      sql`SELECT (SELECT count(*)::int FROM tasks WHERE name = ${name}) AS tasks,
                 (SELECT count(*)::int FROM concurrency_keys WHERE key = ${name}) AS keys`,
    )
    expect(n).toEqual({ tasks: 0, keys: 0 })
  })
})

describe('fair share', () => {
  it('a burst of 10,000 from one tenant does not push two others behind it', async () => {
    const type = unique('fair')
    const deps = depsOf(h)
    const SLOTS = 50
    const ids = await agentsOf(h, SLOTS, type)
    // A's 10,000 first (older ids), then B's and C's 100 each: one insert, at one priority.
    const now = h.clock.now()
    const tenants = [
      ...Array.from({ length: 10_000 }, () => 'A'),
      ...Array.from({ length: 100 }, () => 'B'),
      ...Array.from({ length: 100 }, () => 'C'),
    ]
    const taskIds = tenants.map(() => uuidv7())
    await h.database.db.execute(sql`
      INSERT INTO tasks (id, name, type, priority, fairness_key, status, available_at, created_at, updated_at)
      SELECT id, 'fair', ${type}, 5, ${type} || '-' || tenant, 'pending', ${now}, ${now}, ${now}
        FROM unnest(${`{${taskIds.join(',')}}`}::uuid[], ${`{${tenants.join(',')}}`}::text[]) AS u(id, tenant)`)
    await maintainShapes(h.database.db, now) // the shapes, as the sweep adds them
    const tenantOf = new Map(taskIds.map((id, i) => [id, tenants[i] as string]))
    const placedIn = new Map<string, number[]>([
      ['A', []],
      ['B', []],
      ['C', []],
    ])
    let held: Held = new Map()
    let round = 0
    while ((placedIn.get('B')?.length ?? 0) < 100 || (placedIn.get('C')?.length ?? 0) < 100) {
      round++
      expect(round).toBeLessThan(60)
      held = await wave(deps, ids, held)
      for (const ts of held.values()) for (const t of ts) placedIn.get(tenantOf.get(t.id) as string)?.push(round)
    }
    // Fair share: each of 3 tenants gets a third of the slots a round, so its k-th task is
    // placed in round ⌈k / (50/3)⌉; p95 is the 95th task's round.
    const p95 = (rounds: number[]) => [...rounds].sort((x, y) => x - y)[Math.ceil(rounds.length * 0.95) - 1] as number
    const fair = Math.ceil(95 / (SLOTS / 3))
    const [b, c] = [p95(placedIn.get('B') ?? []), p95(placedIn.get('C') ?? [])]
    console.log(
      `fair share: 50 slots, A 10,000 + B 100 + C 100 at one priority; B p95 ${b} rounds, C p95 ${c} rounds, fair share ${fair} rounds (without it: ${Math.ceil(10_095 / SLOTS)}); A placed ${placedIn.get('A')?.length} meanwhile in ${round} rounds`,
    )
    expect(b).toBeLessThanOrEqual(2 * fair)
    expect(c).toBeLessThanOrEqual(2 * fair)
    // And A was not starved either: it had its share.
    expect(placedIn.get('A')?.length).toBeGreaterThanOrEqual(Math.floor((round * SLOTS) / 3) - SLOTS)
  })
})

describe.runIf(onPostgres())('two server instances on one Postgres', () => {
  let dbs: Database[] = []
  let hs: Harness[] = []
  let url = ''
  beforeAll(async () => {
    url = await freshPostgresUrl()
    dbs = [await connectDatabase(url, { poolMax: 8 }), await connectDatabase(url, { poolMax: 8 })]
    hs = [await createHarness({}, dbs[0]), await createHarness({}, dbs[1])]
  })
  afterAll(async () => {
    for (const x of hs) await x.close()
  })

  it('keep the limit together', async () => {
    const [one, two] = hs as [Harness, Harness]
    const type = unique('two')
    const key = unique('k')
    const LIMIT = 5
    const ids = await agentsOf(one, 60, type)
    // Due a second from now, so that the create places none of them: the waves do.
    const due = new Date(one.clock.now().getTime() + 1000).toISOString()
    await batch(
      one,
      Array.from({ length: 40 }, (_, i) => ({
        name: `k${i}`,
        type,
        concurrency: { key, limit: LIMIT },
        scheduledAt: due,
      })),
    )
    one.clock.advance(2000)
    two.clock.advance(2000)
    // Small batches, several in flight: many statements of both instances overlap.
    const deps = [depsOf(one, 4, 6), depsOf(two, 4, 6)]
    // Each instance has half the agents; both beat at once, in waves.
    const halves = [ids.filter((_, i) => i % 2 === 0), ids.filter((_, i) => i % 2 === 1)]
    // First, both instances' fills meet at the key's row: a third session holds it while
    // both pick their tasks, then lets go; each must count the other's assignments.
    const blocker = new pg.Client({ connectionString: url })
    await blocker.connect()
    await blocker.query('BEGIN')
    await blocker.query('SELECT * FROM concurrency_keys WHERE key = $1 FOR UPDATE', [key])
    const first = Promise.all([0, 1].map((i) => wave(deps[i] as ServiceDeps, halves[i] as string[], new Map())))
    await new Promise((r) => setTimeout(r, 300))
    await blocker.query('COMMIT')
    await blocker.end()
    let held: Held[] = await first
    const c0 = await keyCounts(one, key)
    expect(c0.live).toBe(LIMIT)
    expect(c0.active).toBe(LIMIT)
    let most = 0
    for (let w = 0; w < 14; w++) {
      held = await Promise.all([0, 1].map((i) => wave(deps[i] as ServiceDeps, halves[i] as string[], held[i] as Held)))
      const c = await keyCounts(one, key)
      expect(c.live).toBeLessThanOrEqual(LIMIT)
      expect(c.active).toBe(c.live)
      most = Math.max(most, c.live)
      if (c.pending === 0 && c.live === 0) break
    }
    expect(most).toBe(LIMIT)
    expect(await keyCounts(one, key)).toEqual({ live: 0, active: 0, pending: 0 })
  })
})
