/**
 * `npm run bench [-- sweep|heartbeat|statistics|lifecycle|peers|read|streams|logs|steady|backlog|fanout|scale|worker|queue-plan|statements|rollout]`:
 * prints one `key=value` line per figure (`fanout`, `scale`, `worker`, `queue-plan`, `statements` and `rollout` run only when named).
 *
 * Database: PGlite in memory by default; with DATABASE_URL=postgres://… a scratch
 * database is created on that server for the run and dropped afterwards.
 *
 * - sweep: 1,000 online agents × 10 slots (a spread of capabilities and providers) and
 *   10,000 pending tasks of mixed priority and requirements, one sweep; then the same
 *   fleet with 100,000 pending tasks, to show how the cost grows with the queue.
 * - lifecycle: the real server (src/server.ts) in a child process, 100 simulated agents
 *   over HTTP heartbeating, starting and completing tasks that a producer creates;
 *   completed tasks per second and create→assigned latency percentiles.
 * - streams: live event streams (1, then 1,000) on the real server while tasks are created:
 *   database statements per second and server CPU (Postgres only).
 * - logs: 50 agents writing task output at once (ingest MiB/s), then 100 followers of one
 *   task's log (delay from a write to each follower, p50/p99).
 * - scale: 1, then 2 server processes over one Postgres database and one Redis, the load
 *   spread round-robin over them: heartbeats/s, liveness/s and batched-lifecycle tasks/s,
 *   with the servers', Postgres's and the load generator's CPU per 1,000 (Postgres only).
 * - worker: what a connection per request costs: the same reads, one at a time, from the
 *   Node server (pooled), the Worker under wrangler dev on the Neon driver (through
 *   scripts/ws-proxy.ts) and on a Hyperdrive binding (wrangler's local stand-in); latency
 *   and Postgres sessions opened per request (Postgres only; runs only when named).
 * - queue-plan: the heartbeat fill's plan and time with each form of the fit rule (Postgres
 *   only; runs only when named).
 * - fanout: what one principal's many waiting requests cost while nothing happens: 1, then
 *   1,000 followers of one idle task's log, and 1, then 500 concurrent long polls of one
 *   agent; statements per second and the server's CPU (Postgres only; runs only when named).
 * - steady, backlog (scripts/bench/; Postgres, run by default there): the batched lifecycle's
 *   steady state beside pg-boss, with statements, commits, WAL and CPU per task; heartbeat,
 *   create and sweep times with an empty queue and with 40,000 tasks nothing can take at its
 *   head (BENCH_BACKLOG=200000: 200,000 pending, half of them placeable by nobody).
 * On a Postgres server with autovacuum off (this machine's), every phase that runs the server
 * (and steady's pg-boss) has the bench stand in for autovacuum's analyze on its database
 * (scripts/bench/autoanalyze.ts; BENCH_AUTOANALYZE=0 turns it off). BENCH_POOL_SIZES=4,10,20
 * with `heartbeat` or `steady` compares the server's DATABASE_POOL_MAX sizes in one run.
 * - statements: statements the server sends per request of each kind the steady workload
 *   makes, one at a time on an idle server (Postgres only; runs only when named).
 * - rollout (scripts/bench/rollout.ts; runs only when named): 1,000 simulated agents, a rollout
 *   with maxConcurrency 100 beside the same tasks created directly 100 at a time.
 * Every phase is bounded in count and time and stops by itself.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { setMaxListeners } from 'node:events'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { cpus } from 'node:os'
import type { Options as AutocannonOptions } from 'autocannon'
import { sql } from 'drizzle-orm'
import pg from 'pg'
import { Agent, type Provider } from '../src/agent'
import { silentAgentLogger } from '../src/agent/log'
import { type Database, rowsOf } from '../src/db/client'
import { connectDatabase, isPostgresUrl } from '../src/db/connect'
import { agentColumns, FITS_QUEUE_SQL, meetsRequirementsSql, queueOrderSql, taskColumns } from '../src/domain/fit'
import { loadConfig } from '../src/env'
import { ManualClock } from '../src/lib/clock'
import { signToken } from '../src/lib/tokens'
import { runSweep } from '../src/services/scheduler'
import { acquireAutoAnalyze, analyzeNow, releaseAutoAnalyze } from './bench/autoanalyze'
import { benchBacklog } from './bench/backlog'
import type { BenchContext } from './bench/context'
import { benchRollout } from './bench/rollout'
import { median } from './bench/stats'
import { benchSteady, parsePoolSizes, rotated } from './bench/steady'
import { writeHyperdriveConfig } from './hyperdrive-local'

if (existsSync('.dev.vars')) process.loadEnvFile('.dev.vars')
const only = process.argv[2]
const baseUrl = process.env.DATABASE_URL ?? ''
const onPostgres = isPostgresUrl(baseUrl)

function line(name: string, fields: Record<string, string | number>) {
  console.log(
    [
      name,
      ...Object.entries(fields).map(
        ([k, v]) => `${k}=${typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(3) : v}`,
      ),
    ].join(' '),
  )
}

/** A scratch database: a new Postgres database on DATABASE_URL's server, or PGlite in memory. */
async function scratch(): Promise<{ database: Database; url: string; drop: () => Promise<void> }> {
  if (!onPostgres) {
    const database = await connectDatabase('memory://')
    return { database, url: 'memory://', drop: () => database.close() }
  }
  const name = `act_bench_${process.pid}_${Date.now().toString(36)}`
  const admin = new pg.Client({ connectionString: baseUrl })
  await admin.connect()
  await admin.query(`CREATE DATABASE ${name}`)
  const u = new URL(baseUrl)
  u.pathname = `/${name}`
  const url = u.toString()
  const database = await connectDatabase(url, { migrate: true, poolMax: 10 })
  return {
    database,
    url,
    drop: async () => {
      await database.close()
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      await admin.end()
    },
  }
}

const PROVIDERS = ['aws', 'azure', 'gcp', 'ncp', 'oci', 'alibaba', 'onprem', 'other']

/**
 * 1,000 agents: all have cpu and docker, every other one gpu, every fourth arm; providers
 * round-robin. Tasks: 50 % no requirement, 30 % docker, 15 % gpu, 5 % arm on one provider;
 * priorities 1–10. Every task fits some agent, so with 10,000 slots one sweep can place
 * all of the first 10,000.
 */
async function seed(db: Database['db'], now: Date, agentCount: number, taskCount: number) {
  await db.execute(sql`TRUNCATE agents, tasks, task_logs, task_log_totals, events, scheduler_state`)
  await db.execute(sql`
    INSERT INTO agents (id, name, provider, region, capabilities, labels, max_concurrent_tasks, status,
                        last_heartbeat_at, created_at, updated_at)
    SELECT gen_random_uuid(), 'bench-' || i, (${sql.raw(`ARRAY[${PROVIDERS.map((p) => `'${p}'`).join(',')}]`)})[1 + i % 8],
           'region-' || (i % 4),
           ARRAY['cpu', 'docker'] || CASE WHEN i % 2 = 0 THEN ARRAY['gpu'] ELSE ARRAY[]::text[] END
                                  || CASE WHEN i % 4 = 0 THEN ARRAY['arm'] ELSE ARRAY[]::text[] END,
           '{}'::jsonb, 10, 'online', ${now}, ${now}, ${now}
      FROM generate_series(1, ${agentCount}) AS i`)
  await db.execute(sql`
    INSERT INTO tasks (id, name, type, priority, req_capabilities, req_provider, available_at, created_at, updated_at)
    SELECT gen_random_uuid(), 'bench-task-' || i, 'bench', 1 + (i * 7919) % 10,
           CASE WHEN i % 20 < 10 THEN ARRAY[]::text[]
                WHEN i % 20 < 16 THEN ARRAY['docker']
                WHEN i % 20 < 19 THEN ARRAY['gpu']
                ELSE ARRAY['arm'] END,
           CASE WHEN i % 20 = 19 THEN (${sql.raw(`ARRAY[${PROVIDERS.map((p) => `'${p}'`).join(',')}]`)})[1 + (i / 20) % 2 * 4] END,
           ${now}, ${now}, ${now}
      FROM generate_series(1, ${taskCount}) AS i`)
  await db.execute(sql`ANALYZE agents`)
  await db.execute(sql`ANALYZE tasks`)
}

async function benchSweep() {
  const { database, drop } = await scratch()
  try {
    const config = loadConfig({ ENVIRONMENT: 'test', SECRET_KEY: 'b'.repeat(32), SWEEP_BATCH_SIZE: '10000' })
    const clock = new ManualClock(new Date('2026-01-01T00:00:00Z'))
    for (const tasks of [10_000, 100_000]) {
      await seed(database.db, clock.now(), 1000, tasks)
      const started = performance.now()
      const s = await runSweep({ db: database.db, clock, config })
      const seconds = (performance.now() - started) / 1000
      const [check] = await rowsOf<{ assigned: number; over: number }>(
        database.db,
        sql`SELECT (SELECT count(*)::int FROM tasks WHERE status = 'assigned') AS assigned,
                   (SELECT count(*)::int FROM agents WHERE active_tasks > max_concurrent_tasks) AS over`,
      )
      if (check?.assigned !== s.assigned || check.over !== 0) throw new Error(`inconsistent: ${JSON.stringify(check)}`)
      line('sweep', {
        driver: database.driver,
        agents: 1000,
        slots: 10_000,
        pending: tasks,
        assigned: s.assigned,
        seconds,
        assignments_per_sec: Math.round(s.assigned / seconds),
      })
    }
  } finally {
    await drop()
  }
}

async function freePort(): Promise<number> {
  const { createServer } = await import('node:net')
  return new Promise((resolve) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const address = srv.address()
      srv.close(() => resolve(typeof address === 'object' && address ? address.port : 0))
    })
  })
}

/** What stops a server's stand-in for autovacuum's analyze (autoanalyze.ts), once. */
const releases = new WeakMap<ChildProcess, () => Promise<void>>()

/**
 * The real server in a child process (request logging off: LOG_LEVEL=warn); resolves once it
 * answers. On a Postgres server with autovacuum off, the bench's stand-in for its analyze
 * runs on the server's database while the server lives (scripts/bench/autoanalyze.ts).
 */
