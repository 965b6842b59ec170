import { z } from '@hono/zod-openapi'
import { createMiddleware } from 'hono/factory'
import type { Principal, PrincipalRole, Role } from '../domain/model'
import { ApiError } from '../lib/errors'
import { keys } from '../lib/kv'
import { REGISTRATION_TOKEN_PREFIX, registrationTokenShape } from '../lib/registration-secret'
import { claimsOf } from '../lib/tokens'
import { findAgentAuth } from '../services/agents'
import { authenticateRegistrationToken } from '../services/registration-tokens'
import type { AppBindings, AppDeps } from './context'

/**
 * Authentication and authorisation middleware. The token contract (claims, lifetimes,
 * signing) is in src/lib/tokens.ts; here a request's bearer token becomes its `principal`,
 * checked against the live agent row for agent tokens, and routes name the roles they take.
 */

const uuidSchema = z.uuid()

type Bearer = { kind: 'jwt'; token: string } | { kind: 'registration'; token: string }

/** Three base64url parts, separated by dots (header.payload.signature). */
const jwtShape = /^[A-Za-z0-9\-_=]+\.[A-Za-z0-9\-_=]+\.[A-Za-z0-9\-_=]*$/

function bearer(header: string | undefined): Bearer {
  if (!header) throw new ApiError('unauthorized', 'Missing bearer token.')
  const token = /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1]
  if (!token) throw new ApiError('unauthorized', 'Authorization must be "Bearer <token>".')
  if (/^acpr_/i.test(token)) {
    if (!registrationTokenShape.test(token)) {
      throw new ApiError(
        'unauthorized',
        `A registration token is "${REGISTRATION_TOKEN_PREFIX}" and 43 base64url characters.`,
      )
    }
    return { kind: 'registration', token }
  }
  if (!jwtShape.test(token)) {
    // What was expected, and what this token has instead (never the token itself).
    const parts = token.split('.').length
    const has = parts === 3 ? 'this one has an empty or non-base64url part' : `this one has ${parts}`
    throw new ApiError(
      'unauthorized',
      `The bearer token is not a JWT: a JWT has three dot-separated base64url parts (${has}); a registration token starts "${REGISTRATION_TOKEN_PREFIX}".`,
    )
  }
  return { kind: 'jwt', token }
}

/**
 * Verifies the bearer token and sets `principal`; agent tokens are checked against the live
 * agent row. A registration token (`acpr_…`) is looked up (401 when unknown, revoked,
 * expired or used up) and then refused with 403 unless the route takes it: only
 * POST /agents does (`authenticateOrRegistration`), so every other route refuses it here,
 * whatever its own role checks say.
 */
function authenticateWith(opts: { registration: boolean }) {
  return createMiddleware<AppBindings>(async (c, next) => {
    const { database, clock } = c.var.deps
    const presented = bearer(c.req.header('authorization'))
    let principal: Principal
    if (presented.kind === 'registration') {
      const id = await authenticateRegistrationToken(database.db, presented.token, clock.now())
      if (!opts.registration) {
        throw new ApiError('forbidden', 'A registration token may only register an agent (POST /api/v1/agents).')
      }
      principal = { sub: id, role: 'registration' }
    } else principal = await jwtPrincipal(c.var.deps, presented.token)
    c.set('principal', principal)
    await rateLimit(c.var.deps, principal, c.req.method)
    await next()
  })
}

/** Every route but POST /agents: JWTs only (a registration token gets 403). */
export const authenticate = authenticateWith({ registration: false })
/** POST /agents only: JWTs, and registration tokens (role `registration`). */
export const authenticateOrRegistration = authenticateWith({ registration: true })

async function jwtPrincipal(deps: AppDeps, token: string): Promise<Principal> {
  const { config, database, kv, authCache } = deps
  const { sub, role, tv } = await claimsOf(config, token)
  const principal: Principal = { sub, role }
  if (role === 'agent') {
    // Every agent call needs this row: cached, dropped by rotation and deletion. With Redis,
    // in Redis (shared by every instance); without it, in this process. An instance that
    // cannot reach the others' copies (no Redis, or cut off from it) cannot drop them, so
    // they live only AUTH_CACHE_TTL_SECONDS: the bound on how long a replaced token can
    // still work anywhere.
    const ttlMs = config.authCacheTtlSeconds * 1000
    const load = () => findAgentAuth(database.db, sub)
    let agent: { id: string; tokenVersion: number } | undefined
    if (!uuidSchema.safeParse(sub).success) agent = undefined
    else if (kv.kind === 'redis') agent = await kv.cached(keys.agentAuth(sub), ttlMs, load)
    else {
      const cached = authCache.get(sub)
      // A token newer than the cached version proves the copy stale (another instance
      // rotated it): ask the database rather than refuse the agent's new token.
      if (cached && (tv === undefined || tv <= cached.tokenVersion)) agent = cached
      else {
        // Counted from before the read, and not stored if a rotation or deletion on this
        // process dropped the key meanwhile: the copy never outlives the bound.
        const generation = authCache.generation(sub)
        const started = Date.now()
        agent = await load()
        if (agent) authCache.setIf(sub, agent, started + ttlMs, generation)
      }
    }
    if (!agent) throw new ApiError('unauthorized', 'The agent of this token no longer exists.')
    if (tv !== agent.tokenVersion) throw new ApiError('unauthorized', 'This agent token was replaced by a newer one.')
    principal.agentId = agent.id
  }
  return principal
}

async function rateLimit(deps: AppDeps, p: Principal, method: string) {
  const { config, kv } = deps
  if (config.rateLimitPerMinute > 0 && method !== 'GET' && method !== 'HEAD') {
    const r = await kv.rateLimit(`agenticcp:rate:${p.role}:${p.sub}`, config.rateLimitPerMinute, 60_000)
    if (!r.allowed) {
      throw new ApiError('rate_limited', `More than ${config.rateLimitPerMinute} writes a minute for this token.`, {
        retryAfterSeconds: Math.max(1, Math.ceil(r.retryAfterMs / 1000)),
      })
    }
  }
}

const writers: Role[] = ['admin', 'operator']
const readers: Role[] = ['admin', 'operator', 'viewer']

/** Allows only the given roles; 403 for the rest. */
export function requireRole(...allowed: PrincipalRole[]) {
  return createMiddleware<AppBindings>(async (c, next) => {
    const p = c.var.principal
    if (!allowed.includes(p.role)) {
      throw new ApiError('forbidden', `Role "${p.role}" may not do this; allowed: ${allowed.join(', ')}.`)
    }
    await next()
  })
}

export const canWrite = requireRole(...writers)
export const canRead = requireRole(...readers)

/** For routes an agent may call about itself: refuses an agent token acting for another agent. */
export function assertSelfOrStaff(p: Principal, agentId: string, staff: readonly PrincipalRole[] = writers): void {
  if (p.role === 'agent') {
    if (p.agentId !== agentId) throw new ApiError('forbidden', 'An agent token may act only for its own agent.')
    return
  }
  if (!staff.includes(p.role)) throw new ApiError('forbidden', `Role "${p.role}" may not do this.`)
}
