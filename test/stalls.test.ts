import { describe, expect, it } from 'vitest'
import { loadConfig } from '../src/env'
import { signToken } from '../src/lib/tokens'
import { SECRET } from './harness'
import { startServer, stopped } from './spawn'
import { until } from './until'

/**
 * The real server paused (SIGSTOP, as a stalled VM or a debugger would) for longer than
 * HEARTBEAT_TIMEOUT_SECONDS while agents keep trying to heartbeat: when it resumes, its
 * sweep must not declare them dead, and an agent that really died before the pause is
 * still found, within its timeout plus the pause.
 */
describe('a server paused longer than the heartbeat timeout', () => {
  it('declares none of the agents that kept trying dead, and still expires one that died', async () => {
    const server = startServer({
      SECRET_KEY: SECRET,
      ENVIRONMENT: 'test',
      HEARTBEAT_INTERVAL_SECONDS: '1',
      HEARTBEAT_TIMEOUT_SECONDS: '3',
      SWEEP_INTERVAL_SECONDS: '1',
      RATE_LIMIT_PER_MINUTE: '0',
    })
    const pid = server.child.pid as number
    let beating = true
    try {
      const base = await server.listening
      const admin = await signToken(loadConfig({ SECRET_KEY: SECRET }), { sub: 'stall-admin', role: 'admin' }, 30)
      const call = async (method: string, path: string, token: string, body?: unknown) => {
        const res = await fetch(`${base}${path}`, {
          method,
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(30_000),
        })
        return { status: res.status, body: await res.json() }
      }
      const register = async (name: string) => {
        const r = await call('POST', '/api/v1/agents', admin, { name, provider: 'onprem' })
        expect(r.status, JSON.stringify(r.body)).toBe(201)
        return { id: r.body.id as string, token: r.body.token as string }
      }
      const live = await Promise.all([register('live-1'), register('live-2'), register('live-3')])
      const dead = await register('dead')
      const beat = (a: { id: string; token: string }) =>
        call('POST', '/api/v1/agents/heartbeat', a.token, { agentId: a.id })
      const beatWithin = (a: { id: string; token: string }, ms: number) =>
        fetch(`${base}/api/v1/agents/heartbeat`, {
          method: 'POST',
          headers: { authorization: `Bearer ${a.token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ agentId: a.id }),
          signal: AbortSignal.timeout(ms),
        }).then((r) => r.text())
      // The live agents beat every 500 ms, and keep trying while the server is paused (their
      // requests wait in its listen queue, as a real agent's would).
      const loops = live.map(async (a) => {
        while (beating) {
          await beatWithin(a, 15_000).catch(() => {})
          await new Promise((r) => setTimeout(r, 500))
        }
      })
      await beat(dead)
      // The dead one stops now; the server is paused a second later, for 3 timeouts.
      await new Promise((r) => setTimeout(r, 1000))
      process.kill(pid, 'SIGSTOP')
      await new Promise((r) => setTimeout(r, 9_000))
      process.kill(pid, 'SIGCONT')
      const resumedAt = Date.now()
      // A few sweeps after the resume: none of the live agents expired.
      await new Promise((r) => setTimeout(r, 2_500))
      const events = async () =>
        (await call('GET', '/api/v1/events?type=agent.expired&limit=100', admin)).body.items as { agentId: string }[]
      const expiredLive = (await events()).filter((e) => live.some((a) => a.id === e.agentId))
      expect(expiredLive).toEqual([])
      for (const a of live) expect((await call('GET', `/api/v1/agents/${a.id}`, admin)).body.status).toBe('online')
      // The dead agent had 1 s of heard silence before the pause: found within its timeout
      // (3 s) of the resume, plus a sweep or two.
      await until('the dead agent expired', async () => (await events()).some((e) => e.agentId === dead.id), {
        timeoutMs: 8_000,
      })
      expect(Date.now() - resumedAt).toBeLessThan(8_000)
      // The stall is on record, for operators.
      const status = await call('GET', '/api/v1/scheduler/status', admin)
      expect(status.body.stalls[0]).toMatchObject({ cause: 'paused' })
      expect(status.body.stalls[0].seconds).toBeGreaterThanOrEqual(8)
      beating = false
      await Promise.all(loops)
    } finally {
      beating = false
      try {
        process.kill(pid, 'SIGCONT')
      } catch {}
      await stopped(server.child, server.exited)
    }
  }, 150_000)
})
