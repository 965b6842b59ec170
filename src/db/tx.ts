import { DrizzleQueryError } from 'drizzle-orm'
import type { Db, Tx } from './client'

/** The SQLSTATE of a database error, looking through driver and drizzle wrappers. */
export function pgErrorCode(err: unknown): string | undefined {
  let e: unknown = err
  for (let i = 0; i < 5 && e && typeof e === 'object'; i++) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code
    e = (e as { cause?: unknown }).cause
  }
  return undefined
}

export function pgConstraint(err: unknown): string | undefined {
  let e: unknown = err
  for (let i = 0; i < 5 && e && typeof e === 'object'; i++) {
    const c = (e as { constraint?: unknown }).constraint
    if (typeof c === 'string') return c
    e = (e as { cause?: unknown }).cause
  }
  return undefined
}

const RETRYABLE = new Set(['40001', '40P01']) // serialization_failure, deadlock_detected

/**
 * Runs `fn` in a transaction, retrying a few times when Postgres aborts it for a
 * serialization failure or a deadlock (both are safe to run again from the start).
 */
export async function withTx<T>(db: Db, fn: (tx: Tx) => Promise<T>, attempts = 4): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await db.transaction(fn)
    } catch (err) {
      if (i >= attempts || !RETRYABLE.has(pgErrorCode(err) ?? '')) throw err
      await new Promise((r) => setTimeout(r, Math.random() * 20 * i))
    }
  }
}

/**
 * True when a query failed because the database could not be reached or was closed (no
 * SQLSTATE from the server, or a socket error), not because of what it was asked.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  const state = pgErrorCode(err)
  if (state) return state.startsWith('08') || state === '57P01' || state === '57P03'
  let e: unknown = err
  for (let i = 0; i < 5 && e && typeof e === 'object'; i++) {
    if (e instanceof DrizzleQueryError && !(e.cause && typeof e.cause === 'object' && 'code' in e.cause)) return true
    const { code } = e as { code?: unknown }
    if (typeof code === 'string' && /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENOTFOUND|EPIPE|EAI_AGAIN)$/.test(code))
      return true
    e = (e as { cause?: unknown }).cause
  }
  return false
}

/** A log-safe description: a failed query names its SQL and the cause, never the bound values. */
export function describeError(err: unknown): string {
  if (err instanceof DrizzleQueryError) {
    const cause = err.cause instanceof Error ? err.cause.message : 'no cause'
    return `${cause} (query: ${err.query.slice(0, 300)})`
  }
  return err instanceof Error ? err.message : String(err)
}
