import type { AgentStatus, Labels, Provider, StreakEntry } from './model'

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
 * Statuses only staff (or the service) set, and so only staff clear: `maintenance`, and
 * `quarantined` (POST /agents/{id}/quarantine, or automatic quarantine). An agent may not
 * leave one (PATCH refuses it) and a heartbeat keeps it.
 */
export const STAFF_HELD: readonly AgentStatus[] = [
  ...SETTABLE_STATUSES.staff.filter((s) => !(SETTABLE_STATUSES.agent as readonly AgentStatus[]).includes(s)),
  'quarantined',
]

/** The statuses a staff drain may end in (`then`); `maintenance` is the default. */
export const DRAIN_THEN = ['maintenance', 'offline'] as const satisfies readonly AgentStatus[]
export type DrainThen = (typeof DRAIN_THEN)[number]

/**
 * What else the beat rule reads of the agent: the staff drain in force (`drainThen`, null
 * when none: an agent's own `draining` has none) and the tasks it holds after the beat's
 * reports (`active`). SQL: expressions for the same.
 */
export interface BeatContext {
  drainThen: AgentStatus | null
  active: number
}
export interface BeatContextSql {
  drainThen: string
  active: string
}
const NO_DRAIN: BeatContext = { drainThen: null, active: 0 }
const NO_DRAIN_SQL: BeatContextSql = { drainThen: 'NULL::text', active: '0' }

const quoted = (xs: readonly string[]) => xs.map((x) => `'${x}'`).join(', ')

/** One case of the beat rule: when it holds, and the status the beat leaves, in both forms. */
export interface BeatCase {
  name: 'drained' | 'staff_held' | 'reported' | 'back_online' | 'unchanged'
  holds(current: AgentStatus, reported: AgentSetStatus | null, ctx: BeatContext): boolean
  /** `holds` as SQL, over SQL expressions for the stored and the reported status (NULL: none). */
  holdsSql(current: string, reported: string, ctx: BeatContextSql): string
  next(current: AgentStatus, reported: AgentSetStatus | null, ctx: BeatContext): AgentStatus
  nextSql(current: string, reported: string, ctx: BeatContextSql): string
}

/**
 * THE BEAT RULE: the status a heartbeat leaves its agent in, from the status stored and the
 * one the heartbeat reports (or none); the first case that holds decides. An agent a staff
 * drain holds that holds no task any more moves to the drain's `then`; a status only staff
 * set stays, and so does a staff drain (a heartbeat never overrides an operator's
 * maintenance, a quarantine or a drain); else the reported status applies; else an offline
 * agent is back online (a registered agent's first heartbeat, or one that went silent and
 * beats again); else the status stays.
 */
