import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHarness, freshDatabase, type Harness, testRedisUrl } from './harness'

let h: Harness
beforeAll(async () => {
  h = await createHarness()
})
afterAll(async () => {
  await h.close()
})

describe('health', () => {
  it('GET /health reports status, version, environment, uptime and checks', async () => {
    const res = await h.call('GET', '/api/v1/health', { token: null })
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({
      status: 'ok',
      version: h.config.appVersion,
      environment: 'test',
      uptimeSeconds: expect.any(Number),
      checks: {
        database: { status: 'ok', driver: h.database.driver, migrations: 'applied', latencyMs: expect.any(Number) },
        redis: testRedisUrl ? { status: 'ok', latencyMs: expect.any(Number) } : { status: 'disabled' },
      },
    })
  })

  it('liveness, readiness, database and redis probes', async () => {
    expect((await h.call('GET', '/api/v1/health/liveness', { token: null })).body).toEqual({ status: 'ok' })
    expect((await h.call('GET', '/api/v1/health/readiness', { token: null })).body).toEqual({ status: 'ready' })
    expect((await h.call('GET', '/api/v1/health/database', { token: null })).body).toMatchObject({ status: 'ok' })
    expect((await h.call('GET', '/api/v1/health/redis', { token: null })).body).toMatchObject({
      status: testRedisUrl ? 'ok' : 'disabled',
    })
  })

  it('answers the same probes at the old /health… paths, left out of the document', async () => {
    for (const probe of ['', '/liveness', '/readiness', '/database', '/redis']) {
      const seed = await h.call('GET', `/api/v1/health${probe}`, { token: null })
      const alias = await h.call('GET', `/health${probe}`, { token: null })
      expect(alias.status, probe).toBe(seed.status)
      expect(Object.keys(alias.body).sort(), probe).toEqual(Object.keys(seed.body).sort())
    }
    const doc = (await h.call('GET', '/openapi.json', { token: null })).body
    expect(
      Object.keys(doc.paths)
        .filter((p) => p.includes('health'))
        .sort(),
    ).toEqual([
      '/api/v1/health',
      '/api/v1/health/database',
      '/api/v1/health/liveness',
      '/api/v1/health/readiness',
      '/api/v1/health/redis',
    ])
  })

  it('is not ready (503) on a database without the migrations', async () => {
    const bare = await createHarness({}, await freshDatabase({ migrated: false }))
    try {
      const ready = await bare.call('GET', '/api/v1/health/readiness', { token: null })
      expect(ready.status).toBe(503)
      expect(ready.body).toEqual({ status: 'not_ready', reason: 'migrations not applied' })
      const health = await bare.call('GET', '/api/v1/health', { token: null })
      expect(health.status).toBe(503)
      expect(health.body.checks.database).toMatchObject({ status: 'ok', migrations: 'pending' })
      expect((await bare.call('GET', '/api/v1/health/liveness', { token: null })).status).toBe(200)
      // Every API request says why, with 503 (never 500), and writes nothing.
      for (const [method, path, body] of [
        ['GET', '/api/v1/agents', undefined],
        ['POST', '/api/v1/agents', { name: 'x', provider: 'aws' }],
        ['POST', '/api/v1/tasks', { name: 'x', type: 'y' }],
        ['GET', '/metrics', undefined],
      ] as const) {
        const res = await bare.call(method, path, { body })
        expect(res.status, path).toBe(503)
        expect(res.body.code, path).toBe('database_not_migrated')
        expect(res.headers.get('retry-after'), path).toBe('5')
      }
    } finally {
      await bare.close()
    }
  })

  it('answers 503 database_not_migrated when the database falls behind while serving (restored from an old backup)', async () => {
    const behind = await createHarness({}, await freshDatabase())
    try {
      expect((await behind.call('GET', '/api/v1/tasks')).status).toBe(200) // the gate has seen it current
      const { sql } = await import('drizzle-orm')
      await behind.database.db.execute(sql.raw('DROP TABLE tasks CASCADE'))
      await behind.database.db.execute(
        sql.raw(
          'DELETE FROM drizzle.__drizzle_migrations WHERE created_at = (SELECT max(created_at) FROM drizzle.__drizzle_migrations)',
        ),
      )
      const res = await behind.call('GET', '/api/v1/tasks')
      expect(res.status).toBe(503)
      expect(res.body.code).toBe('database_not_migrated')
    } finally {
      await behind.close()
    }
  })

  it('is down (503) when the database is gone, and liveness still answers', async () => {
    const db = await freshDatabase()
    const gone = await createHarness({}, db)
    await db.close()
    expect((await gone.call('GET', '/api/v1/health/readiness', { token: null })).status).toBe(503)
    const dbCheck = await gone.call('GET', '/api/v1/health/database', { token: null })
    expect(dbCheck.status).toBe(503)
    expect(dbCheck.body.status).toBe('down')
    expect((await gone.call('GET', '/api/v1/health/liveness', { token: null })).status).toBe(200)
  })
})

