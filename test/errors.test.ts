import { count } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { agents, events, tasks } from '../src/db/schema'
import { createHarness, freshDatabase, type Harness } from './harness'

let h: Harness
beforeAll(async () => {
  h = await createHarness({ MAX_BODY_BYTES: '4096', CORS_ORIGINS: 'https://ops.example.com' })
})
afterAll(async () => {
  await h.close()
})

async function rowCounts() {
  const db = h.database.db
  const [a] = await db.select({ n: count() }).from(agents)
  const [t] = await db.select({ n: count() }).from(tasks)
  const [e] = await db.select({ n: count() }).from(events)
  return { agents: a?.n, tasks: t?.n, events: e?.n }
}

function expectProblem(
  res: { status: number; headers: Headers; body: Record<string, unknown> },
  status: number,
  code: string,
) {
  expect(res.status).toBe(status)
  expect(res.headers.get('content-type')).toContain('application/problem+json')
  expect(res.body).toMatchObject({ status, code, title: expect.any(String), detail: expect.any(String) })
  expect(res.body.type).toBe(`urn:agenticcp:problem:${code.replaceAll('_', '-')}`)
  expect(res.body.requestId).toBe(res.headers.get('x-request-id'))
  expect(JSON.stringify(res.body)).not.toMatch(/\bat .+\.(ts|js):\d+/)
}

