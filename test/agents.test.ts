import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHarness, type Harness, unique } from './harness'

let h: Harness
beforeAll(async () => {
  h = await createHarness()
})
afterAll(async () => {
  await h.close()
})

describe('POST /api/v1/agents', () => {
  it('registers an agent offline, with a token, Location and ETag, and logs the event', async () => {
    const name = unique('reg')
    const res = await h.call('POST', '/api/v1/agents', {
      body: {
        name,
        provider: 'gcp',
        region: 'europe-west1',
        capabilities: ['gpu', 'docker', 'gpu'],
        labels: { zone: 'b' },
        maxConcurrentTasks: 4,
        description: 'a worker',
      },
    })
    expect(res.status).toBe(201)
    expect(res.body).toMatchObject({
      name,
      provider: 'gcp',
      region: 'europe-west1',
      capabilities: ['gpu', 'docker'],
      labels: { zone: 'b' },
      maxConcurrentTasks: 4,
      description: 'a worker',
      status: 'offline',
      activeTasks: 0,
      lastHeartbeatAt: null,
      version: 1,
    })
    expect(res.body.token).toMatch(/^ey/)
    expect(new Date(res.body.tokenExpiresAt).getTime()).toBeGreaterThan(Date.now() + 364 * 86_400_000)
    expect(res.headers.get('location')).toBe(`/api/v1/agents/${res.body.id}`)
    expect(res.headers.get('etag')).toBe('"1"')
    const evs = await h.events({ agentId: res.body.id })
    expect(evs.map((e) => e.type)).toEqual(['agent.registered'])
  })

  it('applies defaults for optional fields', async () => {
    const res = await h.call('POST', '/api/v1/agents', { body: { name: unique('min'), provider: 'onprem' } })
    expect(res.status).toBe(201)
    expect(res.body).toMatchObject({ capabilities: [], labels: {}, maxConcurrentTasks: 1, region: null })
  })

  it('refuses a taken name with 409 and writes nothing', async () => {
    const name = unique('dup')
    await h.call('POST', '/api/v1/agents', { body: { name, provider: 'aws' } })
    const res = await h.call('POST', '/api/v1/agents', { body: { name, provider: 'azure' } })
    expect(res.status).toBe(409)
    expect(res.body.code).toBe('name_taken')
    const list = await h.call('GET', `/api/v1/agents?provider=azure&limit=100`)
    expect(list.body.items.some((a: { name: string }) => a.name === name)).toBe(false)
  })
})

describe('GET /api/v1/agents', () => {
  it('filters by status, provider, region and capability', async () => {
    const region = unique('region')
    const a = await h.agent({ provider: 'azure', region, capabilities: ['gpu', 'cuda'] })
    const b = await h.agent({ provider: 'aws', region, capabilities: ['cpu'] }, { online: false })
    const c = await h.agent({ provider: 'azure', region, capabilities: ['gpu'] })

    const ids = async (q: string) =>
      (await h.call('GET', `/api/v1/agents?region=${region}&${q}`)).body.items.map((x: { id: string }) => x.id).sort()

    expect(await ids('')).toEqual([a.id, b.id, c.id].sort())
    expect(await ids('status=online')).toEqual([a.id, c.id].sort())
    expect(await ids('status=offline')).toEqual([b.id])
    expect(await ids('provider=aws')).toEqual([b.id])
    expect(await ids('capability=gpu')).toEqual([a.id, c.id].sort())
    expect(await ids('capability=gpu,cuda')).toEqual([a.id])
    expect(await ids('capability=tpu')).toEqual([])
  })

  it('pages with an opaque cursor, newest first by default, oldest first with order=asc', async () => {
    const region = unique('paging')
    const made: string[] = []
    for (let i = 0; i < 5; i++) made.push((await h.agent({ region }, { online: false })).id)

    const seen: string[] = []
    let cursor: string | null = null
    let pages = 0
    do {
      const q: string = cursor ? `&cursor=${cursor}` : ''
      const res = await h.call('GET', `/api/v1/agents?region=${region}&limit=2${q}`)
      expect(res.status).toBe(200)
      expect(res.body.items.length).toBeLessThanOrEqual(2)
      seen.push(...res.body.items.map((x: { id: string }) => x.id))
      cursor = res.body.nextCursor
      pages++
    } while (cursor)
    expect(pages).toBe(3)
    expect(seen).toEqual([...made].reverse())

    const asc = await h.call('GET', `/api/v1/agents?region=${region}&limit=100&order=asc`)
    expect(asc.body.items.map((x: { id: string }) => x.id)).toEqual(made)
    expect(asc.body.nextCursor).toBeNull()
  })

  it('refuses a limit over 100, a bad cursor, and unknown enum values with 422', async () => {
    for (const q of ['limit=101', 'limit=0', 'cursor=not-a-cursor', 'status=sleeping', 'provider=mars']) {
      const res = await h.call('GET', `/api/v1/agents?${q}`)
      expect(res.status, q).toBe(422)
      expect(res.body.code).toBe('validation_failed')
      expect(res.body.errors.length).toBeGreaterThan(0)
    }
  })
})

