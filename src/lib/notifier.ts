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
