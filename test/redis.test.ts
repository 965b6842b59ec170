import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { keys, MemoryKv } from '../src/lib/kv'
import { LongPolls } from '../src/lib/long-polls'
import { BusNotifier, LocalNotifier } from '../src/lib/notifier'
import { RedisKv } from '../src/lib/redis'
import { createHarness, type Harness, testRedisUrl, unique } from './harness'
import { Relay } from './relay'
import { until } from './until'

/**
 * Redis as an accelerator, never the source of truth: against this machine's Redis
 * (TEST_REDIS_URL, set in CI), a closed port, and a Redis that vanishes and comes back
 * behind a TCP relay.
 */
const withRedis = testRedisUrl !== ''
if (!withRedis) console.warn('skipped: the tests against a real Redis: no Redis (set TEST_REDIS_URL=redis://…)')

/** A TCP relay to Redis (test/relay.ts) that the test can cut and restore, to play "Redis died". */
const redisRelay = () => {
  const target = new URL(testRedisUrl)
  return new Relay(target.hostname, Number(target.port || 6379))
}

describe.runIf(withRedis)('with Redis', () => {
  let h: Harness
  let raw: RedisKv
  beforeAll(async () => {
    h = await createHarness({ RATE_LIMIT_PER_MINUTE: '0' })
    raw = new RedisKv(testRedisUrl, { queueWhileConnecting: true })
  })
  afterAll(async () => {
    await raw.close()
    await h.close()
  })
  const redisGet = async (key: string) => {
    let v: string | undefined
    await raw.cached(
      key,
      1,
      async () => undefined,
      (json) => {
        v = json
        return json
      },
    )
    return v
  }

  it('reports Redis in health with its latency', async () => {
    const res = await h.call('GET', '/api/v1/health/redis', { token: null })
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({ status: 'ok', latencyMs: expect.any(Number) })
    expect((await h.call('GET', '/api/v1/health', { token: null })).body.status).toBe('ok')
  })

  it('caches a task read and drops it on every write, so a client always reads its own writes', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    expect((await h.call('GET', `/api/v1/tasks/${t.id}`)).body.status).toBe('assigned')
    expect(await redisGet(keys.task(t.id))).toContain('"status":"assigned"')

    await h.report(t.id, a.token, { status: 'running', attempt: 1 })
    expect(await redisGet(keys.task(t.id))).toBeUndefined()
    expect((await h.call('GET', `/api/v1/tasks/${t.id}`)).body.status).toBe('running')
    await h.report(t.id, a.token, { status: 'completed', attempt: 1, result: 7 })
    expect((await h.call('GET', `/api/v1/tasks/${t.id}`)).body).toMatchObject({ status: 'completed', result: 7 })
  })

  it('caches an agent and its auth row; heartbeats, placements and token rotation drop them', async () => {
    const a = await h.agent({ maxConcurrentTasks: 3 })
    expect((await h.call('GET', `/api/v1/agents/${a.id}`)).body.activeTasks).toBe(0)
    await h.assignedTask(a.id)
    expect((await h.call('GET', `/api/v1/agents/${a.id}`)).body.activeTasks).toBe(1)
    h.clock.advance(1000)
    await h.call('POST', '/api/v1/agents/heartbeat', { token: a.token, body: { agentId: a.id } })
    expect((await h.call('GET', `/api/v1/agents/${a.id}`)).body.lastHeartbeatAt).toBe(h.clock.now().toISOString())

    expect((await h.call('GET', `/api/v1/agents/${a.id}`, { token: a.token })).status).toBe(200)
    expect(await redisGet(keys.agentAuth(a.id))).toBeDefined()
    const cachedRow = (await h.call('GET', `/api/v1/agents/${a.id}`)).body
    h.clock.advance(1000)
    const fresh = await h.call('POST', `/api/v1/agents/${a.id}/token`)
    expect((await h.call('GET', `/api/v1/agents/${a.id}`)).body.updatedAt).not.toBe(cachedRow.updatedAt)
    expect((await h.call('GET', `/api/v1/agents/${a.id}`, { token: a.token })).status).toBe(401)
    expect((await h.call('GET', `/api/v1/agents/${a.id}`, { token: fresh.body.token })).status).toBe(200)
  })

  it('never stores a value loaded before an invalidation that landed during the load', async () => {
    const key = `agenticcp:test:${unique()}`
    let release: () => void = () => {}
    const gate = new Promise<void>((r) => {
      release = r
    })
    let loading: () => void = () => {}
    const started = new Promise<void>((r) => {
      loading = r
    })
    const slow = raw.cached(key, 60_000, async () => {
      loading()
      await gate
      return 'old'
    })
    await started // the reader has looked in Redis and is reading Postgres
    await raw.invalidate([key]) // a write committed while the reader was loading
    release()
    expect(await slow).toBe('old') // the reader gets what it read…
    expect(await redisGet(key)).toBeUndefined() // …but does not put it back for others
    expect(await raw.cached(key, 60_000, async () => 'new')).toBe('new')
    expect(await raw.cached(key, 60_000, async () => 'unused')).toBe('new')
  })

  it('carries pub/sub between instances, and wakes a long poll on another instance', async () => {
    const other = new RedisKv(testRedisUrl)
    try {
      const channel = `agenticcp:test:${unique()}`
      const got: string[] = []
      other.subscribe(channel, (m) => got.push(m))
      await until('the subscription', async () => {
        await raw.publish(channel, 'ping')
        return got.length > 0
      })
      expect(got[0]).toBe('ping')

      // Two instances' notifiers on one bus: a placement on B wakes the heartbeat waiting on A.
      const work = `agenticcp:work:${unique()}`
      const a = new BusNotifier(new LocalNotifier(), raw, work)
      const b = new BusNotifier(new LocalNotifier(), other, work)
      // Both subscriptions in place: each hears what the other instance's client publishes.
      for (const [listener, publisher] of [
        [a, other],
        [b, raw],
      ] as const) {
        await until('the bus subscriptions', async () => {
          const probe = unique('probe')
          const heard = listener.wait(probe, 200)
          await publisher.publish(work, JSON.stringify([probe]))
          return heard
        })
      }
      const waiting = a.wait('agent-1', 10_000)
      b.notify(['agent-1'])
      expect(await waiting).toBe(true) // woken, not timed out
      a.close()
      b.close()
    } finally {
      await other.close()
    }
  })

  it('ends a long poll when a newer one of the same agent arrives on another instance', async () => {
    const other = new RedisKv(testRedisUrl)
    try {
      const a = new LongPolls(raw)
      const b = new LongPolls(other)
      const agent = unique('agent')
      // The first polls subscribe both instances; until then each holds its own only.
      await until('both instances on the bus', async () => {
        const onA = a.take(agent)
        await new Promise((r) => setTimeout(r, 100)) // its announcement comes back
        const onB = b.take(agent)
        const ended = await until('A ended', () => onA.signal.aborted, { timeoutMs: 1000 }).catch(() => false)
        onA.release()
        onB.release()
        return ended && !onB.signal.aborted
      })
      const first = b.take(agent)
      await new Promise((r) => setTimeout(r, 100))
      const newer = a.take(agent)
      await until('the older poll, on B, ended', () => first.signal.aborted)
      expect(newer.signal.aborted).toBe(false)
      first.release()
      newer.release()
      expect([a.waiting, b.waiting]).toEqual([0, 0])
    } finally {
      await other.close()
    }
  })

  it('rate-limits writes per token subject with 429 and Retry-After, never reads', async () => {
    const limited = await createHarness({ RATE_LIMIT_PER_MINUTE: '3' }, h.database)
    try {
      const op = await limited.token('operator', unique('op'))
      const statuses: number[] = []
      for (let i = 0; i < 5; i++) {
        statuses.push(
          (await limited.call('POST', '/api/v1/tasks', { token: op, body: { name: 'r', type: 't' } })).status,
        )
      }
      expect(statuses.slice(0, 3)).toEqual([201, 201, 201])
      const over = await limited.call('POST', '/api/v1/tasks', { token: op, body: { name: 'r', type: 't' } })
      expect(over.status).toBe(429)
      expect(over.body.code).toBe('rate_limited')
      expect(Number(over.headers.get('retry-after'))).toBeGreaterThan(0)
      expect((await limited.call('GET', '/api/v1/tasks?limit=1', { token: op })).status).toBe(200)
      const someoneElse = await limited.token('operator', unique('op'))
      expect(
        (await limited.call('POST', '/api/v1/tasks', { token: someoneElse, body: { name: 'r', type: 't' } })).status,
      ).toBe(201)
    } finally {
      await limited.kv.close()
    }
  })
})

