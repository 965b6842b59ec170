import { sql } from 'drizzle-orm'
import type { Db } from '../db/client'
import { type Executor, rowsOf } from '../db/client'
import { withTx } from '../db/tx'
import { KEY_MAX_LENGTH } from '../domain/concurrency'
import { liveSql } from '../domain/sql'

/**
 * Concurrency keys at rest (src/domain/concurrency.ts holds the rules): the list
 * GET /concurrency answers, and the sweep's recount of each key's live tasks.
 */

export interface KeyState {
  key: string
  limit: number
  /** Tasks of the key assigned or running (the stored count). */
  active: number
  /** Tasks of the key waiting (pending). */
  pending: number
  updatedAt: Date
}

/** Keys in key order after `after`, at most `limit`, with their waiting tasks counted (by index). */
export async function listKeys(db: Executor, o: { limit: number; after?: string }): Promise<KeyState[]> {
  const after = o.after && o.after.length <= KEY_MAX_LENGTH ? o.after : null
  return rowsOf<KeyState>(
    db,
    sql`SELECT k.key, k.key_limit AS "limit", k.active, k.updated_at AS "updatedAt",
               (SELECT count(*)::int FROM tasks t WHERE t.concurrency_key = k.key AND t.status = 'pending') AS pending
          FROM concurrency_keys k
         WHERE ${after}::text IS NULL OR k.key > ${after}::text
         ORDER BY k.key LIMIT ${o.limit}`,
  )
}

/**
 * The sweep's recount: each key's stored count against its tasks assigned or running (read
 * by `tasks_concurrency_idx`, so its cost grows with the live keyed tasks, not the queue).
 * Keys found off are locked (key order), counted again under the lock — every statement
 * that moves a key's count updates its row, so none can move it between that count and the
 * write — and set. Returns how many were corrected.
 */
export async function reconcileKeys(db: Db, now: Date): Promise<number> {
  const live = sql`SELECT concurrency_key AS key, count(*)::int AS n FROM tasks
                    WHERE concurrency_key IS NOT NULL AND ${sql.raw(liveSql('tasks'))} GROUP BY concurrency_key`
  const off = await rowsOf<{ key: string }>(
    db,
    sql`SELECT k.key FROM concurrency_keys k LEFT JOIN (${live}) c ON c.key = k.key
         WHERE k.active <> coalesce(c.n, 0) ORDER BY k.key LIMIT 1000`,
  )
  if (off.length === 0) return 0
  const keys = `{${off.map((k) => `"${k.key.replace(/["\\]/g, '\\$&')}"`).join(',')}}`
  return withTx(db, async (tx) => {
    await tx.execute(sql`SELECT key FROM concurrency_keys WHERE key = ANY(${keys}::text[]) ORDER BY key FOR UPDATE`)
    const rows = await rowsOf<{ key: string }>(
      tx,
      sql`UPDATE concurrency_keys k SET active = coalesce(c.n, 0), updated_at = ${now}
            FROM (SELECT key FROM unnest(${keys}::text[]) AS u(key)) u
            LEFT JOIN (SELECT concurrency_key AS key, count(*)::int AS n FROM tasks
                        WHERE concurrency_key = ANY(${keys}::text[]) AND ${sql.raw(liveSql('tasks'))}
                        GROUP BY concurrency_key) c ON c.key = u.key
           WHERE k.key = u.key AND k.active <> coalesce(c.n, 0)
          RETURNING k.key`,
    )
    return rows.length
  })
}
