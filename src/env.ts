import { z } from 'zod'

/**
 * Every setting the service reads, validated once per entry point. Nothing else reads
 * `process.env` or Worker bindings: entry points call `loadConfig` and hand the typed
 * result to `createApp`.
 */

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no', 'on', 'off', ''])
  .transform((v) => ['true', '1', 'yes', 'on'].includes(v))

const int = (min: number, max: number) =>
  z.coerce
    .number({ error: 'must be a number' })
    .int('must be a whole number')
    .min(min, `must be at least ${min}`)
    .max(max, `must be at most ${max}`)

const csv = z.string().transform((v) =>
  v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean),
)

export const environments = ['development', 'test', 'staging', 'production'] as const

const schema = z
  .object({
    APP_NAME: z.string().min(1).default('AgenticCP Agent'),
    APP_VERSION: z.string().min(1).default('0.1.0'),
    DEBUG: bool.default(false),
    ENVIRONMENT: z.enum(environments).default('development'),
    HOST: z.string().min(1).default('0.0.0.0'),
    PORT: int(0, 65535).default(8000),
    DATABASE_URL: z.string().default(''),
    DATA_DIR: z.string().min(1).default('.data'),
    MIGRATE_ON_START: bool.default(true),
    REDIS_URL: z.string().default(''),
    NEON_WS_PROXY: z
      .string()
      .regex(/^[\w.-]+:\d+$/, 'must be host:port')
      .or(z.literal(''))
      .default(''),
    SECRET_KEY: z
      .string()
      .default('')
      .refine((v) => v === '' || v.length >= 32, 'must be at least 32 characters'),
    ALGORITHM: z.enum(['HS256', 'HS384', 'HS512']).default('HS256'),
    ACCESS_TOKEN_EXPIRE_MINUTES: int(1, 525_600).default(60),
    AGENT_TOKEN_EXPIRE_MINUTES: int(1, 5_256_000).default(525_600),
    MAX_TOKEN_LIFETIME_MINUTES: int(1, 5_256_000).optional(),
    MAX_AGENT_TOKEN_LIFETIME_MINUTES: int(1, 5_256_000).optional(),
    MAX_REGISTRATION_TOKEN_LIFETIME_MINUTES: int(1, 5_256_000).default(525_600),
    HEARTBEAT_INTERVAL_SECONDS: int(1, 3600).default(30),
    HEARTBEAT_TIMEOUT_SECONDS: int(2, 86_400).default(90),
    ASSIGN_TIMEOUT_SECONDS: int(1, 86_400).default(60),
    CANCEL_GRACE_SECONDS: int(1, 86_400).default(60),
    RETRY_BACKOFF_BASE_SECONDS: int(0, 3600).default(5),
    RETRY_BACKOFF_MAX_SECONDS: int(0, 86_400).default(300),
    MAX_LOST_COUNT: int(1, 1000).default(5),
    SWEEP_INTERVAL_SECONDS: int(0, 3600).default(5),
    SWEEP_BATCH_SIZE: int(100, 100_000).default(10_000),
    RATE_LIMIT_PER_MINUTE: int(0, 1_000_000).default(6000),
    CACHE_TTL_SECONDS: int(1, 3600).default(30),
    AUTH_CACHE_TTL_SECONDS: int(1, 3600).default(5),
    MAX_BODY_BYTES: int(1024, 64 * 1024 * 1024).default(1024 * 1024),
    CORS_ORIGINS: csv.default([]),
    EVENT_RETENTION_DAYS: int(0, 36_500).default(30),
    LOG_RETENTION_DAYS: int(0, 36_500).default(30),
    TASK_LOG_MAX_CHUNK_BYTES: int(64, 1024 * 1024).default(64 * 1024),
    TASK_LOG_MAX_CHUNKS_PER_REQUEST: int(1, 10_000).default(500),
    TASK_LOG_MAX_BYTES_PER_ATTEMPT: int(64 * 1024, 1024 * 1024 * 1024).default(10 * 1024 * 1024),
    EVENT_STREAMS_PER_PRINCIPAL: int(1, 100_000).default(100),
    EVENT_STREAMS_MAX: int(1, 1_000_000).default(2000),
    METRICS_TOKEN: z.string().default(''),
    LOG_FILE: z.string().default(''),
    LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error', 'silent']).default('info'),
    LOG_FORMAT: z.enum(['json', 'text', '']).default(''),
  })
  .superRefine((v, ctx) => {
    if (v.ENVIRONMENT === 'production' && v.SECRET_KEY === '') {
      ctx.addIssue({
        code: 'custom',
        path: ['SECRET_KEY'],
        message: 'is required when ENVIRONMENT=production',
      })
    }
    if (v.RETRY_BACKOFF_MAX_SECONDS < v.RETRY_BACKOFF_BASE_SECONDS) {
      ctx.addIssue({
        code: 'custom',
        path: ['RETRY_BACKOFF_MAX_SECONDS'],
        message: 'must be at least RETRY_BACKOFF_BASE_SECONDS',
      })
    }
    if (v.MAX_TOKEN_LIFETIME_MINUTES !== undefined && v.MAX_TOKEN_LIFETIME_MINUTES < v.ACCESS_TOKEN_EXPIRE_MINUTES) {
      ctx.addIssue({
        code: 'custom',
        path: ['MAX_TOKEN_LIFETIME_MINUTES'],
        message: 'must be at least ACCESS_TOKEN_EXPIRE_MINUTES (or the service would refuse its own tokens)',
      })
    }
    if (
      v.MAX_AGENT_TOKEN_LIFETIME_MINUTES !== undefined &&
      v.MAX_AGENT_TOKEN_LIFETIME_MINUTES < v.AGENT_TOKEN_EXPIRE_MINUTES
    ) {
      ctx.addIssue({
        code: 'custom',
        path: ['MAX_AGENT_TOKEN_LIFETIME_MINUTES'],
        message: 'must be at least AGENT_TOKEN_EXPIRE_MINUTES (or the service would refuse its own tokens)',
      })
    }
    if (v.HEARTBEAT_TIMEOUT_SECONDS <= v.HEARTBEAT_INTERVAL_SECONDS) {
      ctx.addIssue({
        code: 'custom',
        path: ['HEARTBEAT_TIMEOUT_SECONDS'],
        message: 'must be greater than HEARTBEAT_INTERVAL_SECONDS',
      })
    }
  })

