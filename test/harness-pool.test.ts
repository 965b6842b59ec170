import { sql } from 'drizzle-orm'
import { describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/client'
import { createHarness, freshDatabase, onPostgres } from './harness'

/**
 * test/harness.ts hands a PGlite database a file closed to the next file, emptied: the next
 * file must find it as a fresh copy of the snapshot would be, and the closed file must not
 * reach it any more.
 */
/** The PGlite client behind a database (through the file's view of it, which passes a property set on to it). */
const clientOf = (db: { db: unknown }) => (db.db as { $client: { marker?: string } }).$client
const count = async (db: Awaited<ReturnType<typeof freshDatabase>>, table: string) =>
  Number((await rowsOf<{ n: number }>(db.db, sql.raw(`SELECT count(*)::int AS n FROM ${table}`)))[0]?.n)

describe.skipIf(onPostgres())('the PGlite databases test files reuse', () => {
  it('come back as the snapshot: no rows of the last file, sequences and seeded rows as they were', async () => {
    const pristine = await freshDatabase()
    const seq = await rowsOf(pristine.db, sql`SELECT * FROM event_sequence`)
    await pristine.close()

    const h = await createHarness()
    const a = await h.agent()
    await h.assignedTask(a.id)
    expect(await count(h.database, 'events')).toBeGreaterThan(0)
    await h.database.db.execute(sql`SET statement_timeout = 1234`)
    clientOf(h.database).marker = 'used'
    await h.close()
    // The closed file's handle refuses, as a closed PGlite does.
    await expect(h.database.db.execute(sql`SELECT 1`)).rejects.toMatchObject({ cause: { message: 'PGlite is closed' } })

    const next = await freshDatabase()
    try {
      expect(clientOf(next).marker).toBe('used')
      for (const t of ['agents', 'tasks', 'events', 'task_counts', 'task_logs', 'rollouts']) {
        expect(await count(next, t), t).toBe(0)
      }
      expect(await rowsOf(next.db, sql`SELECT * FROM event_sequence`)).toEqual(seq)
      expect(await rowsOf(next.db, sql`SELECT nextval('events_id_seq')::int AS n`)).toEqual([{ n: 1 }])
      expect(await rowsOf(next.db, sql`SHOW statement_timeout`)).toEqual([{ statement_timeout: '0' }])
    } finally {
      await next.close()
    }
  })

  it('are not reused once a file changed more than rows (its schema)', async () => {
    const db = await freshDatabase()
    clientOf(db).marker = 'changed'
    await db.db.execute(sql`ALTER TABLE task_logs RENAME TO task_logs_away`)
    await db.close()
    const next = await freshDatabase()
    try {
      expect(clientOf(next).marker).not.toBe('changed')
      expect(await count(next, 'task_logs')).toBe(0)
    } finally {
      await next.close()
    }
  })
})
