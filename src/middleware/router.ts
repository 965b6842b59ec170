import { OpenAPIHono } from '@hono/zod-openapi'
import { ApiError, type FieldError } from '../lib/errors'
import type { AppBindings } from './context'

type Issue = { path: PropertyKey[]; message: string }

function toFieldErrors(target: string, issues: readonly Issue[]): FieldError[] {
  return issues.map((i) => ({
    path: [target === 'json' ? 'body' : target, ...i.path.map(String)].join('.'),
    message: i.message,
  }))
}

/**
 * Values JSON.parse hands over that could not be stored as sent: a number JSON cannot hold
 * (`1e999` parses to Infinity, which would be stored as null) and a string with an unpaired
 * UTF-16 surrogate (`"\ud800"`, which would be stored as U+FFFD). Object keys included.
 */
export function unsafeJsonValues(value: unknown, root = 'body'): FieldError[] {
  const found: FieldError[] = []
  const stack: [unknown, string][] = [[value, root]]
  while (stack.length && found.length < 20) {
    const [v, path] = stack.pop() as [unknown, string]
    if (typeof v === 'number') {
      if (!Number.isFinite(v))
        found.push({ path, message: 'number too large for JSON (it would not be stored as sent)' })
    } else if (typeof v === 'string') {
      if (/\p{Cs}/u.test(v)) found.push({ path, message: 'contains an unpaired UTF-16 surrogate (not valid Unicode)' })
    } else if (v && typeof v === 'object') {
      for (const [k, child] of Object.entries(v)) {
        if (/\p{Cs}/u.test(k)) found.push({ path, message: 'a key contains an unpaired UTF-16 surrogate' })
        stack.push([child, `${path}.${k}`])
      }
    }
  }
  return found
}

/** A router whose validation failures all become one 422 problem listing every failing field. */
export function createRouter() {
  return new OpenAPIHono<AppBindings>({
    strict: false,
    defaultHook: (result) => {
      const target = String(result.target)
      if (!result.success) {
        throw new ApiError('validation_failed', 'The request has invalid fields; see `errors`.', {
          errors: toFieldErrors(target, result.error.issues),
        })
      }
      // Refused rather than silently changed on the way to the database.
      const unsafe = target === 'json' ? unsafeJsonValues(result.data) : []
      if (unsafe.length) {
        throw new ApiError('validation_failed', 'The body holds values JSON or Unicode cannot carry; see `errors`.', {
          errors: unsafe,
        })
      }
    },
  })
}
