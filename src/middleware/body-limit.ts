import { createMiddleware } from 'hono/factory'
import { ApiError } from '../lib/errors'
import type { AppBindings } from './context'

export interface BodyLimitOptions {
  /** Larger bodies get 413 (MAX_BODY_BYTES). */
  maxBytes: number
  /** The rest of a refused body is read and dropped up to this many bytes… */
  drainBytes?: number
  /** …and for at most this long, so the connection stays usable. */
  drainMs?: number
}

/**
 * MAX_BODY_BYTES, answered so keep-alive clients can read the 413. Refusing a body
 * without reading it leaves its bytes on the connection: the server then closes it while
 * the client is still sending, and a keep-alive client (undici, Node's fetch) sees a
 * socket error instead of the 413, or loses its next request on that socket. So the rest
 * of a refused body is read and dropped (up to `drainBytes`, within `drainMs`) before the
 * answer; past either bound, or when the declared length is beyond them anyway, the 413
 * says `Connection: close`.
 *
 * A body with a Content-Length over the limit is refused before the route runs. A chunked
 * one (no length) is counted as the route reads it, passing through untouched: no copy in
 * memory, no deadline for a slow but small upload; the moment it passes the limit the read
 * fails and the answer is the 413.
 */
export function limitBody({ maxBytes, drainBytes = 64 * 1024 * 1024, drainMs = 5_000 }: BodyLimitOptions) {
  const refuse = () => new ApiError('payload_too_large', `The body exceeds ${maxBytes} bytes (MAX_BODY_BYTES).`)
  return createMiddleware<AppBindings>(async (c, next) => {
    // Decide from the headers first: on Node, touching `c.req.raw.body` builds a whole
    // WHATWG Request for a body the route can otherwise read straight from the socket.
    const method = c.req.method
    if (method === 'GET' || method === 'HEAD') return next()
    const headers = c.req.raw.headers
    const chunked = headers.has('transfer-encoding')
    const declared = chunked ? Number.NaN : Number.parseInt(headers.get('content-length') ?? '', 10)
    if (Number.isFinite(declared) && declared <= maxBytes) return next()
    const body = c.req.raw.body
    if (!body) return next()
    if (Number.isFinite(declared)) {
      const reader = body.getReader()
      const drained = declared <= maxBytes + drainBytes && (await drain(reader, declared, drainMs))
      if (!drained) {
        reader.cancel().catch(() => {})
        c.header('Connection', 'close')
      }
      throw refuse()
    }

    const reader = body.getReader()
    let seen = 0
    let over = false
    const counted = new ReadableStream<Uint8Array>({
      async pull(controller) {
        const { done, value } = await reader.read()
        if (done) return controller.close()
        seen += value.byteLength
        if (seen > maxBytes) {
          over = true
          controller.error(refuse())
          return
        }
        controller.enqueue(value)
      },
      cancel: (reason) => reader.cancel(reason),
    })
    c.req.raw = new Request(c.req.raw, { body: counted, duplex: 'half' } as RequestInit)
    await next()
    if (over) {
      // Whatever the route made of the failed read, the answer is the 413.
      if (!(await drain(reader, maxBytes + drainBytes - seen, drainMs))) {
        reader.cancel().catch(() => {})
        c.header('Connection', 'close')
      }
      throw refuse()
    }
  })
}

/** Reads and drops up to `bytes` more; true when the body ended within them and `ms`. */
async function drain(reader: ReadableStreamDefaultReader<Uint8Array>, bytes: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms
  let left = bytes
  for (;;) {
    const wait = deadline - Date.now()
    if (wait <= 0) return false
    const next = await readWithin(reader, wait)
    if (next === 'timeout') return false
    if (next.done) return true
    left -= next.value.byteLength
    if (left < 0) return false
  }
}

async function readWithin(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  ms: number,
): Promise<ReadableStreamReadResult<Uint8Array> | 'timeout'> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), ms)
  })
  try {
    return await Promise.race([reader.read(), timeout])
  } catch {
    return 'timeout' // the client went away: nothing left to keep the connection for
  } finally {
    clearTimeout(timer)
  }
}
