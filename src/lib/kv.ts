/**
 * The shared key-value services: a read-through cache, a pub/sub bus and a rate-limit
 * store. Redis (src/lib/redis.ts) when REDIS_URL is set; otherwise the in-process twin
 * below. Redis is an accelerator and a fan-out bus, never the source of truth: every
 * method of the Redis version falls back to Postgres (or to the in-process twin) when
 * Redis does not answer, so losing it degrades and never breaks.
 */
export interface KvHealth {
  status: 'ok' | 'down' | 'disabled'
  latencyMs?: number
  error?: string
}

export interface RateLimitResult {
  allowed: boolean
  /** When the window resets (for Retry-After). */
  retryAfterMs: number
  remaining: number
}

export interface Kv {
  readonly kind: 'redis' | 'memory'
  /**
   * The cached value, or `load()`'s, stored for `ttlMs` unless the key was invalidated
   * while loading (so a slow reader never puts back a value older than a committed write).
   * `undefined` from `load` (not found) is never cached.
   */
  cached<T>(
    key: string,
    ttlMs: number,
    load: () => Promise<T | undefined>,
    decode?: (json: string) => T,
  ): Promise<T | undefined>
  /** Drops keys after a committed write; waits for Redis so the writer's answer follows it. */
  invalidate(keys: Iterable<string>): Promise<void>
  publish(channel: string, message: string): Promise<void>
  subscribe(channel: string, handler: (message: string) => void): () => void
  /** Counts one hit on `key` in a fixed window of `windowMs`. */
  rateLimit(key: string, limit: number, windowMs: number): Promise<RateLimitResult>
  health(): Promise<KvHealth>
  close(): Promise<void>
}

/** Fixed-window counters in process memory, pruned as windows pass. */
export class MemoryRateLimiter {
  private windows = new Map<string, { start: number; count: number }>()
  private lastPrune = 0

  hit(key: string, limit: number, windowMs: number, now = Date.now()): RateLimitResult {
    const start = now - (now % windowMs)
    if (now - this.lastPrune > windowMs) {
      for (const [k, w] of this.windows) if (w.start + windowMs <= now) this.windows.delete(k)
      this.lastPrune = now
    }
    let w = this.windows.get(key)
    if (!w || w.start !== start) {
      w = { start, count: 0 }
      this.windows.set(key, w)
    }
    w.count++
    return { allowed: w.count <= limit, retryAfterMs: start + windowMs - now, remaining: Math.max(0, limit - w.count) }
  }
}

/**
 * The in-process twin. Its cache is a pass-through on purpose: a process-local cache has
 * no way to hear another instance's writes, so it could serve a value older than a write
 * the client already saw acknowledged. The bus reaches this process's subscribers only.
 */
export class MemoryKv implements Kv {
  readonly kind = 'memory' as const
  private handlers = new Map<string, Set<(m: string) => void>>()

  /** `limiter` may be shared by several instances (Workers: one per request, counters per isolate). */
  constructor(private readonly limiter = new MemoryRateLimiter()) {}

  cached<T>(_key: string, _ttlMs: number, load: () => Promise<T | undefined>): Promise<T | undefined> {
    return load()
  }
  async invalidate(): Promise<void> {}
  async publish(channel: string, message: string): Promise<void> {
    for (const h of this.handlers.get(channel) ?? []) h(message)
  }
  subscribe(channel: string, handler: (message: string) => void): () => void {
    const set = this.handlers.get(channel) ?? new Set()
    this.handlers.set(channel, set)
    set.add(handler)
    return () => set.delete(handler)
  }
  async rateLimit(key: string, limit: number, windowMs: number): Promise<RateLimitResult> {
    return this.limiter.hit(key, limit, windowMs)
  }
  async health(): Promise<KvHealth> {
    return { status: 'disabled' }
  }
  async close(): Promise<void> {
    this.handlers.clear()
  }
}

/** Cache keys, in one place. */
export const keys = {
  agentAuth: (id: string) => `agenticcp:agent-auth:${id}`,
  agent: (id: string) => `agenticcp:agent:${id}`,
  task: (id: string) => `agenticcp:task:${id}`,
  agentStats: 'agenticcp:stats:agents',
  taskStats: 'agenticcp:stats:tasks',
}

/** Round-trips a row through JSON: top-level `…At` fields come back as Dates. */
export function reviveRow<T>(json: string): T {
  const row = JSON.parse(json) as Record<string, unknown>
  for (const [k, v] of Object.entries(row)) if (k.endsWith('At') && typeof v === 'string') row[k] = new Date(v)
  return row as T
}
