import { describe, expect, it } from 'vitest'
import {
  budgetExceeded,
  decide,
  errorsOf,
  type RolloutState,
  resolveAmount,
  resolveStrategy,
  resume,
  TARGET_MOVES,
  targetStatuses,
  targetStatusOfTask,
  waveEnds,
  waveOfIndex,
} from '../src/domain/rollouts'

/** The rollout rules of src/domain/rollouts.ts, as pure functions (the service's tests are in rollouts.test.ts). */

const now = new Date('2026-01-01T00:00:00Z')
const state = (s: Partial<RolloutState> = {}): RolloutState => ({
  status: 'running',
  wave: 1,
  waveCount: 1,
  waveEndedAt: null,
  bakeSeconds: 0,
  pauseBetweenWaves: false,
  maxConcurrency: 5,
  maxErrors: 0,
  errors: 0,
  inFlight: 0,
  waitingStarted: 0,
  waitingLater: 0,
  endedAt: null,
  ...s,
})

describe('amounts', () => {
  it('takes counts as they are and rounds percentages up (concurrency, waves) or down (errors)', () => {
    expect(resolveAmount(7, 200, 'up')).toBe(7)
    expect(resolveAmount('10%', 200, 'up')).toBe(20)
    expect(resolveAmount('10%', 200, 'down')).toBe(20)
    expect(resolveAmount('10%', 25, 'up')).toBe(3)
    expect(resolveAmount('10%', 25, 'down')).toBe(2)
    expect(resolveAmount('0%', 25, 'down')).toBe(0)
    expect(resolveAmount('100%', 25, 'up')).toBe(25)
    expect(resolveAmount('33.3%', 1000, 'down')).toBe(333)
  })
})

describe('resolveStrategy', () => {
  it('defaults: everything at once, no error allowed, one wave', () => {
    expect(resolveStrategy({}, 12)).toEqual({
      maxConcurrency: 12,
      maxErrors: 0,
      waves: [12],
      bakeSeconds: 0,
      pauseBetweenWaves: false,
      deliveryTimeoutSeconds: 300,
    })
  })

  it('resolves waves in order, the last taking the rest', () => {
    const r = resolveStrategy({ waves: [{ size: 1 }, { size: '10%' }, { size: '100%' }], maxConcurrency: '10%' }, 200)
    expect(r).toMatchObject({ waves: [1, 20, 179], maxConcurrency: 20 })
    expect(resolveStrategy({ waves: [{ size: '50%' }, { size: '50%' }] }, 5)).toMatchObject({ waves: [3, 2] })
  })

  it('refuses waves that leave the last one empty, naming the wave', () => {
    const r = resolveStrategy({ waves: [{ size: 2 }, { size: 1 }, { size: 1 }] }, 3)
    expect(r).toEqual({ problems: [{ path: 'body.strategy.waves.1.size', message: expect.stringMatching(/add up/) }] })
    expect(resolveStrategy({ waves: [{ size: '100%' }, { size: 1 }] }, 10)).toHaveProperty('problems')
  })

  it('refuses malformed percentages and counts, each by its path', () => {
    const r = resolveStrategy({ maxConcurrency: '120%', maxErrors: '5 %', waves: [{ size: 0 }] }, 10) as {
      problems: { path: string }[]
    }
    expect(r.problems.map((p) => p.path)).toEqual([
      'body.strategy.maxConcurrency',
      'body.strategy.maxErrors',
      'body.strategy.waves.0.size',
    ])
    expect(resolveStrategy({ maxConcurrency: '0%' }, 10)).toHaveProperty('problems')
    expect(resolveStrategy({ maxErrors: -1 }, 10)).toHaveProperty('problems')
    expect(resolveStrategy({ maxErrors: 1.5 }, 10)).toHaveProperty('problems')
  })

  it('numbers the targets into their waves (TypeScript and the cumulative ends the SQL form takes)', () => {
    const waves = [1, 3, 2]
    expect([0, 1, 2, 3, 4, 5].map((i) => waveOfIndex(i, waves))).toEqual([1, 2, 2, 2, 3, 3])
    expect(waveEnds(waves)).toEqual([1, 4])
    const sqlForm = (i: number) => 1 + waveEnds(waves).filter((e) => e <= i).length
    expect([0, 1, 2, 3, 4, 5].map(sqlForm)).toEqual([1, 2, 2, 2, 3, 3])
  })
})

