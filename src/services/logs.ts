import { sql } from 'drizzle-orm'
import { type Db, rowsOf } from '../db/client'
import { type HotStatement, hot } from '../db/hot'
import { ApiError } from '../lib/errors'
import { isoOrNull } from '../lib/timestamps'
import type { ServiceDeps } from './deps'

/**
 * Task output: chunks an agent sends for the attempt it runs (stdout, stderr, system lines),
 * stored per attempt and numbered by the agent, read in pages, as text, or followed live.
 */
export type LogStream = 'stdout' | 'stderr' | 'system'
export interface LogChunkInput {
  seq: number
  stream: LogStream
  data: string
  at?: string | null
}
export interface LogChunk {
  seq: number
  stream: LogStream
  data: string
  /** Null only when the stored time cannot be written (a row edited out of range). */
  at: string | null
}

/** The waiters of a task's log on the notifier (and its bus): followers wake on a write. */
export const logKey = (taskId: string) => `log:${taskId.toLowerCase()}`

/**
 * One write, in one statement: the chunks are stored only if the task's current attempt
 * is `$2` and it is held by agent `$3`; a chunk whose seq is already stored (a resend), or
 * falls in the range dropped to keep the attempt under its limit, is skipped; the attempt's
 * byte count grows by what was stored.
 * $1 task · $2 attempt · $3 agent · $4 chunks (jsonb) · $5 now
 */
const appendLogs: HotStatement = {
  name: 'append_logs',
  text: `
WITH t AS (
  SELECT id FROM tasks WHERE id = $1 AND attempt = $2 AND agent_id = $3
), s AS (
  SELECT dropped_from, dropped_to FROM task_log_totals WHERE task_id = $1 AND attempt = $2
), ins AS (
  INSERT INTO task_logs (task_id, attempt, seq, stream, data, bytes, at, created_at)
  SELECT $1, $2, c.seq, c.stream, c.data, octet_length(c.data), coalesce(c.at, $5::timestamptz), $5
    FROM jsonb_to_recordset($4::jsonb) AS c(seq int, stream text, data text, at timestamptz)
   WHERE EXISTS (SELECT 1 FROM t)
     AND NOT EXISTS (SELECT 1 FROM s WHERE c.seq BETWEEN s.dropped_from AND s.dropped_to)
  ON CONFLICT DO NOTHING
  RETURNING bytes
), tot AS (
  INSERT INTO task_log_totals (task_id, attempt, bytes)
  SELECT $1, $2, coalesce(sum(bytes), 0) FROM ins HAVING EXISTS (SELECT 1 FROM t)
  ON CONFLICT (task_id, attempt) DO UPDATE SET bytes = task_log_totals.bytes + excluded.bytes
  RETURNING bytes
)
SELECT EXISTS (SELECT 1 FROM t) AS ours, (SELECT count(*) FROM ins)::int AS stored,
       (SELECT bytes FROM tot)::bigint AS total`,
}

/**
 * Keeps an attempt under its limit: drops the oldest chunks after its head (the chunks
 * before the first drop, or the first quarter of the limit) until it holds 90 % of the limit,
 * and records the dropped range, so the first and the latest lines stay.
 * $1 task · $2 attempt · $3 head bytes · $4 target bytes
 */
const trimLogs: HotStatement = {
  name: 'trim_logs',
  text: `
WITH s AS (
  SELECT dropped_from FROM task_log_totals WHERE task_id = $1 AND attempt = $2 FOR UPDATE
), c AS (
  SELECT seq, bytes, sum(bytes) OVER (ORDER BY seq) - bytes AS before
    FROM task_logs WHERE task_id = $1 AND attempt = $2
), t AS (
  SELECT coalesce(sum(bytes), 0) AS total FROM c
), nh AS (
  SELECT seq, bytes, sum(bytes) OVER (ORDER BY seq) - bytes AS before_nh FROM c
   WHERE CASE WHEN (SELECT dropped_from FROM s) IS NULL THEN c.before >= $3
              ELSE c.seq > (SELECT dropped_from FROM s) END
), v AS (
  SELECT nh.seq FROM nh, t WHERE nh.before_nh < t.total - $4
), d AS (
  DELETE FROM task_logs l USING v
   WHERE l.task_id = $1 AND l.attempt = $2 AND l.seq = v.seq
  RETURNING l.seq, l.bytes
)
UPDATE task_log_totals SET
  bytes = bytes - (SELECT coalesce(sum(bytes), 0) FROM d),
  dropped_bytes = dropped_bytes + (SELECT coalesce(sum(bytes), 0) FROM d),
  dropped_chunks = dropped_chunks + (SELECT count(*) FROM d),
  dropped_from = coalesce(dropped_from, (SELECT min(seq) FROM d)),
  dropped_to = greatest(dropped_to, (SELECT max(seq) FROM d))
WHERE task_id = $1 AND attempt = $2
RETURNING bytes`,
}

