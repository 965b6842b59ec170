/**
 * Node and Bun entry point: loads settings (environment, then `.dev.vars`), opens the
 * database (embedded PGlite in DATA_DIR by default; a Postgres server is migrated at start
 * unless MIGRATE_ON_START=false), serves the app, and shuts down gracefully on
 * SIGTERM/SIGINT: stop accepting, finish in-flight requests, close the db. Anything that
 * stops the start (a bad setting, a database that is not there, a port in use) is one
 * line naming the setting, and exit code 1; a DATABASE_URL of another kind and a port in
 * use are refused before anything is made.
 */
import { setMaxListeners } from 'node:events'
import { createWriteStream, existsSync, mkdirSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { createApp } from './app'
import { migrationState } from './db/client'
import {
  connectDatabase,
  DatabaseUrlError,
  databaseUrlProblem,
  explainDatabaseError,
  isPostgresUrl,
  pgliteDirectory,
} from './db/connect'
import { DataDirLockedError, lockDataDir } from './db/pglite-lock'
import { type Config, ConfigError, loadConfig } from './env'
import { systemClock } from './lib/clock'
import { DevSecretError, devSecret, devSecretPath } from './lib/dev-secret'
import { type Kv, MemoryKv } from './lib/kv'
import { createLogger, describeError, type Logger } from './lib/logger'
import { Metrics } from './lib/metrics'
import { BusNotifier, LocalNotifier } from './lib/notifier'
import { RedisKv } from './lib/redis'
import { StallWatch } from './lib/stalls'
import { signToken } from './lib/tokens'
import type { AssetLoader } from './middleware/context'
import { MigrationGate } from './services/migrations'
import { startSweepTimer } from './services/scheduler'

/** A start that cannot go on: printed as one line, exit code 1. */
class StartError extends Error {}

declare const Bun:
  | {
      serve(opts: { port: number; hostname: string; fetch: (req: Request) => Response | Promise<Response> }): {
        port: number
        stop(closeActive?: boolean): Promise<void> | void
      }
    }
  | undefined

function settings(): Config {
  if (existsSync('.dev.vars')) process.loadEnvFile('.dev.vars')
  try {
    return loadConfig(process.env)
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`Cannot start: ${err.message}`)
      process.exit(1)
    }
    throw err
  }
}

/** Swagger UI's files from the installed swagger-ui-dist, so /docs works without internet. */
function swaggerAssets(): AssetLoader | undefined {
  let dir: string
  try {
    dir = dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'))
  } catch {
    return undefined
  }
  const types: Record<string, string> = {
    'swagger-ui.css': 'text/css; charset=utf-8',
    'swagger-ui-bundle.js': 'text/javascript; charset=utf-8',
    'swagger-ui-standalone-preset.js': 'text/javascript; charset=utf-8',
    'favicon-32x32.png': 'image/png',
  }
  const cache = new Map<string, Uint8Array>()
  return async (name) => {
    const contentType = types[name]
    if (!contentType) return null
    let body = cache.get(name)
    if (!body) {
      body = new Uint8Array(await readFile(join(dir, name)))
      cache.set(name, body)
    }
    return { body, contentType }
  }
}

/** Log lines to the console and, with LOG_FILE, appended to that file too (its directory made). */
function logWriter(file: string): { write?: (line: string, level: string) => void; flush: () => Promise<void> } {
  if (!file) return { flush: async () => {} }
  mkdirSync(dirname(file), { recursive: true })
  const out = createWriteStream(file, { flags: 'a' })
  return {
    write: (line, level) => {
      if (level === 'error' || level === 'warn') console.error(line)
      else console.log(line)
      out.write(`${line}\n`)
    },
    // The stream writes asynchronously: at exit, wait until every line is in the file.
    flush: () => new Promise<void>((resolve) => out.end(resolve)),
  }
}

