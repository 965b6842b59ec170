import type { Context } from 'hono'
import { type SSEStreamingApi, streamSSE } from 'hono/streaming'
import { isDatabaseUnavailable } from '../db/tx'
import { describeError } from '../lib/logger'
import type { AppBindings } from './context'

/**
 * streamSSE for the API's live streams. A failure inside a stream, once its 200 is sent (the
 * database going away, a bug), ends that stream and is logged as every failure is: its cause
 * and the start of its SQL, never its bound values. Left to Hono, the error would go to
 * console.error whole, and a failed query's message lists its parameters.
 */
export function sse(c: Context<AppBindings>, what: string, run: (stream: SSEStreamingApi) => Promise<void>) {
  return streamSSE(c, async (stream) => {
    try {
      await run(stream)
    } catch (err) {
      const fields = { path: c.req.path, error: describeError(err) }
      if (isDatabaseUnavailable(err)) c.var.logger.warn(`${what} ended: the database is unreachable`, fields)
      else c.var.logger.error(`${what} failed`, fields)
    }
  })
}