describe('GET/PUT /api/v1/agents/{id}', () => {
  it('returns the agent with an ETag, 404 for an unknown id, 422 for a malformed id', async () => {
    const a = await h.agent()
    const res = await h.call('GET', `/api/v1/agents/${a.id}`)
    expect(res.status).toBe(200)
    expect(res.body.id).toBe(a.id)
    expect(res.headers.get('etag')).toBe(`"${res.body.version}"`)
    expect((await h.call('GET', '/api/v1/agents/0192f3c5-6d7e-7a1b-8c9d-0e1f2a3b4c5d')).status).toBe(404)
    expect((await h.call('GET', '/api/v1/agents/nope')).status).toBe(422)
  })

  it('replaces settings, bumps the version, honours If-Match (412 on mismatch, nothing changed)', async () => {
    const a = await h.agent({ capabilities: ['a'] })
    const body = { name: a.name, provider: 'gcp', region: 'asia-east1', capabilities: ['b'], maxConcurrentTasks: 7 }
    const stale = await h.call('PUT', `/api/v1/agents/${a.id}`, { body, headers: { 'if-match': '"999"' } })
    expect(stale.status).toBe(412)
    expect(stale.body.code).toBe('precondition_failed')
    expect((await h.call('GET', `/api/v1/agents/${a.id}`)).body.provider).toBe('aws')

    const ok = await h.call('PUT', `/api/v1/agents/${a.id}`, { body, headers: { 'if-match': `"${a.version}"` } })
    expect(ok.status).toBe(200)
    expect(ok.body).toMatchObject({ provider: 'gcp', region: 'asia-east1', capabilities: ['b'], maxConcurrentTasks: 7 })
    expect(ok.body.version).toBe(a.version + 1)
    expect(ok.headers.get('etag')).toBe(`"${a.version + 1}"`)
    expect(ok.body.status).toBe('online')
  })

  it('refuses renaming onto a taken name with 409', async () => {
    const a = await h.agent()
    const b = await h.agent()
    const res = await h.call('PUT', `/api/v1/agents/${b.id}`, { body: { name: a.name, provider: 'aws' } })
    expect(res.status).toBe(409)
    expect(res.body.code).toBe('name_taken')
  })

  it('404s PUT on an unknown id', async () => {
    const res = await h.call('PUT', '/api/v1/agents/0192f3c5-6d7e-7a1b-8c9d-0e1f2a3b4c5d', {
      body: { name: unique(), provider: 'aws' },
    })
    expect(res.status).toBe(404)
  })
})

