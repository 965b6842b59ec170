import { hostname } from 'node:os'
import { ApiClientError, type Client, createClient, isRetryable, type Ok, ok } from '../client'
import { type AgentLogger, createLogger } from './log'
import { type AgentState, loadState, saveState } from './state'
import { type LogChunk, type LogStream, type SendOutcome, TaskLog } from './task-log'

type HeartbeatCall = ReturnType<Client['api']['v1']['agents']['heartbeat']['$post']>
type HeartbeatAnswer = Ok<Awaited<HeartbeatCall>>
type RegisterCall = ReturnType<Client['api']['v1']['agents']['$post']>
type RegisterInput = Parameters<Client['api']['v1']['agents']['$post']>[0]['json']
type HeartbeatInput = Parameters<Client['api']['v1']['agents']['heartbeat']['$post']>[0]['json']
type Report = NonNullable<HeartbeatInput['reports']>[number]

/** A task as the service hands it to its agent. */
export type Task = HeartbeatAnswer['assignments'][number]
export type Provider = NonNullable<RegisterInput['provider']>

/** What a handler gets besides its task. */
export interface TaskContext {
  readonly task: Task
  /** Aborts when the task is cancelled, times out, is no longer this agent's, or the agent stops. */
  readonly signal: AbortSignal
  /** Reports progress (0–100); sent with the next heartbeat, at most about once a second. */
  progress(percent: number): void
  /** The runner's logger with this task's id on every line. */
  readonly logger: AgentLogger
  /**
   * Appends to the task's log on the service (GET /tasks/{id}/logs): sent as it comes,
   * batched (every 250 ms or 256 KiB), kept in memory through an outage.
   */
  log(data: string, stream?: LogStream): void
}

/** Runs one task: its return value (any JSON) is the result; a throw fails the attempt. */
export type Handler = (task: Task, ctx: TaskContext) => unknown | Promise<unknown>

/**
 * A failure with a stable code (and optionally a result, e.g. the output of a failed
 * command). `malformed_payload` tells the service not to retry; any other code is retried
 * while the task has attempts left.
 */
export class TaskError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly result?: unknown,
  ) {
    super(message)
    this.name = 'TaskError'
  }
}

export interface AgentOptions {
  /** The service's base URL. */
  url: string
  /** A registration token (`acpr_…`, used once to register) or an agent token. */
  token: string
  /** The agent's name (default: the host name); unique on the service. */
  name?: string
  description?: string
  provider?: Provider
  region?: string
  capabilities?: string[]
  labels?: Record<string, string>
  /** Tasks run at once (default 1). */
  slots?: number
  /** Where the agent keeps its id and token between starts (file mode 0600); false: in memory only. */
  stateDir?: string | false
  /** Between asking a task to stop and giving up on it (default 10 s). */
  cancelGraceSeconds?: number
  /** The longest a long-poll heartbeat waits for work (default 25 s; the service caps it at 30). */
  maxWaitSeconds?: number
  logger?: AgentLogger
  fetch?: typeof fetch
}

type StopReason = 'cancel' | 'timeout' | 'stale' | 'stopped'

interface Run {
  task: Task
  controller: AbortController
  reason?: StopReason
  timer?: NodeJS.Timeout
  graceTimer?: NodeJS.Timeout
  logger: AgentLogger
  output: TaskLog
}

const MAX_REPORTS = 1000
/** Reports in one heartbeat stay well under the service's default 1 MiB body limit. */
const MAX_REPORT_BYTES = 512 * 1024
/** A result larger than this is not sent; the task fails with `result_too_large`. */
export const MAX_RESULT_BYTES = 256 * 1024
const BACKOFF_BASE_MS = 500
const BACKOFF_MAX_MS = 30_000
const SEEN_MAX = 10_000
/** How long a finished task's report waits for its output to be stored. */
const LOG_DRAIN_MS = 5000
/** How long a report waits for others to share its heartbeat. */
const REPORT_LINGER_MS = 20
/** The least time between two long polls that brought nothing new. */
const MIN_POLL_MS = 1000

const isRegistrationToken = (t: string) => t.startsWith('acpr_')

