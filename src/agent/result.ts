/** What a run's end reports: its result (bounded in size), or why it failed or stopped. */
import type { Report, Task } from './api'
import { TaskError } from './handler'

/** A result larger than this is not sent; the task fails with `result_too_large`. */
export const MAX_RESULT_BYTES = 256 * 1024

/**
 * Why a run was asked to stop before its handler returned. `drain`: the service asked while
 * an operator drains this agent (its drain's deadline passed): the run was taken from it,
 * reported `failed` with code `agent_drained` (a loss of the agent, not an attempt spent).
 */
export type StopReason = 'cancel' | 'drain' | 'timeout' | 'stale' | 'stopped'

export type Outcome = { ok: true; result: unknown } | { ok: false; err: unknown }

/** The final report of `task`'s attempt: stopped for `reason` (if any), else as the handler ended. */
export function endReport(task: Task, reason: StopReason | undefined, outcome: Outcome): Report {
  const { id: taskId, attempt, timeoutSeconds } = task
  const base = { taskId, attempt }
  const failedResult = !outcome.ok && outcome.err instanceof TaskError ? outcome.err.result : undefined
  const withResult = (result: unknown) => (result === undefined ? {} : { result: bounded(result) })
  switch (reason) {
    case 'cancel':
      return { ...base, status: 'cancelled' }
    case 'timeout':
      return {
        ...base,
        status: 'failed',
        ...withResult(failedResult),
        error: {
          code: 'timeout',
          message: `Ran longer than its timeoutSeconds (${timeoutSeconds} s) on this agent.`,
        },
      }
    case 'drain':
      return {
        ...base,
        status: 'failed',
        ...withResult(failedResult),
        error: { code: 'agent_drained', message: 'Stopped: the agent is drained and its deadline passed.' },
      }
    case 'stopped':
      return {
        ...base,
        status: 'failed',
        ...withResult(failedResult),
        error: { code: 'agent_stopped', message: 'The agent stopped before the task finished.' },
      }
  }
  if (outcome.ok) {
    const size = jsonSize(outcome.result)
    return size > MAX_RESULT_BYTES
      ? {
          ...base,
          status: 'failed',
          error: {
            code: 'result_too_large',
            message: `The result is ${size} bytes of JSON; at most ${MAX_RESULT_BYTES} are sent.`,
          },
        }
      : { ...base, status: 'completed', ...(outcome.result === undefined ? {} : { result: outcome.result }) }
  }
  const err = outcome.err
  const code = err instanceof TaskError ? err.code : 'handler_error'
  const message = (err instanceof Error ? err.message : String(err)).slice(0, 4000) || code
  return { ...base, status: 'failed', ...withResult(failedResult), error: { code: code.slice(0, 100), message } }
}

function jsonSize(v: unknown): number {
  try {
    return JSON.stringify(v ?? null).length
  } catch {
    return Number.POSITIVE_INFINITY
  }
}

/** A result as sent: itself when small enough, else a note that it was left out. */
function bounded(result: unknown): unknown {
  const size = jsonSize(result)
  return size <= MAX_RESULT_BYTES ? (result ?? null) : { omitted: `result of ${size} bytes left out` }
}
