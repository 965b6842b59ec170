/**
 * After a restart (an identity from the state dir): the tasks the service still counts
 * `running` on this agent and that this process is not running were lost with the previous
 * one (killed, crashed, its host rebooted). They are reported `failed` (`agent_restarted`,
 * fenced by their attempt), so the service retries them now instead of at their timeout;
 * the agent never went silent, so the sweep would not.
 */
import { type Client, ok } from '../client'
import type { Report } from './api'

/** The reports of the runs lost with the previous process (throws what the API throws). */
export async function lostRuns(
  api: Client,
  agentId: string,
  running: (taskId: string) => boolean,
  quit: AbortSignal,
): Promise<Report[]> {
  const lost: Report[] = []
  let cursor: string | undefined
  for (let page = 0; page < 100; page++) {
    const query = { agentId, status: 'running', limit: '100', ...(cursor ? { cursor } : {}) }
    const signal = AbortSignal.any([quit, AbortSignal.timeout(30_000)])
    const answer = await ok(api.api.v1.tasks.$get({ query }, { init: { signal } }))
    for (const t of answer.items) {
      if (running(t.id)) continue
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
  return lost
}