async function startServer(
  url: string,
  secret: string,
  opts: { runtime?: 'node' | 'bun'; redisUrl?: string; env?: Record<string, string>; built?: boolean } = {},
): Promise<{ child: ChildProcess; base: string }> {
  const port = await freePort()
  // BENCH_SERVER_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles the server.
  const extra = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean)
  // built: the production bundle (`npm run build`), run by Node without tsx.
  const [cmd, args] =
    opts.runtime === 'bun'
      ? ['node_modules/.bin/bun', ['src/server.ts']]
      : opts.built
        ? [process.execPath, [...extra, 'dist/server.js']]
        : [process.execPath, [...extra, '--import', 'tsx', 'src/server.ts']]
  const child = spawn(cmd, args, {
    env: {
      PATH: process.env.PATH ?? '',
      PORT: String(port),
      HOST: '127.0.0.1',
      DATABASE_URL: url,
      REDIS_URL: opts.redisUrl ?? '',
      SECRET_KEY: secret,
      ENVIRONMENT: 'production',
      LOG_LEVEL: process.env.BENCH_SERVER_LOG_LEVEL ?? 'warn',
      SWEEP_INTERVAL_SECONDS: '1',
      HEARTBEAT_INTERVAL_SECONDS: '5',
      // The load generator is one token subject; a write limit would measure the limiter.
      RATE_LIMIT_PER_MINUTE: '0',
      // Passed through when set, to measure the heartbeat batches' settings and the pool's size.
      ...Object.fromEntries(
        ['HEARTBEAT_BATCH_SIZE', 'HEARTBEAT_BATCHES_IN_FLIGHT', 'DATABASE_POOL_MAX'].flatMap((k) => {
          const v = process.env[k]
          return v ? [[k, v]] : []
        }),
      ),
      ...opts.env,
    },
    stdio: ['ignore', process.env.BENCH_SERVER_LOG_LEVEL ? 'pipe' : 'inherit', 'inherit'],
  })
  if (process.env.BENCH_SERVER_LOG_LEVEL)
    child.stdout?.pipe((await import('node:fs')).createWriteStream('/tmp/bench-server.log'))
  const base = `http://127.0.0.1:${port}`
  if (isPostgresUrl(url)) {
    await acquireAutoAnalyze(url, line)
    let released: Promise<void> | undefined
    const release = () => {
      released ??= releaseAutoAnalyze(url)
      return released
    }
    releases.set(child, release)
    child.once('exit', () => void release())
  }
  const deadline = Date.now() + 60_000
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`server exited ${child.exitCode}`)
    try {
      if ((await fetch(`${base}/api/v1/health/readiness`)).ok) return { child, base }
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  child.kill('SIGKILL')
  throw new Error('server did not become ready in 60 s')
}

/** JSON calls to the server under test, with `token` unless a call names another. */
function jsonApi(base: string, token: string) {
  return async (path: string, init: { method?: string; token?: string; body?: unknown } = {}) => {
    const res = await fetch(`${base}${path}`, {
      method: init.method ?? 'GET',
      headers: { authorization: `Bearer ${init.token ?? token}`, 'content-type': 'application/json' },
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
    })
    const text = await res.text()
    // biome-ignore lint/suspicious/noExplicitAny: the bench reads answers field by field
    return { status: res.status, body: (text ? JSON.parse(text) : null) as any }
  }
}

const percentile = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? Number.NaN
}

type Mode = 'single' | 'batched' | 'agents'

/**
 * lifecycle: the real server, 100 simulated agents with 4 slots each over HTTP, and one
 * producer; every task is created, placed, started and completed. Two protocols:
 * - single: one request per step (POST /tasks per task; long-poll heartbeat; PATCH running;
 *   PATCH completed),
 * - batched: POST /tasks/batch (50 a request) and reports batched in the next heartbeat
 *   (running and completed for every task of the previous answer; one request per agent cycle).
 * - agents: the producer of `batched`, and 100 in-process `Agent` instances (src/agent, the
 *   runner's library) with a handler that returns at once: what the shipped runner costs.
 * Phase 1 creates BENCH_LIFECYCLE_TASKS as fast as the server takes them (throughput, with
 * statements, server CPU and Postgres CPU per task); phase 2 creates at half that rate, so
 * agents have free slots (create→assigned latency from the server's own timestamps).
 */
async function benchLifecycle(mode: Mode) {
  const AGENTS = 100
  const SLOTS = 4
  const TASKS = Number(process.env.BENCH_LIFECYCLE_TASKS ?? (mode === 'single' ? 4000 : 20_000))
  const BATCH = 50
  const IN_FLIGHT = mode === 'single' ? 48 : 4
  const LIMIT_MS = 150_000
  const secret = 's'.repeat(40)
  const runtime = process.env.BENCH_RUNTIME === 'bun' ? 'bun' : 'node'
  const { database, url, drop } = await scratch()
  // PGlite lives inside the server process; the scratch handle here only served the migration.
  if (!onPostgres) await database.close()
  const dbName = onPostgres ? new URL(url).pathname.slice(1) : ''
  const { child, base } = await startServer(url, secret, { runtime })
  const stopAt = Date.now() + LIMIT_MS
  try {
    const admin = await signToken({ secretKey: secret, algorithm: 'HS256' }, { sub: 'bench', role: 'admin' }, 60)
    const api = jsonApi(base, admin)

    const agents: { id: string; token: string }[] = []
    // agents mode: the runner's library; every handled task feeds the phase running then.
    let onHandled: (t: Work) => void = () => {}
    const runners: Agent[] = []
    if (mode === 'agents') {
      const reg = await api('/api/v1/registration-tokens', { method: 'POST', body: { maxUses: AGENTS } })
      for (let i = 0; i < AGENTS; i++) {
        const agent = new Agent({
          url: base,
          token: reg.body.token,
          name: `lib-${i}`,
          provider: PROVIDERS[i % 8] as Provider,
          capabilities: ['cpu'],
          slots: SLOTS,
          stateDir: false,
          maxWaitSeconds: 2,
          logger: silentAgentLogger,
        })
        agent.handle('bench.lifecycle', (task) => {
          onHandled(task as unknown as Work)
          return { ok: true }
        })
        runners.push(agent)
      }
      await Promise.all(runners.map((a) => a.start()))
    }
    for (let i = 0; mode !== 'agents' && i < AGENTS; i++) {
      const r = await api('/api/v1/agents', {
        method: 'POST',
        body: { name: `sim-${i}`, provider: PROVIDERS[i % 8], capabilities: ['cpu'], maxConcurrentTasks: SLOTS },
      })
      agents.push({ id: r.body.id, token: r.body.token })
    }
    if (onPostgres) await analyzeNow(url) // the agents just registered (a no-op with autovacuum on)

    type Work = { id: string; attempt: number; createdAt: string; assignedAt: string }
    const phase = async (count: number, ratePerSec?: number) => {
      const latencies: number[] = []
      let completed = 0
      let created = 0
      let errors = 0
      const started = performance.now()
      const create = async () => {
        if (mode === 'single') {
          created++
          const r = await api('/api/v1/tasks', { method: 'POST', body: { name: 'lc', type: 'bench.lifecycle' } })
          if (r.status !== 201) errors++
          return
        }
        const n = Math.min(BATCH, count - created)
        created += n
        const tasks = Array.from({ length: n }, () => ({ name: 'lc', type: 'bench.lifecycle' }))
        const r = await api('/api/v1/tasks/batch', { method: 'POST', body: { tasks } })
        if (r.status !== 201) errors += n
      }
      const producer = async () => {
        if (ratePerSec) {
          const inflight: Promise<void>[] = []
          const perRequest = mode === 'single' ? 1 : BATCH
          while (created < count && Date.now() < stopAt) {
            inflight.push(create())
            await new Promise((r) => setTimeout(r, (1000 * perRequest) / ratePerSec))
          }
          await Promise.all(inflight)
          return
        }
        const worker = async () => {
          while (created < count && Date.now() < stopAt) await create()
        }
        await Promise.all(Array.from({ length: IN_FLIGHT }, worker))
      }
      const single = async (a: { id: string; token: string }) => {
        while (completed < count && Date.now() < stopAt) {
          // Long poll: the server answers as soon as work lands on this agent.
          const hb = await api('/api/v1/agents/heartbeat', {
            method: 'POST',
            token: a.token,
            body: { agentId: a.id, waitSeconds: 2 },
          })
          const work: Work[] = hb.body?.assignments ?? []
          await Promise.all(
            work.map(async (t) => {
              latencies.push(new Date(t.assignedAt).getTime() - new Date(t.createdAt).getTime())
              const path = `/api/v1/tasks/${t.id}/status`
              const run = await api(path, {
                method: 'PATCH',
                token: a.token,
                body: { status: 'running', attempt: t.attempt },
              })
              const done = await api(path, {
                method: 'PATCH',
                token: a.token,
                body: { status: 'completed', attempt: t.attempt, result: { ok: true } },
              })
              if (run.status === 200 && done.status === 200) completed++
              else errors++
            }),
          )
        }
      }
      const batched = async (a: { id: string; token: string }) => {
        let reports: Record<string, unknown>[] = []
        while ((completed < count || reports.length) && Date.now() < stopAt) {
          const hb = await api('/api/v1/agents/heartbeat', {
            method: 'POST',
            token: a.token,
            body: { agentId: a.id, waitSeconds: reports.length ? 0 : 2, reports },
          })
          for (const [i, r] of (hb.body?.reports ?? []).entries()) {
            if (!r.ok) errors++
            else if ((reports[i] as { status: string }).status === 'completed') completed++
          }
          reports = []
          for (const t of (hb.body?.assignments ?? []) as Work[]) {
            latencies.push(new Date(t.assignedAt).getTime() - new Date(t.createdAt).getTime())
            reports.push({ taskId: t.id, attempt: t.attempt, status: 'running' })
            reports.push({ taskId: t.id, attempt: t.attempt, status: 'completed', result: { ok: true } })
          }
        }
      }
      // agents mode: the runners work on their own; completion is read from the service.
      const watch = async () => {
        onHandled = (t) => latencies.push(new Date(t.assignedAt).getTime() - new Date(t.createdAt).getTime())
        const before = (await api('/api/v1/tasks/statistics')).body.byStatus.completed ?? 0
        while (completed < count && Date.now() < stopAt) {
          await new Promise((r) => setTimeout(r, 100))
          completed = ((await api('/api/v1/tasks/statistics')).body.byStatus.completed ?? 0) - before
        }
      }
      await Promise.all([
        producer(),
        ...(mode === 'agents' ? [watch()] : agents.map(mode === 'single' ? single : batched)),
      ])
      return { created, completed, errors, seconds: (performance.now() - started) / 1000, latencies }
    }

    // 1. Throughput: the producer as fast as the server takes it (a backlog may build).
    let full = { created: 0, completed: 0, errors: 0, seconds: 0, latencies: [] as number[] }
    const client0 = process.cpuUsage()
    const cost = await costOf(base, child.pid as number, dbName, async () => {
      full = await phase(TASKS)
      return Math.max(1, full.completed)
    })
    const client = process.cpuUsage(client0)
    const perSec = full.completed / full.seconds
    // 2. Latency while agents have free slots: an open-loop producer at half that rate.
    const rate = Math.max(5, Math.round(perSec / 2))
    const calm = await phase(Math.min(TASKS, rate * 10), rate)
    line('lifecycle', {
      mode,
      runtime,
      driver: onPostgres ? 'node-postgres' : 'pglite',
      agents: AGENTS,
      slots_per_agent: SLOTS,
      tasks: full.created,
      completed: full.completed,
      errors: full.errors + calm.errors,
      seconds: full.seconds,
      completed_per_sec: Math.round(perSec),
      statements_per_task: cost.statementsPerOp,
      server_cpu_us_per_task: Math.round(cost.serverCpuUsPerOp),
      postgres_cpu_us_per_task: Math.round(cost.postgresCpuUsPerOp),
      bench_client_cpu_us_per_task: Math.round((client.user + client.system) / Math.max(1, full.completed)),
      backlog_create_to_assigned_p50_ms: percentile(full.latencies, 50),
      backlog_create_to_assigned_p99_ms: percentile(full.latencies, 99),
      free_slots_rate_per_sec: rate,
      create_to_assigned_p50_ms: percentile(calm.latencies, 50),
      create_to_assigned_p99_ms: percentile(calm.latencies, 99),
      cpus: cpus().length,
    })
    await Promise.all(runners.map((a) => a.stop(5)))
    return perSec
  } finally {
    await stopServer(child)
    if (onPostgres) await drop()
  }
}

