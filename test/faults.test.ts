import { sql } from 'drizzle-orm'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rowsOf } from '../src/db/client'
import { connectDatabase } from '../src/db/connect'
import { isDatabaseUnavailable, withTx } from '../src/db/tx'
import { loadConfig } from '../src/env'
import { createLogger } from '../src/lib/logger'
import { signToken } from '../src/lib/tokens'
import { type CallOptions, createHarness, freshPostgresUrl, type Harness, onPostgres, SECRET, unique } from './harness'
import { Relay, type RelayMode } from './relay'
import { bunBin, runtimes, startServer, stopped } from './spawn'

/**
 * A database blip under load, on the real server and the real Postgres: the service's
 * backends are killed again and again (`pg_terminate_backend` on its own database) while
 * registrations, agent edits, task creates and reports, heartbeats of many agents at once
 * (written in batches, carrying reports), and event reads run. The process must live,
 * clients must get only 2xx or 503 (never a 500 or a dropped connection), writes must
 * succeed again within seconds of the last kill, and every write the service acknowledged
 * must be in the database.
 */
const KILL_FOR_MS = 8_000
const KILL_EVERY_MS = 350
const CALM_MS = 4_000
const LOOPS = 8
/** Agents heartbeating (with reports) at once, besides the loops. */
const BEATERS = 12

type Outcome = { kind: string; status: number; at: number }
function byStatusOf(outcomes: Outcome[]) {
  const m = new Map<number, number>()
  for (const o of outcomes) m.set(o.status, (m.get(o.status) ?? 0) + 1)
  return m
}

// Said in the test output, so a run without Postgres (or Bun) does not pass for one with it.
if (!onPostgres())
  console.warn('skipped: database faults (every test here): no Postgres (set TEST_DATABASE_URL=postgres://…)')
else if (!(runtimes as readonly string[]).includes('bun'))
  console.warn(`skipped: database faults under Bun: bun not found at ${bunBin} (npm ci installs it)`)
describe.runIf(onPostgres())('a pooled connection that dies', () => {
  it('fails the transaction it was in, is discarded, and the next transaction gets a live one', async () => {
    const url = await freshPostgresUrl()
    // One connection: a leaked or reused dead client would hang or fail everything after it.
    const database = await connectDatabase(url, { poolMax: 1 })
    const admin = new pg.Client({ connectionString: url })
    await admin.connect()
    try {
      const pidOf = async () =>
        (await rowsOf<{ pid: number }>(database.db, sql`select pg_backend_pid() as pid`))[0]?.pid as number
      for (let round = 0; round < 3; round++) {
        const pid = await pidOf()
        await admin.query('SELECT pg_terminate_backend($1)', [pid])
        // The idle client died: its transaction (BEGIN first) fails as "unavailable", never hangs.
        const failed = await withTx(database.db, async (tx) => rowsOf(tx, sql`select 1`)).catch((e: unknown) => e)
        if (failed instanceof Error) expect(isDatabaseUnavailable(failed), String(failed)).toBe(true)
        // Killed inside a transaction: that transaction fails the same way.
        const mid = await withTx(database.db, async (tx) => {
          const [me] = await rowsOf<{ pid: number }>(tx, sql`select pg_backend_pid() as pid`)
          await admin.query('SELECT pg_terminate_backend($1)', [me?.pid])
          return rowsOf(tx, sql`select 1`)
        }).catch((e: unknown) => e)
        expect(mid).toBeInstanceOf(Error)
        expect(isDatabaseUnavailable(mid), String(mid)).toBe(true)
        // And the pool's one slot is free and live again.
        const [ok] = await withTx(database.db, async (tx) => rowsOf<{ n: number }>(tx, sql`select 1 as n`))
        expect(ok?.n).toBe(1)
        expect(await pidOf()).not.toBe(pid)
      }
    } finally {
      await admin.end()
      await database.close()
    }
  })
})

