import { swaggerUI } from '@hono/swagger-ui'
import { DrizzleQueryError } from 'drizzle-orm'
import type { Context, MiddlewareHandler } from 'hono'
import { cors } from 'hono/cors'
import { HTTPException } from 'hono/http-exception'
import { requestId } from 'hono/request-id'
import { secureHeaders } from 'hono/secure-headers'
import swaggerUiDist from 'swagger-ui-dist/package.json'
import type { Database } from './db/client'
import { isDatabaseUnavailable, pgErrorCode } from './db/tx'
import { TtlCache } from './lib/auth-cache'
import { ApiError, type ErrorCode, type ProblemExtras, problemBody } from './lib/errors'
import { type Kv, MemoryKv } from './lib/kv'
import { describeError } from './lib/logger'
import { LongPolls } from './lib/long-polls'
import { Metrics } from './lib/metrics'
import { LocalNotifier } from './lib/notifier'
import { StallWatch } from './lib/stalls'
import { StreamSlots } from './lib/stream-slots'
import { limitBody } from './middleware/body-limit'
import type { AppBindings, AppDeps } from './middleware/context'
import { createRouter } from './middleware/router'
import { agentsRouter } from './routes/agents/agents.index'
import { concurrencyRouter } from './routes/concurrency/concurrency.index'
import { dashboardRouter } from './routes/dashboard/dashboard.index'
import { eventsRouter } from './routes/events/events.index'
import { healthAliasRouter, healthRouter } from './routes/health/health.index'
import { metricsRouter } from './routes/metrics/metrics.index'
import { registrationTokensRouter } from './routes/registration-tokens/registration-tokens.index'
import { rolloutsRouter } from './routes/rollouts/rollouts.index'
import { schedulerRouter } from './routes/scheduler/scheduler.index'
import { statisticsRouter } from './routes/statistics/statistics.index'
import { logsRouter } from './routes/task-logs/task-logs.index'
import { tasksRouter } from './routes/tasks/tasks.index'
import { CreateWriter } from './services/create-writer'
import { EventFeed } from './services/event-feed'
import { HeartbeatWriter } from './services/heartbeat-writer'
import { LogFeeds } from './services/log-feed'
import { MigrationGate, missingObjectStates, notMigrated } from './services/migrations'
import { recordStalls } from './services/stalls'
import { writeCreates } from './services/tasks'

/**
 * Builds the whole service from its dependencies. Imports nothing runtime-specific:
 * Node, Bun and Workers entry points build `deps` their own way and serve `app.fetch`.
 */
export interface AppInput
  extends Omit<
    AppDeps,
    | 'database'
    | 'kv'
    | 'metrics'
    | 'migrations'
    | 'longPolls'
    | 'streams'
    | 'eventFeed'
    | 'logFeeds'
    | 'authCache'
    | 'stalls'
    | 'heartbeats'
    | 'creates'
  > {
  metrics?: Metrics
  /** The process's stall watch (Node and Bun start its watchdog); one per app when absent. */
  stalls?: StallWatch
  migrations?: MigrationGate
  /** The database, or (Workers) a function giving each request its own. */
  database: Database | ((c: Context) => Database)
  /** Redis-backed or in-process services (default in-process), or a function per request. */
  kv?: Kv | ((c: Context) => Kv)
}

