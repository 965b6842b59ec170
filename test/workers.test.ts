import { type ChildProcess, spawn } from 'node:child_process'
import { rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { sign } from 'hono/jwt'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { writeHyperdriveConfig } from '../scripts/hyperdrive-local'
import { connectDatabase } from '../src/db/connect'
import { freshPostgresUrl, onPostgres, testRedisUrl } from './harness'
import { until } from './until'

/** The Worker under wrangler dev is slow to start and to answer on a busy machine. */
const patient = { timeoutMs: 60_000, everyMs: 250 }

/**
 * The Worker (src/worker.ts) under `wrangler dev` (workerd, offline), reaching this
 * machine's Postgres through the Neon driver and scripts/ws-proxy.ts, driven over HTTP.
 * Runs when TEST_WORKERS=1 and the suite is on Postgres (CI does both).
 */
const enabled = onPostgres() && process.env.TEST_WORKERS === '1'
if (!enabled) {
  const why = [
    process.env.TEST_WORKERS === '1' ? '' : 'TEST_WORKERS=1 is not set',
    onPostgres() ? '' : 'no Postgres (set TEST_DATABASE_URL=postgres://…)',
  ]
  console.warn(`skipped: the Worker under wrangler dev: ${why.filter(Boolean).join(', and ')}`)
}
const SECRET = 'workers-e2e-secret-at-least-32-characters'

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const a = srv.address()
      srv.close(() => resolve(typeof a === 'object' && a ? a.port : 0))
    })
  })
}

const children: ChildProcess[] = []
function run(cmd: string, args: string[], env: Record<string, string> = {}) {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout?.on('data', (d) => {
    out += d
  })
  child.stderr?.on('data', (d) => {
    out += d
  })
  children.push(child)
  return { child, output: () => out }
}

/**
 * `wrangler dev` of the Worker on `port` (with the given config file, default wrangler.toml),
 * the secret and Redis (when the suite has one, ioredis inside workerd) set; resolves once
 * it answers its liveness probe.
 */
async function wranglerDev(port: number, args: string[], config?: string) {
  const w = run(
    process.execPath,
    [
      'node_modules/wrangler/bin/wrangler.js',
      'dev',
      ...(config ? ['-c', config] : []),
      '--ip',
      '127.0.0.1',
      '--port',
      String(port),
      '--test-scheduled',
      '--show-interactive-dev-session=false',
      '--var',
      `SECRET_KEY:${SECRET}`,
      '--var',
      'ENVIRONMENT:test',
      ...(testRedisUrl ? ['--var', `REDIS_URL:${testRedisUrl}`] : []),
      ...args,
    ],
    {
      WRANGLER_SEND_METRICS: 'false',
      CLOUDFLARE_CF_FETCH_ENABLED: 'false',
      XDG_CONFIG_HOME: `${process.cwd()}/.config`,
      CI: '1',
    },
  )
  await until('wrangler dev', async () => (await fetch(`http://127.0.0.1:${port}/api/v1/health/liveness`)).ok, {
    ...patient,
    timeoutMs: 90_000,
  }).catch((err: Error) => {
    throw new Error(`${err.message}\n${w.output().slice(-3000)}`)
  })
  return w
}

let base = ''
let databaseUrl = ''
let wranglerOut: () => string = () => ''
/** What the Worker answered before the database was migrated (it never migrates itself). */
let beforeMigration: { agents: number; code: string; readiness: number; cronLog: string } | undefined
beforeAll(async () => {
  if (!enabled) return
  databaseUrl = await freshPostgresUrl(false)
  const proxyPort = await freePort()
  const port = await freePort()
  run(process.execPath, ['--import', 'tsx', 'scripts/ws-proxy.ts', '--port', String(proxyPort)])
  const w = await wranglerDev(port, [
    '--var',
    `DATABASE_URL:${databaseUrl}`,
    '--var',
    `NEON_WS_PROXY:127.0.0.1:${proxyPort}`,
  ])
  wranglerOut = w.output
  base = `http://127.0.0.1:${port}`
  // Bare database: the Worker refuses politely and its cron leaves the sweep alone; then
  // `npm run db:migrate` (here: the same migrator) runs, and it serves within its recheck.
  const admin = await sign({ sub: 'e2e', role: 'admin', exp: Math.floor(Date.now() / 1000) + 600 }, SECRET)
  const refused = await fetch(`${base}/api/v1/agents`, { headers: { authorization: `Bearer ${admin}` } })
  const readiness = (await fetch(`${base}/api/v1/health/readiness`)).status
  await fetch(`${base}/__scheduled?cron=*+*+*+*+*`)
  const cronLog = await until(
    'the cron to say it paused',
    async () => /sweep paused[^\n]*db:migrate/.exec(wranglerOut())?.[0],
    patient,
  )
  beforeMigration = { agents: refused.status, code: (await refused.json()).code, readiness, cronLog }
  await (await connectDatabase(databaseUrl, { migrate: true })).close()
  await until(
    'the Worker to see the migrations',
    async () =>
      (await fetch(`${base}/api/v1/agents`, { headers: { authorization: `Bearer ${admin}` } })).status === 200,
    patient,
  )
}, 150_000)

