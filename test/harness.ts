import { readFileSync } from 'node:fs'
import type { PGlite } from '@electric-sql/pglite'
import { drizzle } from 'drizzle-orm/pglite'
import pg from 'pg'
import { expect, inject } from 'vitest'
import { createApp } from '../src/app'
import { type Database, MIGRATIONS_SCHEMA, MIGRATIONS_TABLE } from '../src/db/client'
import { connectDatabase } from '../src/db/connect'
import { schema } from '../src/db/schema'
import type { Role } from '../src/domain/model'
import { type Config, loadConfig } from '../src/env'
import { ManualClock } from '../src/lib/clock'
import { type Kv, MemoryKv } from '../src/lib/kv'
import { type Logger, silentLogger } from '../src/lib/logger'
import { RedisKv } from '../src/lib/redis'
import type { StallWatch } from '../src/lib/stalls'
import { signToken } from '../src/lib/tokens'
import { runSweep } from '../src/services/scheduler'
import { withDatabase } from './global-setup'

export const SECRET = 'test-secret-that-is-at-least-32-characters-long'

let counter = 0
/** A name no other test uses, so tests never depend on each other's data. */
export const unique = (prefix = 'n') => `${prefix}-${process.pid}-${Date.now().toString(36)}-${++counter}`

export const onPostgres = () => inject('pgAdminUrl') !== ''

/**
 * A fresh, migrated database for one test file: a copy of the run's PGlite snapshot (one
 * that an earlier file of this process closed, emptied back to the snapshot: see `pool`), or
 * a new Postgres database made from the run's template. `migrated: false`: a bare one.
 */
export async function freshDatabase(opts: { migrated?: boolean } = {}): Promise<Database> {
  const migrated = opts.migrated ?? true
  if (onPostgres()) return connectDatabase(await freshPostgresUrl(migrated), { poolMax: 20 })
  if (!migrated)
    return connectDatabase('memory://', { loadDataDir: tarBlob(readFileSync(inject('pgliteBareSnapshot'))) })
  return lease(pool.idle.pop() ?? (await openCopy()))
}

/**
 * The migrated PGlite databases of this process that test files closed, emptied back to the
 * snapshot's state, for the next file: opening a copy of the snapshot (unpacking 40 MB into
 * PGlite's in-memory file system, starting Postgres) costs ~0.7 CPU-seconds, which each of
 * the ~35 files that make one paid, a third of the unit project's CPU; emptying one costs a
 * few hundredths. A database comes back only when nothing but its rows changed: a file that
 * altered its schema, its migrations table or its settings leaves it closed (see recycle).
 * On globalThis: the unit project's workers run file after file (isolate: false).
 */
interface Pristine {
  /** The schema's fingerprint (FINGERPRINT), as in the snapshot. */
  fingerprint: string
  /** TRUNCATE of every table but the migrations', the snapshot's rows put back, its sequences set back. */
  reset: { text: string; values: unknown[] }[]
}
const POOL = Symbol.for('agenticcp.test.pglitePool')
const shared = globalThis as { [POOL]?: { idle: PGlite[]; pristine?: Pristine } }
shared[POOL] ??= { idle: [] }
const pool = shared[POOL]

const USER_SCHEMA = `NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'`
/** Everything of the database but its rows: what a test file must not have changed for its database to be reused. */
const FINGERPRINT = `SELECT md5(string_agg(x, E'\\n' ORDER BY x)) AS f FROM (
  SELECT 'n ' || n.nspname AS x FROM pg_namespace n WHERE n.nspname ${USER_SCHEMA}
  UNION ALL SELECT 'c ' || c.oid::regclass || ' ' || c.relkind::text || c.relpersistence::text || c.relrowsecurity::text || ' ' || coalesce(c.reloptions::text, '')
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname ${USER_SCHEMA}
  UNION ALL SELECT 'a ' || a.attrelid::regclass || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || a.attnotnull::text || a.attisdropped::text || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum WHERE a.attnum > 0 AND n.nspname ${USER_SCHEMA}
  UNION ALL SELECT 'i ' || pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname ${USER_SCHEMA}
  UNION ALL SELECT 'k ' || k.conrelid::regclass || ' ' || k.conname || ' ' || pg_get_constraintdef(k.oid) FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace WHERE n.nspname ${USER_SCHEMA}
  UNION ALL SELECT 't ' || pg_get_triggerdef(t.oid) || t.tgenabled::text FROM pg_trigger t WHERE NOT t.tgisinternal
  UNION ALL SELECT 'p ' || p.oid::regprocedure || ' ' || md5(p.prosrc) || coalesce(p.proconfig::text, '') FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname ${USER_SCHEMA}
  UNION ALL SELECT 'v ' || c.oid::regclass || ' ' || pg_get_viewdef(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('v', 'm') AND n.nspname ${USER_SCHEMA}
  UNION ALL SELECT 'y ' || t.oid::regtype || ' ' || t.typtype::text FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname ${USER_SCHEMA}
  UNION ALL SELECT 'e ' || e.enumtypid::regtype || ' ' || e.enumlabel || ' ' || e.enumsortorder FROM pg_enum e
  UNION ALL SELECT 'x ' || x.extname || ' ' || x.extversion FROM pg_extension x
  UNION ALL SELECT 'r ' || coalesce(s.setconfig::text, '') FROM pg_db_role_setting s
  UNION ALL SELECT 'o ' || r.rolname || r.rolsuper::text FROM pg_roles r
  UNION ALL SELECT 'm ' || m::text FROM ${MIGRATIONS_SCHEMA}.${MIGRATIONS_TABLE} m
) s`

