/**
 * Reports waiting to be delivered. Each heartbeat takes the next batch, in order; a batch the
 * service did not answer goes back to the head and is sent again (reports are safe to
 * repeat), so reports survive an unreachable service in memory. A report wakes the loop
 * shortly after it is queued, so that it goes out at once instead of at the next beat.
 */
import type { Report } from './api'

const MAX_REPORTS = 1000
/** Reports in one heartbeat stay well under the service's default 1 MiB body limit. */
const MAX_REPORT_BYTES = 512 * 1024
/** How long a report waits for others to share its heartbeat. */
const REPORT_LINGER_MS = 20
/** Progress is sent at most about this often. */
const PROGRESS_EVERY_MS = 1000

export class Outbox {
  private reports: Report[] = []
  private lingerTimer?: NodeJS.Timeout
  private progressTimer?: NodeJS.Timeout

  /** `wake` ends the loop's wait so that the reports go out now. */
  constructor(private readonly wake: () => void) {}

  get size(): number {
    return this.reports.length
  }

  /**
   * Queues a report and sends it within `REPORT_LINGER_MS`: a task that ends that soon after
   * it started goes out as one heartbeat (running, then its end) instead of two.
   */
  add(r: Report): void {
    this.reports.push(r)
    if (this.lingerTimer) return
    this.lingerTimer = setTimeout(() => {
      this.lingerTimer = undefined
      this.wake()
    }, REPORT_LINGER_MS)
  }

  /** Queues reports ahead of all others (runs lost by a previous process). */
  addFirst(rs: Report[]): void {
    this.reports = [...rs, ...this.reports]
  }

  /**
   * A run's progress: folded into its `running` report if one still waits, else queued;
   * sent within about a second (many updates, one report).
   */
  progress(taskId: string, attempt: number, progress: number): void {
    const queued = this.reports.find((r) => r.taskId === taskId && r.attempt === attempt && r.status === 'running')
    if (queued) queued.progress = progress
    else this.reports.push({ taskId, attempt, status: 'running', progress })
    if (!this.progressTimer) {
      this.progressTimer = setTimeout(() => {
        this.progressTimer = undefined
        this.wake()
      }, PROGRESS_EVERY_MS)
      this.progressTimer.unref()
    }
  }

  /** The next reports to send: in order, up to 1,000 and 512 KiB. */
  take(): Report[] {
    let bytes = 0
    let n = 0
    for (const r of this.reports) {
      bytes += JSON.stringify(r).length
      if (n >= MAX_REPORTS || (n > 0 && bytes > MAX_REPORT_BYTES)) break
      n++
    }
    return this.reports.splice(0, n)
  }

  /** Reports taken but not delivered (the service did not answer): first in line again. */
  putBack(sent: Report[]): void {
    if (sent.length) this.reports = [...sent, ...this.reports]
  }

  /** Forgets every waiting report of one attempt (it is no longer this agent's). */
  drop(taskId: string, attempt: number): void {
    this.reports = this.reports.filter((r) => !(r.taskId === taskId && r.attempt === attempt))
  }

  /** Forgets everything (the identity they were made under is gone). */
  clear(): void {
    this.reports = []
  }
}
