import { setMaxListeners } from 'node:events'
import { readFileSync } from 'node:fs'
import { cpus } from 'node:os'
import pg from 'pg'
import { signToken } from '../../src/lib/tokens'
import { acquireAutoAnalyze, releaseAutoAnalyze } from './autoanalyze'
import type { BenchContext } from './context'
import { jsonCaller, registerAgents, serverStatements } from './http'
import { openCounters, type PgWindow } from './pg-counters'
import { median, steadyRate, topWalKinds } from './stats'

/**
 * steady (Postgres; run by default there): the batched lifecycle in its steady state, and
 * pg-boss doing the same work on the same Postgres in the same run.
 *
 * - ours: the real server (src/server.ts, Node, sweep every second) in a child process on a
 *   scratch database; 100 simulated agents with 4 slots over HTTP, each cycle one heartbeat
 *   that carries the previous answer's tasks as running and completed and long-polls (2 s)
 *   when it has nothing to report; 4 producer loops posting 50 tasks a request
 *   (POST /tasks/batch), keeping at most BENCH_STEADY_OUTSTANDING (1,000) created and not
 *   yet completed, so the queue stays short and the run measures a steady state rather
 *   than a backlog draining. When the last completion is acknowledged, every open long poll
 *   is aborted: the run never waits out a long poll.
 * - pg-boss 10 in this process on its own scratch database: 2 producers inserting 50 jobs a
 *   call under the same bound, 8 workers fetching 10 and completing them.
 *
 * Each first runs BENCH_STEADY_WARMUP (2,000) tasks unmeasured, then ANALYZEs its database
 * (as autovacuum would have by then on a live one; BENCH_STEADY_ANALYZE=0 skips it), then
 * BENCH_STEADY_TASKS (20,000) measured. BENCH_STEADY_ROUNDS (1) rounds of ours then
 * pg-boss, with the medians after more than one; each run stops after
 * BENCH_STEADY_LIMIT_SECONDS (180). The figures: the 10–90 % steady rate (completions
 * between the 10th and the 90th percentile of the run's completion times, over that span),
 * the overall rate, and per task statements, commits, WAL, sequential scans of the task
 * table and CPU, taken as the `#` lines printed with them say. On a server with autovacuum
 * off, both sides run with the bench's stand-in for its analyze (autoanalyze.ts: autovacuum's
 * rule every 2 s), left out of the figures; without it (BENCH_AUTOANALYZE=0 and
 * BENCH_STEADY_ANALYZE=0) the server's prepared statements keep the plans they made on the
 * empty tables.
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

interface Run {
  system: 'agenticcp' | 'pg-boss'
  tasks: number
  completed: number
  errors: number
  /** First create to last completion, seconds. */
  seconds: number
  /** Completion times, ms from the start. */
  times: number[]
  /** Statements sent (client side: the server's counter, or the counting pg-boss driver). */
  clientStatements: number
  appCpuS: number
  postgresCpuS: number
  loadgenCpuS: number
  pg: PgWindow
  /** Sequential scans of the task table (pg-boss: its job table) and the rows they read. */
  seqScans: number
  seqRows: number
  check: string
  extra: Record<string, string | number>
}

/** CPU seconds the backends of one database used between two readings (a backend born meanwhile counts whole). */
function backendDelta(a: Map<number, number>, b: Map<number, number>): number {
  let s = 0
  for (const [pid, c] of b) s += c - (a.get(pid) ?? 0)
  return s
}

/** Busy and total CPU ticks of the whole machine (every core, any process), from /proc/stat. */
function machineTicks(): { busy: number; total: number } {
  const f = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1, 9).map(Number)
  const total = f.reduce((a, b) => a + b, 0) // user nice system idle iowait irq softirq steal
  return { busy: total - (f[3] ?? 0) - (f[4] ?? 0), total }
}

/**
 * Cores the whole machine kept busy over a window, and of them those the run's own processes
 * (`ownCpuS`: server, its Postgres backends, this process) did not: anything else running
 * (other work on a shared machine, Postgres's own workers), to tell a disturbed run.
 */
