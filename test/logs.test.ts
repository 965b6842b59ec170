import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Database } from '../src/db/client'
import { createHarness, type Harness } from './harness'
import { until } from './until'

/**
 * Task logs on the real app and database (PGlite, or Postgres in CI): the agent's writes,
 * fenced by attempt and de-duplicated by seq; limits; the oldest middle dropped past the
 * per-attempt limit; JSON pages, text and the live follow; retention.
 */
let h: Harness
const LIMIT = 64 * 1024

beforeAll(async () => {
  h = await createHarness({ TASK_LOG_MAX_BYTES_PER_ATTEMPT: String(LIMIT), TASK_LOG_MAX_CHUNKS_PER_REQUEST: '50' })
})
afterAll(async () => h.close())

/** An agent holding a running task. */
async function runningTask() {
  const agent = await h.agent()
  const task = await h.assignedTask(agent.id)
  expect((await h.report(task.id, agent.token, { status: 'running', attempt: task.attempt })).status).toBe(200)
  return { agent, task }
}

const write = (taskId: string, token: string, body: unknown) =>
  h.call('POST', `/api/v1/tasks/${taskId}/logs`, { token, body })

const chunk = (seq: number, data: string, stream = 'stdout') => ({ seq, stream, data })

describe('POST /tasks/{id}/logs', () => {
  it('stores the holder’s chunks once each, in seq order, and refuses everyone else', async () => {
    const { agent, task } = await runningTask()
    const first = await write(task.id, agent.token, {
      attempt: task.attempt,
      chunks: [chunk(1, 'world\n'), chunk(0, 'hello '), chunk(2, 'oops\n', 'stderr')],
    })
    expect(first).toMatchObject({ status: 202, body: { stored: 3, skipped: 0 } })
    // A resend (and a duplicate inside one request) is skipped, not doubled.
    const again = await write(task.id, agent.token, {
      attempt: task.attempt,
      chunks: [chunk(2, 'oops\n', 'stderr'), chunk(3, 'done\n'), chunk(3, 'done\n')],
    })
    expect(again).toMatchObject({ status: 202, body: { stored: 1, skipped: 2 } })
    const page = await h.call('GET', `/api/v1/tasks/${task.id}/logs`, { token: await h.token('viewer') })
    expect(page.status).toBe(200)
    expect(page.body).toMatchObject({ taskId: task.id, attempt: task.attempt, nextAfter: 3, dropped: null, live: true })
    expect(
      page.body.items.map((c: { seq: number; stream: string; data: string }) => [c.seq, c.stream, c.data]),
    ).toEqual([
      [0, 'stdout', 'hello '],
      [1, 'stdout', 'world\n'],
      [2, 'stderr', 'oops\n'],
      [3, 'stdout', 'done\n'],
    ])
    const text = await h.call('GET', `/api/v1/tasks/${task.id}/logs`, { headers: { accept: 'text/plain' } })
    expect(text.body).toBe('hello world\noops\ndone\n')
    const after = await h.call('GET', `/api/v1/tasks/${task.id}/logs?after=1&limit=1`)
    expect(after.body.items.map((c: { seq: number }) => c.seq)).toEqual([2])

    // Another attempt, another agent, a non-agent: refused, nothing stored.
    expect(await write(task.id, agent.token, { attempt: task.attempt + 1, chunks: [chunk(9, 'x')] })).toMatchObject({
      status: 409,
      body: { code: 'stale_attempt', attempt: task.attempt },
    })
    const other = await h.agent()
    expect((await write(task.id, other.token, { attempt: task.attempt, chunks: [chunk(9, 'x')] })).body.code).toBe(
      'stale_attempt',
    )
    expect((await write(task.id, await h.token('admin'), { attempt: 1, chunks: [chunk(9, 'x')] })).status).toBe(403)
    const missing = '00000000-0000-4000-8000-000000000000'
    expect((await write(missing, agent.token, { attempt: 1, chunks: [chunk(9, 'x')] })).status).toBe(404)
    expect((await h.call('GET', `/api/v1/tasks/${missing}/logs`)).status).toBe(404)
    const final = await h.call('GET', `/api/v1/tasks/${task.id}/logs`)
    expect(final.body.items).toHaveLength(4)
  })

  it('validates chunks at the edge: count, size, stream, seq; NUL stored as U+FFFD', async () => {
    const { agent, task } = await runningTask()
    const many = Array.from({ length: 51 }, (_, i) => chunk(i, 'x'))
    const tooMany = await write(task.id, agent.token, { attempt: task.attempt, chunks: many })
    expect(tooMany.status).toBe(422)
    expect(tooMany.body.errors[0].message).toContain('TASK_LOG_MAX_CHUNKS_PER_REQUEST')
    const big = await write(task.id, agent.token, { attempt: task.attempt, chunks: [chunk(0, 'é'.repeat(40_000))] })
    expect(big.status).toBe(422) // 80,000 bytes of UTF-8, over the 64 KiB chunk limit
    expect(big.body.errors[0]).toMatchObject({ path: 'body.chunks.0.data' })
    for (const bad of [
      { attempt: task.attempt, chunks: [{ seq: -1, stream: 'stdout', data: 'x' }] },
      { attempt: task.attempt, chunks: [{ seq: 0, stream: 'video', data: 'x' }] },
      { attempt: task.attempt, chunks: [] },
      { attempt: task.attempt, chunks: [{ seq: 0, stream: 'stdout', data: 'x', extra: 1 }] },
    ]) {
      expect((await write(task.id, agent.token, bad)).status, JSON.stringify(bad)).toBe(422)
    }
    expect((await h.call('GET', `/api/v1/tasks/${task.id}/logs`)).body.items).toEqual([])
    await write(task.id, agent.token, { attempt: task.attempt, chunks: [chunk(0, 'a\u0000b')] })
    expect((await h.call('GET', `/api/v1/tasks/${task.id}/logs`)).body.items[0].data).toBe('a\uFFFDb')
  })

  it('keeps an attempt under its limit by dropping the oldest middle: the first and the latest lines stay', async () => {
    const { agent, task } = await runningTask()
    const line = (i: number) => `${String(i).padStart(4, '0')} ${'x'.repeat(4090)}\n` // 4,096 bytes
    for (let start = 0; start < 40; start += 10) {
      const chunks = Array.from({ length: 10 }, (_, k) => chunk(start + k, line(start + k)))
      expect((await write(task.id, agent.token, { attempt: task.attempt, chunks })).status).toBe(202)
    }
    const page = (await h.call('GET', `/api/v1/tasks/${task.id}/logs?limit=1000`)).body
    const kept = page.items.filter((c: { stream: string }) => c.stream !== 'system')
    const bytes = kept.reduce((n: number, c: { data: string }) => n + c.data.length, 0)
    expect(bytes).toBeLessThanOrEqual(LIMIT)
    expect(kept[0].data.startsWith('0000 ')).toBe(true) // the first line
    expect(kept.at(-1).data.startsWith('0039 ')).toBe(true) // the latest
    expect(page.dropped.bytes).toBe(40 * 4096 - bytes)
    // One system chunk stands where the middle was, saying how much.
    const marker = page.items.findIndex((c: { stream: string }) => c.stream === 'system')
    expect(page.items[marker].data).toContain(`${page.dropped.bytes} bytes`)
    expect(page.items[marker - 1].seq).toBeLessThan(page.items[marker].seq)
    expect(page.items[marker + 1].seq).toBeGreaterThan(page.items[marker].seq)
    // A resend of a dropped chunk does not come back.
    const droppedSeq = page.items[marker].seq
    expect(
      (await write(task.id, agent.token, { attempt: task.attempt, chunks: [chunk(droppedSeq, line(droppedSeq))] }))
        .body,
    ).toMatchObject({ stored: 0, skipped: 1 })
    // The text has the same shape.
    const text = (await h.call('GET', `/api/v1/tasks/${task.id}/logs`, { headers: { accept: 'text/plain' } })).body
    expect(text.startsWith('0000 ')).toBe(true)
    expect(text).toContain('bytes of output')
    expect(text.trimEnd().endsWith('x')).toBe(true)
  })
})

