/**
 * Task output on its way to the service (log shipping).
 *
 * `TaskLog`, one attempt's output: written as it comes, numbered (`seq`), coalesced into
 * chunks that end at line ends where the lines fit, and sent every `flushMs` (or at once past
 * `batchChars`), one request at a time. Chunks are dropped from memory only once the service
 * has them, so an outage costs nothing but memory, bounded by `maxChars`: past it the oldest
 * unsent output goes, whole lines of it, and a system line stands in the gap, counting the
 * bytes and lines it replaced (a gap that grows keeps one line, with the sum). A resend is
 * harmless (the service skips a seq it has).
 *
 * `LogShipper`, an agent's task logs: one per attempt, each batch sent through the API.
 */
import { ApiClientError, type Client, isRetryable, ok } from '../client'
import type { Task } from './api'
import type { AgentLogger } from './log'

export type LogStream = 'stdout' | 'stderr' | 'system'
export interface LogChunk {
  seq: number
  stream: LogStream
  data: string
  at: string
}

/** What became of one send: stored, try again later, or never (the run is not ours; a bad request). */
export type SendOutcome = 'ok' | 'retry' | 'stale' | 'drop'

export interface TaskLogOptions {
  flushMs?: number
  /** A chunk's most characters (the service's default limit is 64 KiB of UTF-8: 16,000 characters fit). */
  chunkChars?: number
  /** Characters a request carries at most, and the amount that sends at once. */
  batchChars?: number
  /** Chunks a request carries at most (the service's default limit: 500). */
  batchChunks?: number
  /** Unsent output kept at most. */
  maxChars?: number
}

/** What a drop marker stands for. */
interface Gap {
  bytes: number
  lines: number
}

const STREAMS: readonly LogStream[] = ['stdout', 'stderr', 'system']

export class TaskLog {
  private seq = 0
  private pending: LogChunk[] = []
  private chars = 0
  private inflight = 0
  private timer?: NodeJS.Timeout
  private sending?: Promise<void>
  private failures = 0
  /** The chunks that are drop markers, and the gap each stands for. */
  private readonly gaps = new WeakMap<LogChunk, Gap>()
  /** Per stream: the output already stored (or given up) ends inside a line. */
  private readonly leftOpen: Record<LogStream, boolean> = { stdout: false, stderr: false, system: false }
  /** Not ours any more (or closed): everything is dropped, nothing more is sent. */
  dead = false
  private readonly o: Required<TaskLogOptions>

  constructor(
    private readonly send: (chunks: LogChunk[]) => Promise<SendOutcome>,
    options: TaskLogOptions = {},
    /** The task it belongs to (for its owner's bookkeeping). */
    readonly taskId = '',
  ) {
    this.o = {
      flushMs: 250,
      chunkChars: 16_000,
      batchChars: 256 * 1024,
      batchChunks: 500,
      maxChars: 8 * 1024 * 1024,
      ...options,
    }
  }

  /** Nothing waits to be sent. */
  get empty(): boolean {
    return this.pending.length === 0
  }

  /**
   * Appends output. A chunk ends where a line ends when the lines fit (a line longer than a
   * chunk is cut), so that dropping whole chunks drops whole lines.
   */
  write(data: string, stream: LogStream = 'system'): void {
    if (this.dead || data.length === 0) return
    const at = new Date().toISOString()
    const max = this.o.chunkChars
    let rest = data
    while (rest.length > 0) {
      const last = this.pending.at(-1)
      let open =
        last !== undefined &&
        this.pending.length > this.inflight &&
        last.stream === stream &&
        !this.gaps.has(last) &&
        last.data.length < max
      let room = open && last ? max - last.data.length : max
      let n = rest.length
      if (n > room) {
        n = rest.lastIndexOf('\n', room - 1) + 1 // the whole lines that fit
        if (n === 0 && open) {
          // None fits in the open chunk: the next line starts a chunk of its own.
          open = false
          room = max
          n = rest.length <= room ? rest.length : rest.lastIndexOf('\n', room - 1) + 1
        }
        if (n === 0) n = room // one line longer than a chunk: cut
        // Never between the halves of a character outside the BMP.
        const code = rest.charCodeAt(n - 1)
        if (n > 1 && n < rest.length && code >= 0xd800 && code <= 0xdbff) n--
      }
      const piece = rest.slice(0, n)
      if (open && last) last.data += piece
      else this.pending.push({ seq: this.seq++, stream, data: piece, at })
      this.chars += piece.length
      rest = rest.slice(n)
    }
    this.bound()
    if (this.chars - this.inflightChars() >= this.o.batchChars) void this.flush()
    else this.schedule(this.o.flushMs)
  }

