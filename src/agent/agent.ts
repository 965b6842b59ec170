import { type Client, createClient } from '../client'
import type { Provider } from './api'
import type { Handler } from './handler'
import { HeartbeatLoop } from './heartbeat'
import { Identity } from './identity'
import { lockStateDir } from './lock'
import { type AgentLogger, createLogger } from './log'
import { Outbox } from './outbox'
import { Runs } from './runs'
import { keepPrivate } from './state'
import { LogShipper } from './task-log'

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
  /**
   * Where the agent keeps its id and token between starts (file mode 0600); false: in memory
   * only. One live runner per dir: `start()` refuses a dir another live process holds.
   */
  stateDir?: string | false
  /** Between asking a task to stop and giving up on it (default 10 s). */
  cancelGraceSeconds?: number
  /** The longest a long-poll heartbeat waits for work (default 25 s; the service caps it at 30). */
  maxWaitSeconds?: number
  logger?: AgentLogger
  fetch?: typeof fetch
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
 *
 * Its parts: `Identity` (identity.ts: registration, the state dir, the token), the
 * `HeartbeatLoop` (heartbeat.ts), the `Outbox` (outbox.ts: reports waiting to be
 * delivered), `Runs` (runs.ts: handlers running, cancel, timeout, grace) and the
 * `LogShipper` (task-log.ts: task output).
 */
export class Agent {
  readonly logger: AgentLogger
  private readonly options: Required<Pick<AgentOptions, 'slots' | 'cancelGraceSeconds' | 'maxWaitSeconds'>> &
    AgentOptions
  private readonly handlers = new Map<string, Handler>()
  private readonly identity: Identity
  private readonly outbox: Outbox
  private readonly runs: Runs
  private readonly heartbeats: HeartbeatLoop
  private phase: 'new' | 'starting' | 'running' | 'draining' | 'stopping' | 'stopped' = 'new'
  private loopDone?: Promise<void>
  private readonly quit = new AbortController()
  private unlock?: () => void

  constructor(options: AgentOptions) {
    this.options = { slots: 1, cancelGraceSeconds: 10, maxWaitSeconds: 25, ...options }
    const logger = options.logger ?? createLogger()
    this.logger = logger
    this.identity = new Identity({ ...this.options, taskTypes: () => this.taskTypes }, logger, this.quit.signal)
    const api: Client = createClient({ url: options.url, token: () => this.identity.token, fetch: options.fetch })
    this.outbox = new Outbox(() => this.heartbeats.wake())
    const logs = new LogShipper(api, logger, (taskId, attempt) => this.runs.stale(taskId, attempt))
    this.runs = new Runs({
      handlers: this.handlers,
      outbox: this.outbox,
      logs,
      logger,
      cancelGraceSeconds: this.options.cancelGraceSeconds,
      stopping: () => this.phase === 'stopping',
      onDecline: () => this.heartbeats.declareTypes(),
    })
    this.heartbeats = new HeartbeatLoop({
      api,
      url: options.url,
      identity: this.identity,
      outbox: this.outbox,
      runs: this.runs,
      logs,
      logger,
      maxWaitSeconds: this.options.maxWaitSeconds,
      quit: this.quit.signal,
      finishing: () => this.phase === 'draining' || this.phase === 'stopping',
      taskTypes: () => this.taskTypes,
    })
  }

  /**
   * Registers the handler of a task type. The service places on this agent only the types it
   * has handlers for (declared when it registers and in its heartbeats): one added after
   * start is declared in the next heartbeat.
   */
  handle(type: string, handler: Handler): this {
    const known = this.handlers.has(type)
    this.handlers.set(type, handler)
    if (!known && this.phase !== 'new') this.heartbeats.declareTypes()
    return this
  }

  /** Tasks declined so far because this agent has no handler for their type, by type. */
  get declined(): Record<string, number> {
    return Object.fromEntries(this.runs.declined)
  }

  /** The task types it has handlers for. */
  get taskTypes(): string[] {
    return [...this.handlers.keys()]
  }

  /** The agent's id once registered. */
  get id(): string | undefined {
    return this.identity.id
  }

  /** Tasks running now. */
  get running(): number {
    return this.runs.size
  }

