import type { Agent, FleetEvent, Task } from './types'

/** Every agent, by id (read whole, paged in the browser). */
export const agents = new Map<string, Agent>()

/** The newest tasks under the table's status filter, by id. */
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
