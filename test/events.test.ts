import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/client'
import { createHarness, type Harness, onPostgres } from './harness'
import { until } from './until'

let h: Harness
beforeAll(async () => {
  h = await createHarness({ EVENT_RETENTION_DAYS: '7' })
})
afterAll(async () => {
  await h.close()
})

type Ev = { id: number; type: string; taskId: string | null; agentId: string | null; data: Record<string, unknown> }

/** A Server-Sent Events client over the app (no network), collecting events until stopped. */
function subscribe(path: string, lastEventId?: number, on: { harness?: Harness; token?: string } = {}) {
  const harness = on.harness ?? h
  const controller = new AbortController()
  const got: Ev[] = []
  const comments: string[] = []
  let waiters: (() => void)[] = []
  // Hanging up: cancelling the body is what tells the server's stream the client left.
  let cancel: () => Promise<void> = async () => {}
  const done = (async () => {
    const headers: Record<string, string> = {
      accept: 'text/event-stream',
      authorization: `Bearer ${on.token ?? (await harness.token('viewer'))}`,
    }
    if (lastEventId !== undefined) headers['last-event-id'] = String(lastEventId)
    const res = await harness.app.request(path, { headers, signal: controller.signal })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toContain('text/event-stream')
    const reader = (res.body as ReadableStream<Uint8Array>).getReader()
    cancel = () => reader.cancel()
    const decoder = new TextDecoder()
    let buf = ''
    try {
      for (;;) {
        const { value, done } = await reader.read()
        if (done) break
        buf += decoder.decode(value, { stream: true })
        let end = buf.indexOf('\n\n')
        while (end >= 0) {
          const block = buf.slice(0, end)
          buf = buf.slice(end + 2)
          const data = block
            .split('\n')
            .filter((l) => l.startsWith('data:'))
            .map((l) => l.slice(5).trim())
            .join('\n')
          const id = /^id: ?(\d+)$/m.exec(block)?.[1]
          if (data) {
            const ev = JSON.parse(data) as Ev
            expect(String(ev.id)).toBe(id)
            got.push(ev)
          } else {
            for (const l of block.split('\n')) if (l.startsWith(':')) comments.push(l)
          }
          for (const w of waiters) w()
          waiters = []
          end = buf.indexOf('\n\n')
        }
      }
    } catch {
      // aborted
    }
  })()
  const until = async (pred: (evs: Ev[]) => boolean, ms = 10_000) => {
    const end = Date.now() + ms
    while (!pred(got)) {
      if (Date.now() > end) throw new Error(`stream did not deliver in time; got ${got.map((e) => e.type).join(',')}`)
      await new Promise<void>((r) => {
        waiters.push(r)
        setTimeout(r, 100)
      })
    }
  }
  return {
    got,
    comments,
    until,
    close: async () => {
      controller.abort()
      await cancel()
      await done
    },
  }
}

