import type { Context } from 'hono'
import { streamSSE } from 'hono/streaming'
import { assertSelfOrStaff } from '../../lib/auth'
import type { AppBindings } from '../../lib/context'
import { serviceDeps } from '../../lib/context'
import { createRouter } from '../../lib/create-app'
import { ApiError } from '../../lib/errors'
import { readAgent } from '../../services/agents'
import {
  EVENTS_CHANNEL,
  type EventFilter,
  latestSeq,
  readEvents,
  sequenceEvents,
  toEventDto,
} from '../../services/events'
import { getTask } from '../../services/tasks'
import * as routes from './events.routes'

const KEEP_ALIVE_MS = 15_000
/** A stream re-reads the database at least this often, in case a bus message was lost. */
const POLL_MS = 2_000
const STREAM_BATCH = 500

async function page(c: Context<AppBindings>, f: EventFilter) {
  const db = c.var.deps.database.db
  await sequenceEvents(db)
  const rows = await readEvents(db, f)
  return { items: rows.map(toEventDto), nextAfter: rows.at(-1)?.seq ?? f.after }
}

/**
 * The live stream: read what is new (after the client's cursor), write it, then sleep
 * until the bus says something committed (or POLL_MS passes), sending a keep-alive
 * comment every 15 s. The bus only wakes the loop; the rows always come from the database,
 * so a dropped message costs latency, never an event.
 */
function stream(c: Context<AppBindings>, filter: Omit<EventFilter, 'after'>, after: number | undefined) {
  const { database, kv, shutdown } = c.var.deps
  const db = database.db
  let resolveDone: () => void = () => {}
  database.hold?.(new Promise<void>((r) => (resolveDone = r)))
  return streamSSE(c, async (sse) => {
    let wake: (() => void) | undefined
    const unsubscribe = kv.subscribe(EVENTS_CHANNEL, () => wake?.())
    const onShutdown = () => wake?.()
    shutdown?.addEventListener('abort', onShutdown)
    let closed = false
    sse.onAbort(() => {
      closed = true
      wake?.()
    })
    try {
      await sequenceEvents(db)
      let cursor = after ?? (await latestSeq(db))
      await sse.write('retry: 2000\n: connected\n\n')
      let lastWrite = Date.now()
      while (!closed && !shutdown?.aborted) {
        const rows = await readEvents(db, { ...filter, after: cursor, limit: STREAM_BATCH })
        for (const e of rows) {
          await sse.writeSSE({ id: String(e.seq), event: e.type, data: JSON.stringify(toEventDto(e)) })
          cursor = e.seq ?? cursor
          lastWrite = Date.now()
        }
        if (rows.length === STREAM_BATCH) continue
        const idle = KEEP_ALIVE_MS - (Date.now() - lastWrite)
        if (idle <= 0) {
          await sse.write(': keep-alive\n\n')
          lastWrite = Date.now()
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.max(50, Math.min(POLL_MS, idle > 0 ? idle : KEEP_ALIVE_MS)))
          wake = () => {
            clearTimeout(timer)
            resolve()
          }
        })
        wake = undefined
        if (!closed) await sequenceEvents(db)
      }
    } finally {
      unsubscribe()
      shutdown?.removeEventListener('abort', onShutdown)
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
    const { task } = await getTask(serviceDeps(c), id)
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
