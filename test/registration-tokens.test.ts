import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { type AddressInfo, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { eq } from 'drizzle-orm'
import { sign } from 'hono/jwt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { registrationTokens } from '../src/db/schema'
import { runSweep } from '../src/services/scheduler'
import { createHarness, freshPostgresUrl, type Harness, onPostgres, SECRET, unique } from './harness'
import { builtFile, migratedDataDir, startServer, stopped } from './spawn'

let h: Harness
beforeAll(async () => {
  // The default lifetime (a day) applies: registration tokens may live up to a year by
  // default, whatever MAX_TOKEN_LIFETIME_MINUTES (60) says of JWTs.
  h = await createHarness()
})
afterAll(async () => {
  await h.close()
})

const shape = /^acpr_[A-Za-z0-9_-]{43}$/
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex')

async function makeToken(body: Record<string, unknown> = {}, token?: string) {
  const res = await h.call('POST', '/api/v1/registration-tokens', { body, ...(token ? { token } : {}) })
  if (res.status !== 201) throw new Error(`token create failed: ${res.status} ${JSON.stringify(res.body)}`)
  return res.body as { id: string; token: string; uses: number; maxUses: number | null; labels: object }
}

/** POST /agents with a registration token (labels scoped to the running test). */
function register(token: string, body: Record<string, unknown> = {}) {
  const labels = { scope: h.scope(), ...(body.labels as Record<string, string> | undefined) }
  return h.call('POST', '/api/v1/agents', {
    token,
    body: { name: unique('self'), provider: 'aws', region: 'us-east-1', ...body, labels },
  })
}

async function stored(id: string) {
  const [row] = await h.database.db.select().from(registrationTokens).where(eq(registrationTokens.id, id))
  return row
}

describe('POST/GET/DELETE /api/v1/registration-tokens', () => {
  it('makes a token: the secret once, no-store, a day by default, unlimited uses', async () => {
    const res = await h.call('POST', '/api/v1/registration-tokens', {
      body: { description: 'use1 pool', labels: { pool: 'use1' } },
    })
    expect(res.status).toBe(201)
    expect(res.headers.get('cache-control')).toBe('no-store')
    expect(res.body.token).toMatch(shape)
    expect(res.body).toMatchObject({
      description: 'use1 pool',
      labels: { pool: 'use1' },
      maxUses: null,
      uses: 0,
      expired: false,
      createdBy: expect.stringMatching(/^test-admin-/),
      createdAt: h.clock.now().toISOString(),
      expiresAt: new Date(h.clock.now().getTime() + 1440 * 60_000).toISOString(),
    })
    const explicit = await makeToken({ expiresInMinutes: 90, maxUses: 3 })
    expect(explicit).toMatchObject({ maxUses: 3, uses: 0, description: null, labels: {} })
    expect((explicit as unknown as { expiresAt: string }).expiresAt).toBe(
      new Date(h.clock.now().getTime() + 90 * 60_000).toISOString(),
    )
    // Every token is a fresh secret.
    expect(explicit.token).not.toBe(res.body.token)
  })

  it('caps the default lifetime at MAX_REGISTRATION_TOKEN_LIFETIME_MINUTES and refuses more', async () => {
    const short = await createHarness({ MAX_REGISTRATION_TOKEN_LIFETIME_MINUTES: '60' }, h.database)
    try {
      const res = await short.call('POST', '/api/v1/registration-tokens', { body: {} })
      expect(res.status).toBe(201)
      expect(res.body.expiresAt).toBe(new Date(short.clock.now().getTime() + 60 * 60_000).toISOString())
      const over = await short.call('POST', '/api/v1/registration-tokens', { body: { expiresInMinutes: 61 } })
      expect(over.status).toBe(422)
      expect(over.body.errors).toEqual([
        { path: 'body.expiresInMinutes', message: 'must be at most 60 (MAX_REGISTRATION_TOKEN_LIFETIME_MINUTES)' },
      ])
    } finally {
      await short.kv.close()
    }
  })

  it('refuses invalid fields with 422, listing each', async () => {
    for (const body of [
      { expiresInMinutes: 0 },
      { expiresInMinutes: 1.5 },
      { expiresInMinutes: 525_601 },
      { maxUses: 0 },
      { maxUses: 'ten' },
      { description: 'x'.repeat(1001) },
      { labels: { 'bad key!': 'x' } },
      { labels: 'zone=a' },
      { unknown: true },
    ]) {
      const res = await h.call('POST', '/api/v1/registration-tokens', { body })
      expect(res.status, JSON.stringify(body)).toBe(422)
      expect(res.body.code).toBe('validation_failed')
      expect(res.body.errors.length).toBeGreaterThan(0)
    }
  })

  it('is for admins and operators only', async () => {
    const op = await h.token('operator')
    const made = await makeToken({}, op)
    expect((await stored(made.id))?.createdBy).toMatch(/^test-operator-/)
    expect((await h.call('GET', '/api/v1/registration-tokens', { token: op })).status).toBe(200)
    const viewer = await h.token('viewer')
    const agent = await h.agent()
    for (const token of [viewer, agent.token]) {
      for (const [method, path, body] of [
        ['POST', '/api/v1/registration-tokens', {}],
        ['GET', '/api/v1/registration-tokens', undefined],
        ['DELETE', `/api/v1/registration-tokens/${made.id}`, undefined],
      ] as const) {
        const res = await h.call(method, path, { token, body })
        expect(res.status, `${method} ${path}`).toBe(403)
        expect(res.body.code).toBe('forbidden')
      }
    }
    expect(await stored(made.id)).toBeDefined()
  })

  it('lists them newest first, with uses and expiry, never the secret', async () => {
    const a = await makeToken({ description: unique('first'), maxUses: 2 })
    const b = await makeToken({ description: unique('second') })
    expect((await register(a.token)).status).toBe(201)
    const res = await h.call('GET', '/api/v1/registration-tokens?limit=100')
    expect(res.status).toBe(200)
    const ids = res.body.items.map((t: { id: string }) => t.id)
    expect(ids.indexOf(b.id)).toBeLessThan(ids.indexOf(a.id))
    expect(ids.indexOf(a.id)).toBeGreaterThanOrEqual(0)
    const listed = res.body.items.find((t: { id: string }) => t.id === a.id)
    expect(listed).toEqual({
      id: a.id,
      description: expect.stringMatching(/^first-/),
      labels: {},
      maxUses: 2,
      uses: 1,
      expiresAt: expect.any(String),
      expired: false,
      createdBy: expect.stringMatching(/^test-admin-/),
      createdAt: expect.any(String),
    })
    const text = JSON.stringify(res.body)
    expect(text).not.toContain(a.token)
    expect(text).not.toContain(b.token)
    expect(text).not.toContain('acpr_')
    expect(text).not.toContain(sha256(a.token))

    // Paging, as the other lists page.
    const first = await h.call('GET', '/api/v1/registration-tokens?limit=1')
    expect(first.body.items).toHaveLength(1)
    expect(first.body.nextCursor).toEqual(expect.any(String))
    const second = await h.call('GET', `/api/v1/registration-tokens?limit=1&cursor=${first.body.nextCursor}`)
    expect(second.body.items[0].id).not.toBe(first.body.items[0].id)
  })

  it('stores only the SHA-256 of the secret', async () => {
    const t = await makeToken({ description: 'hash only' })
    const row = await stored(t.id)
    expect(row?.tokenHash).toBe(sha256(t.token))
    expect(JSON.stringify(row)).not.toContain(t.token.slice(5))
  })

  it('revokes with DELETE (204), then 404; a malformed id is 422', async () => {
    const t = await makeToken()
    const del = await h.call('DELETE', `/api/v1/registration-tokens/${t.id}`)
    expect(del.status).toBe(204)
    expect(await stored(t.id)).toBeUndefined()
    const again = await h.call('DELETE', `/api/v1/registration-tokens/${t.id}`)
    expect(again.status).toBe(404)
    expect(again.headers.get('content-type')).toContain('application/problem+json')
    expect(again.body.code).toBe('not_found')
    expect((await h.call('DELETE', '/api/v1/registration-tokens/not-a-uuid')).status).toBe(422)
  })
})

describe('registering with a registration token', () => {
  it('registers an agent (201) that then works with its own token; one use taken', async () => {
    const t = await makeToken({ maxUses: 5 })
    const res = await register(t.token, { capabilities: ['gpu'], maxConcurrentTasks: 3 })
    expect(res.status).toBe(201)
    expect(res.headers.get('cache-control')).toBe('no-store')
    expect(res.headers.get('location')).toBe(`/api/v1/agents/${res.body.id}`)
    expect(res.body).toMatchObject({ status: 'offline', capabilities: ['gpu'], maxConcurrentTasks: 3, version: 1 })
    expect(res.body.token).toMatch(/^ey/)
    const hb = await h.call('POST', '/api/v1/agents/heartbeat', {
      token: res.body.token,
      body: { agentId: res.body.id },
    })
    expect(hb.status).toBe(200)
    expect(hb.body.agent.status).toBe('online')
    expect((await stored(t.id))?.uses).toBe(1)
    const [ev] = await h.events({ agentId: res.body.id })
    expect(ev?.type).toBe('agent.registered')
    expect(ev?.data).toMatchObject({ registrationTokenId: t.id, takeover: false })
  })

  it('can do nothing else: every other route refuses it', async () => {
    const t = await makeToken()
    const a = await h.agent()
    const task = await h.pendingTask()
    const calls: [string, string, unknown][] = [
      ['GET', '/api/v1/agents', undefined],
      ['GET', `/api/v1/agents/${a.id}`, undefined],
      ['PUT', `/api/v1/agents/${a.id}`, { name: a.name, provider: 'aws' }],
      ['PATCH', `/api/v1/agents/${a.id}/status`, { status: 'draining' }],
      ['DELETE', `/api/v1/agents/${a.id}`, undefined],
      ['POST', `/api/v1/agents/${a.id}/token`, undefined],
      ['POST', '/api/v1/agents/heartbeat', { agentId: a.id }],
      ['GET', `/api/v1/agents/${a.id}/events`, undefined],
      ['GET', '/api/v1/agents/statistics', undefined],
      ['POST', '/api/v1/tasks', { name: 'x', type: 'y' }],
      ['POST', '/api/v1/tasks/batch', { tasks: [{ name: 'x', type: 'y' }] }],
      ['GET', '/api/v1/tasks', undefined],
      ['GET', `/api/v1/tasks/${task.id}`, undefined],
      ['PUT', `/api/v1/tasks/${task.id}`, { name: 'x', type: 'y' }],
      ['PATCH', `/api/v1/tasks/${task.id}/status`, { status: 'running', attempt: 0 }],
      ['POST', `/api/v1/tasks/${task.id}/cancel`, undefined],
      ['POST', `/api/v1/tasks/${task.id}/retry`, undefined],
      ['DELETE', `/api/v1/tasks/${task.id}`, undefined],
      ['POST', '/api/v1/tasks/execute', { taskId: task.id }],
      ['GET', `/api/v1/tasks/${task.id}/events`, undefined],
      ['GET', '/api/v1/tasks/statistics', undefined],
      ['GET', '/api/v1/events', undefined],
      ['POST', '/api/v1/scheduler/sweep', undefined],
      ['GET', '/api/v1/scheduler/status', undefined],
      ['POST', '/api/v1/registration-tokens', {}],
      ['GET', '/api/v1/registration-tokens', undefined],
      ['DELETE', `/api/v1/registration-tokens/${t.id}`, undefined],
    ]
    for (const [method, path, body] of calls) {
      const res = await h.call(method, path, { token: t.token, body })
      expect(res.status, `${method} ${path}`).toBe(403)
      expect(res.body.code, `${method} ${path}`).toBe('forbidden')
      expect(res.body.detail).toMatch(/only register an agent/)
    }
    // Nothing changed, nothing was used.
    expect((await h.call('GET', `/api/v1/agents/${a.id}`)).body).toMatchObject({ status: 'online', version: a.version })
    expect((await h.call('GET', `/api/v1/tasks/${task.id}`)).body.status).toBe('pending')
    expect((await stored(t.id))?.uses).toBe(0)
    // The event stream too.
    const stream = await h.app.request('/api/v1/events', {
      headers: { authorization: `Bearer ${t.token}`, accept: 'text/event-stream' },
    })
    expect(stream.status).toBe(403)
  })

  it('refuses unknown, malformed and JWT-claimed registration tokens with 401', async () => {
    const unknown = `acpr_${'A'.repeat(43)}`
    const res = await register(unknown)
    expect(res.status).toBe(401)
    expect(res.body).toMatchObject({ code: 'unauthorized', detail: 'Unknown or revoked registration token.' })
    expect(res.headers.get('www-authenticate')).toBe('Bearer')
    for (const bad of ['acpr_short', `acpr_${'A'.repeat(44)}`, `acpr_${'A'.repeat(42)}!`]) {
      const r = await register(bad)
      expect(r.status, bad).toBe(401)
      expect(r.body.detail).toMatch(/43 base64url characters/)
    }
    // No JWT can claim the role, whoever signed it.
    const forged = await sign({ sub: 'x', role: 'registration', exp: Math.floor(Date.now() / 1000) + 60 }, SECRET)
    const f = await register(forged)
    expect(f.status).toBe(401)
    expect(f.body.detail).toMatch(/lacks valid sub, role or exp/)
  })

  it('enforces maxUses, and says so', async () => {
    const t = await makeToken({ maxUses: 2 })
    expect((await register(t.token)).status).toBe(201)
    expect((await register(t.token)).status).toBe(201)
    const third = await register(t.token)
    expect(third.status).toBe(401)
    expect(third.body.detail).toBe('This registration token is used up (2 of 2 registrations).')
    expect((await stored(t.id))?.uses).toBe(2)
  })

  it('two racing registrations with maxUses 1: exactly one wins', async () => {
    for (let round = 0; round < 5; round++) {
      const t = await makeToken({ maxUses: 1 })
      const results = await Promise.all([register(t.token), register(t.token), register(t.token)])
      const statuses = results.map((r) => r.status).sort()
      expect(statuses, JSON.stringify(results.map((r) => r.body.detail))).toEqual([201, 401, 401])
      expect((await stored(t.id))?.uses).toBe(1)
    }
  })

  it('an expired token is refused (401) and listed as expired', async () => {
    const t = await makeToken({ expiresInMinutes: 1 })
    h.clock.advance(61_000)
    const res = await register(t.token)
    expect(res.status).toBe(401)
    expect(res.body.detail).toMatch(/^This registration token expired at /)
    const list = await h.call('GET', '/api/v1/registration-tokens?limit=100')
    expect(list.body.items.find((x: { id: string }) => x.id === t.id)).toMatchObject({ expired: true, uses: 0 })
  })

  it('a revoked token is refused at once', async () => {
    const t = await makeToken()
    expect((await register(t.token)).status).toBe(201)
    expect((await h.call('DELETE', `/api/v1/registration-tokens/${t.id}`)).status).toBe(204)
    const res = await register(t.token)
    expect(res.status).toBe(401)
    expect(res.body.detail).toBe('Unknown or revoked registration token.')
  })

  it('a registration that fails (409, 422) uses nothing', async () => {
    const t = await makeToken({
      maxUses: 1,
      labels: Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`t${i}`, 'x'])),
    })
    const live = await h.agent()
    const taken = await register(t.token, { name: live.name })
    expect(taken.status).toBe(409)
    expect(taken.body.code).toBe('name_taken')
    const invalid = await register(t.token, { provider: 'mars' })
    expect(invalid.status).toBe(422)
    // 20 labels of the token and 20 asked for: more than an agent may carry.
    const tooMany = await register(t.token, {
      labels: Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`b${i}`, 'y'])),
    })
    expect(tooMany.status).toBe(422)
    expect(tooMany.body.errors).toEqual([
      { path: 'body.labels', message: "with the registration token's labels, more than 32" },
    ])
    expect((await stored(t.id))?.uses).toBe(0)
    expect((await register(t.token)).status).toBe(201)
    expect((await stored(t.id))?.uses).toBe(1)
  })

  it("merges the token's labels over the ones asked for: the token's win", async () => {
    const t = await makeToken({ labels: { zone: 'a', tier: 'gold' } })
    const res = await register(t.token, { labels: { zone: 'b', rack: '7' } })
    expect(res.status).toBe(201)
    expect(res.body.labels).toEqual({ scope: h.scope(), zone: 'a', tier: 'gold', rack: '7' })
  })
})