function machineLoad(
  a: ReturnType<typeof machineTicks>,
  b: ReturnType<typeof machineTicks>,
  seconds: number,
  ownCpuS: number,
) {
  const busy = ((b.busy - a.busy) / Math.max(1, b.total - a.total)) * cpus().length
  return { machine_busy_cores: busy, other_cores: busy - ownCpuS / seconds }
}

const cpuOfThisProcess = () => {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1e6
}

interface Options {
  count: number
  warmup: number
  analyze: boolean
  outstanding: number
  limitMs: number
}

/** Sequential scans of `tasks` (pg-boss: `pgboss.job`) and the rows they read, from the scratch database's own statistics. */
async function tableScans(client: pg.Client, table: string) {
  const { rows } = await client.query<{ scans: string; rows: string }>(
    `SELECT coalesce(sum(seq_scan), 0)::text AS scans, coalesce(sum(seq_tup_read), 0)::text AS rows
       FROM pg_stat_user_tables WHERE relid = $1::regclass OR relid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = $1::regclass)`,
    [table],
  )
  return { scans: Number(rows[0]?.scans), rows: Number(rows[0]?.rows) }
}

/** After the warm-up: ANALYZE, as autovacuum would by now on a live database (it also drops plans made on an empty table). */
async function settleTables(url: string, analyze: boolean) {
  const client = new pg.Client({ connectionString: url, application_name: 'bench-counters' })
  await client.connect()
  if (analyze) await client.query('ANALYZE')
  return client
}

