/** Waiting between tries: the backoff of the heartbeat and registration loops. */
const BACKOFF_BASE_MS = 500
export const BACKOFF_MAX_MS = 30_000

/**
 * Capped exponential backoff with jitter: 0.5 s, 1 s, 2 s … up to `maxMs` (30 s), each ×
 * [0.5, 1).
 */
export function backoffMs(failures: number, maxMs = BACKOFF_MAX_MS): number {
  const cap = Math.min(maxMs, BACKOFF_BASE_MS * 2 ** Math.min(failures, 16))
  return Math.round(cap * (0.5 + Math.random() / 2))
}

/** Resolves after `ms`, or as soon as `signal` aborts (at once if it has). */
export const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve()
    const t = setTimeout(done, ms)
    function done() {
      clearTimeout(t)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    signal?.addEventListener('abort', done, { once: true })
  })