describe('following a log', () => {
  it('streams what is stored, then each write as it lands, resumes from Last-Event-ID, and ends with the attempt', async () => {
    const { agent, task } = await runningTask()
    await write(task.id, agent.token, { attempt: task.attempt, chunks: [chunk(0, 'one\n')] })
    const res = await h.app.request(`/api/v1/tasks/${task.id}/logs`, {
      headers: { authorization: `Bearer ${await h.token('viewer')}`, accept: 'text/event-stream' },
    })
    expect(res.status).toBe(200)
    const reader = (res.body as ReadableStream<Uint8Array>).getReader()
    const decoder = new TextDecoder()
    let text = ''
    const readUntil = async (pattern: RegExp) => {
      const end = Date.now() + 10_000
      while (!pattern.test(text)) {
        if (Date.now() > end) throw new Error(`no ${pattern} in ${JSON.stringify(text)}`)
        const { value, done } = await reader.read()
        if (done) break
        text += decoder.decode(value, { stream: true })
      }
      return text
    }
    await readUntil(/data: \{"seq":0/)
    await write(task.id, agent.token, { attempt: task.attempt, chunks: [chunk(1, 'two\n', 'stderr')] })
    await readUntil(/event: stderr\ndata: \{"seq":1,"stream":"stderr","data":"two\\n"[^\n]*\nid: 1\n/)
    expect((await h.report(task.id, agent.token, { status: 'completed', attempt: task.attempt })).status).toBe(200)
    await readUntil(/event: end/)
    expect((await reader.read()).done).toBe(true)

    // Resumed after seq 0: only what came after; the attempt is over, so it ends at once.
    const resumed = await h.app.request(`/api/v1/tasks/${task.id}/logs`, {
      headers: {
        authorization: `Bearer ${await h.token('viewer')}`,
        accept: 'text/event-stream',
        'last-event-id': '0',
      },
    })
    const all = await resumed.text()
    expect(all).not.toContain('"seq":0')
    expect(all).toContain('"seq":1')
    expect(all).toContain('event: end')
  })
})

type Sse = { event: string; id?: string; data: string }

/** A follower of a task's log over the app (no network), collecting what it is sent. */
function follower(harness: Harness, taskId: string, token: string, lastEventId?: string) {
  const got: Sse[] = []
  let ended = false
  let cancel: () => Promise<void> = async () => {}
  const done = (async () => {
    const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: 'text/event-stream' }
    if (lastEventId !== undefined) headers['last-event-id'] = lastEventId
    const res = await harness.app.request(`/api/v1/tasks/${taskId}/logs`, { headers })
    expect(res.status).toBe(200)
    const reader = (res.body as ReadableStream<Uint8Array>).getReader()
    cancel = () => reader.cancel()
    const decoder = new TextDecoder()
    let buf = ''
    for (;;) {
      const { value, done: over } = await reader.read()
      if (over) break
      buf += decoder.decode(value, { stream: true })
      for (let end = buf.indexOf('\n\n'); end >= 0; end = buf.indexOf('\n\n')) {
        const block = buf.slice(0, end)
        buf = buf.slice(end + 2)
        const field = (name: string) => new RegExp(`^${name}: ?(.*)$`, 'm').exec(block)?.[1]
        const data = field('data')
        if (data !== undefined) got.push({ event: field('event') ?? 'message', id: field('id'), data })
      }
    }
    ended = true
  })()
  return {
    got,
    seqs: () => got.filter((e) => e.event !== 'end').map((e) => Number(e.id)),
    get ended() {
      return ended
    },
    done,
    close: async () => {
      await cancel()
      await done
    },
  }
}

/**
 * Statements the database runs: node-postgres counts its own; on PGlite every statement
 * outside a transaction goes through the client's query(), which is what followers and
 * log readers run.
 */
function statementCounter(database: Database): () => number {
  const own = database.statements
  if (own) return () => own()
  const client = (database.db as unknown as { $client: { query: (...args: unknown[]) => unknown } }).$client
  const query = client.query.bind(client)
  let n = 0
  client.query = (...args: unknown[]) => {
    n++
    return query(...args)
  }
  return () => n
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('followers share one reader per attempt', () => {
  it('N followers of one idle task cost the database what one does; each gets every chunk once, in order, and the end', async () => {
    const fan = await createHarness({ EVENT_STREAMS_PER_PRINCIPAL: '1000' }, h.database)
    const statements = statementCounter(fan.database)
    const reads = async () => {
      const text: string = (await fan.call('GET', '/metrics', { token: null })).body
      return Number(/^agenticcp_log_feed_reads_total (\d+)/m.exec(text)?.[1] ?? 0)
    }
    /** Statements and reader reads over 2.5 s of nothing happening: one or two 2 s polls. */
    const idle = async () => {
      const r0 = await reads()
      const s0 = statements()
      await sleep(2500)
      const s1 = statements()
      return { statements: s1 - s0, reads: (await reads()) - r0 }
    }
    const open: ReturnType<typeof follower>[] = []
    try {
      const agent = await fan.agent()
      const task = await fan.assignedTask(agent.id)
      expect((await fan.report(task.id, agent.token, { status: 'running', attempt: task.attempt })).status).toBe(200)
      const send = async (...seqs: number[]) => {
        const chunks = seqs.map((seq) => chunk(seq, `line ${seq}\n`, seq % 3 === 0 ? 'stderr' : 'stdout'))
        const res = await fan.call('POST', `/api/v1/tasks/${task.id}/logs`, {
          token: agent.token,
          body: { attempt: task.attempt, chunks },
        })
        expect(res.status).toBe(202)
      }
      await send(0, 1, 2)
      const viewer = await fan.token('viewer')

      open.push(follower(fan, task.id, viewer))
      await until('the first follower has the stored chunks', () => open[0]?.seqs().length === 3)
      const one = await idle()

      const N = 100
      for (let i = 0; i < N; i++) open.push(follower(fan, task.id, viewer))
      await until('every follower has the stored chunks', () => open.every((f) => f.seqs().length === 3))
      const many = await idle()
      // One reader polls for all of them: 3 statements a poll (the task's state, the chunks
      // and the dropped range), none per follower. (Each follower polled on its own before:
      // 101 × 3 statements every 2 s here.)
      expect(one.statements).toBeGreaterThan(0)
      expect(many.statements, JSON.stringify({ one, many })).toBeLessThanOrEqual(one.statements + 3)
      expect(many.reads).toBeLessThanOrEqual(one.reads + 1)

      // Followers joining late, resumed (Last-Event-ID) or from the start, while chunks land.
      for (let i = 0; i < 5; i++) open.push(follower(fan, task.id, viewer, '1'))
      await send(3)
      await send(4, 5, 6)
      for (let i = 0; i < 5; i++) open.push(follower(fan, task.id, viewer))
      await send(7, 8)
      await send(9, 10, 11, 12)
      expect((await fan.report(task.id, agent.token, { status: 'completed', attempt: task.attempt })).status).toBe(200)
      await Promise.all(open.map((f) => f.done))
      const all = Array.from({ length: 13 }, (_, i) => i)
      open.forEach((f, i) => {
        const resumed = i > N && i <= N + 5
        expect(f.seqs(), `follower ${i}`).toEqual(resumed ? all.slice(2) : all)
        expect(f.got.at(-1), `follower ${i}`).toEqual({
          event: 'end',
          id: undefined,
          data: JSON.stringify({ attempt: task.attempt, status: 'completed' }),
        })
        const first = f.got.find((e) => e.id === '3')
        expect(JSON.parse(first?.data ?? '{}')).toMatchObject({ seq: 3, stream: 'stderr', data: 'line 3\n' })
      })
    } finally {
      await Promise.all(open.map((f) => (f.ended ? undefined : f.close().catch(() => {}))))
      await fan.kv.close()
    }
  }, 60_000)
})

describe('cursors', () => {
  it('refuses a seq, attempt or Last-Event-ID past the int4 column with 422, before any stream starts', async () => {
    const { agent, task } = await runningTask()
    await write(task.id, agent.token, { attempt: task.attempt, chunks: [chunk(0, 'one\n')] })
    const viewer = await h.token('viewer')
    const follow = (headers: Record<string, string>, query = '') =>
      h.app.request(`/api/v1/tasks/${task.id}/logs${query}`, {
        headers: { authorization: `Bearer ${viewer}`, accept: 'text/event-stream', ...headers },
      })
    // 2147483648 up to 9999999999 matched the old pattern (\d{1,10}) and overflowed in Postgres
    // after the stream had answered 200.
    for (const id of ['2147483648', '9999999999', '99999999999', '1e3', '-1', '']) {
      const res = await follow({ 'last-event-id': id })
      expect(res.status, id).toBe(422)
      expect(res.headers.get('content-type')).toContain('application/problem+json')
      const body = (await res.json()) as { code: string; errors: { path: string }[] }
      expect(body.code).toBe('validation_failed')
      expect(body.errors.map((e) => e.path)).toEqual(['header.last-event-id'])
    }
    for (const query of ['?after=2147483648', '?attempt=2147483648', '?after=-2']) {
      expect((await follow({}, query)).status, query).toBe(422)
      const page = await h.call('GET', `/api/v1/tasks/${task.id}/logs${query}`)
      expect(page.status, query).toBe(422)
      expect(page.body.errors[0].path).toMatch(/^query\.(after|attempt)$/)
    }
    // A write naming an attempt no column can hold is refused the same way.
    const big = await write(task.id, agent.token, { attempt: 2_147_483_648, chunks: [chunk(1, 'x')] })
    expect(big.status).toBe(422)
    expect(big.body.errors[0].path).toBe('body.attempt')
    // The largest seq is a cursor like any other: nothing after it, the stream follows.
    expect((await h.call('GET', `/api/v1/tasks/${task.id}/logs?after=2147483647`)).body.items).toEqual([])
    const edge = await follow({ 'last-event-id': '2147483647' })
    expect(edge.status).toBe(200)
    await edge.body?.cancel()
    expect((await h.report(task.id, agent.token, { status: 'completed', attempt: task.attempt })).status).toBe(200)
    const ended = await (await follow({ 'last-event-id': '2147483647' })).text()
    expect(ended).toContain('event: end')
    expect(ended).not.toContain('"seq":0')
  })
})

describe('retention', () => {
  it('the sweep deletes chunks older than LOG_RETENTION_DAYS', async () => {
    const { agent, task } = await runningTask()
    await write(task.id, agent.token, { attempt: task.attempt, chunks: [chunk(0, 'old\n')] })
    h.clock.advance(31 * 86_400_000)
    const sweep = await h.call('POST', '/api/v1/scheduler/sweep')
    expect(sweep.status).toBe(200)
    expect(sweep.body.logsPruned).toBeGreaterThanOrEqual(1)
    expect((await h.call('GET', `/api/v1/tasks/${task.id}/logs`)).body.items).toEqual([])
  })
})