  /**
   * Takes the state dir for this process (start() does it too; the CLI does it first, before
   * it stops commands a previous process left running there). Throws AgentFatalError
   * (StateDirHeldError, naming the holder's pid) when another live runner holds it; a lock
   * left by a process that is gone is taken over. Held until the agent has stopped.
   */
  lockStateDir(): void {
    if (this.unlock || !this.options.stateDir) return
    if (this.phase !== 'new') throw new Error('The state dir is taken before the agent starts.')
    this.unlock = lockStateDir(this.options.stateDir)
    // Its own now: readable by this user only, even if it was made looser before.
    for (const t of keepPrivate(this.options.stateDir)) {
      const [was, want] = [t.was, t.want].map((m) => `0${m.toString(8)}`)
      if (t.error)
        this.logger.warn(`${t.path} is open to other users (mode ${was}); could not make it ${want}: ${t.error}`)
      else this.logger.warn(`${t.path} was open to other users (mode ${was}): now ${want}`)
    }
  }

  private releaseStateDir(): void {
    this.unlock?.()
    this.unlock = undefined
  }

  /**
   * Takes the state dir, registers (or reuses the kept identity) and starts the heartbeat
   * loop. Resolves once the agent is known to the service (retrying while it is
   * unreachable); rejects with AgentFatalError when the state dir is held by another live
   * runner, or when the service refuses the token.
   */
  async start(): Promise<void> {
    if (this.phase !== 'new') throw new Error('An agent starts once.')
    this.lockStateDir()
    this.phase = 'starting'
    try {
      await this.identity.establish()
    } catch (err) {
      this.phase = 'stopped'
      this.releaseStateDir()
      throw err
    }
    if (this.identity.restored) {
      // The previous process's runs died with it; a previous drain is undone.
      this.heartbeats.lostRunsUnreported = true
      if (this.identity.drained) this.heartbeats.announce('online')
    }
    if (this.phase !== 'starting') return this.releaseStateDir()
    this.phase = 'running'
    if (this.handlers.size === 0) {
      this.logger.warn(
        'no task handlers: this agent declares no task types, so the service may hand it any, and it declines each (register them with handle(type, fn))',
      )
    }
    this.logger.info('agent started', {
      agentId: this.identity.id,
      name: this.identity.name,
      slots: this.options.slots,
      handles: [...this.handlers.keys()].join(',') || '(none)',
    })
    this.loopDone = this.heartbeats.run().finally(() => {
      this.phase = 'stopped'
      this.releaseStateDir()
      const declined = this.runs.declined.size ? { declined: JSON.stringify(this.declined) } : {}
      this.logger.info('agent stopped', { agentId: this.identity.id, ...declined })
    })
  }

  /** Resolves when the loop has ended (after stop), rejects if it ended on a fatal error. */
  async done(): Promise<void> {
    await this.loopDone
    if (this.heartbeats.fatal) throw this.heartbeats.fatal
  }

  /**
   * Drains: tells the service (status draining) so nothing new comes, lets running tasks
   * finish for up to `drainTimeoutSeconds` (then stops them: `failed`, `agent_stopped`),
   * delivers every report, and resolves.
   */
  async stop(drainTimeoutSeconds = 600): Promise<void> {
    if (this.phase === 'new' || this.phase === 'starting') {
      if (this.phase === 'new') this.releaseStateDir()
      this.phase = 'stopped'
      this.quit.abort()
      return
    }
    if (this.phase === 'running') {
      this.phase = 'draining'
      this.heartbeats.announce('draining')
      this.logger.info('draining', { running: this.runs.size, drainTimeoutSeconds })
      const timer = setTimeout(() => {
        if (this.runs.size) this.logger.warn('drain timed out; stopping what still runs', { running: this.runs.size })
        this.kill()
      }, drainTimeoutSeconds * 1000)
      timer.unref()
      this.heartbeats.wake()
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
    if (this.phase === 'new') this.releaseStateDir()
    this.phase = wasStarted ? 'stopping' : 'stopped'
    if (!wasStarted) this.quit.abort()
    this.runs.abortAll('stopped')
    // Reports of stopped tasks get a last chance; then the loop gives up.
    setTimeout(() => this.quit.abort(), (this.options.cancelGraceSeconds + 10) * 1000).unref()
    this.heartbeats.wake()
  }
}
