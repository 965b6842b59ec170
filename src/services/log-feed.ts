import { sql } from 'drizzle-orm'
import { type Db, rowsOf } from '../db/client'
import { ApiError } from '../lib/errors'
import type { Logger } from '../lib/logger'
import type { WorkNotifier } from '../lib/notifier'
import { attemptLive, type LogChunk, logAttempt, logKey, readLogs } from './logs'

export interface LogFeedOptions {
  /** Re-read at least this often, in case a wake-up was missed (none at all without a notifier). */
  pollMs?: number
  /** Chunks kept in memory for followers to read from (older positions are read from the database)… */
  keep?: number
  /** …and at most this many bytes of them. */
  keepBytes?: number
  logger?: Logger
  /** Called once per read of new chunks by a reader (a metric). */
  onRead?: () => void
}

const READ_BATCH = 1000

/** How an attempt's log ended: what `event: end` says. */
export interface LogEnd {
  attempt: number
  status: string
}

/**
 * The readers of task logs in this process: one per followed attempt, shared by every
 * follower of that attempt, started by the first follower and stopped when the last one
 * leaves. So 1,000 followers of one task cost the database what one does (three statements
 * per wake-up or poll, none per follower), as the event feed does for event streams.
 *
 * Node and Bun share one per process; on Workers (no I/O shared between requests) each
 * follower has its own.
 */
export class LogFeeds {
  private readers = new Map<string, LogReader>()

  constructor(
    private readonly db: Db,
    private readonly notifier: WorkNotifier | undefined,
    private readonly opts: LogFeedOptions = {},
  ) {}

  /** Joins the reader of one attempt's log; resolves once it knows where the log ends. Call `leave()` on it when done. */
  async join(taskId: string, attempt: number): Promise<LogReader> {
    const key = `${taskId.toLowerCase()}:${attempt}`
    let reader = this.readers.get(key)
    if (!reader) {
      const made: LogReader = new LogReader(this.db, this.notifier, taskId, attempt, this.opts, () => {
        if (this.readers.get(key) === made) this.readers.delete(key)
      })
      this.readers.set(key, made)
      reader = made
    }
    await reader.join()
    return reader
  }

  /** Readers running now (attempts followed). */
  get size(): number {
    return this.readers.size
  }
}

/**
 * One attempt's reader. On each wake-up (a write to the task's log, through the notifier and
 * its bus, or `pollMs` without one) it reads the task's state, then what was stored after the
 * newest chunk it has, keeps the newest of them in memory and wakes the followers, which
 * take what they have not sent from memory. It starts at the end of the log: a follower
 * resuming from an older position reads that part from the database itself, then joins.
 * Once the attempt is over (and everything stored before was read) it stops reading.
 */
export class LogReader {
  private readonly pollMs: number
  private readonly keep: number
  private readonly keepBytes: number
  private readonly onRead: () => void
  private readonly logger: Logger | undefined
  private kept: LogChunk[] = []
  private keptBytes = 0
  /** Every chunk with seq in (from, head] is in `kept`. */
  private from = -1
  private head = -1
  private subscribers = 0
  private started: Promise<void> | undefined
  private waiters = new Set<() => void>()
  /** Aborted when the last follower leaves: ends the reader's wait. */
  private stopping = new AbortController()
  private lastError = 0
  /** Set once the attempt is over and every chunk stored before that was read. */
  ended: LogEnd | undefined
  /** The task is gone (deleted): followers end. */
  gone = false

  constructor(
    private readonly db: Db,
    private readonly notifier: WorkNotifier | undefined,
    readonly taskId: string,
    readonly attempt: number,
    opts: LogFeedOptions,
    private readonly onStop: () => void,
  ) {
    this.pollMs = opts.pollMs ?? 2000
    this.keep = opts.keep ?? 1000
    this.keepBytes = opts.keepBytes ?? 1024 * 1024
    this.onRead = opts.onRead ?? (() => {})
    this.logger = opts.logger
  }

  async join(): Promise<void> {
    this.subscribers++
    const starting = this.started ?? this.start()
    this.started = starting
    try {
      await starting
    } catch (err) {
      this.leave()
      throw err
    }
  }

  leave(): void {
    this.subscribers = Math.max(0, this.subscribers - 1)
    if (this.subscribers > 0) return
    this.stopping.abort()
    this.kept = []
    for (const wake of [...this.waiters]) wake()
    this.onStop()
  }

  /** The newest seq this reader has read. */
  get latest(): number {
    return this.head
  }

