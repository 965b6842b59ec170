import { sql } from 'drizzle-orm'
import { type Db, rowsOf } from '../db/client'
import { agentStatuses, taskStatuses } from '../domain/model'
import { secondsBetween } from '../domain/sql'
import { keys } from '../lib/kv'
import type { ServiceDeps } from './deps'

/**
 * Fleet and queue statistics, built to stay fast at millions of tasks:
 * - counts by status and queue depth by priority come from `task_counts`, kept by
 *   triggers (a few hundred rows at most), never from counting `tasks`;
 * - recent outcomes, durations and create→assigned latencies read the tasks finished in
 *   the last hour through an index, capped at the newest RECENT_CAP rows;
 * - failures by error code read the same index, the same way (failed and timed-out tasks
 *   finished in the last hour, the newest RECENT_CAP of them);
 * - the oldest pending task is the first pending id (ids are UUIDv7) by tasks_status_idx.
 * Cached for STATS_TTL_MS in Redis (dropped by every write), computed per call without it.
 */
const RECENT_CAP = 10_000
/** Error codes are the agents' own words: the page and the answer show the commonest few. */
const FAILURE_CODES = 20
const STATS_TTL_MS = 2_000

const zeroes = <K extends string>(ks: readonly K[]) => Object.fromEntries(ks.map((k) => [k, 0])) as Record<K, number>

export interface AgentStatistics {
  total: number
  byStatus: Record<(typeof agentStatuses)[number], number>
  byProvider: Record<string, number>
  /**
   * The slots that take work: those of online agents, and how many of them are used and free
   * (all three over the same agents; an agent over its slots, after its maximum was lowered,
   * has none free).
   */
  slots: { total: number; used: number; free: number }
  /**
   * Assigned or running tasks held, per agent status: `online` is `slots.used`; the others are
   * held by agents that take no new work (draining, maintenance, error, offline), outside the slots.
   */
  activeTasksByStatus: Record<(typeof agentStatuses)[number], number>
}

export async function agentStatistics(db: Db): Promise<AgentStatistics> {
  const rows = await rowsOf<{ status: string; provider: string; n: number; slots: number; used: number; free: number }>(
    db,
    sql`SELECT status, provider, count(*)::int AS n, sum(max_concurrent_tasks)::int AS slots,
               sum(active_tasks)::int AS used, sum(greatest(max_concurrent_tasks - active_tasks, 0))::int AS free
          FROM agents GROUP BY status, provider`,
  )
  const out: AgentStatistics = {
    total: 0,
    byStatus: zeroes(agentStatuses),
    byProvider: {},
    slots: { total: 0, used: 0, free: 0 },
    activeTasksByStatus: zeroes(agentStatuses),
  }
  for (const r of rows) {
    const status = r.status as keyof AgentStatistics['byStatus']
    out.total += r.n
    out.byStatus[status] += r.n
    out.byProvider[r.provider] = (out.byProvider[r.provider] ?? 0) + r.n
    out.activeTasksByStatus[status] += r.used
    // Slots that can take work are those of online agents: total, used and free count those alone.
    if (r.status === 'online') {
      out.slots.total += r.slots
      out.slots.used += r.used
      out.slots.free += r.free
    }
  }
  return out
}

export interface TaskStatistics {
  total: number
  byStatus: Record<(typeof taskStatuses)[number], number>
  queue: { pending: number; byPriority: Record<string, number>; oldestPendingAgeSeconds: number | null }
  recent: {
    last5Minutes: { completed: number; failed: number; timedOut: number; cancelled: number }
    last60Minutes: { completed: number; failed: number; timedOut: number; cancelled: number }
    /** completed / (completed + failed + timed_out) over the last hour; null when none ended. */
    successRate: number | null
    /** Completed tasks per minute over the last hour, oldest first (60 values). */
    completedPerMinute: number[]
  }
  /** Over the tasks finished in the last hour (the newest 10,000 at most). */
  durationSeconds: { p50: number | null; p95: number | null; sample: number }
  createToAssignedSeconds: { p50: number | null; p95: number | null; sample: number }
  /**
   * Tasks that ended failed or timed out in the last hour (the newest 10,000 at most), per
   * `error.code` (a failure without one counts under its status): the FAILURE_CODES commonest,
   * most first, the rest summed in `other`; `sample` is how many were counted.
   */
  failuresByCode: { codes: { code: string; count: number }[]; other: number; sample: number }
}

