import { sql } from 'drizzle-orm'
import { type Executor, rowsOf } from '../db/client'
import { bind } from '../db/fragments'
import { addShapesSql } from '../db/hot'
import { type TaskShapeRow, taskShapes } from '../db/schema'
import { fairGroupSql } from '../domain/concurrency'
import { type FitTask, shapeQueueSql } from '../domain/fit'

/**
 * The shape table (`task_shapes`, docs/scheduler.md "The queue by shape"): one row per
 * requirement class of queued tasks, which placement reads before it reads any queue.
 */

/** How long a shape with no pending task is kept before the sweep deletes it. */
export const SHAPE_IDLE_HOURS = 1

/** A shape's requirements as a task's, for the fit rule (never pinned, declined by nobody). */
export const shapeTask = (s: TaskShapeRow): FitTask => ({
  type: s.type,
  declinedBy: [],
  reqCapabilities: s.reqCapabilities,
  reqProvider: s.reqProvider,
  reqRegion: s.reqRegion,
  reqLabels: s.reqLabels,
  reqAgentId: null,
})

/** Adds the shapes of these tasks when missing (a task edited, or put back in the queue by hand). */
export async function ensureShapes(db: Executor, taskIds: string[], now: Date): Promise<void> {
  if (taskIds.length === 0) return
  await rowsOf(
    db,
    bind(
      addShapesSql(
        "(SELECT * FROM tasks WHERE id = ANY({{ids}}::uuid[]) AND status = 'pending') AS x",
        '{{now}}::timestamptz',
      ),
      { ids: `{${taskIds.join(',')}}`, now },
    ),
  )
}

export async function allShapes(db: Executor): Promise<TaskShapeRow[]> {
  return db.select().from(taskShapes)
}

/**
 * The sweep's upkeep of the shape table, in one statement whose cost grows with the number
 * of shapes, not of tasks: the distinct shapes of pending tasks are read from the shape
 * queue's index by skipping from one shape to the next (a loose index scan); a shape found
 * there and missing from the table is added (so a task is never left out of placement for
 * longer than a sweep, whatever path put it back in the queue); shapes with no pending task
 * are marked, and deleted once they have been empty for SHAPE_IDLE_HOURS.
 */
export async function maintainShapes(db: Executor, now: Date) {
  const [out] = await rowsOf<{ live: number; added: number; emptied: number; pruned: number }>(
    db,
    sql`
    WITH RECURSIVE live AS (
      (SELECT shape FROM tasks WHERE status = 'pending' AND req_agent_id IS NULL ORDER BY shape LIMIT 1)
      UNION ALL
      SELECT (SELECT t.shape FROM tasks t
               WHERE t.status = 'pending' AND t.req_agent_id IS NULL AND t.shape > live.shape
               ORDER BY t.shape LIMIT 1)
        FROM live WHERE live.shape IS NOT NULL
    ), present AS (
      SELECT shape AS id FROM live WHERE shape IS NOT NULL
    ), added AS (
      INSERT INTO task_shapes (id, type, req_capabilities, req_provider, req_region, req_labels, fair_group,
                               concurrency_key, created_at)
      SELECT p.id, t.type, t.req_capabilities, t.req_provider, t.req_region, t.req_labels,
             ${sql.raw(fairGroupSql('t'))}, t.concurrency_key, ${now}
        FROM present p CROSS JOIN LATERAL (
          SELECT * FROM tasks t WHERE ${sql.raw(shapeQueueSql('t', 'p.id'))} LIMIT 1) t
       WHERE NOT EXISTS (SELECT 1 FROM task_shapes s WHERE s.id = p.id)
      ON CONFLICT (id) DO NOTHING
      RETURNING 1
    ), filled AS (
      UPDATE task_shapes s SET empty_since = NULL
       WHERE s.empty_since IS NOT NULL AND s.id IN (SELECT id FROM present)
      RETURNING 1
    ), emptied AS (
      UPDATE task_shapes s SET empty_since = ${now}
       WHERE s.empty_since IS NULL AND s.id NOT IN (SELECT id FROM present)
      RETURNING 1
    ), pruned AS (
      DELETE FROM task_shapes s
       WHERE s.empty_since < ${now}::timestamptz - make_interval(hours => ${SHAPE_IDLE_HOURS})
         AND s.id NOT IN (SELECT id FROM present)
      RETURNING 1
    )
    SELECT (SELECT count(*)::int FROM present) AS live, (SELECT count(*)::int FROM added) AS added,
           (SELECT count(*)::int FROM emptied) AS emptied, (SELECT count(*)::int FROM pruned) AS pruned`,
  )
  return out ?? { live: 0, added: 0, emptied: 0, pruned: 0 }
}

export type ShapeUpkeep = Awaited<ReturnType<typeof maintainShapes>>
