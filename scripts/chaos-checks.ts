/**
 * The invariants of `npm run chaos` (scripts/chaos.ts) as pure functions over what the run
 * recorded: no process, no database. Each returns how many things it checked and every
 * violation it found, in words with the ids needed to look them up; `summarize` turns the
 * results into the table the run prints, honouring `--allow` (invariants known to fail).
 * test/chaos-checks.test.ts feeds each one a violation, so none of them can pass by
 * construction.
 */

/** The invariants, in the order the table lists them. Their names are what `--allow` takes. */
export const INVARIANTS = {
  acked_tasks_kept: 'every acknowledged create (2xx) is in the database; every acknowledged completion stays completed',
  idempotent_create: 'one task per idempotency key: retries and replays return the same task',
  completed_once: 'no task attempt completes twice, or completes and ends another way too (event log)',
  no_overlap: 'no copy of a task starts while another copy of it is alive (sim agents and shell marks)',
  slots_respected: 'no agent holds more tasks than its slots (sampled from the database, and on the sim agents)',
  slot_counter_exact: "an agent's activeTasks equals the tasks it holds (one-statement database samples)",
  no_stuck_tasks: 'after the drain, nothing is stuck past its timeouts (running, assigned, cancel, retry, queue)',
  no_false_death: 'no agent.expired for an agent that kept heartbeating (or trying to) through a stall',
  stream_exactly_once: 'the SSE event stream delivers every event exactly once across reconnects (vs the table)',
  no_http_500: 'every HTTP answer is 2xx, 4xx or 503: never another 5xx (client side and server log)',
} as const

export type InvariantName = keyof typeof INVARIANTS

export interface Result {
  name: InvariantName
  checked: number
  violations: string[]
}

/** Milliseconds since the run's start, as the violation lines say times. */
export const at = (ms: number, t0: number) => `+${((ms - t0) / 1000).toFixed(3)}s`

/** An event by its public seq; the runs' queries give a row not sequenced yet as minus its row id. */
export const eventName = (seq: number) => (seq > 0 ? `event ${seq}` : `events row ${-seq}, not sequenced`)

// ---------------------------------------------------------------------------------------
// Live copies of a task (no_overlap)

/** One copy of a task attempt, alive from `start` to `end` (ms, this machine's clock). */
export interface Copy {
  taskId: string
  attempt: number
  /** Who ran it: a sim agent's name, or `shell pid N`. */
  holder: string
  start: number
  end: number
}

/**
 * The shell tasks' marks (one line each, appended by the task's own command):
 * `<start|tick|term|end> <taskId> <attempt> <epoch µs> <pid>`. A copy runs from its first
 * mark to its last: a command killed with SIGKILL writes no `end`, and its last `tick`
 * (every 200 ms) bounds it from below, so a lost end can only hide an overlap, never invent one.
 */
export function copiesFromMarks(text: string): Copy[] {
  const byCopy = new Map<string, Copy>()
  for (const line of text.split('\n')) {
    const [kind, taskId, attempt, us, pid] = line.trim().split(' ')
    if (!kind || !taskId || !attempt || !us || !pid || !/^\d+$/.test(us)) continue
    const t = Number(us) / 1000
    const key = `${taskId}:${attempt}:${pid}`
    const c = byCopy.get(key)
    if (!c) byCopy.set(key, { taskId, attempt: Number(attempt), holder: `shell pid ${pid}`, start: t, end: t })
    else {
      c.start = Math.min(c.start, t)
      c.end = Math.max(c.end, t)
    }
  }
  return [...byCopy.values()]
}

export function checkOverlaps(copies: Copy[], t0: number): Result {
  const byTask = new Map<string, Copy[]>()
  for (const c of copies) {
    const list = byTask.get(c.taskId)
    if (list) list.push(c)
    else byTask.set(c.taskId, [c])
  }
  const violations: string[] = []
  for (const [taskId, list] of byTask) {
    list.sort((a, b) => a.start - b.start)
    for (let i = 1; i < list.length; i++) {
      const c = list[i] as Copy
      for (let j = 0; j < i; j++) {
        const p = list[j] as Copy
        if (p.end > c.start) {
          violations.push(
            `task ${taskId}: attempt ${c.attempt} (${c.holder}) started at ${at(c.start, t0)} while attempt ${p.attempt} ` +
              `(${p.holder}) was alive ${at(p.start, t0)}–${at(p.end, t0)}: ${Math.round(Math.min(p.end, c.end) - c.start)} ms together`,
          )
        }
      }
    }
  }
  return { name: 'no_overlap', checked: copies.length, violations }
}