export type Environment = (typeof environments)[number]

export interface Config {
  appName: string
  appVersion: string
  debug: boolean
  environment: Environment
  host: string
  port: number
  /** Empty: the embedded database in `<dataDir>/pglite` (Node, Bun). */
  databaseUrl: string
  /** Node/Bun: the embedded database and the development secret live here. */
  dataDir: string
  /** Node/Bun with a Postgres server: apply pending migrations at start (under an advisory lock). */
  migrateOnStart: boolean
  redisUrl: string
  /** Workers only, local and CI: host:port of a WebSocket→TCP proxy to a plain Postgres. */
  neonWsProxy: string
  /** Empty only in development/test when the entry point generates one for the process. */
  secretKey: string
  algorithm: 'HS256' | 'HS384' | 'HS512'
  accessTokenExpireMinutes: number
  agentTokenExpireMinutes: number
  /** Tokens of people and services (admin, operator, viewer) living longer than this are refused. */
  maxTokenLifetimeMinutes: number
  /** The longest a registration token may be made to live (MAX_REGISTRATION_TOKEN_LIFETIME_MINUTES). */
  maxRegistrationTokenLifetimeMinutes: number
  /** Agent tokens living longer than this are refused. */
  maxAgentTokenLifetimeMinutes: number
  heartbeatIntervalSeconds: number
  heartbeatTimeoutSeconds: number
  /** Assigned tasks not started within this go back to pending. */
  assignTimeoutSeconds: number
  /** A running task whose cancel its agent has not confirmed within this becomes cancelled. */
  cancelGraceSeconds: number
  retryBackoffBaseSeconds: number
  retryBackoffMaxSeconds: number
  /** How many times a task may lose its agent before it stays failed. */
  maxLostCount: number
  /** In-process sweep timer (Node, Bun); 0 turns it off. */
  sweepIntervalSeconds: number
  /** Most pending tasks one placement batch considers. */
  sweepBatchSize: number
  /** Write requests per minute per token subject; 0 turns the limit off. */
  rateLimitPerMinute: number
  /** Longest a cached agent or task lives in Redis (writes drop it sooner). */
  cacheTtlSeconds: number
  /**
   * Longest a cached agent auth row lives in Redis: the bound on how long a rotated or
   * deleted agent's old token may still work on an instance that could not hear the
   * invalidation (its Redis connection was cut).
   */
  authCacheTtlSeconds: number
  maxBodyBytes: number
  corsOrigins: string[]
  /** Events older than this are deleted by the sweep; 0 keeps them forever. */
  eventRetentionDays: number
  /** Task log chunks older than this are pruned by the sweep (0: kept). */
  logRetentionDays: number
  taskLogMaxChunkBytes: number
  taskLogMaxChunksPerRequest: number
  /** Beyond it the oldest middle of an attempt's log is dropped (its first and last lines stay). */
  taskLogMaxBytesPerAttempt: number
  /** Open event streams per token subject, per process (429 past it). */
  eventStreamsPerPrincipal: number
  /** Open event streams in all, per process (429 past it). */
  eventStreamsMax: number
  /** When set, GET /metrics wants `Authorization: Bearer <METRICS_TOKEN>`. */
  metricsToken: string
  /** Node/Bun: also append log lines to this file. */
  logFile: string
  logLevel: 'debug' | 'info' | 'warn' | 'error' | 'silent'
  logFormat: 'json' | 'text'
}