/**
 * peers: pg-boss 10 (a devDependency of this bench) on the same Postgres, in this process:
 * BENCH_PEERS_JOBS jobs inserted 50 at a time while 8 workers fetch up to 10 and complete
 * them, as a queue library does without HTTP; jobs/s beside our batched lifecycle's tasks/s
 * (over HTTP, with fencing and events) measured in the same run.
 */
async function benchPeers(ours: number | undefined) {
  if (!onPostgres) {
    console.log('peers note=needs_postgres')
    return
  }
  const { default: PgBoss } = await import('pg-boss')
  const JOBS = Number(process.env.BENCH_PEERS_JOBS ?? 20_000)
  const { url, drop } = await scratch()
  const boss = new PgBoss({ connectionString: url, max: 10, supervise: false, schedule: false })
  boss.on('error', () => {})
  try {
    await boss.start()
    const queue = 'bench'
    await boss.createQueue(queue)
    let inserted = 0
    let done = 0
    const started = performance.now()
    const producer = async () => {
      while (inserted < JOBS) {
        const n = Math.min(50, JOBS - inserted)
        inserted += n
        await boss.insert(Array.from({ length: n }, () => ({ name: queue, data: { ok: true } })))
      }
    }
    const worker = async () => {
      while (done < JOBS) {
        const jobs = await boss.fetch(queue, { batchSize: 10 })
        if (!jobs?.length) {
          await new Promise((r) => setTimeout(r, 5))
          continue
        }
        await boss.complete(
          queue,
          jobs.map((j) => j.id),
        )
        done += jobs.length
      }
    }
    await Promise.all([producer(), producer(), ...Array.from({ length: 8 }, worker)])
    const perSec = done / ((performance.now() - started) / 1000)
    line('peers', {
      peer: 'pg-boss',
      version: (await import('pg-boss/package.json', { with: { type: 'json' } })).default.version,
      jobs: done,
      jobs_per_sec: Math.round(perSec),
      ours_batched_tasks_per_sec: ours === undefined ? 'not_run' : Math.round(ours),
      ours_vs_peer: ours === undefined ? 'not_run' : ours / perSec,
    })
  } finally {
    await boss.stop({ graceful: false, wait: true }).catch(() => {})
    await drop()
  }
}

/** Whether Redis at `url` answers a PING (500 ms to connect). */
async function redisAnswers(url: string): Promise<boolean> {
  const { Redis } = await import('ioredis')
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, connectTimeout: 500 })
  try {
    await r.connect()
    await r.ping()
    return true
  } catch {
    return false
  } finally {
    r.disconnect()
  }
}

/**
 * read: requests/s with autocannon (20 connections, 5 s each) for the agent-token reads
 * every agent makes — GET /api/v1/agents/{id} and the heartbeat — beside the same
 * process's bare GET /health/liveness (the ceiling), with and without Redis
 * (BENCH_REDIS_URL, default redis://127.0.0.1:6379 when it answers), on Node and Bun.
 */
async function benchRead() {
  const { default: autocannon } = await import('autocannon')
  const secret = 'r'.repeat(40)
  const redisUrl = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379'
  const redisUp = await redisAnswers(redisUrl)
  const runtimes = existsSync('node_modules/.bin/bun') ? (['node', 'bun'] as const) : (['node'] as const)
  const admin = await signToken({ secretKey: secret, algorithm: 'HS256' }, { sub: 'bench', role: 'admin' }, 60)
  const measure = async (opts: AutocannonOptions) => {
    const r = await autocannon({ connections: 20, duration: 5, ...opts })
    return { rps: Math.round(r.requests.average), non2xx: r.non2xx + r.errors }
  }
  const results = new Map<string, { get: number; hb: number }>()
  for (const runtime of runtimes) {
    for (const redis of redisUp ? [false, true] : [false]) {
      const { database, url, drop } = await scratch()
      if (!onPostgres) await database.close()
      const { child, base } = await startServer(url, secret, { runtime, redisUrl: redis ? redisUrl : '' })
      try {
        const agents: { id: string; token: string }[] = []
        for (let i = 0; i < 20; i++) {
          const res = await fetch(`${base}/api/v1/agents`, {
            method: 'POST',
            headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
            body: JSON.stringify({ name: `read-${i}`, provider: 'aws', maxConcurrentTasks: 1 }),
          })
          const a = (await res.json()) as { id: string; token: string }
          agents.push({ id: a.id, token: a.token })
        }
        // One agent per connection, as real agents would be.
        let next = 0
        const perConnection = (build: (a: { id: string; token: string }) => void) => ({
          setupClient: (client: { setHeaders(h: Record<string, string>): void; setBody(b: string): void }) => {
            const a = agents[next++ % agents.length] as { id: string; token: string }
            client.setHeaders({ authorization: `Bearer ${a.token}`, 'content-type': 'application/json' })
            build(a)
            client.setBody(JSON.stringify({ agentId: a.id }))
          },
        })
        const live = await measure({ url: `${base}/api/v1/health/liveness` })
        const getAgent = await measure({
          url: `${base}/api/v1/agents/${agents[0]?.id}`,
          headers: { authorization: `Bearer ${agents[0]?.token}` },
        })
        const heartbeat = await measure({
          url: `${base}/api/v1/agents/heartbeat`,
          method: 'POST',
          ...perConnection(() => {}),
        })
        results.set(`${runtime}:${redis}`, { get: getAgent.rps, hb: heartbeat.rps })
        line('read', {
          runtime,
          redis: redis ? 'on' : 'off',
          driver: onPostgres ? 'node-postgres' : 'pglite',
          liveness_rps: live.rps,
          get_agent_rps: getAgent.rps,
          heartbeat_rps: heartbeat.rps,
          get_agent_vs_liveness: getAgent.rps / live.rps,
          heartbeat_vs_liveness: heartbeat.rps / live.rps,
          non_2xx: live.non2xx + getAgent.non2xx + heartbeat.non2xx,
        })
      } finally {
        await stopServer(child)
        if (onPostgres) await drop()
      }
    }
  }
  for (const runtime of runtimes) {
    const off = results.get(`${runtime}:false`)
    const on = results.get(`${runtime}:true`)
    if (off && on) line('read_redis_speedup', { runtime, get_agent: on.get / off.get, heartbeat: on.hb / off.hb })
  }
  if (!redisUp) console.log(`read note=redis_unreachable url=${redisUrl.replace(/\/\/.*@/, '//…@')}`)
}

/**
 * statistics: 1,000 agents and 1,000,000 tasks (95 % finished over the last 30 days, the
 * rest pending, assigned or running), then GET statistics for the fleet and the queue as
 * the service computes them (no cache): the median of 5 calls each.
 */
async function benchStatistics() {
  const { agentStatistics, taskStatistics } = await import('../src/services/statistics')
  const { database, drop } = await scratch()
  try {
    const now = new Date()
    const db = database.db
    await seed(db, now, 1000, 0)
    const started = performance.now()
    await db.execute(sql`
      INSERT INTO tasks (id, name, type, priority, status, attempt, created_at, assigned_at, started_at, finished_at,
                         available_at, updated_at)
      SELECT gen_random_uuid(), 'stat-' || i, 'bench', 1 + i % 10, s.status, 1,
             f - make_interval(secs => 20 + i % 600), f - make_interval(secs => 10 + i % 300),
             f - make_interval(secs => 5 + i % 300), CASE WHEN s.done THEN f END, f, f
        FROM generate_series(1, 1000000) AS i,
             LATERAL (SELECT ${now}::timestamptz - make_interval(secs => (i * 2654435761::bigint % 2592000)::int) AS f) t,
             LATERAL (SELECT CASE WHEN i % 100 < 90 THEN 'completed' WHEN i % 100 < 93 THEN 'failed'
                                  WHEN i % 100 < 94 THEN 'timed_out' WHEN i % 100 < 95 THEN 'cancelled'
                                  WHEN i % 100 < 98 THEN 'pending' WHEN i % 100 < 99 THEN 'running' ELSE 'assigned' END AS status,
                             i % 100 < 95 AS done) s`)
    await db.execute(sql`ANALYZE tasks`)
    const seedSeconds = (performance.now() - started) / 1000
    const median = async (f: () => Promise<unknown>) => {
      const times: number[] = []
      for (let i = 0; i < 5; i++) {
        const t0 = performance.now()
        await f()
        times.push(performance.now() - t0)
      }
      return times.sort((a, b) => a - b)[2] ?? Number.NaN
    }
    const agentsMs = await median(() => agentStatistics(db))
    const tasksMs = await median(() => taskStatistics(db, now))
    const t = await taskStatistics(db, now)
    line('statistics', {
      driver: database.driver,
      tasks: t.total,
      agents: 1000,
      seed_seconds: seedSeconds,
      agents_statistics_ms: agentsMs,
      tasks_statistics_ms: tasksMs,
      finished_last_hour:
        t.recent.last60Minutes.completed + t.recent.last60Minutes.failed + t.recent.last60Minutes.timedOut,
    })
  } finally {
    await drop()
  }
}

/** CPU seconds (user + system) a process has used, from /proc/<pid>/stat. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
  return (Number(fields[11]) + Number(fields[12])) / 100 // utime, stime in clock ticks (100 Hz)
}

/**
 * streams: the real server on Postgres with N live event streams open (1, then 1,000) while
 * a writer creates 5 tasks a second for 15 s: statements per second the server sends to
 * Postgres (its own counter, agenticcp_db_statements_total), its CPU, and whether every
 * stream got every event. The streams share one reader of the log, so the cost should not
 * grow with N.
 */
