/**
 * The API, read with the operator's token. `apiFetch` is the one place that puts the token
 * on a request: plain reads, the actions (writes) and the event streams (the fleet's, a task
 * log's) alike. The streams are read with fetch, not EventSource, so the token travels in
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

/**
 * What the token says of itself (its payload, not verified): for display only. The page
 * shows the actions to a role that may take them; the API decides, and says why when not.
 */
export function tokenClaims(): { sub?: string; role?: string } {
  try {
    const part = (token.split('.')[1] ?? '').replace(/-/g, '+').replace(/_/g, '/')
    const claims: unknown = JSON.parse(atob(part))
    return claims && typeof claims === 'object' ? claims : {}
  } catch {
    return {}
  }
}

/** Whether the token's role may act on agents and tasks (admin, operator): the page offers the actions. */
export const canAct = () => ['admin', 'operator'].includes(String(tokenClaims().role))

/** What to do when the API refuses the token (401 or 403): the page asks for another. */
export function onTokenRefused(handler: (status: number) => void) {
  refused = handler
}
export const tokenRefused = (status: number) => refused(status)

export interface ApiRequest {
  /** GET unless said. */
  method?: 'GET' | 'POST' | 'PATCH' | 'DELETE'
  /** Sent as JSON. */
  body?: unknown
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
  if (req.body !== undefined) headers['content-type'] = 'application/json'
  return fetch(API + path, {
    method: req.method ?? 'GET',
    headers,
    body: req.body === undefined ? undefined : JSON.stringify(req.body),
    signal: req.signal,
  })
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

/** An error answer (application/problem+json): what the page shows of it. */
export interface Problem {
  status: number
  code: string
  detail: string
}

/**
 * A write. Resolves with null when the API did it, else with its problem (`detail` says why:
 * the page shows it as written). A 401 (the token expired or was replaced) also shows the login;
 * a 403 is the role's limit, shown like any refusal.
 */
export async function send(method: 'POST' | 'PATCH' | 'DELETE', path: string, body?: unknown): Promise<Problem | null> {
  let res: Response
  try {
    res = await apiFetch(path, { method, body })
  } catch {
    return { status: 0, code: 'unreachable', detail: 'The API could not be reached; nothing was changed.' }
  }
  if (res.ok) return null
  if (res.status === 401) tokenRefused(res.status)
  const p: { code?: unknown; detail?: unknown; title?: unknown } = await res.json().catch(() => ({}))
  return {
    status: res.status,
    code: typeof p.code === 'string' ? p.code : String(res.status),
    detail:
      typeof p.detail === 'string' && p.detail
        ? p.detail
        : typeof p.title === 'string'
          ? p.title
          : `Refused (${res.status}).`,
  }
}
