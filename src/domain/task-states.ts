import type { ReportStatus, TaskStatus } from './model'

/**
 * The task state machine, as one table: every move a task can make, who makes it, and what
 * it does. Services refuse anything not in it (409 `invalid_transition`, with the moves the
 * task's state allows), the report statement's verdict is generated from it
 * (`reportAllowedSql`), and test/task-states.test.ts walks it against the running service:
 * each move allowed here succeeds with the effects written here, every other is refused.
 */

/** Who moves a task: its agent's report, staff (admin or operator), the sweep, or placement. */
export type Mover = 'agent' | 'staff' | 'sweep' | 'placement'

/** The request or job that makes a move. */
export type MoveAction =
  /** POST /tasks/execute, POST /tasks (create), a heartbeat, the sweep's placement. */
  | 'place'
  /** PATCH /tasks/{id}/status, or a report in a heartbeat. Staff may report on an agent's behalf. */
  | 'report'
  /** POST /tasks/{id}/cancel. */
  | 'cancel'
  /** POST /tasks/{id}/retry. */
  | 'retry'
  /** DELETE /agents/{id}?force=true on the task's agent. */
  | 'deregister'
  /** A step of the sweep (expiry of silent agents, timeouts, retries). */
  | 'sweep'

/** A condition on the task, besides its status, for the move to be allowed. */
export type MoveGuard = 'cancel_requested' | 'not_cancel_requested' | 'auto_retry' | 'drain_requested'

/** Task events a move appends (task.created, task.updated and task.deleted are not moves). */
export type TaskMoveEvent =
  | 'task.assigned'
  | 'task.started'
  | 'task.progress'
  | 'task.completed'
  | 'task.failed'
  | 'task.cancelled'
  | 'task.cancel_requested'
  | 'task.timed_out'
  | 'task.requeued'

export interface TaskMove {
  /** The move's name; `requeued` events and docs use it as the reason where one is given. */
  name: string
  from: readonly TaskStatus[]
  to: TaskStatus
  action: MoveAction
  by: readonly Mover[]
  when?: MoveGuard
  /** For a report: the status reported (the state reached, but for `declined`, which requeues). */
  report?: ReportStatus
  /** The agent's slot: taken (placement), given back (the task leaves the agent), or kept. */
  slot: 'take' | 'release' | 'keep'
  /** Counted against the retry budget: `failures` (the task's fault) or `lostCount` (its agent's). */
  counts: 'failure' | 'loss' | null
  /**
   * What the move clears: the previous attempt's `result`, `error` and `progress` (they stay
   * in the task's events), and `budget` (failures and lostCount back to 0).
   */
  clears: readonly ('result' | 'error' | 'progress' | 'budget')[]
  /**
   * A report's error codes with which the move counts as a loss of the agent (`lostCount`,
   * capped by MAX_LOST_COUNT) rather than a failure: the run was lost, not the task's fault.
   */
  lossCodes?: readonly string[]
  /**
   * The attempt may still be alive on its agent after the move (the service stopped waiting
   * for it, the agent has not said it stopped): no retry is placed until its agent reports
   * its end, the agent is lost, or CANCEL_GRACE_SECONDS plus KILL_MARGIN_SECONDS pass.
   */
  mayOutlive?: true
  event: TaskMoveEvent
  /** How a 409's `allowed` list names the move: `<to> (<label>)`. */
  label: string
}

const live: TaskStatus[] = ['assigned', 'running']

/**
 * Added to CANCEL_GRACE_SECONDS for how long an attempt the service gave up on may still
 * run on its agent (a runner escalates to SIGKILL after its own grace, then reports).
 */
export const KILL_MARGIN_SECONDS = 10

/**
 * Error codes an agent reports for a run it lost, counted like `agent_lost`: it restarted
 * (`agent_restarted`), or it stopped the run because its drain's deadline passed
 * (`agent_drained`: the run was taken from it, not the task's fault).
 */
export const LOST_RUN_CODES = ['agent_restarted', 'agent_drained'] as const