/** A copy of the run's migrated snapshot; the first of the process also tells what the snapshot holds. */
async function openCopy(): Promise<PGlite> {
  const opened = await connectDatabase('memory://', { loadDataDir: tarBlob(readFileSync(inject('pgliteSnapshot'))) })
  const client = (opened.db as unknown as { $client: PGlite }).$client
  pool.pristine ??= await pristineOf(client)
  return client
}

async function pristineOf(client: PGlite): Promise<Pristine> {
  const q = async <T>(text: string, values: unknown[] = []) => (await client.query<T>(text, values)).rows
  const [fp] = await q<{ f: string }>(FINGERPRINT)
  const tables = await q<{ t: string }>(
    `SELECT format('%I.%I', n.nspname, c.relname) AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p') AND n.nspname ${USER_SCHEMA} AND n.nspname <> '${MIGRATIONS_SCHEMA}' ORDER BY 1`,
  )
  const reset: Pristine['reset'] = [
    { text: `TRUNCATE ${tables.map((t) => t.t).join(', ')} RESTART IDENTITY`, values: [] },
  ]
  for (const { t } of tables) {
    const [rows] = await q<{ j: string | null }>(`SELECT json_agg(r)::text AS j FROM ${t} r`)
    if (rows?.j) {
      reset.push({
        text: `INSERT INTO ${t} SELECT * FROM json_populate_recordset(null::${t}, $1::json)`,
        values: [rows.j],
      })
    }
  }
  const sequences = await q<{ s: string; v: string | null; start: string }>(
    `SELECT format('%I.%I', schemaname, sequencename) AS s, last_value::text AS v, start_value::text AS start
     FROM pg_sequences WHERE schemaname <> '${MIGRATIONS_SCHEMA}'`,
  )
  for (const { s, v, start } of sequences) {
    reset.push({
      text: 'SELECT setval($1::text::regclass, $2::bigint, $3::boolean)',
      values: [s, v ?? start, v !== null],
    })
  }
  // What ANALYZE learnt of the rows that are gone (a plan on the next file's rows is the fresh copy's plan).
  reset.push({
    text: `DELETE FROM pg_statistic WHERE starelid IN (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname ${USER_SCHEMA})`,
    values: [],
  })
  return { fingerprint: fp?.f ?? '', reset }
}

/**
 * The database a test file gets: its own drizzle over the client, which refuses every call
 * once the file closed it (as a closed PGlite does: "PGlite is closed"), so nothing a file
 * left running reaches the next file's rows. Closing it empties it for the next file.
 */
function lease(client: PGlite): Database {
  let released = false
  const view = new Proxy(client, {
    get(target, key) {
      if (key === 'closed') return released || target.closed
      const v = Reflect.get(target, key, target)
      if (typeof v !== 'function') return v
      return released ? () => Promise.reject(new Error('PGlite is closed')) : v.bind(target)
    },
  })
  return {
    db: drizzle(view, { schema }) as unknown as Database['db'],
    driver: 'pglite',
    close: async () => {
      if (released) return
      released = true
      await recycle(client)
    },
    dumpDataDir: () => view.dumpDataDir('none'),
  }
}