export function createApp(input: AppInput) {
  const { database, kv = new MemoryKv(), ...rest } = input
  const shared = {
    ...rest,
    notifier: input.notifier ?? new LocalNotifier(),
    // Over the process's bus (Redis pub/sub: across instances); Workers' per-request Kv: per isolate.
    longPolls: new LongPolls(typeof kv === 'function' ? undefined : kv),
    metrics: input.metrics ?? new Metrics(),
    migrations: input.migrations ?? new MigrationGate(),
    streams: new StreamSlots(input.config.eventStreamsPerPrincipal, input.config.eventStreamsMax),
    authCache: new TtlCache<{ id: string; tokenVersion: number }>(100_000),
    stalls: input.stalls ?? new StallWatch(),
  }
  // One database and bus for the process: every live event stream shares one reader, and
  // the followers of one task's log one reader of that log.
  const fixed: AppDeps | undefined =
    typeof database !== 'function' && typeof kv !== 'function'
      ? {
          ...shared,
          database,
          kv,
          eventFeed: new EventFeed(database.db, kv, {
            logger: input.logger,
            onRead: () => shared.metrics.eventFeedReads.inc({}),
          }),
          logFeeds: new LogFeeds(database.db, shared.notifier, {
            logger: input.logger,
            onRead: () => shared.metrics.logFeedReads.inc({}),
          }),
          // Concurrent heartbeats written together (a Worker's database is per request: there
          // each heartbeat writes alone, through the same statement).
          heartbeats: new HeartbeatWriter(database.db, input.clock, {
            batchSize: input.config.heartbeatBatchSize,
            inFlight: input.config.heartbeatBatchesInFlight,
            metrics: shared.metrics,
            logger: input.logger,
          }),
          // Concurrent creates written together, likewise.
          creates: new CreateWriter(
            (entries) =>
              writeCreates(
                {
                  db: database.db,
                  clock: input.clock,
                  config: input.config,
                  notifier: shared.notifier,
                  kv,
                  metrics: shared.metrics,
                  logger: input.logger,
                  authCache: shared.authCache,
                  stalls: shared.stalls,
                },
                entries,
              ),
            {
              batchSize: input.config.createBatchSize,
              inFlight: input.config.createBatchesInFlight,
              metrics: shared.metrics,
              logger: input.logger,
            },
          ),
        }
      : undefined
  const resolve = (c: Context): AppDeps => ({
    ...shared,
    database: typeof database === 'function' ? database(c) : database,
    kv: typeof kv === 'function' ? kv(c) : kv,
  })
  const app = createRouter()
  const { config } = shared

  app.use(requestId())
  app.use(async (c, next) => {
    c.set('deps', fixed ?? resolve(c))
    c.set('logger', shared.logger.child({ requestId: c.var.requestId }))
    c.var.logger.debug('request started', { method: c.req.method, path: c.req.path })
    const started = performance.now()
    const startedWall = Date.now()
    await next()
    // Agents could not reach the database through this request: a stall of the service from
    // when it began, until a request gets through again (then written, for the sweep).
    const { stalls } = shared
    if (c.var.databaseUnreachable) stalls.deaf(startedWall)
    else if (stalls.isDeaf && c.res.status < 500) {
      stalls.heard()
      await recordStalls(c.var.deps.database.db, stalls).catch(() => {})
    }
    const ms = Math.round((performance.now() - started) * 10) / 10
    const status = c.res.status
    // The route pattern, never the raw path, keeps metric labels few.
    const route = status === 404 && c.req.routePath === '/*' ? 'unmatched' : c.req.routePath
    const labels = { method: c.req.method, route, status: String(status) }
    shared.metrics.httpRequests.inc(labels)
    shared.metrics.httpDuration.observe(labels, ms / 1000)
    const line = { method: c.req.method, route, path: c.req.path, status, durationMs: ms }
    if (status >= 500) c.var.logger.error('request', line)
    else if (isProbe(c.req.path)) c.var.logger.debug('request', line)
    else c.var.logger.info('request', line)
  })
  app.use(secureHeaders({ crossOriginResourcePolicy: false }))
  if (config.corsOrigins.length > 0) {
    app.use(
      '/api/*',
      cors({
        origin: config.corsOrigins.includes('*') ? '*' : config.corsOrigins,
        allowHeaders: ['Authorization', 'Content-Type', 'If-Match', 'Idempotency-Key', 'X-Request-Id'],
        exposeHeaders: ['ETag', 'Location', 'X-Request-Id', 'Retry-After'],
        maxAge: 600,
      }),
    )
  }
  app.use('/api/*', async (c, next) => {
    if (['POST', 'PUT', 'PATCH'].includes(c.req.method)) {
      const hasBody = (c.req.header('content-length') ?? '0') !== '0' || c.req.header('transfer-encoding') !== undefined
      const type = c.req.header('content-type') ?? ''
      if (hasBody && !/^application\/([\w.-]+\+)?json\s*(;|$)/i.test(type)) {
        throw new ApiError('unsupported_media_type', `Send the body as application/json (got "${type || 'none'}").`)
      }
    }
    await next()
  })
  app.use('/api/*', limitBody({ maxBytes: config.maxBodyBytes }))

  // A database behind the code answers 503 database_not_migrated (the probes report it themselves).
  const gate: MiddlewareHandler<AppBindings> = async (c, next) => {
    if (!isProbe(c.req.path)) await shared.migrations.assert(c.var.deps.database.db)
    await next()
  }
  app.use('/api/v1/*', gate)
  app.use('/metrics', gate)

  const routes = app
    .route('/api/v1', healthRouter)
    .route('/', healthAliasRouter)
    .route('/', metricsRouter)
    .route('/', dashboardRouter)
    .route('/api/v1', statisticsRouter)
    .route('/api/v1', agentsRouter)
    .route('/api/v1', registrationTokensRouter)
    .route('/api/v1', tasksRouter)
    .route('/api/v1', rolloutsRouter)
    .route('/api/v1', logsRouter)
    .route('/api/v1', schedulerRouter)
    .route('/api/v1', concurrencyRouter)
    .route('/api/v1', eventsRouter)

  app.openAPIRegistry.registerComponent('securitySchemes', 'bearerAuth', {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'JWT',
    description:
      'HS256 JWT with sub, role (admin|operator|viewer|agent) and exp; or a registration token (`acpr_…`), which only POST /agents takes.',
  })
  app.doc31('/openapi.json', {
    openapi: '3.1.0',
    info: {
      title: config.appName,
      version: config.appVersion,
      description:
        'Control plane for fleets of worker agents. Errors are application/problem+json with a stable `code`.',
    },
    tags: [
      { name: 'Agents', description: 'Registration, heartbeats, status' },
      { name: 'Registration tokens', description: 'Tokens agents register themselves with' },
      { name: 'Tasks', description: 'Creation, placement, reports, cancel, retry' },
      { name: 'Scheduler', description: 'The sweep: expiry, timeouts, retries, placement' },
      { name: 'Events', description: 'The event log: live stream with resume, and histories' },
      { name: 'Health', description: 'Probes (no token needed)' },
    ],
  })
  app.get(
    '/docs',
    swaggerUI({
      url: '/openapi.json',
      title: `${config.appName} API`,
      persistAuthorization: true,
      // Served by this app when the runtime can read the vendored files, else from the CDN,
      // pinned to the version installed here so the page never changes under the document.
      ...(shared.assets ? { baseUrl: '/docs/vendor' } : { version: swaggerUiDist.version }),
    }),
  )
  if (shared.assets) {
    const assets = shared.assets
    app.get('/docs/vendor/swagger-ui-dist/:file', async (c) => {
      const asset = await assets(c.req.param('file'))
      if (!asset) throw new ApiError('not_found', 'No such asset.')
      c.header('Content-Type', asset.contentType)
      c.header('Cache-Control', 'public, max-age=86400')
      return c.body(typeof asset.body === 'string' ? asset.body : new Uint8Array(asset.body))
    })
  }
  app.get('/', (c) =>
    c.json({
      name: config.appName,
      version: config.appVersion,
      docs: '/docs',
      dashboard: '/dashboard',
      openapi: '/openapi.json',
      health: '/api/v1/health',
      api: '/api/v1',
    }),
  )

  app.notFound((c) => problem(c, 'not_found', `No route for ${c.req.method} ${c.req.path}.`))
  app.onError(async (err, c) => {
    // A table or column the database lacks: behind the code (503), unless the migrations
    // are all there, which makes it a bug of ours (500).
    const state = pgErrorCode(err)
    if (state && missingObjectStates.has(state)) {
      shared.migrations.recheck()
      const current = await shared.migrations.isCurrent(c.var.deps.database.db).catch(() => true)
      if (!current) return toProblem(notMigrated(), c)
    }
    return toProblem(err, c)
  })

  return routes
}