export const TASK_MOVES: readonly TaskMove[] = [
  // Placement. A new attempt starts clean.
  {
    name: 'assign',
    from: ['pending'],
    to: 'assigned',
    action: 'place',
    by: ['placement'],
    slot: 'take',
    counts: null,
    clears: ['result', 'error', 'progress'],
    event: 'task.assigned',
    label: 'placement',
  },
  // Reports. `assigned → failed` lets an agent refuse a task it cannot start without
  // pretending to run it; `running → running` is a progress report.
  ...(
    [
      ['start', 'assigned', 'running', 'keep', null, 'task.started', 'report'],
      ['refuse', 'assigned', 'failed', 'release', 'failure', 'task.failed', 'report'],
      ['progress', 'running', 'running', 'keep', null, 'task.progress', 'progress report'],
      ['complete', 'running', 'completed', 'release', null, 'task.completed', 'report'],
      ['fail', 'running', 'failed', 'release', 'failure', 'task.failed', 'report'],
    ] as const
  ).map(
    ([name, from, to, slot, counts, event, label]): TaskMove => ({
      name,
      from: [from],
      to,
      report: to,
      action: 'report',
      by: ['agent', 'staff'],
      slot,
      counts,
      // A runner that restarted reports the runs it lost `failed` (agent_restarted): the same
      // loss as a silent agent, so it is counted the same way.
      ...(name === 'fail' ? { lossCodes: LOST_RUN_CODES } : {}),
      clears: [],
      event,
      label,
    }),
  ),
  // An agent handed a type it does not run (its declaration was stale): back to the queue,
  // no attempt spent, and never offered to that agent again (`declinedBy`).
  {
    name: 'decline',
    from: ['assigned'],
    to: 'pending',
    report: 'declined',
    action: 'report',
    by: ['agent', 'staff'],
    slot: 'release',
    counts: null,
    clears: ['result', 'progress'],
    event: 'task.requeued',
    label: 'report: declined, its agent does not run its type',
  },
  {
    name: 'confirm_cancel',
    from: ['running'],
    to: 'cancelled',
    report: 'cancelled',
    action: 'report',
    by: ['agent', 'staff'],
    when: 'cancel_requested',
    slot: 'release',
    counts: null,
    clears: [],
    event: 'task.cancelled',
    label: 'report, after a cancel request',
  },
  // Cancels by staff. A running task is asked (its agent ends it); the rest end at once.
  {
    name: 'cancel',
    from: ['pending'],
    to: 'cancelled',
    action: 'cancel',
    by: ['staff'],
    slot: 'keep',
    counts: null,
    clears: [],
    event: 'task.cancelled',
    label: 'cancel',
  },
  {
    name: 'cancel',
    from: ['assigned'],
    to: 'cancelled',
    action: 'cancel',
    by: ['staff'],
    slot: 'release',
    counts: null,
    clears: [],
    event: 'task.cancelled',
    label: 'cancel',
  },
  {
    name: 'request_cancel',
    from: ['running'],
    to: 'running',
    action: 'cancel',
    by: ['staff'],
    slot: 'keep',
    counts: null,
    clears: [],
    event: 'task.cancel_requested',
    label: 'cancel: cancelRequested, its agent ends it',
  },
  {
    name: 'cancel_retry',
    from: ['failed', 'timed_out'],
    to: 'cancelled',
    action: 'cancel',
    by: ['staff'],
    when: 'auto_retry',
    slot: 'keep',
    counts: null,
    clears: [],
    event: 'task.cancelled',
    label: 'cancel, while an automatic retry is due',
  },
  // Manual retry: a fresh budget; `attempt` keeps counting, so earlier runs stay fenced off.
  {
    name: 'manual_retry',
    from: ['failed', 'cancelled', 'timed_out'],
    to: 'pending',
    action: 'retry',
    by: ['staff'],
    slot: 'keep',
    counts: null,
    clears: ['result', 'error', 'progress', 'budget'],
    event: 'task.requeued',
    label: 'retry',
  },
  // Force-deleting the agent that holds the task: back to the queue, no attempt spent.
  {
    name: 'agent_deregistered',
    from: live,
    to: 'pending',
    action: 'deregister',
    by: ['staff'],
    slot: 'release',
    counts: null,
    clears: ['result', 'progress'],
    event: 'task.requeued',
    label: 'its agent deregistered',
  },
  // The sweep.
  {
    name: 'assign_timeout',
    from: ['assigned'],
    to: 'pending',
    action: 'sweep',
    by: ['sweep'],
    slot: 'release',
    counts: null,
    clears: ['result', 'progress'],
    event: 'task.requeued',
    label: 'sweep: not started within ASSIGN_TIMEOUT_SECONDS',
  },
  {
    name: 'agent_lost',
    from: ['assigned'],
    to: 'pending',
    action: 'sweep',
    by: ['sweep'],
    slot: 'release',
    counts: null,
    clears: ['result', 'progress'],
    event: 'task.requeued',
    label: 'sweep: its agent went silent',
  },
  {
    name: 'agent_lost',
    from: ['running'],
    to: 'failed',
    action: 'sweep',
    by: ['sweep'],
    when: 'not_cancel_requested',
    slot: 'release',
    counts: 'loss',
    clears: [],
    event: 'task.failed',
    label: 'sweep: its agent went silent (agent_lost)',
  },
  {
    name: 'agent_lost',
    from: ['running'],
    to: 'cancelled',
    action: 'sweep',
    by: ['sweep'],
    when: 'cancel_requested',
    slot: 'release',
    counts: null,
    clears: [],
    event: 'task.cancelled',
    label: 'sweep: its agent went silent after a cancel request',
  },
  {
    name: 'cancel_grace_expired',
    from: ['running'],
    to: 'cancelled',
    action: 'sweep',
    by: ['sweep'],
    when: 'cancel_requested',
    slot: 'release',
    counts: null,
    clears: [],
    mayOutlive: true,
    event: 'task.cancelled',
    label: 'sweep: cancel not confirmed within CANCEL_GRACE_SECONDS',
  },
  {
    name: 'timeout',
    from: ['running'],
    to: 'timed_out',
    action: 'sweep',
    by: ['sweep'],
    slot: 'release',
    counts: 'failure',
    clears: [],
    mayOutlive: true,
    event: 'task.timed_out',
    label: 'sweep: past timeoutSeconds',
  },
  // A staff drain's deadline passed while the agent held the task: it was asked to stop (a
  // drain stop, not a cancel: `drainRequestedAt`, in its agent's `cancellations`), and after
  // CANCEL_GRACE_SECONDS more it goes back to the queue, once, without spending an attempt.
  // The run may still be alive on the drained agent (which takes nothing new anyway).
  {
    name: 'drain_requeue',
    from: live,
    to: 'pending',
    action: 'sweep',
    by: ['sweep'],
    when: 'drain_requested',
    slot: 'release',
    counts: 'loss',
    clears: ['result', 'progress'],
    mayOutlive: true,
    event: 'task.requeued',
    label: 'sweep: its agent drained, not stopped within CANCEL_GRACE_SECONDS of the deadline',
  },
  // Marked `auto_retry` when it ended with retries left (and no cancel asked).
  {
    name: 'retry',
    from: ['failed', 'timed_out'],
    to: 'pending',
    action: 'sweep',
    by: ['sweep'],
    when: 'auto_retry',
    slot: 'keep',
    counts: null,
    clears: ['result', 'progress'],
    event: 'task.requeued',
    label: 'sweep: automatic retry, after backoff',
  },
]