/** The `sub` of a JWT (not verified: the service does that), for an agent token given without state. */
function subjectOf(jwt: string): string | undefined {
  try {
    const part = jwt.split('.')[1] ?? ''
    const claims = JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as { sub?: unknown; role?: unknown }
    return claims.role === 'agent' && typeof claims.sub === 'string' ? claims.sub : undefined
  } catch {
    return undefined
  }
}

/**
 * Capped exponential backoff with jitter: 0.5 s, 1 s, 2 s … up to `maxMs` (30 s), each ×
 * [0.5, 1).
 */
export function backoffMs(failures: number, maxMs = BACKOFF_MAX_MS): number {
  const cap = Math.min(maxMs, BACKOFF_BASE_MS * 2 ** Math.min(failures, 16))
  return Math.round(cap * (0.5 + Math.random() / 2))
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(done, ms)
    function done() {
      clearTimeout(t)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    signal?.addEventListener('abort', done, { once: true })
  })

/** Why a runner gave up: its credentials or settings are refused (not a network fault). */
export class AgentFatalError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'AgentFatalError'
  }
}

/**
 * An agent: registers (once; its identity kept in the state dir), then heartbeats in a loop
 * (long polls while idle), runs the tasks handed to it with the handler of their type, and
 * delivers every report in its next heartbeat, sent at once when a report waits. Reports
 * survive an unreachable service in memory and are sent when it answers (they are safe to
 * repeat). A report judged `stale_attempt` (or otherwise refused) means the run is no longer
 * this agent's: it is aborted and never reported again.
 *
 *   const agent = new Agent({ url, token })
 *   agent.handle('etl.load', async (task, ctx) => { ctx.progress(40); return { rows: 12 } })
 *   await agent.start()      // registered, working
 *   await agent.stop()       // drain: take nothing new, finish what runs, report it
 */
export class Agent {
  readonly logger: AgentLogger
  private readonly options: Required<Pick<AgentOptions, 'slots' | 'cancelGraceSeconds' | 'maxWaitSeconds'>> &
    AgentOptions
  private readonly handlers = new Map<string, Handler>()
  private readonly runs = new Map<string, Run>()
  private readonly seen = new Map<string, true>()
  private outbox: Report[] = []
  private identity?: AgentState
  private readonly api: Client
  private phase: 'new' | 'starting' | 'running' | 'draining' | 'stopping' | 'stopped' = 'new'
  private poll?: AbortController
  private pause?: AbortController
  private wakePending = false
  private progressTimer?: NodeJS.Timeout
  private lingerTimer?: NodeJS.Timeout
  private sendStatus?: 'online' | 'draining'
  private intervalSeconds = 30
  private loopDone?: Promise<void>
  /** Runs that ended and are flushing their output before their report. */
  private finishing = 0
  /** Task output not yet all stored (of runs still going, or ended while the service was away). */
  private readonly outputs = new Set<TaskLog>()
  private readonly quit = new AbortController()
  private fatal?: Error
  /**
   * Started from a kept identity: tasks the service still counts running on this agent
   * belonged to the previous process and died with it. Reported once the service answers.
   */
  private lostRunsUnreported = false

  constructor(options: AgentOptions) {
    this.options = { slots: 1, cancelGraceSeconds: 10, maxWaitSeconds: 25, ...options }
    this.logger = options.logger ?? createLogger()
    this.api = createClient({ url: options.url, token: () => this.identity?.token, fetch: options.fetch })
  }

  /** Registers the handler of a task type (before start). */
  handle(type: string, handler: Handler): this {
    this.handlers.set(type, handler)
    return this
  }

  /** The agent's id once registered. */
  get id(): string | undefined {
    return this.identity?.id
  }

  /** Tasks running now. */
  get running(): number {
    return this.runs.size
  }

  /**
   * Registers (or reuses the kept identity) and starts the heartbeat loop. Resolves once the
   * agent is known to the service (retrying while it is unreachable); rejects with
   * AgentFatalError when the service refuses the token.
   */
  async start(): Promise<void> {
    if (this.phase !== 'new') throw new Error('An agent starts once.')
    this.phase = 'starting'
    await this.ensureIdentity()
    if (this.phase !== 'starting') return
    this.phase = 'running'
    this.logger.info('agent started', {
      agentId: this.identity?.id,
      name: this.identity?.name,
      slots: this.options.slots,
      handles: [...this.handlers.keys()].join(',') || '(none)',
    })
    this.loopDone = this.loop()
  }

