import { defineConfig } from 'drizzle-kit'

// `npm run db:generate` writes SQL migrations into drizzle/ from src/db/schema.ts.
// `npm run db:migrate` applies them (scripts/migrate.ts, which also serves PGlite).
export default defineConfig({
  dialect: 'postgresql',
  schema: './src/db/schema.ts',
  out: './drizzle',
  migrations: { schema: 'drizzle', table: '__drizzle_migrations' },
})
