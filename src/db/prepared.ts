import { eq, sql } from 'drizzle-orm'
import type { Db } from './client'
import { agents, tasks } from './schema'

/**
 * Prepared statements for the hottest reads (every agent call, every heartbeat, every task
 * read): drizzle builds their SQL once and Postgres plans them once per connection.
 * Built lazily per database handle.
 */
function build(db: Db) {
  const id = sql.placeholder('id')
  return {
    agentAuth: db
      .select({ id: agents.id, tokenVersion: agents.tokenVersion })
      .from(agents)
      .where(eq(agents.id, id))
      .prepare('agent_auth'),
    agentById: db.select().from(agents).where(eq(agents.id, id)).prepare('agent_by_id'),
    taskById: db.select().from(tasks).where(eq(tasks.id, id)).prepare('task_by_id'),
  }
}

const cache = new WeakMap<Db, ReturnType<typeof build>>()

export function queries(db: Db): ReturnType<typeof build> {
  let q = cache.get(db)
  if (!q) {
    q = build(db)
    cache.set(db, q)
  }
  return q
}
