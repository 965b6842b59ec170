import { sql } from 'drizzle-orm'
import { rowsOf } from '../../src/db/client'
import { signToken } from '../../src/lib/tokens'
import type { BenchContext } from './context'
import { jsonCaller, type Registered, registerAgents } from './http'
import { openCounters } from './pg-counters'
import { median, percentile, topWalKinds } from './stats'

/**
 * backlog (Postgres; run by default there): what tasks nobody can take, at the head of the
 * queue, cost the requests that walk the queue. One server (src/server.ts in a child
 * process, sweep timer off, timeouts an hour so nothing expires meanwhile), one scratch
 * database, measured twice: with an empty queue, then with BACKLOG tasks at its head.
 *
 * The backlog (inserted in one INSERT … SELECT generate_series each, then VACUUM ANALYZE):
 * - by default 40,000 tasks of priority 10 that need a capability no agent has;
 * - with BENCH_BACKLOG=N, N pending: N/2 such, and N/2 of priority 9 that need `gpu`, which
 *   only 2 agents have, each holding one task already (full): work waiting for capacity.
 * The agents (one kind per measurement, so none takes another's work): 8 `hb` agents with 4
 * slots, 4 `cr` agents with 64 slots, and the 2 `gpu` agents with 1 slot.
 *
 * In each state, one request at a time (the p50 of a request, not of a queue of them):
 * - sweep: POST /scheduler/sweep with nothing it can place (agents with free slots, and
 *   only the backlog pending): 1 unmeasured then BENCH_BACKLOG_SWEEPS (5); the request's
 *   time, the sweep's own durationMs, and per sweep its commits and the WAL of the scratch
 *   database (pg_waldump; see pg-counters.ts);
 * - heartbeat: the `hb` agents in turn, each heartbeat reporting the previous answer's tasks
 *   running and completed and taking new ones (4 free slots) from placeable work of
 *   priority 1 (behind the backlog): 20 unmeasured then BENCH_BACKLOG_SAMPLES (200);
 * - create: POST /tasks of a task only the `cr` agents take (priority 1), which the create's
 *   fast path places on the least-loaded one: 10 unmeasured then BENCH_BACKLOG_SAMPLES.
 * Each measurement also stops after BENCH_BACKLOG_SECONDS (40) and says how many it took.
 * Then the ratios backlog/empty. BENCH_BACKLOG_ROUNDS (1) rounds of both states (the backlog
 * deleted after each), each with its ratios, then their medians beside the goals (heartbeat
 * and create p50 ≤ 2× the empty queue's, a sweep that places nothing ≤ 250 ms).
 */

const HB_AGENTS = 8
const HB_SLOTS = 4
const CR_AGENTS = 4
const CR_SLOTS = 64
const GPU_AGENTS = 2

interface Measured {
  state: 'empty' | 'backlog'
  unplaceable: number
  waiting: number
  sweepMs: number[]
  sweepServerMs: number[]
  sweepAssigned: number
  sweepCommits: number | string
  sweepWalBytes: number | string
  sweepWalKinds: Record<string, string>
  heartbeatMs: number[]
  heartbeatsThatTookWork: number
  createMs: number[]
  createsPlacedAtOnce: number
}

