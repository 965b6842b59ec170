/**
 * The tasks an agent is running: each started with the handler of its type, timed out on
 * the agent at its `timeoutSeconds`, stopped on a cancel (or when the agent stops), and given
 * up on when its handler does not stop within the grace. Every run reports `running` when it
 * starts and its end when it ends, through the outbox, after its output.
 */
import type { Task } from './api'
import { type Handler, type TaskContext, TaskError } from './handler'
import type { AgentLogger } from './log'
import type { Outbox } from './outbox'
import { endReport, type Outcome, type StopReason } from './result'
import type { LogShipper, TaskLog } from './task-log'

/** Attempts remembered as seen (a heartbeat's answer may hand the same one again). */
const SEEN_MAX = 10_000

interface Run {
  task: Task
  controller: AbortController
  reason?: StopReason
  timer?: NodeJS.Timeout
  graceTimer?: NodeJS.Timeout
  logger: AgentLogger
  output: TaskLog
}

export interface RunsOptions {
  handlers: ReadonlyMap<string, Handler>
  outbox: Outbox
  logs: LogShipper
  logger: AgentLogger
  /** Between asking a handler to stop and giving up on it (plus 2 s). */
  cancelGraceSeconds: number
  /** The agent is stopping: a task handed to it now is refused (`agent_stopped`). */
  stopping: () => boolean
  /** A task of a type it has no handler for was handed to it (its declaration there is stale). */
  onDecline: (type: string) => void
}

export class Runs {
  private readonly runs = new Map<string, Run>()
  private readonly seen = new Map<string, true>()
  /** Runs that ended and are flushing their output before their report. */
  private flushing = 0
  /** Tasks declined, by type (the first of each type is logged, the others only counted). */
  readonly declined = new Map<string, number>()

  constructor(private readonly o: RunsOptions) {}

  /** Tasks running now. */
  get size(): number {
    return this.runs.size
  }

  /** Runs that ended but whose report is not queued yet (their output goes first). */
  get finishing(): number {
    return this.flushing
  }

  ids(): string[] {
    return [...this.runs.keys()]
  }

  has(taskId: string): boolean {
    return this.runs.has(taskId)
  }

  /** Starts (or refuses) a task handed to this agent; false if it was seen before. */
  accept(task: Task): boolean {
    const key = `${task.id}:${task.attempt}`
    if (this.seen.has(key)) return false
    this.seen.set(key, true)
    if (this.seen.size > SEEN_MAX) this.seen.delete(this.seen.keys().next().value as string)
    const old = this.runs.get(task.id)
    if (old) this.abort(old, 'stale') // an earlier attempt we still run: not ours any more
    const logger = this.o.logger.child({ taskId: task.id, attempt: task.attempt, type: task.type })
    const handler = this.o.handlers.get(task.type)
    if (!handler) {
      this.decline(task)
      return true
    }
    if (this.o.stopping()) {
      logger.warn('task refused', { code: 'agent_stopped' })
      this.o.outbox.add({
        taskId: task.id,
        attempt: task.attempt,
        status: 'failed',
        error: { code: 'agent_stopped', message: 'The agent is stopping.' },
      })
      return true
    }
    const output = this.o.logs.open(task)
    const run: Run = { task, controller: new AbortController(), logger, output }
    this.runs.set(task.id, run)
    logger.info('task started')
    this.o.outbox.add({ taskId: task.id, attempt: task.attempt, status: 'running' })
    run.timer = setTimeout(() => {
      logger.warn('task timed out on this agent', { timeoutSeconds: task.timeoutSeconds })
      this.abort(run, 'timeout')
    }, task.timeoutSeconds * 1000)
    const ctx: TaskContext = {
      task,
      signal: run.controller.signal,
      logger,
      progress: (percent) => this.progress(run, percent),
      log: (data, stream) => output.write(String(data), stream),
    }
    Promise.resolve()
      .then(() => handler(task, ctx))
      .then(
        (result) => this.finish(run, { ok: true, result }),
        (err) => this.finish(run, { ok: false, err }),
      )
    return true
  }

