import { existsSync } from 'node:fs'
import { defineConfig } from 'drizzle-kit'

// `npm run db:generate` writes SQL migrations into drizzle/ from src/db/schema.ts.
// `npm run db:migrate` applies them (scripts/migrate.ts: the servers' advisory lock on a
// Postgres server, the data-directory lock on a PGlite directory). `npx drizzle-kit
// migrate | studio | push` use DATABASE_URL (environment, then .dev.vars) as drizzle users
// expect: a postgres:// URL, or a PGlite directory. They take neither lock: never point
// them at the directory of a running server (PGlite allows one process per directory).
if (existsSync('.dev.vars')) process.loadEnvFile('.dev.vars')
const url = process.env.DATABASE_URL ?? ''
const server = /^postgres(ql)?:\/\//i.test(url)
const directory = !server && url !== '' && url !== 'memory://'

export default defineConfig({
  dialect: 'postgresql',
  schema: './src/db/schema.ts',
  out: './drizzle',
  migrations: { schema: 'drizzle', table: '__drizzle_migrations' },
  ...(server ? { dbCredentials: { url } } : {}),
  ...(directory ? { driver: 'pglite', dbCredentials: { url: url.replace(/^file:(\/\/)?/, '') } } : {}),
})
