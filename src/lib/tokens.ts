import { z } from '@hono/zod-openapi'
import { decode, sign, verify } from 'hono/jwt'
import { type Role, roles } from '../domain/model'
import type { Config } from '../env'
import { TtlCache } from './auth-cache'
import { ApiError } from './errors'

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

/**
 * Tokens already verified, per signing key: a token is checked once (signature, claims,
 * lifetime) and then trusted until its `exp`. Verifying costs ~80 µs of WebCrypto per
 * request otherwise; an agent sends the same token every few seconds for a year. A cache
 * of a pure function (the same token and key always give the same answer), not state.
 */
const verified = new Map<string, TtlCache<Claims>>()
const VERIFIED_MAX = 10_000

/**
 * Why hono/jwt's verify refused a token, in one sentence: expired (and when), a bad
 * signature, not a JWT… Only what the token itself says (its times, its algorithm) and the
 * algorithm this service signs with are named: never the key, nor anything else secret.
 */
function whyRefused(err: unknown, token: string, config: Pick<Config, 'algorithm'>): string {
  let header: { alg?: unknown } = {}
  let payload: Record<string, unknown> = {}
  try {
    const decoded = decode(token)
    header = decoded.header
    payload = decoded.payload
  } catch {} // not decodable: JwtTokenInvalid, which names no claim
  /** A time claim as an ISO time, or undefined when it is not a time in seconds. */
  const time = (name: 'exp' | 'nbf' | 'iat') => {
    const v = payload[name]
    return typeof v === 'number' && Math.abs(v) < 8.64e12 ? new Date(v * 1000).toISOString() : undefined
  }
  switch (err instanceof Error ? err.name : '') {
    case 'JwtTokenExpired': {
      const at = time('exp')
      return at ? `The token expired at ${at}.` : "The token's exp claim is not a time in seconds."
    }
    case 'JwtTokenSignatureMismatched':
      return "The token has a bad signature: it was not signed with this service's key."
    case 'JwtTokenInvalid':
      return 'The token is not a JWT: its header, payload and signature must each be base64url (the first two JSON).'
    case 'JwtHeaderInvalid':
      return `The token's header is not one this service takes: it wants alg "${config.algorithm}", typ "JWT" or none, and no "crit".`
    case 'JwtAlgorithmMismatch':
      return `The token is signed with ${String(header.alg)}; this service signs with ${config.algorithm}.`
    case 'JwtTokenNotBefore': {
      const at = time('nbf')
      return at ? `The token is not valid before ${at}.` : "The token's nbf claim is not a time in seconds."
    }
    case 'JwtTokenIssuedAt': {
      const at = time('iat')
      return at
        ? `The token was issued in the future (iat ${at}): is a clock wrong?`
        : "The token's iat claim is not a time in seconds."
    }
    default:
      return 'The token could not be verified.'
  }
}

/** The claims of a valid token of ours (signature, claims, lifetime checked), or 401. */
export async function claimsOf(config: Config, token: string): Promise<Claims> {
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
  } catch (err) {
    throw new ApiError('unauthorized', whyRefused(err, token, config))
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
