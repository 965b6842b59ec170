import { mkdtempSync, readFileSync } from 'node:fs'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { freshPostgresUrl, onPostgres, testRedisUrl, unique } from './harness'
import { bunBin, migratedDataDir, type Runtime, runtimes, type Spawned, startServer as start, stopped } from './spawn'

const cases = runtimes.flatMap((runtime) =>
  (onPostgres() ? (['embedded', 'postgres'] as const) : (['embedded'] as const)).map(
    (kind) => [runtime, kind] as const,
  ),
)
// Said in the test output, so a run without Bun or Postgres does not pass for one with them.
if (!(runtimes as readonly string[]).includes('bun'))
  console.warn(`skipped: the server under Bun: bun not found at ${bunBin} (npm ci installs it)`)
if (!onPostgres()) console.warn('skipped: the server on Postgres: no Postgres (set TEST_DATABASE_URL=postgres://…)')

interface Server {
  s: Spawned
  url: string
  /** The development admin token the server printed. */
  token: string
  logFile: string
}

/**
 * One server per runtime and database, all started at once before the tests: the HTTP edge
 * tests use the embedded ones first, then the shutdown test ends each. Under Node, the
 * sources under tsx, as `npm start` runs them (the other files start the run's build of
 * them: test/spawn.ts); under Bun, as `npm run start:bun`. Embedded: Node in memory
 * (`DATABASE_URL=memory://`, initdb and migrations at start), Bun on a data directory
 * already migrated (as a restarted `npm run start:bun` finds it; first starts on an empty
 * directory are first-run.test.ts's part).
 */
const servers = new Map<string, Promise<Server>>()
const serverFor = (runtime: Runtime, kind: 'embedded' | 'postgres') => {
  const key = `${runtime} ${kind}`
  let server = servers.get(key)
  if (!server) {
    server = (async () => {
      const database: Record<string, string> =
        kind === 'postgres'
          ? { DATABASE_URL: await freshPostgresUrl() }
          : runtime === 'node'
            ? { DATABASE_URL: 'memory://' }
            : { DATA_DIR: migratedDataDir() }
      const logFile = join(mkdtempSync(join(tmpdir(), 'act-log-')), 'logs', 'agent.log')
      const s = start(
        { ...database, ENVIRONMENT: 'development', LOG_FILE: logFile, LOG_LEVEL: 'debug', REDIS_URL: testRedisUrl },
        runtime === 'node' ? 'tsx' : runtime,
      )
      const url = await s.listening
      const token = /\n {2}(ey[\w.-]+)\n/.exec(s.output().out)?.[1] ?? ''
      return { s, url, token, logFile }
    })()
    servers.set(key, server)
  }
  return server
}

beforeAll(async () => {
  await Promise.all(cases.map(([runtime, kind]) => serverFor(runtime, kind)))
})
afterAll(async () => {
  await Promise.all(
    [...servers.values()].map(async (p) =>
      p.then(
        ({ s }) => stopped(s.child, s.exited),
        () => {},
      ),
    ),
  )
})

describe.each(runtimes)('HTTP edges of the server under %s', (runtime) => {
  it('answers a 2 MiB body with a 413 a keep-alive client can read, and the connection stays usable', async () => {
    const { url, token } = await serverFor(runtime, 'embedded')
    const { Client } = await import('undici')
    const client = new Client(url) // one connection: every request below goes over the same socket
    try {
      const big = JSON.stringify({ name: 'big', type: 't', payload: { blob: 'a'.repeat(2 * 1024 * 1024) } })
      for (let i = 0; i < 3; i++) {
        const refused = await client.request({
          path: '/api/v1/tasks',
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          body: big,
        })
        expect(refused.statusCode).toBe(413)
        expect(((await refused.body.json()) as { code: string }).code).toBe('payload_too_large')
        const next = await client.request({
          path: '/api/v1/tasks',
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ name: `after-${i}`, type: 't' }),
        })
        expect(next.statusCode).toBe(201)
        await next.body.text()
        // The same body sent chunked (no Content-Length): counted as it is read.
        const chunked = await client.request({
          path: '/api/v1/tasks',
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          body: Readable.from(
            (function* () {
              for (let at = 0; at < big.length; at += 64 * 1024) yield big.slice(at, at + 64 * 1024)
            })(),
          ),
        })
        expect(chunked.statusCode).toBe(413)
        expect(((await chunked.body.json()) as { code: string }).code).toBe('payload_too_large')
      }
    } finally {
      await client.close()
    }
  })
})