/**
 * A closed file's database back to the snapshot's state, into the pool; closed instead when
 * the file changed more than its rows (its schema, migrations, settings), or left a
 * transaction open, or anything here fails.
 */
async function recycle(client: PGlite) {
  try {
    const pristine = pool.pristine
    const [now] = (await client.query<{ f: string }>(FINGERPRINT)).rows
    if (!pristine || now?.f !== pristine.fingerprint) throw new Error('changed')
    await client.transaction(async (tx) => {
      for (const r of pristine.reset) await tx.query(r.text, r.values)
    })
    // Session state: SET values, prepared statements, temporary tables, advisory locks.
    await client.exec('DISCARD ALL')
    await client.exec('CHECKPOINT')
    pool.idle.push(client)
  } catch {
    await client.close().catch(() => {})
  }
}

/**
 * The snapshot's bytes as PGlite reads a loadDataDir (its `type` and `arrayBuffer()`, nothing
 * else), without a real Blob: Node 20's Blob hands 40 MB back through its chunked reader,
 * ~1 CPU-second of each fresh database (a third of it), which every test file pays.
 */
function tarBlob(bytes: Buffer): Blob {
  const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength
  const buffer = whole ? bytes.buffer : bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)
  return { type: 'application/x-tar', size: bytes.byteLength, arrayBuffer: async () => buffer } as unknown as Blob
}

/** Postgres only: a new database for this run (dropped by the global teardown), as a URL. */
export async function freshPostgresUrl(migrated = true): Promise<string> {
  const adminUrl = inject('pgAdminUrl')
  const name = `${inject('pgRunPrefix')}_${process.pid}_${++counter}`
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  try {
    await admin.query(
      migrated ? `CREATE DATABASE ${name} TEMPLATE ${inject('pgRunPrefix')}_tpl` : `CREATE DATABASE ${name}`,
    )
  } finally {
    await admin.end()
  }
  return withDatabase(adminUrl, name)
}

export interface CallOptions {
  token?: string | null
  body?: unknown
  /** Sent as is, no JSON encoding (for malformed bodies). */
  raw?: string
  headers?: Record<string, string>
}

export interface CallResult {
  status: number
  headers: Headers
  // Tests read arbitrary response fields; the API's own types are checked by tsc in src/.
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are asserted field by field
  body: any
}

export type Harness = Awaited<ReturnType<typeof createHarness>>

/** Redis for the suite when TEST_REDIS_URL is set (CI): every API test then runs through the cache. */
export const testRedisUrl = process.env.TEST_REDIS_URL ?? ''

