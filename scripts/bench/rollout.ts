import { createApp } from '../../src/app'
import type { Database } from '../../src/db/client'
import { loadConfig } from '../../src/env'
import { systemClock } from '../../src/lib/clock'
import { silentLogger } from '../../src/lib/logger'
import { signToken } from '../../src/lib/tokens'
import type { BenchContext } from './context'

/**
 * `npm run bench -- rollout`: 1,000 simulated agents (one slot each) over HTTP, in process
 * (app.request: no sockets), each heartbeating in rounds — all at once — and reporting the
 * task it was handed run and completed in its next heartbeat. Two runs, each on a fresh
 * scratch database, of one task per agent with at most 100 in flight:
 *
 * - rollout: one POST /rollouts, maxConcurrency 100; the controller dispatches as reports
 *   free room. From the create to the rollout's end.
 * - direct: what an operator scripts without rollouts: the same tasks created directly, 100
 *   at a time (POST /tasks/batch, pinned to their agents), the next 100 once those ended.
 *
 * Prints each run's time, rounds of heartbeats and (Postgres) statements per target, and the
 * ratio of the times; the goal is rollout ≤ 1.3 × direct.
 */
const AGENTS = Number(process.env.BENCH_ROLLOUT_AGENTS ?? 1000)
const CONCURRENCY = 100
const SECRET = 'bench-secret-that-is-at-least-32-characters-long'

interface Sim {
  id: string
  token: string
  /** Tasks handed to it in its last heartbeat: reported run and done in its next one. */
  held: { id: string; attempt: number }[]
}

async function setup(database: Database) {
  const config = loadConfig({
    ENVIRONMENT: 'test',
    SECRET_KEY: SECRET,
    LOG_LEVEL: 'silent',
    RATE_LIMIT_PER_MINUTE: '0',
    SWEEP_INTERVAL_SECONDS: '0',
  })
  const app = createApp({ config, database, clock: systemClock, logger: silentLogger, startedAt: new Date() })
  const admin = await signToken(config, { sub: 'bench', role: 'admin' }, 60)
  const call = async (token: string, method: string, path: string, body?: unknown) => {
    const res = await app.request(path, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    const text = await res.text()
    if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 300)}`)
    return text ? JSON.parse(text) : null
  }
  const sims: Sim[] = []
  for (let i = 0; i < AGENTS; i += 50) {
    const made = await Promise.all(
      Array.from({ length: Math.min(50, AGENTS - i) }, (_, k) =>
        call(admin, 'POST', '/api/v1/agents', {
          name: `bench-${i + k}`,
          provider: 'aws',
          labels: { fleet: 'bench' },
          maxConcurrentTasks: 1,
        }),
      ),
    )
    sims.push(...made.map((a: { id: string; token: string }) => ({ id: a.id, token: a.token, held: [] })))
  }
  return { app, call, admin, sims }
}

/** One round: every agent heartbeats at once, reporting what it held; returns the tasks that ended. */
async function round(call: Awaited<ReturnType<typeof setup>>['call'], sims: Sim[]) {
  const ended = await Promise.all(
    sims.map(async (s) => {
      const reports = s.held.flatMap((t) => [
        { taskId: t.id, status: 'running', attempt: t.attempt },
        { taskId: t.id, status: 'completed', attempt: t.attempt },
      ])
      const n = s.held.length
      const beat = await call(s.token, 'POST', '/api/v1/agents/heartbeat', { agentId: s.id, reports })
      s.held = (beat.assignments as { id: string; attempt: number }[]).map((t) => ({ id: t.id, attempt: t.attempt }))
      return n
    }),
  )
  return ended.reduce((a, b) => a + b, 0)
}

async function runRollout(ctx: BenchContext) {
  const { database, drop } = await ctx.scratch()
  try {
    const { call, admin, sims } = await setup(database)
    await round(call, sims) // every agent online
    const before = database.statements?.() ?? 0
    const started = performance.now()
    const made = await call(admin, 'POST', '/api/v1/rollouts', {
      name: 'bench',
      task: { type: 'bench.run' },
      target: { labels: { fleet: 'bench' } },
      strategy: { maxConcurrency: CONCURRENCY },
    })
    let rounds = 0
    for (;;) {
      await round(call, sims)
      rounds++
      const r = await call(admin, 'GET', `/api/v1/rollouts/${made.id}`)
      if (r.endedAt) {
        if (r.status !== 'completed') throw new Error(`the rollout ended ${r.status}`)
        break
      }
      if (rounds > AGENTS * 4) throw new Error('the rollout did not end')
    }
    return { ms: performance.now() - started, rounds, statements: (database.statements?.() ?? 0) - before }
  } finally {
    await drop()
  }
}

async function runDirect(ctx: BenchContext) {
  const { database, drop } = await ctx.scratch()
  try {
    const { call, admin, sims } = await setup(database)
    await round(call, sims)
    const before = database.statements?.() ?? 0
    const started = performance.now()
    let rounds = 0
    for (let i = 0; i < sims.length; i += CONCURRENCY) {
      const wave = sims.slice(i, i + CONCURRENCY)
      await call(admin, 'POST', '/api/v1/tasks/batch', {
        tasks: wave.map((s) => ({
          name: 'bench',
          type: 'bench.run',
          maxAttempts: 1,
          requirements: { agentId: s.id },
        })),
      })
      let ended = 0
      while (ended < wave.length) {
        ended += await round(call, sims)
        rounds++
        if (rounds > AGENTS * 4) throw new Error('the direct tasks did not end')
      }
    }
    return { ms: performance.now() - started, rounds, statements: (database.statements?.() ?? 0) - before }
  } finally {
    await drop()
  }
}

export async function benchRollout(ctx: BenchContext): Promise<void> {
  const rollout = await runRollout(ctx)
  const direct = await runDirect(ctx)
  const per = (n: number) => (ctx.onPostgres ? (n / AGENTS).toFixed(1) : 'n/a')
  ctx.line('rollout', {
    agents: AGENTS,
    maxConcurrency: CONCURRENCY,
    rollout_s: rollout.ms / 1000,
    rollout_rounds: rollout.rounds,
    rollout_statements_per_target: per(rollout.statements),
    direct_s: direct.ms / 1000,
    direct_rounds: direct.rounds,
    direct_statements_per_target: per(direct.statements),
    controller_statements_per_target: ctx.onPostgres
      ? ((rollout.statements - direct.statements) / AGENTS).toFixed(1)
      : 'n/a',
    ratio: rollout.ms / direct.ms,
  })
}
