import { existsSync, mkdirSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { PoolClient } from 'pg'
import { describeError } from '../lib/logger'
import type { Database, Db } from './client'
import { MIGRATIONS_SCHEMA, MIGRATIONS_TABLE } from './client'
import { schema } from './schema'
import { guardPool, pgErrorCode } from './tx'

/**
 * Node and Bun: picks the driver from DATABASE_URL.
 * - `memory://`, `file:<dir>` or a directory path (or empty: in memory) → embedded PGlite
 *   (the server turns an unset DATABASE_URL into `<DATA_DIR>/pglite` before calling this)
 * - `postgres://` / `postgresql://` → node-postgres pool
 * - anything else (`mysql://…`) → DatabaseUrlError, naming the forms above
 * (Workers use src/db/neon.ts instead.)
 */
export const migrationsFolder = findMigrationsFolder()

/**
 * drizzle/ beside the code: `../../drizzle` from src/db/ (sources run by tsx), `../drizzle`
 * from dist/ (the build, where this module is bundled into dist/*.js).
 */
function findMigrationsFolder(): string {
  const here = dirname(fileURLToPath(import.meta.url))
  const candidates = [resolve(here, '../../drizzle'), resolve(here, '../drizzle')]
  return candidates.find((dir) => existsSync(join(dir, 'meta', '_journal.json'))) ?? (candidates[0] as string)
}

export function isPostgresUrl(url: string): boolean {
  return /^postgres(ql)?:\/\//i.test(url)
}

/** What DATABASE_URL may be under Node and Bun, as a refusal names it. */
const DATABASE_URL_FORMS =
  'use postgres:// or postgresql:// (a Postgres server), or memory://, file:<dir> or a directory path (the embedded database)'

/** A DATABASE_URL Node and Bun cannot use; its message is one line that shows the URL's scheme, never the rest. */
export class DatabaseUrlError extends Error {
  override name = 'DatabaseUrlError'
}

/**
 * Why Node and Bun cannot use this DATABASE_URL (one line), or undefined when they can: a
 * Postgres URL, `memory://`, `file:<dir>`, a directory path, or empty (the server's default).
 * Any other scheme (`mysql://…`, `redis://…`, `sqlite:…`) is refused rather than taken for a
 * directory of that name. A scheme has two letters or more, so `C:\data` is a path.
 */
export function databaseUrlProblem(url: string): string | undefined {
  if (url === '' || url === 'memory://' || isPostgresUrl(url)) return undefined
  const scheme = /^([a-z][a-z0-9+.-]+):(\/\/)?/i.exec(url)
  if (!scheme) return undefined // a directory path
  const name = (scheme[1] as string).toLowerCase()
  if (name === 'file') {
    return url.slice(scheme[0].length) ? undefined : `DATABASE_URL "${url}" names no directory: ${DATABASE_URL_FORMS}`
  }
  if (name === 'memory') return `DATABASE_URL: the in-memory database is exactly "memory://", with nothing after it`
  return `DATABASE_URL "${scheme[0]}…" is not a database this service takes: ${DATABASE_URL_FORMS}`
}

/** Throws DatabaseUrlError when Node and Bun cannot use this DATABASE_URL (databaseUrlProblem). */
export function assertDatabaseUrl(url: string): void {
  const problem = databaseUrlProblem(url)
  if (problem) throw new DatabaseUrlError(problem)
}

/** The directory of an embedded database URL (`file:…` or a path); undefined for memory. */
export function pgliteDirectory(url: string): string | undefined {
  if (!url || url === 'memory://' || isPostgresUrl(url)) return undefined
  return resolve(url.replace(/^file:(\/\/)?/i, ''))
}

export interface ConnectOptions {
  /** Apply drizzle/ migrations. Default: yes for PGlite (embedded, so nobody else will), no for a server. */
  migrate?: boolean
  /** node-postgres pool size. */
  poolMax?: number
  /** PGlite: start from a saved data dir (tests use it to skip migrations). */
  loadDataDir?: Blob | File
  /** node-postgres: how long opening a connection, or waiting for a free one, may take. */
  connectTimeoutMs?: number
  /** Called when another process holds the migration lock and this one waits for it. */
  onMigrationWait?: () => void
}

/**
 * How long a migration statement may wait for a table lock: past it the migration fails
 * (and the start with it) instead of queueing every query on that table behind it.
 */
const MIGRATION_LOCK_TIMEOUT = '10s'

/** An arbitrary, fixed advisory-lock key: one migrator at a time per database. */
const MIGRATION_LOCK_KEY = 7_240_431_003

/** How long a new connection (or a wait for a free one in the pool) may take before failing with 503. */
const CONNECT_TIMEOUT_MS = 10_000

export async function connectDatabase(url: string, opts: ConnectOptions = {}): Promise<Database> {
  assertDatabaseUrl(url)
  if (isPostgresUrl(url)) {
    const { Pool } = await import('pg')
    const { drizzle } = await import('drizzle-orm/node-postgres')
    const pool = new Pool({
      connectionString: url,
      // No JIT: see migration 0007 (which turns it off for the database where it may).
      options: '-c jit=off',
      max: opts.poolMax ?? 10,
      connectionTimeoutMillis: opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS,
    })
    const db = drizzle(pool, { schema }) as unknown as Db
    guardPool<PoolClient>(db, pool, (client) => drizzle(client, { schema }) as unknown as Db)
    // Every statement goes through some client's query(): count them for /metrics and benches.
    let statements = 0
    pool.on('connect', (client) => {
      const query = client.query.bind(client) as (...args: unknown[]) => unknown
      ;(client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args) => {
        statements++
        return query(...args)
      }
    })
    if (opts.migrate) {
      const { migrate } = await import('drizzle-orm/node-postgres/migrator')
      // Instances starting together migrate once: the first takes the lock and migrates,
      // the others wait for it and then find nothing left to do.
      const client = await pool.connect().catch(async (err: unknown) => {
        await pool.end()
        throw err
      })
      let broken: Error | undefined
      try {
        const { rows } = await client.query<{ got: boolean }>('SELECT pg_try_advisory_lock($1) AS got', [
          MIGRATION_LOCK_KEY,
        ])
        if (!rows[0]?.got) {
          opts.onMigrationWait?.()
          await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY])
        }
        await client.query(`SET lock_timeout = '${MIGRATION_LOCK_TIMEOUT}'`)
        await migrate(drizzle(client), {
          migrationsFolder,
          migrationsSchema: MIGRATIONS_SCHEMA,
          migrationsTable: MIGRATIONS_TABLE,
        })
        await client.query('RESET lock_timeout')
        await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY])
      } catch (err) {
        broken = err instanceof Error ? err : new Error(String(err))
        client.release(broken) // closing the connection also drops the lock
        await pool.end()
        throw err
      } finally {
        if (!broken) client.release()
      }
    }
    return { db, driver: 'node-postgres', close: () => pool.end(), statements: () => statements }
  }

  const { PGlite } = await import('@electric-sql/pglite')
  const { drizzle } = await import('drizzle-orm/pglite')
  const dataDir = pgliteDirectory(url)
  if (dataDir) mkdirSync(dataDir, { recursive: true })
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