/** Stores an agent's chunks for its current attempt; refuses another attempt's (409). */
export async function writeLogs(
  deps: Pick<ServiceDeps, 'db' | 'clock' | 'config' | 'notifier'>,
  taskId: string,
  agentId: string,
  attempt: number,
  chunks: LogChunkInput[],
): Promise<{ stored: number; skipped: number }> {
  const { db, clock, config } = deps
  const rows = chunks.map((c) => ({ seq: c.seq, stream: c.stream, data: c.data, at: c.at ?? null }))
  const [r] = await hot<{ ours: boolean; stored: number; total: string | number | null }>(db, appendLogs, [
    taskId,
    attempt,
    agentId,
    JSON.stringify(rows),
    clock.now(),
  ])
  if (!r?.ours) {
    const [task] = await rowsOf<{ attempt: number; agent_id: string | null }>(
      db,
      sql`SELECT attempt, agent_id FROM tasks WHERE id = ${taskId}`,
    )
    if (!task) throw new ApiError('not_found', `No task with id ${taskId}.`)
    throw new ApiError(
      'stale_attempt',
      task.agent_id !== agentId
        ? 'This agent does not hold the task (it was requeued or reassigned): drop its log.'
        : `Attempt ${attempt} is not the task's current attempt ${task.attempt}: drop its log.`,
      { attempt: task.attempt },
    )
  }
  const max = config.taskLogMaxBytesPerAttempt
  if (Number(r.total ?? 0) > max) {
    await hot(db, trimLogs, [taskId, attempt, Math.floor(max / 4), Math.floor(max * 0.9)])
  }
  if (r.stored > 0) deps.notifier?.notify([logKey(taskId)])
  return { stored: r.stored, skipped: chunks.length - r.stored }
}

export interface LogPage {
  attempt: number
  items: LogChunk[]
  /** The cursor for the next page (the last seq given), or the one asked for. */
  nextAfter: number
  /** What was dropped of this attempt's middle to keep it under the limit. */
  dropped: { bytes: number; chunks: number } | null
}

type ChunkRow = { seq: number; stream: LogStream; data: string; at: Date | string }
type TotalsRow = {
  dropped_bytes: string | number
  dropped_chunks: number
  dropped_from: number | null
  dropped_to: number | null
}

/** A page of an attempt's log after `after`; where the page crosses the dropped middle, one system chunk says so. */
export async function readLogs(
  db: Db,
  taskId: string,
  attempt: number,
  after: number,
  limit: number,
): Promise<LogPage> {
  const [rows, [totals]] = await Promise.all([
    rowsOf<ChunkRow>(
      db,
      sql`SELECT seq, stream, data, at FROM task_logs
           WHERE task_id = ${taskId} AND attempt = ${attempt} AND seq > ${after}
           ORDER BY seq LIMIT ${limit}`,
    ),
    rowsOf<TotalsRow>(
      db,
      sql`SELECT dropped_bytes, dropped_chunks, dropped_from, dropped_to FROM task_log_totals
           WHERE task_id = ${taskId} AND attempt = ${attempt}`,
    ),
  ])
  const items: LogChunk[] = rows.map((r) => ({
    seq: r.seq,
    stream: r.stream,
    data: r.data,
    at: isoOrNull(new Date(r.at)),
  }))
  let dropped: LogPage['dropped'] = null
  if (totals && totals.dropped_from !== null && totals.dropped_to !== null) {
    const bytes = Number(totals.dropped_bytes)
    dropped = { bytes, chunks: totals.dropped_chunks }
    const from = totals.dropped_from
    const to = totals.dropped_to
    // The marker stands at the gap, carrying the last dropped seq (a resume skips the gap).
    const atGap = items.findIndex((c) => c.seq > to)
    const crosses = after < from && (atGap >= 0 || items.length < limit)
    if (crosses) {
      const marker: LogChunk = {
        seq: to,
        stream: 'system',
        data: `[… ${bytes} bytes of output (${totals.dropped_chunks} chunks) dropped here to keep this attempt's log under its limit …]\n`,
        at: items[atGap]?.at ?? items.at(-1)?.at ?? new Date(0).toISOString(),
      }
      items.splice(atGap >= 0 ? atGap : items.length, 0, marker)
    }
  }
  return { attempt, items, nextAfter: items.at(-1)?.seq ?? after, dropped }
}

/** The attempt a reader means: the one asked for, else the task's latest; 404 for no task. */
export async function logAttempt(
  db: Db,
  taskId: string,
  asked?: number,
): Promise<{ attempt: number; status: string; current: number }> {
  const [task] = await rowsOf<{ attempt: number; status: string }>(
    db,
    sql`SELECT attempt, status FROM tasks WHERE id = ${taskId}`,
  )
  if (!task) throw new ApiError('not_found', `No task with id ${taskId}.`)
  return { attempt: asked ?? task.attempt, status: task.status, current: task.attempt }
}

/** Whether an attempt's log can still grow: it is the task's current one and the task has not ended. */
export const attemptLive = (t: { attempt: number; status: string; current: number }) =>
  t.attempt === t.current && (t.status === 'assigned' || t.status === 'running')

/** Deletes log chunks stored before `before` (LOG_RETENTION_DAYS), at most `limit`. */
export async function pruneLogs(db: Db, before: Date, limit: number): Promise<number> {
  const [r] = await rowsOf<{ n: number }>(
    db,
    sql`WITH old AS (
          SELECT task_id, attempt, seq FROM task_logs WHERE created_at < ${before} ORDER BY created_at LIMIT ${limit}
        ), d AS (
          DELETE FROM task_logs l USING old
           WHERE l.task_id = old.task_id AND l.attempt = old.attempt AND l.seq = old.seq
          RETURNING 1
        )
        SELECT count(*)::int AS n FROM d`,
  )
  return r?.n ?? 0
}
