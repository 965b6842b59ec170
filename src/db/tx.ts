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
 * SQLSTATEs of a server that cannot serve the connection now, whatever was asked: class 08
 * (connection exception), 57P01 admin_shutdown (`pg_terminate_backend`, a fast shutdown),
 * 57P02 crash_shutdown, 57P03 cannot_connect_now (starting up, shutting down, in recovery),
 * 57P05 idle_session_timeout, 53300 too_many_connections.
 */
const UNAVAILABLE_STATES = /^(08...|57P0[1235]|53300)$/

/** Node's errno codes of a socket that could not connect or was cut. */
const SOCKET_CODES =
  /^(ECONNREFUSED|ECONNRESET|ECONNABORTED|ETIMEDOUT|ENOTFOUND|EAI_AGAIN|EPIPE|EHOSTUNREACH|EHOSTDOWN|ENETUNREACH|ENETDOWN)$/

/**
 * What node-postgres and pg-pool (and the Neon pool, their fork) throw, without a code, when
 * a connection cannot be opened, ends, or stops answering: a connection closed during the
 * startup handshake or a query ("Connection terminated unexpectedly"), the connect timeout
 * (`connectionTimeoutMillis`: "timeout exceeded when trying to connect", "Connection
 * terminated due to connection timeout", "timeout expired"), `query_timeout` ("Query read
 * timeout"), a client whose connection failed or closed, a pool already ended (shutdown).
 * Their messages are all that tells these from a bug of ours; test/faults.test.ts plays
 * each way of failing against the real driver, so a driver that words them otherwise fails
 * it.
 */
const DRIVER_CONNECTION_ERRORS =
  /^(Connection terminated( unexpectedly| due to connection timeout)?|timeout exceeded when trying to connect|timeout expired|Query read timeout|Client has encountered a connection error and is not queryable|Client was closed and is not queryable|Cannot use a pool after calling end on the pool)$/

/**
 * True when a query failed because the database could not be reached, refused the
 * connection, or closed it (a SQLSTATE of UNAVAILABLE_STATES, or no SQLSTATE: a socket
 * error, the driver's connection errors, no connection from the pool), not because of what
 * it was asked. The app answers these 503 with Retry-After, and a pooled client that failed
 * so is destroyed.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  const state = pgErrorCode(err)
  if (state) return UNAVAILABLE_STATES.test(state)
  let e: unknown = err
  for (let i = 0; i < 5 && e && typeof e === 'object'; i++) {
    if (e instanceof DatabaseUnavailableError) return true
    if (e instanceof DrizzleQueryError && !(e.cause && typeof e.cause === 'object' && 'code' in e.cause)) return true
    const { code, message } = e as { code?: unknown; message?: unknown }
    if (typeof code === 'string' && SOCKET_CODES.test(code)) return true
    if (code === undefined && typeof message === 'string' && DRIVER_CONNECTION_ERRORS.test(message)) return true
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