afterAll(async () => {
  for (const c of children) c.kill('SIGTERM')
  await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r)))))
})

describe.runIf(enabled)('on Cloudflare Workers (wrangler dev, Neon driver)', () => {
  const now = () => Math.floor(Date.now() / 1000)
  const call = async (method: string, path: string, token: string | null, body?: unknown) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    const text = await res.text()
    return { status: res.status, body: text ? JSON.parse(text) : null }
  }

  it('answers 503 database_not_migrated on a bare database and never migrates it itself', () => {
    expect(beforeMigration).toMatchObject({ agents: 503, code: 'database_not_migrated', readiness: 503 })
  })

  it('serves health, the API and the cron sweep end to end', async () => {
    const admin = await sign({ sub: 'e2e', role: 'admin', exp: now() + 600 }, SECRET)

    const health = await call('GET', '/api/v1/health', null)
    expect(health.status).toBe(200)
    expect(health.body.checks.database).toMatchObject({ status: 'ok', driver: 'neon', migrations: 'applied' })
    expect(health.body.checks.redis.status).toBe(testRedisUrl ? 'ok' : 'disabled')
    expect((await call('GET', '/openapi.json', null)).body.openapi).toBe('3.1.0')

    // An agent that exists but is not online yet, and a task nothing can take now.
    const agent = await call('POST', '/api/v1/agents', admin, {
      name: 'edge-1',
      provider: 'other',
      maxConcurrentTasks: 2,
    })
    expect(agent.status).toBe(201)
    const task = await call('POST', '/api/v1/tasks', admin, { name: 'via-cron', type: 'e2e' })
    expect(task.body).toMatchObject({ status: 'pending', pendingReason: 'no_matching_agent' })

    // Online by an operator (no heartbeat, so no pull): only the cron sweep can place the task.
    await call('PATCH', `/api/v1/agents/${agent.body.id}/status`, admin, { status: 'online' })
    const fired = await fetch(`${base}/__scheduled?cron=*+*+*+*+*`)
    expect(fired.status).toBe(200)
    const placed = await until(
      'the cron sweep to place the task',
      async () => {
        const t = await call('GET', `/api/v1/tasks/${task.body.id}`, admin)
        return t.body.status === 'assigned' ? t.body : undefined
      },
      patient,
    )
    expect(placed).toMatchObject({ agentId: agent.body.id, attempt: 1 })
    const status = await call('GET', '/api/v1/scheduler/status', admin)
    expect(status.body).toMatchObject({ runs: 1, sweepIntervalSeconds: 0, lastSummary: { assigned: 1 } })

    // The agent heartbeats, starts and completes it.
    const hb = await call('POST', '/api/v1/agents/heartbeat', agent.body.token, { agentId: agent.body.id })
    expect(hb.body.assignments.map((t: { id: string }) => t.id)).toEqual([task.body.id])
    const path = `/api/v1/tasks/${task.body.id}/status`
    expect((await call('PATCH', path, agent.body.token, { status: 'running', attempt: 1 })).status).toBe(200)
    const stale = await call('PATCH', path, agent.body.token, { status: 'completed', attempt: 0 })
    expect(stale.body.code).toBe('stale_attempt')
    const done = await call('PATCH', path, agent.body.token, { status: 'completed', attempt: 1, result: { ok: 1 } })
    expect(done.body).toMatchObject({ status: 'completed', result: { ok: 1 } })

    // Cancel: a running task gets a request, the agent ends it.
    const second = await call('POST', '/api/v1/tasks', admin, { name: 'to-cancel', type: 'e2e' })
    expect(second.body.status).toBe('assigned') // placed at once: the agent has a free slot
    await call('PATCH', `/api/v1/tasks/${second.body.id}/status`, agent.body.token, { status: 'running', attempt: 1 })
    const cancel = await call('POST', `/api/v1/tasks/${second.body.id}/cancel`, admin)
    expect(cancel.status).toBe(202)
    const told = await call('POST', '/api/v1/agents/heartbeat', agent.body.token, { agentId: agent.body.id })
    expect(told.body.cancellations).toEqual([second.body.id])
    const ended = await call('PATCH', `/api/v1/tasks/${second.body.id}/status`, agent.body.token, {
      status: 'cancelled',
      attempt: 1,
    })
    expect(ended.body.status).toBe('cancelled')
    expect((await call('GET', `/api/v1/agents/${agent.body.id}`, admin)).body.activeTasks).toBe(0)
    expect(wranglerOut()).toContain('"trigger":"cron"')
  }, 120_000)
})