describe('target states', () => {
  it('follow their task: a retry due keeps the target in flight', () => {
    expect(targetStatusOfTask({ status: 'pending', autoRetry: false })).toBe('dispatched')
    expect(targetStatusOfTask({ status: 'running', autoRetry: false })).toBe('running')
    expect(targetStatusOfTask({ status: 'completed', autoRetry: false })).toBe('succeeded')
    expect(targetStatusOfTask({ status: 'failed', autoRetry: true })).toBe('dispatched')
    expect(targetStatusOfTask({ status: 'failed', autoRetry: false })).toBe('failed')
    expect(targetStatusOfTask({ status: 'timed_out', autoRetry: false })).toBe('timed_out')
    expect(targetStatusOfTask({ status: 'cancelled', autoRetry: false })).toBe('cancelled')
  })

  it('the move table names only known states, and every state is reached or started from', () => {
    for (const m of TARGET_MOVES) for (const s of [...m.from, m.to]) expect(targetStatuses).toContain(s)
    const touched = new Set(TARGET_MOVES.flatMap((m) => [...m.from, m.to]))
    expect([...touched].sort()).toEqual([...targetStatuses].sort())
  })
})

describe('the error budget', () => {
  it('is exceeded only when errors pass maxErrors', () => {
    expect(budgetExceeded(0, 0)).toBe(false)
    expect(budgetExceeded(1, 0)).toBe(true)
    expect(budgetExceeded(2, 2)).toBe(false)
    expect(budgetExceeded(3, 2)).toBe(true)
    expect(errorsOf({ failed: 1, timed_out: 1, undeliverable: 1 })).toBe(3)
  })

  /**
   * The worked example of docs/rollouts.md: 10 targets, maxConcurrency 3, maxErrors 1.
   * Targets 2 and 4 fail, 5 (in flight when 4 fails) fails too; everything else succeeds.
   * The second error (target 4) exceeds the budget: nothing more is dispatched, 5 and 6 (in
   * flight) finish, 7–10 are skipped, and the rollout ends failed with 3 errors — at most
   * maxErrors + the 2 others in flight at the breach.
   */
  it('runs the worked example', () => {
    const fails = new Set([2, 4, 5])
    let s = state({ maxConcurrency: 3, maxErrors: 1, waitingStarted: 10 })
    const status = new Map<number, string>()
    let next = 1
    const inFlight: number[] = []
    const log: string[] = []
    const apply = () => {
      const d = decide(s, now)
      if (d.skipWaiting) for (let t = next; t <= 10; t++) status.set(t, 'skipped')
      if (d.skipWaiting) next = 11
      for (let k = 0; k < d.dispatch && next <= 10; k++) {
        inFlight.push(next)
        status.set(next, 'dispatched')
        next++
      }
      for (const e of d.events) log.push(e)
      const waiting = 11 - next
      s = { ...s, status: d.status, endedAt: d.endedAt, inFlight: inFlight.length, waitingStarted: waiting }
    }
    apply()
    expect(inFlight).toEqual([1, 2, 3])
    // Targets end in dispatch order, one at a time; the controller advances after each.
    while (inFlight.length) {
      const t = inFlight.shift() as number
      status.set(t, fails.has(t) ? 'failed' : 'succeeded')
      if (fails.has(t)) s = { ...s, errors: s.errors + 1 }
      s = { ...s, inFlight: inFlight.length }
      apply()
    }
    expect(status).toEqual(
      new Map(
        Object.entries({
          1: 'succeeded',
          2: 'failed',
          3: 'succeeded',
          4: 'failed',
          5: 'failed',
          6: 'succeeded',
          7: 'skipped',
          8: 'skipped',
          9: 'skipped',
          10: 'skipped',
        }).map(([k, v]) => [Number(k), v]),
      ),
    )
    expect(s.errors).toBe(3)
    expect(s.status).toBe('failed')
    expect(s.endedAt).toEqual(now)
    expect(log.filter((e) => e === 'budget_exceeded').length).toBeGreaterThan(0)
    expect(log.at(-1)).toBe('ended')
  })

  it('maxErrors 0: the first error stops it', () => {
    const d = decide(state({ errors: 1, inFlight: 2, waitingStarted: 5 }), now)
    expect(d).toMatchObject({ status: 'failed', skipWaiting: true, dispatch: 0, endedAt: null })
  })
})