export async function taskStatistics(db: Db, now: Date): Promise<TaskStatistics> {
  const hourAgo = new Date(now.getTime() - 3_600_000)
  const fiveAgo = new Date(now.getTime() - 300_000)
  const [counts, oldest, recent, perMinute, latency, failures] = await Promise.all([
    rowsOf<{ status: string; priority: number; n: number }>(
      db,
      sql`SELECT status, priority, sum(n)::int AS n FROM task_counts GROUP BY status, priority HAVING sum(n) <> 0`,
    ),
    rowsOf<{ at: Date | string | null }>(
      db,
      sql`SELECT created_at AS at FROM tasks WHERE status = 'pending' ORDER BY id LIMIT 1`,
    ),
    rowsOf<{ status: string; last5: number; last60: number }>(
      db,
      sql`SELECT status, count(*) FILTER (WHERE finished_at >= ${fiveAgo})::int AS last5, count(*)::int AS last60
            FROM tasks WHERE finished_at >= ${hourAgo} AND finished_at <= ${now} GROUP BY status`,
    ),
    rowsOf<{ m: number; n: number }>(
      db,
      // m = 59 for the current minute, 0 for the one an hour ago.
      sql`SELECT 59 - floor(extract(epoch FROM (${now}::timestamptz - finished_at)) / 60)::int AS m, count(*)::int AS n
            FROM tasks WHERE status = 'completed' AND finished_at > ${hourAgo} AND finished_at <= ${now} GROUP BY 1`,
    ),
    rowsOf<{ d50: number | null; d95: number | null; dn: number; a50: number | null; a95: number | null; an: number }>(
      db,
      sql`WITH recent AS (
            SELECT status, started_at, finished_at, created_at, assigned_at FROM tasks
             WHERE finished_at >= ${hourAgo} AND finished_at <= ${now}
             ORDER BY finished_at DESC LIMIT ${RECENT_CAP}
          ), run AS (
            SELECT ${sql.raw(secondsBetween('started_at', 'finished_at'))} AS s FROM recent
             WHERE status = 'completed' AND isfinite(started_at)
          ), wait AS (
            SELECT ${sql.raw(secondsBetween('created_at', 'assigned_at'))} AS s FROM recent
             WHERE isfinite(assigned_at) AND isfinite(created_at)
          )
          SELECT (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s) FROM run)::float8 AS d50,
                 (SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY s) FROM run)::float8 AS d95,
                 (SELECT count(*) FROM run)::int AS dn,
                 (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s) FROM wait)::float8 AS a50,
                 (SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY s) FROM wait)::float8 AS a95,
                 (SELECT count(*) FROM wait)::int AS an`,
    ),
    rowsOf<{ code: string; n: number; total: number }>(
      db,
      sql`WITH failed AS (
            SELECT coalesce(error->>'code', status) AS code FROM tasks
             WHERE finished_at >= ${hourAgo} AND finished_at <= ${now} AND status IN ('failed', 'timed_out')
             ORDER BY finished_at DESC LIMIT ${RECENT_CAP}
          ), by_code AS (
            SELECT code, count(*)::int AS n FROM failed GROUP BY code
          )
          SELECT code, n, (sum(n) OVER ())::int AS total FROM by_code ORDER BY n DESC, code LIMIT ${FAILURE_CODES}`,
    ),
  ])
  const byStatus = zeroes(taskStatuses)
  const byPriority: Record<string, number> = {}
  let total = 0
  for (const r of counts) {
    total += r.n
    byStatus[r.status as keyof typeof byStatus] += r.n
    if (r.status === 'pending') byPriority[String(r.priority)] = (byPriority[String(r.priority)] ?? 0) + r.n
  }
  const window = (k: 'last5' | 'last60') => {
    const get = (s: string) => recent.find((r) => r.status === s)?.[k] ?? 0
    return {
      completed: get('completed'),
      failed: get('failed'),
      timedOut: get('timed_out'),
      cancelled: get('cancelled'),
    }
  }
  const last60 = window('last60')
  const ended = last60.completed + last60.failed + last60.timedOut
  const minutes = Array.from({ length: 60 }, () => 0)
  for (const r of perMinute) if (r.m >= 0 && r.m < 60) minutes[r.m] = r.n
  const oldestAt = oldest[0]?.at ? new Date(oldest[0].at) : null
  const l = latency[0]
  const round = (x: number | null | undefined) => (x == null ? null : Math.round(x * 1000) / 1000)
  return {
    total,
    byStatus,
    queue: {
      pending: byStatus.pending,
      byPriority,
      oldestPendingAgeSeconds: oldestAt ? Math.max(0, Math.round((now.getTime() - oldestAt.getTime()) / 1000)) : null,
    },
    recent: {
      last5Minutes: window('last5'),
      last60Minutes: last60,
      successRate: ended > 0 ? Math.round((last60.completed / ended) * 10_000) / 10_000 : null,
      completedPerMinute: minutes,
    },
    durationSeconds: { p50: round(l?.d50), p95: round(l?.d95), sample: l?.dn ?? 0 },
    createToAssignedSeconds: { p50: round(l?.a50), p95: round(l?.a95), sample: l?.an ?? 0 },
    failuresByCode: {
      codes: failures.map((r) => ({ code: r.code, count: r.n })),
      other: (failures[0]?.total ?? 0) - failures.reduce((sum, r) => sum + r.n, 0),
      sample: failures[0]?.total ?? 0,
    },
  }
}

/** Statistics through the cache (when Redis is configured): dropped by every write. */
export function cachedAgentStatistics(deps: Pick<ServiceDeps, 'db' | 'kv'>) {
  const load = () => agentStatistics(deps.db)
  return deps.kv ? deps.kv.cached(keys.agentStats, STATS_TTL_MS, load) : load()
}

export function cachedTaskStatistics(deps: Pick<ServiceDeps, 'db' | 'kv' | 'clock'>) {
  const load = () => taskStatistics(deps.db, deps.clock.now())
  return deps.kv ? deps.kv.cached(keys.taskStats, STATS_TTL_MS, load) : load()
}
