import { readFileSync } from 'node:fs'
import pg from 'pg'
import { expect, inject } from 'vitest'
import { createApp } from '../src/app'
import type { Database } from '../src/db/client'
import { connectDatabase } from '../src/db/connect'
import type { Role } from '../src/domain/model'
import { type Config, loadConfig } from '../src/env'
import { ManualClock } from '../src/lib/clock'
import { type Kv, MemoryKv } from '../src/lib/kv'
import { type Logger, silentLogger } from '../src/lib/logger'
import { RedisKv } from '../src/lib/redis'
import type { StallWatch } from '../src/lib/stalls'
import { signToken } from '../src/lib/tokens'
import { runSweep } from '../src/services/scheduler'
import { withDatabase } from './global-setup'

export const SECRET = 'test-secret-that-is-at-least-32-characters-long'

let counter = 0
/** A name no other test uses, so tests never depend on each other's data. */
export const unique = (prefix = 'n') => `${prefix}-${process.pid}-${Date.now().toString(36)}-${++counter}`

export const onPostgres = () => inject('pgAdminUrl') !== ''

/**
 * A fresh, migrated database for one test file: a copy of the run's PGlite snapshot, or a
 * new Postgres database made from the run's template. `migrated: false`: a bare one.
 */
export async function freshDatabase(opts: { migrated?: boolean } = {}): Promise<Database> {
  const migrated = opts.migrated ?? true
  if (onPostgres()) return connectDatabase(await freshPostgresUrl(migrated), { poolMax: 20 })
  const snapshot = readFileSync(inject(migrated ? 'pgliteSnapshot' : 'pgliteBareSnapshot'))
  return connectDatabase('memory://', { loadDataDir: tarBlob(snapshot) })
}

/**
 * The snapshot's bytes as PGlite reads a loadDataDir (its `type` and `arrayBuffer()`, nothing
 * else), without a real Blob: Node 20's Blob hands 40 MB back through its chunked reader,
 * ~1 CPU-second of each fresh database (a third of it), which every test file pays.
 */
function tarBlob(bytes: Buffer): Blob {
  const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength
  const buffer = whole ? bytes.buffer : bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)
  return { type: 'application/x-tar', size: bytes.byteLength, arrayBuffer: async () => buffer } as unknown as Blob
}

/** Postgres only: a new database for this run (dropped by the global teardown), as a URL. */
export async function freshPostgresUrl(migrated = true): Promise<string> {
  const adminUrl = inject('pgAdminUrl')
  const name = `${inject('pgRunPrefix')}_${process.pid}_${++counter}`
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  try {
    await admin.query(
      migrated ? `CREATE DATABASE ${name} TEMPLATE ${inject('pgRunPrefix')}_tpl` : `CREATE DATABASE ${name}`,
    )
  } finally {
    await admin.end()
  }
  return withDatabase(adminUrl, name)
}

export interface CallOptions {
  token?: string | null
  body?: unknown
  /** Sent as is, no JSON encoding (for malformed bodies). */
  raw?: string
  headers?: Record<string, string>
}

export interface CallResult {
  status: number
  headers: Headers
  // Tests read arbitrary response fields; the API's own types are checked by tsc in src/.
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are asserted field by field
  body: any
}

export type Harness = Awaited<ReturnType<typeof createHarness>>

/** Redis for the suite when TEST_REDIS_URL is set (CI): every API test then runs through the cache. */
export const testRedisUrl = process.env.TEST_REDIS_URL ?? ''