async function benchStreams() {
  if (!onPostgres) {
    console.log('streams note=needs_postgres (set DATABASE_URL=postgres://…)')
    return
  }
  const { Agent } = await import('undici')
  const secret = 's'.repeat(40)
  const admin = await signToken({ secretKey: secret, algorithm: 'HS256' }, { sub: 'bench', role: 'admin' }, 60)
  const WINDOW_MS = 15_000
  const RATE = 5
  for (const n of [1, 1000]) {
    const { url, drop } = await scratch()
    const { child, base } = await startServer(url, secret, {
      env: { EVENT_STREAMS_PER_PRINCIPAL: '5000', EVENT_STREAMS_MAX: '5000', SWEEP_INTERVAL_SECONDS: '0' },
    })
    const dispatcher = new Agent({ connections: n + 10, bodyTimeout: 0, headersTimeout: 0 })
    const aborter = new AbortController()
    setMaxListeners(0, aborter.signal) // one listener per stream
    try {
      const statements = async () => {
        const text = await (await fetch(`${base}/metrics`)).text()
        return Number(/^agenticcp_db_statements_total (\d+)/m.exec(text)?.[1] ?? Number.NaN)
      }
      const received = new Array<number>(n).fill(0)
      let connected = 0
      const opened = Array.from({ length: n }, async (_, i) => {
        const res = await fetch(`${base}/api/v1/events?type=task.created`, {
          headers: { accept: 'text/event-stream', authorization: `Bearer ${admin}` },
          signal: aborter.signal,
          // @ts-expect-error undici's dispatcher option is not in the DOM fetch types
          dispatcher,
        })
        if (res.status !== 200) throw new Error(`stream ${i}: ${res.status}`)
        connected++
        const decoder = new TextDecoder()
        try {
          for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
            received[i] = (received[i] ?? 0) + (decoder.decode(chunk).match(/^event: task\.created$/gm)?.length ?? 0)
          }
        } catch {
          // aborted at the end
        }
      })
      const deadline = Date.now() + 60_000
      while (connected < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
      await new Promise((r) => setTimeout(r, 1000))
      const s0 = await statements()
      const c0 = cpuSeconds(child.pid as number)
      const t0 = performance.now()
      let created = 0
      while (performance.now() - t0 < WINDOW_MS) {
        const res = await fetch(`${base}/api/v1/tasks`, {
          method: 'POST',
          headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
          body: JSON.stringify({ name: `s-${created}`, type: 'bench.stream', scheduledAt: '2099-01-01T00:00:00Z' }),
        })
        if (res.status === 201) created++
        await res.text()
        await new Promise((r) => setTimeout(r, 1000 / RATE))
      }
      const seconds = (performance.now() - t0) / 1000
      const s1 = await statements()
      const c1 = cpuSeconds(child.pid as number)
      // Let the last events reach every stream before counting.
      const settle = Date.now() + 5_000
      while (received.some((r) => r < created) && Date.now() < settle) await new Promise((r) => setTimeout(r, 100))
      line('streams', {
        open: n,
        connected,
        seconds,
        tasks_created: created,
        db_statements_per_s: (s1 - s0) / seconds,
        db_statements_per_task: (s1 - s0) / created,
        server_cpu_ms_per_s: ((c1 - c0) * 1000) / seconds,
        streams_with_every_event: received.filter((r) => r >= created).length,
      })
      aborter.abort()
      await Promise.allSettled(opened)
    } finally {
      await dispatcher.close().catch(() => {})
      await stopServer(child)
      await drop()
    }
  }
}

/**
 * fanout: the real server on Postgres, idle but for one principal's waiting requests: N
 * followers of one running task's log (1, then 1,000) and N concurrent long polls of one
 * agent (1, then 500), each held for a 10 s window in which nothing is written; statements
 * per second the server sends to Postgres (agenticcp_db_statements_total) and its CPU.
 */
async function benchFanout() {
  if (!onPostgres) {
    console.log('fanout note=needs_postgres (set DATABASE_URL=postgres://…)')
    return
  }
  const { Agent: Dispatcher } = await import('undici')
  const secret = 'f'.repeat(40)
  const admin = await signToken({ secretKey: secret, algorithm: 'HS256' }, { sub: 'bench', role: 'admin' }, 60)
  const WINDOW_MS = 10_000
  const metric = async (base: string, name: string) => {
    const text = await (await fetch(`${base}/metrics`)).text()
    return Number(new RegExp(`^${name} (\\d+)`, 'm').exec(text)?.[1] ?? Number.NaN)
  }
  const cases = [
    ['log_followers', 1],
    ['log_followers', 1000],
    ['long_polls', 1],
    ['long_polls', 500],
  ] as const
  for (const [what, n] of cases) {
    const { url, drop } = await scratch()
    const { child, base } = await startServer(url, secret, {
      env: { EVENT_STREAMS_PER_PRINCIPAL: '5000', EVENT_STREAMS_MAX: '5000', SWEEP_INTERVAL_SECONDS: '0' },
    })
    const dispatcher = new Dispatcher({ connections: n + 10, bodyTimeout: 0, headersTimeout: 0 })
    const aborter = new AbortController()
    setMaxListeners(0, aborter.signal) // one listener per request
    const call = jsonApi(base, admin)
    try {
      const a = (await call('/api/v1/agents', { method: 'POST', body: { name: 'fan', provider: 'onprem' } })).body
      await call('/api/v1/agents/heartbeat', { method: 'POST', token: a.token, body: { agentId: a.id } })
      let ready = 0
      let answered = 0
      let opened: Promise<unknown>[] = []
      if (what === 'log_followers') {
        const t = (await call('/api/v1/tasks', { method: 'POST', body: { name: 'fan', type: 'bench.fan' } })).body
        await call(`/api/v1/tasks/${t.id}/status`, {
          method: 'PATCH',
          token: a.token,
          body: { status: 'running', attempt: t.attempt },
        })
        const chunks = [{ seq: 0, stream: 'stdout', data: 'started\n' }]
        await call(`/api/v1/tasks/${t.id}/logs`, {
          method: 'POST',
          token: a.token,
          body: { attempt: t.attempt, chunks },
        })
        opened = Array.from({ length: n }, async () => {
          const res = await fetch(`${base}/api/v1/tasks/${t.id}/logs`, {
            headers: { accept: 'text/event-stream', authorization: `Bearer ${admin}` },
            signal: aborter.signal,
            // @ts-expect-error undici's dispatcher option is not in the DOM fetch types
            dispatcher,
          })
          if (res.status !== 200) throw new Error(`follower: ${res.status}`)
          const decoder = new TextDecoder()
          let text = ''
          try {
            for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
              text += decoder.decode(chunk)
              if (text.includes('"seq":0')) {
                ready++
                text = ''
              }
            }
          } catch {
            // aborted at the end
          }
        })
      } else {
        opened = Array.from({ length: n }, async () => {
          const res = await fetch(`${base}/api/v1/agents/heartbeat`, {
            method: 'POST',
            headers: { authorization: `Bearer ${a.token}`, 'content-type': 'application/json' },
            body: JSON.stringify({ agentId: a.id, waitSeconds: 30 }),
            signal: aborter.signal,
            // @ts-expect-error undici's dispatcher option is not in the DOM fetch types
            dispatcher,
          }).catch(() => undefined)
          await res?.text().catch(() => '')
          if (res?.status === 200 && !aborter.signal.aborted) answered++
        })
        ready = n // sent; each either waits or was answered (ended by a newer one)
        // Every request has reached the server and had its first beat: all but one answered
        // (one long poll per agent), or, where polls are not ended early, 10 s gone by.
        const settled = Date.now() + 10_000
        while (answered < n - 1 && Date.now() < settled) await new Promise((r) => setTimeout(r, 50))
      }
      const deadline = Date.now() + 60_000
      while (ready < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
      await new Promise((r) => setTimeout(r, 1000))
      const s0 = await metric(base, 'agenticcp_db_statements_total')
      const c0 = cpuSeconds(child.pid as number)
      const t0 = performance.now()
      await new Promise((r) => setTimeout(r, WINDOW_MS))
      const seconds = (performance.now() - t0) / 1000
      const s1 = await metric(base, 'agenticcp_db_statements_total')
      const c1 = cpuSeconds(child.pid as number)
      line('fanout', {
        waiting: what,
        n,
        ready,
        ...(what === 'long_polls' ? { answered_early: answered } : {}),
        seconds,
        // Includes one /metrics scrape's own statements (its statistics queries).
        db_statements_per_s: Math.round(((s1 - s0) / seconds) * 10) / 10,
        server_cpu_ms_per_s: Math.round(((c1 - c0) * 1000 * 10) / seconds) / 10,
      })
      aborter.abort()
      await Promise.allSettled(opened)
    } finally {
      await dispatcher.close().catch(() => {})
      await stopServer(child)
      await drop()
    }
  }
}

/**
 * statements (Postgres; runs only when named): how many statements the server sends for one
 * request of each kind the steady workload makes, alone on an idle server (sweep timer off):
 * the difference of agenticcp_db_statements_total around it, less a /metrics scrape's own
 * (measured first), the median of 3. Where a steady run's statements per task come from.
 */
async function benchStatements() {
  if (!onPostgres) {
    console.log('statements note=needs_postgres (set DATABASE_URL=postgres://…)')
    return
  }
  const secret = 'q'.repeat(40)
  const admin = await signToken({ secretKey: secret, algorithm: 'HS256' }, { sub: 'bench', role: 'admin' }, 60)
  const { url, drop } = await scratch()
  const { child, base } = await startServer(url, secret, { env: { SWEEP_INTERVAL_SECONDS: '0' } })
  try {
    const call = jsonApi(base, admin)
    const counter = async () => {
      const text = await (await fetch(`${base}/metrics`)).text()
      return Number(/^agenticcp_db_statements_total (\d+)/m.exec(text)?.[1] ?? Number.NaN)
    }
    const around = async (f: () => Promise<unknown>) => {
      const out: number[] = []
      for (let i = 0; i < 3; i++) {
        const a = await counter()
        await f()
        out.push((await counter()) - a)
      }
      return median(out)
    }
    const scrape = await around(async () => {})
    const measure = async (request: string, f: () => Promise<unknown>) =>
      line('statements', { request, per_request: (await around(f)) - scrape })
    const batch = (n: number) => ({ tasks: Array.from({ length: n }, () => ({ name: 'st', type: 'bench.st' })) })
    const agents: { id: string; token: string }[] = []
    for (let i = 0; i < 2; i++) {
      const r = await call('/api/v1/agents', {
        method: 'POST',
        body: { name: `st-${i}`, provider: 'aws', capabilities: ['cpu'], maxConcurrentTasks: 200 },
      })
      agents.push({ id: r.body.id, token: r.body.token })
    }
    const [a, b] = agents as [{ id: string; token: string }, { id: string; token: string }]
    const beat = (x: typeof a, body: Record<string, unknown> = {}) =>
      call('/api/v1/agents/heartbeat', { method: 'POST', token: x.token, body: { agentId: x.id, ...body } })
    // Held tasks, reported running and completed by the agent's next heartbeat.
    const held = new Map<string, { id: string; attempt: number }[]>()
    const report = async (x: typeof a) => {
      const reports = (held.get(x.id) ?? []).flatMap((t) => [
        { taskId: t.id, attempt: t.attempt, status: 'running' },
        { taskId: t.id, attempt: t.attempt, status: 'completed', result: { ok: true } },
      ])
      const r = await beat(x, { reports })
      held.set(x.id, r.body?.assignments ?? [])
      return r
    }
    await measure('create_batch_50_no_agent_online', () =>
      call('/api/v1/tasks/batch', { method: 'POST', body: batch(50) }),
    )
    await measure('heartbeat_taking_work', () => report(a))
    await measure('heartbeat_reporting_and_taking_work', () => report(a))
    for (let i = 0; i < 10 && (held.get(a.id)?.length ?? 1) > 0; i++) await report(a)
    await measure('heartbeat_nothing_to_do', () => beat(a))
    await beat(b)
    await measure('create_batch_50_placed_at_once', async () => {
      await call('/api/v1/tasks/batch', { method: 'POST', body: batch(50) })
    })
    // Everything done and reported, so the long poll finds nothing and nothing arrives.
    for (let i = 0; i < 20; i++) {
      await report(a)
      await report(b)
      if (!held.get(a.id)?.length && !held.get(b.id)?.length) break
    }
    await measure('long_poll_2s_nothing_arrives', () => beat(a, { waitSeconds: 2 }))
    await measure('sweep_nothing_to_place', () => call('/api/v1/scheduler/sweep', { method: 'POST' }))
    line('statements', { request: 'metrics_scrape_left_out', per_request: scrape })
  } finally {
    await stopServer(child)
    await drop()
  }
}