  /**
   * Chunks after `cursor`, at most `limit` (one more where a page crosses the dropped middle),
   * and the position they bring the follower to: from memory when the reader holds that
   * position, else from the database (the follower is catching up).
   */
  async read(cursor: number, limit: number): Promise<{ items: LogChunk[]; cursor: number }> {
    if (cursor < this.from) {
      const from = this.from
      const page = await readLogs(this.db, this.taskId, this.attempt, cursor, limit)
      // Fewer than asked: everything up to where the reader begins has been read.
      return { items: page.items, cursor: page.items.length < limit ? Math.max(page.nextAfter, from) : page.nextAfter }
    }
    let lo = 0
    let hi = this.kept.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if ((this.kept[mid]?.seq ?? 0) <= cursor) lo = mid + 1
      else hi = mid
    }
    const items = this.kept.slice(lo, lo + limit)
    const next = items.length < limit ? Math.max(cursor, this.head) : (items.at(-1)?.seq ?? cursor)
    return { items, cursor: next }
  }

  /**
   * Resolves when the reader holds chunks after `since`, the log ended or its task is gone
   * (at once if so already: nothing read while the follower was busy writing is missed),
   * after `ms`, or when `signal` aborts.
   */
  changed(since: number, ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted || this.head > since || this.ended || this.gone) return Promise.resolve()
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
    // Listening before reading: a write that lands during the first read still wakes the loop.
    const woken = this.nextWake()
    const state = await this.state()
    if (state === undefined) return
    const [r] = await rowsOf<{ last: number | null }>(
      this.db,
      sql`SELECT max(seq) AS last FROM task_logs WHERE task_id = ${this.taskId} AND attempt = ${this.attempt}`,
    )
    this.head = r?.last ?? -1
    this.from = this.head
    if (!attemptLive(state)) {
      this.ended = { attempt: this.attempt, status: state.status }
      return
    }
    void this.loop(woken)
  }

  /** The task's state, or undefined when it is gone (and the followers are told). */
  private async state() {
    try {
      return await logAttempt(this.db, this.taskId, this.attempt)
    } catch (err) {
      if (!(err instanceof ApiError && err.code === 'not_found')) throw err
      this.gone = true
      this.wakeFollowers()
      return undefined
    }
  }

  /** Resolves on a write to the task's log (a hint), after `pollMs`, or when the reader stops. */
  private nextWake(): Promise<unknown> {
    const signal = this.stopping.signal
    if (this.notifier) return this.notifier.wait(logKey(this.taskId), this.pollMs, signal)
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, this.pollMs)
      signal.addEventListener(
        'abort',
        () => {
          clearTimeout(timer)
          resolve()
        },
        { once: true },
      )
    })
  }

  private async loop(woken: Promise<unknown>): Promise<void> {
    const signal = this.stopping.signal
    while (!signal.aborted && !this.ended && !this.gone) {
      await woken
      if (signal.aborted) return
      woken = this.nextWake()
      try {
        await this.catchUp()
      } catch (err) {
        // The database is away: followers keep their keep-alives and resume when it is back.
        if (Date.now() - this.lastError > 10_000) {
          this.lastError = Date.now()
          this.logger?.warn('log reader cannot read the database; followers will resume', { error: err })
        }
      }
    }
  }

  /** Reads the task's state, then what was stored since the last read; wakes the followers. */
  private async catchUp(): Promise<void> {
    // The state first: a chunk stored before the attempt ended is read below.
    const state = await this.state()
    if (state === undefined) return
    let grew = false
    for (;;) {
      const page = await readLogs(this.db, this.taskId, this.attempt, this.head, READ_BATCH)
      this.onRead()
      if (this.stopping.signal.aborted) return
      for (const chunk of page.items) {
        this.kept.push(chunk)
        this.keptBytes += chunk.data.length
      }
      this.head = page.nextAfter
      grew ||= page.items.length > 0
      while (this.kept.length > this.keep || (this.keptBytes > this.keepBytes && this.kept.length > 1)) {
        const dropped = this.kept.shift() as LogChunk
        this.keptBytes -= dropped.data.length
        this.from = dropped.seq
      }
      if (page.items.length < READ_BATCH) break
    }
    if (!attemptLive(state)) this.ended = { attempt: this.attempt, status: state.status }
    if (grew || this.ended) this.wakeFollowers()
  }

  private wakeFollowers(): void {
    const waiting = [...this.waiters]
    this.waiters.clear()
    for (const wake of waiting) wake()
  }
}