async function openDatabase(config: Config, logger: Logger) {
  const embedded = !isPostgresUrl(config.databaseUrl)
  const url = config.databaseUrl || resolve(config.dataDir, 'pglite')
  const dir = embedded ? pgliteDirectory(url) : undefined
  let unlock = () => {}
  try {
    if (dir) {
      mkdirSync(dir, { recursive: true })
      unlock = lockDataDir(dir)
    }
    const migrate = embedded || config.migrateOnStart
    const database = await connectDatabase(url, {
      migrate,
      poolMax: config.databasePoolMax,
      onMigrationWait: () => logger.info('waiting for another instance to finish migrating the database'),
    })
    // A pool connects lazily: ask now, so a database that is not there stops the start.
    const state = await migrationState(database.db)
    const where = embedded ? (url === 'memory://' ? 'in memory' : url) : undefined
    logger.info('database ready', { driver: database.driver, ...(where ? { path: where } : {}), migrated: migrate })
    if (!state.applied) {
      logger.warn(
        'the database lacks migrations this version needs: API requests answer 503 database_not_migrated until `npm run db:migrate` runs (MIGRATE_ON_START=false)',
      )
    }
    const close = database.close
    return {
      ...database,
      close: async () => {
        await close()
        unlock()
      },
    }
  } catch (err) {
    unlock()
    if (err instanceof StartError || err instanceof DataDirLockedError || err instanceof DatabaseUrlError) {
      throw new StartError(err.message)
    }
    throw new StartError(explainDatabaseError(err, url))
  }
}

/** Why listening on HOST:PORT failed, as the one line a start that cannot go on prints. */
function listenError(config: Config, err: unknown): StartError {
  const code = (err as { code?: unknown } | null)?.code
  if (code === 'EADDRINUSE' || /in use/i.test(String(err))) {
    return new StartError(`PORT ${config.port} is already in use on ${config.host}; stop what holds it, or set PORT`)
  }
  return new StartError(`cannot listen on ${config.host}:${config.port} (HOST, PORT): ${describeError(err)}`)
}

/**
 * Binds HOST:PORT for a moment and lets it go, before anything else is done: a port in use
 * (or a HOST this machine does not have) stops the start before the database is opened,
 * which on a first start means building a new embedded database (seconds). PORT=0 (any
 * free port) cannot be taken. The server binds again once the database is ready; a port
 * taken in between is still refused then.
 */
async function checkPort(config: Config): Promise<void> {
  if (config.port === 0) return
  const { createServer } = await import('node:net')
  await new Promise<void>((resolve, reject) => {
    const probe = createServer()
    probe.once('error', (err) => reject(listenError(config, err)))
    probe.listen({ port: config.port, host: config.host, exclusive: true }, () => probe.close(() => resolve()))
  })
}

/** The signing key: SECRET_KEY, or (development) the one kept in DATA_DIR, made on first start. */
function signingKey(config: Config): { config: Config; generated: boolean } {
  if (config.secretKey) return { config, generated: false }
  let key: string | undefined
  try {
    key = devSecret(config.dataDir, true)
  } catch (err) {
    throw new StartError(err instanceof DevSecretError ? err.message : `the development key: ${describeError(err)}`)
  }
  if (!key) {
    throw new StartError(
      `SECRET_KEY is unset and ${devSecretPath(config.dataDir)} holds no usable key; delete that file or set SECRET_KEY`,
    )
  }
  return { config: { ...config, secretKey: key }, generated: true }
}