/** CPU seconds of every Postgres backend serving `dbName` (they are this machine's processes). */
async function postgresCpuSeconds(dbName: string): Promise<number> {
  let total = 0
  for (const seconds of (await postgresCpuByPid(dbName)).values()) total += seconds
  return total
}

/** CPU seconds of each Postgres backend serving `dbName`, by pid. */
async function postgresCpuByPid(dbName: string): Promise<Map<number, number>> {
  const admin = new pg.Client({ connectionString: baseUrl })
  await admin.connect()
  try {
    // Not the bench's stand-in for autovacuum's analyze: its work is not the service's.
    const { rows } = await admin.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity
        WHERE datname = $1 AND pid <> pg_backend_pid() AND application_name <> 'bench-autoanalyze'`,
      [dbName],
    )
    const byPid = new Map<number, number>()
    for (const r of rows) {
      try {
        byPid.set(r.pid, cpuSeconds(r.pid))
      } catch {
        // ended meanwhile
      }
    }
    return byPid
  } finally {
    await admin.end()
  }
}

/** What one server process and its Postgres backends used over a window, per operation. */
async function costOf(base: string, pid: number, dbName: string, run: () => Promise<number>) {
  const statements = async () => {
    const text = await (await fetch(`${base}/metrics`)).text()
    return Number(/^agenticcp_db_statements_total (\d+)/m.exec(text)?.[1] ?? Number.NaN)
  }
  const [s0, c0, p0] = [await statements(), cpuSeconds(pid), onPostgres ? await postgresCpuSeconds(dbName) : 0]
  const ops = await run()
  const [s1, c1, p1] = [await statements(), cpuSeconds(pid), onPostgres ? await postgresCpuSeconds(dbName) : 0]
  return {
    ops,
    statementsPerOp: (s1 - s0) / ops,
    serverCpuUsPerOp: ((c1 - c0) * 1e6) / ops,
    postgresCpuUsPerOp: ((p1 - p0) * 1e6) / ops,
  }
}

/**
 * heartbeat: 100 agents heartbeating as fast as the server answers (autocannon, one
 * keep-alive connection per agent, 10 s), beside the same server's bare liveness route in
 * the same run: heartbeats/s, the ratio, and per heartbeat the statements sent, the
 * server's CPU and Postgres's CPU (BENCH_RUNTIME=bun for Bun).
 */
async function benchHeartbeat(poolMax?: number) {
  const { default: autocannon } = await import('autocannon')
  const secret = 'h'.repeat(40)
  const runtime = process.env.BENCH_RUNTIME === 'bun' ? 'bun' : 'node'
  const admin = await signToken({ secretKey: secret, algorithm: 'HS256' }, { sub: 'bench', role: 'admin' }, 60)
  const { database, url, drop } = await scratch()
  if (!onPostgres) await database.close()
  const dbName = onPostgres ? new URL(url).pathname.slice(1) : ''
  const { child, base } = await startServer(url, secret, {
    runtime,
    env: { SWEEP_INTERVAL_SECONDS: '0', ...(poolMax ? { DATABASE_POOL_MAX: String(poolMax) } : {}) },
  })
  try {
    const agents: { id: string; token: string }[] = []
    for (let i = 0; i < 100; i++) {
      const res = await fetch(`${base}/api/v1/agents`, {
        method: 'POST',
        headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: `hb-${i}`, provider: 'aws', maxConcurrentTasks: 4 }),
      })
      const a = (await res.json()) as { id: string; token: string }
      agents.push({ id: a.id, token: a.token })
      await fetch(`${base}/api/v1/agents/heartbeat`, {
        method: 'POST',
        headers: { authorization: `Bearer ${a.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ agentId: a.id }),
      })
    }
    if (onPostgres) await analyzeNow(url) // the agents just registered (a no-op with autovacuum on)
    let next = 0
    const heartbeats = await costOf(base, child.pid as number, dbName, async () => {
      const r = await autocannon({
        url: `${base}/api/v1/agents/heartbeat`,
        method: 'POST',
        connections: 100,
        duration: 10,
        setupClient: (client: { setHeaders(h: Record<string, string>): void; setBody(b: string): void }) => {
          const a = agents[next++ % agents.length] as { id: string; token: string }
          client.setHeaders({ authorization: `Bearer ${a.token}`, 'content-type': 'application/json' })
          client.setBody(JSON.stringify({ agentId: a.id }))
        },
      })
      if (r.non2xx + r.errors > 0) console.log(`heartbeat note=non_2xx count=${r.non2xx + r.errors}`)
      return r.requests.total
    })
    const live = await autocannon({ url: `${base}/api/v1/health/liveness`, connections: 100, duration: 10 })
    const hbRps = heartbeats.ops / 10
    const liveRps = live.requests.average
    const fields = {
      runtime,
      driver: onPostgres ? 'node-postgres' : 'pglite',
      ...(poolMax ? { pool_max: poolMax } : {}),
      agents: 100,
      heartbeats_per_sec: Math.round(hbRps),
      liveness_per_sec: Math.round(liveRps),
      heartbeat_vs_liveness: hbRps / liveRps,
      statements_per_heartbeat: heartbeats.statementsPerOp,
      server_cpu_us_per_heartbeat: Math.round(heartbeats.serverCpuUsPerOp),
      postgres_cpu_us_per_heartbeat: Math.round(heartbeats.postgresCpuUsPerOp),
      cpus: cpus().length,
    }
    line('heartbeat', fields)
    return fields
  } finally {
    await stopServer(child)
    await drop()
  }
}

/**
 * BENCH_POOL_SIZES=4,10,20,40 npm run bench -- heartbeat: the heartbeat bench with the
 * server's DATABASE_POOL_MAX at each size in turn, BENCH_POOL_ROUNDS (3) rounds (each in
 * another order); per size the median and its ratio to the first size in the same round.
 */
async function heartbeatByPool(sizes: number[], rounds: number) {
  const byPool = new Map<number, { hb: number; vsLive: number; statements: number; server: number; pg: number }[]>()
  for (let round = 1; round <= rounds; round++) {
    for (const size of rotated(sizes, round)) {
      const f = await benchHeartbeat(size)
      byPool.set(size, [
        ...(byPool.get(size) ?? []),
        {
          hb: f.heartbeats_per_sec,
          vsLive: f.heartbeat_vs_liveness,
          statements: f.statements_per_heartbeat,
          server: f.server_cpu_us_per_heartbeat,
          pg: f.postgres_cpu_us_per_heartbeat,
        },
      ])
    }
  }
  const base = sizes[0] as number
  for (const size of sizes) {
    const runs = byPool.get(size) ?? []
    line('heartbeat_pool_median', {
      pool_max: size,
      rounds,
      heartbeats_per_sec: Math.round(median(runs.map((r) => r.hb))),
      heartbeats_min: Math.min(...runs.map((r) => r.hb)),
      heartbeats_max: Math.max(...runs.map((r) => r.hb)),
      [`vs_pool_${base}`]: median(runs.map((r, i) => r.hb / ((byPool.get(base) ?? [])[i]?.hb ?? r.hb))),
      heartbeat_vs_liveness: median(runs.map((r) => r.vsLive)),
      statements_per_heartbeat: median(runs.map((r) => r.statements)),
      server_cpu_us_per_heartbeat: Math.round(median(runs.map((r) => r.server))),
      postgres_cpu_us_per_heartbeat: Math.round(median(runs.map((r) => r.pg))),
    })
  }
}

/**
 * logs: the real server; 50 agents, each holding a running task, write their output at once
 * (POST /tasks/{id}/logs, 32 chunks of 8 KiB a request, for BENCH_LOGS_SECONDS) → ingest
 * MiB/s and per MiB the server's and Postgres's CPU; then 100 followers of one task's log
 * (text/event-stream) while its agent writes a line every 20 ms → the delay from the write
 * being sent to each follower's receipt, p50/p99.
 */