describe('PATCH /api/v1/agents/{id}/status', () => {
  it('lets an operator move an agent through online, draining, maintenance, error', async () => {
    const a = await h.agent()
    const op = await h.token('operator')
    for (const status of ['draining', 'maintenance', 'error', 'online']) {
      const res = await h.call('PATCH', `/api/v1/agents/${a.id}/status`, { token: op, body: { status } })
      expect(res.status, status).toBe(200)
      expect(res.body.status).toBe(status)
    }
    const evs = (await h.events({ agentId: a.id })).filter((e) => e.type === 'agent.status_changed')
    expect(evs.map((e) => e.data.to)).toEqual(['online', 'draining', 'maintenance', 'error', 'online'])
  })

  it('refuses offline by hand and unknown statuses with 422', async () => {
    const a = await h.agent()
    const off = await h.call('PATCH', `/api/v1/agents/${a.id}/status`, { body: { status: 'offline' } })
    expect(off.status).toBe(422)
    const bad = await h.call('PATCH', `/api/v1/agents/${a.id}/status`, { body: { status: 'asleep' } })
    expect(bad.status).toBe(422)
  })

  it('lets an agent set its own status but not maintenance, and not leave maintenance', async () => {
    const a = await h.agent()
    const drain = await h.call('PATCH', `/api/v1/agents/${a.id}/status`, {
      token: a.token,
      body: { status: 'draining' },
    })
    expect(drain.status).toBe(200)
    const maint = await h.call('PATCH', `/api/v1/agents/${a.id}/status`, {
      token: a.token,
      body: { status: 'maintenance' },
    })
    expect(maint.status).toBe(403)
    await h.call('PATCH', `/api/v1/agents/${a.id}/status`, { body: { status: 'maintenance' } })
    const leave = await h.call('PATCH', `/api/v1/agents/${a.id}/status`, { token: a.token, body: { status: 'online' } })
    expect(leave.status).toBe(409)
    expect(leave.body.code).toBe('invalid_transition')
    expect(leave.body.allowed).toEqual([])
  })

  it('checks If-Match', async () => {
    const a = await h.agent()
    const res = await h.call('PATCH', `/api/v1/agents/${a.id}/status`, {
      body: { status: 'draining' },
      headers: { 'if-match': '"0"' },
    })
    expect(res.status).toBe(412)
  })
})

describe('POST /api/v1/agents/heartbeat', () => {
  it('brings an offline agent online, stores metrics and answers with interval, assignments and cancellations', async () => {
    const a = await h.agent({}, { online: false })
    h.clock.advance(1000)
    const res = await h.call('POST', '/api/v1/agents/heartbeat', {
      token: a.token,
      body: { agentId: a.id, metrics: { cpu: 0.5 } },
    })
    expect(res.status).toBe(200)
    expect(res.body.agent.status).toBe('online')
    expect(res.body.agent.lastMetrics).toEqual({ cpu: 0.5 })
    expect(res.body.agent.lastHeartbeatAt).toBe(h.clock.now().toISOString())
    expect(res.body.assignments).toEqual([])
    expect(res.body.cancellations).toEqual([])
    expect(res.body.heartbeatIntervalSeconds).toBe(h.config.heartbeatIntervalSeconds)
  })

  it('returns assigned-not-started tasks and tasks to stop', async () => {
    const a = await h.agent({ maxConcurrentTasks: 3 })
    const t1 = await h.assignedTask(a.id)
    const t2 = await h.assignedTask(a.id)
    await h.report(t2.id, a.token, { status: 'running', attempt: t2.attempt })
    await h.call('POST', `/api/v1/tasks/${t2.id}/cancel`)
    const stranger = '0192f3c5-6d7e-7a1b-8c9d-0e1f2a3b4c5d'
    const res = await h.call('POST', '/api/v1/agents/heartbeat', {
      token: a.token,
      body: { agentId: a.id, runningTaskIds: [t2.id, stranger] },
    })
    expect(res.status).toBe(200)
    expect(res.body.assignments.map((t: { id: string }) => t.id)).toEqual([t1.id])
    expect(res.body.cancellations.sort()).toEqual([t2.id, stranger].sort())
  })

  it('keeps an agent in maintenance however it reports', async () => {
    const a = await h.agent()
    await h.call('PATCH', `/api/v1/agents/${a.id}/status`, { body: { status: 'maintenance' } })
    const res = await h.call('POST', '/api/v1/agents/heartbeat', {
      token: a.token,
      body: { agentId: a.id, status: 'online' },
    })
    expect(res.body.agent.status).toBe('maintenance')
  })

  it('applies a reported status (draining, error) and logs the change', async () => {
    const a = await h.agent()
    const res = await h.call('POST', '/api/v1/agents/heartbeat', {
      token: a.token,
      body: { agentId: a.id, status: 'error' },
    })
    expect(res.body.agent.status).toBe('error')
    const last = (await h.events({ agentId: a.id })).at(-1)
    expect(last).toMatchObject({ type: 'agent.status_changed', data: { from: 'online', to: 'error' } })
  })

  it('404s for an unknown agent (operator token) and 403s for another agent’s id', async () => {
    const a = await h.agent()
    const b = await h.agent()
    const unknown = await h.call('POST', '/api/v1/agents/heartbeat', {
      body: { agentId: '0192f3c5-6d7e-7a1b-8c9d-0e1f2a3b4c5d' },
    })
    expect(unknown.status).toBe(404)
    const other = await h.call('POST', '/api/v1/agents/heartbeat', { token: a.token, body: { agentId: b.id } })
    expect(other.status).toBe(403)
  })
})

