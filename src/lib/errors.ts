import { z } from '@hono/zod-openapi'
import type { ContentfulStatusCode } from 'hono/utils/http-status'

/**
 * One list of error codes, one status for each. Every error the API answers is an
 * `application/problem+json` document (RFC 9457) carrying one of these codes.
 */
export const errorCodes = {
  malformed_json: 400,
  bad_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  name_taken: 409,
  conflict: 409,
  invalid_transition: 409,
  stale_attempt: 409,
  agent_has_active_tasks: 409,
  no_agent_available: 409,
  agent_cannot_take_task: 409,
  concurrency_limit: 409,
  precondition_failed: 412,
  payload_too_large: 413,
  unsupported_media_type: 415,
  validation_failed: 422,
  idempotency_key_reused: 422,
  rate_limited: 429,
  too_many_streams: 429,
  internal_error: 500,
  service_unavailable: 503,
  database_not_migrated: 503,
  misconfigured: 503,
} as const satisfies Record<string, ContentfulStatusCode>

export type ErrorCode = keyof typeof errorCodes

const titles: Record<ErrorCode, string> = {
  malformed_json: 'Malformed JSON',
  bad_request: 'Bad request',
  unauthorized: 'Unauthorized',
  forbidden: 'Forbidden',
  not_found: 'Not found',
  name_taken: 'Name already taken',
  conflict: 'Conflict',
  invalid_transition: 'State change not allowed',
  stale_attempt: 'Stale attempt',
  agent_has_active_tasks: 'Agent has active tasks',
  no_agent_available: 'No agent available',
  agent_cannot_take_task: 'Agent cannot take the task',
  concurrency_limit: 'Concurrency limit reached',
  precondition_failed: 'Precondition failed',
  payload_too_large: 'Payload too large',
  unsupported_media_type: 'Unsupported media type',
  validation_failed: 'Validation failed',
  idempotency_key_reused: 'Idempotency key reused',
  rate_limited: 'Too many requests',
  too_many_streams: 'Too many open event streams',
  internal_error: 'Internal server error',
  service_unavailable: 'Service unavailable',
  database_not_migrated: 'Database not migrated',
  misconfigured: 'Misconfigured',
}

export type FieldError = { path: string; message: string }

export interface ProblemExtras {
  errors?: FieldError[]
  /** invalid_transition: the moves allowed from the current state. */
  allowed?: string[]
  /** no_agent_available / agent_cannot_take_task / concurrency_limit: why nothing fits. */
  reasons?: string[]
  [key: string]: unknown
}

/** The only error type services throw; the app's error handler turns it into problem+json. */
export class ApiError extends Error {
  readonly status: ContentfulStatusCode
  constructor(
    readonly code: ErrorCode,
    readonly detail?: string,
    readonly extras: ProblemExtras = {},
  ) {
    super(detail ?? titles[code])
    this.name = 'ApiError'
    this.status = errorCodes[code]
  }
}

export function problemBody(code: ErrorCode, detail: string | undefined, extras: ProblemExtras, instance?: string) {
  return {
    type: `urn:agenticcp:problem:${code.replaceAll('_', '-')}`,
    title: titles[code],
    status: errorCodes[code],
    code,
    detail: detail ?? titles[code],
    ...(instance ? { instance } : {}),
    ...extras,
  }
}

export const ProblemSchema = z
  .object({
    type: z.string().openapi({ example: 'urn:agenticcp:problem:not-found' }),
    title: z.string(),
    status: z.number().int(),
    code: z.enum(Object.keys(errorCodes) as [ErrorCode, ...ErrorCode[]]),
    detail: z.string(),
    instance: z.string().optional(),
    requestId: z.string().optional(),
    errors: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
    allowed: z.array(z.string()).optional(),
    reasons: z.array(z.string()).optional(),
  })
  .openapi('Problem')

const problem = (description: string) => ({
  description,
  content: { 'application/problem+json': { schema: ProblemSchema } },
})

/** Spread into a route's `responses` so the OpenAPI document lists every error it can give. */
export const errorResponses = {
  common: {
    400: problem('Malformed JSON'),
    401: problem('Missing, malformed, expired or revoked token'),
    403: problem('The token’s role or agent may not do this'),
    422: problem('Validation failed; every failing field is listed in `errors`'),
    429: problem('Rate limited'),
    500: problem('Unexpected server error (never caused by input)'),
    503: problem(
      'A dependency is down (`service_unavailable`), or the database lacks migrations (`database_not_migrated`)',
    ),
  },
  notFound: { 404: problem('Unknown id') },
  conflict: { 409: problem('Conflict: name taken, state change not allowed, stale attempt') },
  precondition: { 412: problem('`If-Match` does not match the current version') },
  body: {
    413: problem('Body larger than MAX_BODY_BYTES'),
    415: problem('Body is not application/json'),
  },
} as const
