import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { migrate } from 'drizzle-orm/pglite/migrator'
import type {} from 'vitest'
import type { TestProject } from 'vitest/node'
import { MIGRATIONS_SCHEMA, MIGRATIONS_TABLE } from '../src/db/client'
import { connectDatabase, migrationsFolder } from '../src/db/connect'

/**
 * Prepares one migrated database for the run, which every test file then copies:
 * - PGlite (default): a data-dir snapshot on disk (a fresh copy loads in a fraction of a
 *   migration's time), and one taken before the migrations (for tests of a bare database).
 *   Made on Postgres runs too, for the servers some tests start on an embedded database.
 * - Postgres (TEST_DATABASE_URL set): a template database `act_<run>_tpl`; each file gets
 *   `CREATE DATABASE … TEMPLATE`, and everything is dropped at the end.
 */
declare module 'vitest' {
  export interface ProvidedContext {
    pgliteSnapshot: string
    /** The same, before the migrations (initdb only). */
    pgliteBareSnapshot: string
    pgAdminUrl: string
    pgRunPrefix: string
  }
}

export default async function setup(project: TestProject) {
  const removeSnapshots = await pgliteSnapshots(project)
  const adminUrl = process.env.TEST_DATABASE_URL ?? ''
  if (!adminUrl) {
    project.provide('pgAdminUrl', '')
    project.provide('pgRunPrefix', '')
    return removeSnapshots
  }
  const { default: pg } = await import('pg')
  const prefix = `act_${Date.now().toString(36)}_${process.pid}`
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  await admin.query(`CREATE DATABASE ${prefix}_tpl`)
  const tplUrl = withDatabase(adminUrl, `${prefix}_tpl`)
  const tpl = await connectDatabase(tplUrl, { migrate: true, poolMax: 1 })
  await tpl.close()
  project.provide('pgAdminUrl', adminUrl)
  project.provide('pgRunPrefix', prefix)
  return async () => {
    const { rows } = await admin.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datname LIKE $1`, [
      `${prefix}_%`,
    ])
    for (const r of rows) await admin.query(`DROP DATABASE IF EXISTS ${r.datname} WITH (FORCE)`)
    await admin.end()
    removeSnapshots()
  }
}

/**
 * The PGlite snapshots, also on Postgres runs: there they are only where a test's server
 * opens an embedded database (test/spawn.ts migratedDataDir()).
 */
async function pgliteSnapshots(project: TestProject): Promise<() => void> {
  const dir = mkdtempSync(join(tmpdir(), 'act-pglite-'))
  // One initdb (the slow part) for both: the bare database, then the same one migrated.
  const db = await connectDatabase('memory://', { migrate: false })
  const save = async (file: string) => {
    const dump = await db.dumpDataDir?.()
    if (!dump) throw new Error('PGlite database cannot dump its data dir')
    writeFileSync(join(dir, file), new Uint8Array(await dump.arrayBuffer()))
    return join(dir, file)
  }
  const bare = await save('bare.tar')
  // db.db is drizzle's PGlite database: migrated as connectDatabase migrates it.
  await migrate(db.db as never, {
    migrationsFolder,
    migrationsSchema: MIGRATIONS_SCHEMA,
    migrationsTable: MIGRATIONS_TABLE,
  })
  const snapshot = await save('snapshot.tar')
  await db.close()
  project.provide('pgliteSnapshot', snapshot)
  project.provide('pgliteBareSnapshot', bare)
  return () => rmSync(dir, { recursive: true, force: true })
}

export function withDatabase(url: string, name: string): string {
  const u = new URL(url)
  u.pathname = `/${name}`
  return u.toString()
}
