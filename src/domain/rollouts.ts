import type { AgentStatus, TaskStatus } from './model'

/**
 * Rollouts: one task on every agent of a frozen target set, in waves, within an error
 * budget (docs/rollouts.md). The rules are written once here — the states and their moves,
 * how a strategy resolves against a target count, the error budget, when a wave starts and
 * when a rollout ends — and taken by the service (src/services/rollouts.ts), the routes'
 * schemas and the client. Like everything in src/domain/, this imports nothing from the
 * rest of src/.
 */

export const rolloutStatuses = ['running', 'paused', 'completed', 'failed', 'cancelled'] as const
export type RolloutStatus = (typeof rolloutStatuses)[number]

/** A rollout in one of these takes no more moves but the end of what it has in flight. */
export const finalRolloutStatuses = ['completed', 'failed', 'cancelled'] as const satisfies readonly RolloutStatus[]

export const targetStatuses = [
  'waiting',
  'dispatched',
  'running',
  'succeeded',
  'failed',
  'timed_out',
  'undeliverable',
  'cancelled',
  'skipped',
] as const
export type TargetStatus = (typeof targetStatuses)[number]

/** A target whose task exists and has not ended: it counts against maxConcurrency. */
/**
 * Agent statuses that are never targets: an operator took the agent out of service, so a
 * rollout must not count on it (nor fail waiting for it).
 */
export const NOT_TARGETED = ['draining', 'maintenance', 'quarantined'] as const satisfies readonly AgentStatus[]

export const inFlightTargetStatuses = ['dispatched', 'running'] as const satisfies readonly TargetStatus[]
/** The target statuses that count as errors against maxErrors. */
export const errorTargetStatuses = ['failed', 'timed_out', 'undeliverable'] as const satisfies readonly TargetStatus[]
/** A target in one of these is over. */
export const endedTargetStatuses = [
  'succeeded',
  'failed',
  'timed_out',
  'undeliverable',
  'cancelled',
  'skipped',
] as const satisfies readonly TargetStatus[]

export type TargetCounts = Record<TargetStatus, number>

export const zeroCounts = (): TargetCounts =>
  Object.fromEntries(targetStatuses.map((s) => [s, 0])) as unknown as TargetCounts

/** Who moves a target: the controller (dispatch, budget, cancel), its task's moves, or the sweep. */
export type TargetMover = 'controller' | 'task' | 'sweep' | 'staff'

export interface TargetMove {
  name: string
  from: readonly TargetStatus[]
  to: TargetStatus
  by: TargetMover
  /** What makes it. */
  when: string
}

/**
 * The target state machine. A target's task is an ordinary task: the target follows it
 * (`targetStatusOfTask`), and only the controller and the sweep move a target otherwise.
 */
export const TARGET_MOVES: readonly TargetMove[] = [
  {
    name: 'dispatch',
    from: ['waiting'],
    to: 'dispatched',
    by: 'controller',
    when: 'rollout running, its wave started, in flight < maxConcurrency, errors within budget',
  },
  { name: 'start', from: ['dispatched'], to: 'running', by: 'task', when: 'its task started' },
  // An agent lost mid-task: its task goes back to the queue (or fails with retries left), the
  // target is dispatched again — a retry, not a failure, until the task's attempts are spent.
  { name: 'requeue', from: ['running'], to: 'dispatched', by: 'task', when: 'its task went back to pending' },
  { name: 'succeed', from: ['dispatched', 'running'], to: 'succeeded', by: 'task', when: 'its task completed' },
  { name: 'fail', from: ['dispatched', 'running'], to: 'failed', by: 'task', when: 'its task failed, no retry left' },
  { name: 'time_out', from: ['running'], to: 'timed_out', by: 'task', when: 'its task timed out, no retry left' },
  { name: 'task_cancelled', from: ['dispatched', 'running'], to: 'cancelled', by: 'task', when: 'its task cancelled' },
  {
    name: 'undeliverable',
    from: ['dispatched'],
    to: 'undeliverable',
    by: 'sweep',
    when: 'its task waited pending (agent offline, deleted or full) for deliveryTimeoutSeconds; the task is cancelled',
  },
  { name: 'skip', from: ['waiting'], to: 'skipped', by: 'controller', when: 'the budget was exceeded' },
  { name: 'cancel', from: ['waiting'], to: 'skipped', by: 'staff', when: 'the rollout was cancelled' },
]