export class ConfigError extends Error {
  override name = 'ConfigError'
}

/** Keys this module knows; used to pick them out of a larger environment. */
export const configKeys = Object.keys(schema.shape)

/**
 * Parses settings from a flat string record (process.env or Worker bindings).
 * Throws a ConfigError whose message is one line per bad setting, naming it.
 */
export function loadConfig(source: Record<string, string | undefined>): Config {
  const picked: Record<string, string> = {}
  for (const key of configKeys) {
    const value = source[key]
    if (typeof value === 'string' && value !== '') picked[key] = value
  }
  const parsed = schema.safeParse(picked)
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => {
      const key = String(issue.path[0] ?? 'config')
      const shown = key === 'SECRET_KEY' ? '' : picked[key] !== undefined ? ` (got "${picked[key]}")` : ''
      return `invalid setting ${key}${shown}: ${issue.message}`
    })
    throw new ConfigError(lines.join('\n'))
  }
  const v = parsed.data
  return {
    appName: v.APP_NAME,
    appVersion: v.APP_VERSION,
    debug: v.DEBUG,
    environment: v.ENVIRONMENT,
    host: v.HOST,
    port: v.PORT,
    databaseUrl: v.DATABASE_URL,
    dataDir: v.DATA_DIR,
    migrateOnStart: v.MIGRATE_ON_START,
    redisUrl: v.REDIS_URL,
    neonWsProxy: v.NEON_WS_PROXY,
    secretKey: v.SECRET_KEY,
    algorithm: v.ALGORITHM,
    accessTokenExpireMinutes: v.ACCESS_TOKEN_EXPIRE_MINUTES,
    agentTokenExpireMinutes: v.AGENT_TOKEN_EXPIRE_MINUTES,
    maxTokenLifetimeMinutes: v.MAX_TOKEN_LIFETIME_MINUTES ?? v.ACCESS_TOKEN_EXPIRE_MINUTES,
    maxRegistrationTokenLifetimeMinutes: v.MAX_REGISTRATION_TOKEN_LIFETIME_MINUTES,
    maxAgentTokenLifetimeMinutes: v.MAX_AGENT_TOKEN_LIFETIME_MINUTES ?? v.AGENT_TOKEN_EXPIRE_MINUTES,
    heartbeatIntervalSeconds: v.HEARTBEAT_INTERVAL_SECONDS,
    heartbeatTimeoutSeconds: v.HEARTBEAT_TIMEOUT_SECONDS,
    assignTimeoutSeconds: v.ASSIGN_TIMEOUT_SECONDS,
    cancelGraceSeconds: v.CANCEL_GRACE_SECONDS,
    retryBackoffBaseSeconds: v.RETRY_BACKOFF_BASE_SECONDS,
    retryBackoffMaxSeconds: v.RETRY_BACKOFF_MAX_SECONDS,
    maxLostCount: v.MAX_LOST_COUNT,
    sweepIntervalSeconds: v.SWEEP_INTERVAL_SECONDS,
    sweepBatchSize: v.SWEEP_BATCH_SIZE,
    rateLimitPerMinute: v.RATE_LIMIT_PER_MINUTE,
    cacheTtlSeconds: v.CACHE_TTL_SECONDS,
    authCacheTtlSeconds: v.AUTH_CACHE_TTL_SECONDS,
    maxBodyBytes: v.MAX_BODY_BYTES,
    corsOrigins: v.CORS_ORIGINS,
    eventRetentionDays: v.EVENT_RETENTION_DAYS,
    logRetentionDays: v.LOG_RETENTION_DAYS,
    taskLogMaxChunkBytes: v.TASK_LOG_MAX_CHUNK_BYTES,
    taskLogMaxChunksPerRequest: v.TASK_LOG_MAX_CHUNKS_PER_REQUEST,
    taskLogMaxBytesPerAttempt: v.TASK_LOG_MAX_BYTES_PER_ATTEMPT,
    eventStreamsPerPrincipal: v.EVENT_STREAMS_PER_PRINCIPAL,
    eventStreamsMax: v.EVENT_STREAMS_MAX,
    metricsToken: v.METRICS_TOKEN,
    logFile: v.LOG_FILE,
    // DEBUG=true turns on debug logs unless LOG_LEVEL says otherwise.
    logLevel: v.DEBUG && picked.LOG_LEVEL === undefined ? 'debug' : v.LOG_LEVEL,
    logFormat: v.LOG_FORMAT === '' ? (v.ENVIRONMENT === 'development' ? 'text' : 'json') : v.LOG_FORMAT,
  }
}