describe('decide', () => {
  it('dispatches up to maxConcurrency while running', () => {
    expect(decide(state({ inFlight: 2, waitingStarted: 10 }), now).dispatch).toBe(3)
    expect(decide(state({ inFlight: 5, waitingStarted: 10 }), now).dispatch).toBe(0)
    expect(decide(state({ status: 'paused', inFlight: 0, waitingStarted: 10 }), now).dispatch).toBe(0)
  })

  it('completes when every target ended within budget', () => {
    expect(decide(state({ errors: 1, maxErrors: 1 }), now)).toMatchObject({
      status: 'completed',
      endedAt: now,
      events: ['ended'],
    })
  })

  it('starts the next wave at once without a bake, after the bake with one', () => {
    const over = state({ waveCount: 2, waitingLater: 4 })
    expect(decide(over, now)).toMatchObject({ wave: 2, waveEndedAt: null, dispatch: 5, events: ['wave_started'] })
    const baking = decide({ ...over, bakeSeconds: 60 }, now)
    expect(baking).toMatchObject({ wave: 1, waveEndedAt: now, dispatch: 5, events: [] })
    const early = decide({ ...over, bakeSeconds: 60, waveEndedAt: now }, new Date(now.getTime() + 59_000))
    expect(early).toMatchObject({ wave: 1, events: [] })
    const due = decide({ ...over, bakeSeconds: 60, waveEndedAt: now }, new Date(now.getTime() + 60_000))
    expect(due).toMatchObject({ wave: 2, waveEndedAt: null, events: ['wave_started'] })
  })

  it('never starts a wave while the started one has targets in flight or waiting', () => {
    expect(decide(state({ waveCount: 2, waitingLater: 4, inFlight: 1 }), now).wave).toBe(1)
    expect(decide(state({ waveCount: 2, waitingLater: 4, waitingStarted: 1 }), now).wave).toBe(1)
  })

  it('pauses at a gate; resume starts the next wave', () => {
    const gate = state({ waveCount: 3, wave: 1, waitingLater: 4, pauseBetweenWaves: true })
    const d = decide(gate, now)
    expect(d).toMatchObject({ status: 'paused', wave: 1, waveEndedAt: now, dispatch: 0, events: ['paused'] })
    expect(resume({ ...gate, status: 'paused', waveEndedAt: now })).toEqual({
      status: 'running',
      wave: 2,
      waveEndedAt: null,
      startsWave: true,
    })
    // Paused by hand mid-wave: resume just runs again.
    expect(resume({ ...gate, status: 'paused', waveEndedAt: null })).toMatchObject({ wave: 1, startsWave: false })
  })

  it('a cancelled or failed rollout ends once nothing is in flight', () => {
    expect(decide(state({ status: 'cancelled', inFlight: 1, waitingLater: 3 }), now)).toMatchObject({
      skipWaiting: true,
      endedAt: null,
    })
    expect(decide(state({ status: 'cancelled' }), now)).toMatchObject({ endedAt: now, events: ['ended'] })
    expect(decide(state({ status: 'failed', endedAt: now }), now).events).toEqual([])
  })
})
