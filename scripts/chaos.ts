/**
 * `npm run chaos [-- --db postgres|pglite] [--seconds N] [--allow a,b] …`: a soak and chaos
 * run of the real server (src/server.ts under Node, built once for the run as `npm run
 * build` builds it, so that a restart is quick) with its invariants checked throughout. `--help` lists the flags; docs/development.md says what it
 * does and how to read its table.
 *
 * Load: simulated agents over HTTP (register, long-poll heartbeats carrying reports or
 * PATCH reports, run each task for a random short time, stop on cancel, time out locally),
 * real runners (`node bin/agenticcp-agent.mjs run --allow-shell`, each on its own state dir)
 * running shell tasks that append start/tick/end marks to a file, producers creating tasks
 * (single and batch, with and without idempotency keys, some with short timeoutSeconds,
 * some cancelled), two SSE readers of the event log, and a sampler of every agent's slots.
 * Faults, spread over the run: the service's Postgres backends killed, the server kill -9'd
 * and restarted, the server SIGSTOP'd past HEARTBEAT_TIMEOUT_SECONDS, Redis (our own) killed
 * and restarted, runners kill -9'd and restarted on their state dir, a simulated agent gone
 * silent (a real death, the control for the false-death check). Then a drain, and the
 * checks of scripts/chaos-checks.ts over what was recorded and over the database.
 *
 * Everything is on loopback, bounded in count and time, and every process it starts is
 * stopped at the end, on failure and on Ctrl-C; the Postgres database is the run's own
 * (chaos_<pid>_<time>) and is dropped at the end.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { connect, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { signToken } from '../src/lib/tokens'
import {
  type AgentState,
  at,
  type Copy,
  checkAcked,
  checkCompletedOnce,
  checkFalseDeaths,
  checkIdempotency,
  checkOverlaps,
  checkStream,
  checkStuck,
  copiesFromMarks,
  type Ending,
  type ExpiredEvent,
  HttpTally,
  INVARIANTS,
  type Prober,
  type Result,
  SlotTally,
  type Stall,
  type StreamLog,
  summarize,
  type TaskState,
} from './chaos-checks'

// biome-ignore lint/suspicious/noExplicitAny: answers are read field by field
type Json = any

const USAGE = `npm run chaos -- [flags]

  --db postgres|pglite   the database (default postgres: a database of its own on --database-url's server)
  --seconds N            how long the load and the faults last (default 120; a drain and the checks follow)
  --allow a,b            invariants known to fail: reported, but they do not fail the run
  --database-url URL     the Postgres server to make the run's database on
                         (default $CHAOS_DATABASE_URL, else postgres://postgres@127.0.0.1:5432/postgres)
  --runners N            real runners (default 3)    --sims N   simulated agents (default 6)
  --drain N              longest wait for the queue to drain after the load (default 30)
  --no-redis             no Redis (and no Redis fault)
  --faults a,b           only these faults (default all: server_stop,pg_kill,runner_kill,server_kill,redis_kill,sim_crash)
  --server-env K=V,…     extra settings for the server (after the run's own short timers)
  --seed N               the random choices (printed by every run)
  --report FILE          also write every result and violation as JSON to FILE
  --keep                 keep the run's directory (logs, marks, state dirs, PGlite data) and its Postgres database

invariants: ${Object.keys(INVARIANTS).join(', ')}`

/**
 * In the order they come round. The sim crash comes last in a round: its silence must fall
 * where the service can judge it (a restart or a database outage makes the sweep wait a
 * whole heartbeat timeout before it expires anyone).
 */
const FAULT_KINDS = ['server_stop', 'pg_kill', 'runner_kill', 'server_kill', 'redis_kill', 'sim_crash'] as const
type FaultKind = (typeof FAULT_KINDS)[number]

interface Options {
  db: 'postgres' | 'pglite'
  seconds: number
  allow: Set<string>
  databaseUrl: string
  runners: number
  sims: number
  drainSeconds: number
  redis: boolean
  faults: FaultKind[]
  serverEnv: Record<string, string>
  seed: number
  report?: string
  keep: boolean
}

function parseOptions(argv: string[]): Options {
  const o: Options = {
    db: 'postgres',
    seconds: 120,
    allow: new Set(),
    databaseUrl: process.env.CHAOS_DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres',
    runners: 3,
    sims: 6,
    drainSeconds: 30,
    redis: true,
    faults: [...FAULT_KINDS],
    serverEnv: {},
    seed: Math.floor(Math.random() * 2 ** 31),
    keep: false,
  }
  const bad = (msg: string): never => {
    console.error(`chaos: ${msg}\n\n${USAGE}`)
    process.exit(2)
  }
  const int = (v: string | undefined, name: string, min: number, max: number) => {
    const n = Number(v)
    if (!Number.isInteger(n) || n < min || n > max) bad(`${name} wants a whole number from ${min} to ${max}`)
    return n
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string
    const [flag, inline] =
      a.startsWith('--') && a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined]
    const value = () => inline ?? argv[++i] ?? bad(`${flag} wants a value`)
    switch (flag) {
      case '--db': {
        const v = value()
        if (v !== 'postgres' && v !== 'pglite') bad('--db is postgres or pglite')
        o.db = v as Options['db']
        break
      }
      case '--seconds':
        o.seconds = int(value(), '--seconds', 10, 1800)
        break
      case '--allow':
        for (const n of value().split(',').filter(Boolean)) {
          if (!(n in INVARIANTS)) bad(`--allow: no invariant named ${n}`)
          o.allow.add(n)
        }
        break
      case '--database-url':
        o.databaseUrl = value()
        break
      case '--runners':
        o.runners = int(value(), '--runners', 0, 8)
        break
      case '--sims':
        o.sims = int(value(), '--sims', 1, 50)
        break
      case '--drain':
        o.drainSeconds = int(value(), '--drain', 5, 600)
        break
      case '--no-redis':
        o.redis = false
        break
      case '--faults':
        o.faults = value()
          .split(',')
          .filter(Boolean)
          .map((f) => (FAULT_KINDS.includes(f as FaultKind) ? (f as FaultKind) : bad(`--faults: no fault named ${f}`)))
        break
      case '--server-env':
        for (const kv of value().split(',').filter(Boolean)) {
          const eq = kv.indexOf('=')
          if (eq < 1) bad(`--server-env wants K=V, got ${kv}`)
          o.serverEnv[kv.slice(0, eq)] = kv.slice(eq + 1)
        }
        break
      case '--seed':
        o.seed = int(value(), '--seed', 0, 2 ** 31)
        break
      case '--report':
        o.report = resolve(value())
        break
      case '--keep':
        o.keep = true
        break
      case '--help':
      case '-h':
        console.log(USAGE)
        process.exit(0)
        break
      default:
        bad(`unknown flag ${a}`)
    }
  }
  if (o.db === 'pglite') o.faults = o.faults.filter((f) => f !== 'pg_kill')
  if (!o.redis) o.faults = o.faults.filter((f) => f !== 'redis_kill')
  if (o.runners === 0) o.faults = o.faults.filter((f) => f !== 'runner_kill')
  return o
}

const opts = parseOptions(process.argv.slice(2))
// The repository's root: the server and the runner are started from there, as npm does.
process.chdir(resolve(dirname(fileURLToPath(import.meta.url)), '..'))

// ---------------------------------------------------------------------------------------
// The run's settings: short timers, so that every recovery happens within the run.

const serverSettings: Record<string, string> = {
  HEARTBEAT_INTERVAL_SECONDS: '1',
  HEARTBEAT_TIMEOUT_SECONDS: '6',
  SWEEP_INTERVAL_SECONDS: '1',
  ASSIGN_TIMEOUT_SECONDS: '5',
  CANCEL_GRACE_SECONDS: '3',
  RETRY_BACKOFF_BASE_SECONDS: '1',
  RETRY_BACKOFF_MAX_SECONDS: '2',
  RATE_LIMIT_PER_MINUTE: '0',
  ...opts.serverEnv,
}
const setting = (name: string) => Number(serverSettings[name])
const HEARTBEAT_TIMEOUT_MS = setting('HEARTBEAT_TIMEOUT_SECONDS') * 1000
/** The SIGSTOP lasts this much past the heartbeat timeout. */
const STALL_MS = HEARTBEAT_TIMEOUT_MS + 3000
/** A crashed sim agent is silent this long: a real death, which the service must notice. */
const SIM_CRASH_MS = HEARTBEAT_TIMEOUT_MS + 4000
const SIM_WAIT_SECONDS = 1
const SIM_SLOTS = 3
const RUNNER_SLOTS = 2
const RUNNER_GRACE_SECONDS = 3
const SECRET = `chaos-${'k'.repeat(40)}`

