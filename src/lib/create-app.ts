import { OpenAPIHono } from '@hono/zod-openapi'
import type { AppBindings } from './context'
import { ApiError, type FieldError } from './errors'

type Issue = { path: PropertyKey[]; message: string }

function toFieldErrors(target: string, issues: readonly Issue[]): FieldError[] {
  return issues.map((i) => ({
    path: [target === 'json' ? 'body' : target, ...i.path.map(String)].join('.'),
    message: i.message,
  }))
}

/** A router whose validation failures all become one 422 problem listing every failing field. */
export function createRouter() {
  return new OpenAPIHono<AppBindings>({
    strict: false,
    defaultHook: (result) => {
      if (!result.success) {
        const target = String(result.target)
        throw new ApiError('validation_failed', 'The request has invalid fields; see `errors`.', {
          errors: toFieldErrors(target, result.error.issues),
        })
      }
    },
  })
}