/** What a guard looks at. */
export interface GuardedTask {
  status: TaskStatus
  cancelRequested: boolean
  autoRetry: boolean
  /** A drain stop was asked (its agent's drain deadline passed). */
  drainRequested?: boolean
}

function guardHolds(when: MoveGuard | undefined, task: Omit<GuardedTask, 'status'>): boolean {
  switch (when) {
    case undefined:
      return true
    case 'cancel_requested':
      return task.cancelRequested
    case 'not_cancel_requested':
      return !task.cancelRequested
    case 'auto_retry':
      return task.autoRetry
    case 'drain_requested':
      return task.drainRequested === true
  }
}

/** The moves the table has from `status` (guards not applied). */
const movesFrom = (status: TaskStatus): TaskMove[] => TASK_MOVES.filter((m) => m.from.includes(status))

/** The moves from a state, as a 409's `allowed` list names them. */
export const allowedMoves = (status: TaskStatus): string[] => movesFrom(status).map((m) => `${m.to} (${m.label})`)

/**
 * The move `action` by `by` takes `task` through now (guards applied), if any; `to` picks
 * among several (for a report, the status reported).
 */
export function moveFor(
  task: GuardedTask,
  action: MoveAction,
  by: Mover,
  to?: TaskStatus | ReportStatus,
): TaskMove | undefined {
  return TASK_MOVES.find(
    (m) =>
      m.action === action &&
      m.by.includes(by) &&
      m.from.includes(task.status) &&
      (to === undefined || (m.report ?? m.to) === to) &&
      guardHolds(m.when, task),
  )
}

/** The move of that name from that state (and to `to`, where it has several): the services and the sweep look theirs up here. */
export function move(name: string, from: TaskStatus, to?: TaskStatus): TaskMove {
  const found = TASK_MOVES.filter((x) => x.name === name && x.from.includes(from) && (to === undefined || x.to === to))
  if (found.length !== 1) throw new Error(`${found.length} task moves ${name} from ${from}${to ? ` to ${to}` : ''}`)
  return found[0] as TaskMove
}

const reportMoves = TASK_MOVES.filter((m) => m.action === 'report')

/** Statuses an agent may report from the task's state (for a 409's `allowed`). */
export function allowedReports(task: Pick<GuardedTask, 'status' | 'cancelRequested'>): ReportStatus[] {
  const out: ReportStatus[] = []
  for (const m of reportMoves) {
    if (!m.report || !m.from.includes(task.status) || !guardHolds(m.when, { ...task, autoRetry: false })) continue
    if (!out.includes(m.report)) out.push(m.report)
  }
  return out
}

const guardSql = (when: MoveGuard | undefined, cancelRequested: string) =>
  when === 'cancel_requested'
    ? ` AND ${cancelRequested}`
    : when === 'not_cancel_requested'
      ? ` AND NOT ${cancelRequested}`
      : ''

/**
 * The report moves as an SQL condition: a task in state `from` may be reported `to`
 * (`cancelRequested`: its cancel flag). Generated from the table, so the report statement
 * and `allowedReports` cannot disagree.
 */
export function reportAllowedSql(from: string, to: string, cancelRequested: string): string {
  return `(${reportMoves
    .map(
      (m) =>
        `(${from} IN (${m.from.map((s) => `'${s}'`).join(', ')}) AND ${to} = '${m.report}'${guardSql(m.when, cancelRequested)})`,
    )
    .join('\n     OR ')})`
}