  /** Sends what is pending (a request at a time) until it is all stored, or a send fails. */
  flush(): Promise<void> {
    if (!this.sending) {
      this.sending = this.sendAll().finally(() => {
        this.sending = undefined
      })
    }
    return this.sending
  }

  /** Flushes until empty, dead, or `ms` passed; whether it all went. */
  async drain(ms: number): Promise<boolean> {
    const end = Date.now() + ms
    while (!this.dead && !this.empty && Date.now() < end) {
      // A retry already scheduled (the service failed) keeps its backoff: wait for it.
      if (!this.timer) await this.flush()
      if (!this.empty && !this.dead)
        await new Promise((r) => setTimeout(r, Math.min(250, Math.max(0, end - Date.now()))))
    }
    return this.dead || this.empty
  }

  /** Drops everything and sends nothing more. */
  kill(): void {
    this.dead = true
    this.pending = []
    this.chars = 0
    clearTimeout(this.timer)
  }

  private inflightChars(): number {
    let n = 0
    for (let i = 0; i < this.inflight; i++) n += this.pending[i]?.data.length ?? 0
    return n
  }

  private schedule(ms: number) {
    if (this.timer || this.dead) return
    this.timer = setTimeout(() => {
      this.timer = undefined
      void this.flush()
    }, ms)
    this.timer.unref?.()
  }

  /**
   * Past `maxChars` unsent: the oldest unsent chunks go (never the newest: output goes on
   * into it), whole chunks, so whole lines, and a marker takes the place (and the seq) of the
   * first: `[agent] N bytes (M lines) of output dropped here: …`, counting this gap only. A
   * marker still unsent at the gap's start is part of the same gap: folded into the new one.
   * - A stream whose line began before the gap keeps its first chunk there (it ends that line).
   * - Past the amount to drop, a stream whose dropped output ends inside a line loses the
   *   rest of that line too (its next chunks, up to a line end); the other streams' chunks stay.
   * Only a line longer than a chunk, or streams interleaved within a line, can still be cut.
   */
  private bound() {
    if (this.chars <= this.o.maxChars) return
    // Down to 7/8 of the bound: a burst cuts a gap now and then, not at every write.
    const need = this.chars - Math.floor(this.o.maxChars * 0.875)
    const last = this.pending.length - 1
    const open = this.openBefore(this.inflight)
    const gap: Gap = { bytes: 0, lines: 0 }
    /** Streams whose dropped output ends inside a line. */
    const cut = new Set<LogStream>()
    const drop = new Set<number>()
    let first = -1
    let dropped = 0
    for (let j = this.inflight; j < last; j++) {
      const c = this.pending[j] as LogChunk
      const marker = this.gaps.get(c)
      if (dropped >= need) {
        // A marker right after the gap is the same gap; else only cut lines are still dropped.
        if (!(marker && drop.has(j - 1))) {
          if (cut.size === 0) break
          if (!cut.has(c.stream) || marker) continue
        }
      }
      if (marker) {
        gap.bytes += marker.bytes
        gap.lines += marker.lines
        dropped += c.data.length
        drop.add(j)
        if (first < 0) first = j
        continue
      }
      if (dropped < need && open.delete(c.stream)) {
        continue // it ends a line begun before the gap
      }
      drop.add(j)
      if (first < 0) first = j
      dropped += c.data.length
      gap.bytes += Buffer.byteLength(c.data, 'utf8')
      gap.lines += count(c.data, '\n')
      if (c.data.endsWith('\n')) cut.delete(c.stream)
      else cut.add(c.stream)
    }
    if (first < 0) return
    const note: LogChunk = {
      seq: (this.pending[first] as LogChunk).seq,
      stream: 'system',
      data: `[agent] ${gap.bytes} bytes (${gap.lines} lines) of output dropped here: the service did not take them as fast as they came\n`,
      at: (this.pending[first] as LogChunk).at,
    }
    this.gaps.set(note, gap)
    this.pending = this.pending.flatMap((c, j) => (j === first ? [note] : drop.has(j) ? [] : [c]))
    this.chars += note.data.length - dropped
  }

  /** The streams whose output before `index` (in flight, or stored) ends inside a line. */
  private openBefore(index: number): Set<LogStream> {
    const open = new Set<LogStream>()
    for (const stream of STREAMS) {
      let ends: boolean | undefined
      for (let j = index - 1; j >= 0 && ends === undefined; j--) {
        const c = this.pending[j] as LogChunk
        if (c.stream === stream) ends = c.data.endsWith('\n')
      }
      if (ends === undefined ? this.leftOpen[stream] : !ends) open.add(stream)
    }
    return open
  }