export const BEAT_STATUS: readonly BeatCase[] = [
  {
    name: 'drained',
    holds: (c, _, x) => c === 'draining' && x.drainThen !== null && x.active === 0,
    holdsSql: (c, _, x) => `(${c} = 'draining' AND ${x.drainThen} IS NOT NULL AND ${x.active} = 0)`,
    next: (c, _, x) => x.drainThen ?? c,
    nextSql: (_, __, x) => x.drainThen,
  },
  {
    name: 'staff_held',
    holds: (c, _, x) => STAFF_HELD.includes(c) || (c === 'draining' && x.drainThen !== null),
    holdsSql: (c, _, x) => `(${c} IN (${quoted(STAFF_HELD)}) OR (${c} = 'draining' AND ${x.drainThen} IS NOT NULL))`,
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
export function beatStatus(
  current: AgentStatus,
  reported: AgentSetStatus | null,
  ctx: BeatContext = NO_DRAIN,
): AgentStatus {
  const found = BEAT_STATUS.find((c) => c.holds(current, reported, ctx)) as BeatCase
  return found.next(current, reported, ctx)
}

/** `beatStatus` as SQL: a CASE over the same cases, in the same order. */
export const beatStatusSql = (current: string, reported: string, ctx: BeatContextSql = NO_DRAIN_SQL) =>
  `CASE ${BEAT_STATUS.map((c) => `WHEN ${c.holdsSql(current, reported, ctx)} THEN ${c.nextSql(current, reported, ctx)}`).join(' ')} END`

/**
 * THE RESUME RULE: the status `POST /agents/{id}/resume` (from draining or maintenance) and
 * a quarantine's release (by hand or its timer) leave an agent in: `online`, unless it is
 * silent (no heartbeat within HEARTBEAT_TIMEOUT_SECONDS) and holds nothing, then `offline`
 * (its next heartbeat brings it online). A silent agent that still holds tasks goes online:
 * the sweep's expiry of silent agents, the one way tasks leave a lost agent, then takes it.
 */
export const resumedStatus = (silent: boolean, active: number): AgentStatus =>
  silent && active === 0 ? 'offline' : 'online'
export const resumedStatusSql = (silent: string, active: string) =>
  `CASE WHEN (${silent}) AND ${active} = 0 THEN 'offline' ELSE 'online' END`

/** The statuses each fleet action moves an agent from (POST /agents/{id}/… and /agents/actions). */
export const ACTION_FROM = {
  drain: ['online', 'draining', 'error'],
  maintenance: ['online', 'draining', 'error'],
  resume: ['draining', 'maintenance'],
  quarantine: ['online', 'draining', 'maintenance', 'error', 'offline'],
  release: ['quarantined'],
} as const satisfies Record<string, readonly AgentStatus[]>
export type FleetAction = keyof typeof ACTION_FROM

/**
 * THE STREAK RULE: an agent's failure streak (`fail_streak`) is its failed attempts since
 * its last completed one, newest last, the last STREAK_KEEP of them. An attempt's end
 * counts as failed when the state table counts it in `failures` (a `failed` report that is
 * not a loss of the agent: `refuse` and `fail`; and the sweep's `timeout`); a completed one
 * ends the streak; others (cancelled, declined, lost) leave it. A heartbeat's reports apply
 * in their order.
 */
export const STREAK_KEEP = 20
export type StreakEnd = { kind: 'completed' } | { kind: 'failed'; entry: StreakEntry } | { kind: 'other' }

export function streakAfter(streak: readonly StreakEntry[], ends: readonly StreakEnd[]): StreakEntry[] {
  let out = [...streak]
  for (const e of ends) {
    if (e.kind === 'completed') out = []
    else if (e.kind === 'failed') out.push(e.entry)
  }
  return out.slice(-STREAK_KEEP)
}

/**
 * `streakAfter` as SQL, over the stored streak and, for the ends of one agent's reports,
 * `lastOk` (the index of its last completed end, or NULL) and `fails` (the entries of the
 * failed ends after it, in order, as a jsonb array, or NULL when none).
 */
export const streakAfterSql = (streak: string, lastOk: string, fails: string) => {
  const joined = `(CASE WHEN ${lastOk} IS NULL THEN ${streak} || ${fails} ELSE ${fails} END)`
  return `CASE WHEN ${fails} IS NULL THEN (CASE WHEN ${lastOk} IS NULL THEN ${streak} ELSE '[]'::jsonb END)
    WHEN jsonb_array_length(${joined}) <= ${STREAK_KEEP} THEN ${joined}
    ELSE (SELECT jsonb_agg(q.e ORDER BY q.o) FROM jsonb_array_elements(${joined}) WITH ORDINALITY q(e, o)
           WHERE q.o > jsonb_array_length(${joined}) - ${STREAK_KEEP}) END`
}

/** What automatic quarantine is set to (QUARANTINE_* settings). `afterFailures` 0: off. */
export interface QuarantinePolicy {
  afterFailures: number
  windowSeconds: number
}

/**
 * THE QUARANTINE TRIGGER: an agent's streak calls for a judgement when its last
 * `afterFailures` ended attempts all failed (the streak holds at least that many), all
 * within `windowSeconds` of `now`, on at least 3 different tasks (fewer when `afterFailures`
 * is smaller). Whether it is then quarantined depends on the other agents (the tasks may be
 * bad, not the agent: src/services/fleet.ts).
 */
export function streakCallsForJudgement(
  streak: readonly StreakEntry[],
  nowSeconds: number,
  p: QuarantinePolicy,
): StreakEntry[] | null {
  if (p.afterFailures <= 0 || streak.length < p.afterFailures) return null
  const last = streak.slice(-p.afterFailures)
  if (last.some((e) => e.at < nowSeconds - p.windowSeconds)) return null
  if (new Set(last.map((e) => e.t)).size < Math.min(3, p.afterFailures)) return null
  return last
}

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

/** Which agents a bulk action (POST /agents/actions) acts on: all that match every field given. */
export interface AgentSelector {
  capabilities?: string[]
  provider?: Provider
  region?: string
  labels?: Labels
  status?: AgentStatus[]
  ids?: string[]
}

/** A selector that names nothing would act on the whole fleet: refused (422) at the edge. */
export const selectorIsEmpty = (s: AgentSelector) =>
  !s.capabilities?.length &&
  !s.provider &&
  !s.region &&
  !Object.keys(s.labels ?? {}).length &&
  !s.status?.length &&
  !s.ids?.length