async function benchLogs() {
  const AGENTS = 50
  const FOLLOWERS = 100
  const CHUNK = 8 * 1024
  const PER_REQUEST = 32
  const SECONDS = Number(process.env.BENCH_LOGS_SECONDS ?? 8)
  const LINES = 200
  const secret = 's'.repeat(40)
  const { database, url, drop } = await scratch()
  if (!onPostgres) await database.close()
  const dbName = onPostgres ? new URL(url).pathname.slice(1) : ''
  // Room for the ingest: 1 GiB an attempt, so nothing is dropped while measuring.
  const { child, base } = await startServer(url, secret, {
    env: { TASK_LOG_MAX_BYTES_PER_ATTEMPT: String(1024 * 1024 * 1024), EVENT_STREAMS_PER_PRINCIPAL: '1000' },
  })
  try {
    const admin = await signToken({ secretKey: secret, algorithm: 'HS256' }, { sub: 'bench', role: 'admin' }, 60)
    const call = jsonApi(base, admin)
    const api = async (path: string, init: Parameters<typeof call>[1] = {}) => {
      const r = await call(path, init)
      if (r.status >= 300) throw new Error(`${path}: ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`)
      return r.body
    }
    // Each agent holds one running task.
    const held: { token: string; taskId: string; attempt: number }[] = []
    for (let i = 0; i < AGENTS + 1; i++) {
      const a = await api('/api/v1/agents', { method: 'POST', body: { name: `log-${i}`, provider: 'onprem' } })
      await api('/api/v1/agents/heartbeat', { method: 'POST', token: a.token, body: { agentId: a.id } })
      let t = await api('/api/v1/tasks', {
        method: 'POST',
        body: { name: `log-${i}`, type: 'bench.logs', requirements: { agentId: a.id } },
      })
      // A create that meets the sweep (every second here) on the agent's row leaves the task
      // to it: wait for the placement.
      for (let k = 0; t.status === 'pending' && k < 100; k++) {
        await new Promise((r) => setTimeout(r, 100))
        t = await api(`/api/v1/tasks/${t.id}`)
      }
      await api(`/api/v1/tasks/${t.id}/status`, {
        method: 'PATCH',
        token: a.token,
        body: { status: 'running', attempt: t.attempt },
      })
      held.push({ token: a.token, taskId: t.id, attempt: t.attempt })
    }
    const payload = `${'x'.repeat(CHUNK - 1)}\n`
    let ingestSeconds = 0
    let bytes = 0
    let requests = 0
    let errors = 0
    const cost = await costOf(base, child.pid as number, dbName, async () => {
      const until = Date.now() + SECONDS * 1000
      const started = performance.now()
      await Promise.all(
        held.slice(0, AGENTS).map(async (h) => {
          let seq = 0
          while (Date.now() < until) {
            const chunks = Array.from({ length: PER_REQUEST }, () => ({ seq: seq++, stream: 'stdout', data: payload }))
            try {
              await api(`/api/v1/tasks/${h.taskId}/logs`, {
                method: 'POST',
                token: h.token,
                body: { attempt: h.attempt, chunks },
              })
              bytes += CHUNK * PER_REQUEST
              requests++
            } catch {
              errors++
            }
          }
        }),
      )
      ingestSeconds = (performance.now() - started) / 1000
      return Math.max(1, bytes / (1024 * 1024))
    })
    // Followers of one task's log; its agent writes a line every 20 ms, stamped with the send time.
    const target = held[AGENTS] as (typeof held)[number]
    const delays: number[] = []
    const ready: Promise<void>[] = []
    const streams: AbortController[] = []
    let received = 0
    for (let f = 0; f < FOLLOWERS; f++) {
      const ctl = new AbortController()
      streams.push(ctl)
      ready.push(
        (async () => {
          const res = await fetch(`${base}/api/v1/tasks/${target.taskId}/logs`, {
            headers: { authorization: `Bearer ${admin}`, accept: 'text/event-stream' },
            signal: ctl.signal,
          })
          const reader = (res.body as ReadableStream<Uint8Array>).getReader()
          const decoder = new TextDecoder()
          let buf = ''
          void (async () => {
            try {
              for (;;) {
                const { value, done } = await reader.read()
                if (done) return
                buf += decoder.decode(value, { stream: true })
                let i = buf.indexOf('\n\n')
                while (i >= 0) {
                  const m = /"data":"sent (\d+(?:\.\d+)?)/.exec(buf.slice(0, i))
                  if (m) {
                    delays.push(performance.timeOrigin + performance.now() - Number(m[1]))
                    received++
                  }
                  buf = buf.slice(i + 2)
                  i = buf.indexOf('\n\n')
                }
              }
            } catch {
              // aborted at the end
            }
          })()
        })(),
      )
    }
    await Promise.all(ready)
    await new Promise((r) => setTimeout(r, 500))
    for (let seq = 0; seq < LINES; seq++) {
      await api(`/api/v1/tasks/${target.taskId}/logs`, {
        method: 'POST',
        token: target.token,
        body: {
          attempt: target.attempt,
          chunks: [{ seq, stream: 'stdout', data: `sent ${performance.timeOrigin + performance.now()}\n` }],
        },
      })
      await new Promise((r) => setTimeout(r, 20))
    }
    const deadline = Date.now() + 10_000
    while (received < LINES * FOLLOWERS && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    for (const s of streams) s.abort()
    line('logs', {
      runtime: 'node',
      driver: onPostgres ? 'node-postgres' : 'pglite',
      writers: AGENTS,
      chunk_bytes: CHUNK,
      chunks_per_request: PER_REQUEST,
      seconds: ingestSeconds,
      mib: Math.round((bytes / (1024 * 1024)) * 10) / 10,
      requests,
      errors,
      ingest_mib_per_sec: Math.round((bytes / (1024 * 1024) / ingestSeconds) * 10) / 10,
      statements_per_mib: cost.statementsPerOp,
      server_cpu_ms_per_mib: Math.round(cost.serverCpuUsPerOp / 100) / 10,
      postgres_cpu_ms_per_mib: Math.round(cost.postgresCpuUsPerOp / 100) / 10,
      followers: FOLLOWERS,
      lines: LINES,
      received,
      expected: LINES * FOLLOWERS,
      follow_delay_p50_ms: Math.round(percentile(delays, 50) * 10) / 10,
      follow_delay_p99_ms: Math.round(percentile(delays, 99) * 10) / 10,
      cpus: cpus().length,
    })
  } finally {
    await stopServer(child)
    if (onPostgres) await drop()
  }
}

/** Stops a server child: SIGTERM, SIGKILL after 10 s; at once if it has already exited. Then its stand-in for autovacuum. */
async function stopServer(child: ChildProcess) {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((r) => child.once('exit', r))
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
    await exited
    clearTimeout(timer)
  }
  await releases.get(child)?.()
}

/** Busy and total CPU time of the whole machine (every core, any process), from /proc/stat. */
function machineTicks(): { busy: number; total: number } {
  const f = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1, 9).map(Number)
  const total = f.reduce((a, b) => a + b, 0) // user nice system idle iowait irq softirq steal
  return { busy: total - (f[3] ?? 0) - (f[4] ?? 0), total }
}

/** Pids of this machine's processes named `comm` (e.g. redis-server). */
function pidsNamed(comm: string): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return readFileSync(`/proc/${d}/comm`, 'utf8').trim() === comm
      } catch {
        return false
      }
    })
    .map(Number)
}

/**
 * What N server processes, their Postgres backends, Redis and this process (the load
 * generator) used over a window: CPU seconds per 1,000 operations, and each as cores busy
 * beside the whole machine's busy cores (which also counts anything else running).
 */
async function costOfServers(
  servers: { base: string; pid: number }[],
  dbName: string,
  redisPids: number[],
  run: () => Promise<number>,
) {
  const sumCpu = (pids: number[]) =>
    pids.reduce((sum, pid) => {
      try {
        return sum + cpuSeconds(pid)
      } catch {
        return sum // ended meanwhile
      }
    }, 0)
  const snapshot = async () => {
    let statements = 0
    for (const s of servers) {
      const text = await (await fetch(`${s.base}/metrics`)).text()
      statements += Number(/^agenticcp_db_statements_total (\d+)/m.exec(text)?.[1] ?? Number.NaN)
    }
    return {
      statements,
      servers: servers.map((s) => cpuSeconds(s.pid)),
      postgres: await postgresCpuByPid(dbName),
      redis: sumCpu(redisPids),
      loadgen: process.cpuUsage(),
      machine: machineTicks(),
      at: performance.now(),
    }
  }
  const a = await snapshot()
  const ops = Math.max(1, await run())
  const b = await snapshot()
  const wall = (b.at - a.at) / 1000
  const serverEach = b.servers.map((c, i) => c - (a.servers[i] ?? 0))
  const server = serverEach.reduce((x, y) => x + y, 0)
  // Per backend: one born in the window counts whole; one that ended in it (a pool closing an
  // idle connection) loses what it used after the first reading (counted in postgres_backends_ended).
  let postgres = 0
  for (const [pid, seconds] of b.postgres) postgres += seconds - (a.postgres.get(pid) ?? 0)
  const ended = [...a.postgres.keys()].filter((pid) => !b.postgres.has(pid)).length
  const redis = b.redis - a.redis
  const loadgenUs = process.cpuUsage(a.loadgen)
  const loadgen = (loadgenUs.user + loadgenUs.system) / 1e6
  const machineBusyCores = ((b.machine.busy - a.machine.busy) / (b.machine.total - a.machine.total)) * cpus().length
  const per1k = (cpu: number) => (cpu * 1000) / ops
  return {
    ops,
    statements_per_op: (b.statements - a.statements) / ops,
    server_cpu_s_per_1k: per1k(server),
    postgres_cpu_s_per_1k: per1k(postgres),
    redis_cpu_s_per_1k: per1k(redis),
    loadgen_cpu_s_per_1k: per1k(loadgen),
    server_cpu_s_each: serverEach.map((c) => c.toFixed(2)).join('+'),
    postgres_backends_ended: ended,
    cores_server: server / wall,
    cores_postgres: postgres / wall,
    cores_redis: redis / wall,
    cores_loadgen: loadgen / wall,
    cores_machine: machineBusyCores,
    // Busy, but none of the above: Postgres's own workers (WAL writer, checkpointer,
    // autovacuum), other databases' backends, the kernel's threads, anything else running.
    cores_other: machineBusyCores - (server + postgres + redis + loadgen) / wall,
  }
}

type ScaleAgent = { base: string; id: string; token: string }

/**
 * The lifecycle bench's batched workload against several servers: 100 agents with 4 slots,
 * agent i registered on and heartbeating to server i % N (sticky, as behind a load balancer
 * with affinity); 4 producer loops posting 50 tasks a request, loop w to server w % N. Each
 * heartbeat carries the previous answer's tasks as running and completed. Stops when every
 * created task's completion was acknowledged (open long polls are then aborted) or at
 * `limitMs`; `seconds` runs to the last acknowledgement.
 */