describe.runIf(onPostgres())('a pool with no free connection', () => {
  it('fails a transaction that waited past the timeout as unavailable (503), not as a bug (500)', async () => {
    const database = await connectDatabase(await freshPostgresUrl(), { poolMax: 1, connectTimeoutMs: 300 })
    let release: () => void = () => {}
    const held = new Promise<void>((r) => (release = r))
    try {
      let inside: () => void = () => {}
      const holding = new Promise<void>((r) => (inside = r))
      const holder = withTx(database.db, async () => {
        inside()
        await held
      })
      await holding // the only connection is taken
      const waited = await withTx(database.db, async (tx) => rowsOf(tx, sql`select 1`)).catch((e: unknown) => e)
      expect(waited).toBeInstanceOf(Error)
      expect(isDatabaseUnavailable(waited), String(waited)).toBe(true)
      release()
      await holder
    } finally {
      release()
      await database.close()
    }
  })
})

describe.runIf(onPostgres()).each(runtimes)('database faults under load, server under %s', (runtime) => {
  it('survives repeated pg_terminate_backend: only 2xx or 503, nothing acknowledged lost', async () => {
    const url = await freshPostgresUrl()
    const dbName = new URL(url).pathname.slice(1)
    const server = startServer(
      {
        DATABASE_URL: url,
        SECRET_KEY: SECRET,
        ENVIRONMENT: 'test',
        SWEEP_INTERVAL_SECONDS: '1',
        RATE_LIMIT_PER_MINUTE: '0',
      },
      runtime,
    )
    const admin = new pg.Client({ connectionString: url })
    try {
      const base = await server.listening
      await admin.connect()
      const config = loadConfig({ SECRET_KEY: SECRET })
      const operator = await signToken(config, { sub: 'fault-operator', role: 'operator' }, 60)
      const call = async (kind: string, method: string, path: string, token: string, body?: unknown) => {
        try {
          const res = await fetch(`${base}${path}`, {
            method,
            headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
            body: body === undefined ? undefined : JSON.stringify(body),
            signal: AbortSignal.timeout(15_000),
          })
          const text = await res.text()
          // A 503 without Retry-After counts as a wrong answer.
          const status = res.status === 503 && !res.headers.get('retry-after') ? 599 : res.status
          outcomes.push({ kind, status, at: Date.now() })
          if (status >= 500 && status !== 503)
            failures.push(`${kind} ${method} ${path}: ${status} ${text.slice(0, 300)}`)
          return { status, body: text ? JSON.parse(text) : undefined }
        } catch (err) {
          outcomes.push({ kind, status: 0, at: Date.now() })
          failures.push(`${kind} ${method} ${path}: ${(err as Error).message}`)
          return { status: 0, body: undefined }
        }
      }
      const failures: string[] = []
      const outcomes: Outcome[] = []

      // A fleet to report from, made before the faults start.
      const fleet: { id: string; token: string }[] = []
      for (let i = 0; i < 4; i++) {
        const a = await call('setup', 'POST', '/api/v1/agents', operator, {
          name: `fault-agent-${i}`,
          provider: 'onprem',
          maxConcurrentTasks: 1000,
        })
        expect(a.status).toBe(201)
        fleet.push({ id: a.body.id, token: a.body.token })
        expect(
          (await call('setup', 'POST', '/api/v1/agents/heartbeat', a.body.token, { agentId: a.body.id })).status,
        ).toBe(200)
      }

      // Agents that heartbeat at once (written in batches of several), each reporting in its
      // heartbeat the tasks its previous answer gave it: running and completed.
      const beaters: { id: string; token: string }[] = []
      for (let i = 0; i < BEATERS; i++) {
        const a = await call('setup', 'POST', '/api/v1/agents', operator, {
          name: `fault-beater-${i}`,
          provider: 'onprem',
          maxConcurrentTasks: 1000,
        })
        expect(a.status).toBe(201)
        beaters.push({ id: a.body.id, token: a.body.token })
      }

      // What the service acknowledged, to look for in the database afterwards.
      const acked = {
        agents: [] as string[],
        edits: new Map<string, number>(), // agent id → highest version acknowledged
        tasks: [] as string[],
        running: new Set<string>(),
        completed: new Set<string>(),
      }
      let n = 0
      const stopAt = Date.now() + KILL_FOR_MS + CALM_MS
      const loop = async (worker: number) => {
        while (Date.now() < stopAt) {
          const i = ++n
          const agent = fleet[Math.floor(i / 4) % fleet.length] as { id: string; token: string }
          switch (i % 4) {
            case 0: {
              const r = await call('register', 'POST', '/api/v1/agents', operator, {
                name: `fault-${worker}-${i}`,
                provider: 'aws',
              })
              if (r.status === 201) acked.agents.push(r.body.id)
              break
            }
            case 1: {
              const r = await call('edit', 'PUT', `/api/v1/agents/${agent.id}`, operator, {
                name: `fault-agent-${fleet.indexOf(agent)}`,
                provider: 'onprem',
                description: `edit ${i}`,
                maxConcurrentTasks: 1000,
              })
              if (r.status === 200) acked.edits.set(agent.id, Math.max(acked.edits.get(agent.id) ?? 0, r.body.version))
              break
            }
            case 2: {
              const t = await call('create', 'POST', '/api/v1/tasks', operator, {
                name: `fault-task-${i}`,
                type: 'fault.test',
                requirements: { agentId: agent.id },
              })
              if (t.status !== 201) break
              acked.tasks.push(t.body.id)
              if (t.body.status !== 'assigned') break
              const path = `/api/v1/tasks/${t.body.id}/status`
              const run = await call('report', 'PATCH', path, agent.token, {
                status: 'running',
                attempt: t.body.attempt,
              })
              if (run.status !== 200) break
              acked.running.add(t.body.id)
              const done = await call('report', 'PATCH', path, agent.token, {
                status: 'completed',
                attempt: t.body.attempt,
                result: { i },
              })
              if (done.status === 200) acked.completed.add(t.body.id)
              break
            }
            default:
              await call('events', 'GET', '/api/v1/events?after=0&limit=50', operator)
          }
        }
      }

      const beat = async (me: { id: string; token: string }) => {
        let reports: { taskId: string; attempt: number; status: string }[] = []
        for (let i = 0; Date.now() < stopAt; i++) {
          const t = await call('create', 'POST', '/api/v1/tasks', operator, {
            name: `fault-beat-${i}`,
            type: 'fault.test',
            requirements: { agentId: me.id },
          })
          if (t.status === 201) acked.tasks.push(t.body.id)
          const hb = await call('heartbeat', 'POST', '/api/v1/agents/heartbeat', me.token, { agentId: me.id, reports })
          // Not answered: the same reports again (a report that did land is then a repeat, ok).
          if (hb.status !== 200) continue
          if (hb.body.agent.id !== me.id) failures.push(`heartbeat of ${me.id} answered for ${hb.body.agent.id}`)
          for (const [n, r] of (hb.body.reports as { taskId: string; ok: boolean }[]).entries()) {
            const sent = reports[n]
            if (!r.ok || sent?.taskId !== r.taskId) {
              failures.push(`heartbeat report ${JSON.stringify(sent)} answered ${JSON.stringify(r)}`)
              continue
            }
            ;(sent.status === 'completed' ? acked.completed : acked.running).add(r.taskId)
          }
          reports = (hb.body.assignments as { id: string; attempt: number; agentId: string }[]).flatMap((a) => {
            if (a.agentId !== me.id) failures.push(`heartbeat of ${me.id} was given ${a.id} of ${a.agentId}`)
            return [
              { taskId: a.id, attempt: a.attempt, status: 'running' },
              { taskId: a.id, attempt: a.attempt, status: 'completed' },
            ]
          })
        }
      }

      let kills = 0
      let lastKill = 0
      const killer = (async () => {
        const end = Date.now() + KILL_FOR_MS
        while (Date.now() < end) {
          await new Promise((r) => setTimeout(r, KILL_EVERY_MS))
          const { rows } = await admin.query<{ n: number }>(
            `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
              WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'`,
            [dbName],
          )
          kills += rows[0]?.n ?? 0
          lastKill = Date.now()
        }
      })()
      await Promise.all([killer, ...Array.from({ length: LOOPS }, (_, w) => loop(w)), ...beaters.map(beat)])

      // The process lives and answers.
      expect(server.child.exitCode, `the server exited: ${server.output().err.slice(-2000)}`).toBeNull()
      expect((await fetch(`${base}/api/v1/health/liveness`)).status).toBe(200)
      expect(kills, 'backends were killed').toBeGreaterThan(10)

      console.log(
        `faults (${runtime}): ${kills} backends killed; answers ${JSON.stringify(Object.fromEntries(byStatusOf(outcomes)))}; ` +
          `acknowledged: ${acked.agents.length} registrations, ${acked.edits.size} agents edited, ${acked.tasks.length} tasks, ${acked.completed.size} completions`,
      )
      // Only 2xx and 503: no 500, no dropped connection, no other error.
      const byStatus = byStatusOf(outcomes)
      const statuses = [...byStatus.keys()].filter((s) => !(s >= 200 && s < 300) && s !== 503)
      expect(
        statuses,
        `unexpected statuses ${JSON.stringify([...byStatus])}: ${failures.slice(0, 5).join('; ')}`,
      ).toEqual([])
      expect(byStatus.get(503) ?? 0, 'the kills were felt').toBeGreaterThan(0)

      // Writes succeed again within seconds of the last kill.
      for (const kind of ['register', 'edit', 'create', 'report', 'heartbeat']) {
        const firstOk = outcomes.find((o) => o.kind === kind && o.at > lastKill && o.status < 300)
        expect(firstOk, `a ${kind} succeeded after the last kill`).toBeDefined()
        expect((firstOk?.at ?? Infinity) - lastKill, `${kind} recovered`).toBeLessThan(3_000)
      }

      // Every acknowledged write is in the database.
      const check = new pg.Client({ connectionString: url })
      await check.connect()
      try {
        const agentRows = await check.query<{ id: string; version: number }>(
          'SELECT id, version FROM agents WHERE id = ANY($1::uuid[])',
          [[...acked.agents, ...acked.edits.keys()]],
        )
        const versions = new Map(agentRows.rows.map((r) => [r.id, r.version]))
        for (const id of acked.agents) expect(versions.has(id), `registered agent ${id} kept`).toBe(true)
        for (const [id, v] of acked.edits) expect(versions.get(id), `edit of ${id} kept`).toBeGreaterThanOrEqual(v)
        const taskRows = await check.query<{ id: string; status: string }>(
          'SELECT id, status FROM tasks WHERE id = ANY($1::uuid[])',
          [acked.tasks],
        )
        const status = new Map(taskRows.rows.map((r) => [r.id, r.status]))
        for (const id of acked.tasks) expect(status.has(id), `created task ${id} kept`).toBe(true)
        for (const id of acked.running) expect(['running', 'completed']).toContain(status.get(id))
        for (const id of acked.completed) expect(status.get(id), `completion of ${id} kept`).toBe('completed')
        expect(acked.completed.size, 'tasks completed during the test').toBeGreaterThan(5)
      } finally {
        await check.end()
      }
      // The heartbeats were written in batches of several agents (and answered each its own: above).
      const metrics = await (await fetch(`${base}/metrics`)).text()
      const batches = Number(/^agenticcp_heartbeat_batch_agents_count (\d+)/m.exec(metrics)?.[1] ?? 0)
      const alone = Number(/^agenticcp_heartbeat_batch_agents_bucket\{le="1"\} (\d+)/m.exec(metrics)?.[1] ?? 0)
      console.log(`faults (${runtime}): heartbeats in ${batches} statements, ${batches - alone} of several agents`)
      expect(batches - alone, 'heartbeat batches of more than one agent').toBeGreaterThan(0)
      const createBatches = Number(/^agenticcp_create_batch_tasks_count (\d+)/m.exec(metrics)?.[1] ?? 0)
      const createsAlone = Number(/^agenticcp_create_batch_tasks_bucket\{le="1"\} (\d+)/m.exec(metrics)?.[1] ?? 0)
      console.log(
        `faults (${runtime}): creates in ${createBatches} statements, ${createBatches - createsAlone} of several`,
      )
      expect(createBatches - createsAlone, 'create batches of more than one task').toBeGreaterThan(0)

      // And it still shuts down cleanly.
      server.child.kill('SIGTERM')
      expect(await server.exited).toBe(0)
    } finally {
      await admin.end().catch(() => {})
      await stopped(server.child, server.exited)
    }
  }, 90_000)
})

