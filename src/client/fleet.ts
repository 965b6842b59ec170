/**
 * Fleet maintenance through the typed client (docs/api.md, "Fleet maintenance"): drain with
 * a deadline, resume, quarantine, release, one agent or every agent a selector matches.
 * Thin wrappers over the routes' typed calls. Runtime imports: only the client.
 */
import { type Client, ok } from './index'

type Api = Client['api']['v1']['agents']
export type DrainOptions = Parameters<Api[':id']['drain']['$post']>[0]['json']
export type QuarantineOptions = Parameters<Api[':id']['quarantine']['$post']>[0]['json']
export type AgentActionRequest = Parameters<Api['actions']['$post']>[0]['json']

/** Drains an agent: nothing new; past `deadlineSeconds` its tasks are stopped and requeued; then `then`. */
export const drainAgent = (api: Client, id: string, options: DrainOptions = {}) =>
  ok(api.api.v1.agents[':id'].drain.$post({ param: { id }, json: options }))

/** Undoes a drain or maintenance. */
export const resumeAgent = (api: Client, id: string) => ok(api.api.v1.agents[':id'].resume.$post({ param: { id } }))

/** Quarantines an agent, with a reason and (`minutes`) an end. */
export const quarantineAgent = (api: Client, id: string, options: QuarantineOptions) =>
  ok(api.api.v1.agents[':id'].quarantine.$post({ param: { id }, json: options }))

/** Ends an agent's quarantine. */
export const releaseAgent = (api: Client, id: string) => ok(api.api.v1.agents[':id'].release.$post({ param: { id } }))

/** One action on every agent a (non-empty) selector matches: `{count, ids}` of those moved. */
export const agentActions = (api: Client, request: AgentActionRequest) =>
  ok(api.api.v1.agents.actions.$post({ json: request }))