// ---------------------------------------------------------------------------------------
// Agents declared dead while they tried (no_false_death)

export interface ExpiredEvent {
  /** Its seq (minus its row id if not sequenced: see eventName). */
  seq: number
  agentId: string
  /** The event's time (ms). */
  at: number
}

/** An agent of the run and how we know it was trying to reach the service. */
export interface Prober {
  id: string
  name: string
  kind: 'sim' | 'runner'
  /**
   * When it was up and trying: [start, end] (end Infinity while up). A sim is up from its
   * start to its end except while the run has it crashed (silent); a runner from its "agent
   * started" line to its exit. Up, either keeps a heartbeat going or retries one.
   */
  alive: [number, number][]
  /** sim: the start of every heartbeat it sent, answered or not (runners: empty). */
  attempts: number[]
}

/** A stretch in which the service could not hear anyone (SIGSTOP, kill -9 until ready again, its shutdown). */
export interface Stall {
  kind: string
  start: number
  end: number
}

/**
 * An `agent.expired` at time T is false when the agent was up through the whole
 * [T − timeout, T] — and, for a sim, also sent a heartbeat in that window (its own record: a
 * starved load generator is not held against the service). Checked: every agent.expired of
 * the run's agents, and every agent up through each stall (where a false death would happen).
 */
export function checkFalseDeaths(
  expired: ExpiredEvent[],
  agents: Prober[],
  timeoutMs: number,
  stalls: Stall[],
  t0: number,
): Result {
  const byId = new Map(agents.map((a) => [a.id, a]))
  const violations: string[] = []
  let checked = 0
  const upThrough = (a: Prober, from: number, to: number) => a.alive.some(([s, e]) => s <= from && e >= to)
  for (const e of expired) {
    const a = byId.get(e.agentId)
    if (!a) continue
    checked++
    if (!upThrough(a, e.at - timeoutMs, e.at)) continue
    const what = `${a.kind === 'sim' ? 'agent' : 'runner'} ${a.name} (${a.id}) expired at ${at(e.at, t0)} (${eventName(e.seq)})`
    if (a.kind === 'runner') {
      violations.push(
        `${what} although it was up and heartbeating through the ${timeoutMs / 1000} s before${stallNote(e.at, stalls, t0)}`,
      )
      continue
    }
    const tried = a.attempts.filter((s) => s > e.at - timeoutMs && s <= e.at)
    if (tried.length)
      violations.push(
        `${what} although it sent ${tried.length} heartbeat(s) in the ${timeoutMs / 1000} s before, ` +
          `the last at ${at(Math.max(...tried), t0)}${stallNote(e.at, stalls, t0)}`,
      )
  }
  for (const s of stalls) for (const a of agents) if (upThrough(a, s.start, s.end)) checked++
  return { name: 'no_false_death', checked, violations }
}

function stallNote(t: number, stalls: Stall[], t0: number): string {
  const s = stalls.find((x) => t >= x.start && t <= x.end + 10_000)
  return s ? ` (${t <= s.end ? 'during' : 'just after'} the ${s.kind} ${at(s.start, t0)}–${at(s.end, t0)})` : ''
}

// ---------------------------------------------------------------------------------------
// The event stream (stream_exactly_once)

export interface StreamLog {
  name: string
  /** Every id received, in order, repeats included. */
  ids: number[]
  /** The `event:` type received with each id. */
  types: Map<number, string>
  /** Ids that did not increase on one connection or across a resume, in words. */
  disorder: string[]
  /** The highest seq the comparison covers (the stream had caught up to it, or was given it). */
  upTo: number
  /** What the stream was asked for (a type prefix), for the words. */
  filter: string
}