  /** Resolves when the loop has ended (after stop), rejects if it ended on a fatal error. */
  async done(): Promise<void> {
    await this.loopDone
    if (this.fatal) throw this.fatal
  }

  /**
   * Drains: tells the service (status draining) so nothing new comes, lets running tasks
   * finish for up to `drainTimeoutSeconds` (then stops them: `failed`, `agent_stopped`),
   * delivers every report, and resolves.
   */
  async stop(drainTimeoutSeconds = 600): Promise<void> {
    if (this.phase === 'new' || this.phase === 'starting') {
      this.phase = 'stopped'
      this.quit.abort()
      return
    }
    if (this.phase === 'running') {
      this.phase = 'draining'
      this.sendStatus = 'draining'
      this.logger.info('draining', { running: this.runs.size, drainTimeoutSeconds })
      const timer = setTimeout(() => {
        if (this.runs.size) this.logger.warn('drain timed out; stopping what still runs', { running: this.runs.size })
        this.kill()
      }, drainTimeoutSeconds * 1000)
      timer.unref()
      this.wake()
      try {
        await this.loopDone
      } finally {
        clearTimeout(timer)
      }
      return
    }
    await this.loopDone
  }

  /**
   * Stops at once: every running task is stopped (reported `failed` with `agent_stopped`
   * after its grace), the reports are delivered if the service answers within a few
   * seconds, and the loop ends.
   */
  kill(): void {
    if (this.phase === 'stopped' || this.phase === 'stopping') return
    const wasStarted = this.phase === 'running' || this.phase === 'draining'
    this.phase = wasStarted ? 'stopping' : 'stopped'
    if (!wasStarted) this.quit.abort()
    for (const run of this.runs.values()) this.abort(run, 'stopped')
    // Reports of stopped tasks get a last chance; then the loop gives up.
    setTimeout(() => this.quit.abort(), (this.options.cancelGraceSeconds + 10) * 1000).unref()
    this.wake()
  }

  // -- identity ---------------------------------------------------------------------------

  private async ensureIdentity(): Promise<void> {
    const { stateDir, url, token } = this.options
    const kept = stateDir ? loadState(stateDir) : undefined
    if (kept && kept.url === url) {
      this.identity = kept
      this.lostRunsUnreported = true
      if (kept.drained) this.sendStatus = 'online'
      this.logger.info('identity from the state dir', { agentId: kept.id, name: kept.name })
      return
    }
    if (isRegistrationToken(token)) return this.register()
    const sub = subjectOf(token)
    if (!sub) throw new AgentFatalError('The token is neither a registration token (acpr_…) nor an agent token.')
    this.identity = { url, id: sub, name: this.options.name ?? '', token }
    this.keep()
  }

  private keep() {
    if (this.options.stateDir && this.identity) saveState(this.options.stateDir, this.identity)
  }

  /** Registers with the registration token, retrying while the service is away or the name is held. */
  private async register(): Promise<void> {
    const o = this.options
    if (!isRegistrationToken(o.token)) {
      throw new AgentFatalError('The agent token was refused and no registration token was given to register again.')
    }
    const name = o.name ?? hostname()
    const body: RegisterInput = {
      name,
      description: o.description,
      provider: o.provider ?? 'onprem',
      region: o.region,
      capabilities: o.capabilities ?? [],
      labels: o.labels ?? {},
      maxConcurrentTasks: o.slots,
    }
    const registrar = createClient({ url: o.url, token: o.token, fetch: o.fetch })
    for (let failures = 0; ; failures++) {
      if (this.quit.signal.aborted) return
      try {
        const call: RegisterCall = registrar.api.v1.agents.$post(
          { json: body },
          { init: { signal: AbortSignal.timeout(30_000) } },
        )
        const agent = await ok(call)
        this.identity = { url: o.url, id: agent.id, name: agent.name, token: agent.token }
        this.keep()
        this.logger.info('registered', { agentId: agent.id, name: agent.name })
        return
      } catch (err) {
        if (err instanceof ApiClientError && err.status === 409) {
          // The name is held by an agent the service still counts live (our own earlier
          // run, not yet timed out): taken over once it is offline.
          this.logger.warn('name held by a live agent; retrying until it is offline', { name })
        } else if (isRetryable(err)) {
          if (failures === 0) this.logger.warn('service unreachable; retrying', { error: String(err) })
        } else {
          throw new AgentFatalError(`Registration refused: ${(err as Error).message}`)
        }
        await sleep(backoffMs(failures), this.quit.signal)
      }
    }
  }

