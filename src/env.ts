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

/**
 * Every setting, written once: its name, its type and bounds, its default and what it is
 * for. `Config` (what the rest of the service reads: the same names in camelCase) and the
 * mapping to it are derived from this schema.
 */
const settings = {
  APP_NAME: z.string().min(1).default('AgenticCP Agent'),
  APP_VERSION: z.string().min(1).default('0.1.0'),
  DEBUG: bool.default(false),
  ENVIRONMENT: z.enum(environments).default('development'),
  HOST: z.string().min(1).default('0.0.0.0'),
  PORT: int(0, 65535).default(8000),
  /** Empty: the embedded database in `<dataDir>/pglite` (Node, Bun). */
  DATABASE_URL: z.string().default(''),
  /** Node/Bun: the embedded database and the development secret live here. */
  DATA_DIR: z.string().min(1).default('.data'),
  /** Node/Bun with a Postgres server: apply pending migrations at start (under an advisory lock). */
  MIGRATE_ON_START: bool.default(true),
  /** Node/Bun with a Postgres server: most connections the process's pool opens. */
  DATABASE_POOL_MAX: int(1, 1000).default(10),
  REDIS_URL: z.string().default(''),
  /** Workers only, local and CI: host:port of a WebSocket→TCP proxy to a plain Postgres. */
  NEON_WS_PROXY: z
    .string()
    .regex(/^[\w.-]+:\d+$/, 'must be host:port')
    .or(z.literal(''))
    .default(''),
  /** Empty only in development/test when the entry point generates one for the process. */
  SECRET_KEY: z
    .string()
    .default('')
    .refine((v) => v === '' || v.length >= 32, 'must be at least 32 characters'),
  ALGORITHM: z.enum(['HS256', 'HS384', 'HS512']).default('HS256'),
  ACCESS_TOKEN_EXPIRE_MINUTES: int(1, 525_600).default(60),
  AGENT_TOKEN_EXPIRE_MINUTES: int(1, 5_256_000).default(525_600),
  /** Tokens of people and services (admin, operator, viewer) living longer than this are refused. */
  MAX_TOKEN_LIFETIME_MINUTES: int(1, 5_256_000).optional(),
  /** Agent tokens living longer than this are refused. */
  MAX_AGENT_TOKEN_LIFETIME_MINUTES: int(1, 5_256_000).optional(),
  /** The longest a registration token may be made to live (MAX_REGISTRATION_TOKEN_LIFETIME_MINUTES). */
  MAX_REGISTRATION_TOKEN_LIFETIME_MINUTES: int(1, 5_256_000).default(525_600),
  HEARTBEAT_INTERVAL_SECONDS: int(1, 3600).default(30),
  HEARTBEAT_TIMEOUT_SECONDS: int(2, 86_400).default(90),
  /** Most heartbeats written by one statement (natural batching); 1 writes each alone. */
  HEARTBEAT_BATCH_SIZE: int(1, 256).default(64),
  /** Most heartbeat statements in flight at once per process; a heartbeat arriving then joins the next batch. */
  HEARTBEAT_BATCHES_IN_FLIGHT: int(1, 64).default(2),
  /** Most task creates (POST /tasks) written by one statement (natural batching); 1 writes each alone. */
  CREATE_BATCH_SIZE: int(1, 1000).default(64),
  /** Most create batches in flight at once per process; a create arriving then joins the next batch. */
  CREATE_BATCHES_IN_FLIGHT: int(1, 64).default(1),
  /** Assigned tasks not started within this go back to pending. */
  ASSIGN_TIMEOUT_SECONDS: int(1, 86_400).default(60),
  /** A running task whose cancel its agent has not confirmed within this becomes cancelled. */
  CANCEL_GRACE_SECONDS: int(1, 86_400).default(60),
  RETRY_BACKOFF_BASE_SECONDS: int(0, 3600).default(5),
  RETRY_BACKOFF_MAX_SECONDS: int(0, 86_400).default(300),
  /** How many times a task may lose its agent before it stays failed. */
  MAX_LOST_COUNT: int(1, 1000).default(5),
  /**
   * Automatic quarantine: an agent whose last this many ended attempts all failed (within
   * QUARANTINE_WINDOW_SECONDS, on at least 3 tasks) is quarantined, unless the tasks fail
   * everywhere; 0 turns it off. At most 20 (the streak an agent keeps).
   */
  QUARANTINE_AFTER_FAILURES: int(0, 20).default(5),
  /** How recent those failed attempts must all be. */
  QUARANTINE_WINDOW_SECONDS: int(1, 86_400).default(600),
  /** How long an automatic quarantine lasts (the sweep releases it). */
  QUARANTINE_MINUTES: int(1, 525_600).default(30),
  /** In-process sweep timer (Node, Bun); 0 turns it off. */
  SWEEP_INTERVAL_SECONDS: int(0, 3600).default(5),
  /** Most pending tasks one placement batch considers. */
  SWEEP_BATCH_SIZE: int(100, 100_000).default(10_000),
  /** Write requests per minute per token subject; 0 turns the limit off. */
  RATE_LIMIT_PER_MINUTE: int(0, 1_000_000).default(6000),
  /** Longest a cached agent or task lives in Redis (writes drop it sooner). */
  CACHE_TTL_SECONDS: int(1, 3600).default(30),
  /** Longest a cached agent auth row lives in Redis: the bound on how long a rotated or deleted agent's old token may still work on an instance that could not hear the invalidation (its Redis connection was cut). */
  AUTH_CACHE_TTL_SECONDS: int(1, 3600).default(5),
  MAX_BODY_BYTES: int(1024, 64 * 1024 * 1024).default(1024 * 1024),
  CORS_ORIGINS: csv.default([]),
  /** Events older than this are deleted by the sweep; 0 keeps them forever. */
  EVENT_RETENTION_DAYS: int(0, 36_500).default(30),
  /** Task log chunks older than this are pruned by the sweep (0: kept). */
  LOG_RETENTION_DAYS: int(0, 36_500).default(30),
  TASK_LOG_MAX_CHUNK_BYTES: int(64, 1024 * 1024).default(64 * 1024),
  TASK_LOG_MAX_CHUNKS_PER_REQUEST: int(1, 10_000).default(500),
  /** Beyond it the oldest middle of an attempt's log is dropped (its first and last lines stay). */
  TASK_LOG_MAX_BYTES_PER_ATTEMPT: int(64 * 1024, 1024 * 1024 * 1024).default(10 * 1024 * 1024),
  /** Open event streams per token subject, per process (429 past it). */
  EVENT_STREAMS_PER_PRINCIPAL: int(1, 100_000).default(100),
  /** Open event streams in all, per process (429 past it). */
  EVENT_STREAMS_MAX: int(1, 1_000_000).default(2000),
  /** When set, GET /metrics wants `Authorization: Bearer <METRICS_TOKEN>`. */
  METRICS_TOKEN: z.string().default(''),
  /** Node/Bun: also append log lines to this file. */
  LOG_FILE: z.string().default(''),
  /** Default `info`, or `debug` when DEBUG is on. */
  LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error', 'silent']).optional(),
  /** Default `text` in development, else `json`. */
  LOG_FORMAT: z.enum(['json', 'text', '']).default(''),
}

