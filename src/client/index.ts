/**
 * A typed client for the whole API, built on `hono/client`: every path, parameter, body and
 * answer is typed from the server's own routes (`App`). Only types come from the server, so
 * this module can ship on its own.
 *
 *   const api = createClient({ url: 'http://127.0.0.1:8000', token: process.env.TOKEN })
 *   const task = await ok(api.api.v1.tasks.$post({ json: { name: 'hi', type: 'shell' } }))
 *
 * `ok()` gives the body of a 2xx answer, typed, and throws `ApiClientError` (with the
 * problem's stable `code`) for any other; network failures reject as the runtime's fetch
 * rejects (a `TypeError`), and `isRetryable()` tells the two kinds apart for a caller that
 * retries.
 */
import { type ClientResponse, hc } from 'hono/client'
import type { App } from '../app'

export type { App }

export interface ClientOptions {
  /** The service's base URL, e.g. http://127.0.0.1:8000 */
  url: string
  /** A bearer token, or a function giving the current one (read on every request). */
  token?: string | (() => string | undefined)
  /** Another fetch (tests, proxies); the global one by default. */
  fetch?: typeof fetch
  /** Extra headers on every request. */
  headers?: Record<string, string>
}

export function createClient(options: ClientOptions) {
  const { url, token, headers = {} } = options
  const current = typeof token === 'function' ? token : () => token
  return hc<App>(url.replace(/\/+$/, ''), {
    fetch: options.fetch,
    headers: () => {
      const t = current()
      return t ? { ...headers, authorization: `Bearer ${t}` } : headers
    },
  })
}

export type Client = ReturnType<typeof createClient>

/** An answer of the service that is not a success: its problem document, typed. */
export class ApiClientError extends Error {
  readonly status: number
  /** The problem's stable code (`not_found`, `stale_attempt`, …), or `http_<status>`. */
  readonly code: string
  readonly detail?: string
  /** Seconds the service asked to wait (Retry-After), if it said. */
  readonly retryAfterSeconds?: number
  /** The whole problem document. */
  readonly body: Record<string, unknown>

  constructor(status: number, body: Record<string, unknown>, retryAfter?: string | null) {
    const code = typeof body.code === 'string' ? body.code : `http_${status}`
    const detail = typeof body.detail === 'string' ? body.detail : undefined
    super(`${status} ${code}${detail ? `: ${detail}` : ''}`)
    this.name = 'ApiClientError'
    this.status = status
    this.code = code
    this.detail = detail
    this.body = body
    const seconds = retryAfter ? Number(retryAfter) : Number.NaN
    if (Number.isFinite(seconds)) this.retryAfterSeconds = seconds
  }
}

type SuccessStatus = 200 | 201 | 202 | 204
/** The body type of the success answers of a typed client call. */
export type Ok<R> = R extends ClientResponse<infer T, infer S, infer _F> ? (S extends SuccessStatus ? T : never) : never

/** Awaits a typed call; the body of a 2xx answer (null for 204), else throws ApiClientError. */
export async function ok<R extends ClientResponse<unknown, number, string>>(call: Promise<R> | R): Promise<Ok<R>> {
  const res = await call
  if (res.ok) {
    if (res.status === 204) return null as Ok<R>
    const text = await res.text()
    return (text ? JSON.parse(text) : null) as Ok<R>
  }
  let body: Record<string, unknown> = {}
  const text = await res.text().catch(() => '')
  try {
    const parsed = text ? JSON.parse(text) : {}
    if (parsed && typeof parsed === 'object') body = parsed as Record<string, unknown>
  } catch {
    body = { detail: text.slice(0, 500) }
  }
  throw new ApiClientError(res.status, body, res.headers.get('retry-after'))
}

/**
 * Whether trying the same call again later may succeed: no answer came (fetch rejected:
 * refused, reset, timed out), or the service said it is busy or unavailable (429, 502–504, or 503 while its
 * database is away or behind).
 */
export function isRetryable(err: unknown): boolean {
  if (err instanceof ApiClientError) return err.status === 429 || err.status === 408 || err.status >= 500
  // Not an answer of the service: fetch rejected (refused, reset, DNS, timeout, abort).
  return true
}