describe.each(cases)('the server under %s (%s database)', (runtime, kind) => {
  it('serves the API and docs offline, then shuts down gracefully on SIGTERM, finishing in-flight requests', async () => {
    const { s, url, token, logFile } = await serverFor(runtime, kind)
    try {
      expect(s.output().out).toContain(runtime === 'bun' ? '"runtime":"bun"' : '"runtime":"node v')
      expect(token, 'the dev admin token is printed').toBeTruthy()

      const health = await fetch(`${url}/api/v1/health`)
      expect(health.status).toBe(200)
      const checks = (await health.json()).checks
      expect(checks.database.driver).toBe(kind === 'postgres' ? 'node-postgres' : 'pglite')
      expect(checks.redis.status).toBe(testRedisUrl ? 'ok' : 'disabled')
      const docs = await (await fetch(`${url}/docs`)).text()
      expect(docs).toContain('/docs/vendor/swagger-ui-dist/swagger-ui-bundle.js')
      const css = await fetch(`${url}/docs/vendor/swagger-ui-dist/swagger-ui.css`)
      expect(css.status).toBe(200)
      expect(css.headers.get('content-type')).toContain('text/css')

      // A request whose body is still arriving when SIGTERM lands must still be answered.
      // Each step waits for the server to say it got there (no fixed sleeps).
      // Its request id tells its log lines from those of the requests before it.
      const body = JSON.stringify({ name: 'in-flight', type: 'shutdown.test' })
      const requestId = unique('in-flight')
      const req = request(`${url}/api/v1/tasks`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${token}`,
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          'x-request-id': requestId,
        },
      })
      const answered = new Promise<{ status: number; text: string }>((resolve, reject) => {
        req.on('response', (res) => {
          let text = ''
          res.on('data', (d) => {
            text += d
          })
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }))
        })
        req.on('error', reject)
      })
      req.write(body.slice(0, 10))
      await s.waitFor(
        new RegExp(`^(?=.*"msg":"request started")(?=.*"requestId":"${requestId}").*"path":"/api/v1/tasks"`, 'm'),
      )
      s.child.kill('SIGTERM')
      await s.waitFor(/"msg":"shutting down"/)
      req.end(body.slice(10))
      const res = await answered
      expect(res.status).toBe(201)
      expect(JSON.parse(res.text).name).toBe('in-flight')
      expect(await s.exited).toBe(0)
      expect(s.output().out).toContain('"msg":"stopped"')
      // LOG_FILE got the same JSON lines: one per request, with its id, and never a token.
      const logged = readFileSync(logFile, 'utf8')
      const lines = logged
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l))
      const created = lines.find((l) => l.msg === 'request' && l.requestId === requestId)
      expect(created).toMatchObject({
        method: 'POST',
        route: '/api/v1/tasks',
        status: 201,
        durationMs: expect.any(Number),
      })
      expect(lines.every((l) => typeof l.requestId === 'string' || l.msg !== 'request')).toBe(true)
      expect(logged).not.toContain(token)
      await expect(fetch(`${url}/api/v1/health/liveness`)).rejects.toThrow()
    } finally {
      await stopped(s.child, s.exited)
    }
  })
})

// Each starts a process of its own that exits at once: run together.
describe.concurrent('refusing to start', () => {
  it('in production without SECRET_KEY, naming the setting', async ({ expect }) => {
    const s = start({ ENVIRONMENT: 'production', DATABASE_URL: 'memory://' })
    expect(await s.exited).toBe(1)
    expect(s.output().err).toMatch(/SECRET_KEY: is required when ENVIRONMENT=production/)
  })

  it('on a bad value, in one line naming it', async ({ expect }) => {
    const s = start({ PORT: 'eighty' })
    expect(await s.exited).toBe(1)
    const lines = s.output().err.trim().split('\n')
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/^Cannot start: invalid setting PORT/)
  })
})