describe('GET /api/v1/events (JSON)', () => {
  it('pages through the log in id order, with type prefix, agent and task filters', async () => {
    const start = (await h.call('GET', '/api/v1/events?limit=1000&after=0')).body
    let after = start.nextAfter
    while (true) {
      const more = (await h.call('GET', `/api/v1/events?limit=1000&after=${after}`)).body
      if (more.items.length === 0) break
      after = more.nextAfter
    }
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    await h.report(t.id, a.token, { status: 'running', attempt: 1 })

    const all = (await h.call('GET', `/api/v1/events?after=${after}&limit=1000`)).body
    const ids = all.items.map((e: Ev) => e.id)
    expect(ids).toEqual([...ids].sort((x: number, y: number) => x - y))
    expect(new Set(ids).size).toBe(ids.length)
    expect(all.items.map((e: Ev) => e.type)).toEqual([
      'agent.registered',
      'agent.status_changed',
      'task.created',
      'task.assigned',
      'task.started',
    ])
    expect(all.nextAfter).toBe(ids.at(-1))

    const onlyTasks = (await h.call('GET', `/api/v1/events?after=${after}&type=task.`)).body.items
    expect(onlyTasks.map((e: Ev) => e.type)).toEqual(['task.created', 'task.assigned', 'task.started'])
    const started = (await h.call('GET', `/api/v1/events?after=${after}&type=task.started`)).body.items
    expect(started).toHaveLength(1)
    expect(started[0]).toMatchObject({
      taskId: t.id,
      agentId: a.id,
      data: { from: 'assigned', to: 'running', attempt: 1 },
    })
    expect((await h.call('GET', `/api/v1/events?after=${after}&agentId=${a.id}`)).body.items).toHaveLength(4)
    expect((await h.call('GET', `/api/v1/events?after=${after}&taskId=${t.id}`)).body.items).toHaveLength(3)

    const paged = (await h.call('GET', `/api/v1/events?after=${after}&limit=2`)).body
    expect(paged.items).toHaveLength(2)
    expect(paged.nextAfter).toBe(ids[1])
  })

  it('refuses bad filters with 422 and agent tokens with 403', async () => {
    expect((await h.call('GET', '/api/v1/events?type=Task%25')).status).toBe(422)
    expect((await h.call('GET', '/api/v1/events?after=-1')).status).toBe(422)
    expect((await h.call('GET', '/api/v1/events?limit=1001')).status).toBe(422)
    const a = await h.agent()
    expect((await h.call('GET', '/api/v1/events', { token: a.token })).status).toBe(403)
  })
})

describe('histories', () => {
  it('GET /tasks/{id}/events and /agents/{id}/events show one thing’s story, right after the write', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    await h.report(t.id, a.token, { status: 'running', attempt: 1 })
    await h.report(t.id, a.token, { status: 'completed', attempt: 1 })
    const task = await h.call('GET', `/api/v1/tasks/${t.id}/events`)
    expect(task.status).toBe(200)
    expect(task.body.items.map((e: Ev) => e.type)).toEqual([
      'task.created',
      'task.assigned',
      'task.started',
      'task.completed',
    ])
    const agent = await h.call('GET', `/api/v1/agents/${a.id}/events`, { token: a.token })
    expect(agent.body.items.map((e: Ev) => e.type)).toContain('agent.registered')
    expect((await h.call('GET', '/api/v1/tasks/0192f3c5-6d7e-7a1b-8c9d-0e1f2a3b4c5d/events')).status).toBe(404)
    const other = await h.agent()
    expect((await h.call('GET', `/api/v1/agents/${a.id}/events`, { token: other.token })).status).toBe(403)
  })
})