describe('taking over an offline agent’s name', () => {
  it('keeps the id, replaces the settings, revokes the old tokens, says takeover; its tasks were requeued', async () => {
    const t = await makeToken({ labels: { pool: 'p1' } })
    const name = unique('host')
    const first = await register(t.token, { name, capabilities: ['cpu'], maxConcurrentTasks: 1 })
    expect(first.status).toBe(201)
    const old = first.body.token
    const hb = await h.call('POST', '/api/v1/agents/heartbeat', { token: old, body: { agentId: first.body.id } })
    expect(hb.body.agent.status).toBe('online')
    const task = await h.assignedTask(first.body.id)
    expect(task.status).toBe('assigned')

    // The process dies: the sweep finds it silent, sets it offline and requeues its task.
    h.clock.advance((h.config.heartbeatTimeoutSeconds + 1) * 1000)
    const sweep = await h.call('POST', '/api/v1/scheduler/sweep')
    expect(sweep.status).toBe(200)
    const before = (await h.call('GET', `/api/v1/agents/${first.body.id}`)).body
    expect(before).toMatchObject({ status: 'offline', activeTasks: 0 })
    const requeued = (await h.call('GET', `/api/v1/tasks/${task.id}`)).body
    expect(requeued).toMatchObject({ status: 'pending', agentId: null })

    // Its replacement registers under the same name.
    const res = await register(t.token, {
      name,
      provider: 'gcp',
      region: 'europe-west1',
      description: 'replacement',
      capabilities: ['gpu'],
      maxConcurrentTasks: 4,
      labels: { pool: 'mine', extra: 'x' },
    })
    expect(res.status).toBe(200)
    expect(res.headers.get('cache-control')).toBe('no-store')
    expect(res.headers.get('location')).toBe(`/api/v1/agents/${first.body.id}`)
    expect(res.headers.get('etag')).toBe(`"${before.version + 1}"`)
    expect(res.body).toMatchObject({
      id: first.body.id,
      name,
      provider: 'gcp',
      region: 'europe-west1',
      description: 'replacement',
      capabilities: ['gpu'],
      maxConcurrentTasks: 4,
      labels: { scope: h.scope(), pool: 'p1', extra: 'x' },
      status: 'offline',
      version: before.version + 1,
    })
    expect(res.body.token).not.toBe(old)
    expect((await stored(t.id))?.uses).toBe(2)

    // The old process is locked out; the new one is in.
    const oldRead = await h.call('GET', `/api/v1/agents/${first.body.id}`, { token: old })
    expect(oldRead.status).toBe(401)
    expect(oldRead.body.detail).toMatch(/replaced by a newer one/)
    const oldBeat = await h.call('POST', '/api/v1/agents/heartbeat', { token: old, body: { agentId: first.body.id } })
    expect(oldBeat.status).toBe(401)
    const oldReport = await h.report(task.id, old, { status: 'running', attempt: task.attempt })
    expect(oldReport.status).toBe(401)
    const beat = await h.call('POST', '/api/v1/agents/heartbeat', {
      token: res.body.token,
      body: { agentId: first.body.id },
    })
    expect(beat.status).toBe(200)
    expect(beat.body.agent.status).toBe('online')
    // The requeued task may come back to the same agent, but as a new attempt: the old one is fenced.
    expect(beat.body.assignments.map((x: { id: string; attempt: number }) => [x.id, x.attempt])).toEqual([
      [task.id, task.attempt + 1],
    ])

    const evs = (await h.events({ agentId: first.body.id })).filter((e) => e.type === 'agent.registered')
    expect(evs.map((e) => e.data)).toEqual([
      expect.objectContaining({ takeover: false, registrationTokenId: t.id }),
      expect.objectContaining({ takeover: true, registrationTokenId: t.id, name, provider: 'gcp' }),
    ])
  })

  it('also takes over an agent registered but never heard from', async () => {
    const name = unique('never')
    const made = await h.agent({ name }, { online: false })
    const t = await makeToken()
    const res = await register(t.token, { name })
    expect(res.status).toBe(200)
    expect(res.body.id).toBe(made.id)
    expect((await h.call('GET', `/api/v1/agents/${made.id}`, { token: made.token })).status).toBe(401)
  })

  it('a name whose agent is online (or in any status but offline) stays 409, and nothing changes', async () => {
    const t = await makeToken()
    const live = await h.agent()
    const res = await register(t.token, { name: live.name, provider: 'gcp' })
    expect(res.status).toBe(409)
    expect(res.body.code).toBe('name_taken')
    expect(res.body.detail).toMatch(/is online; only an offline agent's name can be taken over/)
    const after = await h.call('GET', `/api/v1/agents/${live.id}`, { token: live.token })
    expect(after.status).toBe(200)
    expect(after.body).toMatchObject({ provider: 'aws', version: live.version })
    const draining = await h.agent()
    await h.call('PATCH', `/api/v1/agents/${draining.id}/status`, { body: { status: 'maintenance' } })
    expect((await register(t.token, { name: draining.name })).status).toBe(409)
    expect((await stored(t.id))?.uses).toBe(0)
  })

  it('an admin registering an existing offline name still gets 409', async () => {
    const name = unique('adm')
    const made = await h.agent({ name }, { online: false })
    const res = await h.call('POST', '/api/v1/agents', { body: { name, provider: 'aws' } })
    expect(res.status).toBe(409)
    expect(res.body.code).toBe('name_taken')
    expect((await h.call('GET', `/api/v1/agents/${made.id}`, { token: made.token })).status).toBe(200)
  })
})

describe('housekeeping', () => {
  it('the sweep prunes tokens expired for over 7 days', async () => {
    const own = await createHarness({ MAX_TOKEN_LIFETIME_MINUTES: '10080' })
    try {
      const make = async (minutes: number) =>
        (await own.call('POST', '/api/v1/registration-tokens', { body: { expiresInMinutes: minutes } })).body.id
      const short = await make(1)
      const long = await make(10080)
      const deps = { db: own.database.db, clock: own.clock, config: own.config, kv: own.kv }
      const ids = async () => (await own.database.db.select().from(registrationTokens)).map((r) => r.id).sort()
      await runSweep(deps, new Date(own.clock.now().getTime() + 6 * 86_400_000))
      expect(await ids()).toEqual([short, long].sort())
      await runSweep(deps, new Date(own.clock.now().getTime() + 7 * 86_400_000 + 120_000))
      expect(await ids()).toEqual([long])
    } finally {
      await own.close()
    }
  })
})

const registerWith = (url: string, token: string, name: string) =>
  fetch(`${url}/api/v1/agents`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name, provider: 'onprem' }),
  })

