/** What a task type's handler is given, and how it fails with a code. */
import type { Task } from './api'
import type { AgentLogger } from './log'
import type { LogStream } from './task-log'

/** What a handler gets besides its task. */
export interface TaskContext {
  readonly task: Task
  /** Aborts when the task is cancelled, times out, is no longer this agent's, or the agent stops. */
  readonly signal: AbortSignal
  /** Reports progress (0–100); sent with the next heartbeat, at most about once a second. */
  progress(percent: number): void
  /** The runner's logger with this task's id on every line. */
  readonly logger: AgentLogger
  /**
   * Appends to the task's log on the service (GET /tasks/{id}/logs): sent as it comes,
   * batched (every 250 ms or 256 KiB), kept in memory through an outage.
   */
  log(data: string, stream?: LogStream): void
}

/** Runs one task: its return value (any JSON) is the result; a throw fails the attempt. */
export type Handler = (task: Task, ctx: TaskContext) => unknown | Promise<unknown>

/**
 * A failure with a stable code (and optionally a result, e.g. the output of a failed
 * command). `malformed_payload` tells the service not to retry; any other code is retried
 * while the task has attempts left.
 */
export class TaskError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly result?: unknown,
  ) {
    super(message)
    this.name = 'TaskError'
  }
}
