/** Time for every domain rule (heartbeats, timeouts, backoff); tests move it instead of sleeping. */
export interface Clock {
  now(): Date
}

export const systemClock: Clock = { now: () => new Date() }

/** A clock that only moves when told; for tests and benchmarks. */
export class ManualClock implements Clock {
  private t: number
  constructor(start: Date | number = Date.now()) {
    this.t = typeof start === 'number' ? start : start.getTime()
  }
  now(): Date {
    return new Date(this.t)
  }
  advance(ms: number): Date {
    this.t += ms
    return this.now()
  }
  set(at: Date | number): void {
    this.t = typeof at === 'number' ? at : at.getTime()
  }
}
