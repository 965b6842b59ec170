import { z } from '@hono/zod-openapi'

/**
 * Cursors a client sends back (`after`, `Last-Event-ID`, a log's `attempt`), each bounded
 * to the range of the column it is compared with: a value past it is refused here with 422,
 * before any query runs or any stream starts, instead of failing in Postgres (an `integer`
 * overflows past 2,147,483,647) halfway through an answer that has already begun.
 * (List cursors, `cursor`, are opaque and checked by src/lib/pagination.ts.)
 */

/** A Postgres `integer` (int4): log seqs and attempts. */
export const INT4_MAX = 2_147_483_647
/** Event ids: `bigint` in Postgres, read as JavaScript numbers, so exact up to 2^53 − 1. */
export const EVENT_ID_MAX = Number.MAX_SAFE_INTEGER

/** A `Last-Event-ID` header: digits, at most `max`. */
export const lastEventIdHeader = (max: number) =>
  z
    .string()
    .refine((v) => /^\d+$/.test(v) && Number(v) <= max, `digits, at most ${max}`)
    .optional()
    .openapi({ description: `An id this stream sent (at most ${max}): resume after it.` })
