import { drizzle } from 'drizzle-orm/node-postgres'
import pg from 'pg'
import type { Database, Db } from './client'
import { schema } from './schema'
import { guardPool } from './tx'

/**
 * The Workers driver behind a Hyperdrive binding: node-postgres over TCP (Workers'
 * `cloudflare:sockets`, through pg-cloudflare under `nodejs_compat`) to Hyperdrive, which
 * keeps warm connections to the origin Postgres near it. Any Postgres works behind it, not
 * only Neon. Like the Neon pool, one per request (Workers may not share I/O objects), but a
 * connection here ends at Hyperdrive in the same location, so opening one is cheap.
 */
export function hyperdriveDatabase(connectionString: string): Database {
  const pool = new pg.Pool({ connectionString, max: 5, connectionTimeoutMillis: 10_000 })
  const db = drizzle(pool, { schema }) as unknown as Db
  guardPool<pg.PoolClient>(db, pool, (client) => drizzle(client, { schema }) as unknown as Db)
  return { db, driver: 'hyperdrive', close: () => pool.end() }
}