describe('without Redis or with Redis gone', () => {
  it('counts rate limits in process when REDIS_URL is unset', async () => {
    const h = await createHarness({ REDIS_URL: '', RATE_LIMIT_PER_MINUTE: '2' })
    try {
      expect(h.kv).toBeInstanceOf(MemoryKv)
      const op = await h.token('operator')
      const s = []
      for (let i = 0; i < 3; i++)
        s.push((await h.call('POST', '/api/v1/tasks', { token: op, body: { name: 'r', type: 't' } })).status)
      expect(s).toEqual([201, 201, 429])
      expect((await h.call('GET', '/api/v1/health/redis', { token: null })).body).toEqual({ status: 'disabled' })
    } finally {
      await h.close()
    }
  })

  it('serves every request from Postgres when Redis is unreachable, and health says degraded', async () => {
    // As the server runs its client: commands fail at once while Redis is away (queued,
    // each would wait out the 250 ms bound first).
    const h = await createHarness({ REDIS_URL: 'redis://127.0.0.1:1', RATE_LIMIT_PER_MINUTE: '100' }, undefined, {
      queueWhileConnecting: false,
    })
    try {
      const a = await h.agent()
      const t = await h.assignedTask(a.id)
      expect((await h.report(t.id, a.token, { status: 'running', attempt: 1 })).status).toBe(200)
      expect((await h.call('GET', `/api/v1/tasks/${t.id}`)).body.status).toBe('running')
      expect((await h.call('GET', `/api/v1/agents/${a.id}`, { token: a.token })).status).toBe(200)
      const health = await h.call('GET', '/api/v1/health', { token: null })
      expect(health.status).toBe(200)
      expect(health.body).toMatchObject({ status: 'degraded', checks: { redis: { status: 'down' } } })
      expect((await h.call('GET', '/api/v1/health/redis', { token: null })).status).toBe(503)
    } finally {
      await h.close()
    }
  })

  it.runIf(withRedis)(
    'a token rotated on an instance cut off from Redis stops working on every other within AUTH_CACHE_TTL_SECONDS',
    async () => {
      const relay = redisRelay()
      await relay.start()
      const settings = { AUTH_CACHE_TTL_SECONDS: '1', CACHE_TTL_SECONDS: '30', RATE_LIMIT_PER_MINUTE: '0' }
      // Two instances over one database and one Redis; A reaches Redis through the relay.
      const b = await createHarness(settings)
      const a = await createHarness({ ...settings, REDIS_URL: `redis://127.0.0.1:${relay.port}` }, b.database)
      try {
        const agent = await b.agent()
        // B caches the agent's auth row.
        expect((await b.call('GET', `/api/v1/agents/${agent.id}`, { token: agent.token })).status).toBe(200)
        expect((await a.call('GET', `/api/v1/agents/${agent.id}`, { token: agent.token })).status).toBe(200)
        await relay.stop() // A loses Redis: its invalidations cannot reach B's cache
        const rotated = await a.call('POST', `/api/v1/agents/${agent.id}/token`)
        expect(rotated.status).toBe(201)
        const at = Date.now()
        // On A, at once (it reads around the cache while it owes Redis an invalidation).
        expect((await a.call('GET', `/api/v1/agents/${agent.id}`, { token: agent.token })).status).toBe(401)
        expect((await a.call('GET', `/api/v1/agents/${agent.id}`, { token: rotated.body.token })).status).toBe(200)
        // On B, once its copy has lived AUTH_CACHE_TTL_SECONDS (1 s here), never 30 s.
        await until(
          'B to refuse the old token',
          async () => (await b.call('GET', `/api/v1/agents/${agent.id}`, { token: agent.token })).status === 401,
          { timeoutMs: 10_000 },
        )
        expect(Date.now() - at).toBeLessThan(5_000)
        expect((await b.call('GET', `/api/v1/agents/${agent.id}`, { token: rotated.body.token })).status).toBe(200)
      } finally {
        await a.kv.close()
        await b.close()
        await relay.stop()
      }
    },
    30_000,
  )

  it.runIf(withRedis)(
    'keeps answering while Redis dies mid-run, and recovers by itself when it returns',
    async () => {
      const relay = redisRelay()
      await relay.start()
      const port = relay.port
      const h = await createHarness({ REDIS_URL: `redis://127.0.0.1:${port}`, RATE_LIMIT_PER_MINUTE: '1000' })
      try {
        const a = await h.agent()
        const t = await h.assignedTask(a.id)
        expect((await h.call('GET', `/api/v1/health/redis`, { token: null })).body.status).toBe('ok')

        await relay.stop() // Redis gone
        expect((await h.report(t.id, a.token, { status: 'running', attempt: 1 })).status).toBe(200)
        expect((await h.call('GET', `/api/v1/tasks/${t.id}`)).body.status).toBe('running')
        expect((await h.call('GET', '/api/v1/health', { token: null })).body.status).toBe('degraded')

        await relay.start(port) // Redis back on the same address
        await until(
          'redis to be back',
          async () => (await h.call('GET', '/api/v1/health/redis', { token: null })).body.status === 'ok',
        )
        expect((await h.call('GET', '/api/v1/health', { token: null })).body.status).toBe('ok')
        // The write made while Redis was away is what readers see now (no stale copy survived).
        expect((await h.call('GET', `/api/v1/tasks/${t.id}`)).body.status).toBe('running')
        await h.report(t.id, a.token, { status: 'completed', attempt: 1 })
        expect((await h.call('GET', `/api/v1/tasks/${t.id}`)).body.status).toBe('completed')
      } finally {
        await h.close()
        await relay.stop()
      }
    },
    30_000,
  )
})
