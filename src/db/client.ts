import { sql } from 'drizzle-orm'
import type { PgDatabase, PgQueryResultHKT, PgTransaction } from 'drizzle-orm/pg-core'
import type { ExtractTablesWithRelations } from 'drizzle-orm/relations'
import journal from '../../drizzle/meta/_journal.json'
import type { schema } from './schema'

type Schema = typeof schema

/** The one database type the services see, whichever driver (PGlite, node-postgres, Neon, Hyperdrive) is behind it. */
export type Db = PgDatabase<PgQueryResultHKT, Schema>
export type Tx = PgTransaction<PgQueryResultHKT, Schema, ExtractTablesWithRelations<Schema>>
/** Anything a query can run on: the database or an open transaction. */
export type Executor = Db | Tx

export type DriverName = 'pglite' | 'node-postgres' | 'neon' | 'hyperdrive'

export interface Database {
  db: Db
  driver: DriverName
  close(): Promise<void>
  /** node-postgres only: statements sent so far, transaction control included (a metric). */
  statements?(): number
  /** PGlite only: the data directory as a tarball, to start copies from (tests). */
  dumpDataDir?(): Promise<Blob>
  /**
   * Per-request databases (Workers) only: keep the connection open until `work` settles,
   * for answers that go on after the handler returns (event streams).
   */
  hold?(work: Promise<unknown>): void
}

/** Rows of a raw `execute`: every driver we use answers with `{ rows }`. */
export async function rowsOf<T>(executor: Executor, query: Parameters<Executor['execute']>[0]): Promise<T[]> {
  const res = (await executor.execute(query)) as unknown as { rows: T[] }
  return res.rows
}

export const MIGRATIONS_SCHEMA = 'drizzle'
export const MIGRATIONS_TABLE = '__drizzle_migrations'

/** `when` of the newest migration this build ships; readiness wants the database to have it. */
export const latestMigrationMillis = Math.max(...journal.entries.map((e) => e.when))
export const migrationCount = journal.entries.length

export type MigrationState = { applied: boolean; latestApplied: number | null; expected: number }

export async function migrationState(db: Db): Promise<MigrationState> {
  const [exists] = await rowsOf<{ t: string | null }>(
    db,
    sql.raw(`select to_regclass('${MIGRATIONS_SCHEMA}.${MIGRATIONS_TABLE}')::text as t`),
  )
  if (!exists?.t) return { applied: false, latestApplied: null, expected: latestMigrationMillis }
  const [row] = await rowsOf<{ latest: string | number | null }>(
    db,
    sql.raw(`select max(created_at) as latest from ${MIGRATIONS_SCHEMA}.${MIGRATIONS_TABLE}`),
  )
  const latest = row?.latest == null ? null : Number(row.latest)
  return {
    applied: latest !== null && latest >= latestMigrationMillis,
    latestApplied: latest,
    expected: latestMigrationMillis,
  }
}
