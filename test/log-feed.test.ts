import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { LocalNotifier } from '../src/lib/notifier'
import { LogFeeds, type LogReader } from '../src/services/log-feed'
import { logKey } from '../src/services/logs'
import { createHarness, type Harness } from './harness'
import { until } from './until'

let h: Harness
beforeAll(async () => {
  h = await createHarness()
})
afterAll(async () => {
  await h.close()
})

/** An agent holding a running task, and a way to write its log. */
async function runningTask() {
  const agent = await h.agent()
  const task = await h.assignedTask(agent.id)
  expect((await h.report(task.id, agent.token, { status: 'running', attempt: task.attempt })).status).toBe(200)
  const write = async (...seqs: number[]) => {
    const chunks = seqs.map((seq) => ({ seq, stream: 'stdout', data: `line ${seq}\n` }))
    const res = await h.call('POST', `/api/v1/tasks/${task.id}/logs`, {
      token: agent.token,
      body: { attempt: task.attempt, chunks },
    })
    expect(res.status).toBe(202)
  }
  return { agent, task, write }
}

/** Reads a reader from `cursor` to where it is, in pages of `limit`, as a follower would. */
async function drain(reader: LogReader, cursor: number, limit: number) {
  const seqs: number[] = []
  for (let guard = 0; guard < 1000; guard++) {
    const page = await reader.read(cursor, limit)
    seqs.push(...page.items.map((c) => c.seq))
    expect(page.cursor).toBeGreaterThanOrEqual(cursor) // never goes back
    if (page.items.length === 0 && page.cursor === cursor) break
    cursor = page.cursor
  }
  return seqs
}

describe('the shared log reader', () => {
  it('gives a follower every chunk once, in order, whether it starts old (database) or new (memory)', async () => {
    const { task, write } = await runningTask()
    await write(0, 1, 2, 3)
    const feeds = new LogFeeds(h.database.db, undefined, { pollMs: 20, keep: 3 })
    const reader = await feeds.join(task.id, task.attempt)
    try {
      expect(reader.latest).toBe(3) // it starts at the end of the log
      // More than it keeps, so older positions must come from the database.
      await write(4, 5, 6, 7, 8)
      await write(9, 10)
      await until('the reader has read every chunk', () => reader.latest === 10)
      const all = Array.from({ length: 11 }, (_, i) => i)
      for (const [from, limit] of [
        [-1, 2],
        [-1, 100],
        [2, 3],
        [3, 1],
        [7, 2],
        [9, 5],
      ] as const) {
        expect(await drain(reader, from, limit), `from ${from} by ${limit}`).toEqual(all.filter((s) => s > from))
      }
      expect(reader.ended).toBeUndefined()
    } finally {
      reader.leave()
    }
  })

  it('is one reader per attempt, ends its followers when the attempt ends, and stops when the last one leaves', async () => {
    const { agent, task, write } = await runningTask()
    const notifier = new LocalNotifier()
    let reads = 0
    // No poll to speak of: it reads only when woken, so every read below is one the test caused.
    const feeds = new LogFeeds(h.database.db, notifier, { pollMs: 60_000, onRead: () => reads++ })
    const a = await feeds.join(task.id, task.attempt)
    const b = await feeds.join(task.id.toUpperCase(), task.attempt)
    expect(b).toBe(a)
    expect(feeds.size).toBe(1)
    const woken = a.changed(a.latest, 10_000)
    await write(0)
    notifier.notify([logKey(task.id)])
    await woken
    expect(a.latest).toBe(0)
    expect(reads).toBe(1)

    // The attempt ends: the next read says so, and every follower is woken for it.
    const told = b.changed(b.latest, 10_000)
    expect((await h.report(task.id, agent.token, { status: 'completed', attempt: task.attempt })).status).toBe(200)
    notifier.notify([logKey(task.id)])
    await told
    expect(b.ended).toEqual({ attempt: task.attempt, status: 'completed' })

    a.leave()
    expect(feeds.size).toBe(1)
    b.leave()
    expect(feeds.size).toBe(0)
    // Nobody follows: a wake-up reads nothing.
    const before = reads
    notifier.notify([logKey(task.id)])
    await new Promise((r) => setTimeout(r, 50))
    expect(reads).toBe(before)

    // Joining an attempt that is over: ended at once, with what was stored.
    const late = await feeds.join(task.id, task.attempt)
    expect(late).not.toBe(a)
    expect(late.ended).toEqual({ attempt: task.attempt, status: 'completed' })
    expect(await drain(late, -1, 10)).toEqual([0])
    late.leave()
    expect(feeds.size).toBe(0)
    notifier.close()
  })

  it('ends followers of an attempt that is over at once, and tells them when the task is gone', async () => {
    const t = await h.pendingTask()
    const feeds = new LogFeeds(h.database.db, undefined, { pollMs: 60_000 })
    const reader = await feeds.join(t.id, 0)
    expect(reader.ended).toEqual({ attempt: 0, status: 'pending' })
    reader.leave()
    const missing = await feeds.join('00000000-0000-4000-8000-000000000000', 0)
    expect(missing.gone).toBe(true)
    missing.leave()
    expect(feeds.size).toBe(0)
  })
})
