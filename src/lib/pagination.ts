import { ApiError } from './errors'

/**
 * Keyset paging over UUIDv7 primary keys (which sort by creation time). The cursor is
 * opaque to clients: base64url of the last id seen and the order it was read in.
 */
export type SortOrder = 'asc' | 'desc'

export function encodeCursor(id: string, order: SortOrder): string {
  return btoa(JSON.stringify({ id, o: order }))
    .replaceAll('+', '-')
    .replaceAll('/', '_')
    .replace(/=+$/, '')
}

const uuidRe = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

export function decodeCursor(cursor: string | undefined, order: SortOrder): string | undefined {
  if (cursor === undefined || cursor === '') return undefined
  try {
    const json = atob(cursor.replaceAll('-', '+').replaceAll('_', '/'))
    const parsed = JSON.parse(json) as { id?: unknown; o?: unknown }
    if (typeof parsed.id === 'string' && uuidRe.test(parsed.id) && parsed.o === order) return parsed.id
  } catch {
    // fall through to the error below
  }
  throw new ApiError('validation_failed', 'The cursor is not one this list returned (or the order changed).', {
    errors: [{ path: 'query.cursor', message: 'invalid cursor' }],
  })
}

/** Takes `limit + 1` rows read in order and returns the page and the next cursor. */
export function page<T extends { id: string }>(rows: T[], limit: number, order: SortOrder) {
  const more = rows.length > limit
  const items = more ? rows.slice(0, limit) : rows
  const last = items.at(-1)
  return { items, nextCursor: more && last ? encodeCursor(last.id, order) : null }
}
