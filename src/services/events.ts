import type { Executor } from '../db/client'
import { events } from '../db/schema'

export interface NewEvent {
  type: string
  agentId?: string | null
  taskId?: string | null
  data?: Record<string, unknown>
}

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
