/**
 * The service not answering, in words: why (the URL, and the cause fetch keeps in
 * `err.cause`: ECONNREFUSED, DNS, TLS, a timeout, or an answer that says "later"), and each
 * retry with its delay, so that a runner that cannot reach its service says so at every try
 * rather than once.
 */
import { ApiClientError } from '../client'
import { backoffMs, sleep } from './backoff'
import type { AgentLogger } from './log'

/** A try made while the service is unreachable gives up after this long (a hung connection). */
export const RETRY_TIMEOUT_MS = 10_000
/** A try still unanswered after this long says so (so silence never outlasts the delay announced by much). */
const STILL_WAITING_MS = 5_000

/** What fetch's cause codes mean, said plainly. */
const causes: Record<string, string> = {
  ECONNREFUSED: 'connection refused: nothing listens there',
  ECONNRESET: 'the connection was reset',
  EPIPE: 'the connection was closed',
  ENOTFOUND: 'the host name does not resolve (DNS)',
  EAI_AGAIN: 'the host name could not be resolved for now (DNS)',
  EHOSTUNREACH: 'no route to the host',
  ENETUNREACH: 'the network is unreachable',
  ETIMEDOUT: 'the connection timed out',
  UND_ERR_CONNECT_TIMEOUT: 'the connection timed out',
  UND_ERR_SOCKET: 'the connection was closed by the other side',
  UND_ERR_HEADERS_TIMEOUT: 'no answer in time',
  UND_ERR_BODY_TIMEOUT: 'the answer stalled',
  ERR_SSL_WRONG_VERSION_NUMBER:
    'TLS handshake failed: the server does not speak TLS there (http:// rather than https://?)',
  DEPTH_ZERO_SELF_SIGNED_CERT:
    'TLS: the server’s certificate is self-signed (not trusted here; see NODE_EXTRA_CA_CERTS)',
  SELF_SIGNED_CERT_IN_CHAIN:
    'TLS: a self-signed certificate in the server’s chain (not trusted here; see NODE_EXTRA_CA_CERTS)',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    'TLS: the server’s certificate cannot be verified (missing intermediate or unknown CA)',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    'TLS: the server’s certificate is issued by a CA not trusted here (see NODE_EXTRA_CA_CERTS)',
  CERT_HAS_EXPIRED: 'TLS: the server’s certificate has expired',
  ERR_TLS_CERT_ALTNAME_INVALID: 'TLS: the server’s certificate is not for this host name',
}

interface Caused {
  code?: unknown
  message?: unknown
  cause?: unknown
  errors?: unknown
}

const firstLine = (s: string) => (s.split('\n')[0] ?? '').slice(0, 200)

/** The innermost error with a code, following `cause` (fetch) and `errors` (AggregateError: one per address tried). */
function rootCause(err: unknown): Caused | undefined {
  let e = err as Caused | undefined
  for (let depth = 0; e && typeof e === 'object' && depth < 5; depth++) {
    if (typeof e.code === 'string') return e
    const inner = Array.isArray(e.errors) ? e.errors[0] : e.cause
    if (!inner || typeof inner !== 'object') break
    e = inner as Caused
  }
  return e
}

/**
 * Why a call got no usable answer: a short code (`ECONNREFUSED`, `ENOTFOUND`, `timeout`,
 * `service_unavailable`, …) and a sentence.
 */
export function unreachableCause(err: unknown): { code: string; text: string } {
  if (err instanceof ApiClientError) return { code: err.code, text: `it answered ${err.message}` }
  const name = (err as { name?: unknown } | undefined)?.name
  if (name === 'TimeoutError') return { code: 'timeout', text: 'no answer in time (timeout)' }
  if (name === 'AbortError') return { code: 'aborted', text: 'the call was aborted' }
  const root = rootCause(err)
  const code = typeof root?.code === 'string' ? root.code : undefined
  const message = typeof root?.message === 'string' ? firstLine(root.message) : firstLine(String(err))
  if (code) {
    const said =
      causes[code] ?? (/^(ERR_SSL_|ERR_TLS_|CERT_|ERR_OSSL_)/.test(code) ? `TLS handshake failed: ${message}` : message)
    return { code, text: `${said} (${code})` }
  }
  // fetch's own refusals have no code: "bad port" (a port fetch never calls, like 9), …
  return { code: 'fetch_failed', text: message === 'fetch failed' ? message : `fetch failed: ${message}` }
}

/** A delay as people read it: "0.6 s", "7 s". */
export function seconds(ms: number): string {
  return ms < 9_500 ? `${Number((ms / 1000).toFixed(1))} s` : `${Math.round(ms / 1000)} s`
}

/**
 * Tries of one call (the heartbeat, the registration) while the service does not answer:
 * each failure logged with its URL, cause and the delay before the next try, and a try that
 * hangs says so while it waits.
 */
export class Retrying {
  failures = 0
  private since = 0

  constructor(
    private readonly logger: AgentLogger,
    /** The service's URL, named in every line. */
    private readonly url: string,
    /** What is being tried ("heartbeat", "registration"). */
    private readonly what: string,
  ) {}

  /** A try's time limit: its usual one, or RETRY_TIMEOUT_MS while the service is not answering. */
  timeoutMs(usual: number): number {
    return this.failures > 0 ? Math.min(usual, RETRY_TIMEOUT_MS) : usual
  }

  /** While the service is not answering, a try that takes long says so once; the returned function ends the watch. */
  watch(): () => void {
    if (this.failures === 0) return () => {}
    const t = setTimeout(() => {
      this.logger.warn(
        `still no answer from ${this.url} after ${seconds(STILL_WAITING_MS)} (${this.what}, try ${this.failures + 1}); giving up on this try at ${seconds(RETRY_TIMEOUT_MS)}`,
        { url: this.url },
      )
    }, STILL_WAITING_MS)
    t.unref?.()
    return () => clearTimeout(t)
  }

  /** Logs a failed try (cause, next delay) and waits that delay (or until `signal`). */
  async failed(err: unknown, signal: AbortSignal, maxMs?: number): Promise<void> {
    if (this.failures === 0) this.since = Date.now()
    const delay = backoffMs(this.failures++, maxMs)
    const { code, text } = unreachableCause(err)
    this.logger.warn(`service unreachable at ${this.url} (${this.what}): ${text}; retrying in ${seconds(delay)}`, {
      url: this.url,
      code,
      tries: this.failures,
      retryInMs: delay,
    })
    await sleep(delay, signal)
  }

  /** An answer came: says so if tries had failed. */
  answered(): void {
    if (this.failures === 0) return
    this.logger.info(
      `service reachable again at ${this.url} after ${this.failures} failed ${this.failures === 1 ? 'try' : 'tries'} (${seconds(Date.now() - this.since)})`,
      { url: this.url, after: this.failures },
    )
    this.failures = 0
  }
}