/** `table`: the event rows with seq ≤ upTo that match the stream's filter. */
export function checkStream(log: StreamLog, table: { seq: number; type: string }[]): Result {
  const violations: string[] = []
  const times = new Map<number, number>()
  for (const id of log.ids) times.set(id, (times.get(id) ?? 0) + 1)
  const dupes = [...times].filter(([, n]) => n > 1)
  if (dupes.length)
    violations.push(
      `${log.name}: ${dupes.length} event(s) delivered more than once: ${dupes
        .slice(0, 20)
        .map(([id, n]) => `${id}×${n}`)
        .join(', ')}`,
    )
  const inTable = new Map(table.map((r) => [r.seq, r.type]))
  const missing = table.filter((r) => !times.has(r.seq)).map((r) => r.seq)
  if (missing.length)
    violations.push(
      `${log.name}: ${missing.length} event(s) of the table (seq ≤ ${log.upTo}${log.filter ? `, type ${log.filter}*` : ''}) never delivered: ${missing.slice(0, 30).join(', ')}${missing.length > 30 ? ', …' : ''}`,
    )
  const unknown = [...times.keys()].filter((id) => id <= log.upTo && !inTable.has(id))
  if (unknown.length)
    violations.push(
      `${log.name}: ${unknown.length} delivered id(s) not in the table: ${unknown.slice(0, 20).join(', ')}`,
    )
  const wrongType = [...log.types].filter(([id, type]) => inTable.has(id) && inTable.get(id) !== type)
  if (wrongType.length)
    violations.push(
      `${log.name}: ${wrongType.length} event(s) delivered with another type than the table's: ${wrongType
        .slice(0, 10)
        .map(([id, t]) => `${id} ${t} (table: ${inTable.get(id)})`)
        .join(', ')}`,
    )
  for (const d of log.disorder.slice(0, 10)) violations.push(`${log.name}: ${d}`)
  return { name: 'stream_exactly_once', checked: table.length, violations }
}

// ---------------------------------------------------------------------------------------
// The event log (completed_once)

/** Every ending event (task.completed, task.failed, task.cancelled, task.timed_out) with its attempt. */
export interface Ending {
  seq: number
  taskId: string
  attempt: number
  type: string
}

/**
 * Per task attempt: at most one task.completed, and none besides another ending (failed,
 * timed_out, cancelled): completed is final. Two non-completed endings of one attempt can be
 * right (a failed attempt whose retry is cancelled: cancel_retry), so they are not counted.
 */
export function checkCompletedOnce(endings: Ending[]): Result {
  const byAttempt = new Map<string, Ending[]>()
  for (const e of endings) {
    const k = `${e.taskId}:${e.attempt}`
    const list = byAttempt.get(k)
    if (list) list.push(e)
    else byAttempt.set(k, [e])
  }
  const violations: string[] = []
  let checked = 0
  for (const [k, list] of byAttempt) {
    const completed = list.filter((e) => e.type === 'task.completed')
    if (completed.length === 0) continue
    checked++
    if (completed.length > 1 || list.length > 1) {
      const [taskId, attempt] = k.split(':')
      violations.push(
        `task ${taskId} attempt ${attempt}: ${list
          .sort((a, b) => a.seq - b.seq)
          .map((e) => `${e.type} (${eventName(e.seq)})`)
          .join(', ')}`,
      )
    }
  }
  return { name: 'completed_once', checked, violations }
}

// ---------------------------------------------------------------------------------------
// Acknowledged writes (acked_tasks_kept) and idempotency keys (idempotent_create)

export function checkAcked(created: Map<string, string>, completed: Set<string>, inDb: Map<string, string>): Result {
  const violations: string[] = []
  for (const [id, how] of created) {
    if (!inDb.has(id)) violations.push(`task ${id} (${how}) was acknowledged but is not in the database`)
  }
  for (const id of completed) {
    const status = inDb.get(id)
    if (status !== undefined && status !== 'completed')
      violations.push(`task ${id}: its completion was acknowledged, but it is ${status}`)
  }
  return { name: 'acked_tasks_kept', checked: created.size + completed.size, violations }
}

/**
 * `answers`: every task id the service answered for each key (creates, retries and replays);
 * `dbDuplicates`: keys the database holds more than one task for.
 */
export function checkIdempotency(
  answers: Map<string, Set<string>>,
  dbDuplicates: { key: string; ids: string[] }[],
): Result {
  const violations: string[] = []
  for (const [key, ids] of answers) {
    if (ids.size > 1) violations.push(`key ${key} answered with ${ids.size} different tasks: ${[...ids].join(', ')}`)
  }
  for (const d of dbDuplicates)
    violations.push(`key ${d.key} has ${d.ids.length} tasks in the database: ${d.ids.join(', ')}`)
  return { name: 'idempotent_create', checked: answers.size, violations }
}

// ---------------------------------------------------------------------------------------
// Slots (slots_respected, slot_counter_exact)

export interface SlotSample {
  at: number
  agent: string
  max: number
  /** The stored counter (activeTasks), if the sample had it. */
  active?: number
  /** Tasks it holds (assigned or running) counted in the same sample, if it had them. */
  held?: number
  /** Whether `active` and `held` come from one statement (comparable with each other). */
  atomic: boolean
  source: string
}

