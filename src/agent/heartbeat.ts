/**
 * The heartbeat loop: one heartbeat at a time, each carrying the outbox's next reports and
 * the ids of the running tasks, and bringing back the verdicts on the reports,
 * cancellations and new work. While there is nothing to say it long-polls (the service
 * answers early when work or a cancel comes); a waiting report ends the wait (`wake`).
 * Through an outage it backs off, never longer than a heartbeat interval, and keeps its
 * reports. It ends when the agent quits, or once a draining or stopping agent has nothing
 * left to run or report.
 */
import { ApiClientError, type Client, isRetryable, ok } from '../client'
import type { HeartbeatAnswer, HeartbeatInput, Report } from './api'
import { BACKOFF_MAX_MS, backoffMs, sleep } from './backoff'
import type { Identity } from './identity'
import type { AgentLogger } from './log'
import { lostRuns } from './lost-runs'
import { Retrying } from './net'
import type { Outbox } from './outbox'
import type { Runs } from './runs'
import type { LogShipper } from './task-log'

/** The least time between two long polls that brought nothing new. */
const MIN_POLL_MS = 1000

export interface HeartbeatOptions {
  api: Client
  /** The service's URL (named when it does not answer). */
  url: string
  identity: Identity
  outbox: Outbox
  runs: Runs
  logs: LogShipper
  logger: AgentLogger
  /** The longest a long poll waits for work. */
  maxWaitSeconds: number
  /** Aborted when the agent gives up (killed, or its last reports had their chance). */
  quit: AbortSignal
  /** The agent drains or stops: the loop ends once nothing is left to run or report. */
  finishing: () => boolean
  /** The task types it has handlers for (declared in a heartbeat after start and after each change). */
  taskTypes: () => string[]
}

export class HeartbeatLoop {
  private poll?: AbortController
  private pause?: AbortController
  private wakePending = false
  private status?: 'online' | 'draining'
  private intervalSeconds = 30
  /** Bumped when the task types should be declared again; `typesDeclared` is the last the service has. */
  private typesWanted = 1
  private typesDeclared = 0
  /**
   * Started from a kept identity: tasks the service still counts running on this agent
   * belonged to the previous process and died with it. Reported once the service answers.
   */
  lostRunsUnreported = false
  /** The last answer said an operator drains this agent (said once in the log). */
  private drainSeen = false
  /** Why the loop ended on its own (the service refused the agent and it cannot register again). */
  fatal?: Error

  constructor(private readonly o: HeartbeatOptions) {}

  /** A status to send, in every heartbeat until the service has it. */
  announce(status: 'online' | 'draining'): void {
    this.status = status
  }

  /**
   * Declares the task types in the next heartbeat (the handlers changed, or the service
   * handed a type this agent does not run: its declaration there is not what it runs).
   */
  declareTypes(): void {
    this.typesWanted++
    this.wake()
  }

  /** Ends a long poll (or a pause) now, so that waiting reports (or a status) go out. */
  wake(): void {
    this.wakePending = true
    this.poll?.abort()
    this.pause?.abort()
  }

  /**
   * A signal for a pause between heartbeats that a wake (or quitting) ends. A wake that came
   * while the heartbeat was answered (too late to end its long poll) ends the pause at once.
   */
  private wakeSignal(): AbortSignal {
    this.pause = new AbortController()
    if (this.wakePending) this.pause.abort()
    return AbortSignal.any([this.pause.signal, this.o.quit])
  }

