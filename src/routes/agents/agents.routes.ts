import { createRoute, z } from '@hono/zod-openapi'
import { errorResponses as E } from '../../lib/errors'
import { jsonBody as body, jsonContent as json, security } from '../../lib/route-helpers'
import { authenticate, authenticateOrRegistration, canRead, canWrite, requireRole } from '../../middleware/auth'
import {
  Agent,
  AgentActionInput,
  AgentActionResult,
  AgentInput,
  AgentListQuery,
  AgentStatusInput,
  AgentToken,
  AgentWithToken,
  DrainInput,
  etagHeader,
  HeartbeatInput,
  HeartbeatResponse,
  IdParam,
  IfMatchHeader,
  page,
  QuarantineInput,
} from '../schemas'

const tags = ['Agents']

export const create = createRoute({
  method: 'post',
  path: '/agents',
  operationId: 'createAgent',
  summary: 'Register an agent',
  description:
    'Registers an agent (status offline until its first heartbeat) and returns it with a one-time agent token. ' +
    'With an admin or operator token, a taken name is 409. ' +
    'With a registration token (`Bearer acpr_…`, from POST /registration-tokens; the only call it may make) the agent registers itself: ' +
    'the call takes one use of the token (none when it fails), the token’s labels are set over the ones sent, ' +
    'and a name whose agent is offline is taken over (200): same id, its settings replaced by the ones sent, ' +
    'every earlier token of that agent revoked, an `agent.registered` event with `takeover: true`. ' +
    'A name whose agent is in any other status is 409. An unknown, revoked, expired or used-up registration token is 401.',
  tags,
  security,
  middleware: [authenticateOrRegistration, requireRole('admin', 'operator', 'registration')] as const,
  request: { body: body(AgentInput) },
  responses: {
    200: json(
      AgentWithToken,
      'With a registration token: an offline agent of that name, taken over, with its new token',
    ),
    201: json(AgentWithToken, 'The agent, with its token'),
    ...E.common,
    ...E.conflict,
    ...E.body,
  },
})

export const list = createRoute({
  method: 'get',
  path: '/agents',
  operationId: 'listAgents',
  summary: 'List agents',
  tags,
  security,
  middleware: [authenticate, canRead] as const,
  request: { query: AgentListQuery },
  responses: { 200: json(page(Agent, 'AgentPage'), 'A page of agents'), ...E.common },
})

export const heartbeat = createRoute({
  method: 'post',
  path: '/agents/heartbeat',
  operationId: 'agentHeartbeat',
  summary: 'Record a heartbeat and get work',
  description:
    'Records the beat (an offline agent comes back online) and answers with the tasks assigned to the agent and not yet started, and the tasks it must stop. With `waitSeconds` it long-polls; an agent holds one long poll at a time: a newer one ends the older at once, which answers with no assignments or cancellations.',
  tags,
  security,
  middleware: [authenticate, requireRole('admin', 'operator', 'agent')] as const,
  request: { body: body(HeartbeatInput) },
  responses: {
    200: json(HeartbeatResponse, 'The agent and its work'),
    ...E.common,
    ...E.notFound,
    ...E.conflict,
    ...E.body,
  },
})

export const get = createRoute({
  method: 'get',
  path: '/agents/{id}',
  operationId: 'getAgent',
  summary: 'Get an agent',
  tags,
  security,
  middleware: [authenticate] as const,
  request: { params: IdParam },
  responses: {
    200: { ...json(Agent, 'The agent'), headers: etagHeader },
    ...E.common,
    ...E.notFound,
  },
})

export const update = createRoute({
  method: 'put',
  path: '/agents/{id}',
  operationId: 'updateAgent',
  summary: 'Replace an agent’s settings',
  tags,
  security,
  middleware: [authenticate, canWrite] as const,
  request: { params: IdParam, headers: IfMatchHeader, body: body(AgentInput) },
  responses: {
    200: { ...json(Agent, 'The updated agent'), headers: etagHeader },
    ...E.common,
    ...E.notFound,
    ...E.conflict,
    ...E.precondition,
    ...E.body,
  },
})

export const setStatus = createRoute({
  method: 'patch',
  path: '/agents/{id}/status',
  operationId: 'setAgentStatus',
  summary: 'Set an agent’s status',
  description: 'Only online agents get tasks; draining, maintenance and error take nothing new.',
  tags,
  security,
  middleware: [authenticate, requireRole('admin', 'operator', 'agent')] as const,
  request: { params: IdParam, headers: IfMatchHeader, body: body(AgentStatusInput) },
  responses: {
    200: { ...json(Agent, 'The agent'), headers: etagHeader },
    ...E.common,
    ...E.notFound,
    ...E.conflict,
    ...E.precondition,
    ...E.body,
  },
})