  private async sendAll(): Promise<void> {
    clearTimeout(this.timer)
    this.timer = undefined
    while (!this.dead && this.pending.length > 0) {
      let chars = 0
      let n = 0
      for (const c of this.pending) {
        if (n >= this.o.batchChunks || (n > 0 && chars + c.data.length > this.o.batchChars)) break
        chars += c.data.length
        n++
      }
      this.inflight = n
      const batch = this.pending.slice(0, n).map((c) => ({ ...c }))
      let outcome: SendOutcome
      try {
        outcome = await this.send(batch)
      } catch {
        outcome = 'retry'
      }
      this.inflight = 0
      if (outcome === 'stale') return this.kill()
      if (outcome === 'retry') {
        // Kept; tried again later (1 s, 2 s, 4 s, 5 s …; the agent also flushes it at once
        // when its heartbeat finds the service back).
        this.schedule(Math.min(5000, 1000 * 2 ** Math.min(this.failures++, 3)))
        return
      }
      this.failures = 0
      // 'ok' (stored) or 'drop' (refused for good): either way these are done.
      const done = this.pending.splice(0, n)
      for (const c of done) {
        this.chars -= c.data.length
        this.leftOpen[c.stream] = !c.data.endsWith('\n')
      }
    }
  }
}

function count(text: string, ch: string): number {
  let n = 0
  for (let i = text.indexOf(ch); i >= 0; i = text.indexOf(ch, i + 1)) n++
  return n
}

/** How long a finished task's report waits for its output to be stored. */
const LOG_DRAIN_MS = 5000

/**
 * An agent's task output: one `TaskLog` per running attempt, kept after the attempt ends
 * while some of it is unsent (the service was away), and each batch sent as
 * `POST /tasks/{id}/logs`. Output the service refuses as `stale_attempt` means the run is no
 * longer this agent's: `onStale` stops it.
 */
export class LogShipper {
  /** Task output not yet all stored (of runs still going, or ended while the service was away). */
  private readonly outputs = new Set<TaskLog>()

  constructor(
    private readonly api: Client,
    private readonly logger: AgentLogger,
    private readonly onStale: (taskId: string, attempt: number) => void,
  ) {}

  /** The output of an attempt that starts now. */
  open(task: Task): TaskLog {
    const output = new TaskLog((chunks) => this.send(task, chunks), {}, task.id)
    this.outputs.add(output)
    return output
  }

  /** Drops an attempt's unsent output (it is not ours any more). */
  drop(output: TaskLog): void {
    output.kill()
    this.outputs.delete(output)
  }

  /**
   * After an attempt ended: its output goes first (a follower's stream ends with the
   * attempt), for a few seconds at most, then `report` runs: a service that cannot take the
   * output gets the report anyway, and the output later.
   */
  async finish(output: TaskLog, report: () => void): Promise<void> {
    try {
      await output.drain(LOG_DRAIN_MS)
      report()
    } finally {
      // What is still unsent keeps retrying on its own (and at once when the service is back).
      if (output.empty || output.dead) this.outputs.delete(output)
    }
  }

  /**
   * The service answers again: output kept through the outage goes now, not at its own next
   * retry. Logs that are all stored are let go once their run is over.
   */
  flushAll(running: (taskId: string) => boolean): void {
    for (const output of this.outputs) {
      if (output.empty || output.dead) {
        if (!running(output.taskId)) this.outputs.delete(output)
      } else void output.flush()
    }
  }

  /** Sends one batch of a task's output; what became of it. */
  private async send(task: Task, chunks: LogChunk[]): Promise<SendOutcome> {
    try {
      await ok(
        this.api.api.v1.tasks[':id'].logs.$post(
          { param: { id: task.id }, json: { attempt: task.attempt, chunks } },
          { init: { signal: AbortSignal.timeout(30_000) } },
        ),
      )
      return 'ok'
    } catch (err) {
      if (err instanceof ApiClientError && !isRetryable(err)) {
        const log = this.logger.child({ taskId: task.id, attempt: task.attempt })
        if (err.code === 'stale_attempt' || err.status === 404) {
          log.warn('output refused: the task is no longer this agent’s run', { code: err.code })
          this.onStale(task.id, task.attempt)
          return 'stale'
        }
        log.error('output refused; dropped', { code: err.code, detail: err.detail })
        return 'drop'
      }
      return 'retry'
    }
  }
}
