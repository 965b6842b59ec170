import { Redis } from 'ioredis'
import { type Kv, type KvHealth, MemoryRateLimiter, type RateLimitResult } from './kv'
import type { Logger } from './logger'

/**
 * Kv on Redis through ioredis. Every call is bounded by a short timeout and falls back
 * when Redis does not answer (cache → load from Postgres, rate limit → in-process
 * counters, publish → dropped: listeners re-read the database anyway). ioredis reconnects
 * on its own; commands are not queued while it is away, so nothing piles up.
 */
export interface RedisKvOptions {
  /** Longest a cache/limiter call may wait on Redis before falling back. */
  timeoutMs?: number
  /**
   * Queue commands until connected. Off for a long-lived server (commands fail fast while
   * Redis is away); on for a per-request client (Workers), whose first command would
   * otherwise always find the connection still opening.
   */
  queueWhileConnecting?: boolean
  /** The longest TTL any cached value gets (to know when stale copies are surely gone). */
  maxTtlMs?: number
  /**
   * How long an invalidation may wait (default: timeoutMs). Longer for a per-request client
   * (Workers), which cannot keep missed invalidations for later: it must deliver them now.
   */
  invalidateTimeoutMs?: number
  logger?: Logger
}

// If the generation counter still reads what the loader saw before reading Postgres,
// no write has invalidated the key since: store the value. Otherwise drop it.
const SET_IF_UNCHANGED = `
local gen = redis.call('GET', KEYS[2]) or '0'
if gen == ARGV[2] then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3]) return 1 end
return 0`

// Give every key a new generation (so in-flight loads will not store) and drop the value.
// Generations come from one global counter, so an expired generation key can never come
// back with a value a slow reader already saw.
const INVALIDATE = `
for i = 1, #KEYS do
  local g = redis.call('INCR', 'agenticcp:generation')
  redis.call('SET', 'gen:' .. KEYS[i], g, 'PX', ARGV[1])
  redis.call('DEL', KEYS[i])
end
return #KEYS`