describe('GET /api/v1/events (Server-Sent Events)', () => {
  it('streams new events live, and a client that reconnects with Last-Event-ID gets every missed one exactly once', async () => {
    const first = subscribe('/api/v1/events?type=task.')
    await first.until(() => first.comments.includes(': connected'))
    const a = await h.agent({ maxConcurrentTasks: 5 })
    const t1 = await h.task()
    await first.until((evs) => evs.some((e) => e.taskId === t1.id && e.type === 'task.assigned'))
    await first.close()
    const lastSeen = first.got.at(-1)?.id as number

    // While disconnected: more changes.
    await h.report(t1.id, a.token, { status: 'running', attempt: 1 })
    const t2 = await h.task()
    await h.report(t1.id, a.token, { status: 'completed', attempt: 1 })

    const second = subscribe('/api/v1/events?type=task.', lastSeen)
    await second.until((evs) => evs.some((e) => e.taskId === t1.id && e.type === 'task.completed'))
    await second.close()

    const ids = [...first.got, ...second.got].map((e) => e.id)
    expect(new Set(ids).size).toBe(ids.length)
    expect(ids).toEqual([...ids].sort((x, y) => x - y))
    expect(second.got.map((e) => `${e.type}:${e.taskId === t1.id ? 't1' : 't2'}`)).toEqual([
      'task.started:t1',
      'task.created:t2',
      'task.assigned:t2',
      'task.completed:t1',
    ])
    // The reference: the JSON log over the same range holds exactly what the streams delivered.
    const log = (await h.call('GET', `/api/v1/events?type=task.&after=${(first.got[0]?.id ?? 1) - 1}&limit=1000`)).body
      .items
    expect(log.map((e: Ev) => e.id).filter((id: number) => id <= (ids.at(-1) ?? 0))).toEqual(ids)
    expect(t2.status).toBe('assigned')
  })

  it('a run that started and ended in one heartbeat is one event in the stream and the log: its end, started: true', async () => {
    const a = await h.agent()
    const t = await h.assignedTask(a.id)
    const stream = subscribe(`/api/v1/events?taskId=${t.id}&type=task.`, 0)
    await stream.until((evs) => evs.some((e) => e.type === 'task.assigned'))
    const error = { code: 'exit_3', message: 'no such file' }
    const hb = await h.call('POST', '/api/v1/agents/heartbeat', {
      token: a.token,
      body: {
        agentId: a.id,
        reports: [
          { taskId: t.id, attempt: 1, status: 'running' },
          { taskId: t.id, attempt: 1, status: 'failed', error },
        ],
      },
    })
    expect(hb.body.reports).toEqual([
      { taskId: t.id, ok: true },
      { taskId: t.id, ok: true },
    ])
    // The statement's events are numbered together, in order: a start would come before the end.
    await stream.until((evs) => evs.some((e) => e.type === 'task.failed'))
    await stream.close()
    const ended = { type: 'task.failed', taskId: t.id, agentId: a.id }
    const data = { from: 'assigned', to: 'failed', attempt: 1, started: true, error }
    expect(stream.got.map((e) => e.type)).toEqual(['task.created', 'task.assigned', 'task.failed'])
    expect(stream.got[2]).toMatchObject({ ...ended, data })
    const log = (await h.call('GET', `/api/v1/events?taskId=${t.id}&after=0`)).body.items
    expect(log.map((e: Ev) => [e.id, e.type])).toEqual(stream.got.map((e) => [e.id, e.type]))
    expect(log[2]).toMatchObject({ ...ended, data })
    expect((await h.call('GET', `/api/v1/events?taskId=${t.id}&type=task.started&after=0`)).body.items).toEqual([])
  })

  it('?after= resumes like Last-Event-ID, and a stream without a cursor starts at the newest event', async () => {
    const before = (await h.call('GET', '/api/v1/events?after=0&limit=1000')).body
    const t = await h.pendingTask()
    const resumed = subscribe(`/api/v1/events?taskId=${t.id}&after=0`)
    await resumed.until((evs) => evs.length === 1)
    expect(resumed.got[0]).toMatchObject({ type: 'task.created', taskId: t.id })
    await resumed.close()
    const tail = subscribe('/api/v1/events')
    await tail.until(() => tail.comments.includes(': connected'))
    await h.call('POST', `/api/v1/tasks/${t.id}/cancel`)
    await tail.until((evs) => evs.some((e) => e.type === 'task.cancelled'))
    expect(tail.got.every((e) => e.id > (before.items.at(-1)?.id ?? 0))).toBe(true)
    expect(tail.got.some((e) => e.type === 'task.created' && e.taskId === t.id)).toBe(false)
    await tail.close()
  })

  it.runIf(onPostgres())(
    'delivers every event exactly once, in order, while writers race and the client keeps reconnecting (Postgres)',
    async () => {
      const a = await h.agent({ maxConcurrentTasks: 100 })
      await h.call('GET', '/api/v1/events?limit=1') // sequences what committed so far
      const [mark] = await rowsOf<{ m: number | null }>(h.database.db, sql`SELECT max(seq)::int AS m FROM events`)
      let cursor = mark?.m ?? 0
      const seen: number[] = []
      const writers = (async () => {
        for (let round = 0; round < 6; round++) {
          await Promise.all(Array.from({ length: 15 }, () => h.task()))
        }
      })()
      // Reconnect three times mid-stream while the writers run.
      for (let i = 0; i < 3; i++) {
        const s = subscribe(`/api/v1/events?agentId=${a.id}`, cursor)
        await s.until((evs) => evs.length >= 5)
        await s.close()
        seen.push(...s.got.map((e) => e.id))
        cursor = s.got.at(-1)?.id ?? cursor
      }
      await writers
      // A create places at once unless a concurrent placement holds the agent (SKIP LOCKED):
      // what it left pending goes on the agent's next heartbeat, as a runner's would.
      const hb = await h.call('POST', '/api/v1/agents/heartbeat', { token: a.token, body: { agentId: a.id } })
      expect(hb.status).toBe(200)
      const last = subscribe(`/api/v1/events?agentId=${a.id}`, cursor)
      await last.until((evs) => seen.length + evs.length >= 90) // one task.assigned per task
      await last.close()
      seen.push(...last.got.map((e) => e.id))

      expect(new Set(seen).size).toBe(seen.length)
      expect(seen).toEqual([...seen].sort((x, y) => x - y))
      const truth = await rowsOf<{ seq: number }>(
        h.database.db,
        sql`SELECT seq::int AS seq FROM events WHERE agent_id = ${a.id} AND seq > ${mark?.m ?? 0} ORDER BY seq`,
      )
      expect(seen).toEqual(truth.map((r) => r.seq))
    },
    60_000,
  )
})