/** SNAKE_CASE → camelCase, in types and at run time. */
type Camel<S extends string> = S extends `${infer H}_${infer T}`
  ? `${Lowercase<H>}${Capitalize<Camel<T>>}`
  : Lowercase<S>
type CamelKeys<T> = { [K in keyof T as Camel<K & string>]: T[K] }
const camel = (key: string) => key.toLowerCase().replace(/_([a-z])/g, (_, c: string) => c.toUpperCase())

const schema = z
  .object(settings)
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
  .transform((v) => ({
    ...(Object.fromEntries(Object.entries(v).map(([k, x]) => [camel(k), x])) as CamelKeys<typeof v>),
    // The settings whose value depends on others.
    maxTokenLifetimeMinutes: v.MAX_TOKEN_LIFETIME_MINUTES ?? v.ACCESS_TOKEN_EXPIRE_MINUTES,
    maxAgentTokenLifetimeMinutes: v.MAX_AGENT_TOKEN_LIFETIME_MINUTES ?? v.AGENT_TOKEN_EXPIRE_MINUTES,
    logLevel: v.LOG_LEVEL ?? (v.DEBUG ? 'debug' : 'info'),
    logFormat: v.LOG_FORMAT === '' ? (v.ENVIRONMENT === 'development' ? 'text' : 'json') : v.LOG_FORMAT,
  }))

/** The settings as the service reads them (see `settings` for each one's meaning). */
export type Config = z.output<typeof schema>

export class ConfigError extends Error {
  override name = 'ConfigError'
}

/** Keys this module knows; used to pick them out of a larger environment. */
export const configKeys = Object.keys(settings)

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
  return parsed.data
}
