/**
 * Cloudflare Workers entry: the same app as Node and Bun, on the Neon serverless driver, or
 * on node-postgres through a Hyperdrive binding named HYPERDRIVE when there is one (then
 * any Postgres can be behind it, and DATABASE_URL is not needed).
 * Settings come from `[vars]` and secrets (DATABASE_URL, SECRET_KEY, REDIS_URL), validated
 * once per isolate. Workers may not share I/O objects between requests, so every request
 * and every cron run gets its own database pool, closed with `waitUntil` once the answer
 * is out. The cron trigger runs the same sweep as the Node/Bun timer.
 */
import type { ExecutionContext, ExportedHandler, ScheduledController } from '@cloudflare/workers-types'
import type { Context } from 'hono'
import { createApp } from './app'
import type { Database } from './db/client'
import { hyperdriveDatabase } from './db/hyperdrive'
import { neonDatabase } from './db/neon'
import { isDatabaseUnavailable } from './db/tx'
import { type Config, loadConfig } from './env'
import { systemClock } from './lib/clock'
import { problemBody } from './lib/errors'
import { type Kv, MemoryKv, MemoryRateLimiter } from './lib/kv'
import { createLogger, describeError, type Logger } from './lib/logger'
import { RedisKv } from './lib/redis'
import { StallWatch } from './lib/stalls'
import { MigrationGate } from './services/migrations'
import { runSweep, sweepFailure } from './services/scheduler'

/** `[vars]` and secrets are strings; a Hyperdrive binding is an object with its connection string. */
export type Env = Record<string, string | undefined> & { HYPERDRIVE?: { connectionString: string } }

// workers-types and the DOM lib describe the same Request/Response with different types;
// these two casts bridge them at the edge and nowhere else.
type CfResponse = Awaited<ReturnType<NonNullable<ExportedHandler<Env>['fetch']>>>
const toCf = (res: Response) => res as unknown as CfResponse

type Isolate = {
  config: Config
  logger: Logger
  app: ReturnType<typeof createApp>
  migrations: MigrationGate
  /** Why the last cron run did not sweep ('' when it did), so each change is logged once. */
  sweepProblem: string
  /** A database for one request or cron run: Hyperdrive's when bound, else the Neon pool. */
  connect: () => Database
}
type PerRequest = { database: Database; kv: Kv }
/**
 * Without REDIS_URL: rate-limit counters per isolate (plain data may be shared), but a bus
 * per request, since a stream's waiting promise must not be resolved from another request;
 * streams then wake on their 2 s re-read.
 */
const isolateLimiter = new MemoryRateLimiter()
/** What this isolate's requests and cron runs noticed of the database being unreachable. */
const stalls = new StallWatch()
let isolate: Isolate | undefined

function boot(env: Env): Isolate {
  if (isolate) return isolate
  // No in-process timer on Workers: the cron trigger runs the sweep.
  const { HYPERDRIVE: hyperdrive, ...settings } = env
  const config = { ...loadConfig(settings), sweepIntervalSeconds: 0 }
  if (!config.secretKey)
    throw new Error('invalid setting SECRET_KEY: required on Workers (wrangler secret put SECRET_KEY)')
  if (hyperdrive !== undefined && typeof hyperdrive?.connectionString !== 'string') {
    throw new Error('invalid binding HYPERDRIVE: not a Hyperdrive binding ([[hyperdrive]] in wrangler.toml)')
  }
  if (!hyperdrive && !/^postgres(ql)?:\/\//i.test(config.databaseUrl)) {
    // Only the scheme is shown: the rest of the URL may hold a password.
    const scheme = /^[a-z][a-z0-9+.-]+:(\/\/)?/i.exec(config.databaseUrl)?.[0]
    const given = !config.databaseUrl ? 'is unset' : scheme ? `"${scheme}…" is not a Postgres URL` : 'is not a URL'
    throw new Error(
      `invalid setting DATABASE_URL: ${given}; Workers take postgres:// or postgresql:// (or a HYPERDRIVE binding, [[hyperdrive]] in wrangler.toml)`,
    )
  }
  const logger = createLogger({ level: config.logLevel, format: config.logFormat })
  // The Worker never migrates: until `npm run db:migrate` has run, requests answer 503
  // database_not_migrated and the cron leaves the sweep alone.
  const migrations = new MigrationGate()
  const app = createApp({
    config,
    logger,
    migrations,
    // One per isolate: what its requests noticed of the database being unreachable.
    stalls,
    clock: systemClock,
    startedAt: new Date(),
    // Per request: the pool (and Redis client) fetch() made for it, handed over in the Hono env.
    database: (c: Context) => (c.env as PerRequest).database,
    kv: (c: Context) => (c.env as PerRequest).kv,
  })
  const connect = hyperdrive
    ? () => hyperdriveDatabase(hyperdrive.connectionString)
    : () => neonDatabase(config.databaseUrl, config.neonWsProxy)
  isolate = { config, logger, app, migrations, sweepProblem: '', connect }
  return isolate
}