export type App = ReturnType<typeof createApp>

const isProbe = (path: string) => /^(\/api\/v1)?\/health(\/|$)/.test(path)

function problem(c: Context<AppBindings>, code: ErrorCode, detail?: string, extras: ProblemExtras = {}) {
  const body = problemBody(code, detail, extras, c.req.path)
  const res = c.json({ ...body, requestId: c.var.requestId }, body.status)
  res.headers.set('Content-Type', 'application/problem+json')
  if (typeof extras.retryAfterSeconds === 'number') res.headers.set('Retry-After', String(extras.retryAfterSeconds))
  if (code === 'unauthorized') res.headers.set('WWW-Authenticate', 'Bearer')
  return res
}

const httpStatusCodes: Record<number, ErrorCode> = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
  429: 'rate_limited',
}

function toProblem(err: Error, c: Context<AppBindings>) {
  if (err instanceof ApiError) return problem(c, err.code, err.detail, err.extras)
  if (err instanceof HTTPException) {
    if (err.status === 400 && /json/i.test(err.message))
      return problem(c, 'malformed_json', 'The body is not valid JSON.')
    const code = httpStatusCodes[err.status]
    if (code) return problem(c, code, err.message || undefined)
  }
  const sqlState = pgErrorCode(err)
  if (sqlState === '23505') return problem(c, 'conflict', 'A unique value is already taken.')
  if (sqlState?.startsWith('22') || sqlState === '54001') {
    return problem(c, 'validation_failed', 'A value is out of range for its field.')
  }
  if (sqlState === '40001' || sqlState === '40P01' || sqlState === '57014' || isDatabaseUnavailable(err)) {
    if (isDatabaseUnavailable(err)) c.set('databaseUnreachable', true)
    c.var.logger.warn('database busy or unreachable', { sqlState, error: describeError(err) })
    const res = problem(c, 'service_unavailable', 'The database is busy or unreachable; try again.')
    res.headers.set('Retry-After', '1')
    return res
  }
  const logger = c.var.logger ?? c.var.deps?.logger
  // A failed query's stack repeats its message, bound values included: leave it out.
  const stack = err instanceof DrizzleQueryError ? undefined : err.stack
  logger?.error('unhandled error', { error: describeError(err), stack, sqlState })
  return problem(c, 'internal_error', 'Something went wrong on our side; the request id names it in our logs.')
}
