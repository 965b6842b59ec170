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