  // -- the loop -----------------------------------------------------------------------------

  /** Ends a long poll (or a pause) now, so that waiting reports (or a status) go out. */
  private wake() {
    this.wakePending = true
    this.poll?.abort()
    this.pause?.abort()
  }

  /** A signal for a pause between heartbeats that a wake (or quitting) ends. */
  private wakeSignal(): AbortSignal {
    this.pause = new AbortController()
    return AbortSignal.any([this.pause.signal, this.quit.signal])
  }

  private async loop(): Promise<void> {
    let failures = 0
    for (;;) {
      const finishing = this.phase === 'draining' || this.phase === 'stopping'
      if (this.quit.signal.aborted) break
      if (finishing && this.runs.size === 0 && this.finishing === 0 && this.outbox.length === 0 && !this.sendStatus)
        break
      if (this.lostRunsUnreported) await this.reportLostRuns()
      const reports = this.takeReports()
      const status = this.sendStatus
      const mayWait = reports.length === 0 && !status && !this.wakePending
      this.wakePending = false
      const waitSeconds = mayWait ? Math.max(0, Math.min(this.options.maxWaitSeconds, this.intervalSeconds)) : 0
      const poll = new AbortController()
      if (mayWait) this.poll = poll
      const body: HeartbeatInput = {
        agentId: this.identity?.id as string,
        runningTaskIds: [...this.runs.keys()],
        ...(reports.length ? { reports } : {}),
        ...(status ? { status } : {}),
        ...(waitSeconds ? { waitSeconds } : {}),
      }
      const sentAt = Date.now()
      try {
        const signal = AbortSignal.any([poll.signal, this.quit.signal, AbortSignal.timeout((waitSeconds + 30) * 1000)])
        const answer = await ok(this.api.api.v1.agents.heartbeat.$post({ json: body }, { init: { signal } }))
        if (failures > 0) {
          this.logger.info('service reachable again', { after: failures })
          // Output kept through the outage goes now, not at its own next retry.
          for (const output of this.outputs) {
            if (output.empty || output.dead) {
              if (!this.runs.has(output.taskId)) this.outputs.delete(output)
            } else void output.flush()
          }
        }
        failures = 0
        if (status && this.sendStatus === status) this.sendStatus = undefined
        if (status && this.identity && (this.identity.drained ?? false) !== (status === 'draining')) {
          this.identity.drained = status === 'draining'
          this.keep()
        }
        this.intervalSeconds = answer.heartbeatIntervalSeconds
        if (this.identity && !this.identity.name) this.identity.name = answer.agent.name
        const news = this.settle(reports, answer)
        // A long poll that ended early with nothing new (a cancel already being carried out,
        // a service shutting down): pace the next one rather than spin.
        const early = Date.now() - sentAt
        if (mayWait && !news && early < MIN_POLL_MS) await sleep(MIN_POLL_MS - early, this.wakeSignal())
      } catch (err) {
        if (reports.length) this.outbox = [...reports, ...this.outbox]
        if (poll.signal.aborted && !this.quit.signal.aborted) continue // woken: nothing lost, go again
        if (this.quit.signal.aborted) break
        if (err instanceof ApiClientError && !isRetryable(err)) {
          if (err.status === 401 || err.status === 404) {
            // Our identity is gone (token replaced, agent deleted, server secret changed).
            this.logger.warn('the service refused this agent’s identity', { code: err.code })
            try {
              this.outbox = []
              await this.register()
              continue
            } catch (fatal) {
              this.fatal = fatal as Error
              this.logger.error('stopping', { error: (fatal as Error).message })
              this.abortAll('stale')
              break
            }
          }
          // Our own request is wrong (a bug, or a result the service will not take): the
          // reports are dropped, not resent forever.
          if (reports.length) this.outbox.splice(0, reports.length)
          this.logger.error('heartbeat refused; its reports are dropped', { code: err.code, detail: err.detail })
        } else if (failures === 0) {
          this.logger.warn('service unreachable; retrying with backoff', { error: String(err) })
        }
        // Never longer than a heartbeat interval: a service that comes back must hear this
        // agent before it judges it silent.
        await sleep(backoffMs(failures++, Math.min(BACKOFF_MAX_MS, this.intervalSeconds * 1000)), this.quit.signal)
      } finally {
        if (this.poll === poll) this.poll = undefined
      }
    }
    for (const run of this.runs.values()) this.clearTimers(run)
    this.phase = 'stopped'
    if (this.outbox.length) this.logger.error('reports not delivered', { count: this.outbox.length })
    this.logger.info('agent stopped', { agentId: this.identity?.id })
  }