/** Folds samples into both slot invariants, keeping only what violates (samples are many). */
export class SlotTally {
  over: Result = { name: 'slots_respected', checked: 0, violations: [] }
  counter: Result = { name: 'slot_counter_exact', checked: 0, violations: [] }
  constructor(private readonly t0: number) {}
  add(s: SlotSample): void {
    this.over.checked++
    const most = Math.max(s.active ?? 0, s.held ?? 0)
    if (most > s.max)
      this.over.violations.push(
        `${s.agent} at ${at(s.at, this.t0)} (${s.source}): ${s.held ?? '?'} held, activeTasks ${s.active ?? '?'}, slots ${s.max}`,
      )
    if (s.atomic && s.active !== undefined && s.held !== undefined) {
      this.counter.checked++
      if (s.active !== s.held)
        this.counter.violations.push(
          `${s.agent} at ${at(s.at, this.t0)} (${s.source}): activeTasks ${s.active} but ${s.held} task(s) held`,
        )
    }
  }
}

// ---------------------------------------------------------------------------------------
// Stuck tasks (no_stuck_tasks)

/** A task that had not ended when the run stopped; times in ms (null: not set). */
export interface TaskState {
  id: string
  type: string
  status: string
  attempt: number
  agentId: string | null
  reqCapabilities: string[]
  reqAgentId: string | null
  declinedBy: string[]
  cancelRequested: boolean
  cancelRequestedAt: number | null
  assignedAt: number | null
  deadlineAt: number | null
  finishedAt: number | null
  availableAt: number
  autoRetry: boolean
}

export interface AgentState {
  id: string
  name: string
  status: string
  taskTypes: string[]
  capabilities: string[]
  active: number
  max: number
  lastHeartbeatAt: number | null
}

export interface Timeouts {
  assignMs: number
  cancelGraceMs: number
  heartbeatTimeoutMs: number
  /** What the sweep may lag behind a due time (its interval, a slow database) before it counts. */
  slackMs: number
}

/**
 * At `now`, after the drain: a running task past its deadline, a cancel past its grace, an
 * assignment not started past ASSIGN_TIMEOUT, a retry due and not made, a pending task that
 * an online agent with a free slot could take, an agent silent past the heartbeat timeout
 * and still not offline — each `slackMs` past its due time is stuck. `checked`: every task
 * of the run and every agent.
 */
export function checkStuck(
  tasks: TaskState[],
  agents: AgentState[],
  now: number,
  totalTasks: number,
  t: Timeouts,
): Result {
  const violations: string[] = []
  const late = (due: number | null) => due !== null && now - due > t.slackMs
  const ago = (ms: number) => `${((now - ms) / 1000).toFixed(1)} s ago`
  for (const k of tasks) {
    const who = `task ${k.id} (${k.type}, attempt ${k.attempt}${k.agentId ? `, agent ${k.agentId}` : ''})`
    if (k.status === 'running' && k.cancelRequested) {
      if (k.cancelRequestedAt !== null && late(k.cancelRequestedAt + t.cancelGraceMs))
        violations.push(`${who}: running, its cancel asked ${ago(k.cancelRequestedAt)}, past the grace`)
    } else if (k.status === 'running') {
      if (late(k.deadlineAt)) violations.push(`${who}: running past its deadline (due ${ago(k.deadlineAt as number)})`)
    } else if (k.status === 'assigned') {
      if (k.assignedAt !== null && late(k.assignedAt + t.assignMs))
        violations.push(`${who}: assigned ${ago(k.assignedAt)} and never started nor requeued`)
    } else if ((k.status === 'failed' || k.status === 'timed_out') && k.autoRetry) {
      if (late(k.finishedAt ?? k.availableAt)) violations.push(`${who}: ${k.status} with a retry due and not made`)
    } else if (k.status === 'pending' && late(k.availableAt)) {
      const taker = agents.find(
        (a) =>
          a.status === 'online' &&
          a.active < a.max &&
          (a.taskTypes.includes('*') || a.taskTypes.includes(k.type)) &&
          k.reqCapabilities.every((c) => a.capabilities.includes(c)) &&
          !k.declinedBy.includes(a.id) &&
          (k.reqAgentId === null || k.reqAgentId === a.id),
      )
      if (taker)
        violations.push(
          `${who}: pending since ${ago(k.availableAt)} while ${taker.name} was online with ${taker.max - taker.active} free slot(s)`,
        )
    }
  }
  for (const a of agents) {
    if (a.status !== 'offline' && a.lastHeartbeatAt !== null && late(a.lastHeartbeatAt + t.heartbeatTimeoutMs))
      violations.push(`agent ${a.name} (${a.id}): ${a.status}, last heard ${ago(a.lastHeartbeatAt)}, never expired`)
  }
  return { name: 'no_stuck_tasks', checked: totalTasks + agents.length, violations }
}

