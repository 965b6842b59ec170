import { createMiddleware } from 'hono/factory'
import type { AppBindings } from './context'
import { ApiError } from './errors'

export interface BodyLimitOptions {
  /** Larger bodies get 413 (MAX_BODY_BYTES). */
  maxBytes: number
  /** A refused body is read and dropped up to this many bytes in all… */
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
 * answer; past either bound the 413 says `Connection: close`. A chunked body (no
 * Content-Length) is counted as it arrives and handed on from memory when it fits.
 */
export function limitBody({ maxBytes, drainBytes = 64 * 1024 * 1024, drainMs = 5_000 }: BodyLimitOptions) {
  return createMiddleware<AppBindings>(async (c, next) => {
    const body = c.req.raw.body
    if (!body) return next()
    const chunked = c.req.raw.headers.has('transfer-encoding')
    const declared = chunked ? Number.NaN : Number.parseInt(c.req.raw.headers.get('content-length') ?? '', 10)
    if (Number.isFinite(declared) && declared <= maxBytes) return next()

    const reader = body.getReader()
    const deadline = Date.now() + drainMs
    let size = 0
    let kept: Uint8Array[] | undefined = Number.isFinite(declared) ? undefined : []
    let complete = false
    for (;;) {
      const left = deadline - Date.now()
      const next = left > 0 ? await readWithin(reader, left) : 'timeout'
      if (next === 'timeout') break
      if (next.done) {
        complete = true
        break
      }
      size += next.value.byteLength
      if (size > maxBytes) kept = undefined
      else kept?.push(next.value)
      if (size > maxBytes + drainBytes) break
    }
    if (complete && kept) {
      // A chunked body that fits: hand it on as if it had come in one piece.
      const whole = new Uint8Array(size)
      let at = 0
      for (const part of kept) {
        whole.set(part, at)
        at += part.byteLength
      }
      c.req.raw = new Request(c.req.raw, { body: whole })
      return next()
    }
    if (!complete) {
      reader.cancel().catch(() => {})
      c.header('Connection', 'close')
    }
    throw new ApiError('payload_too_large', `The body exceeds ${maxBytes} bytes (MAX_BODY_BYTES).`)
  })
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
