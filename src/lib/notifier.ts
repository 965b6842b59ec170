/**
 * Wakes agents' long-polling heartbeats when work lands on them. A hint only: a missed
 * notification costs latency, never correctness, because a waiting heartbeat also
 * re-reads the database every few seconds. In-process here; a Redis-backed twin can fan
 * the same calls out across instances.
 */
export interface WorkNotifier {
  /** Call after the transaction that gave these agents work has committed. */
  notify(agentIds: Iterable<string>): void
  /** Resolves true when notified, false after `ms`, on abort, or when closed. */
  wait(agentId: string, ms: number, signal?: AbortSignal): Promise<boolean>
  /** Releases every waiter and makes later waits return at once (shutdown). */
  close(): void
  readonly closed: boolean
}

export class LocalNotifier implements WorkNotifier {
  private waiters = new Map<string, Set<(woken: boolean) => void>>()
  closed = false

  notify(agentIds: Iterable<string>): void {
    for (const id of new Set(agentIds)) {
      const set = this.waiters.get(id)
      if (!set) continue
      this.waiters.delete(id)
      for (const wake of set) wake(true)
    }
  }

  wait(agentId: string, ms: number, signal?: AbortSignal): Promise<boolean> {
    if (this.closed || signal?.aborted || ms <= 0) return Promise.resolve(false)
    return new Promise((resolve) => {
      const set = this.waiters.get(agentId) ?? new Set()
      this.waiters.set(agentId, set)
      const done = (woken: boolean) => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        set.delete(done)
        if (set.size === 0 && this.waiters.get(agentId) === set) this.waiters.delete(agentId)
        resolve(woken)
      }
      const onAbort = () => done(false)
      const timer = setTimeout(() => done(false), ms)
      signal?.addEventListener('abort', onAbort, { once: true })
      set.add(done)
    })
  }

  close(): void {
    this.closed = true
    for (const set of this.waiters.values()) for (const wake of set) wake(false)
    this.waiters.clear()
  }
}

/**
 * The notifier across instances: wakes this process's waiters and publishes the agent
 * ids on the bus (Redis pub/sub), so a heartbeat long-polling on another instance wakes
 * too. Use it only with a shared bus; with the in-process bus, LocalNotifier is enough.
 */
export class BusNotifier implements WorkNotifier {
  private readonly unsubscribe: () => void
  constructor(
    private readonly local: LocalNotifier,
    private readonly bus: {
      publish(channel: string, message: string): Promise<void>
      subscribe(channel: string, h: (m: string) => void): () => void
    },
    private readonly channel = 'agenticcp:work',
  ) {
    this.unsubscribe = bus.subscribe(channel, (message) => {
      try {
        const ids = JSON.parse(message) as unknown
        if (Array.isArray(ids)) local.notify(ids.filter((x): x is string => typeof x === 'string'))
      } catch {
        // not ours: ignore
      }
    })
  }

  get closed(): boolean {
    return this.local.closed
  }

  notify(agentIds: Iterable<string>): void {
    const list = [...new Set(agentIds)]
    if (list.length === 0) return
    this.local.notify(list)
    void this.bus.publish(this.channel, JSON.stringify(list))
  }

  wait(agentId: string, ms: number, signal?: AbortSignal): Promise<boolean> {
    return this.local.wait(agentId, ms, signal)
  }

  close(): void {
    this.unsubscribe()
    this.local.close()
  }
}
