import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { sql } from 'drizzle-orm'
import { migrate } from 'drizzle-orm/pglite/migrator'
import type {} from 'vitest'
import type { TestProject } from 'vitest/node'
import { MIGRATIONS_SCHEMA, MIGRATIONS_TABLE } from '../src/db/client'
import { connectDatabase, migrationsFolder } from '../src/db/connect'
import { cached, hashOf, testBuild } from './build-cache'

/**
 * Prepares, once for the run:
 * - One migrated database, which every test file then copies:
 *   - PGlite (default): a data-dir snapshot on disk (a fresh copy loads in a fraction of a
 *     migration's time), and one taken before the migrations (for tests of a bare database).
 *     Made on Postgres runs too, for the servers some tests start on an embedded database.
 *     Kept between runs (test/build-cache.ts) while the migrations, src/db/ and the
 *     lockfile stay the same: initdb and the migrations cost ~10 CPU-seconds.
 *   - Postgres (TEST_DATABASE_URL set): a template database `act_<run>_tpl`; each file gets
 *     `CREATE DATABASE … TEMPLATE`, and everything is dropped at the end.
 * - The build of the entry points that tests start as processes (test/build-cache.ts
 *   testBuild: `node <file>` instead of tsx on each start), rebuilt when a watch-mode rerun
 *   finds the sources changed.
 */
declare module 'vitest' {
  export interface ProvidedContext {
    pgliteSnapshot: string
    /** The same, before the migrations (initdb only). */
    pgliteBareSnapshot: string
    pgAdminUrl: string
    pgRunPrefix: string
    /** test/build-cache.ts testBuild(): the directory whose dist/ holds server.js, token.js, migrate.js, agent.js. */
    testBuild: string
  }
}

export default async function setup(project: TestProject) {
  const [, build] = await Promise.all([pgliteSnapshots(project), testBuild()])
  project.provide('testBuild', build)
  project.onTestsRerun(async () => project.provide('testBuild', await testBuild()))
  const adminUrl = process.env.TEST_DATABASE_URL ?? ''
  if (!adminUrl) {
    project.provide('pgAdminUrl', '')
    project.provide('pgRunPrefix', '')
    return
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
  }
}

/**
 * The PGlite snapshots, also on Postgres runs: there they are only where a test's server
 * opens an embedded database (test/spawn.ts migratedDataDir()).
 */
async function pgliteSnapshots(project: TestProject) {
  const key = hashOf(process.cwd(), ['drizzle', 'src/db', 'package-lock.json', 'test/global-setup.ts'])
  const dir = await cached(`pglite-${key}`, async (dir) => {
    // One initdb (the slow part) for both: the bare database, then the same one migrated.
    const db = await connectDatabase('memory://', { migrate: false })
    // Every copy starts with 16 MB of shared buffers, not PGlite's 128 MB: a test's database
    // holds a few MB, and setting up the 128 MB is half of what opening a copy costs (~0.6 of
    // ~1.2 CPU-seconds, in every test file and every server started on migratedDataDir()).
    await db.db.execute(sql.raw(`ALTER SYSTEM SET shared_buffers = '16MB'`))
    const save = async (file: string) => {
      const dump = await db.dumpDataDir?.()
      if (!dump) throw new Error('PGlite database cannot dump its data dir')
      writeFileSync(join(dir, file), new Uint8Array(await dump.arrayBuffer()))
    }
    await save('bare.tar')
    // db.db is drizzle's PGlite database: migrated as connectDatabase migrates it.
    await migrate(db.db as never, {
      migrationsFolder,
      migrationsSchema: MIGRATIONS_SCHEMA,
      migrationsTable: MIGRATIONS_TABLE,
    })
    await save('snapshot.tar')
    await db.close()
  })
  project.provide('pgliteSnapshot', join(dir, 'snapshot.tar'))
  project.provide('pgliteBareSnapshot', join(dir, 'bare.tar'))
}

export function withDatabase(url: string, name: string): string {
  const u = new URL(url)
  u.pathname = `/${name}`
  return u.toString()
}
