/**
 * `npm run db:migrate`: applies drizzle/ to DATABASE_URL (a Postgres server, or a PGlite
 * directory), under the same advisory lock the servers take at start. A database that
 * cannot be used, or a DATABASE_URL of another kind (mysql://…), is one line naming the
 * setting, and exit code 1.
 */
import { existsSync, mkdirSync } from 'node:fs'
import { migrationState } from '../src/db/client'
import {
  connectDatabase,
  DatabaseUrlError,
  databaseUrlProblem,
  explainDatabaseError,
  isPostgresUrl,
  pgliteDirectory,
} from '../src/db/connect'
import { DataDirLockedError, lockDataDir } from '../src/db/pglite-lock'
import { ConfigError, loadConfig } from '../src/env'

if (existsSync('.dev.vars')) process.loadEnvFile('.dev.vars')
let url: string
try {
  url = loadConfig(process.env).databaseUrl
} catch (err) {
  console.error(`Cannot migrate: ${err instanceof ConfigError ? err.message : String(err)}`)
  process.exit(1)
}
// Another kind of database (mysql://…) is refused before any directory is made for it.
const urlProblem = databaseUrlProblem(url)
if (urlProblem) {
  console.error(`Cannot migrate: ${urlProblem}`)
  process.exit(1)
}
if (!isPostgresUrl(url) && (url === '' || url === 'memory://')) {
  console.log('DATABASE_URL is unset or memory://: the embedded database migrates itself at start; nothing to do.')
  process.exit(0)
}
// A PGlite directory is opened by one process at a time (a running server migrates its own).
const dir = pgliteDirectory(url)
let unlock = () => {}
try {
  if (dir) {
    mkdirSync(dir, { recursive: true })
    unlock = lockDataDir(dir)
  }
  const database = await connectDatabase(url, { migrate: true })
  const state = await migrationState(database.db)
  await database.close()
  console.log(`migrations applied (${database.driver}); latest ${new Date(state.latestApplied ?? 0).toISOString()}`)
} catch (err) {
  const known = err instanceof DataDirLockedError || err instanceof DatabaseUrlError
  console.error(`Cannot migrate: ${known ? err.message : explainDatabaseError(err, url)}`)
  process.exitCode = 1
} finally {
  unlock()
}