async function runOurs(ctx: BenchContext, o: Options, poolMax?: number): Promise<Run> {
  const AGENTS = 100
  const SLOTS = 4
  const BATCH = 50
  const PRODUCERS = 4
  const secret = 'steady-bench-secret-of-at-least-32-chars'
  const { url, drop } = await ctx.scratch() // its pool stays open, idle, until drop()
  const counters = await openCounters(ctx.baseUrl, url)
  const { child, base } = await ctx.startServer(url, secret, {
    env: { SWEEP_INTERVAL_SECONDS: '1', ...(poolMax ? { DATABASE_POOL_MAX: String(poolMax) } : {}) },
  })
  let stats: pg.Client | undefined
  try {
    const admin = await signToken({ secretKey: secret, algorithm: 'HS256' }, { sub: 'bench', role: 'admin' }, 60)
    const call = jsonCaller(base, admin)
    const agents = await registerAgents(call, AGENTS, { prefix: 'steady', capabilities: ['cpu'], slots: SLOTS })

    /** `count` tasks through the batched lifecycle; every open request is aborted at the last completion. */
    const lifecycle = async (count: number) => {
      const done = new AbortController()
      setMaxListeners(0, done.signal) // every request of the run listens to it
      let created = 0
      let completed = 0
      let errors = 0
      const requests = { creates: 0, heartbeats: 0, polls: 0 }
      const times: number[] = []
      const t0 = performance.now()
      let tEnd = 0
      const finish = () => {
        if (!tEnd) tEnd = performance.now()
        done.abort()
      }
      const producer = async () => {
        try {
          while (created < count && !done.signal.aborted) {
            const n = Math.min(BATCH, count - created)
            if (created - completed + n > o.outstanding) {
              await sleep(2)
              continue
            }
            created += n
            const tasks = Array.from({ length: n }, () => ({ name: 'steady', type: 'bench.steady' }))
            requests.creates++
            const r = await call('/api/v1/tasks/batch', { body: { tasks }, signal: done.signal })
            if (r.status !== 201) errors += n
          }
        } catch (err) {
          if (!done.signal.aborted) throw err
        }
      }
      const agent = async (a: { id: string; token: string }) => {
        let reports: { taskId: string; attempt: number; status: string; result?: unknown }[] = []
        try {
          while (!done.signal.aborted) {
            requests.heartbeats++
            if (!reports.length) requests.polls++
            const hb = await call('/api/v1/agents/heartbeat', {
              token: a.token,
              body: { agentId: a.id, waitSeconds: reports.length ? 0 : 2, reports },
              signal: done.signal,
            })
            if (hb.status !== 200) errors++
            const now = performance.now() - t0
            for (const [i, r] of (hb.body?.reports ?? []).entries()) {
              if (!r.ok) errors++
              else if (reports[i]?.status === 'completed') {
                completed++
                times.push(now)
              }
            }
            if (completed >= count) finish()
            reports = []
            for (const t of (hb.body?.assignments ?? []) as { id: string; attempt: number }[]) {
              reports.push({ taskId: t.id, attempt: t.attempt, status: 'running' })
              reports.push({ taskId: t.id, attempt: t.attempt, status: 'completed', result: { ok: true } })
            }
          }
        } catch (err) {
          if (!done.signal.aborted) throw err
        }
      }
      const timer = setTimeout(finish, o.limitMs)
      await Promise.all([...Array.from({ length: PRODUCERS }, producer), ...agents.map(agent)])
      clearTimeout(timer)
      return { created, completed, errors, times, requests, seconds: ((tEnd || performance.now()) - t0) / 1000 }
    }

    const warm = await lifecycle(o.warmup)
    stats = await settleTables(url, o.analyze)
    const s0 = await serverStatements(base)
    const window = await counters.begin()
    const scans0 = await tableScans(stats, 'tasks')
    const pid = child.pid as number
    const [c0, p0, l0] = [ctx.cpuSeconds(pid), await ctx.postgresCpuByPid(counters.dbName), cpuOfThisProcess()]
    const m0 = machineTicks()
    const run = await lifecycle(o.count)
    const m1 = machineTicks()
    const [c1, p1, l1] = [ctx.cpuSeconds(pid), await ctx.postgresCpuByPid(counters.dbName), cpuOfThisProcess()]
    const s1 = await serverStatements(base)
    // Stopping the server ends its connections, whose backends then send their last counts.
    const pgw = await window.end(() => ctx.stopServer(child))
    const scans1 = await tableScans(stats, 'tasks')

    // Every task created was completed once, on its first attempt.
    const { rows } = await stats.query<{ status: string; n: number; retried: number; events: number }>(
      `SELECT status, count(*)::int AS n, count(*) FILTER (WHERE attempt > 1)::int AS retried,
              (SELECT count(*)::int FROM events WHERE type = 'task.completed') AS events
         FROM tasks GROUP BY status`,
    )
    const total = o.warmup + o.count
    const inDb = rows.map((r) => `${r.status}:${r.n}`).join(',') || 'none'
    const ok =
      run.completed === o.count &&
      warm.completed === o.warmup &&
      run.errors + warm.errors === 0 &&
      rows.length === 1 &&
      rows[0]?.status === 'completed' &&
      rows[0].n === total &&
      rows[0].retried === 0 &&
      rows[0].events === total
    return {
      system: 'agenticcp',
      tasks: run.created,
      completed: run.completed,
      errors: run.errors + warm.errors,
      seconds: run.seconds,
      times: run.times,
      clientStatements: s1 - s0,
      appCpuS: c1 - c0,
      postgresCpuS: backendDelta(p0, p1),
      loadgenCpuS: l1 - l0,
      pg: pgw,
      seqScans: scans1.scans - scans0.scans,
      seqRows: scans1.rows - scans0.rows,
      check: ok ? 'ok' : `FAILED(db=${inDb})`,
      extra: {
        agents: AGENTS,
        slots_per_agent: SLOTS,
        producers: PRODUCERS,
        batch: BATCH,
        ...(poolMax ? { pool_max: poolMax } : {}),
        // Requests per task: creates (of up to BATCH), heartbeats, and of them long polls (nothing to report).
        create_requests_per_task: run.requests.creates / Math.max(1, run.completed),
        heartbeat_requests_per_task: run.requests.heartbeats / Math.max(1, run.completed),
        long_polls_per_task: run.requests.polls / Math.max(1, run.completed),
        ...machineLoad(m0, m1, run.seconds, c1 - c0 + backendDelta(p0, p1) + (l1 - l0)),
      },
    }
  } finally {
    await ctx.stopServer(child)
    await stats?.end().catch(() => {})
    await counters.close()
    await drop()
  }
}

