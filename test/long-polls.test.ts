import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MemoryKv } from '../src/lib/kv'
import { LongPolls } from '../src/lib/long-polls'
import { type CallResult, createHarness, type Harness } from './harness'
import { until } from './until'

/**
 * One long-polling heartbeat per agent: a newer one ends the older at once with the normal
 * "nothing new" answer, so an agent's concurrent long polls cost what one does.
 */
let h: Harness
beforeAll(async () => {
  h = await createHarness()
})
afterAll(async () => {
  await h.close()
})

const waiting = async () => {
  const text: string = (await h.call('GET', '/metrics', { token: null })).body
  return Number(/^agenticcp_long_polls_waiting (\d+)/m.exec(text)?.[1] ?? -1)
}

/** A long poll, and whether it has answered yet. */
function longPoll(agent: { id: string; token: string }, waitSeconds = 25) {
  const poll = {
    answered: undefined as CallResult | undefined,
    done: h
      .call('POST', '/api/v1/agents/heartbeat', { token: agent.token, body: { agentId: agent.id, waitSeconds } })
      .then((r) => {
        poll.answered = r
        return r
      }),
  }
  return poll
}

/** Resolves with the answer, or fails when it does not come within `ms` (well inside the poll's own wait). */
const within = <T>(p: Promise<T>, ms: number, what: string) =>
  Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what} still waiting`)), ms))])

const noNews = (r: CallResult | undefined) =>
  r?.status === 200 && r.body.assignments.length === 0 && r.body.cancellations.length === 0

describe('one long poll per agent', () => {
  it('a second long poll ends the first at once with an empty answer, and still gets the work when it lands', async () => {
    const agent = await h.agent()
    const first = longPoll(agent)
    await until('the first long poll is waiting', async () => (await waiting()) === 1)
    const second = longPoll(agent)
    const ended = await within(first.done, 10_000, 'the first long poll')
    expect(noNews(ended), JSON.stringify(ended.body)).toBe(true)
    expect(ended.body.agent).toMatchObject({ id: agent.id, status: 'online' })
    expect(second.answered).toBeUndefined()
    expect(await waiting()).toBe(1)

    const task = await h.task() // placed on the agent, which the notifier wakes
    const got = await within(second.done, 10_000, 'the second long poll')
    expect(got.status).toBe(200)
    expect(got.body.assignments.map((t: { id: string }) => t.id)).toEqual([task.id])
    expect(await waiting()).toBe(0)
  })

  it('of N concurrent long polls of one agent, at most one is left waiting', async () => {
    const agent = await h.agent()
    const other = await h.agent() // another agent's long poll is not touched
    const theirs = longPoll(other)
    const N = 20
    const polls = Array.from({ length: N }, () => longPoll(agent))
    await until(`${N - 1} of ${N} answered`, () => polls.filter((p) => p.answered).length === N - 1)
    expect(polls.filter((p) => p.answered).every((p) => noNews(p.answered))).toBe(true)
    expect(await waiting()).toBe(2) // one of this agent's, the other agent's
    expect(theirs.answered).toBeUndefined()

    const last = polls.find((p) => !p.answered) // before the create: it may answer before the create does
    const task = await h.task({ requirements: { agentId: agent.id } })
    const got = await within(last?.done ?? Promise.reject(new Error('none left')), 10_000, 'the last long poll')
    expect(got.body.assignments.map((t: { id: string }) => t.id)).toEqual([task.id])
    expect(theirs.answered).toBeUndefined()
    const done = h.task({ requirements: { agentId: other.id } })
    await within(theirs.done, 10_000, 'the other agent’s long poll')
    await done
    expect(await waiting()).toBe(0)
  })

  it('a plain heartbeat (no waitSeconds) does not end a long poll', async () => {
    const agent = await h.agent()
    const poll = longPoll(agent)
    await until('the long poll is waiting', async () => (await waiting()) === 1)
    const beat = await h.call('POST', '/api/v1/agents/heartbeat', { token: agent.token, body: { agentId: agent.id } })
    expect(beat.status).toBe(200)
    expect(poll.answered).toBeUndefined()
    const task = await h.task({ requirements: { agentId: agent.id } })
    expect((await within(poll.done, 10_000, 'the long poll')).body.assignments[0].id).toBe(task.id)
  })
})

describe('across instances, over one bus', () => {
  it('a newer long poll on another instance ends this one: every instance agrees on the bus order', () => {
    const bus = new MemoryKv() // one bus the two instances share, as Redis pub/sub is
    const a = new LongPolls(bus)
    const b = new LongPolls(bus)
    const onA = a.take('agent-1')
    expect(onA.signal.aborted).toBe(false)
    const onB = b.take('AGENT-1') // ids compare whatever their case
    expect(onA.signal.aborted).toBe(true)
    expect(onB.signal.aborted).toBe(false)
    onA.release()
    expect(b.waiting).toBe(1)
    const again = a.take('agent-1')
    expect(onB.signal.aborted).toBe(true)
    expect(again.signal.aborted).toBe(false)
    // Another agent's poll is left alone; a released place is free.
    const otherAgent = b.take('agent-2')
    expect(again.signal.aborted).toBe(false)
    again.release()
    otherAgent.release()
    onB.release()
    expect([a.waiting, b.waiting]).toEqual([0, 0])
  })

  it('an announcement published before this poll’s own (it reached the bus first) does not end it', () => {
    const handlers: ((m: string) => void)[] = []
    const held: string[] = []
    // A bus that holds messages, to deliver them in the order the test says.
    const bus = {
      publish: async (_: string, m: string) => {
        held.push(m)
      },
      subscribe: (_: string, fn: (m: string) => void) => {
        handlers.push(fn)
        return () => {}
      },
    }
    const a = new LongPolls(bus)
    const b = new LongPolls(bus)
    const onA = a.take('agent-1') // published first…
    const onB = b.take('agent-1') // …then this one, before either came back
    const [fromA, fromB] = held
    for (const m of [fromA, fromB]) for (const fn of handlers) fn(m as string)
    expect(onA.signal.aborted).toBe(true) // B's came after A's own: B's is newer
    expect(onB.signal.aborted).toBe(false) // A's came before B's own: older
  })

  it('a request that goes away ends its long poll', () => {
    const polls = new LongPolls()
    const request = new AbortController()
    const poll = polls.take('agent-1', request.signal)
    request.abort()
    expect(poll.signal.aborted).toBe(true)
    poll.release()
    expect(polls.waiting).toBe(0)
  })
})
