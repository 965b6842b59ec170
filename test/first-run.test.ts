import { spawn, spawnSync } from 'node:child_process'
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { createServer } from 'node:net'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { describe, expect, it } from 'vitest'
import { migrationCount, migrationState } from '../src/db/client'
import { connectDatabase, databaseUrlProblem } from '../src/db/connect'
import { freshPostgresUrl, onPostgres, SECRET, unique } from './harness'
import { builtFile, migratedDataDir, runtimes, script, startServer, stopped, track } from './spawn'
import { until } from './until'

/**
 * What a new user meets first: the real entry point on a bare Postgres database, on the
 * embedded default across restarts, and refusing to start with one clear line.
 */

const tokenIn = (out: string) => /\n {2}(ey[\w.-]+)\n/.exec(out)?.[1]

async function api(base: string, token: string, method: string, path: string, body?: unknown) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await res.text()
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined }
}

if (!onPostgres())
  console.warn(
    'skipped: on a bare Postgres database, and a database that does not exist: no Postgres (set TEST_DATABASE_URL=postgres://…)',
  )
describe.runIf(onPostgres())('on a bare Postgres database', () => {
  it('migrates at start by default and serves at once', async () => {
    const url = await freshPostgresUrl(false)
    const s = startServer({ DATABASE_URL: url, SECRET_KEY: SECRET, ENVIRONMENT: 'development' })
    try {
      const base = await s.listening
      const { signToken } = await import('../src/lib/tokens')
      const { loadConfig } = await import('../src/env')
      const admin = await signToken(loadConfig({ SECRET_KEY: SECRET }), { sub: 'first', role: 'admin' }, 10)
      expect((await api(base, admin, 'POST', '/api/v1/agents', { name: 'first', provider: 'aws' })).status).toBe(201)
      expect((await api(base, admin, 'GET', '/api/v1/tasks')).status).toBe(200)
      expect((await fetch(`${base}/api/v1/health/readiness`)).status).toBe(200)
    } finally {
      await stopped(s.child, s.exited)
    }
  }, 60_000)

  it('several instances starting together migrate once (advisory lock)', async () => {
    const url = await freshPostgresUrl(false)
    const all = await Promise.all([1, 2, 3].map(() => connectDatabase(url, { migrate: true, poolMax: 2 })))
    try {
      const state = await migrationState(all[0]?.db as never)
      expect(state.applied).toBe(true)
      const { rowsOf } = await import('../src/db/client')
      const { sql } = await import('drizzle-orm')
      const [row] = await rowsOf<{ n: number }>(
        all[0]?.db as never,
        sql`select count(*)::int as n from drizzle.__drizzle_migrations`,
      )
      expect(row?.n).toBe(migrationCount)
      // One that finds the lock taken says it waits, then finishes once it is free.
      const holder = new pg.Client({ connectionString: url })
      await holder.connect()
      await holder.query('SELECT pg_advisory_lock(7240431003)')
      let waited = false
      const late = connectDatabase(url, { migrate: true, poolMax: 1, onMigrationWait: () => (waited = true) })
      await until('the late migrator to say it waits for the lock', () => waited)
      await holder.end()
      await (await late).close()
    } finally {
      await Promise.all(all.map((d) => d.close()))
    }
  }, 60_000)

  it('with MIGRATE_ON_START=false: 503 database_not_migrated, one log line, then serves once migrated', async () => {
    const url = await freshPostgresUrl(false)
    const s = startServer({
      DATABASE_URL: url,
      SECRET_KEY: SECRET,
      MIGRATE_ON_START: 'false',
      SWEEP_INTERVAL_SECONDS: '1',
      LOG_LEVEL: 'info',
    })
    try {
      const base = await s.listening
      const { signToken } = await import('../src/lib/tokens')
      const { loadConfig } = await import('../src/env')
      const admin = await signToken(loadConfig({ SECRET_KEY: SECRET }), { sub: 'first', role: 'admin' }, 10)
      const secretName = unique('never-logged')
      const refused = await api(base, admin, 'POST', '/api/v1/agents', { name: secretName, provider: 'aws' })
      expect(refused.status).toBe(503)
      expect(refused.body.code).toBe('database_not_migrated')
      expect(refused.headers.get('retry-after')).toBe('5')
      expect((await api(base, admin, 'GET', '/api/v1/tasks')).body.code).toBe('database_not_migrated')
      const ready = await fetch(`${base}/api/v1/health/readiness`)
      expect(ready.status).toBe(503)
      expect(await ready.json()).toEqual({ status: 'not_ready', reason: 'migrations not applied' })

      // The sweep says so once, however many ticks pass (the timer ticks every second, and
      // asks the database again every 2 s while it is behind): wait until it has asked twice
      // more since it said so.
      await s.waitFor(/"msg":"sweep paused"/)
      const watcher = new pg.Client({ connectionString: url })
      await watcher.connect()
      try {
        const asks = async () =>
          (
            await watcher.query<{ at: string }>(
              `SELECT query_start::text AS at FROM pg_stat_activity
                WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%to_regclass(%'`,
            )
          ).rows.map((r) => r.at)
        const before = new Set(await asks())
        const since = new Set<string>()
        await until('the sweep timer to check the database twice more', async () => {
          for (const at of await asks()) if (!before.has(at)) since.add(at)
          return since.size >= 2
        })
      } finally {
        await watcher.end()
      }
      const migrated = await connectDatabase(url, { migrate: true })
      await migrated.close()
      await s.waitFor(/"msg":"sweep resumed"/)
      const { out, err } = s.output()
      const all = out + err
      expect(all.match(/"msg":"sweep paused"/g)).toHaveLength(1)
      expect(all.match(/"msg":"sweep resumed"/g)).toHaveLength(1)
      expect(all).toContain('npm run db:migrate')
      // Never a query's text with its values, never a stack, never what the client sent.
      expect(all).not.toMatch(/params:|Failed query|\n\s+at /)
      expect(all).not.toContain(secretName)

      const created = await api(base, admin, 'POST', '/api/v1/agents', { name: 'after', provider: 'aws' })
      expect(created.status).toBe(201)
      // The timer's sweeps are in the process's metrics.
      const metrics = await (await fetch(`${base}/metrics`)).text()
      expect(Number(/^agenticcp_sweeps_total\{result="ran"\} (\d+)/m.exec(metrics)?.[1] ?? 0)).toBeGreaterThan(0)
    } finally {
      await stopped(s.child, s.exited)
    }
  }, 60_000)
})