async function runBoss(ctx: BenchContext, o: Options): Promise<Run> {
  const { default: PgBoss } = await import('pg-boss')
  const WORKERS = 8
  const FETCH = 10
  const BATCH = 50
  const PRODUCERS = 2
  const { url, drop } = await ctx.scratch() // its pool stays open, idle, until drop()
  const counters = await openCounters(ctx.baseUrl, url)
  const pool = new pg.Pool({ connectionString: url, max: 10, application_name: 'pgboss' })
  let statements = 0
  // pg-boss's own driver is one pool.query per statement; this one counts them.
  const db = {
    executeSql: (text: string, values: unknown[]) => {
      statements++
      return pool.query(text, values)
    },
  }
  const boss = new PgBoss({ db, supervise: false, schedule: false })
  boss.on('error', () => {})
  let stats: pg.Client | undefined
  // As for our server (bench.ts's startServer): autovacuum's analyze, when the server has it off.
  await acquireAutoAnalyze(url, ctx.line)
  try {
    await boss.start()
    const queue = 'bench'
    await boss.createQueue(queue)
    let emptyFetches = 0

    const work = async (count: number) => {
      let inserted = 0
      let completed = 0
      const times: number[] = []
      const stopAt = Date.now() + o.limitMs
      const t0 = performance.now()
      let tEnd = 0
      const producer = async () => {
        while (inserted < count && Date.now() < stopAt) {
          const n = Math.min(BATCH, count - inserted)
          if (inserted - completed + n > o.outstanding) {
            await sleep(2)
            continue
          }
          inserted += n
          await boss.insert(Array.from({ length: n }, () => ({ name: queue, data: { ok: true } })))
        }
      }
      const worker = async () => {
        while (completed < count && Date.now() < stopAt) {
          const jobs = await boss.fetch(queue, { batchSize: FETCH })
          if (!jobs?.length) {
            emptyFetches++
            await sleep(5)
            continue
          }
          await boss.complete(
            queue,
            jobs.map((j) => j.id),
          )
          completed += jobs.length
          const now = performance.now() - t0
          for (let i = 0; i < jobs.length; i++) times.push(now)
          if (completed >= count && !tEnd) tEnd = performance.now()
        }
      }
      await Promise.all([...Array.from({ length: PRODUCERS }, producer), ...Array.from({ length: WORKERS }, worker)])
      return { inserted, completed, times, seconds: ((tEnd || performance.now()) - t0) / 1000 }
    }

    const warm = await work(o.warmup)
    stats = await settleTables(url, o.analyze)
    emptyFetches = 0
    const window = await counters.begin()
    const scans0 = await tableScans(stats, 'pgboss.job')
    const s0 = statements
    const [p0, l0] = [await ctx.postgresCpuByPid(counters.dbName), cpuOfThisProcess()]
    const m0 = machineTicks()
    const run = await work(o.count)
    const m1 = machineTicks()
    const [p1, l1] = [await ctx.postgresCpuByPid(counters.dbName), cpuOfThisProcess()]
    const s1 = statements
    const pgw = await window.end(async () => {
      await boss.stop({ graceful: false, wait: true }).catch(() => {})
      await pool.end()
    })
    const scans1 = await tableScans(stats, 'pgboss.job')
    const { rows } = await stats.query<{ state: string; n: number }>(
      `SELECT state::text, count(*)::int AS n FROM pgboss.job WHERE name = $1 GROUP BY state`,
      [queue],
    )
    const total = o.warmup + o.count
    const inDb = rows.map((r) => `${r.state}:${r.n}`).join(',') || 'none'
    const ok =
      run.completed === o.count &&
      warm.completed === o.warmup &&
      rows.length === 1 &&
      rows[0]?.state === 'completed' &&
      rows[0].n === total
    return {
      system: 'pg-boss',
      tasks: run.inserted,
      completed: run.completed,
      errors: 0,
      seconds: run.seconds,
      times: run.times,
      clientStatements: s1 - s0,
      // pg-boss runs in this process: its CPU is the load generator's.
      appCpuS: l1 - l0,
      postgresCpuS: backendDelta(p0, p1),
      loadgenCpuS: l1 - l0,
      pg: pgw,
      seqScans: scans1.scans - scans0.scans,
      seqRows: scans1.rows - scans0.rows,
      check: ok ? 'ok' : `FAILED(db=${inDb})`,
      extra: {
        version: (await import('pg-boss/package.json', { with: { type: 'json' } })).default.version,
        producers: PRODUCERS,
        batch: BATCH,
        workers: WORKERS,
        fetch_size: FETCH,
        empty_fetches: emptyFetches,
        ...machineLoad(m0, m1, run.seconds, backendDelta(p0, p1) + (l1 - l0)),
      },
    }
  } finally {
    await boss.stop({ graceful: false, wait: true }).catch(() => {})
    if (!pool.ended) await pool.end().catch(() => {})
    await releaseAutoAnalyze(url)
    await stats?.end().catch(() => {})
    await counters.close()
    await drop()
  }
}