async function main() {
  const loaded = settings()
  // What can be refused at once is refused before anything is made (a log file, the
  // development key, the database).
  const urlProblem = databaseUrlProblem(loaded.databaseUrl)
  if (urlProblem) throw new StartError(urlProblem)
  await checkPort(loaded)
  const logFile = logWriter(loaded.logFile)
  const logger: Logger = createLogger({ level: loaded.logLevel, format: loaded.logFormat, write: logFile.write })
  // Development only (production refuses to start without SECRET_KEY, see env.ts).
  const { config, generated } = signingKey(loaded)
  const devToken = generated
    ? await signToken(config, { sub: 'dev-admin', role: 'admin' }, config.accessTokenExpireMinutes)
    : undefined

  const database = await openDatabase(config, logger)
  const migrations = new MigrationGate()
  // One registry for the app and the sweep timer, so /metrics counts the timer's sweeps.
  const metrics = new Metrics()
  // Redis when configured: cache, rate limits, and the bus that wakes long-polls on every instance.
  const redis = config.redisUrl
    ? new RedisKv(config.redisUrl, {
        logger,
        maxTtlMs: Math.max(config.cacheTtlSeconds, config.authCacheTtlSeconds) * 1000,
      })
    : undefined
  // Serve once Redis answers, or after 2 s without it (degraded: everything from Postgres).
  if (redis && !(await redis.ready(2000))) logger.warn('redis not reachable at start; serving without it until it is')
  const kv: Kv = redis ?? new MemoryKv()
  const notifier = kv.kind === 'redis' ? new BusNotifier(new LocalNotifier(), kv) : new LocalNotifier()
  const streamsEnd = new AbortController()
  // Every open event stream and log follower listens for the shutdown: no limit is meant.
  setMaxListeners(0, streamsEnd.signal)
  // The watchdog: a paused process (SIGSTOP, a stalled VM) heard no agent meanwhile.
  const stalls = new StallWatch()
  stalls.start()
  const app = createApp({
    stalls,
    shutdown: streamsEnd.signal,
    config,
    database,
    clock: systemClock,
    logger,
    notifier,
    kv,
    migrations,
    metrics,
    assets: swaggerAssets(),
    startedAt: new Date(),
  })

  // Requests still being handled, also those whose client has hung up: shutdown waits for
  // them before closing the database, so none of them fails half-way.
  let inFlight = 0
  let drained: (() => void) | undefined
  let stopping = false
  const handle = async (req: Request) => {
    inFlight++
    try {
      const res = await app.fetch(req)
      // Shutting down: a keep-alive client (an agent's heartbeat loop) must reconnect, and
      // so find the next instance, rather than hold this one open with request after request.
      if (stopping) {
        try {
          res.headers.set('Connection', 'close')
        } catch {} // a response with immutable headers ends its connection as it likes
      }
      return res
    } finally {
      if (--inFlight === 0) drained?.()
    }
  }
  const allDone = () => (inFlight === 0 ? Promise.resolve() : new Promise<void>((r) => (drained = r)))

  let close: () => Promise<void>
  let port: number
  if (typeof Bun !== 'undefined') {
    let server: ReturnType<NonNullable<typeof Bun>['serve']>
    try {
      server = Bun.serve({ port: config.port, hostname: config.host, fetch: handle })
    } catch (err) {
      await database.close()
      throw listenError(config, err)
    }
    port = server.port
    close = async () => {
      await server.stop(false)
    }
  } else {
    const { serve } = await import('@hono/node-server')
    const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
      const s = serve({ fetch: handle, port: config.port, hostname: config.host }, () => resolve(s))
      s.once('error', (err: NodeJS.ErrnoException) => {
        void database.close().finally(() => reject(listenError(config, err)))
      })
    })
    const address = server.address()
    port = typeof address === 'object' && address ? address.port : config.port
    close = () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        // Idle keep-alive sockets would hold close() open; in-flight requests still finish.
        if ('closeIdleConnections' in server) server.closeIdleConnections()
      })
  }

  const stopSweeps = startSweepTimer(
    { db: database.db, clock: systemClock, config, notifier, kv, metrics, stalls },
    logger,
    migrations,
  )

  const shutdown = async (signal: string) => {
    if (stopping) return
    stopping = true
    logger.info('shutting down', { signal })
    const force = setTimeout(() => {
      logger.error('shutdown took over 10 s; exiting')
      process.exit(1)
    }, 10_000)
    force.unref?.()
    notifier.close() // long-polling heartbeats answer now instead of holding the shutdown
    streamsEnd.abort() // and event streams end
    await close()
    await allDone()
    await stopSweeps()
    await database.close()
    await kv.close()
    clearTimeout(force)
    logger.info('stopped')
    await logFile.flush()
    process.exit(0)
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'))
  process.on('SIGINT', () => void shutdown('SIGINT'))

  // Announced only once the signal handlers are in place: whoever waits for this line may
  // send SIGTERM at once.
  const shown = config.host === '0.0.0.0' ? 'localhost' : config.host
  if (devToken) {
    console.log(
      `\nNo SECRET_KEY set: signing with the development key kept in ${devSecretPath(config.dataDir)} (tokens survive restarts).\nAn admin token (valid ${config.accessTokenExpireMinutes} min; \`npm run token\` makes more):\n\n  ${devToken}\n\nPaste it under "Authorize" at http://${shown}:${port}/docs\n`,
    )
  }

  logger.info(`${config.appName} ${config.appVersion} listening`, {
    url: `http://${shown}:${port}`,
    docs: `http://${shown}:${port}/docs`,
    environment: config.environment,
    runtime: typeof Bun !== 'undefined' ? 'bun' : `node ${process.version}`,
    sweepIntervalSeconds: config.sweepIntervalSeconds,
  })
}

main().catch((err) => {
  // A known reason is one line; anything else is described without values or a stack.
  console.error(`Cannot start: ${err instanceof StartError ? err.message : describeError(err)}`)
  process.exit(1)
})
