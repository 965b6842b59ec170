import { neonConfig, Pool, type PoolClient } from '@neondatabase/serverless'
import { drizzle } from 'drizzle-orm/neon-serverless'
import type { Database, Db } from './client'
import { schema } from './schema'
import { guardPool } from './tx'

/**
 * The Workers driver: `@neondatabase/serverless` Pool over WebSocket (interactive
 * transactions work, so the sweep's locking is the same as under node-postgres).
 * Workers may not share I/O objects between requests: make one per request (or per cron
 * run) and close it with `waitUntil`.
 *
 * `wsProxy` (NEON_WS_PROXY, "host:port") points the driver at a WebSocket→TCP proxy
 * (scripts/ws-proxy.ts) so it can reach a plain Postgres locally and in CI; unset in
 * production, where Neon terminates the WebSocket itself.
 */
export function neonDatabase(url: string, wsProxy = ''): Database {
  if (wsProxy) {
    neonConfig.wsProxy = (host, port) => `${wsProxy}/v1?address=${host}:${port}`
    neonConfig.useSecureWebSocket = false
    neonConfig.pipelineTLS = false
    neonConfig.pipelineConnect = false
  }
  const pool = new Pool({ connectionString: url, max: 5 })
  const db = drizzle(pool, { schema }) as unknown as Db
  guardPool<PoolClient>(db, pool, (client) => drizzle(client, { schema }) as unknown as Db)
  return { db, driver: 'neon', close: () => pool.end() }
}
