import type { AgentStatus } from './model'

/**
 * An agent's status and load: who may set which status, what status a heartbeat leaves an
 * agent in, and how its stored count of held tasks (`activeTasks`) moves. Each rule is
 * written once here, in TypeScript and as SQL side by side (the batched heartbeat statement,
 * `heartbeats` in src/db/hot.ts, takes the SQL; the services the TypeScript), and
 * test/agent-states.test.ts checks the two forms agree, pair by pair, and against the
 * running service.
 */

/**
 * The statuses each kind of caller may set (PATCH /agents/{id}/status, and an agent's
 * heartbeat `status`). `offline` is never set by hand: it is an agent not yet heard from,
 * silent, or deregistered.
 */
export const SETTABLE_STATUSES = {
  staff: ['online', 'draining', 'maintenance', 'error'],
  agent: ['online', 'draining', 'error'],
} as const satisfies Record<'staff' | 'agent', readonly AgentStatus[]>

/** A status an agent may set itself (its heartbeat's `status`). */
export type AgentSetStatus = (typeof SETTABLE_STATUSES.agent)[number]

/**
 * Statuses only staff set, and so only staff clear (`maintenance`): an agent may not leave
 * one (PATCH refuses it) and a heartbeat keeps it.
 */
export const STAFF_HELD: readonly AgentStatus[] = SETTABLE_STATUSES.staff.filter(
  (s) => !(SETTABLE_STATUSES.agent as readonly AgentStatus[]).includes(s),
)

const quoted = (xs: readonly string[]) => xs.map((x) => `'${x}'`).join(', ')

/** One case of the beat rule: when it holds, and the status the beat leaves, in both forms. */
export interface BeatCase {
  name: 'staff_held' | 'reported' | 'back_online' | 'unchanged'
  holds(current: AgentStatus, reported: AgentSetStatus | null): boolean
  /** `holds` as SQL, over SQL expressions for the stored and the reported status (NULL: none). */
  holdsSql(current: string, reported: string): string
  next(current: AgentStatus, reported: AgentSetStatus | null): AgentStatus
  nextSql(current: string, reported: string): string
}

/**
 * THE BEAT RULE: the status a heartbeat leaves its agent in, from the status stored and the
 * one the heartbeat reports (or none); the first case that holds decides. A status only
 * staff set stays (a heartbeat never overrides an operator's maintenance); else the
 * reported status applies; else an offline agent is back online (a registered agent's first
 * heartbeat, or one that went silent and beats again); else the status stays.
 */
export const BEAT_STATUS: readonly BeatCase[] = [
  {
    name: 'staff_held',
    holds: (c) => STAFF_HELD.includes(c),
    holdsSql: (c) => `${c} IN (${quoted(STAFF_HELD)})`,
    next: (c) => c,
    nextSql: (c) => c,
  },
  {
    name: 'reported',
    holds: (_, r) => r !== null,
    holdsSql: (_, r) => `${r} IS NOT NULL`,
    next: (c, r) => r ?? c,
    nextSql: (_, r) => r,
  },
  {
    name: 'back_online',
    holds: (c) => c === 'offline',
    holdsSql: (c) => `${c} = 'offline'`,
    next: () => 'online',
    nextSql: () => "'online'",
  },
  {
    name: 'unchanged',
    holds: () => true,
    holdsSql: () => 'true',
    next: (c) => c,
    nextSql: (c) => c,
  },
]

/** The status a heartbeat reporting `reported` (or nothing) leaves an agent that is `current` in. */
export function beatStatus(current: AgentStatus, reported: AgentSetStatus | null): AgentStatus {
  const found = BEAT_STATUS.find((c) => c.holds(current, reported)) as BeatCase
  return found.next(current, reported)
}

/** `beatStatus` as SQL: a CASE over the same cases, in the same order. */
export const beatStatusSql = (current: string, reported: string) =>
  `CASE ${BEAT_STATUS.map((c) => `WHEN ${c.holdsSql(current, reported)} THEN ${c.nextSql(current, reported)}`).join(' ')} END`

/**
 * THE LOAD RULE: an agent's `activeTasks` counts the tasks it holds (assigned or running),
 * stored and moved in the same statement as every task move that changes it: down by the
 * tasks that left it, never below zero (a count already off must not go negative and show
 * slots the agent does not have), up by the tasks it takes. A heartbeat does both: its
 * reports' ends first (what the fill may give is counted from there), then what it is given.
 */
export const releasedLoad = (active: number, left: number) => Math.max(active - left, 0)
export const releasedLoadSql = (active: string, left: string) => `greatest(${active} - ${left}, 0)`
export const takenLoad = (active: number, taken: number) => active + taken
export const takenLoadSql = (active: string, taken: string) => `(${active} + ${taken})`

/** An agent's load after a heartbeat whose reports ended `ended` of its tasks and that gave it `given`. */
export const loadAfterBeat = (active: number, ended: number, given: number) =>
  takenLoad(releasedLoad(active, ended), given)