  /**
   * A task of a type this agent has no handler for (the service had a stale declaration):
   * declined, so it goes back to the queue without spending an attempt and is never offered
   * to this agent again. One log line per type, the first time; the rest only counted.
   */
  private decline(task: Task): void {
    const handled = [...this.o.handlers.keys()].join(', ') || 'none'
    const seen = this.declined.get(task.type) ?? 0
    this.declined.set(task.type, seen + 1)
    if (seen === 0) {
      this.o.logger.warn(
        `declining tasks of type ${task.type}: no handler (first seen ${new Date().toISOString()}, task ${task.id}); this agent runs: ${handled}`,
        { type: task.type },
      )
    }
    this.o.outbox.add({
      taskId: task.id,
      attempt: task.attempt,
      status: 'declined',
      error: {
        code: 'unsupported_type',
        message: `This agent has no handler for task type "${task.type}" (it handles: ${handled}).`,
      },
    })
    this.o.onDecline(task.type)
  }

  /**
   * The service asked to stop the task (a cancel, or `drain`: this agent is drained and its
   * deadline passed): its run is asked to stop. Whether that is news.
   */
  cancel(taskId: string, reason: 'cancel' | 'drain' = 'cancel'): boolean {
    const run = this.runs.get(taskId)
    if (!run || run.reason) return false
    run.logger.info(reason === 'drain' ? 'stop requested: the agent is drained' : 'cancel requested')
    this.abort(run, reason)
    return true
  }

  /** The attempt is no longer this agent's (the service said so): aborted and forgotten. */
  stale(taskId: string, attempt: number): void {
    const run = this.runs.get(taskId)
    if (run && run.task.attempt === attempt) this.abort(run, 'stale')
  }

  /** Asks every run to stop (`stopped`: the agent stops; `stale`: its identity is gone). */
  abortAll(reason: StopReason): void {
    for (const run of [...this.runs.values()]) this.abort(run, reason)
  }

  /** The loop has ended: no timer of a run may fire any more. */
  clearTimers(): void {
    for (const run of this.runs.values()) clearTimers(run)
  }

  private progress(run: Run, percent: number) {
    if (this.runs.get(run.task.id) !== run || run.reason) return
    const p = Math.max(0, Math.min(100, Number(percent) || 0))
    this.o.outbox.progress(run.task.id, run.task.attempt, p)
  }

  private abort(run: Run, reason: StopReason) {
    if (run.reason) return
    run.reason = reason
    clearTimeout(run.timer)
    run.controller.abort(new Error(`task ${reason}`))
    if (reason === 'stale') {
      // Not ours: forget it now (and its unsent output); whatever the handler still returns is ignored.
      this.o.logs.drop(run.output)
      this.forget(run)
      return
    }
    // A handler that does not stop within the grace is given up on (its answer ignored).
    run.graceTimer = setTimeout(
      () => {
        if (this.runs.get(run.task.id) !== run) return
        run.logger.warn('the handler did not stop within its grace; reported without it')
        this.finish(run, { ok: false, err: new TaskError(reason, 'The task did not stop within its grace.') })
      },
      (this.o.cancelGraceSeconds + 2) * 1000,
    )
    run.graceTimer.unref()
  }

  private forget(run: Run) {
    clearTimers(run)
    if (this.runs.get(run.task.id) === run) this.runs.delete(run.task.id)
    this.o.outbox.drop(run.task.id, run.task.attempt)
  }

  private finish(run: Run, outcome: Outcome) {
    if (this.runs.get(run.task.id) !== run) return // stale, or already given up on
    clearTimers(run)
    this.runs.delete(run.task.id)
    const report = endReport(run.task, run.reason, outcome)
    run.logger.info(report.status === 'completed' ? 'task completed' : `task ${report.status}`, {
      ...(report.error ? { code: report.error.code, error: report.error.message.slice(0, 300) } : {}),
    })
    // Its output goes first (a follower's stream ends with the attempt), for a few seconds
    // at most; then the report.
    this.flushing++
    void this.o.logs
      .finish(run.output, () => this.o.outbox.add(report))
      .finally(() => {
        this.flushing--
      })
  }
}

function clearTimers(run: Run) {
  clearTimeout(run.timer)
  clearTimeout(run.graceTimer)
}
