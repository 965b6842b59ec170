import { z } from '@hono/zod-openapi'
import { createMiddleware } from 'hono/factory'
import { sign, verify } from 'hono/jwt'
import type { Config } from '../env'
import { findAgentAuth } from '../services/agents'
import { authenticateRegistrationToken } from '../services/registration-tokens'
import { TtlCache } from './auth-cache'
import { type AppBindings, type AppDeps, type Principal, type PrincipalRole, type Role, roles } from './context'
import { ApiError } from './errors'
import { keys } from './kv'
import { REGISTRATION_TOKEN_PREFIX, registrationTokenShape } from './registration-secret'

/**
 * The token contract (another system sharing SECRET_KEY may mint these):
 * HS256/384/512 JWT with `sub`, `role` (admin|operator|viewer|agent) and `exp`.
 * Agent tokens have `sub` = the agent id and `tv` = the agent's token version; asking for a
 * fresh token bumps the version, so every earlier token of that agent stops working.
 * The role enum is the JWT roles only: `registration` belongs to opaque `acpr_…` registration
 * tokens (looked up in the database), and no JWT can claim it.
 */
const claimsSchema = z.object({
  sub: z.string().min(1).max(200),
  role: z.enum(roles),
  exp: z.number(),
  iat: z.number().optional(),
  tv: z.number().int().optional(),
})

/** Clock skew allowed between the system that minted a token and this one. */
const LEEWAY_SECONDS = 60

/** The longest a token of this role may live (MAX_TOKEN_LIFETIME_MINUTES, MAX_AGENT_TOKEN_LIFETIME_MINUTES). */
export const maxLifetimeMinutes = (config: Config, role: Role) =>
  role === 'agent' ? config.maxAgentTokenLifetimeMinutes : config.maxTokenLifetimeMinutes

export type Claims = z.infer<typeof claimsSchema>
const uuidSchema = z.uuid()

const hashes = { HS256: 'SHA-256', HS384: 'SHA-384', HS512: 'SHA-512' } as const
const hmacKeys = new Map<string, Promise<CryptoKey>>()

/**
 * The HMAC key, imported once per secret and algorithm: importing it on every request
 * costs more than the signature check itself. (A cache of a pure function, not state.)
 */
function hmacKey({ secretKey, algorithm }: Pick<Config, 'secretKey' | 'algorithm'>): Promise<CryptoKey> {
  const id = `${algorithm}:${secretKey}`
  let key = hmacKeys.get(id)
  if (!key) {
    key = crypto.subtle.importKey(
      'raw',
      new TextEncoder().encode(secretKey),
      { name: 'HMAC', hash: hashes[algorithm] },
      false,
      ['sign', 'verify'],
    )
    hmacKeys.set(id, key)
  }
  return key
}

export async function signToken(
  config: Pick<Config, 'secretKey' | 'algorithm'>,
  claims: { sub: string; role: Role; tv?: number },
  expiresInMinutes: number,
): Promise<string> {
  const iat = Math.floor(Date.now() / 1000)
  return sign({ ...claims, iat, exp: iat + expiresInMinutes * 60 }, await hmacKey(config), config.algorithm)
}

type Bearer = { kind: 'jwt'; token: string } | { kind: 'registration'; token: string }

function bearer(header: string | undefined): Bearer {
  if (!header) throw new ApiError('unauthorized', 'Missing bearer token.')
  const reg = /^Bearer\s+(acpr_\S*)\s*$/i.exec(header)
  if (reg?.[1]) {
    if (!registrationTokenShape.test(reg[1])) {
      throw new ApiError(
        'unauthorized',
        `A registration token is "${REGISTRATION_TOKEN_PREFIX}" and 43 base64url characters.`,
      )
    }
    return { kind: 'registration', token: reg[1] }
  }
  const m = /^Bearer\s+([A-Za-z0-9\-_=]+\.[A-Za-z0-9\-_=]+\.?[A-Za-z0-9\-_.+/=]*)\s*$/i.exec(header)
  if (!m?.[1]) throw new ApiError('unauthorized', 'Authorization must be "Bearer <token>".')
  return { kind: 'jwt', token: m[1] }
}

/**
 * Tokens already verified, per signing key: a token is checked once (signature, claims,
 * lifetime) and then trusted until its `exp`. Verifying costs ~80 µs of WebCrypto per
 * request otherwise; an agent sends the same token every few seconds for a year. A cache
 * of a pure function (the same token and key always give the same answer), not state.
 */
const verified = new Map<string, TtlCache<Claims>>()
const VERIFIED_MAX = 10_000

async function claimsOf(config: Config, token: string): Promise<Claims> {
  const keyId = `${config.algorithm}:${config.secretKey}`
  let cache = verified.get(keyId)
  if (!cache) {
    cache = new TtlCache<Claims>(VERIFIED_MAX)
    verified.set(keyId, cache)
  }
  const hit = cache.get(token)
  if (hit) return hit
  let payload: unknown
  try {
    payload = await verify(token, await hmacKey(config), config.algorithm)
  } catch {
    throw new ApiError('unauthorized', 'The token is invalid or expired.')
  }
  const parsed = claimsSchema.safeParse(payload)
  if (!parsed.success) throw new ApiError('unauthorized', 'The token lacks valid sub, role or exp claims.')
  const claims = parsed.data
  // A token minted to live longer than its role may (by a system sharing the secret, or
  // before the bound was lowered) is refused: a leaked one must not work for years.
  const lifetime = claims.exp - (claims.iat ?? Math.floor(Date.now() / 1000))
  if (lifetime > maxLifetimeMinutes(config, claims.role) * 60 + LEEWAY_SECONDS) {
    throw new ApiError(
      'unauthorized',
      `The token lives longer than a token of role "${claims.role}" may (${maxLifetimeMinutes(config, claims.role)} minutes).`,
    )
  }
  cache.set(token, claims, claims.exp * 1000)
  return claims
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
