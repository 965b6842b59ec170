import type { Db } from '../db/client'
import type { EventRow } from '../db/schema'
import type { Kv } from '../lib/kv'
import type { Logger } from '../lib/logger'
import { EVENTS_CHANNEL, type EventFilter, latestSeq, readEvents, sequenceEvents } from './events'

/** A live stream's view of the feed: what it wants and how to wake it. */
export type StreamFilter = Omit<EventFilter, 'after' | 'limit'>

export interface FeedOptions {
  /** Re-read at least this often, in case a bus message was lost. */
  pollMs?: number
  /** Events kept in memory for streams to read from (older positions are read from the database). */
  keep?: number
  logger?: Logger
  /** Called once per read of the event log (a metric). */
  onRead?: () => void
}

const READ_BATCH = 1000

const matches = (e: EventRow, f: StreamFilter) =>
  (!f.type || e.type.startsWith(f.type)) &&
  (!f.agentId || e.agentId === f.agentId) &&
  (!f.taskId || e.taskId === f.taskId)

/**
 * One reader of the event log for every live stream of a process: on each wake-up (a bus
 * message that events committed, or `pollMs` without one) it numbers the new events and
 * reads them in one query, keeps the newest `keep` of them in memory, and wakes every
 * stream, which filters them in memory. So 1,000 open streams cost the database what one
 * does. A stream resuming from a position older than what is kept reads the gap from the
 * database itself, then joins. The reader runs only while a stream is open.
 *
 * Node and Bun share one per process; on Workers (no I/O shared between requests) each
 * stream has its own, which is the old one-reader-per-stream behaviour.
 */
export class EventFeed {
  private readonly pollMs: number
  private readonly keep: number
  private readonly onRead: () => void
  private kept: EventRow[] = []
  /** Every event with seq in (from, head] is in `kept` (filtered or not). */
  private from = 0
  private head = 0
  private subscribers = 0
  private started: Promise<void> | undefined
  private waiters = new Set<() => void>()
  private wakeReader: (() => void) | undefined
  /** A bus message came while the reader was busy: read again at once. */
  private dirty = false
  private unsubscribe: (() => void) | undefined
  /** Bumped by every start and stop, so a reader loop of an earlier start ends by itself. */
  private generation = 0
  private lastError = 0

  constructor(
    private readonly db: Db,
    private readonly kv: Pick<Kv, 'subscribe'>,
    opts: FeedOptions = {},
    private readonly logger = opts.logger,
  ) {
    this.pollMs = opts.pollMs ?? 2000
    this.keep = opts.keep ?? 5000
    this.onRead = opts.onRead ?? (() => {})
  }

  /** Joins the feed; resolves once it knows the newest event. Call `leave()` when done. */
  async join(): Promise<void> {
    this.subscribers++
    const starting = this.started ?? this.start()
    this.started = starting
    try {
      await starting
    } catch (err) {
      if (this.started === starting) this.started = undefined
      this.leave()
      throw err
    }
  }

  leave(): void {
    this.subscribers = Math.max(0, this.subscribers - 1)
    if (this.subscribers === 0) this.stop()
  }

  /** The newest event seq the feed has read. */
  get latest(): number {
    return this.head
  }

  /**
   * Events after `cursor` matching `filter`, at most `limit`, and the position they bring
   * the stream to: from memory when the feed still holds that position, else from the
   * database (the stream is catching up).
   */
  async read(cursor: number, filter: StreamFilter, limit: number): Promise<{ rows: EventRow[]; cursor: number }> {
    if (cursor < this.from) {
      const from = this.from
      const rows = await readEvents(this.db, { ...filter, after: cursor, limit })
      const last = rows.at(-1)?.seq ?? cursor
      // Fewer than asked: every match up to where the feed begins has been read, so the
      // stream has caught up and reads from memory next.
      return { rows, cursor: rows.length < limit ? Math.max(last, from) : last }
    }
    const rows: EventRow[] = []
    let upTo = Math.max(cursor, this.from)
    // `kept` is in seq order: find the first event after the cursor by bisection, so a
    // thousand streams do not each scan what they have already sent.
    let lo = 0
    let hi = this.kept.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if ((this.kept[mid]?.seq ?? 0) <= cursor) lo = mid + 1
      else hi = mid
    }
    for (let i = lo; i < this.kept.length; i++) {
      const e = this.kept[i] as EventRow
      if (rows.length >= limit) break
      upTo = e.seq ?? upTo
      if (matches(e, filter)) rows.push(e)
    }
    if (rows.length < limit) upTo = Math.max(upTo, this.head)
    return { rows, cursor: upTo }
  }

  /**
   * Resolves when the feed holds events after `since` (at once if it already does: a read
   * that finished while the stream was busy writing is not missed), after `ms`, or when
   * `signal` aborts.
   */
  changed(since: number, ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted || this.head > since) return Promise.resolve()
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', done)
        this.waiters.delete(done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      signal?.addEventListener('abort', done, { once: true })
      this.waiters.add(done)
    })
  }

  private async start(): Promise<void> {
    const generation = ++this.generation
    await sequenceEvents(this.db)
    const head = await latestSeq(this.db)
    if (generation !== this.generation) return // every stream left meanwhile
    this.head = head
    this.from = head
    this.kept = []
    this.unsubscribe = this.kv.subscribe(EVENTS_CHANNEL, () => {
      if (this.wakeReader) this.wakeReader()
      else this.dirty = true
    })
    void this.loop(generation)
  }

  private stop(): void {
    this.generation++
    this.unsubscribe?.()
    this.unsubscribe = undefined
    this.wakeReader?.()
    this.started = undefined
    this.kept = []
  }

  private async loop(generation: number): Promise<void> {
    const live = () => generation === this.generation
    while (live()) {
      if (!this.dirty) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, this.pollMs)
          this.wakeReader = () => {
            clearTimeout(timer)
            resolve()
          }
        })
      }
      if (!live()) return
      this.wakeReader = undefined
      this.dirty = false
      try {
        await this.catchUp(live)
      } catch (err) {
        // The database is away: streams keep their keep-alives and resume when it is back.
        if (Date.now() - this.lastError > 10_000) {
          this.lastError = Date.now()
          this.logger?.warn('event feed cannot read the database; streams will resume', { error: err })
        }
      }
    }
  }

  /** Numbers and reads what committed since the last read, then wakes the streams. */
  private async catchUp(live: () => boolean): Promise<void> {
    await sequenceEvents(this.db)
    let grew = false
    for (;;) {
      const rows = await readEvents(this.db, { after: this.head, limit: READ_BATCH })
      this.onRead()
      if (!live()) return
      if (rows.length === 0) break
      this.kept.push(...rows)
      this.head = rows.at(-1)?.seq ?? this.head
      grew = true
      if (this.kept.length > this.keep) {
        const dropped = this.kept.splice(0, this.kept.length - this.keep)
        this.from = dropped.at(-1)?.seq ?? this.from
      }
      if (rows.length < READ_BATCH) break
    }
    if (grew) {
      const waiting = [...this.waiters]
      this.waiters.clear()
      for (const wake of waiting) wake()
    }
  }
}
