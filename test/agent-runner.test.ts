import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import { Agent, silentAgentLogger } from '../src/agent'
import { killLeftoverGroups, procStat, recordGroup } from '../src/agent/groups'
import { type Client, createClient, ok } from '../src/client'
import { followRollout } from '../src/client/rollouts'
import { signToken } from '../src/lib/tokens'
import { freshPostgresUrl, onPostgres, SECRET, testRedisUrl, unique } from './harness'
import { type Built, buildEntries, migratedDataDir, type Spawned, startBuiltServer, stopped, track } from './spawn'
import { until } from './until'

/**
 * The runner end to end: the real server (a child process; embedded PGlite, or this
 * machine's Postgres in CI) and real `agenticcp-agent` processes, driven through the typed
 * client. Short heartbeat settings so that a lost runner is noticed in seconds.
 *
 * The server and the runner are built once for the file (as `npm run build` builds them)
 * and started with node, which takes a fraction of tsx's time on each start; one test runs
 * bin/agenticcp-agent.mjs from the sources, as a user of this checkout does.
 */
const GRACE = 2
/** The tests that stop and start the server wait on its start and the runner's backoff. */
const OUTAGE_TEST_MS = 90_000

let built: Built<'server' | 'agent'>
beforeAll(async () => {
  built = await buildEntries({ server: 'src/server.ts', agent: 'src/agent/bin.ts' })
})
afterAll(() => built?.remove())

/** The command: the build (`node <build>`), or the real entry (`node bin/agenticcp-agent.mjs`). */
const command = (entry: 'build' | 'bin' = 'build') => (entry === 'bin' ? 'bin/agenticcp-agent.mjs' : built.files.agent)

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resolve(port))
    })
  })
}

/** The system user `nobody` (uid, gid, home), for the tests of --run-as, which need this process to be root. */
const nobody = (() => {
  try {
    const [, , uid, gid, , home] = execFileSync('getent', ['passwd', 'nobody'], { encoding: 'utf8' }).trim().split(':')
    return { uid: Number(uid), gid: Number(gid), home: home ?? '' }
  } catch {
    return undefined
  }
})()
const asRoot = process.getuid?.() === 0
const hasPrlimit = (process.env.PATH ?? '').split(':').some((d) => d && existsSync(join(d, 'prlimit')))

/** A process's state, group and session (/proc/<pid>/stat), or undefined when it is gone. */
function proc(pid: number) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const [state, , group, session] = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return { state, group: Number(group), session: Number(session) }
  } catch {
    return undefined
  }
}
/** Running (not gone, nor a zombie nobody reaps). */
const running = (pid: number) => {
  const p = proc(pid)
  return p !== undefined && p.state !== 'Z'
}
/** The pid a command wrote to `file`, once it has. */
const pidIn = (file: string) =>
  until(`a pid in ${file}`, () => {
    const text = existsSync(file) ? readFileSync(file, 'utf8').trim() : ''
    return /^\d+$/.test(text) ? Number(text) : undefined
  })
/** Leftovers of a failed test are not left to the next. */
const killAfterTest = (pids: number[]) =>
  onTestFinished(() => {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {}
    }
  })

interface Runner extends Omit<Spawned, 'listening'> {
  child: ChildProcess
  stateDir: string
  scope: string
}

