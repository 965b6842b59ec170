import { KEY_MAX_LENGTH, KEY_PATTERN } from '../../domain/concurrency'
import { ApiError } from '../../lib/errors'
import { createRouter } from '../../middleware/router'
import { listKeys } from '../../services/concurrency'
import * as routes from './concurrency.routes'

/** The cursor of the key list: base64url of the last key seen. */
const encode = (key: string) =>
  btoa(JSON.stringify({ k: key }))
    .replaceAll('+', '-')
    .replaceAll('/', '_')
    .replace(/=+$/, '')
function decode(cursor: string | undefined): string | undefined {
  if (!cursor) return undefined
  try {
    const parsed = JSON.parse(atob(cursor.replaceAll('-', '+').replaceAll('_', '/'))) as { k?: unknown }
    if (typeof parsed.k === 'string' && parsed.k.length <= KEY_MAX_LENGTH && KEY_PATTERN.test(parsed.k)) return parsed.k
  } catch {
    // fall through to the error below
  }
  throw new ApiError('validation_failed', 'The cursor is not one this list returned.', {
    errors: [{ path: 'query.cursor', message: 'invalid cursor' }],
  })
}

export const concurrencyRouter = createRouter().openapi(routes.list, async (c) => {
  const q = c.req.valid('query')
  const rows = await listKeys(c.var.deps.database.db, { limit: q.limit + 1, after: decode(q.cursor) })
  const more = rows.length > q.limit
  const items = (more ? rows.slice(0, q.limit) : rows).map((r) => ({
    ...r,
    updatedAt: new Date(r.updatedAt).toISOString(),
  }))
  const last = items.at(-1)
  return c.json({ items, nextCursor: more && last ? encode(last.key) : null }, 200)
})