/**
 * What a target's task says of the target: pending or assigned — dispatched (not started:
 * a requeued task after its agent was lost is dispatched again); running — running; a
 * failure or timeout with an automatic retry due is still in flight (dispatched); the ends
 * map to the target's ends.
 */
export function targetStatusOfTask(task: { status: TaskStatus; autoRetry: boolean }): TargetStatus {
  switch (task.status) {
    case 'pending':
    case 'assigned':
      return 'dispatched'
    case 'running':
      return 'running'
    case 'completed':
      return 'succeeded'
    case 'failed':
      return task.autoRetry ? 'dispatched' : 'failed'
    case 'timed_out':
      return task.autoRetry ? 'dispatched' : 'timed_out'
    case 'cancelled':
      return 'cancelled'
  }
}

/** `targetStatusOfTask` as SQL, over task row alias `t`. */
export const targetStatusOfTaskSql = (t: string) => `(CASE ${t}.status
    WHEN 'pending' THEN 'dispatched' WHEN 'assigned' THEN 'dispatched' WHEN 'running' THEN 'running'
    WHEN 'completed' THEN 'succeeded'
    WHEN 'failed' THEN CASE WHEN ${t}.auto_retry THEN 'dispatched' ELSE 'failed' END
    WHEN 'timed_out' THEN CASE WHEN ${t}.auto_retry THEN 'dispatched' ELSE 'timed_out' END
    WHEN 'cancelled' THEN 'cancelled' END)`

export const sqlList = (xs: readonly string[]) => xs.map((x) => `'${x}'`).join(', ')

/** ----- Strategy: counts and percentages ----- */

/** A count (an integer) or a percentage of the targets (`"N%"`, N from 0 to 100). */
export type Amount = number | string

export const PERCENT = /^(\d{1,3}(?:\.\d+)?)%$/

/** The percentage an amount names, or undefined for a count; NaN for a malformed one. */
export function percentOf(a: Amount): number | undefined {
  if (typeof a === 'number') return undefined
  const m = PERCENT.exec(a)
  if (!m) return Number.NaN
  const p = Number(m[1])
  return p >= 0 && p <= 100 ? p : Number.NaN
}

/**
 * An amount as a count of `n` targets. Percentages round `up` (maxConcurrency, wave sizes:
 * at least one when above 0%) or `down` (maxErrors: "10%" of 25 targets allows 2 errors,
 * the third stops the rollout). A count is taken as it is.
 */
export function resolveAmount(a: Amount, n: number, round: 'up' | 'down'): number {
  const p = percentOf(a)
  if (p === undefined) return a as number
  // In hundredths, so "10%" of 200 is exactly 20, not 20.000000000000004 rounded up to 21.
  const exact = (Math.round(p * 100) * n) / 10_000
  return round === 'up' ? Math.ceil(exact - 1e-9) : Math.floor(exact + 1e-9)
}

export interface StrategyInput {
  maxConcurrency?: Amount
  maxErrors?: Amount
  waves?: { size: Amount }[]
  bakeSeconds?: number
  pauseBetweenWaves?: boolean
  deliveryTimeoutSeconds?: number
}

export const STRATEGY_DEFAULTS = {
  maxConcurrency: '100%',
  maxErrors: 0,
  bakeSeconds: 0,
  pauseBetweenWaves: false,
  deliveryTimeoutSeconds: 300,
} as const

export interface ResolvedStrategy {
  maxConcurrency: number
  maxErrors: number
  /** Each wave's size; they add up to the target count. */
  waves: number[]
  bakeSeconds: number
  pauseBetweenWaves: boolean
  deliveryTimeoutSeconds: number
}

export interface StrategyProblem {
  path: string
  message: string
}

/**
 * The strategy against `n` targets: counts for every amount, and the waves' sizes. The
 * last wave takes the rest (its own size is not used); the waves before it must leave it at
 * least one target, else the waves do not add up. Without waves: one wave of every target.
 * Returns the problems instead when there are any (a 422 names each).
 */