describe('DELETE /api/v1/agents/{id}', () => {
  it('deregisters an idle agent (204, then 404, name free again)', async () => {
    const a = await h.agent()
    expect((await h.call('DELETE', `/api/v1/agents/${a.id}`)).status).toBe(204)
    expect((await h.call('GET', `/api/v1/agents/${a.id}`)).status).toBe(404)
    const again = await h.call('POST', '/api/v1/agents', { body: { name: a.name, provider: 'aws' } })
    expect(again.status).toBe(201)
  })

  it('refuses while tasks are assigned or running, and force puts them back to pending', async () => {
    const a = await h.agent({ maxConcurrentTasks: 2 })
    const t1 = await h.assignedTask(a.id)
    const t2 = await h.assignedTask(a.id)
    await h.report(t2.id, a.token, { status: 'running', attempt: t2.attempt })

    const refused = await h.call('DELETE', `/api/v1/agents/${a.id}`)
    expect(refused.status).toBe(409)
    expect(refused.body.code).toBe('agent_has_active_tasks')
    expect(refused.body.taskIds.sort()).toEqual([t1.id, t2.id].sort())
    expect((await h.call('GET', `/api/v1/agents/${a.id}`)).status).toBe(200)

    const forced = await h.call('DELETE', `/api/v1/agents/${a.id}?force=true`)
    expect(forced.status).toBe(204)
    for (const t of [t1, t2]) {
      const got = await h.call('GET', `/api/v1/tasks/${t.id}`)
      expect(got.body).toMatchObject({ status: 'pending', agentId: null, attempt: 1, failures: 0 })
    }
    // The deleted agent's token is dead, so its late report cannot land.
    const late = await h.report(t2.id, a.token, { status: 'completed', attempt: 1 })
    expect(late.status).toBe(401)
  })

  it('404s for an unknown id and checks If-Match', async () => {
    expect((await h.call('DELETE', '/api/v1/agents/0192f3c5-6d7e-7a1b-8c9d-0e1f2a3b4c5d')).status).toBe(404)
    const a = await h.agent()
    const res = await h.call('DELETE', `/api/v1/agents/${a.id}`, { headers: { 'if-match': '"42"' } })
    expect(res.status).toBe(412)
    expect((await h.call('GET', `/api/v1/agents/${a.id}`)).status).toBe(200)
  })
})

describe('POST /api/v1/agents/{id}/token', () => {
  it('issues a fresh token and the earlier ones stop working', async () => {
    const a = await h.agent()
    const res = await h.call('POST', `/api/v1/agents/${a.id}/token`)
    expect(res.status).toBe(201)
    expect(res.body.token).toMatch(/^ey/)
    expect(new Date(res.body.expiresAt).getTime()).toBeGreaterThan(Date.now())

    const old = await h.call('GET', `/api/v1/agents/${a.id}`, { token: a.token })
    expect(old.status).toBe(401)
    const fresh = await h.call('GET', `/api/v1/agents/${a.id}`, { token: res.body.token })
    expect(fresh.status).toBe(200)
  })

  it('is for operators: an agent token cannot renew itself or another', async () => {
    const a = await h.agent()
    const b = await h.agent()
    expect((await h.call('POST', `/api/v1/agents/${b.id}/token`, { token: a.token })).status).toBe(403)
    expect((await h.call('POST', `/api/v1/agents/${a.id}/token`, { token: a.token })).status).toBe(403)
    expect((await h.call('GET', `/api/v1/agents/${a.id}`, { token: a.token })).status).toBe(200)
  })

  it('404s for an unknown agent', async () => {
    expect((await h.call('POST', '/api/v1/agents/0192f3c5-6d7e-7a1b-8c9d-0e1f2a3b4c5d/token')).status).toBe(404)
  })
})