// Each waits on real processes and on the server's own timers (heartbeat timeout, sweep).
describe('agenticcp-agent end to end', { timeout: 60_000 }, () => {
  let port: number
  let url: string
  let env: Record<string, string>
  let server: Spawned
  let api: Client
  const runners: Runner[] = []

  const start = async () => {
    server = startBuiltServer(built.files.server, env)
    await server.listening
  }

  beforeAll(async () => {
    port = await freePort()
    url = `http://127.0.0.1:${port}`
    env = {
      PORT: String(port),
      SECRET_KEY: SECRET,
      // The run's migrated database: initdb and the migrations are first-run.test.ts's concern.
      DATA_DIR: migratedDataDir(),
      HEARTBEAT_INTERVAL_SECONDS: '1',
      HEARTBEAT_TIMEOUT_SECONDS: '3',
      SWEEP_INTERVAL_SECONDS: '1',
      RETRY_BACKOFF_BASE_SECONDS: '0',
      RETRY_BACKOFF_MAX_SECONDS: '0',
      ...(onPostgres() ? { DATABASE_URL: await freshPostgresUrl() } : {}),
      ...(testRedisUrl ? { REDIS_URL: testRedisUrl } : {}),
    }
    await start()
    const admin = await signToken({ secretKey: SECRET, algorithm: 'HS256' }, { sub: 'runner-test', role: 'admin' }, 60)
    api = createClient({ url, token: admin })
  }, 60_000)

  afterEach(async () => {
    await Promise.all(runners.splice(0).map((r) => stopped(r.child, r.exited)))
  })

  afterAll(async () => {
    if (server) await stopped(server.child, server.exited)
  })

  const registrationToken = async (maxUses = 5) =>
    (await ok(api.api.v1['registration-tokens'].$post({ json: { maxUses, description: 'runner test' } }))).token

  /** A runner process; its tasks are kept apart from other tests' by a label. */
  const runner = (
    token: string,
    opts: {
      stateDir?: string
      scope?: string
      name?: string
      extra?: string[]
      entry?: 'build' | 'bin'
      /** More of the runner's environment. */
      env?: Record<string, string>
    } = {},
  ) => {
    const stateDir = opts.stateDir ?? mkdtempSync(join(tmpdir(), 'act-agent-'))
    const scope = opts.scope ?? unique('scope')
    const child = spawn(
      process.execPath,
      [
        command(opts.entry),
        'run',
        '--url',
        url,
        '--state-dir',
        stateDir,
        '--name',
        opts.name ?? unique('host'),
        '--labels',
        `scope=${scope}`,
        '--allow-shell',
        '--cancel-grace',
        String(GRACE),
        '--log-format',
        'json',
        ...(opts.extra ?? []),
      ],
      // The token comes from the environment, as a service manager would give it.
      {
        env: { PATH: process.env.PATH ?? '', HOME: stateDir, AGENTICCP_TOKEN: token, ...opts.env },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    const r: Runner = { ...track(child), child, stateDir, scope }
    runners.push(r)
    return r
  }

  /**
   * The runner's agent id, once it has registered (its state dir holds its identity) and the
   * service counts it online: a task created from then on is placed on it at once.
   */
  const agentIdOf = (r: Runner) =>
    until('the runner to register and come online', async () => {
      const id = JSON.parse(readFileSync(join(r.stateDir, 'agent.json'), 'utf8')).id as string
      const agent = await ok(api.api.v1.agents[':id'].$get({ param: { id } }))
      return agent.status === 'online' ? id : undefined
    })

  const shellTask = (scope: string, payload: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
    ok(
      api.api.v1.tasks.$post({
        header: {},
        json: {
          name: unique('shell'),
          type: 'shell',
          payload,
          requirements: { capabilities: ['shell'], labels: { scope } },
          ...extra,
        },
      }),
    )

  const getTask = (id: string) => ok(api.api.v1.tasks[':id'].$get({ param: { id } }))
  const taskIn = (id: string, statuses: string[], timeoutMs?: number) =>
    until(
      `task ${id} to be ${statuses.join('|')}`,
      async () => {
        const t = await getTask(id)
        return statuses.includes(t.status) ? t : undefined
      },
      { timeoutMs },
    )

  it('registers with a registration token, keeps its identity 0600, and completes a shell task with its output', async () => {
    // The real entry, run as a user of this checkout runs it (tsx, the sources).
    const r = runner(await registrationToken(), { entry: 'bin' })
    const id = await agentIdOf(r)
    const state = statSync(join(r.stateDir, 'agent.json'))
    expect(state.mode & 0o777).toBe(0o600)
    const task = await shellTask(r.scope, { command: 'echo hello; echo oops >&2', env: { X: '1' } })
    const done = await taskIn(task.id, ['completed', 'failed'])
    expect(done.status).toBe('completed')
    expect(done.agentId).toBe(id)
    expect(done.result).toMatchObject({ exitCode: 0, signal: null })
    expect((done.result as { outputTail: string }).outputTail).toBe('hello\noops\n')
    // Its output is the task's log too, with the runner's system lines around it.
    type Page = { live: boolean; items: { stream: string; data: string }[] }
    const log = (await ok(api.api.v1.tasks[':id'].logs.$get({ param: { id: task.id }, query: {}, header: {} }))) as Page
    expect(log.live).toBe(false)
    const text = log.items.map((c) => c.data).join('')
    expect(text).toMatch(/^\[agent\] started: echo hello; echo oops >&2\n/)
    expect(text).toContain('hello\n')
    expect(text).toContain('oops\n')
    expect(text.endsWith('[agent] exited with status 0\n')).toBe(true)
    expect(log.items.find((c) => c.data === 'oops\n')?.stream).toBe('stderr')
    // The runner never prints a token.
    const { out, err } = r.output()
    expect(`${out}${err}`).not.toMatch(/acpr_|eyJ/)
    expect(err).toContain(`"taskId":"${task.id}"`)
  })

  it('gives a shell task a clean environment: the allow-list, --pass-env and its payload’s env, never the runner’s settings or secrets', async () => {
    const r = runner(await registrationToken(), {
      extra: ['--pass-env', 'PASSED_ONE', '--pass-env', 'PASSED_TWO,PASSED_UNSET'],
      env: {
        LANG: 'C.UTF-8',
        LC_ALL: 'C',
        TZ: 'UTC',
        PASSED_ONE: '1',
        PASSED_TWO: '2',
        DATABASE_PASSWORD: 'hunter2',
        AGENTICCP_LOG_LEVEL: 'info',
      },
    })
    await agentIdOf(r)
    // The program itself (no shell, which would add PWD), printing all it was given.
    const task = await shellTask(r.scope, { command: ['env'], env: { FROM_PAYLOAD: 'x', PASSED_ONE: 'payload wins' } })
    const done = await taskIn(task.id, ['completed', 'failed'])
    expect(done.status).toBe('completed')
    const lines = (done.result as { outputTail: string }).outputTail.trim().split('\n')
    const vars = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
    expect(vars).toEqual({
      PATH: process.env.PATH ?? '',
      HOME: r.stateDir,
      LANG: 'C.UTF-8',
      LC_ALL: 'C',
      TZ: 'UTC',
      PASSED_ONE: 'payload wins',
      PASSED_TWO: '2',
      FROM_PAYLOAD: 'x',
      AGENTICCP_TASK_ID: task.id,
      AGENTICCP_TASK_ATTEMPT: '1',
    })
  })

  it('keeps its state dir 0700 and agent.json 0600, tightening them when they were looser', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'act-agent-'))
    chmodSync(stateDir, 0o755) // made by hand, or by a volume
    const mode = (path: string) => statSync(path).mode & 0o777
    const first = runner(await registrationToken(1), { stateDir })
    await agentIdOf(first)
    expect(mode(stateDir)).toBe(0o700)
    expect(mode(join(stateDir, 'agent.json'))).toBe(0o600)
    await first.waitFor(/"msg":"[^"]+ was open to other users \(mode 0755\): now 0700"/)
    first.child.kill('SIGTERM')
    expect(await first.exited).toBe(0)
    // Loosened while it was stopped (a copy, a restore from a backup): the restart tightens both.
    chmodSync(stateDir, 0o755)
    chmodSync(join(stateDir, 'agent.json'), 0o644)
    const again = runner('', { stateDir, scope: first.scope })
    await again.waitFor(/agent\.json was open to other users \(mode 0644\): now 0600/)
    expect(mode(stateDir)).toBe(0o700)
    expect(mode(join(stateDir, 'agent.json'))).toBe(0o600)
  })

  it.skipIf(!asRoot || !nobody)(
    'runs shell tasks as --run-as nobody: its uid, gid and home, and no way to the agent’s token',
    async () => {
      const user = nobody as NonNullable<typeof nobody>
      const stateDir = mkdtempSync(join(tmpdir(), 'act-agent-'))
      chmodSync(stateDir, 0o755)
      const r = runner(await registrationToken(), { stateDir, extra: ['--run-as', 'nobody'] })
      await agentIdOf(r)
      await r.waitFor(/shell tasks run as nobody/)
      const can = (what: string, test: string) =>
        `if ${test} >/dev/null 2>&1; then echo '${what}'; else echo 'no ${what}'; fi`
      const task = await shellTask(r.scope, {
        command: [
          'id -u; id -G; echo "$HOME"', // its groups: its own only, none of root's
          can('agent.json', `cat ${join(stateDir, 'agent.json')}`),
          can('state dir', `ls ${stateDir}`),
          can('runner environ', `cat /proc/${r.child.pid}/environ`),
          can('signal to the runner', `kill -0 ${r.child.pid}`),
        ].join('\n'),
      })
      const done = await taskIn(task.id, ['completed', 'failed'])
      expect(done).toMatchObject({
        status: 'completed',
        result: {
          outputTail: `${user.uid}\n${user.gid}\n${user.home}\nno agent.json\nno state dir\nno runner environ\nno signal to the runner\n`,
        },
      })
    },
  )

  it.skipIf(!asRoot || !nobody || !hasPrlimit)(
    'caps the processes of the --run-as user with --max-processes: a fork past it fails',
    async () => {
      const r = runner(await registrationToken(), { extra: ['--run-as', 'nobody', '--max-processes', '8'] })
      await agentIdOf(r)
      // Under the limit, a command runs as ever; one given relative to its cwd is found there…
      const dir = mkdtempSync(join(tmpdir(), 'act-cwd-'))
      onTestFinished(() => rmSync(dir, { recursive: true, force: true }))
      chmodSync(dir, 0o755)
      writeFileSync(join(dir, 'hello.sh'), '#!/bin/sh\necho "hello from $(pwd)"\n', { mode: 0o755 })
      const relative = await shellTask(r.scope, { command: ['./hello.sh'], cwd: dir }, { maxAttempts: 1 })
      expect(await taskIn(relative.id, ['completed', 'failed'])).toMatchObject({
        status: 'completed',
        result: { outputTail: `hello from ${dir}\n` },
      })
      // …and a program that is not there is still said as such (not prlimit's exit 127).
      const missing = await shellTask(r.scope, { command: ['no-such-program-here'] }, { maxAttempts: 1 })
      expect(await taskIn(missing.id, ['failed'])).toMatchObject({
        error: {
          code: 'spawn_failed',
          message: 'Could not start: ENOENT (no program "no-such-program-here" on PATH).',
        },
      })
      // Past it, forks fail. (Last: its killed processes count for the user until reaped.)
      const task = await shellTask(
        r.scope,
        { command: 'i=0; while [ $i -lt 20 ]; do sleep 2 & i=$((i+1)); done; wait; echo all started' },
        { maxAttempts: 1 },
      )
      const done = await taskIn(task.id, ['completed', 'failed'])
      expect(done).toMatchObject({ status: 'failed', error: { code: expect.stringMatching(/^exit_/) } })
      expect((done.result as { outputTail: string }).outputTail).toMatch(/fork/i)
    },
  )

  it('streams a long noisy command’s output into the task log, whole and in order', async () => {
    const r = runner(await registrationToken())
    await agentIdOf(r)
    const task = await shellTask(r.scope, {
      command: 'for i in $(seq 1 3000); do echo "line $i"; done; sleep 0.3; echo last',
    })
    await taskIn(task.id, ['completed', 'failed'])
    const res = await fetch(`${url}/api/v1/tasks/${task.id}/logs`, {
      headers: {
        authorization: `Bearer ${await signToken({ secretKey: SECRET, algorithm: 'HS256' }, { sub: 'v', role: 'viewer' }, 5)}`,
        accept: 'text/plain',
      },
    })
    const lines = (await res.text()).split('\n').filter((l) => l.startsWith('line '))
    expect(lines).toHaveLength(3000)
    expect(lines.every((l, i) => l === `line ${i + 1}`)).toBe(true)
  })

  it('keeps at most --max-output bytes of a task’s output in its log, says so, and lets the command go on', async () => {
    const r = runner(await registrationToken(), { extra: ['--max-output', '1000'] })
    await agentIdOf(r)
    const task = await shellTask(r.scope, {
      command: 'for i in $(seq 1 500); do echo "line $i"; done; echo last >&2',
    })
    const done = await taskIn(task.id, ['completed', 'failed'])
    const lines = Array.from({ length: 500 }, (_, i) => `line ${i + 1}\n`).join('')
    const total = lines.length + 'last\n'.length
    // It ran to its end: the result has its real last lines, and how much the log did not get.
    expect(done).toMatchObject({ status: 'completed', result: { exitCode: 0, outputDropped: total - 1000 } })
    expect((done.result as { outputTail: string }).outputTail.endsWith('line 500\nlast\n')).toBe(true)
    const viewer = await signToken({ secretKey: SECRET, algorithm: 'HS256' }, { sub: 'v', role: 'viewer' }, 5)
    const res = await fetch(`${url}/api/v1/tasks/${task.id}/logs`, {
      headers: { authorization: `Bearer ${viewer}`, accept: 'text/plain' },
    })
    // The first 1000 bytes (a line cut in the middle), then what happened to the rest.
    expect(await res.text()).toBe(
      `[agent] started: for i in $(seq 1 500); do echo "line $i"; done; echo last >&2\n${lines.slice(0, 1000)}\n` +
        '[agent] output past 1000 bytes is not kept (--max-output); the command goes on\n' +
        `[agent] ${total - 1000} bytes of output not kept\n` +
        '[agent] exited with status 0\n',
    )
  })

  it('fails a failing command with exit_<n> and the service retries it per maxAttempts', async () => {
    const r = runner(await registrationToken())
    await agentIdOf(r)
    const task = await shellTask(r.scope, { command: 'echo bad; exit 3' }, { maxAttempts: 2 })
    // A failed attempt with attempts left is retried by the sweep (failed → pending → …).
    const done = await until('the second attempt to fail', async () => {
      const t = await getTask(task.id)
      return t.failures === 2 || t.status === 'completed' ? t : undefined
    })
    expect(done).toMatchObject({ status: 'failed', attempt: 2, failures: 2, error: { code: 'exit_3' } })
    expect(done.result).toMatchObject({ exitCode: 3, outputTail: 'bad\n' })
    // A payload the runner would refuse is refused by the service at create, with the same
    // schema (so it never reaches a runner); a type the runner does not run is never handed
    // to it (it declares the types it runs: here only shell), and waits, saying why.
    await expect(shellTask(r.scope, { cmd: 'echo' }, { maxAttempts: 3 })).rejects.toMatchObject({
      status: 422,
      body: { code: 'validation_failed' },
    })
    const other = await ok(
      api.api.v1.tasks.$post({
        header: {},
        json: { name: 'py', type: 'python.run', maxAttempts: 1, requirements: { labels: { scope: r.scope } } },
      }),
    )
    const waiting = await until('the python.run task to wait for an agent that runs it', async () => {
      const t = await getTask(other.id)
      return t.pendingReason === 'no_agent_for_type' ? t : undefined
    })
    expect(waiting).toMatchObject({ status: 'pending', attempt: 0, agentId: null, error: null })
    expect(waiting.pendingDetails?.join(' ')).toContain('python.run')
    // A command that cannot start says why (the spawn error's code), not "exited with status -2".
    const missing = await shellTask(r.scope, { command: ['/nonexistent/program', 'x'] }, { maxAttempts: 1 })
    const noDir = await shellTask(r.scope, { command: 'true', cwd: '/nonexistent-dir' }, { maxAttempts: 1 })
    const notDir = await shellTask(r.scope, { command: 'true', cwd: '/etc/passwd' }, { maxAttempts: 1 })
    expect(await taskIn(missing.id, ['failed'])).toMatchObject({
      error: { code: 'spawn_failed', message: 'Could not start: ENOENT (no program "/nonexistent/program").' },
      result: { exitCode: null, signal: null, spawnError: 'ENOENT' },
    })
    // A working directory that is not there is named as the cause, with a code of its own.
    expect(await taskIn(noDir.id, ['failed'])).toMatchObject({
      error: { code: 'cwd_not_found', message: 'The working directory /nonexistent-dir does not exist.' },
      result: { exitCode: null, signal: null },
    })
    expect(await taskIn(notDir.id, ['failed'])).toMatchObject({
      error: { code: 'cwd_not_directory', message: 'The working directory /etc/passwd is not a directory.' },
    })
    const viewer = await signToken({ secretKey: SECRET, algorithm: 'HS256' }, { sub: 'v', role: 'viewer' }, 5)
    const text = await until('the log of the command that did not start', async () => {
      const res = await fetch(`${url}/api/v1/tasks/${missing.id}/logs`, {
        headers: { authorization: `Bearer ${viewer}`, accept: 'text/plain' },
      })
      const body = await res.text()
      return body.includes('could not start') ? body : undefined
    })
    expect(text).toBe('[agent] could not start: ENOENT (no program "/nonexistent/program")\n')
    await r.waitFor(/"msg":"could not start: ENOENT \(no program \\"\/nonexistent\/program\\"\)"/)
    await r.waitFor(/"msg":"could not start: the working directory \/nonexistent-dir does not exist"/)
    expect(r.output().err).not.toContain('status -2')
  })

  it('a shell-only runner beside tasks of five other types takes only the shell tasks; the others wait (no_agent_for_type) for an agent that runs them', async () => {
    const r = runner(await registrationToken())
    const id = await agentIdOf(r)
    expect((await ok(api.api.v1.agents[':id'].$get({ param: { id } }))).taskTypes).toEqual(['shell'])
    const types = ['etl.load', 'model.train', 'report.render', 'python.run', 'mail.send']
    const others = await Promise.all(
      types.map((type) =>
        ok(
          api.api.v1.tasks.$post({
            header: {},
            json: { name: unique(type), type, maxAttempts: 1, requirements: { labels: { scope: r.scope } } },
          }),
        ),
      ),
    )
    const shells = await Promise.all([1, 2, 3].map((i) => shellTask(r.scope, { command: `echo ${i}` })))
    for (const [i, s] of shells.entries()) {
      expect(await taskIn(s.id, ['completed', 'failed'])).toMatchObject({
        status: 'completed',
        agentId: id,
        result: { outputTail: `${i + 1}\n` },
      })
    }
    for (const t of others) {
      const waiting = await until(`${t.type} to wait for an agent that runs it`, async () => {
        const got = await getTask(t.id)
        return got.pendingReason === 'no_agent_for_type' ? got : undefined
      })
      expect(waiting).toMatchObject({ status: 'pending', attempt: 0, agentId: null, failures: 0 })
    }
    // The runner was never handed them: nothing declined, nothing refused, nothing failed.
    expect(r.output().err).not.toMatch(/declin|refused|unsupported_type/)
    // An agent that runs them comes (the library, in this process): they go to it.
    const lib = new Agent({
      url,
      token: await registrationToken(),
      name: unique('lib'),
      labels: { scope: r.scope },
      slots: 5,
      stateDir: false,
      maxWaitSeconds: 1,
      logger: silentAgentLogger,
    })
    for (const type of types) lib.handle(type, (task) => `${task.type} done`)
    onTestFinished(() => lib.kill())
    await lib.start()
    for (const t of others) {
      expect(await taskIn(t.id, ['completed', 'failed'])).toMatchObject({
        status: 'completed',
        agentId: lib.id,
        attempt: 1,
        result: `${t.type} done`,
      })
    }
    expect(lib.declined).toEqual({})
    await lib.stop(5)
  })

  it('cancels a running command: SIGTERM to it and all it started, SIGKILL after the grace, reported cancelled', async () => {
    const r = runner(await registrationToken())
    await agentIdOf(r)
    // The shell ignores SIGTERM (and so does the sleep it starts): only SIGKILL ends it.
    const task = await shellTask(r.scope, { command: "trap '' TERM; sleep 60; echo never" })
    await taskIn(task.id, ['running'])
    const asked = Date.now()
    await ok(api.api.v1.tasks[':id'].cancel.$post({ param: { id: task.id } }))
    const done = await taskIn(task.id, ['cancelled', 'failed', 'completed'], 30_000)
    const took = (Date.now() - asked) / 1000
    expect(done.status).toBe('cancelled')
    expect(took).toBeGreaterThanOrEqual(GRACE - 0.5) // it outlived SIGTERM…
    expect(took).toBeLessThan(GRACE + 8) // …and not SIGKILL
    await r.waitFor(/the command outlived its grace/)
  })

  it('stops all a command started, in its group, in another group of its session, or in a session of its own (setsid): when it ends, and on cancel', async () => {
    const r = runner(await registrationToken())
    await agentIdOf(r)
    const dir = r.stateDir
    // Left running by a command that then exits: a daemon in a session of its own.
    const ends = await shellTask(r.scope, {
      command: `setsid sleep 300 >/dev/null 2>&1 & echo $! > ${dir}/daemon; echo done`,
    })
    const daemon = await pidIn(join(dir, 'daemon'))
    killAfterTest([daemon])
    expect(await taskIn(ends.id, ['completed', 'failed'])).toMatchObject({ status: 'completed' })
    await until('the daemon it left gone', () => !running(daemon))
    // Cancelled while it runs: one child in a session of its own (which keeps the task's
    // environment), one in a group of its own in the task's session with an empty
    // environment, and the command itself.
    const task = await shellTask(r.scope, {
      command: [
        `setsid sleep 300 >/dev/null 2>&1 & echo $! > ${dir}/session`,
        `env -i perl -e 'setpgrp(0, 0); sleep 300' >/dev/null 2>&1 & echo $! > ${dir}/group`,
        'sleep 300',
      ].join('\n'),
    })
    const [own, group] = [await pidIn(join(dir, 'session')), await pidIn(join(dir, 'group'))]
    killAfterTest([own, group])
    await taskIn(task.id, ['running'])
    const leader = await until('the command recorded', () => readdirSync(join(dir, 'groups'))[0]?.replace('.json', ''))
    await until('the children out of its group', () => proc(group)?.group === group && proc(own)?.session === own)
    expect(proc(group)?.session).toBe(Number(leader)) // its session, not its group
    expect(readFileSync(`/proc/${group}/environ`, 'utf8')).toBe('') // no marks to find it by
    await ok(api.api.v1.tasks[':id'].cancel.$post({ param: { id: task.id } }))
    expect(await taskIn(task.id, ['cancelled', 'failed', 'completed'], 30_000)).toMatchObject({ status: 'cancelled' })
    await until('every process it started gone', () => !running(own) && !running(group) && !running(Number(leader)))
  })

  it('a task whose runner is killed -9 mid-run is finished by a second runner', async () => {
    const scope = unique('scope')
    const token = await registrationToken()
    const first = runner(token, { scope })
    const firstId = await agentIdOf(first)
    // The first attempt would run long (its runner dies first); any later one ends at once.
    const task = await shellTask(scope, {
      command: 'if [ "$AGENTICCP_TASK_ATTEMPT" = 1 ]; then sleep 20; fi; echo finished',
    })
    const running = await taskIn(task.id, ['running'])
    expect(running.agentId).toBe(firstId)
    const second = runner(token, { scope })
    const secondId = await agentIdOf(second)
    first.child.kill('SIGKILL')
    const done = await taskIn(task.id, ['completed', 'failed'], 40_000)
    expect(done).toMatchObject({ status: 'completed', agentId: secondId, failures: 0, result: { exitCode: 0 } })
    expect(done.lostCount).toBeGreaterThanOrEqual(1)
    expect(done.attempt).toBeGreaterThanOrEqual(2)
  })

  it('ten runners run a shell rollout end to end; one killed -9 mid-rollout leaves its target undeliverable, within the budget', async () => {
    const scope = unique('scope')
    const token = await registrationToken(10)
    const fleet = Array.from({ length: 10 }, () => runner(token, { scope }))
    const ids = await Promise.all(fleet.map((r) => agentIdOf(r)))
    const made = await ok(
      api.api.v1.rollouts.$post({
        header: {},
        json: {
          name: unique('rollout'),
          task: { type: 'shell', payload: { command: 'sleep 2; echo done on $(hostname)' } },
          target: { labels: { scope } },
          strategy: { maxConcurrency: 10, maxErrors: 1, deliveryTimeoutSeconds: 3 },
        },
      }),
    )
    expect(made.targetCount).toBe(10)
    // Kill one runner once its task runs.
    const victim = fleet[0] as Runner
    const victimId = ids[0] as string
    await until('the victim’s task to run', async () => {
      const page = await ok(
        api.api.v1.rollouts[':id'].targets.$get({ param: { id: made.id }, query: { status: 'running', limit: '100' } }),
      )
      return page.items.some((t) => t.agentId === victimId) ? true : undefined
    })
    victim.child.kill('SIGKILL')
    const end = await followRollout(api, made.id, () => {}, 5)
    expect(end).toMatchObject({ status: 'completed', errors: 1 })
    expect(end.counts).toMatchObject({ succeeded: 9, undeliverable: 1 })
    const targets = await ok(
      api.api.v1.rollouts[':id'].targets.$get({ param: { id: made.id }, query: { limit: '100' } }),
    )
    for (const t of targets.items) {
      if (t.agentId === victimId) expect(t.status).toBe('undeliverable')
      else expect(t).toMatchObject({ status: 'succeeded', exitCode: 0, outputTail: expect.stringMatching(/^done on /) })
    }
  }, 90_000)

  it('a runner killed -9 and started again stops the command it left running, and the task is retried', async () => {
    const first = runner(await registrationToken(1))
    await agentIdOf(first)
    const marker = join(first.stateDir, 'ran-once')
    const task = await shellTask(first.scope, {
      // The first attempt leaves a process in a session of its own too (setsid).
      command: `if [ -e ${marker} ]; then echo second; else touch ${marker}; setsid sleep 300 >/dev/null 2>&1 & echo $! > ${marker}; exec sleep 300; fi`,
    })
    const escaped = await pidIn(marker)
    killAfterTest([escaped])
    await taskIn(task.id, ['running'])
    const groups = join(first.stateDir, 'groups')
    const pgid = await until('its process group recorded', async () => {
      const [file] = readdirSync(groups)
      return file ? (JSON.parse(readFileSync(join(groups, file), 'utf8')).pid as number) : undefined
    })
    // A live process (not a zombie nobody reaps) in that group?
    const groupAlive = () =>
      readdirSync('/proc')
        .filter((p) => /^\d+$/.test(p))
        .some((p) => {
          try {
            const stat = readFileSync(`/proc/${p}/stat`, 'utf8')
            const [state, , group] = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
            return Number(group) === pgid && state !== 'Z'
          } catch {
            return false
          }
        })
    first.child.kill('SIGKILL')
    await first.exited
    expect(groupAlive()).toBe(true) // nothing could stop it: the runner died at once
    expect(running(escaped)).toBe(true)
    // Its lock stays, naming a process that is gone: the restart takes it over.
    expect(JSON.parse(readFileSync(join(first.stateDir, 'runner.lock'), 'utf8')).pid).toBe(first.child.pid)
    // The same state dir, no token: the same agent, which stops the leftover before it works.
    const again = runner('', { stateDir: first.stateDir, scope: first.scope })
    await again.waitFor(/killed a command left running by the previous process/)
    await until(
      'the leftover gone, the process in a session of its own too',
      async () => !groupAlive() && !running(escaped),
    )
    // The lost run is reported (agent_restarted, or agent_lost should the service have
    // counted the agent silent first; `failed` until the sweep retries it) and attempt 2
    // runs on the restarted runner.
    const done = await taskIn(task.id, ['completed'], 30_000).catch(async (err: Error) => {
      throw new Error(`${err.message}: ${JSON.stringify(await getTask(task.id))}`)
    })
    expect(done).toMatchObject({ attempt: 2, result: { outputTail: 'second\n' } })
  })

  it('a second runner on a held state dir refuses to start, naming the holder, and the first keeps its work', async () => {
    const first = runner(await registrationToken())
    const id = await agentIdOf(first)
    const gate = join(first.stateDir, 'go')
    const task = await shellTask(first.scope, { command: `until [ -e ${gate} ]; do sleep 0.1; done; echo kept` })
    await taskIn(task.id, ['running'])
    const second = runner('', { stateDir: first.stateDir, scope: first.scope })
    expect(await second.exited).toBe(1)
    // One line, naming the holder's pid; nothing else done (no leftover killed, no heartbeat).
    const { out, err } = second.output()
    const lines = `${out}${err}`.trim().split('\n')
    expect(lines).toHaveLength(1)
    expect(JSON.parse(lines[0] as string)).toMatchObject({
      level: 'error',
      msg: expect.stringContaining(`in use by runner process ${first.child.pid} `),
    })
    expect(readdirSync(join(first.stateDir, 'groups'))).toHaveLength(1) // the first one's command, still recorded
    writeFileSync(gate, '')
    const done = await taskIn(task.id, ['completed', 'failed'])
    expect(done).toMatchObject({
      status: 'completed',
      agentId: id,
      attempt: 1,
      failures: 0,
      lostCount: 0,
      result: { outputTail: 'kept\n' },
    })
    expect((await ok(api.api.v1.agents[':id'].$get({ param: { id } }))).status).toBe('online')
    // A clean stop lets go of the dir.
    first.child.kill('SIGTERM')
    expect(await first.exited).toBe(0)
    expect(existsSync(join(first.stateDir, 'runner.lock'))).toBe(false)
  })

  it('a restarted runner with the same state dir is the same agent, and SIGTERM drains and exits 0', async () => {
    const token = await registrationToken(1)
    const first = runner(token)
    const id = await agentIdOf(first)
    const task = await shellTask(first.scope, { command: 'sleep 1; echo drained' })
    await taskIn(task.id, ['running'])
    first.child.kill('SIGTERM')
    // Draining: a task created now is not taken by this runner.
    await first.waitFor(/"msg":"draining"/)
    const later = await shellTask(first.scope, { command: 'echo later' })
    expect(await first.exited).toBe(0)
    expect(await getTask(task.id)).toMatchObject({ status: 'completed', result: { outputTail: 'drained\n' } })
    expect((await getTask(later.id)).status).toBe('pending')
    // The registration token had one use: the restart needs none (its --token-file is gone:
    // the state dir holds the identity), and it is the same agent.
    const again = runner('', {
      stateDir: first.stateDir,
      scope: first.scope,
      extra: ['--token-file', join(first.stateDir, 'deleted-after-registration')],
    })
    expect(await agentIdOf(again)).toBe(id)
    const done = await taskIn(later.id, ['completed', 'failed'])
    expect(done).toMatchObject({ status: 'completed', agentId: id })
    const agent = await ok(api.api.v1.agents[':id'].$get({ param: { id } }))
    expect(agent.status).toBe('online')
  })

  it(
    'a runner started while the server is down starts working when it comes up',
    async () => {
      const token = await registrationToken()
      await stopped(server.child, server.exited)
      const r = runner(token)
      await r.waitFor(/service unreachable/)
      // Each try says where, why and when the next one is (with its unit), not once "fetch failed".
      const tries = await r.waitFor(/\{[^\n]*"msg":"service unreachable[^\n]*"tries":2[^\n]*\}/)
      const line = JSON.parse(tries[0])
      expect(line).toMatchObject({ level: 'warn', url, code: 'ECONNREFUSED' })
      expect(line.msg).toMatch(
        new RegExp(
          `^service unreachable at ${url} \\(registration\\): .*\\(ECONNREFUSED\\); retrying in \\d+(\\.\\d)? s$`,
        ),
      )
      await start()
      await r.waitFor(new RegExp(`service reachable again at ${url} after \\d+ failed tries`))
      const id = await agentIdOf(r)
      const task = await shellTask(r.scope, { command: 'echo back' })
      expect(await taskIn(task.id, ['completed', 'failed'])).toMatchObject({ status: 'completed', agentId: id })
    },
    OUTAGE_TEST_MS,
  )

  it(
    'keeps running tasks through a server outage and delivers their reports when it answers',
    async () => {
      const r = runner(await registrationToken())
      await agentIdOf(r)
      // The command ends when the test lets it: while the server is away.
      const gate = join(r.stateDir, 'go')
      const task = await shellTask(r.scope, { command: `until [ -e ${gate} ]; do sleep 0.1; done; echo survived` })
      await taskIn(task.id, ['running'])
      await stopped(server.child, server.exited)
      await r.waitFor(/service unreachable/)
      writeFileSync(gate, '')
      await r.waitFor(new RegExp(`"msg":"task completed","taskId":"${task.id}"`))
      await start()
      const done = await taskIn(task.id, ['completed', 'failed', 'pending', 'assigned'])
      expect(done).toMatchObject({ status: 'completed', result: { outputTail: 'survived\n' } })
      // Its output, written while the service was away, was kept and delivered.
      const viewer = await signToken({ secretKey: SECRET, algorithm: 'HS256' }, { sub: 'v', role: 'viewer' }, 5)
      await until('the output kept through the outage', async () => {
        const log = await fetch(`${url}/api/v1/tasks/${task.id}/logs`, {
          headers: { authorization: `Bearer ${viewer}`, accept: 'text/plain' },
        })
        return /survived\n\[agent\] exited with status 0\n$/.test(await log.text())
      })
      expect(r.child.exitCode).toBeNull()
    },
    OUTAGE_TEST_MS,
  )
})

describe('agenticcp-agent command line', () => {
  // Its default state dir (~/.agenticcp-agent) in a home of its own, never this user's.
  const home = mkdtempSync(join(tmpdir(), 'act-home-'))
  afterAll(() => rmSync(home, { recursive: true, force: true }))
  const run = (args: string[], env: Record<string, string> = {}, as?: { uid: number; gid: number }) =>
    new Promise<{ code: number | null; err: string }>((resolve) => {
      const child = spawn(process.execPath, [command(), ...args], {
        env: { PATH: process.env.PATH ?? '', HOME: home, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
        ...as,
      })
      let err = ''
      child.stderr.on('data', (d) => {
        err += d
      })
      child.on('exit', (code) => resolve({ code, err }))
    })

  it('explains what is missing or wrong and exits 2', async () => {
    expect(await run([])).toMatchObject({ code: 2, err: expect.stringContaining('Usage: agenticcp-agent run') })
    expect(await run(['run', '--token', 'x'])).toMatchObject({ code: 2, err: expect.stringContaining('--url') })
    expect(await run(['run', '--url', 'ftp://x', '--token', 'x'])).toMatchObject({
      code: 2,
      err: expect.stringContaining('http://'),
    })
    expect(
      await run(['run', '--url', 'http://127.0.0.1:9', '--slots', 'many'], { AGENTICCP_TOKEN: 'acpr_x' }),
    ).toMatchObject({ code: 2, err: expect.stringContaining('--slots') })
    const onCommandLine = await run(['run', '--url', 'http://127.0.0.1:9', '--token', 'not-a-token'])
    expect(onCommandLine).toMatchObject({
      code: 1,
      err: expect.stringContaining('neither a registration token'),
    })
    // A token among the arguments shows in ps: said once, with what to use instead.
    expect(onCommandLine.err.match(/--token on the command line can be read by every user/g)).toHaveLength(1)
    expect(onCommandLine.err).toMatch(/use --token-file FILE or the AGENTICCP_TOKEN environment variable/)
    const fromEnv = await run(['run', '--url', 'http://127.0.0.1:9'], { AGENTICCP_TOKEN: 'not-a-token' })
    expect(fromEnv).toMatchObject({ code: 1, err: expect.stringContaining('neither a registration token') })
    expect(fromEnv.err).not.toContain('--token on the command line')
  })

  it('refuses to pass the runner’s own settings to shell tasks (--pass-env AGENTICCP_*), or a name that is no variable', async () => {
    const base = ['run', '--url', 'http://127.0.0.1:9', '--allow-shell']
    const token = { AGENTICCP_TOKEN: 'acpr_x' }
    for (const name of ['AGENTICCP_TOKEN', 'agenticcp_token_file']) {
      const refused = await run([...base, '--pass-env', 'HTTPS_PROXY', '--pass-env', name], token)
      expect(refused).toMatchObject({
        code: 2,
        err: expect.stringContaining(`--pass-env ${name}: the runner's own settings`),
      })
    }
    expect(await run(base, { ...token, AGENTICCP_PASS_ENV: 'NO_PROXY,AGENTICCP_URL' })).toMatchObject({
      code: 2,
      err: expect.stringContaining('--pass-env AGENTICCP_URL'),
    })
    expect(await run([...base, '--pass-env', 'NOT-A-NAME'], token)).toMatchObject({
      code: 2,
      err: expect.stringContaining('--pass-env takes variable names (got "NOT-A-NAME")'),
    })
  })

  it.skipIf(!asRoot || !nobody)(
    'refuses --run-as for a user this host does not know, or in a runner that is not root',
    async () => {
      const base = ['run', '--url', 'http://127.0.0.1:9', '--allow-shell']
      const token = { AGENTICCP_TOKEN: 'acpr_x' }
      expect(await run([...base, '--run-as', 'no-such-user-here'], token)).toMatchObject({
        code: 2,
        err: expect.stringContaining('--run-as no-such-user-here: no such user on this host.'),
      })
      // The same command started as nobody: it cannot switch users. (Its build readable by nobody.)
      chmodSync(dirname(dirname(dirname(command()))), 0o755)
      const user = nobody as NonNullable<typeof nobody>
      expect(await run([...base, '--run-as', 'nobody'], token, user)).toMatchObject({
        code: 2,
        err: expect.stringContaining(
          `--run-as nobody: switching users needs a runner started as root (this one runs as uid ${user.uid})`,
        ),
      })
    },
  )

  it('refuses a --max-output that is not a size', async () => {
    const base = ['run', '--url', 'http://127.0.0.1:9', '--allow-shell']
    for (const v of ['0', 'lots', '1.5M', '-1']) {
      expect(await run([...base, `--max-output=${v}`], { AGENTICCP_TOKEN: 'acpr_x' })).toMatchObject({
        code: 2,
        err: expect.stringContaining(`--max-output is a size in bytes, e.g. 1048576 or 1M (got "${v}")`),
      })
    }
  })

  it('refuses a --max-processes that could not hold', async () => {
    const base = ['run', '--url', 'http://127.0.0.1:9', '--allow-shell']
    const token = { AGENTICCP_TOKEN: 'acpr_x' }
    expect(await run([...base, '--max-processes', '0'], token)).toMatchObject({
      code: 2,
      err: expect.stringContaining('--max-processes must be a whole number 1–1000000.'),
    })
    if (!asRoot || !nobody) return
    // Root is exempt from RLIMIT_NPROC: the limit needs the tasks to run as someone else.
    expect(await run([...base, '--max-processes', '50'], token)).toMatchObject({
      code: 2,
      err: expect.stringContaining('and root is exempt from it: give --run-as USER too.'),
    })
    // No prlimit on PATH (the user found in /etc/passwd, with no getent there either).
    expect(
      await run([...base, '--max-processes', '50', '--run-as', 'nobody'], { ...token, PATH: '/nonexistent' }),
    ).toMatchObject({ code: 2, err: expect.stringContaining('--max-processes needs the prlimit program (util-linux)') })
  })

  it('reads the token from --token-file (a mounted secret), and says what is wrong with the file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'acp-token-file-'))
    try {
      const file = join(dir, 'token')
      const missing = await run(['run', '--url', 'http://127.0.0.1:9', '--token-file', file])
      expect(missing).toMatchObject({
        code: 2,
        err: expect.stringContaining(`cannot read --token-file ${file}: ENOENT`),
      })
      writeFileSync(file, '\n')
      expect(await run(['run', '--url', 'http://127.0.0.1:9', '--token-file', file])).toMatchObject({
        code: 2,
        err: expect.stringContaining('is empty'),
      })
      expect(
        await run(['run', '--url', 'http://127.0.0.1:9', '--token-file', file], { AGENTICCP_TOKEN: 'acpr_x' }),
      ).toMatchObject({ code: 2, err: expect.stringContaining('not both') })
      // The file's content is the token (trailing newline trimmed): this one is refused as such.
      writeFileSync(file, 'not-a-token\n')
      expect(await run(['run', '--url', 'http://127.0.0.1:9'], { AGENTICCP_TOKEN_FILE: file })).toMatchObject({
        code: 1,
        err: expect.stringContaining('neither a registration token'),
      })
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe('a runner killed between spawning a command and recording it', () => {
  it('leaves a record made before the spawn, by which its restart finds and kills the command, and nothing else', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'act-groups-'))
    const taskId = '01a2380e-0000-7000-8000-000000000001'
    const runnerStart = procStat(process.pid)?.start as number
    recordGroup(dir, { pid: 0, start: runnerStart, taskId, attempt: 2 })
    const marked = spawn('sleep', ['300'], {
      detached: true,
      stdio: 'ignore',
      env: { PATH: process.env.PATH ?? '', AGENTICCP_TASK_ID: taskId, AGENTICCP_TASK_ATTEMPT: '2' },
    })
    // Another attempt's command, and one without marks: neither is the recorded command.
    const other = spawn('sleep', ['300'], {
      detached: true,
      stdio: 'ignore',
      env: { PATH: process.env.PATH ?? '', AGENTICCP_TASK_ID: taskId, AGENTICCP_TASK_ATTEMPT: '3' },
    })
    const plain = spawn('sleep', ['300'], { detached: true, stdio: 'ignore' })
    const alive = (pid: number | undefined) => {
      const s = procStat(pid as number)
      return s !== undefined && s.state !== 'Z'
    }
    try {
      await until('the commands started', () => [marked, other, plain].every((c) => alive(c.pid)))
      const killed = killLeftoverGroups(dir)
      expect(killed.map((g) => [g.pid, g.taskId, g.attempt])).toEqual([[0, taskId, 2]])
      await until('the recorded command gone', () => !alive(marked.pid))
      expect(alive(other.pid)).toBe(true)
      expect(alive(plain.pid)).toBe(true)
      expect(readdirSync(dir)).toEqual([])
    } finally {
      for (const c of [marked, other, plain]) c.kill('SIGKILL')
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
