/**
 * What this process knows of the stretches during which the service could not hear agents:
 * its own event loop stalled (the process was paused, swapped out, starved of CPU), or its
 * database was unreachable. They are kept here until they can be written to the database
 * (src/services/stalls.ts), where every sweep, of any instance, moves deadlines by them.
 *
 * Times are wall-clock milliseconds (Date.now()): the sweep compares them with heartbeat
 * times, which are wall-clock too.
 */

export type StallCause = 'paused' | 'database' | 'down'

export interface Stall {
  startedAt: number
  endedAt: number
  cause: StallCause
}

/** How often the watchdog ticks. */
export const WATCHDOG_TICK_MS = 500

/**
 * A gap between ticks longer than the tick plus this counts as a stall. Shorter ones (a GC
 * pause, a busy moment on a small machine) are left out: they are far below any heartbeat
 * timeout, and recording them would only add rows.
 */
export const STALL_MIN_MS = 2000

/** At most this many stalls wait for the database; the oldest are merged beyond it. */
const MAX_PENDING = 100

export class StallWatch {
  private pending: Stall[] = []
  private deafSince: number | null = null
  private lastTick: number | null = null
  private timer: ReturnType<typeof setInterval> | null = null

  constructor(private readonly now: () => number = Date.now) {}

  /**
   * Starts the watchdog (Node and Bun; a Worker has no process to pause): a timer whose
   * late ticks say the event loop did not run. It does not keep the process alive.
   */
  start(): void {
    if (this.timer) return
    this.lastTick = this.now()
    this.timer = setInterval(() => this.check(), WATCHDOG_TICK_MS)
    ;(this.timer as { unref?: () => void }).unref?.()
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
  }

  /**
   * Notes a stall of the event loop in progress: called by the watchdog's tick, and by
   * anything about to judge silence (the sweep), which may run before the late tick does.
   */
  check(): void {
    if (this.lastTick === null) return
    const now = this.now()
    if (now - this.lastTick > WATCHDOG_TICK_MS + STALL_MIN_MS)
      this.add({ startedAt: this.lastTick, endedAt: now, cause: 'paused' })
    this.lastTick = now
  }

  /** The database could not be reached by work that started at `since`. */
  deaf(since: number): void {
    if (this.deafSince === null || since < this.deafSince) this.deafSince = since
  }

  /** Whether the database was unreachable and has not been reached since. */
  get isDeaf(): boolean {
    return this.deafSince !== null
  }

  /** The database answered work that started at `at`: the deaf stretch, if any, ends. */
  heard(at: number = this.now()): void {
    if (this.deafSince === null) return
    if (at - this.deafSince >= STALL_MIN_MS) this.add({ startedAt: this.deafSince, endedAt: at, cause: 'database' })
    this.deafSince = null
  }

  /** A stall learnt otherwise (no server was running). */
  add(stall: Stall): void {
    if (stall.endedAt <= stall.startedAt) return
    this.pending.push(stall)
    if (this.pending.length > MAX_PENDING) {
      const [a, b] = this.pending.splice(0, 2) as [Stall, Stall]
      this.pending.unshift({ startedAt: a.startedAt, endedAt: Math.max(a.endedAt, b.endedAt), cause: a.cause })
    }
  }

  /** The stalls to write; give them back with `putBack` if the write fails. */
  take(): Stall[] {
    const out = this.pending
    this.pending = []
    return out
  }

  putBack(stalls: Stall[]): void {
    this.pending = [...stalls, ...this.pending]
  }

  get hasPending(): boolean {
    return this.pending.length > 0
  }

  private readonly inFlight = new Map<string, number>()

  /**
   * A heartbeat of `agentId` has reached this process and waits to be written (behind a
   * busy database, or a busy process): the agent is alive, whatever its last written beat
   * says. Returns the function that ends it.
   */
  hearing(agentId: string): () => void {
    this.inFlight.set(agentId, (this.inFlight.get(agentId) ?? 0) + 1)
    return () => {
      const n = (this.inFlight.get(agentId) ?? 1) - 1
      if (n <= 0) this.inFlight.delete(agentId)
      else this.inFlight.set(agentId, n)
    }
  }

  /** The agents whose heartbeats this process is handling now. */
  beingHeard(): string[] {
    return [...this.inFlight.keys()]
  }
}