  /**
   * After a restart (an identity from the state dir): the tasks the service still counts
   * `running` on this agent and that this process is not running were lost with the
   * previous one (killed, crashed, its host rebooted). They are reported `failed`
   * (`agent_restarted`, fenced by their attempt) in the next heartbeat, so the service
   * retries them now instead of at their timeout; the agent never went silent, so the
   * sweep would not. Tries again at the next heartbeat while the service is away.
   */
  private async reportLostRuns(): Promise<void> {
    const agentId = this.identity?.id
    if (!agentId) return
    try {
      const lost: Report[] = []
      let cursor: string | undefined
      for (let page = 0; page < 100; page++) {
        const query = { agentId, status: 'running', limit: '100', ...(cursor ? { cursor } : {}) }
        const signal = AbortSignal.any([this.quit.signal, AbortSignal.timeout(30_000)])
        const answer = await ok(this.api.api.v1.tasks.$get({ query }, { init: { signal } }))
        for (const t of answer.items) {
          if (this.runs.has(t.id)) continue
          lost.push({
            taskId: t.id,
            attempt: t.attempt,
            status: 'failed',
            error: { code: 'agent_restarted', message: 'The agent restarted while this task ran; the run was lost.' },
          })
        }
        if (!answer.nextCursor) break
        cursor = answer.nextCursor
      }
      this.lostRunsUnreported = false
      if (lost.length) {
        this.logger.warn('runs lost with the previous process; reporting them failed', {
          tasks: lost.map((r) => r.taskId).join(','),
        })
        this.outbox = [...lost, ...this.outbox]
      }
    } catch (err) {
      if (err instanceof ApiClientError && !isRetryable(err)) {
        this.lostRunsUnreported = false
        this.logger.warn('cannot list this agent’s running tasks; lost runs end at their timeout', { code: err.code })
      }
      // Unreachable: the heartbeat below backs off, and this is tried again after it.
    }
  }

  /** The next reports to send: in order, up to 1,000 and 512 KiB. */
  private takeReports(): Report[] {
    let bytes = 0
    let n = 0
    for (const r of this.outbox) {
      bytes += JSON.stringify(r).length
      if (n >= MAX_REPORTS || (n > 0 && bytes > MAX_REPORT_BYTES)) break
      n++
    }
    return this.outbox.splice(0, n)
  }

  /** Applies a heartbeat's answer: verdicts, cancellations, new work. Whether anything was new. */
  private settle(sent: Report[], answer: HeartbeatAnswer): boolean {
    let news = false
    answer.reports.forEach((verdict, i) => {
      const report = sent[i]
      if (verdict.ok || !report) return
      const run = this.runs.get(report.taskId)
      const log = this.logger.child({ taskId: report.taskId })
      log.warn(run ? 'report refused: the task is no longer this agent’s run; stopping it' : 'report refused', {
        code: verdict.code,
        reported: report.status,
        attempt: report.attempt,
      })
      if (run && run.task.attempt === report.attempt) this.abort(run, 'stale')
      this.outbox = this.outbox.filter((r) => !(r.taskId === report.taskId && r.attempt === report.attempt))
    })
    for (const id of answer.cancellations) {
      const run = this.runs.get(id)
      if (run && !run.reason) {
        run.logger.info('cancel requested')
        this.abort(run, 'cancel')
        news = true
      }
    }
    for (const task of answer.assignments) news = this.accept(task) || news
    return news
  }

  // -- runs -----------------------------------------------------------------------------

