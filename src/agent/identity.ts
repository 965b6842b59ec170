/**
 * Who the agent is on the service: its id, name and agent token. Kept in the state dir
 * (0600) between starts, so a restart is the same agent and needs no registration token;
 * else taken from an agent token, or registered with a registration token (used once).
 */
import { hostname } from 'node:os'
import { ApiClientError, createClient, isRetryable, ok } from '../client'
import type { Provider, RegisterCall, RegisterInput } from './api'
import { backoffMs, sleep } from './backoff'
import type { AgentLogger } from './log'
import { Retrying, seconds } from './net'
import { type AgentState, loadState, saveState } from './state'

/** Why a runner gave up: its credentials or settings are refused (not a network fault). */
export class AgentFatalError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'AgentFatalError'
  }
}

export interface IdentityOptions {
  url: string
  token: string
  name?: string
  description?: string
  provider?: Provider
  region?: string
  capabilities?: string[]
  labels?: Record<string, string>
  slots: number
  stateDir?: string | false
  fetch?: typeof fetch
  /** The task types it has handlers for, declared when it registers (none: not declared, so any). */
  taskTypes: () => string[]
}

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

export class Identity {
  private state?: AgentState
  /**
   * Taken from the state dir: a previous process was this agent, and the runs it had were
   * lost with it.
   */
  restored = false

  constructor(
    private readonly o: IdentityOptions,
    private readonly logger: AgentLogger,
    /** Ends the registration's retries (the agent stops). */
    private readonly quit: AbortSignal,
  ) {}

  get id(): string | undefined {
    return this.state?.id
  }

  get name(): string | undefined {
    return this.state?.name
  }

  get token(): string | undefined {
    return this.state?.token
  }

  /** The previous process drained itself (its next start asks to be online again). */
  get drained(): boolean {
    return this.state?.drained ?? false
  }

  /** The identity kept in the state dir for this URL, else from the token (registering with a registration token). */
  async establish(): Promise<void> {
    const { stateDir, url, token } = this.o
    const kept = stateDir ? loadState(stateDir) : undefined
    if (kept && kept.url === url) {
      this.state = kept
      this.restored = true
      this.logger.info('identity from the state dir', { agentId: kept.id, name: kept.name })
      return
    }
    if (isRegistrationToken(token)) return this.register()
    const sub = subjectOf(token)
    if (!sub) throw new AgentFatalError('The token is neither a registration token (acpr_…) nor an agent token.')
    this.state = { url, id: sub, name: this.o.name ?? '', token }
    this.keep()
  }

  /** Registers with the registration token, retrying while the service is away or the name is held. */
  async register(): Promise<void> {
    const o = this.o
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
      taskTypes: o.taskTypes(),
    }
    const registrar = createClient({ url: o.url, token: o.token, fetch: o.fetch })
    const retry = new Retrying(this.logger, o.url, 'registration')
    for (let held = 0; ; ) {
      if (this.quit.aborted) return
      const unwatch = retry.watch()
      try {
        const call: RegisterCall = registrar.api.v1.agents.$post(
          { json: body },
          { init: { signal: AbortSignal.timeout(retry.timeoutMs(30_000)) } },
        )
        const agent = await ok(call)
        unwatch()
        retry.answered()
        this.state = { url: o.url, id: agent.id, name: agent.name, token: agent.token }
        this.keep()
        this.logger.info('registered', { agentId: agent.id, name: agent.name })
        return
      } catch (err) {
        unwatch()
        if (this.quit.aborted) return
        if (err instanceof ApiClientError && err.status === 409) {
          // The name is held by an agent the service still counts live (our own earlier
          // run, not yet timed out): taken over once it is offline.
          retry.answered()
          const delay = backoffMs(held++)
          this.logger.warn(`name held by a live agent; retrying until it is offline, next in ${seconds(delay)}`, {
            name,
          })
          await sleep(delay, this.quit)
        } else if (isRetryable(err)) {
          await retry.failed(err, this.quit)
        } else {
          throw new AgentFatalError(`Registration refused: ${(err as Error).message}`)
        }
      }
    }
  }

  /** The service confirmed a status: whether the agent drained itself is kept for its next start. */
  setDrained(drained: boolean): void {
    if (!this.state || (this.state.drained ?? false) === drained) return
    this.state.drained = drained
    this.keep()
  }

  /** The name the service knows the agent by (given an agent token and no name, it was unknown). */
  learnName(name: string): void {
    if (this.state && !this.state.name) this.state.name = name
  }

  private keep() {
    if (this.o.stateDir && this.state) saveState(this.o.stateDir, this.state)
  }
}