export async function createHarness(
  overrides: Record<string, string> = {},
  db?: Database,
  /**
   * queueWhileConnecting: Redis commands wait for the connection (default, so a test's first
   * calls find the cache) or, false, fail at once while Redis is away, as the server's do.
   * logger: where the app logs (default: nowhere).
   */
  opts: { queueWhileConnecting?: boolean; logger?: Logger } = {},
) {
  const database = db ?? (await freshDatabase())
  const clock = new ManualClock(new Date('2026-01-01T00:00:00Z'))
  const config: Config = loadConfig({
    ENVIRONMENT: 'test',
    SECRET_KEY: SECRET,
    LOG_LEVEL: 'silent',
    REDIS_URL: testRedisUrl,
    ...overrides,
  })
  const kv: Kv = config.redisUrl
    ? new RedisKv(config.redisUrl, {
        queueWhileConnecting: opts.queueWhileConnecting ?? true,
        maxTtlMs: Math.max(config.cacheTtlSeconds, config.authCacheTtlSeconds) * 1000,
      })
    : new MemoryKv()
  const app = createApp({ config, database, clock, logger: opts.logger ?? silentLogger, startedAt: new Date(), kv })
  const harnessId = unique('h')

  const tokens = new Map<string, string>()
  // Subjects are unique per harness so rate-limit windows in a shared Redis never collide.
  async function token(role: Exclude<Role, 'agent'>, sub = `test-${role}-${harnessId}`): Promise<string> {
    const key = `${role}:${sub}`
    let t = tokens.get(key)
    if (!t) {
      t = await signToken(config, { sub, role }, 60)
      tokens.set(key, t)
    }
    return t
  }

  async function call(method: string, path: string, opts: CallOptions = {}): Promise<CallResult> {
    const headers: Record<string, string> = { ...opts.headers }
    const auth = opts.token === undefined ? await token('admin') : opts.token
    if (auth) headers.authorization = `Bearer ${auth}`
    let body: string | undefined
    if (opts.raw !== undefined) body = opts.raw
    else if (opts.body !== undefined) {
      body = JSON.stringify(opts.body)
      headers['content-type'] ??= 'application/json'
    }
    const res = await app.request(path, { method, headers, body })
    const text = await res.text()
    let parsed: unknown = text
    if (text && /json/.test(res.headers.get('content-type') ?? '')) parsed = JSON.parse(text)
    return { status: res.status, headers: res.headers, body: parsed }
  }

  /**
   * A label value unique to the running test. Helper-made agents carry it and helper-made
   * tasks require it, so one test's tasks are never placed on another test's agents.
   */
  const scopes = new Map<string, string>()
  function scope(): string {
    const name = expect.getState().currentTestName ?? 'none'
    let s = scopes.get(name)
    if (!s) {
      s = unique('scope')
      scopes.set(name, s)
    }
    return s
  }

  /** Registers an agent and (by default) heartbeats it online; returns the agent and its token. */
  async function agent(input: Record<string, unknown> = {}, opts: { online?: boolean } = {}) {
    const labels = { scope: scope(), ...(input.labels as Record<string, string> | undefined) }
    const res = await call('POST', '/api/v1/agents', {
      body: { name: unique('agent'), provider: 'aws', region: 'us-east-1', maxConcurrentTasks: 2, ...input, labels },
    })
    if (res.status !== 201) throw new Error(`agent create failed: ${res.status} ${JSON.stringify(res.body)}`)
    const { token: agentToken, ...rest } = res.body
    if (opts.online ?? true) {
      const hb = await call('POST', '/api/v1/agents/heartbeat', { token: agentToken, body: { agentId: rest.id } })
      if (hb.status !== 200) throw new Error(`heartbeat failed: ${hb.status} ${JSON.stringify(hb.body)}`)
      return { ...hb.body.agent, token: agentToken as string }
    }
    return { ...rest, token: agentToken as string }
  }

  /** Creates a task (placed at once if one of this test's agents fits and has a slot). */
  async function task(input: Record<string, unknown> = {}) {
    const req = (input.requirements ?? {}) as Record<string, unknown>
    const requirements = { ...req, labels: { scope: scope(), ...(req.labels as Record<string, string> | undefined) } }
    const res = await call('POST', '/api/v1/tasks', {
      body: { name: unique('task'), type: 'test.run', ...input, requirements },
    })
    if (res.status !== 201) throw new Error(`task create failed: ${res.status} ${JSON.stringify(res.body)}`)
    return res.body
  }

  /** A task that stays pending (scheduled far ahead) until something places it explicitly. */
  const pendingTask = (input: Record<string, unknown> = {}) => task({ scheduledAt: '2099-01-01T00:00:00Z', ...input })

  /** Creates a task and places it with execute on `agentId` (or the best agent). */
  async function assignedTask(agentId?: string, input: Record<string, unknown> = {}) {
    const t = await pendingTask(input)
    const res = await call('POST', '/api/v1/tasks/execute', { body: { taskId: t.id, ...(agentId ? { agentId } : {}) } })
    if (res.status !== 200) throw new Error(`execute failed: ${res.status} ${JSON.stringify(res.body)}`)
    return res.body
  }

  async function report(taskId: string, agentToken: string, body: Record<string, unknown>) {
    return call('PATCH', `/api/v1/tasks/${taskId}/status`, { token: agentToken, body })
  }

  async function events(filter: { taskId?: string; agentId?: string }) {
    const { events: table } = await import('../src/db/schema')
    const { and, asc, eq } = await import('drizzle-orm')
    return database.db
      .select()
      .from(table)
      .where(
        and(
          filter.taskId ? eq(table.taskId, filter.taskId) : undefined,
          filter.agentId ? eq(table.agentId, filter.agentId) : undefined,
        ),
      )
      .orderBy(asc(table.id))
  }

  /**
   * The scheduler's sweep, at the harness's clock, through the app's cache (so a task or agent
   * it moves is not answered from a stale cached copy afterwards, as with Redis in CI).
   */
  const sweep = (stalls?: StallWatch) => runSweep({ db: database.db, clock, config, kv, stalls })

  return {
    app,
    config,
    sweep,
    clock,
    database,
    token,
    call,
    agent,
    task,
    pendingTask,
    assignedTask,
    scope,
    report,
    events,
    kv,
    close: async () => {
      await kv.close()
      await database.close()
    },
  }
}
