import type { Db } from '../db/client'
import type { Config } from '../env'
import type { Clock } from '../lib/clock'
import { type Kv, keys } from '../lib/kv'
import type { Logger } from '../lib/logger'
import type { Metrics } from '../lib/metrics'
import type { WorkNotifier } from '../lib/notifier'
import type { StallWatch } from '../lib/stalls'
import type { CreateWriter } from './create-writer'
import { EVENTS_CHANNEL } from './events'
import type { HeartbeatWriter } from './heartbeat-writer'

/** What services take: the database, the clock (all domain time) and the settings. */
export interface ServiceDeps {
  db: Db
  clock: Clock
  config: Config
  /** Wakes long-polling heartbeats when work lands on an agent; optional (tests, scripts). */
  notifier?: WorkNotifier
  /** Cache, bus and rate limits (Redis or in-process); optional (tests, scripts). */
  kv?: Kv
  /** This process's counters and histograms; optional (tests, scripts). */
  metrics?: Metrics
  /** For what a service recovers from on its own (and the caller need not hear about). */
  logger?: Logger
  /**
   * What this process noticed of the service's stalls (its event loop paused, its database
   * unreachable): written by the sweep, which moves deadlines by them. Optional (tests, scripts).
   */
  stalls?: StallWatch
  /**
   * Writes heartbeats together with the others in flight (one per process with one
   * database); absent (Workers, tests, scripts): each heartbeat writes alone.
   */
  heartbeats?: HeartbeatWriter
  /**
   * Writes single creates together with the others in flight (one per process with one
   * database); absent (Workers, tests, scripts): each create writes alone.
   */
  creates?: CreateWriter
  /** Without Redis: this process's cache of agents' token versions (dropped by rotation and deletion). */
  authCache?: { delete(id: string): void }
}

/** Drops cached copies of what a committed write changed; call before answering. */
export async function changed(
  deps: Pick<ServiceDeps, 'kv' | 'authCache'>,
  what: {
    tasks?: Iterable<string | null | undefined>
    agents?: Iterable<string | null | undefined>
    auth?: string[]
    /** False for a write that recorded no event and moved no count (a plain heartbeat). */
    eventful?: boolean
  },
): Promise<void> {
  for (const id of what.auth ?? []) deps.authCache?.delete(id)
  if (!deps.kv) return
  const eventful = what.eventful ?? true
  // The write appended events: wake the event streams (a hint; they read the database).
  if (eventful) void deps.kv.publish(EVENTS_CHANNEL, '1')
  if (deps.kv.kind === 'memory') return
  const list: string[] = []
  for (const id of what.tasks ?? []) if (id) list.push(keys.task(id))
  for (const id of what.agents ?? []) if (id) list.push(keys.agent(id))
  for (const id of what.auth ?? []) list.push(keys.agentAuth(id))
  // Statistics summarise every agent and task: a change of status or load drops them.
  if (eventful) list.push(keys.agentStats, keys.taskStats)
  await deps.kv.invalidate(list)
}
