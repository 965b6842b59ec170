/**
 * The container image and docker-compose.yml, checked without a Docker engine (none runs on
 * the build machines): the Dockerfile passes dockerfile-utils' validator and has what a
 * production image needs; the compose file passes `docker-compose config -q` (Debian's
 * docker-compose, installed by .ci/run) and wires the fleet docs/deploy.md promises, with no
 * secret in it. That the image's commands work is `npm run check:prod`'s part (CI runs it).
 */
import { execFile, spawnSync } from 'node:child_process'
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { validate } from 'dockerfile-utils'
import { describe, expect, it } from 'vitest'
import { parse } from 'yaml'

const dockerfile = readFileSync('Dockerfile', 'utf8')
/** Instructions of the last stage (the runtime image), continuation lines joined. */
const runtimeStage = (() => {
  const lines = dockerfile
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
  const from = lines.reduce((found, l, i) => (/^FROM\s/i.test(l) ? i : found), -1)
  return lines.slice(from)
})()
const instruction = (op: string) => runtimeStage.filter((l) => l.toUpperCase().startsWith(`${op} `))

describe('Dockerfile', () => {
  it('passes the validator with no problem reported', () => {
    expect(validate(dockerfile).map((d) => `line ${d.range.start.line + 1}: ${d.message}`)).toEqual([])
  })

  it('is multi-stage on an official Node 22 image (a supported line), and runs as a non-root user', () => {
    const froms = dockerfile.match(/^FROM\s+\S+/gim) ?? []
    expect(froms.length).toBeGreaterThanOrEqual(2)
    // node:${NODE_VERSION}-…, 22 by default (Node 20 is past its end of life; CI runs the code on 20).
    expect(dockerfile).toMatch(/^ARG NODE_VERSION=22$/m)
    // The code still runs on 20.12 and later (what CI runs; --build-arg NODE_VERSION=20).
    expect(JSON.parse(readFileSync('package.json', 'utf8')).engines.node).toBe('>=20.12')
    for (const f of froms) expect(f).toMatch(/^FROM\s+node:\$\{NODE_VERSION\}-bookworm-slim$/i)
    expect(runtimeStage[0]).toMatch(/^FROM node:\$\{NODE_VERSION\}-bookworm-slim AS runtime$/i)
    expect(instruction('USER')).toEqual(['USER node'])
  })

  it('holds production dependencies and dist/ only (no sources, no dev dependencies)', () => {
    expect(instruction('RUN').join('\n')).toMatch(/npm ci --omit=dev --ignore-scripts/)
    const copied = instruction('COPY').map((l) => l.replace(/^COPY\s+/i, ''))
    expect(copied).toContain('--from=build /app/dist ./dist')
    for (const c of copied) expect(c).not.toMatch(/\bsrc\b|\btest\b|^\.\s/)
  })

  it('declares port 8000, /data as a volume, SIGTERM, a liveness health check and the server as its command', () => {
    expect(instruction('EXPOSE')).toEqual(['EXPOSE 8000'])
    expect(instruction('VOLUME')).toEqual(['VOLUME ["/data"]'])
    expect(instruction('STOPSIGNAL')).toEqual(['STOPSIGNAL SIGTERM'])
    const [health] = instruction('HEALTHCHECK')
    expect(health).toContain('/api/v1/health/liveness')
    expect(JSON.parse(instruction('CMD')[0]?.replace(/^CMD\s+/, '') ?? '')).toEqual(['node', 'dist/server.js'])
    expect(runtimeStage.join('\n')).toMatch(/DATA_DIR=\/data/)
    expect(runtimeStage.join('\n')).toMatch(/ln -s \/app\/bin\/agenticcp-agent\.mjs \/usr\/local\/bin\/agenticcp-agent/)
  })

  it('keeps secrets and local state out of the build context', () => {
    const ignored = readFileSync('.dockerignore', 'utf8').split('\n')
    for (const path of ['.env', '.dev.vars', '.data', 'node_modules', '.git']) expect(ignored).toContain(path)
  })
})

interface Service {
  image?: string
  command?: string[]
  env_file?: string | string[]
  environment?: Record<string, string>
  depends_on?: Record<string, { condition: string }>
  healthcheck?: { test?: string[]; disable?: boolean }
  volumes?: string[]
  ports?: string[]
}
const composeText = readFileSync('docker-compose.yml', 'utf8')
const compose = parse(composeText, { merge: true }) as { services: Record<string, Service> }