export async function benchBacklog(ctx: BenchContext) {
  if (!ctx.onPostgres) {
    ctx.line('backlog', { note: 'needs_postgres (set DATABASE_URL=postgres://…)' })
    return
  }
  const total = process.env.BENCH_BACKLOG ? Number(process.env.BENCH_BACKLOG) : undefined
  const unplaceable = total === undefined ? 40_000 : Math.floor(total / 2)
  const waiting = total === undefined ? 0 : total - unplaceable
  const samples = Number(process.env.BENCH_BACKLOG_SAMPLES ?? 200)
  const sweeps = Number(process.env.BENCH_BACKLOG_SWEEPS ?? 5)
  const capMs = Number(process.env.BENCH_BACKLOG_SECONDS ?? 40) * 1000
  const rounds = Number(process.env.BENCH_BACKLOG_ROUNDS ?? 1)
  if (samples + 10 > CR_AGENTS * CR_SLOTS) throw new Error(`BENCH_BACKLOG_SAMPLES at most ${CR_AGENTS * CR_SLOTS - 10}`)

  const secret = 'backlog-bench-secret-of-at-least-32-chars'
  const { database, url, drop } = await ctx.scratch()
  const db = database.db
  const counters = await openCounters(ctx.baseUrl, url)
  const hour = '3600'
  const { child, base } = await ctx.startServer(url, secret, {
    env: {
      SWEEP_INTERVAL_SECONDS: '0',
      HEARTBEAT_TIMEOUT_SECONDS: hour,
      ASSIGN_TIMEOUT_SECONDS: hour,
      HEARTBEAT_INTERVAL_SECONDS: '30',
    },
  })
  try {
    const admin = await signToken({ secretKey: secret, algorithm: 'HS256' }, { sub: 'bench', role: 'admin' }, 60)
    const call = jsonCaller(base, admin)
    const hbAgents = await registerAgents(call, HB_AGENTS, { prefix: 'hb', capabilities: ['hb'], slots: HB_SLOTS })
    const crAgents = await registerAgents(call, CR_AGENTS, { prefix: 'cr', capabilities: ['cr'], slots: CR_SLOTS })
    if (waiting > 0) {
      const gpu = await registerAgents(call, GPU_AGENTS, { prefix: 'gpu', capabilities: ['gpu'], slots: 1 })
      for (const [i] of gpu.entries()) {
        const t = await call('/api/v1/tasks', {
          body: { name: `gpu-held-${i}`, type: 'bench.backlog', requirements: { capabilities: ['gpu'] } },
        })
        if (t.body?.status !== 'assigned') throw new Error(`a gpu agent did not take its task: ${t.body?.status}`)
      }
    }

    const timed = async <T>(f: () => Promise<T>): Promise<[number, T]> => {
      const t0 = performance.now()
      const out = await f()
      return [performance.now() - t0, out]
    }
    // Straight into the table, with their shape added as a create adds it (a fill reads only
    // the shapes in task_shapes; the sweep would add it too, but would also place the work).
    const insertTasks = async (n: number, priority: number, capability: string, name: string) => {
      await db.execute(sql`
        INSERT INTO tasks (id, name, type, priority, req_capabilities, available_at, created_at, updated_at)
        SELECT gen_random_uuid(), ${name} || '-' || i, 'bench.backlog', ${priority}, ARRAY[${capability}]::text[],
               now(), now(), now()
          FROM generate_series(1, ${n}) AS i`)
      await db.execute(sql`
        INSERT INTO task_shapes (id, type, req_capabilities, req_provider, req_region, req_labels, created_at)
        SELECT DISTINCT ON (shape) shape, type, req_capabilities, req_provider, req_region, req_labels, now()
          FROM tasks WHERE status = 'pending' AND req_agent_id IS NULL AND req_capabilities = ARRAY[${capability}]::text[]
        ON CONFLICT (id) DO NOTHING`)
    }

    /** The agents give back what they hold: one heartbeat reads it, a second reports it completed. */
    const drain = async (agents: Registered[]) => {
      for (const a of agents) {
        const first = await call('/api/v1/agents/heartbeat', { token: a.token, body: { agentId: a.id } })
        const held = (first.body?.assignments ?? []) as { id: string; attempt: number }[]
        if (held.length === 0) continue
        const reports = held.flatMap((t) => [
          { taskId: t.id, attempt: t.attempt, status: 'running' },
          { taskId: t.id, attempt: t.attempt, status: 'completed', result: { ok: true } },
        ])
        const r = await call('/api/v1/agents/heartbeat', { token: a.token, body: { agentId: a.id, reports } })
        if (r.status !== 200 || (r.body?.assignments ?? []).length > 0) throw new Error('drain: the agent got work')
      }
    }

    const measure = async (state: Measured['state']): Promise<Measured> => {
      if (state === 'backlog') {
        await insertTasks(unplaceable, 10, 'bench-nobody', 'unplaceable')
        if (waiting > 0) await insertTasks(waiting, 9, 'gpu', 'waiting')
      }
      await db.execute(sql`VACUUM ANALYZE tasks`)

      // 1. Sweeps that can place nothing: agents have free slots, only the backlog is pending.
      const sweep = () => call('/api/v1/scheduler/sweep', { method: 'POST' })
      await sweep()
      const sweepMs: number[] = []
      const sweepServerMs: number[] = []
      let sweepAssigned = 0
      const window = await counters.begin({ settle: false })
      for (let i = 0; i < sweeps; i++) {
        const [ms, r] = await timed(sweep)
        if (r.status !== 200) throw new Error(`sweep: ${r.status}`)
        sweepMs.push(ms)
        sweepServerMs.push(r.body.durationMs)
        sweepAssigned += r.body.assigned
      }
      const w = await window.end()

      // 2. Heartbeats of agents with free slots, placeable work behind the backlog.
      await insertTasks(samples * HB_SLOTS + 400, 1, 'hb', 'placeable')
      await db.execute(sql`ANALYZE tasks`)
      const held = new Map<string, { id: string; attempt: number }[]>()
      const heartbeat = async (a: Registered) => {
        const reports = (held.get(a.id) ?? []).flatMap((t) => [
          { taskId: t.id, attempt: t.attempt, status: 'running' },
          { taskId: t.id, attempt: t.attempt, status: 'completed', result: { ok: true } },
        ])
        const [ms, r] = await timed(() =>
          call('/api/v1/agents/heartbeat', { token: a.token, body: { agentId: a.id, reports } }),
        )
        if (r.status !== 200 || (r.body.reports ?? []).some((x: { ok: boolean }) => !x.ok))
          throw new Error(`heartbeat: ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`)
        const got = (r.body.assignments ?? []) as { id: string; attempt: number }[]
        held.set(a.id, got)
        return [ms, got.length] as const
      }
      for (let i = 0; i < 20; i++) await heartbeat(hbAgents[i % HB_AGENTS] as Registered)
      const heartbeatMs: number[] = []
      let tookWork = 0
      const hbUntil = Date.now() + capMs
      for (let i = 0; i < samples && Date.now() < hbUntil; i++) {
        const [ms, got] = await heartbeat(hbAgents[i % HB_AGENTS] as Registered)
        heartbeatMs.push(ms)
        if (got > 0) tookWork++
      }
      await db.execute(sql`DELETE FROM tasks WHERE status = 'pending' AND req_capabilities = ARRAY['hb']::text[]`)
      await drain(hbAgents)

      // 3. Creates of a task the `cr` agents take, placed at once by the create's fast path.
      const create = (i: number) =>
        call('/api/v1/tasks', {
          body: { name: `cr-${i}`, type: 'bench.backlog', priority: 1, requirements: { capabilities: ['cr'] } },
        })
      for (let i = 0; i < 10; i++) await create(i)
      const createMs: number[] = []
      let placed = 0
      const crUntil = Date.now() + capMs
      for (let i = 0; i < samples && Date.now() < crUntil; i++) {
        const [ms, r] = await timed(() => create(i))
        if (r.status !== 201) throw new Error(`create: ${r.status}`)
        createMs.push(ms)
        if (r.body.status === 'assigned') placed++
      }
      await drain(crAgents)

      return {
        state,
        unplaceable: state === 'backlog' ? unplaceable : 0,
        waiting: state === 'backlog' ? waiting : 0,
        sweepMs,
        sweepServerMs,
        sweepAssigned,
        sweepCommits: typeof w.wal === 'string' ? w.wal : w.wal.commits / sweeps,
        sweepWalBytes: typeof w.wal === 'string' ? w.wal : Math.round(w.wal.bytes / sweeps),
        sweepWalKinds: typeof w.wal === 'string' ? {} : topWalKinds(w.wal, sweeps, 5),
        heartbeatMs,
        heartbeatsThatTookWork: tookWork,
        createMs,
        createsPlacedAtOnce: placed,
      }
    }

    const ratios: { heartbeat: number; create: number; sweep: number; sweepMs: number }[] = []
    for (let round = 1; round <= rounds; round++) {
      const results: Measured[] = []
      for (const state of ['empty', 'backlog'] as const) {
        const m = await measure(state)
        results.push(m)
        const [row] = await rowsOf<{ n: number }>(
          db,
          sql`SELECT count(*)::int AS n FROM tasks WHERE status = 'pending'`,
        )
        ctx.line('backlog', {
          state,
          round,
          unplaceable: m.unplaceable,
          waiting_for_capacity: m.waiting,
          pending_after: row?.n ?? Number.NaN,
          sweeps: m.sweepMs.length,
          sweep_p50_ms: median(m.sweepMs),
          sweep_server_p50_ms: median(m.sweepServerMs),
          sweep_assigned: m.sweepAssigned,
          sweep_wal_commits: m.sweepCommits,
          sweep_wal_bytes: m.sweepWalBytes,
          heartbeats: m.heartbeatMs.length,
          heartbeats_that_took_work: m.heartbeatsThatTookWork,
          heartbeat_p50_ms: median(m.heartbeatMs),
          heartbeat_p90_ms: percentile(m.heartbeatMs, 90),
          creates: m.createMs.length,
          creates_placed_at_once: m.createsPlacedAtOnce,
          create_p50_ms: median(m.createMs),
          create_p90_ms: percentile(m.createMs, 90),
        })
        ctx.line('backlog_sweep_wal_kinds', { state, round, ...m.sweepWalKinds })
      }
      // The next round starts from an empty queue again (its VACUUM clears what this leaves).
      await db.execute(sql`DELETE FROM tasks WHERE status = 'pending' AND name ~ '^(unplaceable|waiting)-'`)
      const [empty, backlog] = results as [Measured, Measured]
      const r = {
        heartbeat: median(backlog.heartbeatMs) / median(empty.heartbeatMs),
        create: median(backlog.createMs) / median(empty.createMs),
        sweep: median(backlog.sweepMs) / median(empty.sweepMs),
        sweepMs: median(backlog.sweepMs),
      }
      ratios.push(r)
      ctx.line('backlog_ratio', {
        round,
        unplaceable,
        waiting_for_capacity: waiting,
        heartbeat_p50: r.heartbeat,
        create_p50: r.create,
        sweep_p50: r.sweep,
      })
    }
    const hb = median(ratios.map((r) => r.heartbeat))
    const cr = median(ratios.map((r) => r.create))
    const sw = median(ratios.map((r) => r.sweepMs))
    ctx.line('backlog_goals', {
      rounds,
      unplaceable,
      waiting_for_capacity: waiting,
      heartbeat_p50_ratio: hb,
      create_p50_ratio: cr,
      sweep_p50_ratio: median(ratios.map((r) => r.sweep)),
      sweep_p50_ms: sw,
      goal_heartbeat_le_2x: hb <= 2 ? 'met' : 'missed',
      goal_create_le_2x: cr <= 2 ? 'met' : 'missed',
      goal_sweep_le_250ms: sw <= 250 ? 'met' : 'missed',
    })
    for (const how of [
      'backlog: how each figure is taken',
      '*_p50_ms, *_p90_ms: wall time of the HTTP request as this process sees it (loopback), one request at a time; sweep_server_p50_ms: the durationMs the sweep reports of itself; backlog_goals: the medians over the rounds of each round’s ratios (and of its sweep p50)',
      'sweep_wal_commits, sweep_wal_bytes: per sweep, the COMMIT records and the bytes of the scratch database’s own WAL records over the measured sweeps (pg_waldump; see the steady phase)',
      'heartbeats_that_took_work, creates_placed_at_once: how many of the measured requests found placeable work / were placed by the create (every one, when the backlog does not starve them)',
    ])
      console.log(`# ${how}`)
  } finally {
    await ctx.stopServer(child)
    await counters.close()
    await drop()
  }
}