describe('bad input', () => {
  it('400 for malformed JSON', async () => {
    const res = await h.call('POST', '/api/v1/tasks', {
      raw: '{"name": "x",',
      headers: { 'content-type': 'application/json' },
    })
    expectProblem(res, 400, 'malformed_json')
  })

  it('415 for a body that is not JSON', async () => {
    const res = await h.call('POST', '/api/v1/tasks', {
      raw: 'name=x',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    })
    expectProblem(res, 415, 'unsupported_media_type')
    const none = await h.call('POST', '/api/v1/tasks', { raw: '{"name":"x","type":"y"}' })
    expectProblem(none, 415, 'unsupported_media_type')
  })

  it('422 for a missing body, listing every required field', async () => {
    const res = await h.call('POST', '/api/v1/tasks')
    expectProblem(res, 422, 'validation_failed')
    expect(res.body.errors.map((e: { path: string }) => e.path).sort()).toEqual(['body.name', 'body.type'])
  })

  it('413 for a body over MAX_BODY_BYTES, and nothing is written', async () => {
    const before = await rowCounts()
    const res = await h.call('POST', '/api/v1/tasks', { body: { name: 'big', type: 't', payload: 'x'.repeat(5000) } })
    expectProblem(res, 413, 'payload_too_large')
    expect(await rowCounts()).toEqual(before)
  })

  it('413 by the declared Content-Length too, and a fitting declared body is read as usual', async () => {
    const big = JSON.stringify({ name: 'big', type: 't', payload: 'x'.repeat(5000) })
    const res = await h.call('POST', '/api/v1/tasks', {
      raw: big,
      headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(big)) },
    })
    expectProblem(res, 413, 'payload_too_large')
    const small = JSON.stringify({ name: 'small', type: 't' })
    const ok = await h.call('POST', '/api/v1/tasks', {
      raw: small,
      headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(small)) },
    })
    expect(ok.status).toBe(201)
  })

  it('422 lists every failing field, nested ones with their path', async () => {
    const res = await h.call('POST', '/api/v1/tasks', {
      body: {
        name: '',
        type: 'has spaces',
        priority: 0,
        maxAttempts: 0,
        timeoutSeconds: -1,
        scheduledAt: 'tomorrow',
        requirements: { capabilities: ['ok', 'bad cap'], provider: 'mars', labels: { k: 5 } },
        surprise: true,
      },
    })
    expectProblem(res, 422, 'validation_failed')
    const paths = res.body.errors.map((e: { path: string }) => e.path)
    for (const p of [
      'body.name',
      'body.type',
      'body.priority',
      'body.maxAttempts',
      'body.timeoutSeconds',
      'body.scheduledAt',
      'body.requirements.capabilities.1',
      'body.requirements.provider',
      'body.requirements.labels.k',
    ]) {
      expect(paths).toContain(p)
    }
    expect(res.body.errors.some((e: { message: string }) => /surprise/.test(e.message))).toBe(true)
  })

  it('422 for numbers JSON cannot hold and unpaired surrogates, instead of storing them changed', async () => {
    const before = await rowCounts()
    const raws = [
      '{"name":"big","type":"t","payload":{"n":1e999}}',
      '{"name":"big","type":"t","payload":[-1e400]}',
      '{"name":"lone","type":"t","payload":{"s":"\\ud800"}}',
      '{"name":"lone","type":"t","payload":{"\\udc00":1}}',
      '{"name":"x\\ud800","type":"t"}',
    ]
    for (const raw of raws) {
      const res = await h.call('POST', '/api/v1/tasks', { raw, headers: { 'content-type': 'application/json' } })
      expectProblem(res, 422, 'validation_failed')
      expect(res.body.errors[0].path, raw).toMatch(/^body\./)
    }
    const hb = await h.call('POST', '/api/v1/agents/heartbeat', {
      raw: `{"agentId":"${(await h.agent()).id}","metrics":{"load":1e999}}`,
      headers: { 'content-type': 'application/json' },
    })
    expectProblem(hb, 422, 'validation_failed')
    expect(hb.body.errors).toEqual([{ path: 'body.metrics.load', message: expect.stringContaining('too large') }])
    // A well-formed astral character (a surrogate pair) is fine.
    const ok = await h.call('POST', '/api/v1/tasks', {
      raw: '{"name":"emoji","type":"t","scheduledAt":"2099-01-01T00:00:00Z","payload":{"s":"\\ud83d\\ude80 🚀"}}',
      headers: { 'content-type': 'application/json' },
    })
    expect(ok.status).toBe(201)
    expect(ok.body.payload).toEqual({ s: '🚀 🚀' })
    const after = await rowCounts()
    expect(after.tasks).toBe((before.tasks ?? 0) + 1)
  })

  it('404 problem for an unknown route', async () => {
    expectProblem(await h.call('GET', '/api/v1/nothing-here'), 404, 'not_found')
  })

  it('never answers 500 to anything a client sends, and a refused request changes nothing', async () => {
    const a = await h.agent()
    const t = await h.task()
    const before = await rowCounts()
    const bodies: unknown[] = [
      null,
      [],
      'text',
      42,
      true,
      {},
      { name: null },
      { name: 'x'.repeat(10_000) },
      { name: 'nul\u0000byte', type: 't', provider: 'aws' },
      { name: 'ok', type: 't', payload: { k: 'nul\u0000' } },
      { name: 'ok', type: 't', priority: 1e308 },
      { name: 'ok', type: 't', priority: '5' },
      { name: 'ok', provider: 'aws', maxConcurrentTasks: 2 ** 40 },
      { agentId: 'not-a-uuid' },
      { agentId: a.id, runningTaskIds: ['x'] },
      { agentId: a.id, metrics: 'hot' },
      { taskId: t.id, agentId: 12 },
      { status: 'running', attempt: 1.5 },
      { status: 'failed', attempt: 0, error: { message: '' } },
      { name: 'ok', type: 't', requirements: { labels: { ['k'.repeat(100)]: 'v' } } },
      { name: 'ok', type: 't', scheduledAt: '2026-13-45T99:99:99Z' },
      JSON.parse(
        '{"__proto__": {"polluted": true}, "name": "p", "type": "t", "payload": {"constructor": {"prototype": {"x": 1}}}}',
      ),
    ]
    const targets: [string, string][] = [
      ['POST', '/api/v1/agents'],
      ['PUT', `/api/v1/agents/${a.id}`],
      ['PATCH', `/api/v1/agents/${a.id}/status`],
      ['POST', '/api/v1/agents/heartbeat'],
      ['POST', '/api/v1/tasks'],
      ['PUT', `/api/v1/tasks/${t.id}`],
      ['PATCH', `/api/v1/tasks/${t.id}/status`],
      ['POST', '/api/v1/tasks/execute'],
    ]
    let accepted = 0
    for (const [method, path] of targets) {
      for (const body of bodies) {
        const res = await h.call(method, path, { body })
        expect(res.status, `${method} ${path} ${JSON.stringify(body)?.slice(0, 80)}`).toBeLessThan(500)
        if (res.status < 300) accepted++
        else expect(res.headers.get('content-type')).toContain('application/problem+json')
      }
    }
    // Strict bodies refuse the `__proto__` key too; nothing leaks onto Object.prototype.
    expect(accepted).toBe(0)
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
    expect(await rowCounts()).toEqual(before)
  })

  it('refuses JSON nested deeper than 32 levels with 422 (it would exhaust the stack), accepts 32', async () => {
    const nest = (n: number) => `${'{"a":'.repeat(n)}1${'}'.repeat(n)}`
    const deep = `{"name":"deep","type":"t","payload":${nest(20_000)}}`
    const res = await h.call('POST', '/api/v1/tasks', { raw: deep, headers: { 'content-type': 'application/json' } })
    expectProblem(res, 413, 'payload_too_large') // 100 KB over this file's 4 KiB limit
    const big = await createHarness({}, h.database)
    const refused = await big.call('POST', '/api/v1/tasks', {
      raw: deep,
      headers: { 'content-type': 'application/json' },
    })
    expect(refused.status).toBe(422)
    expect(refused.body.errors[0]).toMatchObject({ path: 'body.payload', message: 'nested deeper than 32 levels' })
    const ok = await big.call('POST', '/api/v1/tasks', {
      raw: `{"name":"ok","type":"t","scheduledAt":"2099-01-01T00:00:00Z","payload":${nest(31)}}`,
      headers: { 'content-type': 'application/json' },
    })
    expect(ok.status).toBe(201)
  })

  it('refuses malformed path ids and query values with 422, not 500', async () => {
    for (const path of [
      '/api/v1/tasks/1',
      '/api/v1/agents/%00',
      "/api/v1/tasks/'; drop table tasks;--",
      '/api/v1/tasks?limit=abc',
    ]) {
      const res = await h.call('GET', path)
      expect(res.status, path).toBe(422)
    }
  })
})