  async run(): Promise<void> {
    const { api, identity, outbox, runs, logger, quit } = this.o
    const retry = new Retrying(logger, this.o.url, 'heartbeat')
    let refusals = 0
    for (;;) {
      if (quit.aborted) break
      if (this.o.finishing() && runs.size === 0 && runs.finishing === 0 && outbox.size === 0 && !this.status) break
      if (this.lostRunsUnreported) await this.reportLostRuns()
      const reports = outbox.take()
      const status = this.status
      // The types it runs: in the first heartbeat after start and after each change (an empty
      // list is a declaration too: it runs nothing, and is handed nothing).
      const typesVersion = this.typesWanted
      const taskTypes = typesVersion !== this.typesDeclared ? this.o.taskTypes() : undefined
      const mayWait = reports.length === 0 && !status && !taskTypes && !this.wakePending
      this.wakePending = false
      // No long poll while the service is not answering: the first answer comes back at once.
      const waitSeconds =
        mayWait && retry.failures === 0 ? Math.max(0, Math.min(this.o.maxWaitSeconds, this.intervalSeconds)) : 0
      const poll = new AbortController()
      if (mayWait) this.poll = poll
      const body: HeartbeatInput = {
        agentId: identity.id as string,
        runningTaskIds: runs.ids(),
        ...(reports.length ? { reports } : {}),
        ...(status ? { status } : {}),
        ...(taskTypes ? { taskTypes } : {}),
        ...(waitSeconds ? { waitSeconds } : {}),
      }
      const sentAt = Date.now()
      const unwatch = retry.watch()
      try {
        const timeout = AbortSignal.timeout(retry.timeoutMs((waitSeconds + 30) * 1000))
        const signal = AbortSignal.any([poll.signal, quit, timeout])
        const answer = await ok(api.api.v1.agents.heartbeat.$post({ json: body }, { init: { signal } }))
        unwatch()
        if (retry.failures > 0) {
          retry.answered()
          // Output kept through the outage goes now, not at its own next retry.
          this.o.logs.flushAll((taskId) => runs.has(taskId))
        }
        refusals = 0
        if (status && this.status === status) this.status = undefined
        if (typesVersion > this.typesDeclared) this.typesDeclared = typesVersion
        if (status) identity.setDrained(status === 'draining')
        this.intervalSeconds = answer.heartbeatIntervalSeconds
        identity.learnName(answer.agent.name)
        const news = this.settle(reports, answer)
        // A long poll that ended early with nothing new (a cancel already being carried out,
        // a service shutting down): pace the next one rather than spin.
        const early = Date.now() - sentAt
        if (mayWait && !news && early < MIN_POLL_MS) await sleep(MIN_POLL_MS - early, this.wakeSignal())
      } catch (err) {
        unwatch()
        if (poll.signal.aborted && !quit.aborted) {
          outbox.putBack(reports)
          continue // woken: nothing lost, go again
        }
        if (quit.aborted) {
          outbox.putBack(reports)
          break
        }
        if (err instanceof ApiClientError && !isRetryable(err)) {
          if (err.status === 401 || err.status === 404) {
            // Our identity is gone (token replaced, agent deleted, server secret changed):
            // its reports go with it.
            logger.warn('the service refused this agent’s identity', { code: err.code })
            try {
              outbox.clear()
              await identity.register()
              continue
            } catch (fatal) {
              this.fatal = fatal as Error
              logger.error('stopping', { error: (fatal as Error).message })
              runs.abortAll('stale')
              break
            }
          }
          // Our own request is wrong (a bug, or a result the service will not take): the
          // reports are dropped, not resent forever.
          const delay = backoffMs(refusals++, Math.min(BACKOFF_MAX_MS, this.intervalSeconds * 1000))
          logger.error('heartbeat refused; its reports are dropped', {
            code: err.code,
            detail: err.detail,
            nextInMs: delay,
          })
          await sleep(delay, quit)
        } else {
          // Not answered: the reports are sent again, after a delay never longer than a
          // heartbeat interval (a service that comes back must hear this agent before it
          // judges it silent). Every try says why it failed and when the next one is.
          outbox.putBack(reports)
          await retry.failed(err, quit, Math.min(BACKOFF_MAX_MS, this.intervalSeconds * 1000))
        }
      } finally {
        if (this.poll === poll) this.poll = undefined
      }
    }
    runs.clearTimers()
    if (outbox.size) logger.error('reports not delivered', { count: outbox.size })
  }

  /**
   * Reports the runs lost with the previous process (see lost-runs.ts) in the next
   * heartbeat. Tries again at the next heartbeat while the service is away.
   */
  private async reportLostRuns(): Promise<void> {
    const { identity, runs, outbox, logger } = this.o
    const agentId = identity.id
    if (!agentId) return
    try {
      const lost = await lostRuns(this.o.api, agentId, (taskId) => runs.has(taskId), this.o.quit)
      this.lostRunsUnreported = false
      if (lost.length) {
        logger.warn('runs lost with the previous process; reporting them failed', {
          tasks: lost.map((r) => r.taskId).join(','),
        })
        outbox.addFirst(lost)
      }
    } catch (err) {
      if (err instanceof ApiClientError && !isRetryable(err)) {
        this.lostRunsUnreported = false
        logger.warn('cannot list this agent’s running tasks; lost runs end at their timeout', { code: err.code })
      }
      // Unreachable: the heartbeat below backs off, and this is tried again after it.
    }
  }

  /** Applies a heartbeat's answer: verdicts, cancellations, new work. Whether anything was new. */
  private settle(sent: Report[], answer: HeartbeatAnswer): boolean {
    const { runs, outbox, logger } = this.o
    let news = false
    answer.reports.forEach((verdict, i) => {
      const report = sent[i]
      if (verdict.ok || !report) return
      const running = runs.has(report.taskId)
      const log = logger.child({ taskId: report.taskId })
      log.warn(running ? 'report refused: the task is no longer this agent’s run; stopping it' : 'report refused', {
        code: verdict.code,
        reported: report.status,
        attempt: report.attempt,
      })
      runs.stale(report.taskId, report.attempt)
      outbox.drop(report.taskId, report.attempt)
    })
    // Once an operator's drain of this agent is due (its deadline passed, by the service's
    // clock), the tasks it is asked to stop are taken from it: reported as such, not as
    // cancelled. Before that, a stop is someone's cancel. (A service that does not say `due`
    // stops for the drain whenever one is in force.)
    const stop = answer.drain && answer.drain.due !== false ? 'drain' : 'cancel'
    if (answer.drain && !this.drainSeen) logger.info('the service drains this agent: taking nothing new', answer.drain)
    this.drainSeen = answer.drain !== null && answer.drain !== undefined
    for (const id of answer.cancellations) news = runs.cancel(id, stop) || news
    for (const task of answer.assignments) news = runs.accept(task) || news
    return news
  }
}
