/**
 * `npm run check:prod`: proves the production build runs without dev dependencies, with the
 * very commands the container image and docker-compose.yml run (Docker itself cannot run
 * on the build machines).
 *
 * 1. `npm run build`, then a copy made as the Dockerfile's runtime stage makes it: the files
 *    its COPY lines name, dist/ from the build, and its `npm ci --omit=dev …` (no tsx).
 * 2. The image's CMD starts there with the image's ENV, on a fresh Postgres database
 *    (CHECK_DATABASE_URL's server, default this machine's) and Redis (CHECK_REDIS_URL):
 *    it migrates, answers the image's HEALTHCHECK command and /api/v1/health/readiness.
 * 3. docker-compose.yml's `fleet-token` command writes a registration token; its `runner-1`
 *    and `runner-2` commands start two runners with it (`agenticcp-agent` resolved as the
 *    image's symlink does); a shell task runs to `completed` and its output is in the log.
 * 4. SIGTERM: both runners drain and exit 0, the server exits 0.
 * 5. Start time (to readiness) and resident memory (the whole process tree) of the built
 *    server against `tsx src/server.ts` (what `npm start` runs: two processes) and
 *    `node --import tsx src/server.ts` (one), alternating, medians of CHECK_START_RUNS (3).
 *
 * Only addresses and paths are rewritten (http://agent:8000, /fleet, /data, /app); every
 * program and flag is the file's own. Exit code 0 when all of it held.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import pg from 'pg'
import { parse as parseYaml } from 'yaml'

const root = resolve(import.meta.dirname, '..')
const adminUrl = process.env.CHECK_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const redisUrl = process.env.CHECK_REDIS_URL ?? 'redis://127.0.0.1:6379'
const startRuns = Number(process.env.CHECK_START_RUNS ?? 3)

const step = (text: string) => console.log(`-- ${text}`)
function fail(text: string): never {
  throw new Error(text)
}

// ---- what the Dockerfile and the compose file say ---------------------------------------

interface Image {
  /** Files the runtime stage copies from the context, and where (relative to WORKDIR). */
  copies: { from: string; to: string; fromBuild: boolean }[]
  installs: string[]
  env: Record<string, string>
  workdir: string
  cmd: string[]
  healthcheck: string[]
}

/** The runtime stage of the Dockerfile: the last FROM's instructions, continuations joined. */
function readDockerfile(): Image {
  const text = readFileSync(join(root, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ')
  const lines = text.split('\n').filter((l) => l.trim() !== '' && !l.trim().startsWith('#'))
  const last = lines.reduce((found, l, i) => (/^FROM\s/i.test(l) ? i : found), -1)
  const image: Image = { copies: [], installs: [], env: {}, workdir: '/', cmd: [], healthcheck: [] }
  for (const line of lines.slice(last + 1)) {
    const [, op = '', rest = ''] = /^(\w+)\s+(.*)$/.exec(line.trim()) ?? []
    switch (op.toUpperCase()) {
      case 'WORKDIR':
        image.workdir = rest.trim()
        break
      case 'ENV':
        for (const m of rest.matchAll(/(\w+)=(\S+)/g)) image.env[m[1] as string] = m[2] as string
        break
      case 'COPY': {
        const words = rest.trim().split(/\s+/)
        const fromBuild = words[0] === '--from=build'
        const paths = words.filter((w) => !w.startsWith('--'))
        const to = paths.pop() ?? fail('COPY without a destination')
        for (const from of paths) image.copies.push({ from, to, fromBuild })
        break
      }
      case 'RUN':
        for (const part of rest.split('&&').map((p) => p.trim()))
          if (part.startsWith('npm ci')) image.installs.push(part)
        break
      case 'CMD':
        image.cmd = JSON.parse(rest)
        break
      case 'HEALTHCHECK':
        image.healthcheck = JSON.parse(rest.slice(rest.indexOf('CMD') + 3).trim())
        break
    }
  }
  if (!image.cmd.length || !image.healthcheck.length || !image.installs.length) {
    fail('the Dockerfile runtime stage lacks CMD, HEALTHCHECK CMD or RUN npm ci')
  }
  return image
}

interface ComposeService {
  command?: string[]
}
const compose = parseYaml(readFileSync(join(root, 'docker-compose.yml'), 'utf8')) as {
  services: Record<string, ComposeService>
}
function composeCommand(service: string): string[] {
  const command = compose.services[service]?.command
  if (!Array.isArray(command)) fail(`docker-compose.yml: service ${service} has no command list`)
  return command
}

// ---- processes ---------------------------------------------------------------------------

interface Proc {
  child: ChildProcess
  output: () => string
  exited: Promise<number | null>
}
const running = new Set<ChildProcess>()

function start(cmd: string[], opts: { cwd: string; env: Record<string, string> }): Proc {
  const [bin = '', ...args] = cmd
  const child = spawn(bin, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] })
  running.add(child)
  let out = ''
  child.stdout?.on('data', (d) => {
    out += d
  })
  child.stderr?.on('data', (d) => {
    out += d
  })
  const exited = new Promise<number | null>((res) =>
    child.on('exit', (code) => {
      running.delete(child)
      res(code)
    }),
  )
  return { child, output: () => out, exited }
}