/** The figures of one run, per task, as `key=value` fields. */
function figures(r: Run, round: number, o: Options) {
  const per = (x: number) => x / Math.max(1, r.completed)
  const steady = steadyRate(r.times)
  const wal = r.pg.wal
  return {
    system: r.system,
    round,
    ...r.extra,
    outstanding_max: o.outstanding,
    warmup: o.warmup,
    analyzed: o.analyze ? 'yes' : 'no',
    // Transactions of the stand-in for autovacuum's analyze in the window (left out of commits and WAL).
    autoanalyze_transactions: r.pg.leftOutTransactions,
    tasks: r.tasks,
    completed: r.completed,
    errors: r.errors,
    seconds: r.seconds,
    overall_per_sec: Math.round(r.completed / r.seconds),
    steady_per_sec: steady ? Math.round(steady.rate) : 'n/a',
    steady_span_s: steady ? (steady.to - steady.from) / 1000 : 'n/a',
    statements_per_task: per(r.clientStatements),
    ...(r.pg.statements === null ? {} : { pg_statements_per_task: per(r.pg.statements) }),
    commits_per_task: r.pg.commits === null ? 'n/a' : per(r.pg.commits),
    rollbacks: r.pg.rollbacks ?? 'n/a',
    wal_commits_per_task: typeof wal === 'string' ? 'n/a' : per(wal.commits),
    wal_bytes_per_task: typeof wal === 'string' ? 'n/a' : Math.round(per(wal.bytes)),
    wal_records_per_task: typeof wal === 'string' ? 'n/a' : per(wal.records),
    wal_fpw_records_per_task: typeof wal === 'string' ? 'n/a' : per(wal.fpwRecords),
    cluster_wal_bytes_per_task: Math.round(per(r.pg.clusterWalBytes)),
    ...(typeof wal === 'string' ? { wal_note: wal } : {}),
    app_cpu_us_per_task: Math.round(per(r.appCpuS) * 1e6),
    postgres_cpu_us_per_task: Math.round(per(r.postgresCpuS) * 1e6),
    loadgen_cpu_us_per_task: Math.round(per(r.loadgenCpuS) * 1e6),
    table_seq_scans_per_task: per(r.seqScans),
    table_seq_rows_per_task: Math.round(per(r.seqRows)),
    cpus: cpus().length,
    check: r.check,
  }
}

/** Where a run's WAL went: the kinds of record with the most bytes, per task. */
function walKinds(ctx: BenchContext, r: Run, round: number) {
  if (typeof r.pg.wal === 'string') return
  ctx.line('steady_wal_kinds', { system: r.system, round, ...topWalKinds(r.pg.wal, Math.max(1, r.completed)) })
}

/** BENCH_POOL_SIZES: pool sizes to compare (`4,10,20,40`), or undefined. */
export function parsePoolSizes(v: string | undefined): number[] | undefined {
  if (!v) return undefined
  const sizes = v.split(',').map((x) => Number(x.trim()))
  if (sizes.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`BENCH_POOL_SIZES: whole numbers, got "${v}"`)
  return sizes
}

