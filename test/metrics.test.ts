import { spawnSync } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHarness, type Harness } from './harness'

const promtool = spawnSync('sh', ['-c', 'command -v promtool']).stdout.toString().trim()
if (!promtool)
  console.warn('skipped: promtool check metrics: promtool not found on PATH (Debian: apt-get install prometheus)')

let h: Harness
beforeAll(async () => {
  h = await createHarness()
})
afterAll(async () => {
  await h.close()
})

const metric = (text: string, name: string) => {
  const line = text.split('\n').find((l) => l.startsWith(name))
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : undefined
}

describe('GET /metrics', () => {
  it('exports HTTP, fleet, queue, sweep and placement metrics in the Prometheus text format', async () => {
    const a = await h.agent({ maxConcurrentTasks: 3 })
    const t = await h.task() // placed at once: via="create"
    await h.report(t.id, a.token, { status: 'running', attempt: 1 })
    await h.report(t.id, a.token, { status: 'completed', attempt: 1 })
    await h.pendingTask({ priority: 7 })
    await h.call('GET', `/api/v1/tasks/${t.id}`)
    await h.call('POST', '/api/v1/scheduler/sweep')

    const res = await h.call('GET', '/metrics', { token: null })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toContain('text/plain; version=0.0.4')
    const text: string = res.body
    expect(text).toContain('# TYPE agenticcp_http_request_duration_seconds histogram')
    expect(metric(text, 'agenticcp_http_requests_total{method="GET",route="/api/v1/tasks/:id",status="200"}')).toBe(1)
    expect(metric(text, 'agenticcp_agents{status="online"}')).toBe(1)
    expect(metric(text, 'agenticcp_tasks{status="completed"}')).toBe(1)
    expect(metric(text, 'agenticcp_tasks{status="pending"}')).toBe(1)
    expect(metric(text, 'agenticcp_queue_depth{priority="7"}')).toBe(1)
    expect(metric(text, 'agenticcp_agent_slots{state="total"}')).toBe(3)
    expect(metric(text, 'agenticcp_tasks_assigned_total{via="create"}')).toBe(1)
    expect(metric(text, 'agenticcp_task_create_to_assigned_seconds_count')).toBe(1)
    expect(metric(text, 'agenticcp_task_run_duration_seconds_count{status="completed"}')).toBe(1)
    expect(metric(text, 'agenticcp_sweeps_total{result="ran"}')).toBe(1)
    expect(metric(text, 'agenticcp_sweep_duration_seconds_count')).toBe(1)
    expect(text).toMatch(/agenticcp_build_info\{version="[^"]+",environment="test"\} 1/)
  })

  it.runIf(promtool !== '')('passes promtool check metrics', async () => {
    const res = await h.call('GET', '/metrics', { token: null })
    const check = spawnSync(promtool, ['check', 'metrics'], { input: res.body })
    expect(check.stderr.toString() + check.stdout.toString()).toBe('')
    expect(check.status).toBe(0)
  })

  it('wants METRICS_TOKEN when it is set', async () => {
    const guarded = await createHarness({ METRICS_TOKEN: 'scrape-me-please' }, h.database)
    try {
      expect((await guarded.call('GET', '/metrics', { token: null })).status).toBe(401)
      expect((await guarded.call('GET', '/metrics', { token: 'wrong-token' })).status).toBe(401)
      expect((await guarded.call('GET', '/metrics', { token: 'scrape-me-please' })).status).toBe(200)
    } finally {
      await guarded.kv.close()
    }
  })
})
