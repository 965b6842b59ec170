import { DrizzleQueryError } from 'drizzle-orm'
import type { Db, Tx } from './client'

/** SQLSTATE classes are two digits, or F0, HV, P0, XX: a Node errno such as EPIPE is none. */
const SQLSTATE = /^([0-9][0-9A-Z]|F0|HV|P0|XX)[0-9A-Z]{3}$/

/** The pool had no connection to give within its timeout (or could not open one). */
export class DatabaseUnavailableError extends Error {
  override name = 'DatabaseUnavailableError'
}

/** The SQLSTATE of a database error, looking through driver and drizzle wrappers. */
export function pgErrorCode(err: unknown): string | undefined {
  let e: unknown = err
  for (let i = 0; i < 5 && e && typeof e === 'object'; i++) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string' && SQLSTATE.test(code)) return code
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
    if (e instanceof DatabaseUnavailableError) return true
    if (e instanceof DrizzleQueryError && !(e.cause && typeof e.cause === 'object' && 'code' in e.cause)) return true
    const { code } = e as { code?: unknown }
    if (typeof code === 'string' && /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENOTFOUND|EPIPE|EAI_AGAIN)$/.test(code))
      return true
    e = (e as { cause?: unknown }).cause
  }
  return false
}

/** What we use of a pg-pool style Pool (node-postgres, and the Neon driver's fork of it). */
export interface PoolLike<C extends PooledClient = PooledClient> {
  connect(): Promise<C>
  on(event: 'error', listener: (err: Error) => void): unknown
  on(event: 'connect', listener: (client: C) => void): unknown
}
export interface PooledClient {
  on(event: 'error', listener: (err: Error) => void): unknown
  release(err?: Error | boolean): void
}

/**
 * Makes a pooled drizzle database survive connections that die (Postgres restarts,
 * `pg_terminate_backend`, a network cut):
 *
 * - A dying connection emits `'error'` on its client. pg-pool listens only while the
 *   client is idle and removes its listener while the client is checked out, so without a
 *   listener of our own that event is unhandled and ends the process. With it, the query
 *   in flight fails (the request answers 503 with Retry-After).
 * - drizzle's pooled `transaction()` (0.45) runs BEGIN before the try/finally that releases
 *   the client (drizzle-orm#6241), so a BEGIN on a dead connection leaks the client, and
 *   after a few such leaks every request waits forever for an empty pool. Transactions here
 *   check the client out themselves, run drizzle's transaction on that one client, and
 *   always release it; a client whose connection failed is released with the error, so
 *   the pool destroys it instead of handing it out again.
 */
export function guardPool<C extends PooledClient>(db: Db, pool: PoolLike<C>, onClient: (client: C) => Db): void {
  const ignore = () => {}
  pool.on('error', ignore) // idle clients
  pool.on('connect', (client) => client.on('error', ignore)) // checked-out clients, for their whole life
  const perClient = new WeakMap<C, Db>()
  db._.session.transaction = async (fn, config) => {
    const client = await pool.connect().catch((err: unknown) => {
      // No connection within the pool's timeout, or none could be opened: 503, not 500.
      throw new DatabaseUnavailableError(`no database connection: ${err instanceof Error ? err.message : err}`, {
        cause: err,
      })
    })
    let broken: Error | undefined
    try {
      let single = perClient.get(client)
      if (!single) {
        single = onClient(client)
        perClient.set(client, single)
      }
      return await single.transaction(fn as (tx: Tx) => Promise<never>, config)
    } catch (err) {
      if (isDatabaseUnavailable(err)) broken = err instanceof Error ? err : new Error(String(err))
      throw err
    } finally {
      client.release(broken)
    }
  }
}
