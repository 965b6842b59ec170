import type { RouteConfig, RouteHandler } from '@hono/zod-openapi'
import type { Context } from 'hono'
import type { Database } from '../db/client'
import type { Principal } from '../domain/model'
import type { Config } from '../env'
import type { TtlCache } from '../lib/auth-cache'
import type { Clock } from '../lib/clock'
import type { Kv } from '../lib/kv'
import type { Logger } from '../lib/logger'
import type { LongPolls } from '../lib/long-polls'
import type { Metrics } from '../lib/metrics'
import type { WorkNotifier } from '../lib/notifier'
import type { StallWatch } from '../lib/stalls'
import type { StreamSlots } from '../lib/stream-slots'
import type { CreateWriter } from '../services/create-writer'
import type { EventFeed } from '../services/event-feed'
import type { HeartbeatWriter } from '../services/heartbeat-writer'
import type { LogFeeds } from '../services/log-feed'
import type { MigrationGate } from '../services/migrations'

/**
 * What every route and middleware reads from the request context: the app's dependencies
 * (built once by an entry point) and who the request acts as.
 */

/** Serves a vendored static file (Swagger UI assets); absent on runtimes without a filesystem. */
export type AssetLoader = (name: string) => Promise<{ body: Uint8Array | string; contentType: string } | null>

/** Everything the app needs, built once by an entry point and handed in. */
export interface AppDeps {
  config: Config
  database: Database
  clock: Clock
  logger: Logger
  assets?: AssetLoader
  /** Wakes long-polling heartbeats; createApp makes an in-process one when absent. */
  notifier?: WorkNotifier
  /** One long-polling heartbeat per agent: a newer one ends the older (per app, and across instances over a shared bus). */
  longPolls: LongPolls
  /** Cache, bus and rate-limit store: Redis when configured, else in-process. */
  kv: Kv
  /** Prometheus metrics of this process; createApp makes them when absent. */
  metrics: Metrics
  /** Process start, for `uptimeSeconds`. */
  startedAt?: Date
  /** Aborted when the process shuts down: long-lived answers (event streams) end then. */
  shutdown?: AbortSignal
  /** Whether the database has this build's migrations; createApp makes one when absent. */
  migrations: MigrationGate
  /** Caps on open event streams (per app: a process, or a Workers isolate). */
  streams: StreamSlots
  /** The one reader of the event log behind every live stream; absent on Workers (one per stream). */
  eventFeed?: EventFeed
  /** One reader per followed task log attempt, shared by its followers; absent on Workers (one per follower). */
  logFeeds?: LogFeeds
  /** Without Redis: agents' token versions, for AUTH_CACHE_TTL_SECONDS (per app). */
  authCache: TtlCache<{ id: string; tokenVersion: number }>
  /** What this process (or isolate) noticed of the service's stalls; createApp makes one when absent. */
  stalls: StallWatch
  /** Writes concurrent heartbeats together (one database for the app); absent on Workers. */
  heartbeats?: HeartbeatWriter
  /** Writes concurrent creates together (one database for the app); absent on Workers. */
  creates?: CreateWriter
}

export interface AppBindings {
  Variables: {
    deps: AppDeps
    requestId: string
    principal: Principal
    logger: Logger
    /** Set when the request failed because the database could not be reached. */
    databaseUnreachable?: boolean
  }
}

export type AppRouteHandler<R extends RouteConfig> = RouteHandler<R, AppBindings>

/** What services take from a request: the database, the clock and the settings. */
export const serviceDeps = (c: Context<AppBindings>) => ({
  db: c.var.deps.database.db,
  clock: c.var.deps.clock,
  config: c.var.deps.config,
  notifier: c.var.deps.notifier,
  kv: c.var.deps.kv,
  metrics: c.var.deps.metrics,
  logger: c.var.logger,
  authCache: c.var.deps.authCache,
  stalls: c.var.deps.stalls,
  heartbeats: c.var.deps.heartbeats,
  creates: c.var.deps.creates,
})