/**
 * Every way the database can be out of reach, played by a TCP relay in front of the real
 * Postgres (test/relay.ts), against the app in this process: the port refused, the
 * connection reset or closed during the startup handshake (node-postgres says "Connection
 * terminated unexpectedly", with no code), a server that never answers (the connect
 * timeout) or goes dark mid-query (`query_timeout`), a server that refuses the connection
 * as one starting, shutting down or full does (57P01, 57P02, 57P03, 53300), and the
 * service's backends terminated. Each request of every kind — a heartbeat and a create
 * (hot statements), reads (prepared and built), a transaction, the event log, statistics —
 * answers 503 `service_unavailable` with Retry-After, never 500, and no stack is logged.
 */
describe.runIf(onPostgres())('a database out of reach', () => {
  const logs: Record<string, unknown>[] = []
  const logger = createLogger({ level: 'warn', format: 'json', write: (line) => logs.push(JSON.parse(line)) })
  /** Lines of a failure taken for a bug: `unhandled error`, or any with a stack. */
  const unhandled = () =>
    logs.filter((l) => l.msg === 'unhandled error' || 'stack' in l).map((l) => JSON.stringify(l).slice(0, 500))
  let h: Harness
  let relay: Relay
  let url: string
  let agent: { id: string; token: string }
  let task: { id: string }

  beforeAll(async () => {
    url = await freshPostgresUrl()
    const target = new URL(url)
    relay = new Relay(target.hostname, Number(target.port || 5432))
    await relay.start()
    const through = new URL(url)
    through.hostname = '127.0.0.1'
    through.port = String(relay.port)
    through.searchParams.set('query_timeout', '1500')
    const database = await connectDatabase(through.toString(), { poolMax: 4, connectTimeoutMs: 1000 })
    // No Redis, even in CI: a read answered from its cache would not meet the database.
    h = await createHarness({ RATE_LIMIT_PER_MINUTE: '0', REDIS_URL: '' }, database, { logger })
    agent = await h.agent({ maxConcurrentTasks: 100 })
    task = await h.pendingTask()
  })
  afterAll(async () => {
    relay.mode = 'pass'
    await h.close()
    await relay.stop()
  })

  /** One request of every kind, at once. */
  const everything = () =>
    Promise.all(
      (
        [
          ['heartbeat', 'POST', '/api/v1/agents/heartbeat', { token: agent.token, body: { agentId: agent.id } }],
          [
            'create',
            'POST',
            '/api/v1/tasks',
            { body: { name: unique('t'), type: 'x', scheduledAt: '2099-01-01T00:00:00Z' } },
          ],
          ['read', 'GET', `/api/v1/tasks/${task.id}`, {}],
          ['list', 'GET', '/api/v1/tasks?limit=5', {}],
          ['transaction', 'PATCH', `/api/v1/agents/${agent.id}/status`, { body: { status: 'online' } }],
          ['events', 'GET', '/api/v1/events?after=0&limit=5', {}],
          ['statistics', 'GET', '/api/v1/tasks/statistics', {}],
        ] as const
      ).map(async ([kind, method, path, opts]) => {
        const res = await h.call(method, path, opts as CallOptions)
        return { kind, status: res.status, retryAfter: res.headers.get('retry-after'), code: res.body?.code }
      }),
    )

  const faults: [string, RelayMode | 'refused'][] = [
    ['the port refused', 'refused'],
    ['reset during the startup handshake', 'reset'],
    ['closed as it opens', 'close'],
    ['a server that never answers (connect timeout)', 'stall'],
    [
      '57P01 admin_shutdown at connect',
      { fatal: '57P01', message: 'terminating connection due to administrator command' },
    ],
    [
      '57P02 crash_shutdown at connect',
      { fatal: '57P02', message: 'terminating connection because of crash of another server process' },
    ],
    ['57P03 cannot_connect_now', { fatal: '57P03', message: 'the database system is starting up' }],
    ['53300 too_many_connections', { fatal: '53300', message: 'sorry, too many clients already' }],
  ]

  for (const [name, mode] of faults) {
    it(`answers 503 with Retry-After when ${name}, and serves again once it is back`, async () => {
      logs.length = 0
      relay.cutAll() // the pool's open connections go: every request needs a new one
      const port = relay.port
      if (mode === 'refused') await relay.stop()
      else relay.mode = mode
      const answers = await everything()
      for (const a of answers) {
        expect(a, JSON.stringify(answers)).toMatchObject({ status: 503, code: 'service_unavailable', retryAfter: '1' })
      }
      expect(unhandled()).toEqual([])

      if (mode === 'refused') await relay.start(port)
      relay.mode = 'pass'
      const back = await everything()
      for (const a of back) expect(a.status, JSON.stringify(back)).toBeLessThan(300)
    })
  }

  it('answers 503 with Retry-After when the database goes dark mid-query (query_timeout)', async () => {
    expect((await everything()).every((a) => a.status < 300)).toBe(true) // the pool holds live connections
    logs.length = 0
    relay.mode = 'stall' // they stop relaying, and new ones are never answered
    const answers = await everything()
    for (const a of answers) {
      expect(a, JSON.stringify(answers)).toMatchObject({ status: 503, code: 'service_unavailable', retryAfter: '1' })
    }
    expect(unhandled()).toEqual([])
    relay.mode = 'pass'
    relay.cutAll()
    for (const a of await everything()) expect(a.status).toBeLessThan(300)
  })

  /**
   * A create commits, then reads (why the new task waits; a batch re-reads what it placed).
   * A connection that dies on such a read must not turn the answer into 503: the client
   * would create the task again. The relay cuts exactly that read.
   */
  it('answers a create 201 with the committed task when the database goes away right after the commit', async () => {
    const named = async (name: string) => {
      const admin = new pg.Client({ connectionString: url })
      await admin.connect()
      try {
        return (await admin.query<{ status: string }>('SELECT status FROM tasks WHERE name = $1', [name])).rows
      } finally {
        await admin.end()
      }
    }
    const nobody = '00000000-0000-7000-8000-000000000000' // pending: why it waits is read after the insert
    try {
      relay.cutWhen = (chunk) => chunk.includes('fitsButType') // the pending-reason probe
      logs.length = 0
      const name = unique('after-commit')
      const one = await h.call('POST', '/api/v1/tasks', {
        body: { name, type: 'x', requirements: { agentId: nobody } },
      })
      expect(one.status, JSON.stringify(one.body)).toBe(201)
      expect(one.body).toMatchObject({ name, status: 'pending', pendingReason: null })
      expect(await named(name)).toEqual([{ status: 'pending' }])
      expect(logs.some((l) => String(l.msg).startsWith('why new tasks wait could not be read'))).toBe(true)

      const batchName = unique('after-commit-batch')
      const batch = await h.call('POST', '/api/v1/tasks/batch', {
        body: { tasks: [1, 2].map(() => ({ name: batchName, type: 'x', requirements: { agentId: nobody } })) },
      })
      expect(batch.status, JSON.stringify(batch.body)).toBe(201)
      expect(batch.body.created).toBe(2)
      expect(await named(batchName)).toHaveLength(2)

      // Placed at once: answered with the tasks as placement wrote them, nothing read again
      // after the commit (a read of the tasks by id, were there one, would be cut here).
      relay.cutWhen = (chunk) => chunk.includes('from "tasks" where "tasks"."id" in (')
      logs.length = 0
      const placedName = unique('after-commit-placed')
      const placed = await h.call('POST', '/api/v1/tasks/batch', {
        body: { tasks: [{ name: placedName, type: 'x', requirements: { agentId: agent.id } }] },
      })
      expect(placed.status, JSON.stringify(placed.body)).toBe(201)
      expect(placed.body.items).toMatchObject([{ name: placedName, status: 'assigned', agentId: agent.id }])
      expect(await named(placedName)).toEqual([{ status: 'assigned' }])
      expect(logs).toEqual([])
    } finally {
      relay.cutWhen = undefined
    }
  })

  it('answers 2xx or 503 with Retry-After, never 500, while the service’s backends are terminated', async () => {
    const admin = new pg.Client({ connectionString: url })
    await admin.connect()
    try {
      const db = new URL(url).pathname.slice(1)
      logs.length = 0
      const seen: Awaited<ReturnType<typeof everything>> = []
      for (let round = 0; round < 6; round++) {
        const pending = everything()
        await admin.query(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'`,
          [db],
        )
        seen.push(...(await pending))
      }
      for (const a of seen) {
        if (a.status >= 300) expect(a, JSON.stringify(a)).toMatchObject({ status: 503, retryAfter: '1' })
      }
      expect(unhandled()).toEqual([])
    } finally {
      await admin.end()
    }
  })
})
