import type { Context } from 'hono'
import { ApiError } from '../../lib/errors'
import { assertSelfOrStaff } from '../../middleware/auth'
import type { AppBindings } from '../../middleware/context'
import { serviceDeps } from '../../middleware/context'
import { createRouter } from '../../middleware/router'
import { sse } from '../../middleware/sse'
import { readAgent } from '../../services/agents'
import { EventFeed } from '../../services/event-feed'
import { type EventFilter, readEvents, sequenceEvents, toEventDto } from '../../services/events'
import { getTask } from '../../services/tasks'
import * as routes from './events.routes'

const KEEP_ALIVE_MS = 15_000
const STREAM_BATCH = 500

async function page(c: Context<AppBindings>, f: EventFilter) {
  const db = c.var.deps.database.db
  await sequenceEvents(db)
  const rows = await readEvents(db, f)
  return { items: rows.map((e) => toEventDto(e, c.var.logger)), nextAfter: rows.at(-1)?.seq ?? f.after }
}

/**
 * The live stream: write what is new after the client's cursor, then wait for the feed to
 * read more (or 15 s, for a keep-alive comment). Rows come from the process's one shared
 * reader of the event log (src/services/event-feed.ts), or from the database while the
 * stream catches up from an old position; the bus only wakes that reader, so a dropped
 * message costs latency, never an event. Each stream holds one of the process's stream
 * slots (EVENT_STREAMS_PER_PRINCIPAL, EVENT_STREAMS_MAX) until it ends.
 */
function stream(c: Context<AppBindings>, filter: Omit<EventFilter, 'after'>, after: number | undefined) {
  const deps = c.var.deps
  const { database, kv, shutdown, streams } = deps
  const p = c.var.principal
  const slot = streams.take(`${p.role}:${p.sub}`)
  if ('full' in slot) {
    const detail =
      slot.full === 'principal'
        ? `This token already holds ${streams.perPrincipal} open event streams (EVENT_STREAMS_PER_PRINCIPAL); close one first.`
        : `This server holds ${streams.max} open event streams (EVENT_STREAMS_MAX); try again shortly.`
    throw new ApiError('too_many_streams', detail, { retryAfterSeconds: 5 })
  }
  const feed =
    deps.eventFeed ?? new EventFeed(database.db, kv, { pollMs: 2000, keep: STREAM_BATCH, logger: c.var.logger })
  let resolveDone: () => void = () => {}
  database.hold?.(new Promise<void>((r) => (resolveDone = r)))
  // The database compares uuids whatever their case; the feed compares strings.
  const { limit: _pageSize, ...rest } = filter
  const want = { ...rest, agentId: rest.agentId?.toLowerCase(), taskId: rest.taskId?.toLowerCase() }
  return sse(c, 'event stream', async (stream) => {
    const gone = new AbortController()
    const end = () => gone.abort()
    shutdown?.addEventListener('abort', end)
    stream.onAbort(end)
    let joined = false
    try {
      await feed.join()
      joined = true
      let cursor = after ?? feed.latest
      await stream.write('retry: 2000\n: connected\n\n')
      let lastWrite = Date.now()
      while (!gone.signal.aborted && !shutdown?.aborted) {
        const { rows, cursor: next } = await feed.read(cursor, want, STREAM_BATCH)
        for (const e of rows) {
          await stream.writeSSE({ id: String(e.seq), event: e.type, data: JSON.stringify(toEventDto(e, c.var.logger)) })
          lastWrite = Date.now()
        }
        cursor = next
        if (rows.length === STREAM_BATCH) continue
        const idle = KEEP_ALIVE_MS - (Date.now() - lastWrite)
        if (idle <= 0) {
          await stream.write(': keep-alive\n\n')
          lastWrite = Date.now()
        }
        await feed.changed(cursor, Math.max(50, idle > 0 ? idle : KEEP_ALIVE_MS), gone.signal)
      }
    } finally {
      if (joined) feed.leave()
      slot.release()
      shutdown?.removeEventListener('abort', end)
      resolveDone()
    }
  })
}

export const eventsRouter = createRouter()
  .openapi(routes.list, async (c) => {
    const { after, limit, ...filter } = c.req.valid('query')
    const lastEventId = c.req.valid('header')['last-event-id']
    const cursor = lastEventId !== undefined ? Number(lastEventId) : after
    if ((c.req.header('accept') ?? '').includes('text/event-stream')) {
      return stream(c, { ...filter, limit }, cursor)
    }
    return c.json(await page(c, { ...filter, after: cursor ?? 0, limit }), 200)
  })
  .openapi(routes.taskHistory, async (c) => {
    const { id } = c.req.valid('param')
    const task = await getTask(serviceDeps(c), id)
    const p = c.var.principal
    if (p.role === 'agent' && task.agentId !== p.agentId) throw new ApiError('not_found', `No task with id ${id}.`)
    const { after, limit } = c.req.valid('query')
    return c.json(await page(c, { taskId: id, after: after ?? 0, limit }), 200)
  })
  .openapi(routes.agentHistory, async (c) => {
    const { id } = c.req.valid('param')
    assertSelfOrStaff(c.var.principal, id, ['admin', 'operator', 'viewer'])
    await readAgent(serviceDeps(c), id)
    const { after, limit } = c.req.valid('query')
    return c.json(await page(c, { agentId: id, after: after ?? 0, limit }), 200)
  })