describe('OpenAPI document and docs', () => {
  type Op = {
    operationId?: string
    summary?: string
    security?: unknown[]
    requestBody?: { required?: boolean }
    responses: Record<string, unknown>
  }

  it('is OpenAPI 3.1 with the bearer scheme and every operation documented', async () => {
    const res = await h.call('GET', '/openapi.json', { token: null })
    expect(res.status).toBe(200)
    const doc = res.body
    expect(doc.openapi).toBe('3.1.0')
    expect(doc.components.securitySchemes.bearerAuth).toMatchObject({ type: 'http', scheme: 'bearer' })
    const ops: [string, Op][] = []
    for (const [path, item] of Object.entries(doc.paths as Record<string, Record<string, Op>>)) {
      for (const [method, op] of Object.entries(item)) ops.push([`${method.toUpperCase()} ${path}`, op])
    }
    const ids = ops.map(([, op]) => op.operationId)
    expect(new Set(ids).size).toBe(ops.length)
    expect(ids.sort()).toEqual(
      [
        'createAgent',
        'listAgents',
        'agentHeartbeat',
        'getAgent',
        'updateAgent',
        'setAgentStatus',
        'deleteAgent',
        'rotateAgentToken',
        'drainAgent',
        'resumeAgent',
        'quarantineAgent',
        'releaseAgent',
        'agentActions',
        'createRegistrationToken',
        'listRegistrationTokens',
        'deleteRegistrationToken',
        'listConcurrencyKeys',
        'createTask',
        'createTasks',
        'listTasks',
        'executeTask',
        'getTask',
        'updateTask',
        'reportTaskStatus',
        'deleteTask',
        'cancelTask',
        'retryTask',
        'createRollout',
        'listRollouts',
        'getRollout',
        'listRolloutTargets',
        'waitRollout',
        'pauseRollout',
        'resumeRollout',
        'cancelRollout',
        'retryRollout',
        'writeTaskLogs',
        'taskLogs',
        'runSweep',
        'schedulerStatus',
        'events',
        'taskEvents',
        'agentEvents',
        'agentStatistics',
        'taskStatistics',
        'metrics',
        'dashboard',
        'health',
        'liveness',
        'readiness',
        'databaseHealth',
        'redisHealth',
      ].sort(),
    )
    for (const [name, op] of ops) {
      expect(op.summary, name).toBeTruthy()
      if (name.includes('/api/v1/') && !name.includes('/api/v1/health')) {
        expect(op.security, name).toEqual([{ bearerAuth: [] }])
        for (const status of ['401', '403', '422', '500']) expect(Object.keys(op.responses), name).toContain(status)
        if (op.requestBody) {
          expect(op.requestBody.required, name).toBe(true)
          for (const status of ['400', '413', '415']) expect(Object.keys(op.responses), name).toContain(status)
        }
        if (name.includes('{id}')) expect(Object.keys(op.responses), name).toContain('404')
      }
    }
    expect(Object.keys(doc.paths['/api/v1/agents'].post.responses)).toContain('201')
    expect(Object.keys(doc.paths['/api/v1/agents/{id}'].delete.responses)).toContain('204')
    expect(Object.keys(doc.paths['/api/v1/tasks/{id}/cancel'].post.responses)).toEqual(
      expect.arrayContaining(['200', '202', '409']),
    )
    expect(doc.components.schemas.Problem).toBeDefined()
  })

  it('serves Swagger UI at /docs pointing at the document', async () => {
    const res = await h.call('GET', '/docs', { token: null })
    expect(res.status).toBe(200)
    expect(res.body).toContain('SwaggerUIBundle')
    expect(res.body).toContain('/openapi.json')
  })
})