/** Round r of a comparison runs the sizes starting at the r-th, so no size always runs first (or last). */
export function rotated<T>(xs: readonly T[], round: number): T[] {
  const k = (round - 1) % Math.max(1, xs.length)
  return [...xs.slice(k), ...xs.slice(0, k)]
}

/**
 * BENCH_POOL_SIZES=4,10,20,40: ours alone (pg-boss does not use our pool), the server run
 * with each DATABASE_POOL_MAX in turn, BENCH_POOL_ROUNDS (3) rounds (each round in another
 * order); per size the median of the rounds, and its ratio to the first size listed in
 * the same round (the median of the rounds' ratios).
 */
async function steadyByPool(ctx: BenchContext, o: Options, sizes: number[], rounds: number) {
  const byPool = new Map<number, ReturnType<typeof figures>[]>()
  let failed = false
  for (let round = 1; round <= rounds; round++) {
    for (const size of rotated(sizes, round)) {
      const f = figures(await runOurs(ctx, o, size), round, o)
      ctx.line('steady_pool', { pool_max: size, ...f })
      if (f.check !== 'ok') failed = true
      byPool.set(size, [...(byPool.get(size) ?? []), f])
    }
  }
  const base = sizes[0] as number
  const rate = (f: ReturnType<typeof figures>) => Number(f.steady_per_sec)
  for (const size of sizes) {
    const runs = byPool.get(size) ?? []
    const m = (k: string) => median(runs.map((f) => Number((f as Record<string, unknown>)[k])))
    ctx.line('steady_pool_median', {
      pool_max: size,
      rounds,
      steady_per_sec: Math.round(m('steady_per_sec')),
      steady_min: Math.min(...runs.map(rate)),
      steady_max: Math.max(...runs.map(rate)),
      [`vs_pool_${base}`]: median(runs.map((f, i) => rate(f) / rate((byPool.get(base) ?? [])[i] ?? f))),
      overall_per_sec: Math.round(m('overall_per_sec')),
      statements_per_task: m('statements_per_task'),
      commits_per_task: m('commits_per_task'),
      wal_commits_per_task: m('wal_commits_per_task'),
      app_cpu_us_per_task: Math.round(m('app_cpu_us_per_task')),
      postgres_cpu_us_per_task: Math.round(m('postgres_cpu_us_per_task')),
      other_cores: m('other_cores'),
    })
  }
  if (failed) {
    console.log('steady note=a_run_failed_its_check')
    process.exitCode = 1
  }
}

