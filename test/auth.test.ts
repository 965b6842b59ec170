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
  // Whole seconds a minute back and a minute ahead, so each message's time can be spelled out.
  const past = now() - 60
  const ahead = now() + 60
  const iso = (seconds: number) => new Date(seconds * 1000).toISOString()
  const notAJwt = (has: string) =>
    `The bearer token is not a JWT: a JWT has three dot-separated base64url parts (${has}); a registration token starts "acpr_".`
  // Each refusal says why, naming what the token says and never the key.
  const cases: [string, () => Promise<string | null>, string][] = [
    ['no token', async () => null, 'Missing bearer token.'],
    ['garbage', async () => 'nope', notAJwt('this one has 1')],
    ['two parts', async () => 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0', notAJwt('this one has 2')],
    [
      'three parts, one of them empty',
      async () => '.eyJzdWIiOiJ4In0.sig',
      notAJwt('this one has an empty or non-base64url part'),
    ],
    [
      'three parts that do not decode',
      async () => 'abc.def.ghi',
      'The token is not a JWT: its header, payload and signature must each be base64url (the first two JSON).',
    ],
    [
      'wrong secret',
      () => sign({ sub: 'x', role: 'admin', exp: ahead }, 'another-secret-another-secret-xx'),
      "The token has a bad signature: it was not signed with this service's key.",
    ],
    ['expired', () => sign({ sub: 'x', role: 'admin', exp: past }, SECRET), `The token expired at ${iso(past)}.`],
    [
      'not valid yet',
      () => sign({ sub: 'x', role: 'admin', nbf: ahead, exp: ahead + 60 }, SECRET),
      `The token is not valid before ${iso(ahead)}.`,
    ],
    [
      'issued in the future',
      () => sign({ sub: 'x', role: 'admin', iat: ahead, exp: ahead + 60 }, SECRET),
      `The token was issued in the future (iat ${iso(ahead)}): is a clock wrong?`,
    ],
    [
      'alg none',
      async () => `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: 'x', role: 'admin', exp: ahead })}.`,
      'The token\'s header is not one this service takes: it wants alg "HS256", typ "JWT" or none, and no "crit".',
    ],
    ['no exp', () => sign({ sub: 'x', role: 'admin' }, SECRET), 'The token lacks valid sub, role or exp claims.'],
    [
      'unknown role',
      () => sign({ sub: 'x', role: 'root', exp: ahead }, SECRET),
      'The token lacks valid sub, role or exp claims.',
    ],
    ['no sub', () => sign({ role: 'admin', exp: ahead }, SECRET), 'The token lacks valid sub, role or exp claims.'],
    [
      'other algorithm',
      () => sign({ sub: 'x', role: 'admin', exp: ahead }, SECRET, 'HS512'),
      'The token is signed with HS512; this service signs with HS256.',
    ],
    [
      'agent token for a non-uuid',
      () => sign({ sub: 'x', role: 'agent', tv: 1, exp: ahead }, SECRET),
      'The agent of this token no longer exists.',
    ],
    [
      'lives longer than an admin token may',
      () => sign({ sub: 'x', role: 'admin', exp: now() + 2 * 3600 }, SECRET),
      'The token lives longer than a token of role "admin" may',
    ],
    [
      'minted (iat) to live longer than a viewer token may',
      () => sign({ sub: 'x', role: 'viewer', iat: now() - 3 * 3600, exp: now() + 600 }, SECRET),
      'The token lives longer than a token of role "viewer" may',
    ],
    [
      'agent token for an unknown agent',
      () => sign({ sub: '0192f3c5-6d7e-7a1b-8c9d-0e1f2a3b4c5d', role: 'agent', tv: 1, exp: ahead }, SECRET),
      'The agent of this token no longer exists.',
    ],
  ]
  for (const [name, make, detail] of cases) {
    it(name, async () => {
      const res = await h.call('GET', '/api/v1/agents', { token: await make() })
      expect(res.status).toBe(401)
      expect(res.body.code).toBe('unauthorized')
      expect(res.body.detail).toContain(detail)
      expect(res.body.detail).not.toContain(SECRET)
      expect(res.headers.get('www-authenticate')).toBe('Bearer')
    })
  }

  it('another scheme than Bearer', async () => {
    const res = await h.call('GET', '/api/v1/agents', { token: null, headers: { authorization: 'Basic dXNlcjpwdw==' } })
    expect(res.status).toBe(401)
    expect(res.body.detail).toBe('Authorization must be "Bearer <token>".')
  })

  it('a registration token of the wrong shape', async () => {
    const res = await h.call('GET', '/api/v1/agents', { token: 'acpr_short' })
    expect(res.status).toBe(401)
    expect(res.body.detail).toBe('A registration token is "acpr_" and 43 base64url characters.')
  })

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