export function resolveStrategy(s: StrategyInput, n: number): ResolvedStrategy | { problems: StrategyProblem[] } {
  const problems: StrategyProblem[] = []
  const check = (path: string, a: Amount, min: number) => {
    const p = percentOf(a)
    if (Number.isNaN(p)) problems.push({ path, message: 'a count or a percentage from "0%" to "100%"' })
    else if (p === undefined && (!Number.isInteger(a) || (a as number) < min)) {
      problems.push({ path, message: `an integer of at least ${min}, or a percentage` })
    }
  }
  const maxConcurrency = s.maxConcurrency ?? STRATEGY_DEFAULTS.maxConcurrency
  const maxErrors = s.maxErrors ?? STRATEGY_DEFAULTS.maxErrors
  check('body.strategy.maxConcurrency', maxConcurrency, 1)
  check('body.strategy.maxErrors', maxErrors, 0)
  const waves = s.waves ?? []
  for (const [i, w] of waves.entries()) check(`body.strategy.waves.${i}.size`, w.size, 1)
  if (problems.length) return { problems }
  if (percentOf(maxConcurrency) === 0) {
    return { problems: [{ path: 'body.strategy.maxConcurrency', message: 'must allow at least one task in flight' }] }
  }
  const sizes: number[] = []
  let left = n
  for (const [i, w] of waves.slice(0, -1).entries()) {
    const size = Math.max(1, resolveAmount(w.size, n, 'up'))
    if (size >= left) {
      return {
        problems: [
          {
            path: `body.strategy.waves.${i}.size`,
            message: `the waves do not add up: waves 1–${i + 1} take ${n - left + size} of ${n} targets, leaving none for the last wave (which takes the rest)`,
          },
        ],
      }
    }
    sizes.push(size)
    left -= size
  }
  sizes.push(left)
  return {
    maxConcurrency: Math.max(1, resolveAmount(maxConcurrency, n, 'up')),
    maxErrors: resolveAmount(maxErrors, n, 'down'),
    waves: sizes,
    bakeSeconds: s.bakeSeconds ?? STRATEGY_DEFAULTS.bakeSeconds,
    pauseBetweenWaves: s.pauseBetweenWaves ?? STRATEGY_DEFAULTS.pauseBetweenWaves,
    deliveryTimeoutSeconds: s.deliveryTimeoutSeconds ?? STRATEGY_DEFAULTS.deliveryTimeoutSeconds,
  }
}

/** The wave (1-based) of the `i`-th target (0-based, in target order) for wave sizes `waves`. */
export function waveOfIndex(i: number, waves: readonly number[]): number {
  let end = 0
  for (const [w, size] of waves.entries()) {
    end += size
    if (i < end) return w + 1
  }
  return waves.length
}

/** Where each wave but the last ends, as 0-based target indexes (the cumulative sizes): what `waveOfIndexSql` takes. */
export const waveEnds = (waves: readonly number[]) =>
  waves.slice(0, -1).map((_, i) => waves.slice(0, i + 1).reduce((a, b) => a + b, 0))

/** `waveOfIndex` as SQL: `i` a 0-based index expression, `ends` an int[] expression of `waveEnds`. */
export const waveOfIndexSql = (i: string, ends: string) =>
  `(1 + (SELECT count(*)::int FROM unnest(${ends}) AS e(x) WHERE e.x <= ${i}))`

/** ----- The error budget ----- */

/** errors = failed + timed_out + undeliverable. */
export const errorsOf = (c: Pick<TargetCounts, 'failed' | 'timed_out' | 'undeliverable'>) =>
  c.failed + c.timed_out + c.undeliverable

/**
 * THE ERROR BUDGET. Exceeded when errors > maxErrors: nothing more is dispatched, what is in
 * flight finishes, the waiting targets are skipped and the rollout ends `failed`.
 * maxErrors 0: the first error stops it.
 */
export const budgetExceeded = (errors: number, maxErrors: number) => errors > maxErrors

/** ----- The controller's decision ----- */