// ---------------------------------------------------------------------------------------
// HTTP answers (no_http_500)

export class HttpTally {
  /** `kind status` → count (status 0: no answer; the cause is in `network`). */
  readonly byStatus = new Map<string, number>()
  readonly network = new Map<string, number>()
  readonly violations: string[] = []
  /** Request ids of the answers counted here, so the server log's lines are not counted twice. */
  readonly seenRequestIds = new Set<string>()
  /** 5xx lines of the server's log, judged at the end. */
  private readonly serverErrors: { id: string | null; text: string }[] = []
  total = 0
  missingRetryAfter = 0

  answer(kind: string, method: string, path: string, status: number, requestId: string | null, detail: string): void {
    this.total++
    const k = `${kind} ${status}`
    this.byStatus.set(k, (this.byStatus.get(k) ?? 0) + 1)
    if (requestId) this.seenRequestIds.add(requestId)
    if (status >= 500 && status !== 503)
      this.violations.push(
        `${method} ${path} → ${status} (${kind}, request ${requestId ?? '?'}): ${detail.slice(0, 200)}`,
      )
  }

  failed(kind: string, cause: string): void {
    const k = `${kind} ${cause}`
    this.network.set(k, (this.network.get(k) ?? 0) + 1)
  }

  /**
   * A request line of the server's log (JSON) with a 5xx other than 503: a violation unless a
   * client here counted the same answer (judged in result(): the server logs a request
   * before its client has read the answer).
   */
  serverLine(line: { status?: unknown; requestId?: unknown; method?: unknown; path?: unknown }): void {
    const status = Number(line.status)
    if (!(status >= 500) || status === 503) return
    this.serverErrors.push({
      id: typeof line.requestId === 'string' ? line.requestId : null,
      text: `${String(line.method)} ${String(line.path)} → ${status}`,
    })
  }
  result(): Result {
    const unseen = this.serverErrors
      .filter((e) => !(e.id && this.seenRequestIds.has(e.id)))
      .map((e) => `${e.text} (server log, request ${e.id ?? '?'}: answered to a runner, or to a client that gave up)`)
    return { name: 'no_http_500', checked: this.total, violations: [...this.violations, ...unseen] }
  }
}

// ---------------------------------------------------------------------------------------
// The table

export interface Summary {
  table: string
  /** Invariants violated (or never exercised) and not allowed. */
  failing: InvariantName[]
  /** Allowed invariants that passed: their allowance can go. */
  allowedButPassing: InvariantName[]
}

/**
 * One row per invariant: checked, violations, verdict. `ok`; `FAIL`; `allowed` (violated,
 * but named in --allow); `NOT CHECKED` (nothing was checked: a check that saw nothing proves
 * nothing, so it fails like a violation unless allowed).
 */
export function summarize(results: Result[], allow: ReadonlySet<string>): Summary {
  const order = Object.keys(INVARIANTS) as InvariantName[]
  const sorted = [...results].sort((a, b) => order.indexOf(a.name) - order.indexOf(b.name))
  const rows = sorted.map((r) => {
    const bad = r.violations.length > 0 || r.checked === 0
    const verdict = !bad
      ? 'ok'
      : allow.has(r.name)
        ? `allowed (${r.checked === 0 && r.violations.length === 0 ? 'not checked' : 'known failing'})`
        : r.checked === 0 && r.violations.length === 0
          ? 'NOT CHECKED'
          : 'FAIL'
    return [r.name, String(r.checked), String(r.violations.length), verdict]
  })
  const head = ['invariant', 'checked', 'violations', 'verdict']
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)))
  const fmt = (r: string[]) =>
    r.map((c, i) => (i === 1 || i === 2 ? c.padStart(widths[i] as number) : c.padEnd(widths[i] as number))).join('  ')
  const table = [fmt(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(fmt)].join('\n')
  const failing = sorted
    .filter((r) => (r.violations.length > 0 || r.checked === 0) && !allow.has(r.name))
    .map((r) => r.name)
  const allowedButPassing = sorted
    .filter((r) => allow.has(r.name) && r.violations.length === 0 && r.checked > 0)
    .map((r) => r.name)
  return { table, failing, allowedButPassing }
}