describe('the embedded default', () => {
  it('keeps its data and its development key across restarts, and `npm run token` signs with it', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'act-first-'))
    const env = { DATA_DIR: dataDir, ENVIRONMENT: 'development', LOG_LEVEL: 'info' }
    const first = startServer(env)
    let agentId: string
    let firstToken: string
    try {
      const base = await first.listening
      firstToken = tokenIn(first.output().out) as string
      expect(firstToken).toBeTruthy()
      expect(first.output().out).toContain(join(dataDir, 'secret-key'))
      const created = await api(base, firstToken, 'POST', '/api/v1/agents', { name: 'kept', provider: 'onprem' })
      expect(created.status).toBe(201)
      agentId = created.body.id
      expect(statSync(join(dataDir, 'secret-key')).mode & 0o777).toBe(0o600)

      // A second server on the same directory would lose writes: it is refused, also when it
      // names the directory as a file: URL, and so is `npm run db:migrate` on it (the three
      // tried at once).
      const seconds = [startServer(env), startServer({ ...env, DATABASE_URL: `file://${join(dataDir, 'pglite')}` })]
      const migrating = script('scripts/migrate.ts', [], { DATABASE_URL: join(dataDir, 'pglite') })
      for (const second of seconds) {
        expect(await second.exited).toBe(1)
        expect(second.output().err.trim().split('\n')).toHaveLength(1)
        expect(second.output().err).toMatch(/^Cannot start: the embedded database in .* is in use by process \d+ on /)
      }
      const migrate = await migrating
      expect(migrate.code).toBe(1)
      expect(migrate.err).toMatch(/^Cannot migrate: the embedded database in .* is in use by process \d+/)

      first.child.kill('SIGTERM')
      expect(await first.exited).toBe(0)
    } finally {
      await stopped(first.child, first.exited)
    }

    const again = startServer(env)
    // `npm run token` needs no server to sign: it runs while the server starts again.
    const minting = script('scripts/token.ts', ['--role', 'viewer'], { DATA_DIR: dataDir })
    try {
      const base = await again.listening
      // The token printed by the first run still works, and the agent is still there.
      const read = await api(base, firstToken, 'GET', `/api/v1/agents/${agentId}`)
      expect(read.status).toBe(200)
      expect(read.body.name).toBe('kept')
      // `npm run token` without SECRET_KEY signs with the same kept key.
      const minted = await minting
      expect(minted.code).toBe(0)
      expect((await api(base, minted.out.trim(), 'GET', '/api/v1/agents')).status).toBe(200)
    } finally {
      await stopped(again.child, again.exited)
    }
    // The heaviest test of the suite: a first start makes the embedded database (initdb and
    // the migrations, ~10 CPU-seconds; ~13 for the whole test), while the other files run.
    // It takes ~10 s on a quiet 2-core machine, and several times that under load.
  }, 180_000)

  it('takes over the lock of a server that died without releasing it', async () => {
    const dataDir = migratedDataDir()
    mkdirSync(join(dataDir, 'pglite'), { recursive: true })
    // A lock left by a process of this host that no longer runs (kill -9, a crash).
    const gone = spawnSync(process.execPath, ['-e', 'process.exit(0)']).pid
    writeFileSync(join(dataDir, 'pglite', 'owner.lock'), JSON.stringify({ pid: gone, host: hostname() }))
    const s = startServer({ DATA_DIR: dataDir, ENVIRONMENT: 'development' })
    try {
      await s.listening
      const lock = JSON.parse(readFileSync(join(dataDir, 'pglite', 'owner.lock'), 'utf8'))
      expect(lock).toEqual({ pid: s.child.pid, host: hostname() })
    } finally {
      s.child.kill('SIGTERM')
    }
    const code = await s.exited
    expect(code, `signal ${s.child.signalCode}: ${s.output().err.slice(-800)} ${s.output().out.slice(-800)}`).toBe(0)
    expect(existsSync(join(dataDir, 'pglite', 'owner.lock')), s.output().out.slice(-1500)).toBe(false) // released at exit
  }, 60_000)

  it('refuses a development key file it cannot trust (a link planted in DATA_DIR)', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'act-link-'))
    const planted = join(mkdtempSync(join(tmpdir(), 'act-planted-')), 'key')
    writeFileSync(planted, 'x'.repeat(64))
    symlinkSync(planted, join(dataDir, 'secret-key'))
    const s = startServer({ DATA_DIR: dataDir, DATABASE_URL: 'memory://', ENVIRONMENT: 'development' })
    expect(await s.exited).toBe(1)
    expect(s.output().err.trim()).toMatch(/^Cannot start: .*secret-key is not a plain file/)
  })

  it('`npm run token` without SECRET_KEY or a kept key says what to do', async () => {
    const r = await script('scripts/token.ts', [], { DATA_DIR: mkdtempSync(join(tmpdir(), 'act-none-')) })
    expect(r.code).toBe(1)
    expect(r.err).toMatch(/SECRET_KEY is not set .* start the server once/)
  })
})