/** What the controller knows of a rollout when it advances it (after its targets followed their tasks). */
export interface RolloutState {
  status: RolloutStatus
  /** The wave started last (1-based). */
  wave: number
  waveCount: number
  /** When the started wave's last target ended; null while it has targets left. */
  waveEndedAt: Date | null
  bakeSeconds: number
  pauseBetweenWaves: boolean
  maxConcurrency: number
  maxErrors: number
  errors: number
  inFlight: number
  /** Waiting targets in waves up to the started one (counted up to maxConcurrency: no more is needed). */
  waitingStarted: number
  /** Waiting targets in later waves (counted up to one: only whether there is one matters). */
  waitingLater: number
  /** The rollout's end, once set. */
  endedAt: Date | null
}

export interface RolloutDecision {
  /** The rollout's status after. */
  status: RolloutStatus
  wave: number
  waveEndedAt: Date | null
  /** Waiting targets to skip (all of them). */
  skipWaiting: boolean
  /** How many waiting targets of started waves to dispatch now. */
  dispatch: number
  endedAt: Date | null
  /** What happened, as rollout.* events (without the prefix). */
  events: ('wave_started' | 'budget_exceeded' | 'paused' | 'ended')[]
}

/**
 * One step of the controller, decided from the state after the targets followed their
 * tasks. In order: a rollout over stays over; the budget exceeded skips every waiting
 * target and fails the rollout (it ends once nothing is in flight); a cancelled one ends
 * once nothing is in flight; the started wave over (nothing of it waiting or in flight):
 * with nothing later, the rollout completes; else at a gate (`pauseBetweenWaves`) it
 * pauses; else once `bakeSeconds` passed since the wave ended, the next wave starts. Then a
 * running rollout dispatches waiting targets of started waves up to maxConcurrency.
 */
export function decide(s: RolloutState, now: Date): RolloutDecision {
  const out: RolloutDecision = {
    status: s.status,
    wave: s.wave,
    waveEndedAt: s.waveEndedAt,
    skipWaiting: false,
    dispatch: 0,
    endedAt: s.endedAt,
    events: [],
  }
  if (s.endedAt) return out
  const waiting = s.waitingStarted + s.waitingLater
  if (s.status === 'failed' || s.status === 'cancelled') {
    out.skipWaiting = waiting > 0
    if (s.inFlight === 0) {
      out.endedAt = now
      out.events.push('ended')
    }
    return out
  }
  if (budgetExceeded(s.errors, s.maxErrors)) {
    out.status = 'failed'
    out.skipWaiting = waiting > 0
    out.events.push('budget_exceeded')
    if (s.inFlight === 0) {
      out.endedAt = now
      out.events.push('ended')
    }
    return out
  }
  if (s.waitingStarted === 0 && s.inFlight === 0) {
    // The started wave is over.
    if (s.waitingLater === 0) {
      out.status = 'completed'
      out.endedAt = now
      out.events.push('ended')
      return out
    }
    out.waveEndedAt = s.waveEndedAt ?? now
    if (s.status === 'running' && s.pauseBetweenWaves) {
      out.status = 'paused'
      out.events.push('paused')
      return out
    }
    if (s.status === 'running' && now.getTime() >= out.waveEndedAt.getTime() + s.bakeSeconds * 1000) {
      out.wave = s.wave + 1
      out.waveEndedAt = null
      out.events.push('wave_started')
    }
  }
  // The statement dispatches up to this many of the waiting targets of started waves it finds.
  if (out.status === 'running') out.dispatch = Math.max(0, s.maxConcurrency - s.inFlight)
  return out
}

/**
 * A paused rollout resumed: running again; at a gate (`pauseBetweenWaves`, its wave over)
 * the next wave starts at once. Without the gate a bake in progress goes on.
 */
export function resume(s: Pick<RolloutState, 'status' | 'wave' | 'waveCount' | 'waveEndedAt' | 'pauseBetweenWaves'>): {
  status: RolloutStatus
  wave: number
  waveEndedAt: Date | null
  startsWave: boolean
} {
  if (s.status !== 'paused') return { status: s.status, wave: s.wave, waveEndedAt: s.waveEndedAt, startsWave: false }
  if (s.pauseBetweenWaves && s.waveEndedAt !== null && s.wave < s.waveCount) {
    return { status: 'running', wave: s.wave + 1, waveEndedAt: null, startsWave: true }
  }
  return { status: 'running', wave: s.wave, waveEndedAt: s.waveEndedAt, startsWave: false }
}