async function scaleLifecycle(bases: string[], admin: string, agents: ScaleAgent[], count: number, limitMs: number) {
  const BATCH = 50
  const IN_FLIGHT = 4
  const stopAt = Date.now() + limitMs
  const done = new AbortController()
  setMaxListeners(0, done.signal) // every request of the run listens to it
  const call = async (base: string, token: string, path: string, body: unknown) => {
    const res = await fetch(`${base}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: done.signal,
    })
    const text = await res.text()
    // biome-ignore lint/suspicious/noExplicitAny: the bench reads answers field by field
    return { status: res.status, body: (text ? JSON.parse(text) : null) as any }
  }
  let created = 0
  let completed = 0
  let errors = 0
  let doneAt = 0
  const started = performance.now()
  const producer = async (w: number) => {
    const base = bases[w % bases.length] as string
    try {
      while (created < count && Date.now() < stopAt) {
        const n = Math.min(BATCH, count - created)
        created += n
        const tasks = Array.from({ length: n }, () => ({ name: 'lc', type: 'bench.lifecycle' }))
        const r = await call(base, admin, '/api/v1/tasks/batch', { tasks })
        if (r.status !== 201) errors += n
      }
    } catch (err) {
      // Its last batch may be done before its answer arrives.
      if (!done.signal.aborted) throw err
    }
  }
  const agent = async (a: ScaleAgent) => {
    let reports: { taskId: string; attempt: number; status: string; result?: unknown }[] = []
    try {
      while ((completed < count || reports.length) && Date.now() < stopAt) {
        const hb = await call(a.base, a.token, '/api/v1/agents/heartbeat', {
          agentId: a.id,
          waitSeconds: reports.length ? 0 : 2,
          reports,
        })
        if (hb.status !== 200) errors++
        for (const [i, r] of (hb.body?.reports ?? []).entries()) {
          if (!r.ok) errors++
          else if (reports[i]?.status === 'completed') completed++
        }
        if (completed >= count && !doneAt) {
          doneAt = performance.now()
          done.abort() // the other agents' long polls
        }
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
  await Promise.all([...Array.from({ length: IN_FLIGHT }, (_, w) => producer(w)), ...agents.map(agent)])
  return { created, completed, errors, seconds: ((doneAt || performance.now()) - started) / 1000 }
}

/**
 * scale: DESIGN's claim that instances share nothing but Postgres (and Redis), measured —
 * N = 1, then N = 2 server processes (Node; `src/server.ts` through tsx, or the production
 * bundle with BENCH_SCALE_BUILT=1 when dist/server.js exists) on one scratch database and
 * the same Redis (BENCH_REDIS_URL, default redis://127.0.0.1:6379; without it when it does
 * not answer). For each N, on fresh servers and a fresh database per workload:
 * - heartbeat: 100 agents, one keep-alive autocannon connection each, connections
 *   round-robin over the servers (connection i to server i % N, so each agent sticks to one
 *   server), BENCH_SCALE_SECONDS (10) after a 2 s warm-up; sweep off, as in `heartbeat`;
 * - liveness: the same servers' GET /health/liveness, the same connections and seconds;
 * - lifecycle: the batched lifecycle (scaleLifecycle) for BENCH_SCALE_TASKS (4,000) after
 *   400 unmeasured; sweep every second, as in `lifecycle` (with N = 2 both servers run the
 *   sweep timer; its advisory lock lets one sweep at a time). Then the database is checked:
 *   every task completed, none on a second attempt, one task.completed event per task.
 * Per N and workload: operations/s, errors, statements per operation, CPU seconds per 1,000
 * operations of the servers (together, and each), their Postgres backends, Redis and the
 * load generator (this process), and the cores each kept busy beside the machine's; then
 * the N = 2 / N = 1 ratios.
 */
async function benchScale() {
  if (!onPostgres) {
    console.log('scale note=needs_postgres (set DATABASE_URL=postgres://…)')
    return
  }
  const { default: autocannon } = await import('autocannon')
  const SECONDS = Number(process.env.BENCH_SCALE_SECONDS ?? 10)
  const TASKS = Number(process.env.BENCH_SCALE_TASKS ?? 4000)
  const WARM_TASKS = 400
  const CONNECTIONS = 100
  const AGENTS = 100
  const secret = 'k'.repeat(40)
  const admin = await signToken({ secretKey: secret, algorithm: 'HS256' }, { sub: 'bench', role: 'admin' }, 60)
  const wantBuilt = process.env.BENCH_SCALE_BUILT === '1'
  const built = wantBuilt && existsSync('dist/server.js')
  if (wantBuilt && !built) console.log('scale note=dist/server.js_missing_running_src_through_tsx')
  const redisUrl = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379'
  const redisUp = await redisAnswers(redisUrl)
  if (!redisUp) console.log(`scale note=redis_unreachable url=${redisUrl.replace(/\/\/.*@/, '//…@')} (running without)`)
  const redisHost = new URL(redisUrl).hostname
  // Redis's CPU only when it runs on this machine.
  const redisPids = redisUp && ['127.0.0.1', 'localhost', '::1'].includes(redisHost) ? pidsNamed('redis-server') : []
  const common = {
    runtime: 'node',
    entry: built ? 'dist/server.js' : 'src/server.ts(tsx)',
    redis: redisUp ? 'on' : 'off',
    spread: 'round_robin_sticky_per_agent',
    cpus: cpus().length,
  }

  /** N servers (started one after another) on a fresh scratch database; both dropped after `body`. */
  const withServers = async <T>(
    n: number,
    env: Record<string, string>,
    body: (servers: { base: string; pid: number }[], dbName: string, database: Database) => Promise<T>,
  ): Promise<T> => {
    const { database, url, drop } = await scratch()
    const children: ChildProcess[] = []
    try {
      const servers: { base: string; pid: number }[] = []
      for (let i = 0; i < n; i++) {
        const { child, base } = await startServer(url, secret, { built, redisUrl: redisUp ? redisUrl : '', env })
        children.push(child)
        servers.push({ base, pid: child.pid as number })
      }
      return await body(servers, new URL(url).pathname.slice(1), database)
    } finally {
      await Promise.all(children.map(stopServer))
      await drop()
    }
  }

  /** 100 agents, agent i registered on server i % N, one first heartbeat there. */
  const register = async (bases: string[], prefix: string, maxConcurrentTasks: number, capabilities: string[]) => {
    const agents: ScaleAgent[] = []
    for (let i = 0; i < AGENTS; i++) {
      const base = bases[i % bases.length] as string
      const api = jsonApi(base, admin)
      const r = await api('/api/v1/agents', {
        method: 'POST',
        body: { name: `${prefix}-${i}`, provider: PROVIDERS[i % 8], capabilities, maxConcurrentTasks },
      })
      if (r.status >= 300) throw new Error(`register: ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`)
      const hb = await api('/api/v1/agents/heartbeat', {
        method: 'POST',
        token: r.body.token,
        body: { agentId: r.body.id },
      })
      if (hb.status !== 200) throw new Error(`first heartbeat: ${hb.status}`)
      agents.push({ base, id: r.body.id, token: r.body.token })
    }
    return agents
  }

  type Figures = Awaited<ReturnType<typeof costOfServers>> & { ops_per_sec: number }
  const results = new Map<string, Figures>()
  let failed = false

  for (const n of [1, 2]) {
    // 1. Heartbeats, then liveness, on the same N servers (sweep off, as in `heartbeat`).
    await withServers(n, { SWEEP_INTERVAL_SECONDS: '0' }, async (servers, dbName) => {
      const bases = servers.map((s) => s.base)
      const agents = await register(bases, 'hb', 4, [])
      // Connection i goes to server i % N (autocannon's round-robin over `url`) and is set up
      // i-th, so it carries agent i, the one registered on that server.
      const heartbeats = (seconds: number) => {
        let next = 0
        return autocannon({
          url: bases.map((b) => `${b}/api/v1/agents/heartbeat`) as unknown as string,
          method: 'POST',
          connections: CONNECTIONS,
          duration: seconds,
          setupClient: (client: { setHeaders(h: Record<string, string>): void; setBody(b: string): void }) => {
            const a = agents[next++ % agents.length] as ScaleAgent
            client.setHeaders({ authorization: `Bearer ${a.token}`, 'content-type': 'application/json' })
            client.setBody(JSON.stringify({ agentId: a.id }))
          },
        })
      }
      await heartbeats(2) // warm-up, not measured
      let hbSeconds = SECONDS
      let hbErrors = 0
      const hb = await costOfServers(servers, dbName, redisPids, async () => {
        const r = await heartbeats(SECONDS)
        hbSeconds = r.duration
        hbErrors = r.non2xx + r.errors
        return r.requests.total
      })
      let liveSeconds = SECONDS
      let liveErrors = 0
      const live = await costOfServers(servers, dbName, redisPids, async () => {
        const r = await autocannon({
          url: bases.map((b) => `${b}/api/v1/health/liveness`) as unknown as string,
          connections: CONNECTIONS,
          duration: SECONDS,
        })
        liveSeconds = r.duration
        liveErrors = r.non2xx + r.errors
        return r.requests.total
      })
      const hbFig = { ...hb, ops_per_sec: hb.ops / hbSeconds }
      const liveFig = { ...live, ops_per_sec: live.ops / liveSeconds }
      results.set(`heartbeat:${n}`, hbFig)
      results.set(`liveness:${n}`, liveFig)
      if (hbErrors + liveErrors > 0) failed = true
      for (const [phase, f, errors, seconds] of [
        ['heartbeat', hbFig, hbErrors, hbSeconds],
        ['liveness', liveFig, liveErrors, liveSeconds],
      ] as const) {
        const { ops, ops_per_sec, ...cost } = f
        line('scale', {
          phase,
          servers: n,
          ...common,
          connections: CONNECTIONS,
          seconds,
          ops,
          ops_per_sec: Math.round(ops_per_sec),
          errors,
          ...(phase === 'heartbeat' ? { heartbeat_vs_liveness: hbFig.ops_per_sec / liveFig.ops_per_sec } : {}),
          ...cost,
        })
      }
    })

    // 2. The batched lifecycle on fresh servers and database (sweep every second, as in `lifecycle`).
    await withServers(n, {}, async (servers, dbName, database) => {
      const bases = servers.map((s) => s.base)
      const agents = await register(bases, 'lc', 4, ['cpu'])
      const warm = await scaleLifecycle(bases, admin, agents, WARM_TASKS, 30_000)
      let run = { created: 0, completed: 0, errors: 0, seconds: 0 }
      const cost = await costOfServers(servers, dbName, redisPids, async () => {
        run = await scaleLifecycle(bases, admin, agents, TASKS, 90_000)
        return run.completed
      })
      // Every task created is completed, once, on its first attempt.
      const byStatus = await rowsOf<{ status: string; n: number }>(
        database.db,
        sql`SELECT status, count(*)::int AS n FROM tasks GROUP BY status ORDER BY status`,
      )
      const [t] = await rowsOf<{ retried: number; max_attempt: number; lost: number }>(
        database.db,
        sql`SELECT count(*) FILTER (WHERE attempt > 1)::int AS retried, coalesce(max(attempt), 0)::int AS max_attempt,
                   coalesce(sum(lost_count), 0)::int AS lost FROM tasks`,
      )
      const [e] = await rowsOf<{ events: number; tasks: number }>(
        database.db,
        sql`SELECT count(*)::int AS events, count(DISTINCT task_id)::int AS tasks FROM events WHERE type = 'task.completed'`,
      )
      const created = warm.created + run.created
      const completedInDb = byStatus.find((r) => r.status === 'completed')?.n ?? 0
      const errors = warm.errors + run.errors
      const ok =
        errors === 0 &&
        run.completed === TASKS &&
        warm.completed + run.completed === created &&
        completedInDb === created &&
        byStatus.length === 1 &&
        t?.retried === 0 &&
        e?.events === created &&
        e.tasks === created
      if (!ok) failed = true
      const fig = { ...cost, ops_per_sec: run.completed / run.seconds }
      results.set(`lifecycle:${n}`, fig)
      const { ops: _ops, ops_per_sec, ...rest } = fig
      line('scale', {
        phase: 'lifecycle',
        servers: n,
        ...common,
        agents: AGENTS,
        slots_per_agent: 4,
        tasks: run.created,
        completed: run.completed,
        seconds: run.seconds,
        ops_per_sec: Math.round(ops_per_sec),
        errors,
        db_tasks_by_status: byStatus.map((r) => `${r.status}:${r.n}`).join(',') || 'none',
        db_tasks_created: created,
        db_attempt_over_1: t?.retried ?? Number.NaN,
        db_max_attempt: t?.max_attempt ?? Number.NaN,
        db_lost: t?.lost ?? Number.NaN,
        db_completed_events: e?.events ?? Number.NaN,
        db_tasks_with_completed_event: e?.tasks ?? Number.NaN,
        check: ok ? 'ok' : 'FAILED',
        ...rest,
      })
    })
  }

  for (const phase of ['heartbeat', 'liveness', 'lifecycle']) {
    const one = results.get(`${phase}:1`)
    const two = results.get(`${phase}:2`)
    if (!one || !two) continue
    const ratio = (a: number, b: number) => (b > 0 ? a / b : 'n/a')
    line('scale_ratio', {
      phase,
      n2_vs_n1_ops_per_sec: ratio(two.ops_per_sec, one.ops_per_sec),
      n2_vs_n1_server_cpu_per_op: ratio(two.server_cpu_s_per_1k, one.server_cpu_s_per_1k),
      n2_vs_n1_postgres_cpu_per_op: ratio(two.postgres_cpu_s_per_1k, one.postgres_cpu_s_per_1k),
      n2_vs_n1_loadgen_cpu_per_op: ratio(two.loadgen_cpu_s_per_1k, one.loadgen_cpu_s_per_1k),
      n2_vs_n1_machine_busy_cores: ratio(two.cores_machine, one.cores_machine),
    })
  }
  if (failed) {
    console.log('scale note=errors_or_failed_check')
    process.exitCode = 1
  }
}

/**
 * worker: the price of a connection per request. One scratch database; the Node server
 * (its pool keeps connections open), the Worker under `wrangler dev` with the Neon driver
 * (a WebSocket per request, through scripts/ws-proxy.ts to Postgres) and with a Hyperdrive
 * binding (wrangler's local stand-in connects straight to Postgres; the real Hyperdrive
 * would pool). BENCH_WORKER_REQUESTS sequential reads of one task each (and of the liveness
 * route, which touches nothing), after a warm-up: latency p50/p99, and Postgres sessions
 * opened per request (pg_stat_database.sessions).
 */
async function benchWorker() {
  if (!onPostgres) {
    line('worker', { skipped: 'needs DATABASE_URL=postgres://…' })
    return
  }
  const REQUESTS = Number(process.env.BENCH_WORKER_REQUESTS ?? 300)
  const { url, drop } = await scratch()
  const secret = 'bench-worker-secret-at-least-32-characters'
  const children: ChildProcess[] = []
  const config = `.wrangler/bench-hyperdrive-${process.pid}.toml`
  const { rmSync } = await import('node:fs')
  try {
    const node = await startServer(url, secret, { env: { SWEEP_INTERVAL_SECONDS: '0' } })
    children.push(node.child)
    const proxyPort = await freePort()
    children.push(
      spawn(process.execPath, ['--import', 'tsx', 'scripts/ws-proxy.ts', '--port', String(proxyPort)], {
        stdio: 'ignore',
      }),
    )
    writeHyperdriveConfig(config, url)
    const wrangler = async (args: string[], file?: string) => {
      const port = await freePort()
      const child = spawn(
        process.execPath,
        [
          'node_modules/wrangler/bin/wrangler.js',
          'dev',
          ...(file ? ['-c', file] : []),
          '--ip',
          '127.0.0.1',
          '--port',
          String(port),
          '--show-interactive-dev-session=false',
          '--var',
          `SECRET_KEY:${secret}`,
          '--var',
          'LOG_LEVEL:warn',
          ...args,
        ],
        {
          env: {
            ...process.env,
            WRANGLER_SEND_METRICS: 'false',
            CLOUDFLARE_CF_FETCH_ENABLED: 'false',
            XDG_CONFIG_HOME: `${process.cwd()}/.config`,
            CI: '1',
          },
          stdio: 'ignore',
        },
      )
      children.push(child)
      const base = `http://127.0.0.1:${port}`
      const deadline = Date.now() + 90_000
      for (;;) {
        if ((await fetch(`${base}/api/v1/health/readiness`).catch(() => undefined))?.ok) return base
        if (Date.now() > deadline || child.exitCode !== null) throw new Error('wrangler dev did not start')
        await new Promise((r) => setTimeout(r, 250))
      }
    }
    const neon = await wrangler(['--var', `DATABASE_URL:${url}`, '--var', `NEON_WS_PROXY:127.0.0.1:${proxyPort}`])
    const hyperdrive = await wrangler([], config)

    const admin = await signToken(
      { ...loadConfig({}), secretKey: secret, algorithm: 'HS256' },
      { sub: 'bench-worker', role: 'admin' },
      30,
    )
    const created = await jsonApi(node.base, admin)('/api/v1/tasks', {
      method: 'POST',
      body: { name: 'read-me', type: 'bench', scheduledAt: '2099-01-01T00:00:00Z' },
    })
    const path = `/api/v1/tasks/${created.body.id}`
    const stats = new pg.Client({ connectionString: url })
    await stats.connect()
    const sessions = async () => {
      await new Promise((r) => setTimeout(r, 1500)) // ended sessions' counters reach the view
      const { rows } = await stats.query<{ n: string }>(
        'SELECT sessions::text AS n FROM pg_stat_database WHERE datname = current_database()',
      )
      return Number(rows[0]?.n)
    }
    const timed = async (target: string, route: string) => {
      for (let i = 0; i < 20; i++)
        await (await fetch(`${target}${route}`, { headers: { authorization: `Bearer ${admin}` } })).text()
      const before = await sessions()
      const ms: number[] = []
      let errors = 0
      for (let i = 0; i < REQUESTS; i++) {
        const t0 = performance.now()
        const res = await fetch(`${target}${route}`, { headers: { authorization: `Bearer ${admin}` } })
        await res.text()
        ms.push(performance.now() - t0)
        if (res.status !== 200) errors++
      }
      // (The stats client's own session is still open, so not counted.)
      const opened = (await sessions()) - before
      return { ms, errors, opened }
    }
    const results: Record<string, number> = {}
    for (const [name, target] of [
      ['node', node.base],
      ['worker_neon', neon],
      ['worker_hyperdrive', hyperdrive],
    ] as const) {
      const read = await timed(target, path)
      const live = await timed(target, '/api/v1/health/liveness')
      results[name] = percentile(read.ms, 50)
      line('worker', {
        target: name,
        requests: REQUESTS,
        read_p50_ms: percentile(read.ms, 50),
        read_p99_ms: percentile(read.ms, 99),
        liveness_p50_ms: percentile(live.ms, 50),
        read_minus_liveness_p50_ms: percentile(read.ms, 50) - percentile(live.ms, 50),
        sessions_per_read: read.opened / REQUESTS,
        sessions_per_liveness: live.opened / REQUESTS,
        errors: read.errors + live.errors,
      })
    }
    await stats.end()
    line('worker_ratio', {
      neon_vs_node_read_p50: (results.worker_neon ?? 0) / (results.node ?? 1),
      hyperdrive_vs_node_read_p50: (results.worker_hyperdrive ?? 0) / (results.node ?? 1),
    })
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM')
    await Promise.all(children.map((c) => (c.exitCode !== null ? undefined : new Promise((r) => c.once('exit', r)))))
    rmSync(config, { force: true })
    await drop()
  }
}

