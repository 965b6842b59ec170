import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/client'
import type { EventRow } from '../src/db/schema'
import { EventFeed } from '../src/services/event-feed'
import { sequenceEvents } from '../src/services/events'
import { createHarness, type Harness } from './harness'

let h: Harness
beforeAll(async () => {
  h = await createHarness()
})
afterAll(async () => {
  await h.close()
})

/** Reads a feed from `cursor` to its end in pages of `limit`, as a stream would. */
async function drain(feed: EventFeed, cursor: number, filter: { type?: string }, limit: number) {
  const got: EventRow[] = []
  for (let guard = 0; guard < 1000; guard++) {
    const page = await feed.read(cursor, filter, limit)
    got.push(...page.rows)
    expect(page.cursor).toBeGreaterThanOrEqual(cursor) // never goes back
    if (page.rows.length === 0 && page.cursor === cursor) break
    cursor = page.cursor
  }
  return { got, cursor }
}

describe('the shared event reader', () => {
  it('gives a stream every matching event once, in order, whether it starts old (database) or new (memory)', async () => {
    for (let i = 0; i < 4; i++) await h.pendingTask()
    const feed = new EventFeed(h.database.db, h.kv, { pollMs: 20, keep: 3 })
    await feed.join()
    try {
      const start = feed.latest
      // More than the feed keeps, so older positions must come from the database.
      for (let i = 0; i < 7; i++) await h.pendingTask()
      await sequenceEvents(h.database.db)
      const [last] = await rowsOf<{ m: number }>(h.database.db, sql`SELECT max(seq)::int AS m FROM events`)
      while (feed.latest < (last?.m ?? 0)) await feed.changed(feed.latest, 500)

      const truth = await rowsOf<{ seq: number; type: string }>(
        h.database.db,
        sql`SELECT seq::int AS seq, type FROM events WHERE seq IS NOT NULL ORDER BY seq`,
      )
      for (const [from, filter, limit] of [
        [0, {}, 2],
        [0, { type: 'task.created' }, 1],
        [start, {}, 100],
        [start + 1, { type: 'task.' }, 3],
        [feed.latest - 1, {}, 1],
      ] as const) {
        const { got, cursor } = await drain(feed, from, filter, limit)
        const want = truth.filter((e) => e.seq > from && (!filter.type || e.type.startsWith(filter.type)))
        expect(
          got.map((e) => e.seq),
          `from ${from} ${JSON.stringify(filter)} by ${limit}`,
        ).toEqual(want.map((e) => e.seq))
        expect(cursor).toBe(feed.latest)
      }
    } finally {
      feed.leave()
    }
  })

  it('wakes waiting streams when new events are read, and stops reading when the last stream leaves', async () => {
    let reads = 0
    const feed = new EventFeed(h.database.db, h.kv, { pollMs: 60_000, onRead: () => reads++ })
    await feed.join()
    const before = feed.latest
    const woken = feed.changed(before, 10_000)
    await h.pendingTask() // the write publishes on the bus: the feed reads at once
    await woken
    expect(feed.latest).toBeGreaterThan(before)
    feed.leave()
    const after = feed.latest
    const readsBefore = reads
    // A feed still listening reads the next write at once: once another one has, this one
    // must not have read anything.
    const control = new EventFeed(h.database.db, h.kv, { pollMs: 60_000 })
    await control.join()
    try {
      const seen = control.changed(control.latest, 10_000)
      await h.pendingTask()
      await seen
      expect(control.latest).toBeGreaterThan(after)
    } finally {
      control.leave()
    }
    expect(feed.latest).toBe(after) // nobody listens: nothing was read
    expect(reads).toBe(readsBefore)
  })

  it('does not make a stream wait for what the feed read while the stream was busy', async () => {
    const feed = new EventFeed(h.database.db, h.kv, { pollMs: 60_000 })
    await feed.join()
    try {
      const cursor = feed.latest
      const woken = feed.changed(cursor, 10_000)
      await h.pendingTask()
      await woken
      // The stream was "writing" when that read finished; asking now answers at once.
      const t0 = performance.now()
      await feed.changed(cursor, 10_000)
      expect(performance.now() - t0).toBeLessThan(1_000)
    } finally {
      feed.leave()
    }
  })
})