  /**
   * Queues a report and sends it within `REPORT_LINGER_MS`: a task that ends that soon after
   * it started goes out as one heartbeat (running, then its end) instead of two.
   */
  private report(r: Report) {
    this.outbox.push(r)
    if (this.lingerTimer) return
    this.lingerTimer = setTimeout(() => {
      this.lingerTimer = undefined
      this.wake()
    }, REPORT_LINGER_MS)
  }

  /** Starts (or refuses) a task handed to this agent; false if it was seen before. */
  private accept(task: Task): boolean {
    const key = `${task.id}:${task.attempt}`
    if (this.seen.has(key)) return false
    this.seen.set(key, true)
    if (this.seen.size > SEEN_MAX) this.seen.delete(this.seen.keys().next().value as string)
    const old = this.runs.get(task.id)
    if (old) this.abort(old, 'stale') // an earlier attempt we still run: not ours any more
    const logger = this.logger.child({ taskId: task.id, attempt: task.attempt, type: task.type })
    const handler = this.handlers.get(task.type)
    if (!handler || this.phase === 'stopping') {
      const handled = [...this.handlers.keys()].join(', ') || 'none'
      const error = handler
        ? { code: 'agent_stopped', message: 'The agent is stopping.' }
        : {
            code: 'unsupported_type',
            message: `This agent has no handler for task type "${task.type}" (it handles: ${handled}).`,
          }
      logger.warn('task refused', { code: error.code })
      this.report({ taskId: task.id, attempt: task.attempt, status: 'failed', error })
      return true
    }
    const output = new TaskLog((chunks) => this.sendLog(task, chunks), {}, task.id)
    this.outputs.add(output)
    const run: Run = { task, controller: new AbortController(), logger, output }
    this.runs.set(task.id, run)
    logger.info('task started')
    this.report({ taskId: task.id, attempt: task.attempt, status: 'running' })
    run.timer = setTimeout(() => {
      logger.warn('task timed out on this agent', { timeoutSeconds: task.timeoutSeconds })
      this.abort(run, 'timeout')
    }, task.timeoutSeconds * 1000)
    const ctx: TaskContext = {
      task,
      signal: run.controller.signal,
      logger,
      progress: (percent) => this.progress(run, percent),
      log: (data, stream) => output.write(String(data), stream),
    }
    Promise.resolve()
      .then(() => handler(task, ctx))
      .then(
        (result) => this.finish(run, { ok: true, result }),
        (err) => this.finish(run, { ok: false, err }),
      )
    return true
  }

  private progress(run: Run, percent: number) {
    if (this.runs.get(run.task.id) !== run || run.reason) return
    const p = Math.max(0, Math.min(100, Number(percent) || 0))
    const queued = this.outbox.find(
      (r) => r.taskId === run.task.id && r.attempt === run.task.attempt && r.status === 'running',
    )
    if (queued) queued.progress = p
    else this.outbox.push({ taskId: run.task.id, attempt: run.task.attempt, status: 'running', progress: p })
    if (!this.progressTimer) {
      this.progressTimer = setTimeout(() => {
        this.progressTimer = undefined
        this.wake()
      }, 1000)
      this.progressTimer.unref()
    }
  }

  private abort(run: Run, reason: StopReason) {
    if (run.reason) return
    run.reason = reason
    clearTimeout(run.timer)
    run.controller.abort(new Error(`task ${reason}`))
    if (reason === 'stale') {
      // Not ours: forget it now (and its unsent output); whatever the handler still returns is ignored.
      run.output.kill()
      this.outputs.delete(run.output)
      this.forget(run)
      return
    }
    // A handler that does not stop within the grace is given up on (its answer ignored).
    run.graceTimer = setTimeout(
      () => {
        if (this.runs.get(run.task.id) !== run) return
        run.logger.warn('the handler did not stop within its grace; reported without it')
        this.finish(run, { ok: false, err: new TaskError(reason, 'The task did not stop within its grace.') })
      },
      (this.options.cancelGraceSeconds + 2) * 1000,
    )
    run.graceTimer.unref()
  }

  private abortAll(reason: StopReason) {
    for (const run of [...this.runs.values()]) this.abort(run, reason)
  }

  private clearTimers(run: Run) {
    clearTimeout(run.timer)
    clearTimeout(run.graceTimer)
  }