/** The kinds of DATABASE_URL Node and Bun take, as a refusal names them. */
const takes =
  'use postgres:// or postgresql:// (a Postgres server), or memory://, file:<dir> or a directory path (the embedded database)'

describe('DATABASE_URL under Node and Bun', () => {
  it('takes Postgres URLs, memory://, file:<dir> and paths, and refuses every other scheme', () => {
    for (const url of [
      '',
      'postgres://u:p@h/db',
      'postgresql://h/db',
      'POSTGRES://h/db',
      'memory://',
      'file:///var/lib/acp',
      'file:data',
      '/var/lib/acp',
      './data',
      'data',
      'C:\\acp\\data',
    ]) {
      expect(databaseUrlProblem(url), url).toBeUndefined()
    }
    for (const [url, shown] of [
      ['mysql://x@127.0.0.1/y', 'mysql://…'],
      ['redis://127.0.0.1:6379', 'redis://…'],
      ['sqlite:app.db', 'sqlite:…'],
      ['postgres:/h/db', 'postgres:…'],
      ['postgresfoo://h/db', 'postgresfoo://…'],
    ] as const) {
      expect(databaseUrlProblem(url)).toBe(`DATABASE_URL "${shown}" is not a database this service takes: ${takes}`)
    }
    expect(databaseUrlProblem('file:')).toBe(`DATABASE_URL "file:" names no directory: ${takes}`)
    expect(databaseUrlProblem('memory://db')).toBe(
      'DATABASE_URL: the in-memory database is exactly "memory://", with nothing after it',
    )
  })

  it('is refused by connectDatabase too (the scripts, the bench), before a directory is made', async () => {
    await expect(connectDatabase('mysql://x@127.0.0.1/y')).rejects.toThrow(
      /^DATABASE_URL "mysql:\/\/…" is not a database/,
    )
    expect(existsSync('mysql:')).toBe(false)
  })
})

