import { sign } from 'hono/jwt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHarness, type Harness, SECRET } from './harness'
import { until } from './until'

let h: Harness
beforeAll(async () => {
  h = await createHarness()
})
afterAll(async () => {
  await h.close()
})

const now = () => Math.floor(Date.now() / 1000)
const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url')

describe('401: no, bad, expired, unsigned or revoked tokens', () => {
  const cases: [string, () => Promise<string | null>][] = [
    ['no token', async () => null],
    ['garbage', async () => 'not-a-jwt'],
    ['wrong secret', () => sign({ sub: 'x', role: 'admin', exp: now() + 60 }, 'another-secret-another-secret-xx')],
    ['expired', () => sign({ sub: 'x', role: 'admin', exp: now() - 10 }, SECRET)],
    [
      'alg none',
      async () => `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: 'x', role: 'admin', exp: now() + 60 })}.`,
    ],
    ['no exp', () => sign({ sub: 'x', role: 'admin' }, SECRET)],
    ['unknown role', () => sign({ sub: 'x', role: 'root', exp: now() + 60 }, SECRET)],
    ['no sub', () => sign({ role: 'admin', exp: now() + 60 }, SECRET)],
    ['other algorithm', () => sign({ sub: 'x', role: 'admin', exp: now() + 60 }, SECRET, 'HS512')],
    ['agent token for a non-uuid', () => sign({ sub: 'x', role: 'agent', tv: 1, exp: now() + 60 }, SECRET)],
    ['lives longer than an admin token may', () => sign({ sub: 'x', role: 'admin', exp: now() + 2 * 3600 }, SECRET)],
    [
      'minted (iat) to live longer than a viewer token may',
      () => sign({ sub: 'x', role: 'viewer', iat: now() - 3 * 3600, exp: now() + 600 }, SECRET),
    ],
    [
      'agent token for an unknown agent',
      () => sign({ sub: '0192f3c5-6d7e-7a1b-8c9d-0e1f2a3b4c5d', role: 'agent', tv: 1, exp: now() + 60 }, SECRET),
    ],
  ]
  for (const [name, make] of cases) {
    it(name, async () => {
      const res = await h.call('GET', '/api/v1/agents', { token: await make() })
      expect(res.status).toBe(401)
      expect(res.body.code).toBe('unauthorized')
      expect(res.headers.get('www-authenticate')).toBe('Bearer')
    })
  }

  it('an agent token without the current token version', async () => {
    const a = await h.agent()
    const forged = await sign({ sub: a.id, role: 'agent', exp: now() + 60 }, SECRET)
    expect((await h.call('GET', `/api/v1/agents/${a.id}`, { token: forged })).status).toBe(401)
  })

  it('an agent token that lives longer than MAX_AGENT_TOKEN_LIFETIME_MINUTES', async () => {
    const a = await h.agent()
    const year = 366 * 24 * 3600
    const forged = await sign({ sub: a.id, role: 'agent', tv: 1, exp: now() + year }, SECRET)
    const res = await h.call('GET', `/api/v1/agents/${a.id}`, { token: forged })
    expect(res.status).toBe(401)
    expect(res.body.detail).toMatch(/lives longer than a token of role "agent" may/)
    const fair = await sign({ sub: a.id, role: 'agent', tv: 1, exp: now() + 30 * 24 * 3600 }, SECRET)
    expect((await h.call('GET', `/api/v1/agents/${a.id}`, { token: fair })).status).toBe(200)
  })

  it('answers that carry a token are never cached', async () => {
    const created = await h.call('POST', '/api/v1/agents', { body: { name: `nostore-${now()}`, provider: 'aws' } })
    expect(created.status).toBe(201)
    expect(created.headers.get('cache-control')).toBe('no-store')
    const rotated = await h.call('POST', `/api/v1/agents/${created.body.id}/token`)
    expect(rotated.status).toBe(201)
    expect(rotated.headers.get('cache-control')).toBe('no-store')
    expect((await h.call('GET', `/api/v1/agents/${created.body.id}`)).headers.get('cache-control')).toBeNull()
  })

  it('checks the token before the body, so a bad body without a token is 401', async () => {
    const res = await h.call('POST', '/api/v1/tasks', { token: null, body: { nonsense: true } })
    expect(res.status).toBe(401)
  })

  it('accepts a token minted by another system sharing the secret', async () => {
    const external = await sign({ sub: 'ci-bot', role: 'operator', exp: now() + 60 }, SECRET)
    expect((await h.call('POST', '/api/v1/tasks', { token: external, body: { name: 'x', type: 'y' } })).status).toBe(
      201,
    )
  })
})

