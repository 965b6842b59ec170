import { eq } from 'drizzle-orm'
import { ApiError } from '../lib/errors'
import type { Executor, Tx } from './client'
import { type AgentRow, agents, type TaskRow, tasks } from './schema'

/** An agent by id (locked `FOR UPDATE` with `lock`), or 404. */
export async function getAgent(db: Executor, id: string, lock = false): Promise<AgentRow> {
  const q = db.select().from(agents).where(eq(agents.id, id))
  const [row] = lock ? await q.for('update') : await q
  if (!row) throw new ApiError('not_found', `No agent with id ${id}.`)
  return row
}

/** A task by id, locked `FOR UPDATE` for the caller's transaction, or 404. */
export async function lockTask(tx: Tx, id: string): Promise<TaskRow> {
  const [row] = await tx.select().from(tasks).where(eq(tasks.id, id)).for('update')
  if (!row) throw new ApiError('not_found', `No task with id ${id}.`)
  return row
}