const FIXED_WINDOW = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('PTTL', KEYS[1])}`

class TimeoutError extends Error {}

const MAX_PENDING = 100_000

export class RedisKv implements Kv {
  readonly kind = 'redis' as const
  private client: Redis
  private subscriber: Redis | undefined
  private handlers = new Map<string, Set<(m: string) => void>>()
  private fallbackLimiter = new MemoryRateLimiter()
  private timeoutMs: number
  private invalidateTimeoutMs: number
  private logger: Logger | undefined
  private lastWarn = 0
  /**
   * Invalidations Redis did not take (it was unreachable). Until they are delivered, this
   * instance reads around the cache, so its clients never see a copy older than a write
   * they saw acknowledged. Past `MAX_PENDING` keys it stops counting and reads around the
   * cache until every cached value has expired.
   */
  private pending = new Set<string>()
  private bypassUntil = 0
  private maxTtlMs: number

  constructor(
    private readonly url: string,
    opts: RedisKvOptions = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? 250
    this.invalidateTimeoutMs = opts.invalidateTimeoutMs ?? this.timeoutMs
    this.maxTtlMs = opts.maxTtlMs ?? 3_600_000
    this.logger = opts.logger
    this.client = new Redis(url, { ...RedisKv.options(), enableOfflineQueue: opts.queueWhileConnecting ?? false })
    this.client.on('error', (err) => this.warn('redis unavailable', err))
    this.client.on('ready', () => void this.deliverPending())
  }

  /** Sends the invalidations Redis missed; true when none are left. */
  private async deliverPending(): Promise<boolean> {
    if (this.pending.size === 0) {
      if (Date.now() < this.bypassUntil) return false
      this.bypassUntil = 0
      return true
    }
    const list = [...this.pending]
    try {
      await this.bounded(this.client.eval(INVALIDATE, list.length, ...list, 60_000))
      for (const k of list) this.pending.delete(k)
      return this.pending.size === 0 && Date.now() >= this.bypassUntil
    } catch {
      return false
    }
  }

  private static options() {
    return {
      lazyConnect: false,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      connectTimeout: 1000,
      // Keep trying forever, at most every 2 s: Redis coming back is picked up by itself.
      retryStrategy: (times: number) => Math.min(100 * times, 2000),
    }
  }

  private warn(msg: string, err: unknown) {
    // One line per 10 s at most while Redis is away; never the URL (it may hold a password).
    if (Date.now() - this.lastWarn < 10_000) return
    this.lastWarn = Date.now()
    this.logger?.warn(msg, { error: err instanceof Error ? err.message : String(err) })
  }

  private bounded<T>(p: Promise<T>, ms = this.timeoutMs): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined
    const t = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TimeoutError(`redis did not answer in ${ms} ms`)), ms)
    })
    return Promise.race([p, t]).finally(() => clearTimeout(timer))
  }

  async cached<T>(
    key: string,
    ttlMs: number,
    load: () => Promise<T | undefined>,
    decode: (json: string) => T = JSON.parse,
  ): Promise<T | undefined> {
    if ((this.pending.size > 0 || this.bypassUntil > 0) && !(await this.deliverPending())) return load()
    let gen: string
    try {
      const [value, g] = await this.bounded(this.client.mget(key, `gen:${key}`))
      if (value) return decode(value)
      gen = g ?? '0'
    } catch (err) {
      this.warn('redis cache read failed; reading Postgres', err)
      return load()
    }
    const loaded = await load()
    if (loaded !== undefined) {
      try {
        await this.bounded(this.client.eval(SET_IF_UNCHANGED, 2, key, `gen:${key}`, JSON.stringify(loaded), gen, ttlMs))
      } catch (err) {
        this.warn('redis cache write failed', err)
      }
    }
    return loaded
  }

  async invalidate(keys: Iterable<string>): Promise<void> {
    const list = [...new Set(keys)]
    if (list.length === 0) return
    try {
      // Generations outlive any load by far; a minute is plenty.
      await this.bounded(this.client.eval(INVALIDATE, list.length, ...list, 60_000), this.invalidateTimeoutMs)
    } catch (err) {
      this.warn('redis invalidation failed; reading around the cache until it is delivered', err)
      for (const k of list) this.pending.add(k)
      if (this.pending.size > MAX_PENDING) {
        this.pending.clear()
        this.bypassUntil = Date.now() + this.maxTtlMs
      }
    }
  }

  async publish(channel: string, message: string): Promise<void> {
    try {
      await this.bounded(this.client.publish(channel, message))
    } catch (err) {
      this.warn('redis publish failed', err)
    }
    // Local subscribers hear it even when Redis is away.
    if (this.client.status !== 'ready') for (const h of this.handlers.get(channel) ?? []) h(message)
  }

  subscribe(channel: string, handler: (message: string) => void): () => void {
    if (!this.subscriber) {
      this.subscriber = new Redis(this.url, { ...RedisKv.options(), enableOfflineQueue: true })
      this.subscriber.on('error', (err) => this.warn('redis subscriber unavailable', err))
      this.subscriber.on('message', (ch: string, msg: string) => {
        for (const h of this.handlers.get(ch) ?? []) h(msg)
      })
    }
    let set = this.handlers.get(channel)
    if (!set) {
      set = new Set()
      this.handlers.set(channel, set)
      // ioredis re-subscribes by itself after a reconnect.
      this.subscriber.subscribe(channel).catch((err) => this.warn('redis subscribe failed', err))
    }
    set.add(handler)
    return () => set.delete(handler)
  }

  async rateLimit(key: string, limit: number, windowMs: number): Promise<RateLimitResult> {
    try {
      const windowKey = `${key}:${Math.floor(Date.now() / windowMs)}`
      const [n, ttl] = (await this.bounded(this.client.eval(FIXED_WINDOW, 1, windowKey, windowMs))) as [number, number]
      return { allowed: n <= limit, retryAfterMs: Math.max(ttl, 0), remaining: Math.max(0, limit - n) }
    } catch (err) {
      this.warn('redis rate limit failed; counting in process', err)
      return this.fallbackLimiter.hit(key, limit, windowMs)
    }
  }

  /** Waits (at most `ms`) for the first connection; false if Redis is not there yet. */
  async ready(ms: number): Promise<boolean> {
    if (this.client.status === 'ready') return true
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer)
        this.client.off('ready', onReady)
        resolve(ok)
      }
      const onReady = () => done(true)
      const timer = setTimeout(() => done(false), ms)
      this.client.on('ready', onReady)
    })
  }

  async health(): Promise<KvHealth> {
    const started = performance.now()
    try {
      await this.bounded(this.client.ping())
      return { status: 'ok', latencyMs: Math.round((performance.now() - started) * 100) / 100 }
    } catch (err) {
      return {
        status: 'down',
        latencyMs: Math.round(performance.now() - started),
        error: err instanceof Error ? err.message.slice(0, 200) : 'unreachable',
      }
    }
  }

  async close(): Promise<void> {
    this.handlers.clear()
    await Promise.allSettled([this.client.quit(), this.subscriber?.quit()])
    this.client.disconnect()
    this.subscriber?.disconnect()
  }
}
