import { sql } from 'drizzle-orm'
import { type Database, migrationState } from '../db/client'

export interface DatabaseCheck {
  status: 'ok' | 'down'
  latencyMs: number
  driver: string
  migrations: 'applied' | 'pending' | 'unknown'
  error?: string
}

/** Rejects when `p` takes longer than `ms`, so a hung dependency cannot hang a health probe. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms)
  })
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer))
}

export async function checkDatabase(database: Database, timeoutMs = 2000): Promise<DatabaseCheck> {
  const started = performance.now()
  try {
    await withTimeout(database.db.execute(sql`select 1`), timeoutMs, 'database')
    const latencyMs = Math.round((performance.now() - started) * 100) / 100
    const m = await withTimeout(migrationState(database.db), timeoutMs, 'database')
    return { status: 'ok', latencyMs, driver: database.driver, migrations: m.applied ? 'applied' : 'pending' }
  } catch (err) {
    return {
      status: 'down',
      latencyMs: Math.round(performance.now() - started),
      driver: database.driver,
      migrations: 'unknown',
      // The driver's message names the failure (refused, timeout); it never holds the URL's password.
      error: err instanceof Error ? err.message.slice(0, 200) : 'unreachable',
    }
  }
}