  private forget(run: Run) {
    this.clearTimers(run)
    if (this.runs.get(run.task.id) === run) this.runs.delete(run.task.id)
    this.outbox = this.outbox.filter((r) => !(r.taskId === run.task.id && r.attempt === run.task.attempt))
  }

  private finish(run: Run, outcome: { ok: true; result: unknown } | { ok: false; err: unknown }) {
    if (this.runs.get(run.task.id) !== run) return // stale, or already given up on
    this.clearTimers(run)
    this.runs.delete(run.task.id)
    const { id: taskId, attempt, timeoutSeconds } = run.task
    const base = { taskId, attempt }
    const failedResult = !outcome.ok && outcome.err instanceof TaskError ? outcome.err.result : undefined
    const withResult = (result: unknown) => (result === undefined ? {} : { result: bounded(result) })
    let r: Report
    switch (run.reason) {
      case 'cancel':
        r = { ...base, status: 'cancelled' }
        break
      case 'timeout':
        r = {
          ...base,
          status: 'failed',
          ...withResult(failedResult),
          error: {
            code: 'timeout',
            message: `Ran longer than its timeoutSeconds (${timeoutSeconds} s) on this agent.`,
          },
        }
        break
      case 'stopped':
        r = {
          ...base,
          status: 'failed',
          ...withResult(failedResult),
          error: { code: 'agent_stopped', message: 'The agent stopped before the task finished.' },
        }
        break
      default:
        if (outcome.ok) {
          const size = jsonSize(outcome.result)
          r =
            size > MAX_RESULT_BYTES
              ? {
                  ...base,
                  status: 'failed',
                  error: {
                    code: 'result_too_large',
                    message: `The result is ${size} bytes of JSON; at most ${MAX_RESULT_BYTES} are sent.`,
                  },
                }
              : { ...base, status: 'completed', ...(outcome.result === undefined ? {} : { result: outcome.result }) }
        } else {
          const err = outcome.err
          const code = err instanceof TaskError ? err.code : 'handler_error'
          const message = (err instanceof Error ? err.message : String(err)).slice(0, 4000) || code
          r = { ...base, status: 'failed', ...withResult(failedResult), error: { code: code.slice(0, 100), message } }
        }
    }
    run.logger.info(r.status === 'completed' ? 'task completed' : `task ${r.status}`, {
      ...(r.error ? { code: r.error.code } : {}),
    })
    // Its output goes first (a follower's stream ends with the attempt), for a few seconds
    // at most: a service that cannot take it gets the report anyway, and the output later.
    const report = r
    this.finishing++
    void run.output
      .drain(LOG_DRAIN_MS)
      .then(() => this.report(report))
      .finally(() => {
        this.finishing--
        // What is still unsent keeps retrying on its own (and at once when the service is back).
        if (run.output.empty || run.output.dead) this.outputs.delete(run.output)
      })
  }

  /** Sends one batch of a task's output; what became of it. */
  private async sendLog(task: Task, chunks: LogChunk[]): Promise<SendOutcome> {
    try {
      await ok(
        this.api.api.v1.tasks[':id'].logs.$post(
          { param: { id: task.id }, json: { attempt: task.attempt, chunks } },
          { init: { signal: AbortSignal.timeout(30_000) } },
        ),
      )
      return 'ok'
    } catch (err) {
      if (err instanceof ApiClientError && !isRetryable(err)) {
        const log = this.logger.child({ taskId: task.id, attempt: task.attempt })
        if (err.code === 'stale_attempt' || err.status === 404) {
          log.warn('output refused: the task is no longer this agent’s run', { code: err.code })
          const run = this.runs.get(task.id)
          if (run && run.task.attempt === task.attempt) this.abort(run, 'stale')
          return 'stale'
        }
        log.error('output refused; dropped', { code: err.code, detail: err.detail })
        return 'drop'
      }
      return 'retry'
    }
  }
}

function jsonSize(v: unknown): number {
  try {
    return JSON.stringify(v ?? null).length
  } catch {
    return Number.POSITIVE_INFINITY
  }
}

/** A result as sent: itself when small enough, else a note that it was left out. */
function bounded(result: unknown): unknown {
  const size = jsonSize(result)
  return size <= MAX_RESULT_BYTES ? (result ?? null) : { omitted: `result of ${size} bytes left out` }
}