export async function benchSteady(ctx: BenchContext) {
  if (!ctx.onPostgres) {
    ctx.line('steady', { note: 'needs_postgres (set DATABASE_URL=postgres://…)' })
    return
  }
  const rounds = Number(process.env.BENCH_STEADY_ROUNDS ?? 1)
  const o: Options = {
    count: Number(process.env.BENCH_STEADY_TASKS ?? 20_000),
    warmup: Number(process.env.BENCH_STEADY_WARMUP ?? 2000),
    analyze: process.env.BENCH_STEADY_ANALYZE !== '0',
    outstanding: Number(process.env.BENCH_STEADY_OUTSTANDING ?? 1000),
    limitMs: Number(process.env.BENCH_STEADY_LIMIT_SECONDS ?? 180) * 1000,
  }
  const poolSizes = parsePoolSizes(process.env.BENCH_POOL_SIZES)
  if (poolSizes) return steadyByPool(ctx, o, poolSizes, Number(process.env.BENCH_POOL_ROUNDS ?? 3))
  const ratios: { steady: number; overall: number }[] = []
  const all: { ours: ReturnType<typeof figures>; boss: ReturnType<typeof figures> }[] = []
  let failed = false
  for (let round = 1; round <= rounds; round++) {
    const oursRun = await runOurs(ctx, o)
    const ours = figures(oursRun, round, o)
    ctx.line('steady', ours)
    walKinds(ctx, oursRun, round)
    const bossRun = await runBoss(ctx, o)
    const boss = figures(bossRun, round, o)
    ctx.line('steady', boss)
    walKinds(ctx, bossRun, round)
    all.push({ ours, boss })
    if (ours.check !== 'ok' || boss.check !== 'ok') failed = true
    const r = {
      steady: Number(ours.steady_per_sec) / Number(boss.steady_per_sec),
      overall: ours.overall_per_sec / boss.overall_per_sec,
    }
    ratios.push(r)
    ctx.line('steady_ratio', { round, ours_vs_pgboss_steady: r.steady, ours_vs_pgboss_overall: r.overall })
  }
  if (rounds > 1) {
    const m = (side: 'ours' | 'boss', k: keyof ReturnType<typeof figures>) =>
      median(all.map((x) => Number(x[side][k])).filter((v) => Number.isFinite(v)))
    for (const side of ['ours', 'boss'] as const) {
      ctx.line('steady_median', {
        system: side === 'ours' ? 'agenticcp' : 'pg-boss',
        rounds,
        steady_per_sec: Math.round(m(side, 'steady_per_sec')),
        overall_per_sec: Math.round(m(side, 'overall_per_sec')),
        statements_per_task: m(side, 'statements_per_task'),
        commits_per_task: m(side, 'commits_per_task'),
        wal_commits_per_task: m(side, 'wal_commits_per_task'),
        wal_bytes_per_task: Math.round(m(side, 'wal_bytes_per_task')),
        app_cpu_us_per_task: Math.round(m(side, 'app_cpu_us_per_task')),
        postgres_cpu_us_per_task: Math.round(m(side, 'postgres_cpu_us_per_task')),
      })
    }
    ctx.line('steady_ratio_median', {
      rounds,
      ours_vs_pgboss_steady: median(ratios.map((r) => r.steady)),
      ours_vs_pgboss_overall: median(ratios.map((r) => r.overall)),
    })
  }
  const statementsHow = all[0]?.ours.pg_statements_per_task === undefined
  for (const how of [
    'steady: how each figure is taken (after an unmeasured warm-up and, unless analyzed=no, an ANALYZE; with autovacuum off on the server, the bench stands in for its analyze all along, see the autoanalyze lines)',
    'steady_per_sec: completions between the 10th and 90th percentile of the run’s completion times (ours: the heartbeat answer acknowledging the report; pg-boss: complete() returning), over that span; overall_per_sec: all of them over first create → last completion',
    statementsHow
      ? 'statements_per_task: sent by the client (pg_stat_statements is not in shared_preload_libraries): ours, the server’s agenticcp_db_statements_total (transaction control included, the sweep’s included); pg-boss, calls of its driver (one pool.query each, autocommit)'
      : 'statements_per_task: sent by the client (ours, the server’s agenticcp_db_statements_total; pg-boss, calls of its driver); pg_statements_per_task: pg_stat_statements calls in the scratch database, which also counts the statements of foreign-key checks (pg-boss: one per job inserted)',
    'commits_per_task: pg_stat_database.xact_commit of the scratch database (read-only transactions included); wal_commits_per_task: COMMIT records in its WAL (transactions that wrote, each a WAL flush); both without the autoanalyze_transactions of the bench’s stand-in for autovacuum’s analyze (autoanalyze lines; scripts/bench/autoanalyze.ts), whose WAL and CPU are left out too',
    'wal_bytes_per_task: the WAL records of the window that belong to the scratch database (pg_waldump over the window, records naming its relations and the rest of their transactions, 8-byte aligned); cluster_wal_bytes_per_task: pg_current_wal_lsn() diff, the whole cluster, an upper bound when anything else writes',
    'table_seq_scans_per_task, table_seq_rows_per_task: sequential scans of the task table (pg-boss: pgboss.job and its partitions) and the rows they read (pg_stat_user_tables); steady_wal_kinds: the kinds of WAL record with the most bytes, records/bytes per task',
    'app_cpu_us_per_task: ours, the server process (/proc/<pid>/stat); pg-boss, this process (it runs in it, with its producers and workers); postgres_cpu_us_per_task: the scratch database’s backends (/proc/<pid>/stat of pg_stat_activity’s pids), not the WAL writer, checkpointer or autovacuum launcher',
  ])
    console.log(`# ${how}`)
  if (failed) {
    console.log('steady note=a_run_failed_its_check')
    process.exitCode = 1
  }
}
