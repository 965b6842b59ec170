import { and, asc, desc, eq, gt, inArray, isNull, lt, or, sql } from 'drizzle-orm'
import { v7 as uuidv7 } from 'uuid'
import type { Db, Executor } from '../db/client'
import { type RegistrationTokenRow, registrationTokens } from '../db/schema'
import type { Labels } from '../domain/model'
import { ApiError } from '../lib/errors'
import type { Logger } from '../lib/logger'
import { decodeCursor, page, type SortOrder } from '../lib/pagination'
import { hashRegistrationToken, newRegistrationToken } from '../lib/registration-secret'
import { isoColumns } from '../lib/timestamps'
import type { ServiceDeps } from './deps'

/** Lifetime of a registration token when the request names none (capped by MAX_TOKEN_LIFETIME_MINUTES). */
export const DEFAULT_REGISTRATION_TOKEN_MINUTES = 1440

/** Expired tokens are kept this long (they still show in the list, `expired: true`), then the sweep prunes them. */
export const REGISTRATION_TOKEN_KEEP_DAYS = 7

export interface RegistrationTokenInput {
  description?: string | null
  expiresInMinutes?: number
  maxUses?: number | null
  labels?: Labels
}

export interface RegistrationTokenDto {
  id: string
  description: string | null
  labels: Labels
  maxUses: number | null
  uses: number
  expiresAt: string | null
  expired: boolean
  createdBy: string
  createdAt: string | null
}

const tokenTimes = ['expiresAt', 'createdAt'] as const

/** A registration token as answers show it; `log` hears of a timestamp it could not write. */
export function toRegistrationTokenDto(row: RegistrationTokenRow, now: Date, log?: Logger): RegistrationTokenDto {
  const times = isoColumns(row, tokenTimes, { registrationId: row.id }, log)
  return {
    id: row.id,
    description: row.description,
    labels: row.labels,
    maxUses: row.maxUses,
    uses: row.uses,
    expiresAt: times.expiresAt,
    expired: row.expiresAt.getTime() <= now.getTime(),
    createdBy: row.createdBy,
    createdAt: times.createdAt,
  }
}

/**
 * Makes a token and returns it with its secret, which exists only in this answer: the
 * table keeps its SHA-256. It lives `expiresInMinutes` (default a day, and never longer
 * than MAX_REGISTRATION_TOKEN_LIFETIME_MINUTES, a year by default: a fleet's launch template
 * holds one for months, and it can do one thing only and is revoked at once).
 */
export async function createRegistrationToken(
  deps: Pick<ServiceDeps, 'db' | 'clock' | 'config'>,
  input: RegistrationTokenInput,
  createdBy: string,
): Promise<{ row: RegistrationTokenRow; token: string }> {
  const most = deps.config.maxRegistrationTokenLifetimeMinutes
  const minutes = input.expiresInMinutes ?? Math.min(DEFAULT_REGISTRATION_TOKEN_MINUTES, most)
  if (minutes > most) {
    throw new ApiError('validation_failed', 'The request has invalid fields; see `errors`.', {
      errors: [
        {
          path: 'body.expiresInMinutes',
          message: `must be at most ${most} (MAX_REGISTRATION_TOKEN_LIFETIME_MINUTES)`,
        },
      ],
    })
  }
  const now = deps.clock.now()
  const token = newRegistrationToken()
  const [row] = await deps.db
    .insert(registrationTokens)
    .values({
      id: uuidv7(),
      tokenHash: await hashRegistrationToken(token),
      description: input.description ?? null,
      labels: input.labels ?? {},
      maxUses: input.maxUses ?? null,
      uses: 0,
      expiresAt: new Date(now.getTime() + minutes * 60_000),
      createdBy,
      createdAt: now,
    })
    .returning()
  if (!row) throw new Error('insert returned no row')
  return { row, token }
}