// ---------------------------------------------------------------------------------------
// Small things

let seed = opts.seed
/** mulberry32: the run's random choices, repeatable with --seed (timing still varies). */
function rand(): number {
  seed = (seed + 0x6d2b79f5) | 0
  let t = seed
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
const between = (lo: number, hi: number) => Math.round(lo + rand() * (hi - lo))
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((res) => {
    if (signal?.aborted) return res()
    const t = setTimeout(done, Math.max(0, ms))
    function done() {
      clearTimeout(t)
      signal?.removeEventListener('abort', done)
      res()
    }
    signal?.addEventListener('abort', done, { once: true })
  })
}

const runId = `${process.pid}-${Date.now().toString(36)}`
const t0 = Date.now()
const rel = (ms: number) => at(ms, t0)
const say = (msg: string) => console.log(`[chaos ${rel(Date.now())}] ${msg}`)

async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer()
    s.once('error', rej)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port
      s.close(() => res(port))
    })
  })
}

// ---------------------------------------------------------------------------------------
// Processes: every child is tracked, and stopped however the run ends.

const children = new Set<ChildProcess>()
function track(child: ChildProcess): ChildProcess {
  children.add(child)
  child.once('exit', () => children.delete(child))
  child.on('error', (err) => {
    spawnErrors.set(child, err)
    children.delete(child)
  })
  return child
}
/** A command that could not start (ENOENT: not installed), by its process. */
const spawnErrors = new Map<ChildProcess, Error>()
const exited = (child: ChildProcess) =>
  child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise<void>((res) => child.once('exit', () => res()))

async function stopChild(child: ChildProcess | undefined, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return
  child.kill('SIGCONT')
  child.kill(signal)
  const done = await Promise.race([exited(child).then(() => true), sleep(graceMs).then(() => false)])
  if (!done) {
    child.kill('SIGKILL')
    await exited(child)
  }
}

/**
 * The shell tasks' commands and anything they started: every process whose environment
 * holds this run's CHAOS_RUN (the runners pass theirs on), so only this run's processes.
 */
function killRunLeftovers(): number {
  let n = 0
  const marker = `CHAOS_RUN=${runId}`
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    if (Number(pid) === process.pid) continue
    try {
      const env = readFileSync(`/proc/${pid}/environ`, 'utf8')
      if (env.split('\0').includes(marker)) {
        process.kill(Number(pid), 'SIGKILL')
        n++
      }
    } catch {
      // gone, or not ours to read
    }
  }
  return n
}

const dir = mkdtempSync(join(tmpdir(), 'chaos-'))
const logPath = (name: string) => join(dir, name)
const http = new HttpTally()

// ---------------------------------------------------------------------------------------
// HTTP

let base = ''
interface Answer {
  status: number
  body: Json
  headers: Headers | null
  /** Why there was no answer (status 0). */
  cause?: string
}

function causeOf(err: unknown): string {
  const e = err as { name?: string; code?: string; cause?: { code?: string; name?: string } }
  if (e?.name === 'TimeoutError') return 'timeout'
  if (e?.name === 'AbortError') return 'aborted'
  return e?.cause?.code ?? e?.code ?? e?.cause?.name ?? e?.name ?? 'error'
}

