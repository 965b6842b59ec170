import { type Db, migrationState } from '../db/client'
import { ApiError } from '../lib/errors'

/**
 * Whether the database has every migration this build ships. Asked before the first
 * request (and the first sweep) of a process or Workers isolate; once the answer is yes it
 * is never asked again, and while it is no it is asked at most every `recheckMs`, so the
 * service starts serving by itself once `npm run db:migrate` has run. A request against a
 * database that is behind the code gets 503 `database_not_migrated`, never a 500.
 */
export class MigrationGate {
  private current = false
  private checkedAt = Number.NEGATIVE_INFINITY

  constructor(
    private readonly recheckMs = 2000,
    private readonly now: () => number = Date.now,
  ) {}

  /** True when the database is migrated; rejects when it cannot be asked (unreachable). */
  async isCurrent(db: Db): Promise<boolean> {
    if (this.current) return true
    if (this.now() - this.checkedAt < this.recheckMs) return false
    const state = await migrationState(db)
    this.current = state.applied
    this.checkedAt = this.now()
    return this.current
  }

  /** Forget the answer (a query found a table or column missing): the next call asks again. */
  recheck(): void {
    this.current = false
    this.checkedAt = Number.NEGATIVE_INFINITY
  }

  async assert(db: Db): Promise<void> {
    if (!(await this.isCurrent(db))) throw notMigrated()
  }
}

export const notMigrated = () =>
  new ApiError(
    'database_not_migrated',
    'The database lacks migrations this version needs: run `npm run db:migrate` against it (the Node and Bun servers do so at start unless MIGRATE_ON_START=false).',
    { retryAfterSeconds: 5 },
  )

/** SQLSTATEs of a query naming a table, column, function, type or schema the database lacks. */
export const missingObjectStates = new Set(['42P01', '42703', '42883', '42704', '3F000'])
