import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/client'
import { heartbeatsPlain } from '../src/db/hot'
import { withTx } from '../src/db/tx'
import { createHarness, type Harness, unique } from './harness'

/**
 * Placement by shape (docs/scheduler.md, "The queue by shape"): a fill reads only the
 * queues of the shapes an agent fits, so tasks nothing can take cost nothing; the shape
 * table is kept by creates, edits, hand retries and the sweep.
 */

let h: Harness
beforeAll(async () => {
  h = await createHarness()
})
afterAll(async () => {
  await h.close()
})
beforeEach(async () => {
  await h.database.db.execute(
    sql`TRUNCATE agents, tasks, task_logs, task_log_totals, events, task_shapes, scheduler_state`,
  )
})

const beat = (a: { id: string; token: string }) =>
  h.call('POST', '/api/v1/agents/heartbeat', { token: a.token, body: { agentId: a.id } })
const get = async (id: string) => (await h.call('GET', `/api/v1/tasks/${id}`)).body
const shapeRows = () => rowsOf<{ id: string; empty_since: Date | null }>(h.database.db, sql`SELECT * FROM task_shapes`)

/** `n` pending tasks, written straight into the table, that require a capability no agent has. */
async function unplaceable(n: number, priority = 9) {
  await h.database.db.execute(sql`
    INSERT INTO tasks (id, name, type, priority, req_capabilities, status, available_at, created_at, updated_at)
    SELECT gen_random_uuid(), 'blocked-' || i, 'test.run', ${priority}, '{nobody-has-this}', 'pending',
           ${h.clock.now()}, ${h.clock.now()}, ${h.clock.now()}
      FROM generate_series(1, ${n}) AS i`)
}

/** Rows the plan of `EXPLAIN (ANALYZE, FORMAT JSON)` read from `relation`, over all its scans. */
function rowsRead(plan: unknown, relation: string): number {
  const node = plan as { Plan?: unknown; Plans?: unknown[]; 'Relation Name'?: string }
  let n = 0
  const p = node as Record<string, unknown>
  if (p['Relation Name'] === relation) {
    n += Number(p['Actual Rows'] ?? 0) * Number(p['Actual Loops'] ?? 1)
    n += Number(p['Rows Removed by Filter'] ?? 0) * Number(p['Actual Loops'] ?? 1)
  }
  if (node.Plan) n += rowsRead(node.Plan, relation)
  for (const c of node.Plans ?? []) n += rowsRead(c, relation)
  return n
}