/** Where a DATABASE_URL points, without its credentials: `host:port/database`. */
export function describeDatabaseUrl(url: string): {
  where: string
  host: string
  port: string
  db: string
  user: string
} {
  try {
    const u = new URL(url)
    const host = u.hostname || 'localhost'
    const port = u.port || '5432'
    const db = decodeURIComponent(u.pathname.replace(/^\//, '')) || decodeURIComponent(u.username) || 'postgres'
    return { where: `${host}:${port}/${db}`, host, port, db, user: decodeURIComponent(u.username) || 'postgres' }
  } catch {
    return { where: 'an unparseable URL', host: '?', port: '?', db: '?', user: '?' }
  }
}

/** Node's error code of a failed connection (ECONNREFUSED…), also inside an AggregateError. */
function socketCode(err: unknown): string | undefined {
  let e: unknown = err
  for (let i = 0; i < 5 && e && typeof e === 'object'; i++) {
    const { code, errors } = e as { code?: unknown; errors?: unknown }
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return code
    if (Array.isArray(errors) && errors.length) return socketCode(errors[0])
    e = (e as { cause?: unknown }).cause
  }
  return undefined
}

/**
 * One line saying why the database could not be used at start, naming the setting and
 * never its credentials: what a user sees instead of a stack trace.
 */
export function explainDatabaseError(err: unknown, url: string): string {
  if (!isPostgresUrl(url)) return `the embedded database at ${url} could not be opened: ${describeError(err)}`
  const { where, host, port, db, user } = describeDatabaseUrl(url)
  const state = pgErrorCode(err)
  const sock = socketCode(err)
  if (state === '3D000')
    return `DATABASE_URL: database "${db}" does not exist on ${host}:${port} (create it: createdb -h ${host} -p ${port} -U ${user} ${db})`
  if (state === '28P01' || state === '28000')
    return `DATABASE_URL: ${host}:${port} refused user "${user}" (${describeError(err)})`
  if (state === '57P03') return `DATABASE_URL: ${host}:${port} is starting up or shutting down; try again shortly`
  if (state === '55P03')
    return `DATABASE_URL (${where}): a migration waited over ${MIGRATION_LOCK_TIMEOUT} for a table lock other sessions hold (long transactions?); start again, or migrate when the database is quieter`
  if (sock === 'ECONNREFUSED')
    return `DATABASE_URL: nothing accepts connections at ${host}:${port} (is Postgres running?)`
  if (sock === 'ENOTFOUND' || sock === 'EAI_AGAIN') return `DATABASE_URL: the host "${host}" cannot be resolved`
  if (/timeout/i.test(describeError(err)))
    return `DATABASE_URL: ${host}:${port} did not answer within ${CONNECT_TIMEOUT_MS / 1000} s`
  return `DATABASE_URL (${where}): ${describeError(err)}`
}