/**
 * The key-value services for one request or cron run: a Redis client of its own (Workers
 * cannot share I/O), which waits for its connection and delivers invalidations before the
 * answer (it cannot keep missed ones for later); without Redis, in-memory.
 */
function requestKv(config: Config, logger: Logger): Kv {
  return config.redisUrl
    ? new RedisKv(config.redisUrl, {
        logger,
        queueWhileConnecting: true,
        invalidateTimeoutMs: 2000,
        maxTtlMs: Math.max(config.cacheTtlSeconds, config.authCacheTtlSeconds) * 1000,
      })
    : new MemoryKv(isolateLimiter)
}

export default {
  async fetch(request, env, ctx) {
    let booted: Isolate
    try {
      booted = boot(env)
    } catch (err) {
      // A bad setting: say which, without leaking values, and keep answering so probes see it.
      const detail = err instanceof Error ? err.message : 'invalid configuration'
      const body = problemBody('misconfigured', detail, {}, new URL(request.url).pathname)
      return toCf(
        new Response(JSON.stringify(body), {
          status: body.status,
          headers: { 'content-type': 'application/problem+json', 'retry-after': '30' },
        }),
      )
    }
    const { config, logger } = booted
    // Answers that go on after the handler returns (event streams) keep the pool open.
    const holds: Promise<unknown>[] = []
    const database: Database = {
      ...booted.connect(),
      hold: (work) => {
        holds.push(work)
      },
    }
    const kv = requestKv(config, logger)
    try {
      return toCf(await booted.app.fetch(request as unknown as Request, { database, kv } satisfies PerRequest, ctx))
    } finally {
      ctx.waitUntil(Promise.allSettled(holds).then(() => Promise.allSettled([database.close(), kv.close()])))
    }
  },

  async scheduled(_controller: ScheduledController, env: Env, ctx: ExecutionContext) {
    const booted = boot(env)
    const { config, logger, migrations } = booted
    const database = booted.connect()
    // The sweep drops cached copies of what it changes, so it needs Redis when the requests use it.
    const kv = requestKv(config, logger)
    const paused = (reason: string, err?: unknown) => {
      if (reason !== booted.sweepProblem) {
        logger.warn('sweep paused', { reason, trigger: 'cron', ...(err ? { error: describeError(err) } : {}) })
      }
      booted.sweepProblem = reason
    }
    const started = Date.now()
    const sweep = async () => {
      if (!(await migrations.isCurrent(database.db))) {
        return paused('the database lacks migrations this version needs: run `npm run db:migrate`')
      }
      const s = await runSweep({ db: database.db, clock: systemClock, config, kv, stalls })
      if (booted.sweepProblem) logger.info('sweep resumed', { after: booted.sweepProblem, trigger: 'cron' })
      booted.sweepProblem = ''
      logger.info('sweep', { ...s, trigger: 'cron' })
    }
    ctx.waitUntil(
      sweep()
        .catch((err: unknown) => {
          if (isDatabaseUnavailable(err)) stalls.deaf(started)
          paused(sweepFailure(err, migrations), err)
        })
        .finally(() => Promise.allSettled([database.close(), kv.close()])),
    )
  },
} satisfies ExportedHandler<Env>
