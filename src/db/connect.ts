import { mkdirSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { PoolClient } from 'pg'
import type { Database, Db } from './client'
import { MIGRATIONS_SCHEMA, MIGRATIONS_TABLE } from './client'
import { schema } from './schema'
import { guardPool } from './tx'

/**
 * Node and Bun: picks the driver from DATABASE_URL.
 * - unset, `memory://`, `file:<dir>` or a directory path → embedded PGlite
 * - `postgres://` / `postgresql://` → node-postgres pool
 * (Workers use src/db/neon.ts instead.)
 */
export const migrationsFolder = resolve(dirname(fileURLToPath(import.meta.url)), '../../drizzle')

export function isPostgresUrl(url: string): boolean {
  return /^postgres(ql)?:\/\//i.test(url)
}

export interface ConnectOptions {
  /** Apply drizzle/ migrations. Default: yes for PGlite (embedded, so nobody else will), no for a server. */
  migrate?: boolean
  /** node-postgres pool size. */
  poolMax?: number
  /** PGlite: start from a saved data dir (tests use it to skip migrations). */
  loadDataDir?: Blob | File
}

export async function connectDatabase(url: string, opts: ConnectOptions = {}): Promise<Database> {
  if (isPostgresUrl(url)) {
    const { Pool } = await import('pg')
    const { drizzle } = await import('drizzle-orm/node-postgres')
    const pool = new Pool({ connectionString: url, max: opts.poolMax ?? 10 })
    const pg = drizzle(pool, { schema })
    const db = pg as unknown as Db
    guardPool<PoolClient>(db, pool, (client) => drizzle(client, { schema }) as unknown as Db)
    if (opts.migrate) {
      const { migrate } = await import('drizzle-orm/node-postgres/migrator')
      await migrate(pg, { migrationsFolder, migrationsSchema: MIGRATIONS_SCHEMA, migrationsTable: MIGRATIONS_TABLE })
    }
    return { db, driver: 'node-postgres', close: () => pool.end() }
  }

  const { PGlite } = await import('@electric-sql/pglite')
  const { drizzle } = await import('drizzle-orm/pglite')
  let dataDir: string | undefined
  if (url && url !== 'memory://') {
    dataDir = resolve(url.replace(/^file:(\/\/)?/, ''))
    mkdirSync(dataDir, { recursive: true })
  }
  const client = new PGlite({ dataDir, loadDataDir: opts.loadDataDir })
  await client.waitReady
  const db = drizzle(client, { schema })
  if (opts.migrate !== false && !opts.loadDataDir) {
    const { migrate } = await import('drizzle-orm/pglite/migrator')
    await migrate(db, { migrationsFolder, migrationsSchema: MIGRATIONS_SCHEMA, migrationsTable: MIGRATIONS_TABLE })
  }
  return {
    db: db as unknown as Db,
    driver: 'pglite',
    close: () => client.close(),
    dumpDataDir: () => client.dumpDataDir('none'),
  }
}