export const remove = createRoute({
  method: 'delete',
  path: '/agents/{id}',
  operationId: 'deleteAgent',
  summary: 'Deregister an agent',
  description: '409 while it holds assigned or running tasks, unless force=true, which puts them back to pending.',
  tags,
  security,
  middleware: [authenticate, canWrite] as const,
  request: {
    params: IdParam,
    headers: IfMatchHeader,
    query: z.object({
      force: z
        .enum(['true', 'false'])
        .default('false')
        .transform((v) => v === 'true'),
    }),
  },
  responses: {
    204: { description: 'Deregistered' },
    ...E.common,
    ...E.notFound,
    ...E.conflict,
    ...E.precondition,
  },
})

export const token = createRoute({
  method: 'post',
  path: '/agents/{id}/token',
  operationId: 'rotateAgentToken',
  summary: 'Issue a fresh agent token',
  description:
    'Every token issued earlier for this agent stops working. Operators only: a leaked agent token cannot renew itself.',
  tags,
  security,
  middleware: [authenticate, canWrite] as const,
  request: { params: IdParam },
  responses: {
    201: json(AgentToken, 'The new token'),
    ...E.common,
    ...E.notFound,
  },
})

/** What the one-agent fleet actions answer. */
const fleetResponses = {
  200: { ...json(Agent, 'The agent'), headers: etagHeader },
  ...E.common,
  ...E.notFound,
  ...E.conflict,
  ...E.body,
}

export const drain = createRoute({
  method: 'post',
  tags,
  security,
  middleware: [authenticate, canWrite] as const,
  responses: fleetResponses,
  path: '/agents/{id}/drain',
  operationId: 'drainAgent',
  summary: 'Drain an agent, with a deadline',
  description:
    'Status draining: it takes nothing new and finishes what it runs (its heartbeat answer says `drain`). ' +
    'Past `deadlineSeconds`, the tasks it still holds are asked to stop (in its `cancellations`; not a cancel: they are not final), ' +
    'and those still held CANCEL_GRACE_SECONDS later go back to pending once, without spending an attempt (lostCount + 1). ' +
    'Once it holds nothing it moves to `then` (default maintenance); one that holds nothing moves at once. ' +
    'From online, draining (a new deadline) or error; else 409.',
  request: { params: IdParam, body: body(DrainInput) },
})

export const resume = createRoute({
  method: 'post',
  tags,
  security,
  middleware: [authenticate, canWrite] as const,
  responses: fleetResponses,
  path: '/agents/{id}/resume',
  operationId: 'resumeAgent',
  summary: 'Undo a drain or maintenance',
  description:
    'From draining or maintenance (else 409; a quarantine ends with release): online, or offline when it is silent ' +
    '(no heartbeat within HEARTBEAT_TIMEOUT_SECONDS) and holds nothing (its next heartbeat brings it online).',
  request: { params: IdParam },
})

export const quarantine = createRoute({
  method: 'post',
  tags,
  security,
  middleware: [authenticate, canWrite] as const,
  responses: fleetResponses,
  path: '/agents/{id}/quarantine',
  operationId: 'quarantineAgent',
  summary: 'Quarantine an agent',
  description:
    'Status quarantined, with a reason and, with `minutes`, an end (the sweep releases it then): it keeps heartbeating and ' +
    'finishes or loses what it runs, takes nothing new, is skipped by rollouts and not counted as capacity. ' +
    'An `agent.quarantined` event. From any status but quarantined.',
  request: { params: IdParam, body: body(QuarantineInput) },
})

export const release = createRoute({
  method: 'post',
  tags,
  security,
  middleware: [authenticate, canWrite] as const,
  responses: fleetResponses,
  path: '/agents/{id}/release',
  operationId: 'releaseAgent',
  summary: 'End an agent’s quarantine',
  description:
    'From quarantined (else 409): online, or offline when it is silent and holds nothing. An `agent.released` event.',
  request: { params: IdParam },
})

export const actions = createRoute({
  method: 'post',
  path: '/agents/actions',
  operationId: 'agentActions',
  summary: 'Act on every agent a selector matches',
  description:
    'drain, maintenance, resume, quarantine (with a reason) or release, on every agent the selector matches whose status ' +
    'the action applies to (the others are left as they are), in one statement. An empty selector is 422: never the whole ' +
    'fleet by accident.',
  tags,
  security,
  middleware: [authenticate, canWrite] as const,
  request: { body: body(AgentActionInput) },
  responses: {
    200: json(AgentActionResult, 'The agents moved'),
    ...E.common,
    ...E.body,
  },
})

export type CreateRoute = typeof create
export type ListRoute = typeof list
export type HeartbeatRoute = typeof heartbeat
export type GetRoute = typeof get
export type UpdateRoute = typeof update
export type SetStatusRoute = typeof setStatus
export type RemoveRoute = typeof remove
export type TokenRoute = typeof token
export type DrainRoute = typeof drain
export type ResumeRoute = typeof resume
export type QuarantineRoute = typeof quarantine
export type ReleaseRoute = typeof release
export type ActionsRoute = typeof actions