describe.runIf(enabled)('the Worker when its database connections are killed', () => {
  it('answers only 2xx or 503 while its backends are terminated, and serves again after', async () => {
    const admin = await sign({ sub: 'e2e-faults', role: 'admin', exp: Math.floor(Date.now() / 1000) + 600 }, SECRET)
    const killer = new pg.Client({ connectionString: databaseUrl })
    await killer.connect()
    const statuses = new Map<number, number>()
    const end = Date.now() + 4_000
    let kills = 0
    try {
      const load = async (w: number) => {
        for (let i = 0; Date.now() < end; i++) {
          const res = await fetch(`${base}/api/v1/tasks`, {
            method: 'POST',
            headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
            body: JSON.stringify({ name: `fault-${w}-${i}`, type: 'e2e', scheduledAt: '2099-01-01T00:00:00Z' }),
          }).catch(() => undefined)
          const status = res?.status ?? 0
          await res?.text()
          statuses.set(status, (statuses.get(status) ?? 0) + 1)
        }
      }
      const kill = async () => {
        while (Date.now() < end) {
          await new Promise((r) => setTimeout(r, 300))
          const { rows } = await killer.query<{ n: number }>(
            `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`,
          )
          kills += rows[0]?.n ?? 0
        }
      }
      await Promise.all([kill(), ...[1, 2, 3, 4].map(load)])
    } finally {
      await killer.end()
    }
    console.log(`worker faults: ${kills} backends killed; answers ${JSON.stringify(Object.fromEntries(statuses))}`)
    const bad = [...statuses.keys()].filter((s) => !(s >= 200 && s < 300) && s !== 503)
    expect(bad, JSON.stringify([...statuses])).toEqual([])
    expect(kills).toBeGreaterThan(0)
    const after = await until(
      'the Worker to serve again',
      async () => {
        const res = await fetch(`${base}/api/v1/tasks?limit=1`, { headers: { authorization: `Bearer ${admin}` } })
        return res.status === 200 ? res.status : undefined
      },
      patient,
    )
    expect(after).toBe(200)
  }, 60_000)
})