describe('roles', () => {
  it('a viewer reads everything and writes nothing (403, nothing changed)', async () => {
    const viewer = await h.token('viewer')
    const a = await h.agent()
    const t = await h.pendingTask()
    for (const [method, path] of [
      ['GET', '/api/v1/agents'],
      ['GET', `/api/v1/agents/${a.id}`],
      ['GET', '/api/v1/tasks'],
      ['GET', `/api/v1/tasks/${t.id}`],
    ] as const) {
      expect((await h.call(method, path, { token: viewer })).status, `${method} ${path}`).toBe(200)
    }
    const writes: [string, string, unknown][] = [
      ['POST', '/api/v1/agents', { name: 'v', provider: 'aws' }],
      ['PUT', `/api/v1/agents/${a.id}`, { name: 'v', provider: 'aws' }],
      ['PATCH', `/api/v1/agents/${a.id}/status`, { status: 'draining' }],
      ['DELETE', `/api/v1/agents/${a.id}`, undefined],
      ['POST', `/api/v1/agents/${a.id}/token`, undefined],
      ['POST', '/api/v1/agents/heartbeat', { agentId: a.id }],
      ['POST', '/api/v1/tasks', { name: 'v', type: 'v' }],
      ['PUT', `/api/v1/tasks/${t.id}`, { name: 'v', type: 'v' }],
      ['PATCH', `/api/v1/tasks/${t.id}/status`, { status: 'running', attempt: 0 }],
      ['DELETE', `/api/v1/tasks/${t.id}`, undefined],
      ['POST', '/api/v1/tasks/execute', { taskId: t.id }],
      ['POST', `/api/v1/tasks/${t.id}/cancel`, undefined],
      ['POST', `/api/v1/tasks/${t.id}/retry`, undefined],
    ]
    for (const [method, path, body] of writes) {
      const res = await h.call(method, path, { token: viewer, body })
      expect(res.status, `${method} ${path}`).toBe(403)
      expect(res.body.code).toBe('forbidden')
    }
    expect((await h.call('GET', `/api/v1/agents/${a.id}`)).body).toMatchObject({ name: a.name, status: 'online' })
    expect((await h.call('GET', `/api/v1/tasks/${t.id}`)).body).toMatchObject({ name: t.name, status: 'pending' })
  })

  it('an operator manages agents and tasks', async () => {
    const op = await h.token('operator')
    const res = await h.call('POST', '/api/v1/agents', {
      token: op,
      body: { name: `op-${Date.now()}`, provider: 'ncp' },
    })
    expect(res.status).toBe(201)
    const t = await h.call('POST', '/api/v1/tasks', { token: op, body: { name: 'x', type: 'y' } })
    expect(t.status).toBe(201)
    expect((await h.call('DELETE', `/api/v1/tasks/${t.body.id}`, { token: op })).status).toBe(204)
  })

  it('an agent acts only as itself: its heartbeat, its record, its tasks', async () => {
    const a = await h.agent()
    const b = await h.agent()
    const mine = await h.assignedTask(a.id)
    const theirs = await h.assignedTask(b.id)

    expect((await h.call('GET', `/api/v1/agents/${a.id}`, { token: a.token })).status).toBe(200)
    expect((await h.call('GET', `/api/v1/agents/${b.id}`, { token: a.token })).status).toBe(403)
    expect((await h.call('GET', '/api/v1/agents', { token: a.token })).status).toBe(403)
    expect((await h.call('GET', `/api/v1/tasks/${mine.id}`, { token: a.token })).status).toBe(200)
    expect((await h.call('GET', `/api/v1/tasks/${theirs.id}`, { token: a.token })).status).toBe(404)

    const list = await h.call('GET', '/api/v1/tasks', { token: a.token })
    expect(list.status).toBe(200)
    expect(list.body.items.map((t: { id: string }) => t.id)).toEqual([mine.id])
    expect((await h.call('GET', `/api/v1/tasks?agentId=${b.id}`, { token: a.token })).status).toBe(403)

    const other = await h.report(theirs.id, a.token, { status: 'running', attempt: 1 })
    expect(other.status).toBe(409)
    expect(other.body.code).toBe('stale_attempt')
    expect((await h.call('GET', `/api/v1/tasks/${theirs.id}`)).body.status).toBe('assigned')

    for (const [method, path, body] of [
      ['POST', '/api/v1/tasks', { name: 'x', type: 'y' }],
      ['POST', '/api/v1/agents', { name: 'x', provider: 'aws' }],
      ['POST', `/api/v1/tasks/${mine.id}/cancel`, undefined],
      ['DELETE', `/api/v1/agents/${a.id}`, undefined],
      ['PATCH', `/api/v1/agents/${b.id}/status`, { status: 'draining' }],
    ] as const) {
      expect((await h.call(method, path, { token: a.token, body })).status, `${method} ${path}`).toBe(403)
    }
  })
})

describe('public routes', () => {
  it('health, probes, the OpenAPI document and the docs need no token', async () => {
    for (const path of [
      '/api/v1/health',
      '/api/v1/health/liveness',
      '/api/v1/health/readiness',
      '/api/v1/health/database',
      '/api/v1/health/redis',
      '/openapi.json',
      '/docs',
      '/',
    ]) {
      expect((await h.call('GET', path, { token: null })).status, path).toBe(200)
    }
  })
})

describe('agent token revocation without Redis', () => {
  it('holds at once on the instance that rotated, and on another within AUTH_CACHE_TTL_SECONDS', async () => {
    const settings = { REDIS_URL: '', AUTH_CACHE_TTL_SECONDS: '1' }
    const a = await createHarness(settings)
    const b = await createHarness(settings, a.database)
    try {
      const agent = await a.agent()
      const read = (on: Harness, token: string) => on.call('GET', `/api/v1/agents/${agent.id}`, { token })
      expect((await read(a, agent.token)).status).toBe(200)
      expect((await read(b, agent.token)).status).toBe(200) // B now holds the token version
      const fresh = (await a.call('POST', `/api/v1/agents/${agent.id}/token`)).body.token
      const at = Date.now()
      expect((await read(a, agent.token)).status).toBe(401)
      expect((await read(a, fresh)).status).toBe(200)
      // The new token works on B at once: a newer version than B's copy sends B to the database.
      expect((await read(b, fresh)).status).toBe(200)
      await until('B to refuse the old token', async () => (await read(b, agent.token)).status === 401, {
        timeoutMs: 10_000,
      })
      expect(Date.now() - at).toBeLessThan(5_000)
      expect((await read(b, fresh)).status).toBe(200)
    } finally {
      await b.kv.close()
      await a.close()
    }
  })
})
