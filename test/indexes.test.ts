import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/client'
import { withTx } from '../src/db/tx'
import { createHarness, type Harness } from './harness'

/**
 * Every index of `tasks` is written again on each status change of a task, so each must earn
 * its place: here each one is named with the query of the service it serves (the WHERE and
 * ORDER BY of that query, as the code writes them), and the plan of that query must read it.
 * A new index without a query here fails the first test; a query that no longer reads its
 * index fails the second. (Sequential scans are turned off: on a test's small table the
 * planner would rightly read the whole table; the question is whether the index serves.)
 */

const A = "'01930000-0000-7000-8000-000000000001'::uuid"
const NOW = "'2026-01-01T00:00:00Z'::timestamptz"
const NOW_VALUE = new Date('2026-01-01T00:00:00Z')

const servedBy: Record<string, { by: string; query: string }> = {
  tasks_pkey: { by: 'GET /tasks/{id}, every report', query: `SELECT * FROM tasks WHERE id = ${A}` },
  tasks_idempotency_key_idx: {
    by: 'a create with an Idempotency-Key (ON CONFLICT, and the read of the task it made)',
    query: `SELECT * FROM tasks WHERE idempotency_owner = 'o' AND idempotency_key = 'k'`,
  },
  tasks_status_idx: {
    by: 'GET /tasks?status=…, and the oldest pending task (statistics)',
    query: `SELECT created_at FROM tasks WHERE status = 'pending' ORDER BY id LIMIT 1`,
  },
  tasks_agent_idx: {
    by: 'GET /tasks?agentId=… (an agent’s history)',
    query: `SELECT * FROM tasks WHERE agent_id = ${A} ORDER BY id DESC LIMIT 51`,
  },
  tasks_agent_active_idx: {
    by: 'the heartbeat’s answer (assigned tasks, cancels), agent loss',
    query: `SELECT * FROM tasks WHERE agent_id = ${A} AND status IN ('assigned', 'running')`,
  },
  tasks_type_idx: {
    by: 'GET /tasks?type=…',
    query: `SELECT * FROM tasks WHERE type = 'x' ORDER BY id DESC LIMIT 51`,
  },
  tasks_shape_queue_idx: {
    by: 'every fill (fillCtes, the sweep’s queueHeads) and the sweep’s shape upkeep',
    query: `SELECT id FROM tasks WHERE shape = ${A} AND status = 'pending' AND req_agent_id IS NULL
             AND available_at <= ${NOW} ORDER BY priority DESC NULLS LAST, id LIMIT 4`,
  },
  tasks_concurrency_idx: {
    by: 'the sweep’s recount of concurrency keys (reconcileKeys), GET /concurrency’s waiting tasks',
    query: `SELECT count(*) FROM tasks WHERE concurrency_key = 'k' AND status IN ('assigned', 'running')`,
  },
  tasks_pinned_queue_idx: {
    by: 'every fill, for the tasks pinned to the agent',
    query: `SELECT id FROM tasks WHERE req_agent_id = ${A} AND status = 'pending'
             AND available_at <= ${NOW} ORDER BY priority DESC NULLS LAST, id LIMIT 4`,
  },
  tasks_running_deadline_idx: {
    by: 'the sweep’s timeouts (timeOutRunning)',
    query: `SELECT id FROM tasks WHERE status = 'running' AND deadline_at < ${NOW}`,
  },
  tasks_cancel_requested_idx: {
    by: 'the sweep’s cancel grace (expireCancels)',
    query: `SELECT id FROM tasks WHERE status = 'running' AND cancel_requested AND cancel_requested_at < ${NOW}`,
  },
  tasks_assigned_at_idx: {
    by: 'the sweep’s assign timeout (requeueUnstarted)',
    query: `SELECT id FROM tasks WHERE status = 'assigned' AND assigned_at < ${NOW}`,
  },
  tasks_drain_requested_idx: {
    by: 'the sweep’s drain requeue (requeueDrained)',
    query: `SELECT id FROM tasks WHERE drain_requested_at < ${NOW} AND status IN ('assigned', 'running')`,
  },
  tasks_auto_retry_idx: {
    by: 'the sweep’s retries (scheduleRetries)',
    query: `SELECT id FROM tasks WHERE auto_retry AND status IN ('failed', 'timed_out') LIMIT 100`,
  },
  tasks_finished_idx: {
    by: 'statistics: the outcomes of the last hour',
    query: `SELECT status, count(*) FROM tasks WHERE finished_at >= ${NOW} - interval '1 hour' AND finished_at <= ${NOW} GROUP BY status`,
  },
}

let h: Harness
beforeAll(async () => {
  h = await createHarness()
  // A table shaped like a service's after a while: mostly history (completed, some failed,
  // a few of them waiting for a retry), a queue, and the work in flight on 20 agents.
  await h.database.db.execute(sql`
    INSERT INTO tasks (id, name, type, status, agent_id, auto_retry, available_at, created_at, updated_at,
                       assigned_at, finished_at)
    SELECT gen_random_uuid(), 't' || i, 'type-' || (i % 7), s.status,
           CASE WHEN s.status <> 'pending' THEN ('01930000-0000-7000-8000-' || lpad((i % 20)::text, 12, '0'))::uuid END,
           s.status = 'failed' AND i % 40 = 0, ${NOW_VALUE}, ${NOW_VALUE}, ${NOW_VALUE},
           CASE WHEN s.status <> 'pending' THEN ${NOW_VALUE}::timestamptz END,
           CASE WHEN s.status IN ('completed', 'failed') THEN ${NOW_VALUE}::timestamptz END
      FROM generate_series(1, 4000) AS i,
           LATERAL (SELECT CASE WHEN i % 100 < 80 THEN 'completed' WHEN i % 100 < 90 THEN 'failed'
                                WHEN i % 100 < 95 THEN 'pending' WHEN i % 100 < 97 THEN 'assigned'
                                ELSE 'running' END AS status) s`)
  await h.database.db.execute(sql`ANALYZE tasks`)
})
afterAll(async () => {
  await h.close()
})

describe('the indexes of tasks', () => {
  it('are exactly the ones named here with the query each serves', async () => {
    const rows = await rowsOf<{ indexname: string }>(
      h.database.db,
      sql`SELECT indexname FROM pg_indexes WHERE tablename = 'tasks' AND schemaname = current_schema() ORDER BY 1`,
    )
    expect(rows.map((r) => r.indexname)).toEqual(Object.keys(servedBy).sort())
  })

  it.each(Object.entries(servedBy))('%s is read by its query', async (index, { query }) => {
    const plan = await withTx(h.database.db, async (tx) => {
      await tx.execute(sql`SET LOCAL enable_seqscan = off`)
      const lines = await rowsOf<{ 'QUERY PLAN': string }>(tx, sql.raw(`EXPLAIN ${query}`))
      return lines.map((l) => l['QUERY PLAN']).join('\n')
    })
    expect(plan).toContain(index)
  })
})
