import type { Agent, FleetEvent, Task } from './types'

/** Every agent, by id (read whole, paged in the browser). */
export const agents = new Map<string, Agent>()

/** The newest tasks under the table's status filter (and search), by id. */
export const tasks = new Map<string, Task>()

/**
 * The task whose detail is open (`id` null when closed): the task as last read, its events
 * (its history merged with the stream's, by event id), and whether it was deleted.
 */
export const detail = {
  id: null as string | null,
  task: null as Task | null,
  events: new Map<number, FleetEvent>(),
  gone: false,
}

/**
 * The agent whose detail is open (`id` null when closed): the agent as last read, the tasks
 * it runs and its recent failures, and whether it was deleted.
 */
export const agentDetail = {
  id: null as string | null,
  agent: null as Agent | null,
  running: [] as Task[],
  failures: [] as Task[],
  gone: false,
}

const NAMES_KEPT = 5000
/** Names learnt from events (task.created, agent.registered) and reads, for what the tables do not hold. */
const names = new Map<string, string>()

export function learnName(id: string, name: string) {
  names.delete(id)
  names.set(id, name)
  if (names.size > NAMES_KEPT) {
    const oldest = names.keys().next().value
    if (oldest !== undefined) names.delete(oldest)
  }
}

/** A task's or an agent's name, if the page knows it. */
export const nameOf = (id: string): string | undefined =>
  (tasks.get(id) || agents.get(id))?.name ??
  names.get(id) ??
  (detail.task?.id === id ? detail.task.name : agentDetail.agent?.id === id ? agentDetail.agent.name : undefined)