describe('refusing to start, in one line', () => {
  const oneLine = async (s: ReturnType<typeof startServer>) => {
    expect(await s.exited).toBe(1)
    const lines = s.output().err.trim().split('\n')
    expect(lines, s.output().err).toHaveLength(1)
    expect(s.output().err).not.toMatch(/\n\s+at /)
    return lines[0] as string
  }

  it.each(runtimes)(
    'when the port is in use, before making anything, and starts on it once free (under %s)',
    async (runtime) => {
      const holder = createServer()
      await new Promise<void>((r) => holder.listen(0, '127.0.0.1', () => r()))
      const port = (holder.address() as { port: number }).port
      // A first start: no database and no development key yet, which the start would make
      // (building a new embedded database takes seconds) before it found the port taken.
      const dataDir = mkdtempSync(join(tmpdir(), 'act-port-'))
      try {
        const line = await oneLine(startServer({ PORT: String(port), DATA_DIR: dataDir }, runtime))
        expect(line).toBe(`Cannot start: PORT ${port} is already in use on 127.0.0.1; stop what holds it, or set PORT`)
        expect(readdirSync(dataDir)).toEqual([])
      } finally {
        await new Promise((r) => holder.close(r))
      }
      // Once free, the same port is taken: the check lets go of it before the server binds.
      const s = startServer({ PORT: String(port), DATA_DIR: migratedDataDir() }, runtime)
      try {
        expect(await s.listening).toBe(`http://127.0.0.1:${port}`)
      } finally {
        await stopped(s.child, s.exited)
      }
    },
  )

  it('when DATABASE_URL is another kind of database, naming the kinds it takes; `npm run db:migrate` likewise', async () => {
    const url = 'mysql://someone:hunter2-secret@127.0.0.1/app'
    // Run where a directory named after the URL would appear if it were taken for a path.
    const cwd = mkdtempSync(join(tmpdir(), 'act-mysql-'))
    const migrate = spawn(process.execPath, [builtFile('migrate')], {
      cwd,
      env: { PATH: process.env.PATH ?? '', DATABASE_URL: url },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const migrating = track(migrate)
    const line = await oneLine(startServer({ DATABASE_URL: url, SECRET_KEY: SECRET }, 'node', cwd))
    expect(line).toBe(`Cannot start: DATABASE_URL "mysql://…" is not a database this service takes: ${takes}`)
    expect(await migrating.exited).toBe(1)
    expect(migrating.output().err.trim()).toBe(
      `Cannot migrate: DATABASE_URL "mysql://…" is not a database this service takes: ${takes}`,
    )
    expect(line + migrating.output().err).not.toContain('hunter2')
    expect(readdirSync(cwd)).toEqual([])
  })

  it('when nothing listens at DATABASE_URL, and `npm run db:migrate` likewise', async () => {
    const url = 'postgres://someone:hunter2-secret@127.0.0.1:1/app'
    const migrating = script('scripts/migrate.ts', [], { DATABASE_URL: url }) // at the same time
    const line = await oneLine(startServer({ DATABASE_URL: url, SECRET_KEY: SECRET }))
    expect(line).toBe('Cannot start: DATABASE_URL: nothing accepts connections at 127.0.0.1:1 (is Postgres running?)')
    const m = await migrating
    expect(m.code).toBe(1)
    expect(m.err.trim()).toBe(
      'Cannot migrate: DATABASE_URL: nothing accepts connections at 127.0.0.1:1 (is Postgres running?)',
    )
    expect(line + m.err).not.toContain('hunter2')
  })

  it.runIf(onPostgres())('when the database does not exist', async () => {
    const url = new URL(await freshPostgresUrl())
    url.pathname = '/no_such_database_here'
    const line = await oneLine(startServer({ DATABASE_URL: url.toString(), SECRET_KEY: SECRET }))
    expect(line).toMatch(/^Cannot start: DATABASE_URL: database "no_such_database_here" does not exist on /)
    expect(line).toContain('createdb')
  })
})

describe('`npm test` without the optional tools and services', () => {
  it('says in its output why each group of tests skipped, and how to run it', async () => {
    // A clean environment (no TEST_DATABASE_URL, TEST_REDIS_URL, TEST_WORKERS) and no
    // Chromium; `-t` selects no test, so only what the files say at collection is printed.
    const child = spawn(
      process.execPath,
      [
        'node_modules/vitest/vitest.mjs',
        'run',
        '--project',
        'integration',
        ...['dashboard', 'concurrency', 'redis', 'workers'].map((f) => `test/${f}.test.ts`),
        '-t',
        '^no test has this name$',
        '--passWithNoTests',
      ],
      {
        env: { PATH: process.env.PATH ?? '', CHROMIUM_PATH: '/nonexistent/chromium', NO_COLOR: '1' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    const run = track(child)
    expect(await run.exited, run.output().err).toBe(0)
    const { out, err } = run.output()
    const said = (out + err).split('\n').filter((l) => l.startsWith('skipped: '))
    const pg = 'no Postgres (set TEST_DATABASE_URL=postgres://…)'
    expect(said.sort()).toEqual([
      `skipped: the Worker under wrangler dev: TEST_WORKERS=1 is not set, and ${pg}`,
      'skipped: the dashboard in a browser: Chromium not found at /nonexistent/chromium (set CHROMIUM_PATH)',
      'skipped: the tests against a real Redis: no Redis (set TEST_REDIS_URL=redis://…)',
      `skipped: under concurrency on Postgres: ${pg}`,
    ])
  }, 120_000)
})