/**
 * queue-plan (Postgres only, runs only when named): how Postgres plans the heartbeat's fill
 * — the pending queue read in index order until the agent's free slots are filled — with
 * the fit rule in each form it has had: bare (the plain conjunction), the plpgsql function
 * `task_fits` of migration 0002, and `FITS_QUEUE_SQL` (the rule in coalesce(…, false), what
 * the fill uses). 20,000 pending tasks (half need a capability the agent lacks), one agent
 * with 4 free slots. For each form: whether the plan reads the queue's index or sorts the
 * queue, and the median execution time of 9 EXPLAIN ANALYZE runs.
 */
async function benchQueuePlan() {
  if (!onPostgres) {
    console.log('queue-plan: skipped (needs DATABASE_URL=postgres://…)')
    return
  }
  const { database, drop } = await scratch()
  try {
    const db = database.db
    await db.execute(sql`INSERT INTO agents (id, name, provider, capabilities, labels, max_concurrent_tasks, status, created_at, updated_at)
      VALUES (gen_random_uuid(), 'plan-agent', 'aws', '{cpu,docker}', '{}', 4, 'online', now(), now())`)
    await db.execute(sql`INSERT INTO tasks (id, name, type, priority, req_capabilities, req_labels, status, available_at, created_at, updated_at)
      SELECT gen_random_uuid(), 'plan-' || i, 'x', 1 + i % 10,
             CASE WHEN i % 2 = 0 THEN '{gpu}'::text[] ELSE '{cpu}'::text[] END, '{}', 'pending', now(), now(), now()
        FROM generate_series(1, 20000) i`)
    await db.execute(sql`ANALYZE`)
    const forms = {
      bare: meetsRequirementsSql(agentColumns('a'), taskColumns('t')),
      task_fits: `task_fits(a.capabilities, a.provider, a.region, a.labels, a.id,
                            t.req_capabilities, t.req_provider, t.req_region, t.req_labels, t.req_agent_id)`,
      coalesce: FITS_QUEUE_SQL,
    }
    for (const [form, fit] of Object.entries(forms)) {
      const ms: number[] = []
      let plan = ''
      for (let i = 0; i < 9; i++) {
        const [row] = await rowsOf<{ 'QUERY PLAN': { Plan: unknown; 'Execution Time': number }[] }>(
          db,
          sql.raw(`EXPLAIN (ANALYZE, FORMAT JSON)
            WITH a AS MATERIALIZED (SELECT * FROM agents WHERE name = 'plan-agent')
            SELECT t.id FROM tasks t, a
             WHERE t.status = 'pending' AND t.available_at <= now() AND ${fit}
             ORDER BY ${queueOrderSql('t')} LIMIT 4 FOR UPDATE OF t SKIP LOCKED`),
        )
        const out = row?.['QUERY PLAN'][0]
        if (!out) throw new Error('no plan')
        ms.push(out['Execution Time'])
        plan = JSON.stringify(out.Plan)
      }
      line('queue_plan', {
        form,
        pending: 20_000,
        reads_queue_index: plan.includes('tasks_pending_queue_idx') ? 'yes' : 'no',
        sorts_queue: plan.includes('"Node Type":"Sort"') ? 'yes' : 'no',
        execution_ms_p50: percentile(ms, 50),
      })
    }
  } finally {
    await drop()
  }
}

if (!only || only === 'sweep') await benchSweep()
const poolSizes = parsePoolSizes(process.env.BENCH_POOL_SIZES)
if (only === 'heartbeat' && poolSizes) await heartbeatByPool(poolSizes, Number(process.env.BENCH_POOL_ROUNDS ?? 3))
else if (!only || only === 'heartbeat') await benchHeartbeat()
if (!only || only === 'statistics') await benchStatistics()
let batchedRate: number | undefined
if (!only || only === 'lifecycle' || only === 'peers') batchedRate = await benchLifecycle('batched')
if (!only || only === 'lifecycle') await benchLifecycle('agents')
if (!only || only === 'lifecycle') await benchLifecycle('single')
if (!only || only === 'peers') await benchPeers(batchedRate)
if (!only || only === 'read') await benchRead()
if (!only || only === 'streams') await benchStreams()
if (!only || only === 'logs') await benchLogs()
if (only === 'queue-plan') await benchQueuePlan()
if (only === 'scale') await benchScale()
if (only === 'worker') await benchWorker()
if (only === 'fanout') await benchFanout()
if (only === 'statements') await benchStatements()
// scripts/bench/: steady and backlog (Postgres; on PGlite each prints a note).
const ctx: BenchContext = { onPostgres, baseUrl, line, scratch, startServer, stopServer, cpuSeconds, postgresCpuByPid }
if (!only || only === 'steady') await benchSteady(ctx)
if (!only || only === 'backlog') await benchBacklog(ctx)
if (only === 'rollout') await benchRollout(ctx)
