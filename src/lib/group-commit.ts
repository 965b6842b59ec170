/**
 * Natural batching, as a database's group commit does it: work that arrives while others'
 * is in flight is gathered and run together, and nothing ever waits for a window. An item
 * submitted while fewer than `inFlight` batches are running starts a batch at once (alone,
 * if nothing else waits); otherwise it waits in the queue, and the next batch to start (as
 * soon as a running one ends) takes up to `max` of the queued items, oldest first. So under
 * a light load every item runs alone and at once, and under a heavy one the batches grow by
 * themselves to what arrives during one batch's round trip.
 *
 * `key`: at most one item per key in a batch; a second one waits for the following batch
 * (in its place in the queue).
 *
 * `run` gets the items and answers one outcome per item, in their order; if it throws, every
 * item of the batch fails with that error (it never answers one item with another's result).
 */
export type Outcome<R> = { value: R } | { error: unknown }

export interface GroupCommitOptions<T> {
  /** Most items in one batch (≥ 1). */
  max: number
  /** Most batches running at once (≥ 1). */
  inFlight: number
  key?: (item: T) => string
  /** Told the size of every batch that starts (a metric). */
  onBatch?: (size: number) => void
}

interface Waiting<T, R> {
  item: T
  resolve: (r: R) => void
  reject: (err: unknown) => void
}

export class GroupCommit<T, R> {
  private queue: Waiting<T, R>[] = []
  private running = 0

  constructor(
    private readonly run: (items: T[]) => Promise<Outcome<R>[]>,
    private readonly opts: GroupCommitOptions<T>,
  ) {}

  submit(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, resolve, reject })
      this.pump()
    })
  }

  /** Batches running now, and items waiting for one (for tests and metrics). */
  get state(): { running: number; queued: number } {
    return { running: this.running, queued: this.queue.length }
  }

  private pump(): void {
    while (this.running < Math.max(1, this.opts.inFlight) && this.queue.length > 0) {
      const batch = this.take()
      this.running++
      this.opts.onBatch?.(batch.length)
      void this.start(batch).finally(() => {
        this.running--
        this.pump()
      })
    }
  }

  /** Up to `max` queued items, oldest first, one per key; the rest keep their places. */
  private take(): Waiting<T, R>[] {
    const max = Math.max(1, this.opts.max)
    const key = this.opts.key
    if (!key) return this.queue.splice(0, max)
    const batch: Waiting<T, R>[] = []
    const left: Waiting<T, R>[] = []
    const keys = new Set<string>()
    for (const w of this.queue) {
      const k = key(w.item)
      if (batch.length < max && !keys.has(k)) {
        keys.add(k)
        batch.push(w)
      } else left.push(w)
    }
    this.queue = left
    return batch
  }

  private async start(batch: Waiting<T, R>[]): Promise<void> {
    let outcomes: Outcome<R>[]
    try {
      outcomes = await this.run(batch.map((w) => w.item))
    } catch (err) {
      for (const w of batch) w.reject(err)
      return
    }
    batch.forEach((w, i) => {
      const o = outcomes[i]
      if (!o) w.reject(new Error('a batch answered fewer outcomes than it had items'))
      else if ('error' in o) w.reject(o.error)
      else w.resolve(o.value)
    })
  }
}
