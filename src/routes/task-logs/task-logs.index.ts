import type { Context } from 'hono'
import { ApiError } from '../../lib/errors'
import type { AppBindings } from '../../middleware/context'
import { serviceDeps } from '../../middleware/context'
import { createRouter } from '../../middleware/router'
import { sse } from '../../middleware/sse'
import { LogFeeds, type LogReader } from '../../services/log-feed'
import { attemptLive, logAttempt, readLogs, writeLogs } from '../../services/logs'
import * as routes from './task-logs.routes'

const KEEP_ALIVE_MS = 15_000
/** A reader re-reads at least this often, should a wake-up be missed (no bus on Workers). */
const POLL_MS = 2000
const PAGE = 1000
const encoder = new TextEncoder()

/**
 * Follows one attempt's log: what is stored after the cursor, then every chunk as it is
 * written, until the attempt is over and all of it was sent. Chunks come from the process's
 * one reader of that attempt (src/services/log-feed.ts), woken through the notifier (and its
 * Redis bus across instances), or from the database while the follower catches up from an
 * older position: followers cost the database nothing each. Holds one of the process's
 * stream slots.
 */
function follow(c: Context<AppBindings>, taskId: string, attempt: number, after: number) {
  const deps = c.var.deps
  const { database, shutdown, streams } = deps
  const p = c.var.principal
  const slot = streams.take(`${p.role}:${p.sub}`)
  if ('full' in slot) {
    throw new ApiError('too_many_streams', 'Too many open streams for this token or this server; close one first.', {
      retryAfterSeconds: 5,
    })
  }
  const feeds = deps.logFeeds ?? new LogFeeds(database.db, deps.notifier, { pollMs: POLL_MS, logger: c.var.logger })
  let resolveDone: () => void = () => {}
  database.hold?.(new Promise<void>((r) => (resolveDone = r)))
  return sse(c, 'log stream', async (stream) => {
    const gone = new AbortController()
    const end = () => gone.abort()
    shutdown?.addEventListener('abort', end)
    stream.onAbort(end)
    let reader: LogReader | undefined
    try {
      reader = await feeds.join(taskId, attempt)
      await stream.write('retry: 2000\n: connected\n\n')
      let cursor = after
      let lastWrite = Date.now()
      while (!gone.signal.aborted && !shutdown?.aborted) {
        const page = await reader.read(cursor, PAGE)
        for (const chunk of page.items) {
          await stream.writeSSE({ id: String(chunk.seq), event: chunk.stream, data: JSON.stringify(chunk) })
          lastWrite = Date.now()
        }
        cursor = page.cursor
        if (page.items.length >= PAGE) continue
        if (reader.gone) break
        if (reader.ended && cursor >= reader.latest) {
          await stream.writeSSE({ event: 'end', data: JSON.stringify(reader.ended) })
          break
        }
        const idle = KEEP_ALIVE_MS - (Date.now() - lastWrite)
        if (idle <= 0) {
          await stream.write(': keep-alive\n\n')
          lastWrite = Date.now()
        }
        await reader.changed(cursor, Math.max(50, idle > 0 ? idle : KEEP_ALIVE_MS), gone.signal)
      }
    } finally {
      reader?.leave()
      slot.release()
      shutdown?.removeEventListener('abort', end)
      resolveDone()
    }
  })
}

export const logsRouter = createRouter()
  .openapi(routes.write, async (c) => {
    const { id } = c.req.valid('param')
    const { attempt, chunks } = c.req.valid('json')
    const deps = serviceDeps(c)
    const { taskLogMaxChunkBytes: maxBytes, taskLogMaxChunksPerRequest: maxChunks } = c.var.deps.config
    if (chunks.length > maxChunks) {
      throw new ApiError('validation_failed', 'The request has invalid fields; see `errors`.', {
        errors: [
          { path: 'body.chunks', message: `at most ${maxChunks} chunks a request (TASK_LOG_MAX_CHUNKS_PER_REQUEST)` },
        ],
      })
    }
    const errors = chunks.flatMap((ch, i) =>
      encoder.encode(ch.data).length > maxBytes
        ? [{ path: `body.chunks.${i}.data`, message: `at most ${maxBytes} bytes (TASK_LOG_MAX_CHUNK_BYTES)` }]
        : [],
    )
    if (errors.length)
      throw new ApiError('validation_failed', 'The request has invalid fields; see `errors`.', { errors })
    // Postgres text cannot hold NUL: it is stored as U+FFFD, as an invalid byte would be.
    const clean = chunks.map((ch) =>
      ch.data.includes('\0') ? { ...ch, data: ch.data.replaceAll('\0', '\uFFFD') } : ch,
    )
    const out = await writeLogs(deps, id, c.var.principal.agentId as string, attempt, clean)
    return c.json(out, 202)
  })
  .openapi(routes.read, async (c) => {
    const { id } = c.req.valid('param')
    const q = c.req.valid('query')
    const lastEventId = c.req.valid('header')['last-event-id']
    const after = lastEventId !== undefined ? Number(lastEventId) : q.after
    const accept = c.req.header('accept') ?? ''
    const db = c.var.deps.database.db
    const task = await logAttempt(db, id, q.attempt)
    if (accept.includes('text/event-stream')) return follow(c, id, task.attempt, after)
    if (accept.includes('text/plain') && !accept.includes('application/json')) {
      // The whole attempt (at most TASK_LOG_MAX_BYTES_PER_ATTEMPT), read a page at a time.
      const parts: string[] = []
      for (let cursor = after; ; ) {
        const page = await readLogs(db, id, task.attempt, cursor, PAGE)
        for (const chunk of page.items) parts.push(chunk.data)
        if (page.items.length < PAGE) break
        cursor = page.nextAfter
      }
      c.header('Content-Type', 'text/plain; charset=utf-8')
      return c.body(parts.join(''), 200)
    }
    const page = await readLogs(db, id, task.attempt, after, q.limit)
    return c.json({ taskId: id, ...page, live: attemptLive(task) }, 200)
  })