/** One call; every answer is counted by `kind` and status (no answer: by cause; our own aborts not at all). */
async function call(
  kind: string,
  method: string,
  path: string,
  o: { token: string; body?: unknown; headers?: Record<string, string>; timeoutMs?: number; signal?: AbortSignal },
): Promise<Answer> {
  const timeout = AbortSignal.timeout(o.timeoutMs ?? 5000)
  try {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${o.token}`,
        ...(o.body === undefined ? {} : { 'content-type': 'application/json' }),
        ...o.headers,
      },
      body: o.body === undefined ? undefined : JSON.stringify(o.body),
      signal: o.signal ? AbortSignal.any([o.signal, timeout]) : timeout,
    })
    const text = await res.text()
    let body: Json = null
    try {
      body = text ? JSON.parse(text) : null
    } catch {
      body = text
    }
    if (res.status === 503 && !res.headers.get('retry-after')) http.missingRetryAfter++
    const requestId = res.headers.get('x-request-id') ?? (typeof body?.requestId === 'string' ? body.requestId : null)
    http.answer(kind, method, path, res.status, requestId, text)
    return { status: res.status, body, headers: res.headers }
  } catch (err) {
    const cause = o.signal?.aborted && !timeout.aborted ? 'aborted' : causeOf(err)
    if (cause !== 'aborted') http.failed(kind, cause)
    return { status: 0, body: null, headers: null, cause }
  }
}

// ---------------------------------------------------------------------------------------
// Redis (our own, on a port of its own: the machine's Redis is never touched)

class Redis {
  child?: ChildProcess
  port = 0
  kills = 0
  async start(): Promise<void> {
    if (!this.port) this.port = await freePort()
    const out = openSync(logPath('redis.log'), 'a')
    this.child = track(
      spawn(
        'redis-server',
        ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
        { stdio: ['ignore', out, out] },
      ),
    )
    closeSync(out)
    const deadline = Date.now() + 10_000
    while (Date.now() < deadline) {
      const failed = spawnErrors.get(this.child)
      if (failed)
        throw new Error(
          `redis-server could not start (${failed.message}): install it (apt-get install redis-server) or run with --no-redis`,
        )
      if (await this.ping()) return
      await sleep(100)
    }
    throw new Error(`redis-server on port ${this.port} did not answer in 10 s (see ${logPath('redis.log')})`)
  }
  ping(): Promise<boolean> {
    return new Promise((res) => {
      const s = connect(this.port, '127.0.0.1')
      const done = (ok: boolean) => {
        s.destroy()
        res(ok)
      }
      s.setTimeout(500, () => done(false))
      s.once('error', () => done(false))
      s.once('connect', () => s.write('PING\r\n'))
      s.once('data', (d) => done(d.toString().startsWith('+PONG')))
    })
  }
  async kill9(): Promise<void> {
    this.kills++
    this.child?.kill('SIGKILL')
    if (this.child) await exited(this.child)
  }
}

// ---------------------------------------------------------------------------------------
// The server

/**
 * src/server.ts built once for the run, as `npm run build` builds it (esbuild; packages
 * stay in node_modules, drizzle/ is read beside dist/), so that each start after a kill -9
 * is `node server.js` rather than tsx compiling the sources again (seconds on a busy machine).
 */
async function buildServer(): Promise<string> {
  const { build } = await import('esbuild')
  const { createRequire } = await import('node:module')
  const app = join(dir, 'app')
  mkdirSync(app)
  symlinkSync(resolve('node_modules'), join(app, 'node_modules'))
  symlinkSync(resolve('drizzle'), join(app, 'drizzle'))
  await build({
    entryPoints: { server: 'src/server.ts' },
    outdir: join(app, 'dist'),
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20.12',
    packages: 'external',
    logLevel: 'warning',
    plugins: [
      {
        name: 'inline-package-json',
        setup(b) {
          b.onResolve({ filter: /^[^./].*\.json$/ }, (args) => ({
            path: createRequire(join(args.resolveDir, 'noop.js')).resolve(args.path),
          }))
        },
      },
    ],
  })
  return join(app, 'dist', 'server.js')
}

class Server {
  child?: ChildProcess
  frozen = false
  starts = 0
  errorLines = 0
  firstErrors: string[] = []
  private readonly log = openSync(logPath('server.log'), 'a')
  constructor(
    readonly entry: string,
    readonly env: Record<string, string>,
  ) {}

  start(): void {
    this.starts++
    const child = track(
      spawn(process.execPath, [this.entry], {
        env: { PATH: process.env.PATH ?? '', ...this.env },
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    )
    this.child = child
    for (const stream of [child.stdout, child.stderr]) {
      let rest = ''
      stream?.on('data', (d: Buffer) => {
        writeFileSync(this.log, d)
        rest += d.toString()
        const lines = rest.split('\n')
        rest = lines.pop() ?? ''
        for (const line of lines) this.line(line)
      })
    }
  }

  private line(line: string): void {
    if (!line.startsWith('{')) return
    let l: Json
    try {
      l = JSON.parse(line)
    } catch {
      return
    }
    if (l.msg === 'request') http.serverLine(l)
    else if (l.level === 'error') {
      this.errorLines++
      if (this.firstErrors.length < 5) this.firstErrors.push(`${l.msg}${l.reason ? `: ${l.reason}` : ''}`)
    }
  }

  async ready(timeoutMs = 90_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (Date.now() < deadline) {
      if (!this.child || this.child.exitCode !== null)
        throw new Error(`the server exited (see ${logPath('server.log')})`)
      try {
        const r = await fetch(`${base}/api/v1/health/readiness`, { signal: AbortSignal.timeout(1000) })
        await r.text()
        if (r.ok) return
      } catch {
        // not listening yet
      }
      await sleep(100)
    }
    throw new Error(`the server was not ready within ${timeoutMs / 1000} s (see ${logPath('server.log')})`)
  }

  kill9(): Promise<void> {
    const c = this.child
    if (!c) return Promise.resolve()
    c.kill('SIGKILL')
    return exited(c)
  }
  freeze(): void {
    this.frozen = true
    this.child?.kill('SIGSTOP')
  }
  thaw(): void {
    this.child?.kill('SIGCONT')
    this.frozen = false
  }
}

// ---------------------------------------------------------------------------------------
// What the run records

const copies: Copy[] = []
const ackedCreates = new Map<string, string>() // task id → how
const ackedCompletions = new Set<string>()
const keyAnswers = new Map<string, Set<string>>() // idempotency key → task ids answered
const stalls: Stall[] = []
const faultLog: { kind: FaultKind; start: number; end: number; detail: string }[] = []
const load = {
  creates: { single: 0, singleKeyed: 0, batches: 0, batchTasks: 0, batchKeyed: 0, shell: 0, shortTimeout: 0 },
  retries: 0,
  replays: 0,
  cancels: 0,
  heartbeats: 0,
  patches: 0,
  simCopies: 0,
}
let slots: SlotTally

// ---------------------------------------------------------------------------------------
// Simulated agents

interface Assignment {
  id: string
  attempt: number
  timeoutSeconds: number
  payload: Json
}
interface Report {
  taskId: string
  attempt: number
  status: 'running' | 'completed' | 'failed' | 'cancelled'
  result?: unknown
  error?: { code: string; message: string }
}
interface Live {
  taskId: string
  attempt: number
  start: number
  timer?: NodeJS.Timeout
  stopping: boolean
}

class Sim {
  id = ''
  token = ''
  readonly attempts: number[] = []
  /** When it was up (not crashed): see Prober. */
  readonly alive: [number, number][] = []
  private live = new Map<string, Live>() // task id → its copy here
  private seen = new Set<string>()
  private outbox: Report[] = []
  private life = new AbortController()
  private silentUntil = 0
  crashes = 0

  constructor(
    readonly name: string,
    /** patch: reports by PATCH at once (the heartbeat carries what failed); heartbeat: in the next heartbeat. */
    readonly mode: 'patch' | 'heartbeat',
  ) {}

  async register(admin: string): Promise<void> {
    const r = await call('setup', 'POST', '/api/v1/agents', {
      token: admin,
      body: {
        name: this.name,
        provider: 'other',
        capabilities: ['sim'],
        taskTypes: ['chaos.sim'],
        maxConcurrentTasks: SIM_SLOTS,
      },
    })
    if (r.status !== 201) throw new Error(`registering ${this.name}: ${r.status} ${JSON.stringify(r.body)}`)
    this.id = r.body.id
    this.token = r.body.token
  }

  /** A crash: its copies die at once, its unsent reports and memory are lost, and it says nothing for `ms`. */
  crash(ms: number): void {
    this.crashes++
    const now = Date.now()
    this.life.abort()
    this.life = new AbortController()
    for (const c of this.live.values()) this.end(c, now)
    this.live.clear()
    this.outbox = []
    this.seen.clear()
    this.silentUntil = now + ms
    const up = this.alive.at(-1)
    if (up) up[1] = now
    this.alive.push([this.silentUntil, Number.POSITIVE_INFINITY])
  }

  async run(stop: AbortSignal): Promise<void> {
    this.alive.push([Date.now(), Number.POSITIVE_INFINITY])
    while (!stop.aborted) {
      if (Date.now() < this.silentUntil) {
        await sleep(this.silentUntil - Date.now(), stop)
        continue
      }
      const life = this.life
      const reports = this.outbox.splice(0, 200)
      const wait = reports.length ? 0 : SIM_WAIT_SECONDS
      const sent = Date.now()
      this.attempts.push(sent)
      load.heartbeats++
      const a = await call('heartbeat', 'POST', '/api/v1/agents/heartbeat', {
        token: this.token,
        body: { agentId: this.id, runningTaskIds: [...this.live.keys()], reports, waitSeconds: wait },
        timeoutMs: (wait + 3) * 1000,
        signal: AbortSignal.any([stop, life.signal]),
      })
      if (life.signal.aborted || stop.aborted) continue // crashed meanwhile: all of that is lost
      if (a.status !== 200) {
        // No verdicts: the reports go again (they are safe to repeat), after a short pause.
        if (a.status === 0 || a.status >= 500) this.outbox.unshift(...reports)
        await sleep(between(200, 500), stop)
        continue
      }
      const verdicts: { ok: boolean; code?: string }[] = a.body.reports ?? []
      verdicts.forEach((v, i) => {
        this.verdict(reports[i], v.ok, v.code)
      })
      for (const id of a.body.cancellations ?? []) {
        const c = this.live.get(id)
        if (c) this.stop(c, 'cancel')
      }
      for (const t of (a.body.assignments ?? []) as Assignment[]) this.accept(t)
      // A long poll answered early with nothing new: pace the next one.
      if (Date.now() - sent < 200 && !a.body.assignments?.length) await sleep(200, stop)
    }
    for (const c of this.live.values()) {
      clearTimeout(c.timer)
      this.end(c, Date.now())
    }
    this.live.clear()
    const up = this.alive.at(-1)
    if (up) up[1] = Math.min(up[1], Date.now())
  }

  private verdict(r: Report | undefined, ok: boolean, code?: string): void {
    if (!r) return
    if (ok) {
      if (r.status === 'completed') ackedCompletions.add(r.taskId)
      return
    }
    // Not ours any more (stale_attempt, invalid_transition, not_found): stop it, never report it again.
    const c = this.live.get(r.taskId)
    if (c && c.attempt === r.attempt && code !== undefined) this.stop(c, 'stale')
  }

  private accept(t: Assignment): void {
    const key = `${t.id}:${t.attempt}`
    if (this.seen.has(key)) return
    this.seen.add(key)
    const old = this.live.get(t.id)
    if (old) this.stop(old, 'stale', 0) // an earlier attempt we still run is not ours any more
    slots.add({
      at: Date.now(),
      agent: `${this.name} (${this.id})`,
      max: SIM_SLOTS,
      held: [...this.live.values()].filter((c) => !c.stopping).length + 1,
      atomic: false,
      source: 'handed to the sim agent',
    })
    const c: Live = { taskId: t.id, attempt: t.attempt, start: Date.now(), stopping: false }
    this.live.set(t.id, c)
    load.simCopies++
    const ms = Number(t.payload?.ms ?? 500)
    const limit = t.timeoutSeconds * 1000
    // Like the runner: the task's own timer enforces timeoutSeconds too.
    if (ms >= limit) c.timer = setTimeout(() => this.finish(c, 'timeout'), limit)
    else c.timer = setTimeout(() => this.finish(c, t.payload?.fail ? 'failed' : 'completed'), ms)
    this.report({ taskId: t.id, attempt: t.attempt, status: 'running' })
  }

  private end(c: Live, when: number): void {
    copies.push({ taskId: c.taskId, attempt: c.attempt, holder: this.name, start: c.start, end: when })
  }

  private finish(c: Live, how: 'completed' | 'failed' | 'timeout'): void {
    if (c.stopping || this.live.get(c.taskId) !== c) return
    this.end(c, Date.now())
    this.live.delete(c.taskId)
    if (how === 'completed')
      this.report({ taskId: c.taskId, attempt: c.attempt, status: 'completed', result: { by: this.name } })
    else
      this.report({
        taskId: c.taskId,
        attempt: c.attempt,
        status: 'failed',
        error:
          how === 'timeout'
            ? { code: 'timeout', message: 'ran past timeoutSeconds on the sim agent' }
            : { code: 'sim_failure', message: 'the simulated work failed' },
      })
  }

  /** Stopping takes a moment (a program cleaning up), then the copy is gone; `delayMs` 0: at once. */
  private stop(c: Live, why: 'cancel' | 'stale', delayMs = between(0, 400)): void {
    if (c.stopping) return
    c.stopping = true
    clearTimeout(c.timer)
    const life = this.life
    const gone = () => {
      if (life.signal.aborted) return // crashed meanwhile: ended then
      this.end(c, Date.now())
      if (this.live.get(c.taskId) === c) this.live.delete(c.taskId)
      if (why === 'cancel') this.report({ taskId: c.taskId, attempt: c.attempt, status: 'cancelled' })
    }
    if (delayMs === 0) gone()
    else setTimeout(gone, delayMs)
  }

  private report(r: Report): void {
    if (this.mode === 'heartbeat') {
      this.outbox.push(r)
      return
    }
    const life = this.life
    load.patches++
    void call('report', 'PATCH', `/api/v1/tasks/${r.taskId}/status`, {
      token: this.token,
      body: { status: r.status, attempt: r.attempt, result: r.result, error: r.error },
      signal: life.signal,
    }).then((a) => {
      if (life.signal.aborted) return
      if (a.status === 200) this.verdict(r, true)
      else if (a.status === 409 || a.status === 404) this.verdict(r, false, a.body?.code ?? String(a.status))
      else this.outbox.push(r) // no verdict: the next heartbeat carries it
    })
  }
}

// ---------------------------------------------------------------------------------------
// Real runners

/** The shell tasks' command: marks its life in the marks file (see copiesFromMarks), optionally slow to stop on SIGTERM. */
const SHELL_SCRIPT = `f=$1; ms=$2; mode=$3; stop_at=0
mark() { printf '%s %s %s %s %s\\n' "$1" "$AGENTICCP_TASK_ID" "$AGENTICCP_TASK_ATTEMPT" "\${EPOCHREALTIME/./}" "$$" >> "$f"; }
on_term() { mark term; if [ "$mode" = slow ]; then stop_at=$(( \${EPOCHREALTIME/./} / 1000 + 1500 )); else mark end; exit 143; fi; }
trap on_term TERM
mark start
end=$(( \${EPOCHREALTIME/./} / 1000 + ms ))
while :; do
  t=$(( \${EPOCHREALTIME/./} / 1000 ))
  if [ $stop_at -gt 0 ]; then [ $t -ge $stop_at ] && { mark end; exit 143; }
  elif [ $t -ge $end ]; then break; fi
  mark tick
  sleep 0.2 & wait $!
done
mark end
[ "$mode" = fail ] && exit 3
exit 0`

class Runner {
  child?: ChildProcess
  /** When its processes lived: [start, end] (end Infinity while alive). */
  readonly alive: [number, number][] = []
  agentId = ''
  readonly stateDir: string
  starts = 0
  constructor(
    readonly name: string,
    private readonly tokenFile: string,
  ) {
    this.stateDir = join(dir, name)
  }

  start(): void {
    this.starts++
    const log = openSync(logPath(`${this.name}.log`), 'a')
    const child = track(
      spawn(
        process.execPath,
        [
          'bin/agenticcp-agent.mjs',
          'run',
          '--url',
          base,
          '--token-file',
          this.tokenFile,
          '--name',
          this.name,
          '--state-dir',
          this.stateDir,
          '--allow-shell',
          '--slots',
          String(RUNNER_SLOTS),
          '--cancel-grace',
          String(RUNNER_GRACE_SECONDS),
          '--log-format',
          'json',
        ],
        {
          env: { PATH: process.env.PATH ?? '', HOME: this.stateDir, CHAOS_RUN: runId },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      ),
    )
    this.child = child
    // It is trying to reach the service from its "agent started" line (after loading and its
    // state dir) until it exits.
    let span: [number, number] | undefined
    for (const stream of [child.stdout, child.stderr])
      stream?.on('data', (d: Buffer) => {
        writeFileSync(log, d)
        if (!span && d.includes('"msg":"agent started"')) {
          span = [Date.now(), Number.POSITIVE_INFINITY]
          this.alive.push(span)
        }
      })
    child.once('exit', () => {
      if (span) span[1] = Date.now()
    })
    child.once('close', () => closeSync(log))
  }

  /** Its agent id, once it has registered (read from its state dir). */
  async registered(timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs
    while (Date.now() < deadline) {
      try {
        this.agentId = JSON.parse(readFileSync(join(this.stateDir, 'agent.json'), 'utf8')).id
        if (this.agentId) return this.agentId
      } catch {
        // not yet
      }
      if (this.child?.exitCode !== null && this.child?.exitCode !== undefined)
        throw new Error(`${this.name} exited ${this.child.exitCode} (see ${logPath(`${this.name}.log`)})`)
      await sleep(200)
    }
    throw new Error(`${this.name} did not register within ${timeoutMs / 1000} s (see ${logPath(`${this.name}.log`)})`)
  }

  async kill9(): Promise<void> {
    const c = this.child
    if (!c) return
    c.kill('SIGKILL')
    await exited(c)
  }
}

// ---------------------------------------------------------------------------------------
// Producers

let taskSeq = 0
const recent: string[] = []

function simTask(): Json {
  const short = rand() < 0.12
  if (short) load.creates.shortTimeout++
  return {
    name: `chaos-sim-${++taskSeq}`,
    type: 'chaos.sim',
    priority: between(1, 10),
    payload: short ? { ms: between(2500, 4000) } : { ms: between(100, 2000), fail: rand() < 0.05 },
    requirements: { capabilities: ['sim'] },
    timeoutSeconds: short ? 2 : 30,
    maxAttempts: 3,
  }
}

function shellTask(marks: string): Json {
  const short = rand() < 0.15
  if (short) load.creates.shortTimeout++
  load.creates.shell++
  const r = rand()
  const mode = r < 0.7 ? 'plain' : r < 0.8 ? 'fail' : 'slow'
  const ms = short ? between(3000, 4000) : between(200, 2500)
  return {
    name: `chaos-shell-${++taskSeq}`,
    type: 'shell',
    priority: between(1, 10),
    payload: { command: ['bash', '-c', SHELL_SCRIPT, 'chaos-task', marks, String(ms), mode], env: { LC_ALL: 'C' } },
    requirements: { capabilities: ['shell'] },
    timeoutSeconds: short ? 2 : 30,
    maxAttempts: 3,
  }
}

function acked(ids: string[], how: string): void {
  for (const id of ids) {
    ackedCreates.set(id, how)
    recent.push(id)
  }
  if (recent.length > 200) recent.splice(0, recent.length - 200)
}

function answered(key: string, id: string): void {
  const s = keyAnswers.get(key)
  if (s) s.add(id)
  else keyAnswers.set(key, new Set([id]))
}

/** A create with idempotency keys: retried while there is no answer (or a 5xx), as a client should. */
async function keyedCreate(path: string, body: Json, keys: string[], token: string, headers: Record<string, string>) {
  for (let tries = 0; tries < 4; tries++) {
    if (tries > 0) {
      load.retries++
      await sleep(between(300, 800))
    }
    const a = await call('create', 'POST', path, { token, body, headers })
    if (a.status === 200 || a.status === 201) {
      const items: Json[] = path.endsWith('/batch') ? a.body.items : [a.body]
      for (const [i, t] of items.entries()) answered(t.idempotencyKey ?? (keys[i] as string), t.id)
      return items
    }
    if (a.status !== 0 && a.status < 500) return undefined
  }
  return undefined
}

async function producer(token: string, marks: string, stop: AbortSignal, shells: boolean): Promise<void> {
  while (!stop.aborted) {
    const r = rand()
    const shell = shells && rand() < 0.25
    if (r < 0.65) {
      // One task, with an Idempotency-Key 60 % of the time (a replay of it now and then).
      const task = shell ? shellTask(marks) : simTask()
      if (rand() < 0.6) {
        const key = `chaos-${runId}-${taskSeq}`
        load.creates.singleKeyed++
        const items = await keyedCreate('/api/v1/tasks', task, [key], token, { 'idempotency-key': key })
        if (items) {
          acked([items[0].id], 'create with Idempotency-Key')
          if (rand() < 0.1) {
            // The same request again must answer the same task (200).
            load.replays++
            await keyedCreate('/api/v1/tasks', task, [key], token, { 'idempotency-key': key })
          }
        }
      } else {
        load.creates.single++
        const a = await call('create', 'POST', '/api/v1/tasks', { token, body: task })
        if (a.status === 201) acked([a.body.id], 'create')
      }
    } else if (r < 0.92) {
      // A batch: 2–12 sim tasks or 2–3 shell tasks, with a key on every item half the time.
      const tasks = Array.from({ length: shell ? between(2, 3) : between(2, 12) }, () =>
        shell ? shellTask(marks) : simTask(),
      )
      load.creates.batches++
      load.creates.batchTasks += tasks.length
      if (rand() < 0.5) {
        load.creates.batchKeyed++
        const keys = tasks.map((_, i) => `chaos-${runId}-b${taskSeq}-${i}`)
        const items = await keyedCreate(
          '/api/v1/tasks/batch',
          { tasks: tasks.map((t, i) => ({ ...t, idempotencyKey: keys[i] })) },
          keys,
          token,
          {},
        )
        if (items)
          acked(
            items.map((t) => t.id),
            'batch create with keys',
          )
      } else {
        const a = await call('create', 'POST', '/api/v1/tasks/batch', { token, body: { tasks } })
        if (a.status === 201)
          acked(
            a.body.items.map((t: Json) => t.id),
            'batch create',
          )
      }
    } else if (recent.length) {
      load.cancels++
      await call('cancel', 'POST', `/api/v1/tasks/${pick(recent)}/cancel`, { token })
    }
    await sleep(between(300, 700), stop)
  }
}

// ---------------------------------------------------------------------------------------
// The event stream, read like a dashboard: resumed with Last-Event-ID after every drop.

class StreamReader implements StreamLog {
  ids: number[] = []
  types = new Map<number, string>()
  disorder: string[] = []
  upTo = 0
  lastId = 0
  connects = 0
  private seen = new Set<number>()
  constructor(
    readonly name: string,
    readonly filter: string,
    private readonly token: string,
  ) {}

  async run(stop: AbortSignal): Promise<void> {
    while (!stop.aborted) {
      const conn = new AbortController()
      const signal = AbortSignal.any([stop, conn.signal])
      let watchdog: NodeJS.Timeout | undefined
      const pet = () => {
        clearTimeout(watchdog)
        watchdog = setTimeout(() => conn.abort(), 25_000) // keep-alives come every 15 s
      }
      try {
        const q = new URLSearchParams()
        if (this.filter) q.set('type', this.filter)
        if (this.lastId === 0) q.set('after', '0')
        pet()
        const res = await fetch(`${base}/api/v1/events?${q}`, {
          headers: {
            authorization: `Bearer ${this.token}`,
            accept: 'text/event-stream',
            ...(this.lastId ? { 'last-event-id': String(this.lastId) } : {}),
          },
          signal,
        })
        this.connects++
        if (res.status !== 200) {
          const text = await res.text()
          http.answer('stream', 'GET', '/api/v1/events', res.status, res.headers.get('x-request-id'), text)
          await sleep(500, stop)
          continue
        }
        http.answer('stream', 'GET', '/api/v1/events', 200, res.headers.get('x-request-id'), '')
        const reader = (res.body as ReadableStream<Uint8Array>).getReader()
        const decoder = new TextDecoder()
        let buf = ''
        for (;;) {
          const { value, done } = await reader.read()
          if (done) break
          pet()
          buf += decoder.decode(value, { stream: true })
          let cut = buf.indexOf('\n\n')
          while (cut >= 0) {
            this.block(buf.slice(0, cut))
            buf = buf.slice(cut + 2)
            cut = buf.indexOf('\n\n')
          }
        }
      } catch (err) {
        if (!stop.aborted) http.failed('stream', causeOf(err) === 'aborted' ? 'idle' : causeOf(err))
      } finally {
        clearTimeout(watchdog)
      }
      await sleep(300, stop)
    }
  }

  private block(block: string): void {
    let id: number | undefined
    let type = ''
    let data = ''
    for (const line of block.split('\n')) {
      if (line.startsWith('id: ')) id = Number(line.slice(4))
      else if (line.startsWith('event: ')) type = line.slice(7)
      else if (line.startsWith('data: ')) data += line.slice(6)
    }
    if (id === undefined) return
    if (!this.seen.has(id) && id <= this.lastId) this.disorder.push(`id ${id} came after ${this.lastId}`)
    try {
      const d = JSON.parse(data)
      if (d.id !== id || d.type !== type)
        this.disorder.push(`event ${id} (${type}) carried data of ${d.id} (${d.type})`)
    } catch {
      this.disorder.push(`event ${id}: its data is not JSON`)
    }
    this.seen.add(id)
    this.ids.push(id)
    this.types.set(id, type)
    this.lastId = Math.max(this.lastId, id)
  }
}

// ---------------------------------------------------------------------------------------
// Database access for the sampler and the final checks: Postgres (a client of its own,
// named so the backend killer spares it), or the embedded database opened after the server stopped.

interface Sql {
  query<T>(text: string, params?: unknown[]): Promise<T[]>
  close(): Promise<void>
}

async function postgresSql(url: string, name: string): Promise<Sql> {
  const c = new pg.Client({ connectionString: url, application_name: name })
  c.on('error', () => {}) // a dropped connection fails the next query, which says so
  await c.connect()
  return {
    query: async <T>(text: string, params?: unknown[]) => (await c.query(text, params)).rows as T[],
    close: () => c.end(),
  }
}

async function pgliteSql(dataDir: string): Promise<Sql> {
  const { PGlite } = await import('@electric-sql/pglite')
  const db = new PGlite(dataDir)
  await db.waitReady
  return {
    query: async <T>(text: string, params?: unknown[]) => (await db.query<T>(text, params)).rows,
    close: () => db.close(),
  }
}

const SLOT_SAMPLE_SQL = `SELECT a.id::text AS id, a.name, a.max_concurrent_tasks AS max, a.active_tasks AS active,
  (SELECT count(*)::int FROM tasks t WHERE t.agent_id = a.id AND t.status IN ('assigned', 'running')) AS held
  FROM agents a`

/** Every agent's slots, once a second: in one statement on Postgres, through the API on PGlite. */
async function sampler(stop: AbortSignal, pgUrl: string | undefined, admin: string): Promise<void> {
  let db: Sql | undefined
  while (!stop.aborted) {
    const now = Date.now()
    if (pgUrl) {
      try {
        db ??= await postgresSql(pgUrl, 'chaos-sampler')
        const rows = await db.query<{ id: string; name: string; max: number; active: number; held: number }>(
          SLOT_SAMPLE_SQL,
        )
        for (const r of rows)
          slots.add({
            at: now,
            agent: `${r.name} (${r.id})`,
            max: r.max,
            active: r.active,
            held: r.held,
            atomic: true,
            source: 'database',
          })
      } catch {
        await db?.close().catch(() => {})
        db = undefined
      }
    } else if (!server.frozen) {
      const agents = await call('sample', 'GET', '/api/v1/agents?limit=100', { token: admin, timeoutMs: 3000 })
      const held = await call('sample', 'GET', '/api/v1/tasks?status=assigned,running&limit=100', {
        token: admin,
        timeoutMs: 3000,
      })
      const count = new Map<string, number>()
      const whole = held.status === 200 && !held.body.nextCursor
      if (whole) for (const t of held.body.items) count.set(t.agentId, (count.get(t.agentId) ?? 0) + 1)
      if (agents.status === 200)
        for (const a of agents.body.items)
          slots.add({
            at: now,
            agent: `${a.name} (${a.id})`,
            max: a.maxConcurrentTasks,
            active: a.activeTasks,
            ...(whole ? { held: count.get(a.id) ?? 0 } : {}),
            atomic: false,
            source: 'API',
          })
    }
    await sleep(1000, stop)
  }
  await db?.close().catch(() => {})
}

// ---------------------------------------------------------------------------------------
// The run

let server: Server
let redis: Redis | undefined
let pgAdmin: pg.Client | undefined
let dbName = ''
let cleaning: Promise<void> | undefined

async function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    server?.thaw()
    await Promise.all([...children].map((c) => stopChild(c, 'SIGKILL', 2000)))
    killRunLeftovers()
    if (pgAdmin && dbName) {
      if (opts.keep) console.log(`chaos: database kept: ${dbName} (drop it with: psql -c 'DROP DATABASE ${dbName}')`)
      else
        await pgAdmin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch((e: Error) => {
          console.error(`chaos: could not drop database ${dbName}: ${e.message}`)
        })
      await pgAdmin.end().catch(() => {})
    }
  })()
  return cleaning
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => {
    console.error(`chaos: ${sig}: stopping everything this run started`)
    void cleanup().finally(() => {
      if (!opts.keep) rmSync(dir, { recursive: true, force: true })
      process.exit(130)
    })
  })
}

async function runFault(kind: FaultKind, ctx: { sims: Sim[]; runners: Runner[]; pgKiller?: pg.Client }, n: number) {
  const start = Date.now()
  let detail = ''
  switch (kind) {
    case 'server_stop': {
      say(`fault: SIGSTOP the server for ${STALL_MS / 1000} s (heartbeat timeout ${HEARTBEAT_TIMEOUT_MS / 1000} s)`)
      server.freeze()
      await sleep(STALL_MS)
      server.thaw()
      stalls.push({ kind: 'SIGSTOP', start, end: Date.now() })
      detail = `stopped ${((Date.now() - start) / 1000).toFixed(1)} s`
      break
    }
    case 'server_kill': {
      say('fault: kill -9 the server and start it again')
      await server.kill9()
      server.start()
      await server.ready()
      stalls.push({ kind: 'kill -9', start, end: Date.now() })
      detail = `down ${((Date.now() - start) / 1000).toFixed(1)} s`
      break
    }
    case 'pg_kill': {
      say("fault: kill the service's Postgres backends, every 300 ms for 3 s")
      let killed = 0
      const end = Date.now() + 3000
      while (Date.now() < end) {
        const { rows } = await (ctx.pgKiller as pg.Client).query<{ n: number }>(
          `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
            WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'
              AND application_name NOT LIKE 'chaos-%'`,
          [dbName],
        )
        killed += rows[0]?.n ?? 0
        await sleep(300)
      }
      detail = `${killed} backends killed`
      break
    }
    case 'redis_kill': {
      say('fault: kill -9 Redis, start it again after 3 s')
      await redis?.kill9()
      await sleep(3000)
      await redis?.start()
      detail = 'down 3 s'
      break
    }
    case 'runner_kill': {
      const r = ctx.runners[n % ctx.runners.length] as Runner
      say(`fault: kill -9 ${r.name}, start it again on its state dir after 1 s`)
      await r.kill9()
      await sleep(1000)
      r.start()
      detail = r.name
      break
    }
    case 'sim_crash': {
      const s = ctx.sims[n % ctx.sims.length] as Sim
      say(`fault: ${s.name} crashes and stays silent ${SIM_CRASH_MS / 1000} s (it must be declared dead)`)
      s.crash(SIM_CRASH_MS)
      detail = s.name
      break
    }
  }
  faultLog.push({ kind, start, end: Date.now(), detail })
}

/**
 * The faults, one at a time, from 8 % to 80 % of the load: as many as fit (at least one
 * of each kind when the run is long enough), each kind in turn.
 */
async function faults(
  loadEnd: number,
  ctx: { sims: Sim[]; runners: Runner[]; pgKiller?: pg.Client },
  stop: AbortSignal,
) {
  if (!opts.faults.length) return
  const span = opts.seconds * 1000
  const count = Math.max(opts.faults.length, Math.floor((0.72 * opts.seconds) / 7))
  const first = t0Load + 0.08 * span
  const step = (0.72 * span) / count
  const seen = new Map<FaultKind, number>()
  for (let i = 0; i < count && !stop.aborted; i++) {
    const kind = opts.faults[i % opts.faults.length] as FaultKind
    await sleep(first + i * step - Date.now(), stop)
    // A fault must be over before the load ends (a SIGSTOP lasts longest).
    const lasts =
      kind === 'server_stop' ? STALL_MS : kind === 'sim_crash' ? SIM_CRASH_MS : kind === 'server_kill' ? 8000 : 4000
    if (stop.aborted || Date.now() + lasts > loadEnd) {
      say(`fault ${kind} skipped: no time left in the load for it`)
      continue
    }
    const n = seen.get(kind) ?? 0
    seen.set(kind, n + 1)
    await runFault(kind, ctx, n)
  }
}

let t0Load = 0

async function main(): Promise<number> {
  say(
    `run ${runId}: --db ${opts.db} --seconds ${opts.seconds} --seed ${opts.seed}; ${opts.sims} sim agents, ${opts.runners} runners; ` +
      `faults ${opts.faults.join(',') || 'none'}; logs in ${dir}`,
  )
  // The database.
  let dbUrl = ''
  if (opts.db === 'postgres') {
    pgAdmin = new pg.Client({ connectionString: opts.databaseUrl, application_name: 'chaos-admin' })
    pgAdmin.on('error', () => {})
    await pgAdmin.connect()
    dbName = `chaos_${process.pid}_${Date.now().toString(36)}`
    await pgAdmin.query(`CREATE DATABASE ${dbName}`)
    const u = new URL(opts.databaseUrl)
    u.pathname = `/${dbName}`
    dbUrl = u.toString()
  }
  if (opts.redis) {
    redis = new Redis()
    await redis.start()
  }
  const port = await freePort()
  base = `http://127.0.0.1:${port}`
  const dataDir = join(dir, 'data')
  mkdirSync(dataDir)
  server = new Server(await buildServer(), {
    PORT: String(port),
    HOST: '127.0.0.1',
    ENVIRONMENT: 'production',
    SECRET_KEY: SECRET,
    LOG_FORMAT: 'json',
    LOG_LEVEL: 'info',
    DATA_DIR: dataDir,
    DATABASE_URL: dbUrl,
    REDIS_URL: redis ? `redis://127.0.0.1:${redis.port}` : '',
    ...serverSettings,
  })
  server.start()
  await server.ready()
  say(`server ready at ${base}`)

  const cfg = { secretKey: SECRET, algorithm: 'HS256' as const }
  const minutes = Math.ceil(opts.seconds / 60) + 30
  const admin = await signToken(cfg, { sub: 'chaos-admin', role: 'admin' }, minutes)
  const operator = await signToken(cfg, { sub: 'chaos-producer', role: 'operator' }, minutes)
  const viewer = await signToken(cfg, { sub: 'chaos-stream', role: 'viewer' }, minutes)
  slots = new SlotTally(t0)

  const sims = Array.from({ length: opts.sims }, (_, i) => new Sim(`chaos-sim-${i}`, i % 2 ? 'heartbeat' : 'patch'))
  for (const s of sims) await s.register(admin)
  const reg = await call('setup', 'POST', '/api/v1/registration-tokens', {
    token: admin,
    body: { maxUses: 100, description: 'chaos runners' },
  })
  if (reg.status !== 201) throw new Error(`registration token: ${reg.status} ${JSON.stringify(reg.body)}`)
  const tokenFile = join(dir, 'registration-token')
  writeFileSync(tokenFile, reg.body.token, { mode: 0o600 })
  const runners = Array.from({ length: opts.runners }, (_, i) => new Runner(`chaos-runner-${i}`, tokenFile))
  for (const r of runners) r.start()
  for (const r of runners) await r.registered(60_000)
  const marks = join(dir, 'marks.log')
  writeFileSync(marks, '')

  const stopAll = new AbortController()
  const stopLoad = new AbortController()
  const readers = [
    new StreamReader('stream (all events)', '', viewer),
    new StreamReader('stream (agent.*)', 'agent.', viewer),
  ]
  const background = [
    ...sims.map((s) => s.run(stopAll.signal)),
    ...readers.map((r) => r.run(stopAll.signal)),
    sampler(stopAll.signal, opts.db === 'postgres' ? dbUrl : undefined, admin),
  ]
  let pgKiller: pg.Client | undefined
  if (opts.db === 'postgres') {
    pgKiller = new pg.Client({ connectionString: dbUrl, application_name: 'chaos-killer' })
    pgKiller.on('error', () => {})
    await pgKiller.connect()
  }

  // The load, with the faults.
  t0Load = Date.now()
  const loadEnd = t0Load + opts.seconds * 1000
  say(`load for ${opts.seconds} s`)
  const endTimer = setTimeout(() => stopLoad.abort(), opts.seconds * 1000)
  const producers = [
    producer(operator, marks, stopLoad.signal, opts.runners > 0),
    producer(operator, marks, stopLoad.signal, opts.runners > 0),
  ]
  await faults(loadEnd, { sims, runners, pgKiller }, stopLoad.signal)
  await Promise.all(producers)
  clearTimeout(endTimer)
  await pgKiller?.end().catch(() => {})

  // The drain: the agents and runners finish what is left.
  say(`load over; draining (at most ${opts.drainSeconds} s)`)
  const drainEnd = Date.now() + opts.drainSeconds * 1000
  let quiet = 0
  while (Date.now() < drainEnd && quiet < 3) {
    // Failed tasks with a retry left go back to pending at the next sweep: three quiet seconds in a row.
    const a = await call('drain', 'GET', '/api/v1/tasks?status=pending,assigned,running&limit=1', { token: admin })
    quiet = a.status === 200 && a.body.items.length === 0 ? quiet + 1 : 0
    await sleep(1000)
  }
  say(quiet >= 3 ? 'drained' : 'the drain ended with tasks left (the stuck check judges them)')

  // The streams catch up with the log: the newest seq now, read through the API (which also stamps it).
  let latest = 0
  for (;;) {
    const a = await call('drain', 'GET', `/api/v1/events?after=${latest}&limit=500`, { token: admin })
    if (a.status !== 200) break
    latest = a.body.nextAfter
    if (a.body.items.length < 500) break
  }
  const all = readers[0] as StreamReader
  const catchUp = Date.now() + 20_000
  while (Date.now() < catchUp && all.lastId < latest) await sleep(200)
  const lastAgentEvent = Math.max(0, ...all.ids.filter((id) => id <= latest && all.types.get(id)?.startsWith('agent.')))
  while (Date.now() < catchUp && (readers[1] as StreamReader).lastId < lastAgentEvent) await sleep(200)
  for (const r of readers) r.upTo = latest
  say(`streams at ${readers.map((r) => r.lastId).join(', ')} of ${latest}`)

  // Stop: the sim agents and readers, then the server (its database then is the snapshot
  // judged; nobody is silent long enough by then to be expired), then the runners.
  stopAll.abort()
  await Promise.all(background)
  const checkAt = Date.now()
  await stopChild(server.child, 'SIGTERM', 15_000)
  // The runners still heartbeat while the server shuts down (and sweeps until it has).
  stalls.push({ kind: 'server shutdown (SIGTERM)', start: checkAt, end: Date.now() })
  await Promise.all(runners.map((r) => stopChild(r.child, 'SIGTERM', 5000)))
  const leftovers = killRunLeftovers()
  if (redis?.child) await stopChild(redis.child, 'SIGTERM', 3000)
  say('everything stopped; checking')

  // The checks.
  const db =
    opts.db === 'postgres' ? await postgresSql(dbUrl, 'chaos-checker') : await pgliteSql(join(dataDir, 'pglite'))
  let judged: { results: Result[]; evidence: string[] }
  try {
    judged = await judge(db, { checkAt, marks, sims, runners, readers, latest, leftovers })
  } finally {
    await db.close().catch(() => {})
  }
  const { results, evidence } = judged
  const summary = summarize(results, opts.allow)
  console.log(`\n${summary.table}\n`)
  for (const r of results) {
    if (!r.violations.length) continue
    console.log(`${r.name}${opts.allow.has(r.name) ? ' (allowed)' : ''}: ${r.violations.length} violation(s)`)
    for (const v of r.violations.slice(0, 12)) console.log(`  - ${v}`)
    if (r.violations.length > 12)
      console.log(`  … and ${r.violations.length - 12} more${opts.report ? ` (in ${opts.report})` : ''}`)
  }
  if (evidence.length) console.log(`\nevent histories (times from the run's start):\n${evidence.join('\n')}`)
  if (summary.allowedButPassing.length)
    console.log(`allowed but passing now (their allowance can go): ${summary.allowedButPassing.join(', ')}`)
  if (opts.report)
    writeFileSync(
      opts.report,
      JSON.stringify(
        {
          runId,
          options: { ...opts, allow: [...opts.allow] },
          settings: serverSettings,
          results,
          faults: faultLog,
          load,
        },
        null,
        2,
      ),
    )
  console.log(
    summary.failing.length
      ? `chaos: FAILED: ${summary.failing.join(', ')}`
      : `chaos: passed${opts.allow.size ? ` (allowed: ${[...opts.allow].join(', ')})` : ''}`,
  )
  return summary.failing.length ? 1 : 0
}

/** The invariants over what the run recorded and the database the server left. */
async function judge(
  db: Sql,
  x: {
    checkAt: number
    marks: string
    sims: Sim[]
    runners: Runner[]
    readers: StreamReader[]
    latest: number
    leftovers: number
  },
): Promise<{ results: Result[]; evidence: string[] }> {
  const { checkAt, marks, sims, runners, readers, latest, leftovers } = x
  const results: Result[] = []
  const evidence: string[] = []
  const taskRows = await db.query<{ id: string; status: string }>('SELECT id::text AS id, status FROM tasks')
  const statusOf = new Map(taskRows.map((r) => [r.id, r.status]))
  results.push(checkAcked(ackedCreates, ackedCompletions, statusOf))

  const dupes = await db.query<{ key: string; ids: string[] }>(
    `SELECT idempotency_key AS key, json_agg(id) AS ids FROM tasks WHERE idempotency_key IS NOT NULL
      GROUP BY idempotency_owner, idempotency_key HAVING count(*) > 1`,
  )
  results.push(checkIdempotency(keyAnswers, dupes))

  const endings = await db.query<{ seq: number; task: string; attempt: number; type: string }>(
    `SELECT coalesce(seq, -id)::float8 AS seq, task_id::text AS task, (data->>'attempt')::int AS attempt, type FROM events
      WHERE type IN ('task.completed', 'task.failed', 'task.cancelled', 'task.timed_out') AND task_id IS NOT NULL`,
  )
  results.push(
    checkCompletedOnce(endings.map((e): Ending => ({ seq: e.seq, taskId: e.task, attempt: e.attempt, type: e.type }))),
  )

  const shellCopies = copiesFromMarks(readFileSync(marks, 'utf8'))
  results.push(checkOverlaps([...copies, ...shellCopies], t0))

  for (const r of await db.query<{ id: string; name: string; max: number; active: number; held: number }>(
    SLOT_SAMPLE_SQL,
  ))
    slots.add({
      at: checkAt,
      agent: `${r.name} (${r.id})`,
      max: r.max,
      active: r.active,
      held: r.held,
      atomic: true,
      source: 'database at the end',
    })
  results.push(slots.over, slots.counter)

  const open = await db.query<Json>(
    `SELECT id::text AS id, type, status, attempt, agent_id::text AS agent, to_json(req_capabilities) AS caps,
            req_agent_id::text AS req_agent, to_json(declined_by) AS declined, cancel_requested,
            (extract(epoch FROM cancel_requested_at) * 1000)::float8 AS cra, (extract(epoch FROM assigned_at) * 1000)::float8 AS asg,
            (extract(epoch FROM deadline_at) * 1000)::float8 AS ddl, (extract(epoch FROM finished_at) * 1000)::float8 AS fin,
            (extract(epoch FROM available_at) * 1000)::float8 AS avl, auto_retry
       FROM tasks WHERE status IN ('pending', 'assigned', 'running') OR (status IN ('failed', 'timed_out') AND auto_retry)`,
  )
  const agentRows = await db.query<Json>(
    `SELECT id::text AS id, name, status, to_json(task_types) AS types, to_json(capabilities) AS caps,
            active_tasks AS active, max_concurrent_tasks AS max, (extract(epoch FROM last_heartbeat_at) * 1000)::float8 AS hb
       FROM agents`,
  )
  results.push(
    checkStuck(
      open.map(
        (r): TaskState => ({
          id: r.id,
          type: r.type,
          status: r.status,
          attempt: r.attempt,
          agentId: r.agent,
          reqCapabilities: r.caps ?? [],
          reqAgentId: r.req_agent,
          declinedBy: r.declined ?? [],
          cancelRequested: r.cancel_requested,
          cancelRequestedAt: r.cra,
          assignedAt: r.asg,
          deadlineAt: r.ddl,
          finishedAt: r.fin,
          availableAt: r.avl,
          autoRetry: r.auto_retry,
        }),
      ),
      agentRows.map(
        (a): AgentState => ({
          id: a.id,
          name: a.name,
          status: a.status,
          taskTypes: a.types ?? [],
          capabilities: a.caps ?? [],
          active: a.active,
          max: a.max,
          lastHeartbeatAt: a.hb,
        }),
      ),
      checkAt,
      taskRows.length,
      {
        assignMs: setting('ASSIGN_TIMEOUT_SECONDS') * 1000,
        cancelGraceMs: setting('CANCEL_GRACE_SECONDS') * 1000,
        heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS,
        slackMs: 5000,
      },
    ),
  )

  const expired = await db.query<{ seq: number; agent: string; at: number }>(
    `SELECT coalesce(seq, -id)::float8 AS seq, agent_id::text AS agent, (extract(epoch FROM created_at) * 1000)::float8 AS at
       FROM events WHERE type = 'agent.expired'`,
  )
  const probers: Prober[] = [
    ...sims.map((s): Prober => ({ id: s.id, name: s.name, kind: 'sim', attempts: s.attempts, alive: s.alive })),
    ...runners.map((r): Prober => ({ id: r.agentId, name: r.name, kind: 'runner', attempts: [], alive: r.alive })),
  ]
  results.push(
    checkFalseDeaths(
      expired.map((e): ExpiredEvent => ({ seq: e.seq, agentId: e.agent, at: e.at })),
      probers,
      HEARTBEAT_TIMEOUT_MS,
      stalls,
      t0,
    ),
  )

  const table = await db.query<{ seq: number; type: string }>(
    'SELECT seq::float8 AS seq, type FROM events WHERE seq IS NOT NULL AND seq <= $1 ORDER BY seq',
    [latest],
  )
  for (const r of readers) {
    const res = checkStream(
      r,
      table.filter((e) => e.type.startsWith(r.filter)),
    )
    const merged = results.find((x) => x.name === 'stream_exactly_once')
    if (merged) {
      merged.checked += res.checked
      merged.violations.push(...res.violations)
    } else results.push(res)
  }
  if (latest === 0)
    results.push({ name: 'stream_exactly_once', checked: 0, violations: ['the log could not be read at the end'] })

  results.push(http.result())

  // The history of a few tasks named by a violation, to read it by.
  const named = new Set<string>()
  for (const r of results)
    if (r.name === 'no_overlap' || r.name === 'completed_once' || r.name === 'acked_tasks_kept')
      for (const v of r.violations) {
        const m = /^task ([0-9a-f-]{36})/.exec(v)
        if (m && named.size < 4) named.add(m[1] as string)
      }
  const names = new Map<string, string>([
    ...sims.map((x) => [x.id, x.name] as const),
    ...runners.map((x) => [x.agentId, x.name] as const),
  ])
  for (const id of named) {
    const evs = await db.query<{ seq: number; type: string; agent: string | null; data: Json; at: number }>(
      `SELECT coalesce(seq, -id)::float8 AS seq, type, agent_id::text AS agent, data, (extract(epoch FROM created_at) * 1000)::float8 AS at
         FROM events WHERE task_id = $1 ORDER BY id`,
      [id],
    )
    evidence.push(
      `task ${id}:\n${evs
        .map((e) => {
          const d = e.data ?? {}
          const extra = [
            d.attempt !== undefined ? `attempt ${d.attempt}` : '',
            d.reason ?? '',
            d.error?.code ?? '',
            d.via ? `via ${d.via}` : '',
          ]
            .filter(Boolean)
            .join(', ')
          return `    ${rel(e.at)} ${e.type}${e.agent ? ` on ${names.get(e.agent) ?? e.agent}` : ''}${extra ? ` (${extra})` : ''}`
        })
        .join('\n')}`,
    )
  }

  // The run in figures.
  const byStatus = await db.query<{ status: string; n: number }>(
    'SELECT status, count(*)::int AS n FROM tasks GROUP BY status ORDER BY status',
  )
  const expiredSims = expired.filter((e) => sims.some((s) => s.id === e.agent)).length
  printLoad({ sims, runners, readers, shellCopies, byStatus, expired: expired.length, expiredSims, leftovers })
  return { results, evidence }
}

function printLoad(x: {
  sims: Sim[]
  runners: Runner[]
  readers: StreamReader[]
  shellCopies: Copy[]
  byStatus: { status: string; n: number }[]
  expired: number
  expiredSims: number
  leftovers: number
}) {
  const c = load.creates
  const ackedHow = new Map<string, number>()
  for (const how of ackedCreates.values()) ackedHow.set(how, (ackedHow.get(how) ?? 0) + 1)
  const statuses = [...http.byStatus].reduce<Record<string, number>>((m, [k, n]) => {
    const s = k.split(' ')[1] as string
    m[s] = (m[s] ?? 0) + n
    return m
  }, {})
  const faultsBy = new Map<string, string[]>()
  for (const f of faultLog) faultsBy.set(f.kind, [...(faultsBy.get(f.kind) ?? []), f.detail])
  const lines = [
    `load (${opts.seconds} s on ${opts.db}${opts.redis ? ' + Redis' : ''}, seed ${opts.seed}):`,
    `  creates sent: ${c.single} single, ${c.singleKeyed} single with an Idempotency-Key, ${c.batches} batches of ${c.batchTasks} tasks (${c.batchKeyed} keyed); ${c.shell} of the tasks shell, ${c.shortTimeout} with a 2 s timeout`,
    `  tasks acknowledged ${ackedCreates.size}: ${[...ackedHow].map(([h, n]) => `${n} by ${h}`).join(', ')}`,
    `  create retries ${load.retries}, replays ${load.replays}, cancels ${load.cancels}`,
    `  sim agents ${x.sims.length}: ${load.heartbeats} heartbeats, ${load.patches} PATCH reports, ${load.simCopies} task copies run, ${ackedCompletions.size} completions acknowledged`,
    `  runners ${x.runners.length}: ${x.runners.reduce((n, r) => n + r.starts, 0)} starts, ${x.shellCopies.length} shell copies marked, ${x.leftovers} leftover task processes killed at the end`,
    `  tasks at the end: ${x.byStatus.map((r) => `${r.status} ${r.n}`).join(', ')}`,
    `  event streams: ${x.readers.map((r) => `${r.name} ${r.ids.length} events over ${r.connects} connections`).join('; ')}`,
    `  agent.expired events ${x.expired} (of sim agents: ${x.expiredSims}; ${x.sims.reduce((n, s) => n + s.crashes, 0)} sim crash(es))`,
    `  HTTP answers ${http.total}: ${Object.entries(statuses)
      .map(([s, n]) => `${s}×${n}`)
      .join(
        ' ',
      )}; no answer: ${[...http.network].map(([k, n]) => `${k}×${n}`).join(' ') || 'none'}; 503 without Retry-After ${http.missingRetryAfter}`,
    `  server: ${server.starts} starts, ${server.errorLines} error lines besides requests${server.firstErrors.length ? ` (${server.firstErrors.join('; ')})` : ''}`,
    `faults: ${[...faultsBy].map(([k, d]) => `${k}×${d.length} (${d.join(', ')})`).join('; ') || 'none'}`,
  ]
  console.log(`\n${lines.join('\n')}`)
}

let code = 2
try {
  code = await main()
} catch (err) {
  console.error(`chaos: the run could not go on: ${(err as Error).stack ?? err}`)
  code = 2
} finally {
  await cleanup()
  const failed = code !== 0
  if (opts.keep || failed) {
    if (!opts.keep) rmSync(join(dir, 'data'), { recursive: true, force: true })
    console.log(`chaos: logs kept in ${dir}`)
  } else rmSync(dir, { recursive: true, force: true })
}
process.exit(code)
