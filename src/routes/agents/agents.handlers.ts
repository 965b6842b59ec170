import type { Context } from 'hono'
import { etagOf } from '../../lib/etag'
import { signToken } from '../../lib/tokens'
import { assertSelfOrStaff } from '../../middleware/auth'
import { type AppBindings, type AppRouteHandler, serviceDeps as svc } from '../../middleware/context'
import * as agents from '../../services/agents'
import * as fleet from '../../services/fleet'
import { toAgentDto, toTaskDto } from '../dto'
import type {
  ActionsRoute,
  CreateRoute,
  DrainRoute,
  GetRoute,
  HeartbeatRoute,
  ListRoute,
  QuarantineRoute,
  ReleaseRoute,
  RemoveRoute,
  ResumeRoute,
  SetStatusRoute,
  TokenRoute,
  UpdateRoute,
} from './agents.routes'

async function agentToken(c: Context<AppBindings>, agentId: string, tokenVersion: number) {
  const { config } = c.var.deps
  // The answer holds a credential: no cache (browser, proxy) may keep it.
  c.header('Cache-Control', 'no-store')
  const token = await signToken(
    config,
    { sub: agentId, role: 'agent', tv: tokenVersion },
    config.agentTokenExpireMinutes,
  )
  const expiresAt = new Date(Date.now() + config.agentTokenExpireMinutes * 60_000).toISOString()
  return { token, expiresAt }
}

export const create: AppRouteHandler<CreateRoute> = async (c) => {
  const p = c.var.principal
  const input = c.req.valid('json')
  // A registration token registers the agent itself, and may take over an offline agent's name (200).
  const { agent: row, takeover } =
    p.role === 'registration'
      ? await agents.registerAgent(svc(c), input, p.sub)
      : { agent: await agents.createAgent(svc(c), input), takeover: false }
  const { token, expiresAt } = await agentToken(c, row.id, row.tokenVersion)
  c.header('Location', `/api/v1/agents/${row.id}`)
  c.header('ETag', etagOf(row.version))
  const body = { ...toAgentDto(row, c.var.logger), token, tokenExpiresAt: expiresAt }
  return takeover ? c.json(body, 200) : c.json(body, 201)
}

export const list: AppRouteHandler<ListRoute> = async (c) => {
  const q = c.req.valid('query')
  const result = await agents.listAgents(svc(c).db, { ...q, capabilities: q.capability })
  return c.json({ items: result.items.map((a) => toAgentDto(a, c.var.logger)), nextCursor: result.nextCursor }, 200)
}

export const get: AppRouteHandler<GetRoute> = async (c) => {
  const { id } = c.req.valid('param')
  assertSelfOrStaff(c.var.principal, id, ['admin', 'operator', 'viewer'])
  const row = await agents.readAgent(svc(c), id)
  c.header('ETag', etagOf(row.version))
  return c.json(toAgentDto(row, c.var.logger), 200)
}

export const update: AppRouteHandler<UpdateRoute> = async (c) => {
  const { id } = c.req.valid('param')
  const row = await agents.updateAgent(svc(c), id, c.req.valid('json'), c.req.valid('header')['if-match'])
  c.header('ETag', etagOf(row.version))
  return c.json(toAgentDto(row, c.var.logger), 200)
}

export const setStatus: AppRouteHandler<SetStatusRoute> = async (c) => {
  const { id } = c.req.valid('param')
  const principal = c.var.principal
  assertSelfOrStaff(principal, id)
  const row = await agents.setAgentStatus(
    svc(c),
    id,
    c.req.valid('json').status,
    principal,
    c.req.valid('header')['if-match'],
  )
  c.header('ETag', etagOf(row.version))
  return c.json(toAgentDto(row, c.var.logger), 200)
}

export const remove: AppRouteHandler<RemoveRoute> = async (c) => {
  const { id } = c.req.valid('param')
  await agents.deleteAgent(svc(c), id, c.req.valid('query').force, c.req.valid('header')['if-match'])
  return c.body(null, 204)
}

export const token: AppRouteHandler<TokenRoute> = async (c) => {
  const { id } = c.req.valid('param')
  const version = await agents.rotateAgentToken(svc(c), id)
  return c.json(await agentToken(c, id, version), 201)
}

export const heartbeat: AppRouteHandler<HeartbeatRoute> = async (c) => {
  const input = c.req.valid('json')
  assertSelfOrStaff(c.var.principal, input.agentId)
  // A long poll takes the agent's one place (ending the one that held it) and ends early when
  // a newer one takes it or the client leaves. (The request's signal costs a little to make.)
  const poll = input.waitSeconds ? c.var.deps.longPolls.take(input.agentId, c.req.raw.signal) : undefined
  let result: agents.HeartbeatResult
  try {
    result = await agents.heartbeat(svc(c), input, poll?.signal)
  } finally {
    poll?.release()
  }
  const agent = toAgentDto(result.agent, c.var.logger)
  return c.json(
    {
      agent,
      assignments: result.assignments.map((t) => toTaskDto(t, null, c.var.logger)),
      cancellations: result.cancellations,
      heartbeatIntervalSeconds: c.var.deps.config.heartbeatIntervalSeconds,
      drain: agent.drain ? { ...agent.drain, due: drainDue(agent.drain.deadline, c.var.deps.clock.now()) } : null,
      reports: result.reports.map(({ report, verdict, task }) =>
        verdict === 'ok' || verdict === 'repeat'
          ? { taskId: report.taskId, ok: true }
          : {
              taskId: report.taskId,
              ok: false,
              code: verdict,
              ...(verdict === 'stale_attempt' && task ? { attempt: task.attempt } : {}),
              ...(verdict === 'invalid_transition' && task ? { status: task.status } : {}),
            },
      ),
    },
    200,
  )
}

const byOf = (c: Context<AppBindings>) => c.var.principal.role

const agentAnswer = (c: Context<AppBindings>, row: Parameters<typeof toAgentDto>[0]) => {
  c.header('ETag', etagOf(row.version))
  return toAgentDto(row, c.var.logger)
}

export const drain: AppRouteHandler<DrainRoute> = async (c) => {
  const { id } = c.req.valid('param')
  const input = c.req.valid('json')
  const row = await fleet.agentAction(svc(c), id, 'drain', { by: byOf(c), ...input })
  return c.json(agentAnswer(c, row), 200)
}

export const resume: AppRouteHandler<ResumeRoute> = async (c) => {
  const { id } = c.req.valid('param')
  const row = await fleet.agentAction(svc(c), id, 'resume', { by: byOf(c) })
  return c.json(agentAnswer(c, row), 200)
}

export const quarantine: AppRouteHandler<QuarantineRoute> = async (c) => {
  const { id } = c.req.valid('param')
  const input = c.req.valid('json')
  const row = await fleet.agentAction(svc(c), id, 'quarantine', { by: byOf(c), ...input })
  return c.json(agentAnswer(c, row), 200)
}

export const release: AppRouteHandler<ReleaseRoute> = async (c) => {
  const { id } = c.req.valid('param')
  const row = await fleet.agentAction(svc(c), id, 'release', { by: byOf(c) })
  return c.json(agentAnswer(c, row), 200)
}

export const actions: AppRouteHandler<ActionsRoute> = async (c) => {
  const { selector, action, ...params } = c.req.valid('json')
  return c.json(await fleet.bulkAction(svc(c), selector, action, { by: byOf(c), ...params }), 200)
}

/** A drain's deadline has passed (by the service's clock): its stops are the drain's, not cancels. */
const drainDue = (deadline: string | null, now: Date) => deadline !== null && Date.parse(deadline) <= now.getTime()