describe('the queue by shape', () => {
  it('a heartbeat takes the fitting tasks behind 2,000 that nothing can take, and reads none of them', async () => {
    await unplaceable(2000)
    expect((await h.sweep()).assigned).toBe(0)
    const a = await h.agent({ maxConcurrentTasks: 4 })
    const t = await h.task({ priority: 1 })
    // Placed at once by the create's fast path, on the only agent that fits.
    expect(await get(t.id)).toMatchObject({ status: 'assigned', agentId: a.id })

    // Two more wait while the agent drains; then its heartbeat's own statement is run with
    // its plan measured: it reads the fitting shape's queue, never the 2,000 at the head.
    await h.call('PATCH', `/api/v1/agents/${a.id}/status`, { body: { status: 'draining' } })
    const queued = await Promise.all([1, 2].map(() => h.task({ priority: 1 })))
    await h.database.db.execute(sql`UPDATE agents SET status = 'online' WHERE id = ${a.id}`)
    const plan = await withTx(h.database.db, async (tx) => {
      await tx.execute(sql.raw(`PREPARE explained_beat AS ${heartbeatsPlain.text}`))
      const at = h.clock.now().toISOString()
      const beats = JSON.stringify([{ agent_id: a.id, status: null, metrics: null, running: [], task_types: null }])
      const [row] = await rowsOf<{ 'QUERY PLAN': unknown }>(
        tx,
        sql.raw(`EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE explained_beat('${at}', '${beats}', '{${a.id}}')`),
      )
      await tx.execute(sql`DEALLOCATE explained_beat`)
      return row?.['QUERY PLAN']
    })
    const json = typeof plan === 'string' ? JSON.parse(plan) : plan
    const read = rowsRead((json as unknown[])[0], 'tasks')
    expect(read).toBeGreaterThan(0)
    expect(read).toBeLessThan(50)
    for (const q of queued) expect(await get(q.id)).toMatchObject({ status: 'assigned', agentId: a.id })
  })

  it('the sweep places what fits behind tasks nothing can take, and adds the shapes it finds missing', async () => {
    await unplaceable(500)
    const a = await h.agent({ maxConcurrentTasks: 3 })
    // Three tasks created while the agent is away, their shape row lost: only the sweep can
    // place them, and it must find their shape from the queue itself.
    await h.call('PATCH', `/api/v1/agents/${a.id}/status`, { body: { status: 'draining' } })
    const ts = await Promise.all([1, 2, 3].map(() => h.task({ priority: 1 })))
    await h.database.db.execute(sql`DELETE FROM task_shapes`)
    await h.call('PATCH', `/api/v1/agents/${a.id}/status`, { body: { status: 'online' } })
    expect((await beat(a)).body.assignments).toEqual([])
    const s = await h.sweep()
    expect(s.assigned).toBe(3)
    for (const t of ts) expect(await get(t.id)).toMatchObject({ status: 'assigned', agentId: a.id })
    // The blocked tasks' shape and the placed tasks' shape are both in the table again.
    expect((await shapeRows()).length).toBe(2)
  })

  it('deletes a shape empty for an hour, and a new task of that shape brings it back', async () => {
    const t = await h.pendingTask({ requirements: { capabilities: ['gpu'] } })
    expect((await shapeRows()).length).toBe(1)
    await h.call('DELETE', `/api/v1/tasks/${t.id}`)
    await h.sweep()
    const [marked] = await shapeRows()
    expect(marked?.empty_since).not.toBeNull()
    h.clock.advance(59 * 60_000)
    await h.sweep()
    expect((await shapeRows()).length).toBe(1)
    h.clock.advance(2 * 60_000)
    await h.sweep()
    expect(await shapeRows()).toEqual([])

    const gpu = await h.agent({ capabilities: ['gpu'] })
    const again = await h.task({ requirements: { capabilities: ['gpu'] } })
    expect(await get(again.id)).toMatchObject({ status: 'assigned', agentId: gpu.id })
    expect((await shapeRows()).length).toBe(1)
  })

  it('an edited task is queued under its new shape, and an agent that fits only that one takes it', async () => {
    const t = await h.pendingTask({ requirements: { capabilities: ['a'] } })
    const b = await h.agent({ capabilities: ['b'] })
    const put = await h.call('PUT', `/api/v1/tasks/${t.id}`, {
      body: { name: t.name, type: 'test.run', requirements: { capabilities: ['b'], labels: t.requirements.labels } },
    })
    expect(put.status).toBe(200)
    expect((await shapeRows()).length).toBe(2)
    const res = await beat(b)
    expect(res.body.assignments.map((x: { id: string }) => x.id)).toEqual([t.id])
  })

  it('a task retried by hand is placed by the next heartbeat even after its shape was deleted', async () => {
    const cap = unique('cap')
    const a = await h.agent({ capabilities: [cap], maxConcurrentTasks: 1 })
    const t = await h.task({ requirements: { capabilities: [cap] }, maxAttempts: 1 })
    expect(await get(t.id)).toMatchObject({ status: 'assigned', agentId: a.id })
    await h.report(t.id, a.token, { status: 'failed', attempt: 1, error: { message: 'no' } })
    await h.database.db.execute(sql`DELETE FROM task_shapes`)
    expect((await h.call('POST', `/api/v1/tasks/${t.id}/retry`)).status).toBe(200)
    expect((await beat(a)).body.assignments.map((x: { id: string }) => x.id)).toEqual([t.id])
  })

  it('tasks of one shape in different label order or capability order share it', async () => {
    await h.pendingTask({ requirements: { capabilities: ['x', 'y'], labels: { p: '1', q: '2' } } })
    await h.pendingTask({ requirements: { capabilities: ['y', 'x', 'x'], labels: { q: '2', p: '1' } } })
    expect((await shapeRows()).length).toBe(1)
  })
})