describe.runIf(enabled)('on Cloudflare Workers behind Hyperdrive (wrangler dev, node-postgres)', () => {
  // The deploy guide's [[hyperdrive]] block, with wrangler's local stand-in for Hyperdrive
  // (localConnectionString: straight to this machine's Postgres; it wants a password, which
  // trust auth ignores). No DATABASE_URL and no WebSocket proxy.
  let hd = ''
  let hdUrl = ''
  let hdOut: () => string = () => ''
  const config = `.wrangler/test-hyperdrive-${process.pid}.toml`
  beforeAll(async () => {
    hdUrl = await freshPostgresUrl(true)
    writeHyperdriveConfig(config, hdUrl)
    const port = await freePort()
    hdOut = (await wranglerDev(port, [], config)).output
    hd = `http://127.0.0.1:${port}`
  }, 120_000)
  afterAll(() => rmSync(config, { force: true }))

  it('serves the API and the cron sweep over the binding, one Postgres session per request', async () => {
    const health = await (await fetch(`${hd}/api/v1/health`)).json()
    expect(health.checks.database).toMatchObject({ status: 'ok', driver: 'hyperdrive', migrations: 'applied' })
    const admin = await sign({ sub: 'e2e-hd', role: 'admin', exp: Math.floor(Date.now() / 1000) + 600 }, SECRET)
    const json = async (method: string, path: string, token: string, body?: unknown) => {
      const res = await fetch(`${hd}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      })
      return { status: res.status, body: await res.json() }
    }
    const agent = await json('POST', '/api/v1/agents', admin, { name: 'hd-1', provider: 'other' })
    expect(agent.status).toBe(201)
    const task = await json('POST', '/api/v1/tasks', admin, { name: 'via-cron', type: 'e2e' })
    expect(task.body.status).toBe('pending')
    await json('PATCH', `/api/v1/agents/${agent.body.id}/status`, admin, { status: 'online' })
    expect((await fetch(`${hd}/__scheduled?cron=*+*+*+*+*`)).status).toBe(200)
    await until(
      'the cron sweep to place the task',
      async () => (await json('GET', `/api/v1/tasks/${task.body.id}`, admin)).body.status === 'assigned',
      patient,
    )
    const hb = await json('POST', '/api/v1/agents/heartbeat', agent.body.token, {
      agentId: agent.body.id,
      reports: [
        { taskId: task.body.id, attempt: 1, status: 'running' },
        { taskId: task.body.id, attempt: 1, status: 'completed', result: { via: 'hyperdrive' } },
      ],
    })
    expect(hb.body.reports.map((r: { ok: boolean }) => r.ok)).toEqual([true, true])
    const done = await json('GET', `/api/v1/tasks/${task.body.id}`, admin)
    expect(done.body).toMatchObject({ status: 'completed', result: { via: 'hyperdrive' } })
    expect(hdOut()).toContain('"trigger":"cron"')

    // Workers share no I/O between requests: every request opens its own connection (here
    // to Postgres itself; deployed, to Hyperdrive in the same location, which pools the origin's).
    const sessions = async () => {
      const c = new pg.Client({ connectionString: hdUrl })
      await c.connect()
      const { rows } = await c.query<{ n: string }>(
        'SELECT sessions::text AS n FROM pg_stat_database WHERE datname = current_database()',
      )
      await c.end()
      return Number(rows[0]?.n)
    }
    const before = await sessions()
    for (let i = 0; i < 10; i++) expect((await json('GET', '/api/v1/tasks?limit=1', admin)).status).toBe(200)
    expect((await sessions()) - before).toBeGreaterThanOrEqual(10)
  }, 120_000)
})

describe('the Worker entry, misconfigured', () => {
  it('answers every request with a problem+json naming the setting, never its value', async () => {
    const { default: worker } = await import('../src/worker')
    const ctx = { waitUntil: () => {}, passThroughOnException: () => {}, props: {} }
    const env = { SECRET_KEY: 'too-short-and-secret', DATABASE_URL: 'postgres://u:pw@db/app' }
    const call = worker.fetch as unknown as (r: Request, e: typeof env, c: typeof ctx) => Promise<Response>
    const res = await call(new Request('http://edge.example/api/v1/agents'), env, ctx)
    expect(res.status).toBe(503)
    expect(res.headers.get('content-type')).toBe('application/problem+json')
    const body = await res.json()
    expect(body).toMatchObject({
      type: 'urn:agenticcp:problem:misconfigured',
      code: 'misconfigured',
      status: 503,
      instance: '/api/v1/agents',
    })
    expect(body.detail).toContain('SECRET_KEY')
    expect(JSON.stringify(body)).not.toContain('too-short-and-secret')
  })

  it('names the URLs DATABASE_URL may be, showing only the scheme of what it is', async () => {
    const { default: worker } = await import('../src/worker')
    const ctx = { waitUntil: () => {}, passThroughOnException: () => {}, props: {} }
    const call = worker.fetch as unknown as (r: Request, e: object, c: typeof ctx) => Promise<Response>
    const takes = 'Workers take postgres:// or postgresql:// (or a HYPERDRIVE binding, [[hyperdrive]] in wrangler.toml)'
    for (const [url, given] of [
      ['mysql://u:pw@db/app', '"mysql://…" is not a Postgres URL'],
      // Once taken for Postgres: only the prefix was checked.
      ['postgresfoo://u:pw@db/app', '"postgresfoo://…" is not a Postgres URL'],
      ['/var/lib/pw@db', 'is not a URL'],
      ['', 'is unset'],
    ]) {
      const res = await call(
        new Request('http://edge.example/api/v1/tasks'),
        { SECRET_KEY: SECRET, DATABASE_URL: url },
        ctx,
      )
      expect(res.status).toBe(503)
      const body = await res.json()
      expect(body.detail).toBe(`invalid setting DATABASE_URL: ${given}; ${takes}`)
      expect(JSON.stringify(body)).not.toContain('pw@db')
    }
  })

  it('says so when HYPERDRIVE is bound to something that is not a Hyperdrive binding', async () => {
    const { default: worker } = await import('../src/worker')
    const ctx = { waitUntil: () => {}, passThroughOnException: () => {}, props: {} }
    const env = { SECRET_KEY: SECRET, HYPERDRIVE: 'postgres://u:pw@db/app' }
    const call = worker.fetch as unknown as (r: Request, e: typeof env, c: typeof ctx) => Promise<Response>
    const res = await call(new Request('http://edge.example/api/v1/tasks'), env, ctx)
    expect(res.status).toBe(503)
    const body = await res.json()
    expect(body.detail).toContain('invalid binding HYPERDRIVE')
    expect(JSON.stringify(body)).not.toContain('pw@db')
  })
})