export async function createHarness(
  overrides: Record<string, string> = {},
  db?: Database,
  /**
   * queueWhileConnecting: Redis commands wait for the connection (default, so a test's first
   * calls find the cache) or, false, fail at once while Redis is away, as the server's do.
   * logger: where the app logs (default: nowhere).
   */
  opts: { queueWhileConnecting?: boolean; logger?: Logger } = {},
) {
  const database = db ?? (await freshDatabase())
  const clock = new ManualClock(new Date('2026-01-01T00:00:00Z'))
  const config: Config = loadConfig({
    ENVIRONMENT: 'test',
    SECRET_KEY: SECRET,
    LOG_LEVEL: 'silent',
    REDIS_URL: testRedisUrl,
    ...overrides,
  })
  const kv: Kv = config.redisUrl
    ? new RedisKv(config.redisUrl, {
        queueWhileConnecting: opts.queueWhileConnecting ?? true,
        maxTtlMs: Math.max(config.cacheTtlSeconds, config.authCacheTtlSeconds) * 1000,
      })
    : new MemoryKv()
  const app = createApp({ config, database, clock, logger: opts.logger ?? silentLogger, startedAt: new Date(), kv })
  const harnessId = unique('h')

  const tokens = new Map<string, string>()
  // Subjects are unique per harness so rate-limit windows in a shared Redis never collide.
  async function token(role: Exclude<Role, 'agent'>, sub = `test-${role}-${harnessId}`): Promise<string> {
    const key = `${role}:${sub}`
    let t = tokens.get(key)
    if (!t) {
      t = await signToken(config, { sub, role }, 60)
      tokens.set(key, t)
    }
    return t
  }

  async function call(method: string, path: string, opts: CallOptions = {}): Promise<CallResult> {
    const headers: Record<string, string> = { ...opts.headers }
    const auth = opts.token === undefined ? await token('admin') : opts.token
    if (auth) headers.authorization = `Bearer ${auth}`
    let body: string | undefined
    if (opts.raw !== undefined) body = opts.raw
    else if (opts.body !== undefined) {
      body = JSON.stringify(opts.body)
      headers['content-type'] ??= 'application/json'
    }
    const res = await app.request(path, { method, headers, body })
    const text = await res.text()
    let parsed: unknown = text
    if (text && /json/.test(res.headers.get('content-type') ?? '')) parsed = JSON.parse(text)
    return { status: res.status, headers: res.headers, body: parsed }
  }

  /**
   * A label value unique to the running test. Helper-made agents carry it and helper-made
   * tasks require it, so one test's tasks are never placed on another test's agents.
   */
  const scopes = new Map<string, string>()
  function scope(): string {
    const name = expect.getState().currentTestName ?? 'none'
    let s = scopes.get(name)
    if (!s) {
      s = unique('scope')
      scopes.set(name, s)
    }
    return s
  }

  /** Registers an agent and (by default) heartbeats it online; returns the agent and its token. */
  async function agent(input: Record<string, unknown> = {}, opts: { online?: boolean } = {}) {
    const labels = { scope: scope(), ...(input.labels as Record<string, string> | undefined) }
    const res = await call('POST', '/api/v1/agents', {
      body: { name: unique('agent'), provider: 'aws', region: 'us-east-1', maxConcurrentTasks: 2, ...input, labels },
    })
    if (res.status !== 201) throw new Error(`agent create failed: ${res.status} ${JSON.stringify(res.body)}`)
    const { token: agentToken, ...rest } = res.body
    if (opts.online ?? true) {
      const hb = await call('POST', '/api/v1/agents/heartbeat', { token: agentToken, body: { agentId: rest.id } })
      if (hb.status !== 200) throw new Error(`heartbeat failed: ${hb.status} ${JSON.stringify(hb.body)}`)
      return { ...hb.body.agent, token: agentToken as string }
    }
    return { ...rest, token: agentToken as string }
  }

  /** Creates a task (placed at once if one of this test's agents fits and has a slot). */
  async function task(input: Record<string, unknown> = {}) {
    const req = (input.requirements ?? {}) as Record<string, unknown>
    const requirements = { ...req, labels: { scope: scope(), ...(req.labels as Record<string, string> | undefined) } }
    const res = await call('POST', '/api/v1/tasks', {
      body: { name: unique('task'), type: 'test.run', ...input, requirements },
    })
    if (res.status !== 201) throw new Error(`task create failed: ${res.status} ${JSON.stringify(res.body)}`)
    return res.body
  }

  /** A task that stays pending (scheduled far ahead) until something places it explicitly. */
  const pendingTask = (input: Record<string, unknown> = {}) => task({ scheduledAt: '2099-01-01T00:00:00Z', ...input })

  /** Creates a task and places it with execute on `agentId` (or the best agent). */
  async function assignedTask(agentId?: string, input: Record<string, unknown> = {}) {
    const t = await pendingTask(input)
    const res = await call('POST', '/api/v1/tasks/execute', { body: { taskId: t.id, ...(agentId ? { agentId } : {}) } })
    if (res.status !== 200) throw new Error(`execute failed: ${res.status} ${JSON.stringify(res.body)}`)
    return res.body
  }

  async function report(taskId: string, agentToken: string, body: Record<string, unknown>) {
    return call('PATCH', `/api/v1/tasks/${taskId}/status`, { token: agentToken, body })
  }

  async function events(filter: { taskId?: string; agentId?: string }) {
    const { events: table } = await import('../src/db/schema')
    const { and, asc, eq } = await import('drizzle-orm')
    return database.db
      .select()
      .from(table)
      .where(
        and(
          filter.taskId ? eq(table.taskId, filter.taskId) : undefined,
          filter.agentId ? eq(table.agentId, filter.agentId) : undefined,
        ),
      )
      .orderBy(asc(table.id))
  }

  /**
   * The scheduler's sweep, at the harness's clock, through the app's cache (so a task or agent
   * it moves is not answered from a stale cached copy afterwards, as with Redis in CI).
   */
  const sweep = (stalls?: StallWatch) => runSweep({ db: database.db, clock, config, kv, stalls })

  return {
    app,
    config,
    sweep,
    clock,
    database,
    token,
    call,
    agent,
    task,
    pendingTask,
    assignedTask,
    scope,
    report,
    events,
    kv,
    close: async () => {
      await kv.close()
      await database.close()
    },
  }
}