describe('cursors', () => {
  it('refuses an event id past what an id can be (2^53 − 1) with 422, before any stream starts', async () => {
    const viewer = await h.token('viewer')
    const stream = (path: string, headers: Record<string, string> = {}) =>
      h.app.request(path, { headers: { authorization: `Bearer ${viewer}`, accept: 'text/event-stream', ...headers } })
    for (const id of ['9007199254740992', '999999999999999999', '99999999999999999999', 'x', '-1']) {
      const res = await stream('/api/v1/events', { 'last-event-id': id })
      expect(res.status, id).toBe(422)
      const body = (await res.json()) as { code: string; errors: { path: string }[] }
      expect(body).toMatchObject({ code: 'validation_failed', errors: [{ path: 'header.last-event-id' }] })
    }
    const t = await h.pendingTask()
    for (const path of [
      '/api/v1/events?after=9007199254740992',
      `/api/v1/tasks/${t.id}/events?after=9007199254740992`,
      `/api/v1/agents/00000000-0000-4000-8000-000000000000/events?after=1e300`,
    ]) {
      const res = await h.call('GET', path)
      expect(res.status, path).toBe(422)
      expect(res.body.errors[0].path).toBe('query.after')
    }
    expect((await stream('/api/v1/events?after=9007199254740992')).status).toBe(422)
    // The largest id is a cursor like any other.
    expect((await h.call('GET', '/api/v1/events?after=9007199254740991')).body).toEqual({
      items: [],
      nextAfter: 9007199254740991,
    })
    const edge = await stream('/api/v1/events', { 'last-event-id': '9007199254740991' })
    expect(edge.status).toBe(200)
    await edge.body?.cancel()
  })
})

