import type { Logger } from './logger'

/**
 * Timestamps at the service's edges. A request may name an instant only within
 * [EARLIEST_TIMESTAMP, LATEST_TIMESTAMP] (checked by one schema, `TimestampInput` in
 * src/routes/schemas.ts); an answer writes a stored instant only when ISO 8601 can say it.
 */

/** The earliest instant a request may name. */
export const EARLIEST_TIMESTAMP = '2000-01-01T00:00:00.000Z'
/** The latest instant a request may name: the last millisecond of year 9999, UTC. */
export const LATEST_TIMESTAMP = '9999-12-31T23:59:59.999Z'

const earliest = Date.parse(EARLIEST_TIMESTAMP)
const latest = Date.parse(LATEST_TIMESTAMP)

/** True for an instant a request may name (see EARLIEST_TIMESTAMP, LATEST_TIMESTAMP). */
export function isAcceptedInstant(d: Date): boolean {
  const t = d.getTime()
  return t >= earliest && t <= latest
}

// Years 1 to 9999: what `toISOString` writes with four digits and Postgres reads as AD.
const writableFrom = Date.parse('0001-01-01T00:00:00.000Z')

/**
 * A stored instant as answers write it (ISO 8601, UTC), or null when it cannot be written:
 * not a Date (a cached copy revived without it), an Invalid Date (what the drivers make of
 * `0001-01-01 BC`, `infinity` or a year past 275760), or a year outside 1–9999 (which
 * `toISOString` would write as `+010000-…`, or throw on). Never throws.
 */
export function isoOrNull(v: unknown): string | null {
  if (!(v instanceof Date)) return null
  const t = v.getTime()
  if (!(t >= writableFrom && t <= latest)) return null
  return v.toISOString()
}

/**
 * A row's timestamps as answers write them. One the API cannot write (a value planted out
 * of range, which the drivers read as an Invalid Date) is answered as null, and the row is
 * logged once naming its columns, so one bad row never fails a page or a heartbeat.
 */
export function isoColumns<K extends string>(
  row: Record<K, Date | null>,
  columns: readonly K[],
  subject: Record<string, string>,
  log: Logger | undefined,
): Record<K, string | null> {
  const out = {} as Record<K, string | null>
  const bad: K[] = []
  for (const k of columns) {
    const v = row[k]
    out[k] = isoOrNull(v)
    if (out[k] === null && v != null) bad.push(k)
  }
  if (bad.length) log?.warn('stored timestamps the API cannot write; answered as null', { ...subject, columns: bad })
  return out
}
