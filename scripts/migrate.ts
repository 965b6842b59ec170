/** `npm run db:migrate`: applies drizzle/ to DATABASE_URL (Postgres, or a PGlite directory). */
import { existsSync } from 'node:fs'
import { migrationState } from '../src/db/client'
import { connectDatabase, isPostgresUrl } from '../src/db/connect'

if (existsSync('.dev.vars')) process.loadEnvFile('.dev.vars')
const url = process.env.DATABASE_URL ?? ''
if (!isPostgresUrl(url) && (url === '' || url === 'memory://')) {
  console.error('DATABASE_URL is unset or memory://: the embedded database migrates itself at start; nothing to do.')
  process.exit(0)
}
const database = await connectDatabase(url, { migrate: true })
const state = await migrationState(database.db)
await database.close()
console.log(`migrations applied (${database.driver}); latest ${new Date(state.latestApplied ?? 0).toISOString()}`)