describe('docker-compose.yml', () => {
  const s = compose.services

  it('runs the service as "agent" (docker-compose logs -f agent), Postgres 15 and Redis 7 with health checks', () => {
    expect(Object.keys(s).sort()).toEqual(['agent', 'fleet-token', 'postgres', 'redis', 'runner-1', 'runner-2'])
    expect(s.postgres?.image).toBe('postgres:15')
    expect(s.redis?.image).toBe('redis:7')
    expect(s.postgres?.healthcheck?.test?.join(' ')).toContain('pg_isready')
    expect(s.redis?.healthcheck?.test?.join(' ')).toContain('redis-cli ping')
    expect(s.agent?.depends_on).toEqual({
      postgres: { condition: 'service_healthy' },
      redis: { condition: 'service_healthy' },
    })
    expect(s.agent?.ports).toEqual(['127.0.0.1:8000:8000'])
    expect(s.agent?.environment?.DATABASE_URL).toMatch(
      /^postgres:\/\/\w+:\$\{POSTGRES_PASSWORD:\?[^}]+\}@postgres:5432\/\w+$/,
    )
    expect(s.agent?.environment?.REDIS_URL).toBe('redis://redis:6379')
  })

  it('builds the image in one service only (Compose v2 would export one tag from several builds)', () => {
    const raw = parse(composeText) as { services: Record<string, { build?: string }> }
    expect(Object.entries(raw.services).flatMap(([name, svc]) => ('build' in svc ? [name] : []))).toEqual(['agent'])
    for (const name of ['agent', 'fleet-token', 'runner-1', 'runner-2']) expect(s[name]?.image).toBe(s.agent?.image)
  })

  it('joins two runners with a registration token the server issues once it is healthy', () => {
    expect(s['fleet-token']?.depends_on).toEqual({ agent: { condition: 'service_healthy' } })
    const token = s['fleet-token']?.command ?? []
    expect(token.slice(0, 3)).toEqual(['node', 'dist/token.js', '--registration'])
    const out = token[token.indexOf('--out') + 1]
    for (const name of ['runner-1', 'runner-2']) {
      const runner = s[name] as Service
      expect(runner.depends_on).toEqual({ 'fleet-token': { condition: 'service_completed_successfully' } })
      const cmd = runner.command ?? []
      expect(cmd.slice(0, 2)).toEqual(['agenticcp-agent', 'run'])
      expect(cmd[cmd.indexOf('--token-file') + 1]).toBe(out)
      expect(cmd[cmd.indexOf('--url') + 1]).toBe('http://agent:8000')
      expect(cmd[cmd.indexOf('--name') + 1]).toBe(name)
      // Its identity survives a restart: the state dir is on the runner's own volume.
      const state = cmd[cmd.indexOf('--state-dir') + 1] ?? ''
      expect(runner.volumes).toContain(`${name}:/data`)
      expect(state.startsWith('/data/')).toBe(true)
      // Runners never get the server's secrets.
      expect(runner.env_file).toBeUndefined()
      expect(runner.healthcheck?.disable).toBe(true)
    }
  })

  it('holds no secret: SECRET_KEY and passwords come from .env, and are required', () => {
    const keys = [...composeText.matchAll(/^\s*SECRET_KEY\s*:\s*(.+)$/gm)].map((m) => m[1])
    expect(keys.length).toBe(2) // agent and fleet-token: a missing key stops `up`, not a restart loop
    for (const k of keys) expect(k).toBe(`\${SECRET_KEY:?set SECRET_KEY in .env}`)
    const passwords = [...composeText.matchAll(/^\s*\w*PASSWORD\s*:\s*(.+)$/gm)].map((m) => m[1])
    expect(passwords.length).toBeGreaterThan(0)
    for (const p of passwords) expect(p).toMatch(/^\$\{POSTGRES_PASSWORD:\?/)
    expect(s.agent?.env_file).toBe('.env')
    const example = readFileSync('.env.example', 'utf8')
    expect(example).toMatch(/^SECRET_KEY=$/m)
    expect(example).toMatch(/^POSTGRES_PASSWORD=$/m)
  })

  const run = promisify(execFile)
  // On PATH (asking it for its version would cost a Python start at every collection).
  const haveCompose = spawnSync('sh', ['-c', 'command -v docker-compose'], { stdio: 'ignore' }).status === 0
  if (!haveCompose && !process.env.CI) {
    console.warn(
      'skipped: docker-compose config -q: docker-compose not found on PATH (Debian: apt-get install docker-compose)',
    )
  }
  // CI installs Debian's docker-compose; elsewhere this check runs where it is installed.
  it.runIf(haveCompose || process.env.CI)(
    'passes docker-compose config -q, and refuses to start without .env',
    async () => {
      // Two copies, one with POSTGRES_PASSWORD unset; each docker-compose (a Python process,
      // ~1 s to start) runs at the same time.
      const dir = (env: string) => {
        const d = mkdtempSync(join(tmpdir(), 'acp-compose-'))
        copyFileSync('docker-compose.yml', join(d, 'docker-compose.yml'))
        writeFileSync(join(d, '.env'), env)
        return d
      }
      const missingDir = dir('SECRET_KEY=x\n')
      const goodDir = dir('SECRET_KEY=0123456789abcdef0123456789abcdef\nPOSTGRES_PASSWORD=abc123\n')
      const compose = (cwd: string, args: string[]) => run('docker-compose', args, { cwd, encoding: 'utf8' })
      try {
        const [missing, quiet, full] = await Promise.all([
          compose(missingDir, ['config', '-q']).then(
            ({ stderr }) => ({ code: 0, stderr }),
            (e: { code: number; stderr: string }) => e,
          ),
          compose(goodDir, ['config', '-q']),
          compose(goodDir, ['config']),
        ])
        // POSTGRES_PASSWORD unset: the file says what to set.
        expect(missing.code).not.toBe(0)
        expect(missing.stderr).toContain('set POSTGRES_PASSWORD in .env')
        expect(quiet.stdout).toBe('')
        const resolved = parse(full.stdout) as { services: Record<string, Service> }
        expect(resolved.services.agent?.environment?.DATABASE_URL).toBe(
          'postgres://agenticcp:abc123@postgres:5432/agenticcp',
        )
      } finally {
        for (const d of [missingDir, goodDir]) rmSync(d, { recursive: true, force: true })
      }
    },
  )
})
