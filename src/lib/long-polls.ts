/**
 * One long poll per agent. A heartbeat that may wait for work (`waitSeconds`) takes the
 * agent's place here and ends the one that held it at once: that one answers what it has,
 * the normal "nothing new" answer. So an agent costs one waiting heartbeat (a beat every
 * 2 s while it waits) however many it sends at once, instead of one per request.
 *
 * In this process the newer poll always wins. Across instances (a bus that spans them:
 * Redis pub/sub) each poll announces itself on the bus, and an instance ends its own poll
 * of that agent when another instance's announcement comes after its own: Redis delivers
 * one channel's messages to every subscriber in the same order, so every instance agrees
 * which is newer. While the bus is away, the rule holds per instance only (an agent may then
 * hold one long poll per instance).
 */
export interface LongPollBus {
  publish(channel: string, message: string): Promise<void>
  subscribe(channel: string, handler: (message: string) => void): () => void
}

const CHANNEL = 'agenticcp:long-polls'

interface Holder {
  id: string
  controller: AbortController
  /** Its own announcement has come back from the bus: a later one from elsewhere is newer. */
  announced: boolean
}

export class LongPolls {
  private holders = new Map<string, Holder>()
  private unsubscribe: (() => void) | undefined
  private counter = 0
  /** Tells this instance's polls from other instances' on the bus. */
  private readonly instance = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`

  constructor(private readonly bus?: LongPollBus) {}

  /**
   * Takes the agent's place. The signal aborts when a newer long poll of the agent takes it
   * (here or, through the bus, on another instance) or when `request` aborts; call
   * `release()` once answered.
   */
  take(agentId: string, request?: AbortSignal): { signal: AbortSignal; release: () => void } {
    const agent = agentId.toLowerCase()
    this.holders.get(agent)?.controller.abort()
    const holder: Holder = {
      id: `${this.instance}:${++this.counter}`,
      controller: new AbortController(),
      announced: false,
    }
    this.holders.set(agent, holder)
    const onAbort = () => holder.controller.abort()
    if (request?.aborted) onAbort()
    else request?.addEventListener('abort', onAbort, { once: true })
    if (this.bus) {
      this.unsubscribe ??= this.bus.subscribe(CHANNEL, (m) => this.heard(m))
      void this.bus.publish(CHANNEL, JSON.stringify({ agent, id: holder.id })).catch(() => {})
    }
    return {
      signal: holder.controller.signal,
      release: () => {
        request?.removeEventListener('abort', onAbort)
        if (this.holders.get(agent) === holder) this.holders.delete(agent)
      },
    }
  }

  /** Long polls waiting in this process (one per agent at most). */
  get waiting(): number {
    return this.holders.size
  }

  private heard(message: string): void {
    let parsed: { agent?: unknown; id?: unknown }
    try {
      parsed = JSON.parse(message) as typeof parsed
    } catch {
      return
    }
    if (typeof parsed.agent !== 'string' || typeof parsed.id !== 'string') return
    const holder = this.holders.get(parsed.agent)
    if (!holder) return
    if (holder.id === parsed.id) holder.announced = true
    // Announced after ours (ours came back first): another instance's poll is newer.
    else if (holder.announced && !parsed.id.startsWith(`${this.instance}:`)) holder.controller.abort()
  }
}