describe('headers on every response', () => {
  it('sets X-Request-Id (echoing a sane incoming one) and security headers', async () => {
    const res = await h.call('GET', '/api/v1/health/liveness', { token: null })
    expect(res.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/)
    expect(res.headers.get('x-content-type-options')).toBe('nosniff')
    expect(res.headers.get('x-frame-options')).toBe('SAMEORIGIN')
    const echoed = await h.call('GET', '/api/v1/health/liveness', {
      token: null,
      headers: { 'x-request-id': 'trace-123' },
    })
    expect(echoed.headers.get('x-request-id')).toBe('trace-123')
    const evil = await h.call('GET', '/api/v1/health/liveness', {
      token: null,
      headers: { 'x-request-id': 'a b\tc<script>' },
    })
    expect(evil.headers.get('x-request-id')).not.toContain('<')
  })

  it('allows CORS only from CORS_ORIGINS', async () => {
    const ok = await h.call('OPTIONS', '/api/v1/tasks', {
      token: null,
      headers: { origin: 'https://ops.example.com', 'access-control-request-method': 'POST' },
    })
    expect(ok.status).toBe(204)
    expect(ok.headers.get('access-control-allow-origin')).toBe('https://ops.example.com')
    const other = await h.call('GET', '/api/v1/tasks', { headers: { origin: 'https://evil.example' } })
    expect(other.headers.get('access-control-allow-origin')).toBeNull()
  })
})

describe('a database that is not there', () => {
  it('answers 503 problem, not 500, when the database is closed', async () => {
    const db = await freshDatabase()
    const dead = await createHarness({}, db)
    await db.close()
    const res = await dead.call('GET', '/api/v1/agents')
    expectProblem(res, 503, 'service_unavailable')
    expect(res.headers.get('retry-after')).toBe('1')
    const health = await dead.call('GET', '/api/v1/health', { token: null })
    expect(health.status).toBe(503)
    expect(health.body.status).toBe('down')
  })
})