describe('npm run token -- --registration', () => {
  const run = promisify(execFile)
  const env = { PATH: process.env.PATH ?? '', DATA_DIR: '/nonexistent-act-data', SECRET_KEY: SECRET }
  /**
   * scripts/token.ts as `npm run token` runs it, without npm's second or so nor tsx's: the
   * run's build of it (test/spawn.ts builtFile). The command as users type it runs below too.
   */
  const script = (args: string[]) => run(process.execPath, [builtFile('token'), ...args], { env })
  type Failed = { code: number; stdout: string; stderr: string }

  it('asks the running server for a token and prints only the token', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'act-token-out-'))
    // What needs no server runs while it starts: --role admin is unchanged, and --out says
    // when it cannot write.
    const offline = Promise.all([
      script(['--role', 'admin']),
      script(['--role', 'admin', '--out', join(dir, 'missing', 'x')]).catch((e: Failed) => e),
    ])
    offline.catch(() => {}) // awaited below; a failure before then is the one to report
    const s = startServer({
      ...(onPostgres() ? { DATABASE_URL: await freshPostgresUrl() } : { DATA_DIR: migratedDataDir() }),
      SECRET_KEY: SECRET,
      ENVIRONMENT: 'test',
      SWEEP_INTERVAL_SECONDS: '0',
    })
    try {
      const url = await s.listening
      const file = join(dir, 'registration-token')
      const [{ stdout }, bad, written] = await Promise.all([
        // The command as users type it (`TOKEN=$(npm run -s token -- --registration)`).
        run(
          'npm',
          [
            'run',
            '-s',
            'token',
            '--',
            '--registration',
            '--uses',
            '1',
            '--minutes',
            '30',
            '--description',
            'from the script',
            '--labels',
            'zone=a,tier=b',
            '--url',
            url,
          ],
          { env },
        ),
        script(['--registration', '--minutes', '999999', '--url', url]).catch((e: Failed) => e),
        // --out writes the token to a file (mode 0600) for a runner's --token-file, and prints nothing.
        script(['--registration', '--url', url, '--out', file]),
      ])
      expect(stdout).toMatch(/^acpr_[A-Za-z0-9_-]{43}\n$/)
      const token = stdout.trim()
      const reg = (name: string) => registerWith(url, token, name)
      const res = await reg('from-script')
      expect(res.status).toBe(201)
      expect((await res.json()).labels).toEqual({ zone: 'a', tier: 'b' })
      expect((await reg('second')).status).toBe(401) // --uses 1

      // The server's refusal is one line naming the field.
      expect(bad).toMatchObject({ code: 1, stdout: '' })
      expect((bad as Failed).stderr.trim().split('\n')).toEqual([
        expect.stringMatching(/refused the registration token: 422 .*body\.expiresInMinutes must be at most 525600/),
      ])

      expect(written.stdout).toBe('')
      expect(readFileSync(file, 'utf8')).toMatch(/^acpr_[A-Za-z0-9_-]{43}\n$/)
      expect(statSync(file).mode & 0o777).toBe(0o600)
      expect((await registerWith(url, readFileSync(file, 'utf8').trim(), 'from-file')).status).toBe(201)

      const [admin, unwritable] = await offline
      expect(admin.stdout).toMatch(/^ey[\w-]+\.[\w-]+\.[\w-]+\n$/)
      expect(unwritable).toMatchObject({ code: 1, stderr: expect.stringContaining('cannot write --out') })
    } catch (err) {
      // Say what the server did, should it have gone away.
      const { out, err: stderr } = s.output()
      const state = `server exit ${s.child.exitCode ?? '-'} signal ${s.child.signalCode ?? '-'}`
      throw new Error(
        `${err instanceof Error ? err.message : err}\n${state}\n${stderr.slice(-2000)}${out.slice(-2000)}`,
        {
          cause: err,
        },
      )
    } finally {
      await stopped(s.child, s.exited)
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('says in one line that the server is unreachable', async () => {
    // A port nothing listens on: taken from the system, then let go.
    const port = await new Promise<number>((resolve) => {
      const srv = createServer().listen(0, '127.0.0.1', () => {
        const { port } = srv.address() as AddressInfo
        srv.close(() => resolve(port))
      })
    })
    const err = await script(['--registration', '--url', `http://127.0.0.1:${port}`]).catch((e: Failed) => e)
    expect(err).toMatchObject({ code: 1, stdout: '' })
    const lines = (err as { stderr: string }).stderr.trim().split('\n')
    expect(lines).toEqual([
      expect.stringMatching(
        new RegExp(`^cannot reach the server at http://127.0.0.1:${port} \\(ECONNREFUSED\\): is it running\\?`),
      ),
    ])
  })
})
