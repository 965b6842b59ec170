/**
 * The service's agent API as the runner sees it: the shapes of the calls it makes, taken
 * from the typed client (so they follow the server's schemas without importing its code).
 */
import type { Client, Ok } from '../client'

type HeartbeatCall = ReturnType<Client['api']['v1']['agents']['heartbeat']['$post']>
export type HeartbeatAnswer = Ok<Awaited<HeartbeatCall>>
export type HeartbeatInput = Parameters<Client['api']['v1']['agents']['heartbeat']['$post']>[0]['json']
export type RegisterCall = ReturnType<Client['api']['v1']['agents']['$post']>
export type RegisterInput = Parameters<Client['api']['v1']['agents']['$post']>[0]['json']
/** What an agent says about one attempt of a task (running, progress, its end). */
export type Report = NonNullable<HeartbeatInput['reports']>[number]

/** A task as the service hands it to its agent. */
export type Task = HeartbeatAnswer['assignments'][number]
export type Provider = NonNullable<RegisterInput['provider']>