export async function listRegistrationTokens(db: Db, q: { limit: number; cursor?: string; order: SortOrder }) {
  const after = decodeCursor(q.cursor, q.order)
  const rows = await db
    .select()
    .from(registrationTokens)
    .where(
      after ? (q.order === 'asc' ? gt(registrationTokens.id, after) : lt(registrationTokens.id, after)) : undefined,
    )
    .orderBy(q.order === 'asc' ? asc(registrationTokens.id) : desc(registrationTokens.id))
    .limit(q.limit + 1)
  return page(rows, q.limit, q.order)
}

/** Revokes a token at once: its row goes, so the next request presenting it is refused. */
export async function deleteRegistrationToken(db: Db, id: string): Promise<void> {
  const gone = await db
    .delete(registrationTokens)
    .where(eq(registrationTokens.id, id))
    .returning({ id: registrationTokens.id })
  if (gone.length === 0) throw new ApiError('not_found', `No registration token with id ${id}.`)
}

/** Why a token cannot register an agent now, or null when it can. */
function unusable(row: Pick<RegistrationTokenRow, 'expiresAt' | 'maxUses' | 'uses'>, now: Date): string | null {
  if (row.expiresAt.getTime() <= now.getTime()) {
    return `This registration token expired at ${row.expiresAt.toISOString()}.`
  }
  if (row.maxUses !== null && row.uses >= row.maxUses) {
    return `This registration token is used up (${row.uses} of ${row.maxUses} registrations).`
  }
  return null
}

const unknownToken = () => new ApiError('unauthorized', 'Unknown or revoked registration token.')

/**
 * Authentication of a `Bearer acpr_…` token: the id of a token that may register an agent
 * now, else 401 saying why. One indexed read, not cached: a revocation holds at once, on
 * every instance. (The use is consumed later, with the registration: see consumeRegistrationToken.)
 */
export async function authenticateRegistrationToken(db: Db, token: string, now: Date): Promise<string> {
  const [row] = await db
    .select({
      id: registrationTokens.id,
      expiresAt: registrationTokens.expiresAt,
      maxUses: registrationTokens.maxUses,
      uses: registrationTokens.uses,
    })
    .from(registrationTokens)
    .where(eq(registrationTokens.tokenHash, await hashRegistrationToken(token)))
  if (!row) throw unknownToken()
  const why = unusable(row, now)
  if (why) throw new ApiError('unauthorized', why)
  return row.id
}

/**
 * Takes one use of the token, in the caller's (the registration's) transaction, and returns
 * the labels it sets. The guard is in the `WHERE`: racing registrations queue on the row
 * lock and each re-checks `uses < max_uses` against the committed count, so together they
 * never pass `max_uses`; a registration that fails later rolls its use back. 401 when the
 * token went away (revoked, expired, used up) since the request was authenticated.
 */
export async function consumeRegistrationToken(tx: Executor, id: string, now: Date): Promise<Labels> {
  const t = registrationTokens
  const [row] = await tx
    .update(t)
    .set({ uses: sql`${t.uses} + 1` })
    .where(and(eq(t.id, id), gt(t.expiresAt, now), or(isNull(t.maxUses), lt(t.uses, t.maxUses))))
    .returning({ labels: t.labels })
  if (row) return row.labels
  const [left] = await tx
    .select({ expiresAt: t.expiresAt, maxUses: t.maxUses, uses: t.uses })
    .from(t)
    .where(eq(t.id, id))
  throw left
    ? new ApiError('unauthorized', unusable(left, now) ?? 'This registration token cannot be used now.')
    : unknownToken()
}

/** Housekeeping (the sweep): deletes tokens expired more than REGISTRATION_TOKEN_KEEP_DAYS before `now`. */
export async function pruneRegistrationTokens(db: Db, now: Date, limit: number): Promise<number> {
  const cutoff = new Date(now.getTime() - REGISTRATION_TOKEN_KEEP_DAYS * 86_400_000)
  const t = registrationTokens
  const due = db.select({ id: t.id }).from(t).where(lt(t.expiresAt, cutoff)).limit(limit)
  const gone = await db.delete(t).where(inArray(t.id, due)).returning({ id: t.id })
  return gone.length
}