describe('live streams share one reader and are capped', () => {
  it('every stream of the process is fed by one reader of the log: 25 streams cost what one does', async () => {
    const reads = async () => {
      const text: string = (await h.call('GET', '/metrics', { token: null })).body
      return Number(/^agenticcp_event_feed_reads_total (\d+)/m.exec(text)?.[1] ?? 0)
    }
    const streams = Array.from({ length: 25 }, () => subscribe('/api/v1/events?type=task.'))
    await Promise.all(streams.map((s) => s.until(() => s.comments.includes(': connected'))))
    expect((await h.call('GET', '/metrics', { token: null })).body).toMatch(/^agenticcp_event_streams_open 25$/m)
    const before = await reads()
    for (let i = 0; i < 5; i++) {
      const t = await h.pendingTask()
      await Promise.all(streams.map((s) => s.until((evs) => evs.some((e) => e.taskId === t.id))))
    }
    const used = (await reads()) - before
    // One read per wake-up (a write, or the 2 s poll), shared: never one per stream (125 here).
    expect(used).toBeGreaterThanOrEqual(5)
    expect(used).toBeLessThanOrEqual(15)
    await Promise.all(streams.map((s) => s.close()))
  })

  it('matches ids in filters whatever their case, live as in the log', async () => {
    const t = await h.pendingTask()
    const upper = subscribe(`/api/v1/events?taskId=${t.id.toUpperCase()}&after=0`)
    await upper.until((evs) => evs.some((e) => e.type === 'task.created'))
    await h.call('POST', `/api/v1/tasks/${t.id}/cancel`)
    await upper.until((evs) => evs.some((e) => e.type === 'task.cancelled'))
    expect(upper.got.map((e) => e.type)).toEqual(['task.created', 'task.cancelled'])
    await upper.close()
  })

  it('caps open streams per token subject and in all (429 with Retry-After), and frees a slot when a stream ends', async () => {
    const capped = await createHarness({ EVENT_STREAMS_PER_PRINCIPAL: '2', EVENT_STREAMS_MAX: '3' }, h.database)
    const open = async (token: string) => {
      const controller = new AbortController()
      const res = await capped.app.request('/api/v1/events', {
        headers: { accept: 'text/event-stream', authorization: `Bearer ${token}` },
        signal: controller.signal,
      })
      return { res, close: () => res.body?.cancel().catch(() => {}) }
    }
    const alice = await capped.token('viewer', 'alice')
    const bob = await capped.token('viewer', 'bob')
    const carol = await capped.token('operator', 'carol')
    const a1 = await open(alice)
    const a2 = await open(alice)
    expect([a1.res.status, a2.res.status]).toEqual([200, 200])
    const a3 = await open(alice)
    expect(a3.res.status).toBe(429)
    expect(a3.res.headers.get('retry-after')).toBe('5')
    expect(((await a3.res.json()) as { code: string; detail: string }).detail).toContain('EVENT_STREAMS_PER_PRINCIPAL')
    const b1 = await open(bob)
    expect(b1.res.status).toBe(200)
    const c1 = await open(carol)
    expect(c1.res.status).toBe(429)
    expect(((await c1.res.json()) as { code: string }).code).toBe('too_many_streams')
    // JSON pages are not streams: never capped.
    expect((await capped.call('GET', '/api/v1/events?limit=1', { token: alice })).status).toBe(200)
    await a1.close()
    const c2 = await until('a stream freed for carol', async () => {
      const o = await open(carol)
      return o.res.status === 200 ? o : undefined
    })
    await Promise.all([a2.close(), b1.close(), c2.close()])
    await capped.kv.close()
  })
})

describe('retention', () => {
  it('the sweep deletes events older than EVENT_RETENTION_DAYS', async () => {
    const t = await h.pendingTask()
    const before = (await h.call('GET', `/api/v1/tasks/${t.id}/events`)).body.items
    expect(before).toHaveLength(1)
    h.clock.advance(8 * 86_400_000)
    const newest = (await h.call('GET', '/api/v1/events?after=0&limit=1000')).body.nextAfter
    const s = await h.sweep()
    expect(s.eventsPruned).toBeGreaterThan(0)
    expect((await h.call('GET', `/api/v1/tasks/${t.id}/events`)).body.items).toEqual([])
    const left = (await h.call('GET', '/api/v1/events?after=0&limit=1000')).body.items
    expect(left.every((e: Ev) => e.id > newest)).toBe(true) // only what the sweep itself wrote since
    // Ids never restart: a client resuming after the newest id it saw still gets what comes next.
    const next = await h.pendingTask()
    const resumed = (await h.call('GET', `/api/v1/events?after=${newest}&limit=1000`)).body.items
    expect(resumed.some((e: Ev) => e.type === 'task.created' && e.taskId === next.id)).toBe(true)
  })
})