function run(
  cmd: string[],
  opts: { cwd: string; env: Record<string, string> },
): Promise<{ code: number | null; out: string }> {
  const p = start(cmd, opts)
  return p.exited.then((code) => ({ code, out: p.output() }))
}

async function until<T>(what: string, seconds: number, probe: () => Promise<T | undefined | false>): Promise<T> {
  const end = Date.now() + seconds * 1000
  for (;;) {
    const got = await probe().catch(() => undefined)
    if (got) return got
    if (Date.now() > end) fail(`timed out after ${seconds} s waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer()
    s.listen(0, '127.0.0.1', () => {
      const address = s.address()
      s.close(() => (typeof address === 'object' && address ? res(address.port) : rej(new Error('no port'))))
    })
  })
}

/** Resident memory of a process and all its descendants, in KiB. */
function treeRssKiB(pid: number): number {
  let kib = 0
  try {
    kib = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0)
    for (const tid of execFileSync('ls', [`/proc/${pid}/task`])
      .toString()
      .split('\n')
      .filter(Boolean)) {
      const children = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)
      for (const c of children) kib += treeRssKiB(Number(c))
    }
  } catch {
    // gone
  }
  return kib
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2
}

// ---- the check -----------------------------------------------------------------------------

const work = mkdtempSync(join(tmpdir(), 'acp-prod-'))
const dbName = `acp_prod_${process.pid}_${Date.now().toString(36)}`
const admin = new pg.Client({ connectionString: adminUrl })
await admin.connect()
const databaseUrl = (() => {
  const u = new URL(adminUrl)
  u.pathname = `/${dbName}`
  return u.toString()
})()

try {
  step('npm run build')
  execFileSync('npm', ['run', '-s', 'build'], { cwd: root, stdio: 'inherit' })

  const image = readDockerfile()
  const app = join(work, 'app')
  mkdirSync(app)
  step(`a copy as the Dockerfile's runtime stage makes it, in ${app}`)
  for (const c of image.copies) {
    const source = c.fromBuild ? join(root, c.from.replace(/^\/app\//, '')) : join(root, c.from)
    const target = c.to.endsWith('/') || c.to === './' ? join(app, c.from.split('/').pop() as string) : join(app, c.to)
    cpSync(source, target, { recursive: true })
  }
  for (const install of image.installs) {
    step(install)
    execFileSync('sh', ['-c', install], { cwd: app, stdio: ['ignore', 'ignore', 'inherit'] })
  }
  for (const dev of ['tsx', 'esbuild', 'typescript', 'vitest', 'wrangler']) {
    if (existsSync(join(app, 'node_modules', dev))) fail(`the production install holds the dev dependency ${dev}`)
  }
  if (existsSync(join(app, 'src'))) fail('the runtime copy holds src/: it must run from dist/ only')
  // The image's `ln -s /app/bin/agenticcp-agent.mjs /usr/local/bin/agenticcp-agent`.
  const binDir = join(work, 'bin')
  mkdirSync(binDir)
  symlinkSync(join(app, 'bin', 'agenticcp-agent.mjs'), join(binDir, 'agenticcp-agent'))
  const PATH = `${binDir}:${process.env.PATH ?? ''}`

  await admin.query(`CREATE DATABASE ${dbName}`)
  const port = await freePort()
  const secret = randomBytes(36).toString('base64url')
  const serverEnv = {
    PATH,
    ...image.env,
    HOST: '127.0.0.1',
    PORT: String(port),
    DATA_DIR: join(work, 'data'),
    DATABASE_URL: databaseUrl,
    REDIS_URL: redisUrl,
    SECRET_KEY: secret,
  }
  const base = `http://127.0.0.1:${port}`
  step(`${image.cmd.join(' ')} on a fresh database (${dbName})`)
  const started = Date.now()
  const server = start(image.cmd, { cwd: app, env: serverEnv })
  try {
    await until('readiness', 60, async () => {
      if (server.child.exitCode !== null) fail(`the server exited ${server.child.exitCode}:\n${server.output()}`)
      const res = await fetch(`${base}/api/v1/health/readiness`)
      return res.status === 200 && ((await res.json()) as { status: string }).status === 'ready'
    })
    console.log(`   ready in ${Date.now() - started} ms (migrations included)`)
    const health = await run(image.healthcheck, { cwd: app, env: serverEnv })
    if (health.code !== 0) fail(`the image's HEALTHCHECK command exited ${health.code}: ${health.out}`)
    step('HEALTHCHECK command: exit 0')

    // The compose file's commands, with its addresses and volumes pointed here.
    const fleet = join(work, 'fleet')
    mkdirSync(fleet)
    const rewrite = (cmd: string[], data: string) =>
      cmd.map((w) =>
        w
          .replace('http://agent:8000', base)
          .replace(/^\/fleet\//, `${fleet}/`)
          .replace(/^\/data\//, `${data}/`),
      )
    const tokenCmd = rewrite(composeCommand('fleet-token'), join(work, 'data'))
    step(`fleet-token: ${tokenCmd.join(' ')}`)
    const minted = await run(tokenCmd, { cwd: app, env: serverEnv })
    if (minted.code !== 0) fail(`fleet-token exited ${minted.code}: ${minted.out}`)
    const adminToken = await run(['node', 'dist/token.js', '--role', 'admin'], { cwd: app, env: serverEnv })
    if (adminToken.code !== 0) fail(`node dist/token.js --role admin exited ${adminToken.code}: ${adminToken.out}`)
    const auth = { authorization: `Bearer ${adminToken.out.trim()}`, 'content-type': 'application/json' }

    const runners: Proc[] = []
    for (const name of ['runner-1', 'runner-2']) {
      const cmd = rewrite(composeCommand(name), join(work, name))
      step(`${name}: ${cmd.join(' ')}`)
      // A runner container has the image's ENV too, and nothing from .env.
      runners.push(start(cmd, { cwd: app, env: { ...image.env, PATH, HOME: join(work, name) } }))
    }
    await until('both runners online', 60, async () => {
      for (const r of runners)
        if (r.child.exitCode !== null) fail(`a runner exited ${r.child.exitCode}:\n${r.output()}`)
      const res = await fetch(`${base}/api/v1/agents?status=online`, { headers: auth })
      const body = (await res.json()) as { items: { name: string }[] }
      const names = body.items.map((a) => a.name)
      return names.includes('runner-1') && names.includes('runner-2')
    })
    step('both runners registered with the one token and are online')

    const created = await fetch(`${base}/api/v1/tasks`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({
        name: 'prod-check',
        type: 'shell',
        requirements: { capabilities: ['shell'] },
        payload: { command: 'echo "built runner ran me on $(node --version)"' },
      }),
    })
    if (created.status !== 201) fail(`POST /tasks answered ${created.status}: ${await created.text()}`)
    const task = (await created.json()) as { id: string }
    let last = ''
    const done = await until('the shell task to end', 60, async () => {
      const res = await fetch(`${base}/api/v1/tasks/${task.id}`, { headers: auth })
      last = await res.text()
      const t = JSON.parse(last) as { status: string; result?: { outputTail?: string } }
      return ['completed', 'failed', 'cancelled', 'timed_out'].includes(t.status) ? t : undefined
    }).catch((err: Error) => {
      const outputs = runners.map((r, i) => `runner-${i + 1}:\n${r.output().slice(-3000)}`).join('\n')
      fail(`${err.message}; the task: ${last}\n${outputs}\nserver:\n${server.output().slice(-3000)}`)
    })
    if (done.status !== 'completed' || !done.result?.outputTail?.includes('built runner ran me on v')) {
      fail(`the shell task ended ${done.status}: ${JSON.stringify(done.result)}`)
    }
    const log = await fetch(`${base}/api/v1/tasks/${task.id}/logs`, { headers: { ...auth, accept: 'text/plain' } })
    const text = await log.text()
    if (!text.includes('built runner ran me on v')) fail(`the task's log lacks the output: ${text}`)
    step(`shell task ${task.id} completed; its output is in the task log`)

    for (const r of runners) r.child.kill('SIGTERM')
    const codes = await Promise.all(runners.map((r) => r.exited))
    if (codes.some((c) => c !== 0)) fail(`runners exited ${codes.join(', ')} on SIGTERM (want 0: drained)`)
    step('SIGTERM: both runners drained and exited 0')
  } finally {
    if (server.child.exitCode === null) server.child.kill('SIGTERM')
  }
  const serverCode = await server.exited
  if (serverCode !== 0) fail(`the server exited ${serverCode} on SIGTERM:\n${server.output().slice(-2000)}`)
  step('SIGTERM: the server exited 0')

  // ---- start time and memory: the build against tsx, on the now-migrated database ----------
  step(`start time and resident memory, ${startRuns} runs each, alternating`)
  const measure = async (label: string, cmd: string[], cwd: string) => {
    const p = await freePort()
    const t0 = process.hrtime.bigint()
    const proc = start(cmd, { cwd, env: { ...serverEnv, PORT: String(p), LOG_LEVEL: 'warn' } })
    try {
      await until(`${label} readiness`, 60, async () => {
        if (proc.child.exitCode !== null) fail(`${label} exited ${proc.child.exitCode}:\n${proc.output()}`)
        return (await fetch(`http://127.0.0.1:${p}/api/v1/health/readiness`)).status === 200
      })
      const ms = Number(process.hrtime.bigint() - t0) / 1e6
      const rss = treeRssKiB(proc.child.pid as number)
      return { ms, rss }
    } finally {
      proc.child.kill('SIGTERM')
      await proc.exited
    }
  }
  const built: { ms: number; rss: number }[] = []
  const viaTsx: { ms: number; rss: number }[] = []
  const viaImport: { ms: number; rss: number }[] = []
  for (let i = 0; i < startRuns; i++) {
    built.push(await measure('node dist/server.js', image.cmd, app))
    // `npm start`: the tsx command, which runs a second node process with its loader.
    viaTsx.push(await measure('tsx src/server.ts', [join(root, 'node_modules/.bin/tsx'), 'src/server.ts'], root))
    // The loader in one process (how the tests start servers).
    viaImport.push(await measure('node --import tsx', ['node', '--import', 'tsx', 'src/server.ts'], root))
  }
  const row = (label: string, xs: { ms: number; rss: number }[]) =>
    `   ${label.padEnd(22)} start ${median(xs.map((x) => x.ms)).toFixed(0)} ms (${xs.map((x) => x.ms.toFixed(0)).join(', ')}), resident ${(median(xs.map((x) => x.rss)) / 1024).toFixed(1)} MiB`
  console.log(row('node dist/server.js', built))
  console.log(row('tsx src/server.ts', viaTsx))
  console.log(row('node --import tsx …', viaImport))
  const ratio = (f: (x: { ms: number; rss: number }) => number) => median(built.map(f)) / median(viaTsx.map(f))
  console.log(`   built / tsx: start ${ratio((x) => x.ms).toFixed(2)}, memory ${ratio((x) => x.rss).toFixed(2)}`)
  console.log('== production build check passed')
} catch (err) {
  console.error(`production build check FAILED: ${err instanceof Error ? err.message : String(err)}`)
  process.exitCode = 1
} finally {
  for (const child of running) child.kill('SIGKILL')
  await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => {})
  await admin.end()
  rmSync(work, { recursive: true, force: true })
}
