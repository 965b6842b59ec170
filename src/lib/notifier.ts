/**
 * Wakes agents' long-polling heartbeats when work lands on them. A hint only: a missed
 * notification costs latency, never correctness, because a waiting heartbeat also
 * re-reads the database every few seconds. In-process here; a Redis-backed twin can fan
 * the same calls out across instances.
 *
 * A notification may hand a waiter of this process what the notifier's caller already
 * read (`handoffs`, by key: the tasks a placement gave an agent and the agent's row as it
 * left it), so the woken waiter answers from it instead of reading the database again.
 * Handoffs never cross the bus: another instance's waiter is woken and reads.
 */
export interface WorkNotifier {
  /** Call after the transaction that gave these agents work has committed. */
  notify(agentIds: Iterable<string>, handoffs?: ReadonlyMap<string, unknown>): void
  /**
   * Resolves `true` when notified (or the handoff given for this key, `{ handoff }`),
   * `false` after `ms`, on abort, or when closed.
   */
  wait(agentId: string, ms: number, signal?: AbortSignal): Promise<Woken>
  /** Releases every waiter and makes later waits return at once (shutdown). */
  close(): void
  readonly closed: boolean
}

/** How a wait ended: `false` (time, abort, close), `true` (notified) or notified with a handoff. */
export type Woken = boolean | { handoff: unknown }

export class LocalNotifier implements WorkNotifier {
  private waiters = new Map<string, Set<(woken: Woken) => void>>()
  closed = false

  notify(agentIds: Iterable<string>, handoffs?: ReadonlyMap<string, unknown>): void {
    for (const id of new Set(agentIds)) {
      const set = this.waiters.get(id)
      if (!set) continue
      this.waiters.delete(id)
      const handoff = handoffs?.get(id)
      for (const wake of set) wake(handoff === undefined ? true : { handoff })
    }
  }

  wait(agentId: string, ms: number, signal?: AbortSignal): Promise<Woken> {
    if (this.closed || signal?.aborted || ms <= 0) return Promise.resolve(false)
    return new Promise((resolve) => {
      const set = this.waiters.get(agentId) ?? new Set()
      this.waiters.set(agentId, set)
      const done = (woken: Woken) => {
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

  notify(agentIds: Iterable<string>, handoffs?: ReadonlyMap<string, unknown>): void {
    const list = [...new Set(agentIds)]
    if (list.length === 0) return
    this.local.notify(list, handoffs)
    void this.bus.publish(this.channel, JSON.stringify(list))
  }

  wait(agentId: string, ms: number, signal?: AbortSignal): Promise<Woken> {
    return this.local.wait(agentId, ms, signal)
  }

  close(): void {
    this.unsubscribe()
    this.local.close()
  }
}
