/**
 * The API, read with the operator's token. `apiFetch` is the one place that puts the token
 * on a request: plain reads and the event streams (the fleet's, a task log's) alike. The streams are read with fetch, not EventSource, so the token travels in
 * the Authorization header and never in a URL (which access logs would keep).
 */
const API = '/api/v1'
const TOKEN_KEY = 'agenticcp.token'

let token = localStorage.getItem(TOKEN_KEY) || ''
let refused: (status: number) => void = () => {}

export const currentToken = () => token

/** The token pasted at login, kept in this browser only. */
export function saveToken(value: string) {
  token = value
  localStorage.setItem(TOKEN_KEY, value)
}

/** What the token says of itself (its payload, not verified): for display only. */
export function tokenClaims(): { sub?: string; role?: string } {
  try {
    const part = (token.split('.')[1] ?? '').replace(/-/g, '+').replace(/_/g, '/')
    const claims: unknown = JSON.parse(atob(part))
    return claims && typeof claims === 'object' ? claims : {}
  } catch {
    return {}
  }
}

/** What to do when the API refuses the token (401 or 403): the page asks for another. */
export function onTokenRefused(handler: (status: number) => void) {
  refused = handler
}
export const tokenRefused = (status: number) => refused(status)

export interface ApiRequest {
  /** `text/event-stream` for a stream. */
  accept?: string
  /** Where a stream resumes: the id of the last event read. */
  lastEventId?: string
  signal?: AbortSignal
}

/** A request to `/api/v1` + path, with the token. */
export function apiFetch(path: string, req: ApiRequest = {}): Promise<Response> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` }
  if (req.accept !== undefined) headers.accept = req.accept
  if (req.lastEventId !== undefined) headers['last-event-id'] = req.lastEventId
  return fetch(API + path, { headers, signal: req.signal })
}

/** A JSON read; a refused token shows the login (and throws 'auth'), any other failure throws. */
export async function get<T>(path: string): Promise<T> {
  const res = await apiFetch(path)
  if (res.status === 401 || res.status === 403) {
    tokenRefused(res.status)
    throw new Error('auth')
  }
  if (!res.ok) throw new Error(`${path}: ${res.status}`)
  return res.json() as Promise<T>
}
