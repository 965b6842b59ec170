import { type SQL, sql } from 'drizzle-orm'
import { type Db, rowsOf, type Tx } from '../db/client'
import { serviceStalls } from '../db/schema'
import type { Stall, StallWatch } from '../lib/stalls'

/**
 * Stalls of the service (src/lib/stalls.ts says how a process notices them), kept in the
 * database so that every instance's sweep moves deadlines by them: an agent is silent only
 * for the time the service could hear it, and a task's timeout, cancel grace and assign
 * timeout count only such time. How this bounds the detection of really dead agents is in
 * docs/scheduler.md ("Stalls of the service").
 */

/** Stalls are kept this long: the longest window a deadline looks back over. */
export const STALL_RETENTION_DAYS = 8

/** This process, as a stall's observer. */
const observer = () =>
  typeof process !== 'undefined' && typeof process.pid === 'number' ? `pid ${process.pid}` : 'worker'

/** Writes what `watch` has noticed (on `db`, or in the sweep's transaction); on failure it is kept for the next try. */
export async function recordStalls(db: Db | Tx, watch: StallWatch | undefined): Promise<Stall[]> {
  if (!watch?.hasPending) return []
  const stalls = watch.take()
  try {
    await db.insert(serviceStalls).values(
      stalls.map((s) => ({
        startedAt: new Date(s.startedAt),
        endedAt: new Date(s.endedAt),
        cause: s.cause,
        observer: observer(),
      })),
    )
    return stalls
  } catch (err) {
    watch.putBack(stalls)
    throw err
  }
}

/**
 * The stall the service had before this process started: from the last time anything was
 * heard (the newest heartbeat of an agent not yet offline, or the last sweep, whichever is
 * later) until `startedAt`. Nothing when that is recent (another instance was hearing).
 */
export async function downtimeBefore(db: Db, startedAt: number): Promise<Stall | null> {
  const [row] = await rowsOf<{ heard: string | Date | null }>(
    db,
    sql`SELECT greatest((SELECT max(last_heartbeat_at) FROM agents WHERE status <> 'offline'),
                        (SELECT last_run_at FROM scheduler_state WHERE id = 1)) AS heard`,
  )
  const heard = row?.heard ? new Date(row.heard).getTime() : Number.NaN
  if (!Number.isFinite(heard) || startedAt - heard < 2000) return null
  return { startedAt: heard, endedAt: startedAt, cause: 'down' }
}

/** Stalls overlapping the last STALL_RETENTION_DAYS, merged where they overlap, oldest first. */
export async function mergedStalls(db: Db | Tx, now: Date): Promise<{ starts: Date[]; ends: Date[] }> {
  const since = new Date(now.getTime() - STALL_RETENTION_DAYS * 86_400_000)
  const rows = await db
    .select({ s: serviceStalls.startedAt, e: serviceStalls.endedAt })
    .from(serviceStalls)
    .where(sql`${serviceStalls.endedAt} > ${since} AND ${serviceStalls.startedAt} < ${now}`)
    .orderBy(serviceStalls.startedAt)
  const starts: Date[] = []
  const ends: Date[] = []
  for (const r of rows) {
    const last = ends.length - 1
    if (last >= 0 && r.s.getTime() <= (ends[last] as Date).getTime()) {
      if (r.e > (ends[last] as Date)) ends[last] = r.e
    } else {
      starts.push(r.s)
      ends.push(r.e)
    }
  }
  return { starts, ends }
}

export type Stalls = Awaited<ReturnType<typeof mergedStalls>>

/**
 * The time the service could not hear, between `from` (an SQL timestamp expression) and
 * `now`, as an interval: deadlines that started at `from` move by it. Without stalls, a
 * constant zero (the statements keep their plain form).
 */
export function stalledSince(stalls: Stalls, from: SQL, now: Date): SQL {
  if (stalls.starts.length === 0) return sql`interval '0'`
  return sql`(SELECT coalesce(sum(least(st.e, ${now}::timestamptz) - greatest(st.s, ${from})), interval '0')
     FROM unnest(${isoArray(stalls.starts)}::timestamptz[], ${isoArray(stalls.ends)}::timestamptz[]) AS st(s, e)
    WHERE st.e > ${from} AND st.s < ${now}::timestamptz)`
}

const isoArray = (dates: Date[]) => `{${dates.map((d) => d.toISOString()).join(',')}}`

/** Deletes stalls older than STALL_RETENTION_DAYS. */
export async function pruneStalls(db: Db, now: Date): Promise<void> {
  const before = new Date(now.getTime() - STALL_RETENTION_DAYS * 86_400_000)
  await db.delete(serviceStalls).where(sql`${serviceStalls.endedAt} < ${before}`)
}

/** The newest stalls, for GET /scheduler/status. */
export async function recentStalls(db: Db, limit = 10) {
  const rows = await db.select().from(serviceStalls).orderBy(sql`${serviceStalls.endedAt} DESC`).limit(limit)
  return rows.map((r) => ({
    startedAt: r.startedAt.toISOString(),
    endedAt: r.endedAt.toISOString(),
    seconds: Math.round((r.endedAt.getTime() - r.startedAt.getTime()) / 100) / 10,
    cause: r.cause,
    observer: r.observer,
  }))
}
