import { and, asc, eq, gt, isNotNull, like, max, sql } from 'drizzle-orm'
import type { Db, Executor } from '../db/client'
import { rowsOf } from '../db/client'
import { type EventRow, events } from '../db/schema'
import { withTx } from '../db/tx'
import type { Logger } from '../lib/logger'
import { isoColumns } from '../lib/timestamps'

export interface NewEvent {
  type: string
  agentId?: string | null
  taskId?: string | null
  data?: Record<string, unknown>
}

/** The bus channel on which writers say "new events committed" (a hint, never the data). */
export const EVENTS_CHANNEL = 'agenticcp:events'

/** Appends events in the caller's transaction, so a change and its event commit together. */
export async function recordEvents(tx: Executor, at: Date, list: NewEvent[]): Promise<void> {
  if (list.length === 0) return
  await tx.insert(events).values(
    list.map((e) => ({
      type: e.type,
      agentId: e.agentId ?? null,
      taskId: e.taskId ?? null,
      data: e.data ?? {},
      createdAt: at,
    })),
  )
}

const SEQUENCER_LOCK = 7_240_431_002
const SEQUENCE_BATCH = 10_000

/**
 * Stamps the public, monotonic `seq` on committed events that have none, in insert order.
 * Identity ids are handed out at insert time, so a transaction may commit id 100 after
 * another committed id 101: a reader that resumed after 101 would never see 100. Instead,
 * one sequencer at a time (an advisory lock, held to commit) numbers whatever has committed
 * so far, continuing from the high-water mark in `event_sequence` (never lowered, even when
 * retention deletes every event); a row that commits later gets a later seq. So
 * "everything after seq N" never misses a row and never repeats one.
 * Readers call this before reading, which also gives read-your-writes.
 */
export async function sequenceEvents(db: Db): Promise<number> {
  let total = 0
  for (;;) {
    const n = await withTx(db, async (tx) => {
      await tx.execute(sql`SELECT pg_advisory_xact_lock(${SEQUENCER_LOCK})`)
      const [r] = await rowsOf<{ n: number }>(
        tx,
        sql`
        WITH todo AS (
          SELECT id, row_number() OVER (ORDER BY id) AS rn FROM events WHERE seq IS NULL ORDER BY id LIMIT ${SEQUENCE_BATCH}
        ), hw AS (
          UPDATE event_sequence SET last = last + (SELECT count(*) FROM todo) WHERE id = 1
          RETURNING last - (SELECT count(*) FROM todo) AS base
        ), upd AS (
          UPDATE events e SET seq = hw.base + todo.rn FROM todo, hw WHERE e.id = todo.id RETURNING 1
        )
        SELECT count(*)::int AS n FROM upd`,
      )
      return r?.n ?? 0
    })
    total += n
    if (n < SEQUENCE_BATCH) return total
  }
}

export interface EventFilter {
  /** Events after this seq (exclusive). */
  after: number
  limit: number
  /** Type prefix: `task.` matches every task event, `task.completed` just that one. */
  type?: string
  agentId?: string
  taskId?: string
}

export interface EventDto {
  id: number
  type: string
  time: string | null
  agentId: string | null
  taskId: string | null
  data: Record<string, unknown>
}

/** An event as answers and streams show it; `log` hears of a time it could not write. */
export const toEventDto = (e: EventRow, log?: Logger): EventDto => ({
  id: e.seq ?? 0,
  type: e.type,
  time: isoColumns(e, ['createdAt'], { eventId: String(e.seq ?? e.id) }, log).createdAt,
  agentId: e.agentId,
  taskId: e.taskId,
  data: e.data,
})

const escapeLike = (s: string) => s.replace(/[\\%_]/g, (c) => `\\${c}`)

/** Sequenced events after `after`, oldest first, filtered. */
export async function readEvents(db: Db, f: EventFilter): Promise<EventRow[]> {
  return db
    .select()
    .from(events)
    .where(
      and(
        gt(events.seq, f.after),
        f.type ? like(events.type, `${escapeLike(f.type)}%`) : undefined,
        f.agentId ? eq(events.agentId, f.agentId) : undefined,
        f.taskId ? eq(events.taskId, f.taskId) : undefined,
      ),
    )
    .orderBy(asc(events.seq))
    .limit(f.limit)
}

/** The newest seq (0 when there is none): where a stream without a cursor starts. */
export async function latestSeq(db: Db): Promise<number> {
  const [r] = await db
    .select({ m: max(events.seq) })
    .from(events)
    .where(isNotNull(events.seq))
  return Number(r?.m ?? 0)
}

/**
 * Deletes events older than `before` (EVENT_RETENTION_DAYS), at most `limit` at a time, for
 * the sweep. Events are inserted in time order, so the oldest are the first by id: the
 * sweep looks at the oldest event (one row by primary key) and, only when it is due, takes
 * the first `limit` by id and deletes those past the cutoff. No index on `created_at` to
 * keep up on every insert. Streams resuming from a deleted position continue with what is left.
 */
export async function pruneEvents(db: Db, before: Date, limit: number): Promise<number> {
  const [r] = await rowsOf<{ n: number }>(
    db,
    sql`WITH first AS (SELECT created_at FROM events ORDER BY id LIMIT 1),
        old AS (SELECT id FROM events WHERE (SELECT created_at FROM first) < ${before}
                 ORDER BY id LIMIT ${limit}),
        del AS (DELETE FROM events e USING old WHERE e.id = old.id AND e.created_at < ${before} RETURNING 1)
        SELECT count(*)::int AS n FROM del`,
  )
  return r?.n ?? 0
}
