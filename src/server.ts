/**
 * Node and Bun entry point: loads settings (environment, then `.dev.vars`), connects the
 * database (embedded PGlite by default, migrating it), serves the app, and shuts down
 * gracefully on SIGTERM/SIGINT: stop accepting, finish in-flight requests, close the db.
 */
import { createWriteStream, existsSync, mkdirSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { createApp } from './app'
import { connectDatabase } from './db/connect'
import { type Config, ConfigError, loadConfig } from './env'
import { signToken } from './lib/auth'
import { systemClock } from './lib/clock'
import type { AssetLoader } from './lib/context'
import { type Kv, MemoryKv } from './lib/kv'
import { createLogger, type Logger } from './lib/logger'
import { BusNotifier, LocalNotifier } from './lib/notifier'
import { RedisKv } from './lib/redis'
import { startSweepTimer } from './services/scheduler'

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
function logWriter(file: string) {
  if (!file) return undefined
  mkdirSync(dirname(file), { recursive: true })
  const out = createWriteStream(file, { flags: 'a' })
  return (line: string, level: string) => {
    if (level === 'error' || level === 'warn') console.error(line)
    else console.log(line)
    out.write(`${line}\n`)
  }
}

async function main() {
  let config = settings()
  const logger: Logger = createLogger({
    level: config.logLevel,
    format: config.logFormat,
    write: logWriter(config.logFile),
  })
  let devToken: string | undefined
  if (!config.secretKey) {
    // Development only (production refuses to start without SECRET_KEY, see env.ts).
    const bytes = crypto.getRandomValues(new Uint8Array(32))
    config = { ...config, secretKey: Buffer.from(bytes).toString('base64url') }
    devToken = await signToken(config, { sub: 'dev-admin', role: 'admin' }, config.accessTokenExpireMinutes)
  }

  // PGlite is migrated here; a Postgres server is migrated by `npm run db:migrate` (readiness tells).
  const database = await connectDatabase(config.databaseUrl)
  logger.info('database connected', { driver: database.driver, redis: config.redisUrl ? 'enabled' : 'disabled' })
  // Redis when configured: cache, rate limits, and the bus that wakes long-polls on every instance.
  const redis = config.redisUrl
    ? new RedisKv(config.redisUrl, { logger, maxTtlMs: config.cacheTtlSeconds * 1000 })
    : undefined
  // Serve once Redis answers, or after 2 s without it (degraded: everything from Postgres).
  if (redis && !(await redis.ready(2000))) logger.warn('redis not reachable at start; serving without it until it is')
  const kv: Kv = redis ?? new MemoryKv()
  const notifier = kv.kind === 'redis' ? new BusNotifier(new LocalNotifier(), kv) : new LocalNotifier()
  const streamsEnd = new AbortController()
  const app = createApp({
    shutdown: streamsEnd.signal,
    config,
    database,
    clock: systemClock,
    logger,
    notifier,
    kv,
    assets: swaggerAssets(),
    startedAt: new Date(),
  })

  // Requests still being handled, also those whose client has hung up: shutdown waits for
  // them before closing the database, so none of them fails half-way.
  let inFlight = 0
  let drained: (() => void) | undefined
  const handle = async (req: Request) => {
    inFlight++
    try {
      return await app.fetch(req)
    } finally {
      if (--inFlight === 0) drained?.()
    }
  }
  const allDone = () => (inFlight === 0 ? Promise.resolve() : new Promise<void>((r) => (drained = r)))

  let close: () => Promise<void>
  let port: number
  if (typeof Bun !== 'undefined') {
    const server = Bun.serve({ port: config.port, hostname: config.host, fetch: handle })
    port = server.port
    close = async () => {
      await server.stop(false)
    }
  } else {
    const { serve } = await import('@hono/node-server')
    const server = await new Promise<ReturnType<typeof serve>>((resolve) => {
      const s = serve({ fetch: handle, port: config.port, hostname: config.host }, () => resolve(s))
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

  const stopSweeps = startSweepTimer({ db: database.db, clock: systemClock, config, notifier, kv }, logger)

  const shown = config.host === '0.0.0.0' ? 'localhost' : config.host
  if (devToken) {
    console.log(
      `\nNo SECRET_KEY set: using a random one for this process. An admin token (valid ${config.accessTokenExpireMinutes} min):\n\n  ${devToken}\n\nPaste it under "Authorize" at http://${shown}:${port}/docs\n`,
    )
  }

  logger.info(`${config.appName} ${config.appVersion} listening`, {
    url: `http://${shown}:${port}`,
    docs: `http://${shown}:${port}/docs`,
    environment: config.environment,
    runtime: typeof Bun !== 'undefined' ? 'bun' : `node ${process.version}`,
    sweepIntervalSeconds: config.sweepIntervalSeconds,
  })
  let stopping = false
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
    process.exit(0)
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'))
  process.on('SIGINT', () => void shutdown('SIGINT'))
}

main().catch((err) => {
  console.error(`Cannot start: ${err instanceof Error ? err.message : String(err)}`)
  process.exit(1)
})
