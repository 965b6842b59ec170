import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { serve } from '@hono/node-server'
import { type Browser, chromium, type Page, type Request } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { bundleDashboard, bundlePath } from '../scripts/build-dashboard'
import { Agent, shellHandler } from '../src/agent'
import { silentAgentLogger } from '../src/agent/log'
import { describe as describeEvent } from '../src/routes/dashboard/client/describe'
import { createHarness, type Harness, unique } from './harness'
import { until } from './until'

/**
 * The dashboard in a real browser (Debian's Chromium, driven by playwright-core): it
 * connects with a pasted token, then a task created through the API appears on the page
 * and changes state live, from the event stream. Saves test-results/dashboard.png (and,
 * with UPDATE_SCREENSHOT=1, docs/dashboard.png for the README).
 */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const enabled = existsSync(CHROMIUM)
if (!enabled) console.warn(`skipped: the dashboard in a browser: Chromium not found at ${CHROMIUM} (set CHROMIUM_PATH)`)
// What the page shows comes a refresh (a second) or two after the API changes: on a busy
// machine that can take several seconds, so polls here wait up to 10 s unless they say.
vi.setConfig({ expect: { poll: { timeout: 10_000 } } })

let h: Harness
let browser: Browser | undefined
let server: ReturnType<typeof serve> | undefined
let base = ''

/** A heartbeat from each agent, all at once (their order does not matter). */
const beat = (agents: { id: string; token: string }[]) =>
  Promise.all(
    agents.map((a) => h.call('POST', '/api/v1/agents/heartbeat', { token: a.token, body: { agentId: a.id } })),
  )

/** A fleet and an hour of history, so the page has something to show. */
async function seed() {
  const providers = ['aws', 'azure', 'gcp', 'ncp', 'onprem']
  const regions = ['us-east-1', 'eu-west-1', 'ap-northeast-2', 'europe-west4', 'dc-seoul']
  const caps = [
    ['cpu', 'docker'],
    ['gpu', 'cuda', 'docker'],
    ['cpu', 'arm'],
    ['cpu', 'docker', 'playwright'],
  ]
  h.clock.set(Date.now() - 60 * 60_000)
  const fleet: { id: string; token: string }[] = []
  for (let i = 0; i < 36; i++) {
    fleet.push(
      await h.agent({
        name: `${providers[i % 5]}-${regions[i % 5]}-${String(i + 1).padStart(2, '0')}`,
        provider: providers[i % 5],
        region: regions[i % 5],
        capabilities: caps[i % 4],
        maxConcurrentTasks: 2 + (i % 4) * 2,
      }),
    )
  }
  const types = ['report.generate', 'video.transcode', 'model.evaluate', 'crawl.site', 'backup.snapshot']
  for (let minute = 0; minute < 58; minute += 2) {
    h.clock.set(Date.now() - (60 - minute) * 60_000)
    // The agents that take work this minute report in first (the others beat at the end).
    const busy = Array.from({ length: 3 + (minute % 5) }, (_, k) => fleet[(minute * 7 + k) % fleet.length])
    await beat([...new Set(busy)].filter((a) => a !== undefined))
    for (let k = 0; k < 3 + (minute % 5); k++) {
      const a = fleet[(minute * 7 + k) % fleet.length]
      if (!a) continue
      const t = await h.assignedTask(a.id, {
        type: types[(minute + k) % 5],
        priority: 1 + ((minute + k) % 10),
        name: `job-${minute}-${k}`,
      })
      await h.report(t.id, a.token, { status: 'running', attempt: t.attempt })
      h.clock.advance((5 + ((minute * k) % 50)) * 1000)
      const ok = (minute + k) % 11 !== 0
      await h.report(
        t.id,
        a.token,
        ok
          ? { status: 'completed', attempt: t.attempt, result: { ok: true } }
          : { status: 'failed', attempt: t.attempt, error: { code: 'exit_1', message: 'process exited with 1' } },
      )
    }
  }
  h.clock.set(Date.now())
  await beat(fleet)
  for (const [i, status] of ['draining', 'maintenance', 'error'].entries()) {
    await h.call('PATCH', `/api/v1/agents/${fleet[i + 3]?.id}/status`, { body: { status } })
  }
  for (let i = 0; i < 14; i++) {
    const a = fleet[(i * 5) % fleet.length]
    if (!a) continue
    const t = await h.task({ type: types[i % 5], priority: 1 + (i % 10), name: `live-${i}` })
    if (i % 2 === 0 && t.status === 'assigned')
      await h.report(t.id, a.token, { status: 'running', attempt: t.attempt, progress: 40 })
  }
  for (let i = 0; i < 9; i++)
    await h.task({ priority: 1 + ((i * 3) % 10), name: `waiting-${i}`, requirements: { capabilities: ['tpu'] } })
  return fleet
}

beforeAll(async () => {
  if (!enabled) return
  // The browser starts while the app does: neither needs the other until a page opens.
  const launched = chromium
    .launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    })
    .then((b) => {
      browser = b
    })
  h = await createHarness({ RATE_LIMIT_PER_MINUTE: '0' })
  await new Promise<void>((resolve) => {
    server = serve({ fetch: h.app.fetch, port: 0, hostname: '127.0.0.1' }, (info) => {
      base = `http://127.0.0.1:${info.port}`
      resolve()
    })
  })
  await launched
}, 120_000)

/** A page on the dashboard, connected with a viewer token (or `role`'s); `problems` collects page errors. */
async function openDashboard(viewport = { width: 1440, height: 1100 }, role: 'viewer' | 'operator' = 'viewer') {
  const page = await (browser as Browser).newPage({ viewport })
  const problems: string[] = []
  page.on('pageerror', (e) => problems.push(e.message))
  page.on('console', (m) => {
    // An operator's refused action (a 4xx) is logged by the browser too; the page shows it in its dialog.
    const refused =
      role === 'operator' && /^Failed to load resource: the server responded with a status of 4\d\d/.test(m.text())
    if (m.type() === 'error' && !refused) problems.push(m.text())
  })
  await page.goto(`${base}/dashboard`)
  await page.fill('#token', await h.token(role, `dashboard-${role}`))
  await page.click('#connect')
  await page.waitForSelector('#live.on', { timeout: 15_000 })
  await page.waitForFunction(() => document.querySelector('#task-count')?.textContent)
  return { page, problems }
}

/**
 * For a check that something did NOT happen. `poke(n)` changes something through the API and
 * returns the path the page re-reads on its next once-a-second refresh because of it. This
 * pokes twice, each time waiting until the page's read has ended: by the second, the page
 * has handled the first's answer and made any request that leads to, however slow the
 * machine (a fixed sleep could only guess how long that takes).
 */
async function twoRefreshes(page: Page, poke: (n: number) => Promise<string>) {
  const read: string[] = []
  const onRead = (r: Request) => read.push(new URL(r.url()).pathname)
  page.on('requestfinished', onRead)
  try {
    for (const n of [1, 2]) {
      const path = await poke(n)
      await until(`the page to re-read ${path}`, () => read.includes(path), { timeoutMs: 15_000 })
      read.length = 0
    }
  } finally {
    page.off('requestfinished', onRead)
  }
}

/** The page is no wider than its viewport: nothing scrolls sideways but inside a card. */
const pageOverflow = (page: Page) =>
  page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    wide: [...document.querySelectorAll('main > *, main .card')]
      .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 0.5)
      .map((e) => e.className),
  }))

/** Every KPI figure: one line (nowrap) and not clipped, also with the widest placement figure the page writes. */
const kpiFigures = (page: Page) =>
  page.evaluate(() => {
    const wait = document.querySelector('#k-wait') as HTMLElement
    const was = [...wait.childNodes]
    const small = document.createElement('small')
    small.textContent = ' / 119 s'
    wait.replaceChildren('999 ms', small)
    const out = [...document.querySelectorAll<HTMLElement>('.kpi .v')].map((v) => ({
      id: v.id,
      ws: getComputedStyle(v).whiteSpace,
      clipped: v.scrollWidth > v.clientWidth,
    }))
    wait.replaceChildren(...was)
    return out
  })

afterAll(async () => {
  await browser?.close()
  await new Promise((r) => (server ? server.close(() => r(null)) : r(null)))
  await h?.close()
})

describe('the dashboard script', () => {
  it('is served as bundled from src/routes/dashboard/client (npm run build:dashboard)', async () => {
    const fresh = (await bundleDashboard()) === readFileSync(bundlePath, 'utf8')
    expect(fresh, `${bundlePath} is stale: run npm run build:dashboard`).toBe(true)
  })

  it('says a run that started and ended in one report in words, with the start its end stands for', () => {
    const ev = (type: string, data: Record<string, unknown>) =>
      ({ id: 1, type, time: '', agentId: null, taskId: null, data }) as const
    const error = { code: 'exit_2', message: 'boom' }
    expect(describeEvent(ev('task.completed', { from: 'assigned', to: 'completed', attempt: 1, started: true }))).toBe(
      'assigned → running → completed (attempt 1)',
    )
    expect(describeEvent(ev('task.failed', { from: 'assigned', to: 'failed', attempt: 2, started: true, error }))).toBe(
      'assigned → running → failed (exit_2, attempt 2)',
    )
    // A refusal never ran; an end of a running task is as before.
    expect(describeEvent(ev('task.failed', { from: 'assigned', to: 'failed', attempt: 1, error }))).toBe(
      'assigned → failed (exit_2, attempt 1)',
    )
    expect(describeEvent(ev('task.completed', { from: 'running', to: 'completed', attempt: 1 }))).toBe(
      'running → completed (attempt 1)',
    )
  })
})

describe.runIf(enabled)('GET /dashboard in a browser', () => {
  it('connects with a token and shows a task created through the API appearing and changing state live', async () => {
    const fleet = await seed()
    const { page, problems } = await openDashboard()
    await page.waitForFunction(() => Number(document.querySelector('#k-online')?.textContent?.replace(/,/g, '')) > 0)
    expect(await page.locator('#agents tr').count()).toBe(36)

    // A task created through the API appears, then follows its agent's reports.
    const agent = fleet[10] as { id: string; token: string }
    const task = await h.task({ name: 'browser-visible-task', type: 'e2e.dashboard', priority: 9 })
    expect(task.agentId).not.toBeNull()
    const owner = fleet.find((a) => a.id === task.agentId) ?? agent
    const status = page.locator(`tr[data-task-id="${task.id}"] [data-status]`)
    await expect.poll(() => status.textContent(), { timeout: 15_000 }).toContain('assigned')
    await h.report(task.id, owner.token, { status: 'running', attempt: task.attempt, progress: 10 })
    await expect.poll(() => status.textContent(), { timeout: 15_000 }).toContain('running')
    await h.report(task.id, owner.token, { status: 'completed', attempt: task.attempt, result: { rows: 42 } })
    await expect.poll(() => status.textContent(), { timeout: 15_000 }).toContain('completed')
    await expect.poll(() => page.locator('#log div').count(), { timeout: 5_000 }).toBeGreaterThan(2)

    // The throughput chart has a y axis up to at least the peak, time labels, and the current value.
    const stats = (await h.call('GET', '/api/v1/tasks/statistics')).body
    const perMinute: number[] = stats.recent.completedPerMinute
    await expect
      .poll(() => page.textContent('#thr-now'), { timeout: 5_000 })
      .toBe(`${perMinute[58]?.toLocaleString('en-US')} / min`)
    const yTop = Number((await page.locator('#thr-y span').first().textContent())?.replace(/,/g, ''))
    expect(yTop).toBeGreaterThanOrEqual(Math.max(...perMinute))
    expect(yTop).toBeLessThan(Math.max(...perMinute) * 2.5)
    expect(await page.locator('#thr-y span').last().textContent()).toBe('0')
    const xLabels = await page.locator('#thr-x span').allTextContents()
    expect(xLabels).toHaveLength(5)
    expect(xLabels[4]).toBe('now')
    for (const l of xLabels.slice(0, 4)) expect(l).toMatch(/^\d{1,2}:\d{2}/)
    expect(await page.locator('#thr div').count()).toBe(60)

    mkdirSync('test-results', { recursive: true })
    await page.screenshot({ path: 'test-results/dashboard.png', fullPage: true })
    if (process.env.UPDATE_SCREENSHOT === '1') copyFileSync('test-results/dashboard.png', 'docs/dashboard.png')
    expect(problems).toEqual([])
    await page.close()
  }, 180_000)

  it('filters the task table by status, re-reading the API, and keeps the filter as tasks change live', async () => {
    h.clock.set(Date.now())
    const a = await h.agent({ name: `filter-agent-${Date.now()}`, maxConcurrentTasks: 4 })
    const done = await h.assignedTask(a.id, { name: 'filter-completed' })
    await h.report(done.id, a.token, { status: 'running', attempt: done.attempt })
    await h.report(done.id, a.token, { status: 'completed', attempt: done.attempt, result: { ok: true } })
    const failed = await h.assignedTask(a.id, { name: 'filter-failed', maxAttempts: 1 })
    await h.report(failed.id, a.token, { status: 'running', attempt: failed.attempt })
    await h.report(failed.id, a.token, {
      status: 'failed',
      attempt: failed.attempt,
      error: { code: 'exit_2', message: 'bad' },
    })
    const running = await h.assignedTask(a.id, { name: 'filter-running' })
    await h.report(running.id, a.token, { status: 'running', attempt: running.attempt })
    const pending = await h.pendingTask({ name: 'filter-pending' })

    const { page, problems } = await openDashboard()
    const rows = page.locator('#tasks tr[data-task-id]')
    const statuses = () =>
      rows.locator('[data-status]').evaluateAll((els) => [...new Set(els.map((e) => e.getAttribute('data-status')))])
    const row = (id: string) => page.locator(`#tasks tr[data-task-id="${id}"]`)
    await expect.poll(() => row(pending.id).count()).toBe(1)

    for (const [status, mine, others] of [
      ['failed', failed.id, [done.id, running.id, pending.id]],
      ['pending', pending.id, [done.id, running.id, failed.id]],
      ['completed', done.id, [failed.id, running.id, pending.id]],
    ] as const) {
      const read = page.waitForRequest(
        (r) => r.url().includes(`/api/v1/tasks?`) && new URL(r.url()).searchParams.get('status') === status,
      )
      await page.click(`#task-chips [data-s="${status}"]`)
      await read
      await expect.poll(() => row(mine).count(), { timeout: 5_000 }).toBe(1)
      expect(await statuses()).toEqual([status])
      for (const id of others) expect(await row(id).count()).toBe(0)
      expect(await page.getAttribute(`#task-chips [data-s="${status}"]`, 'aria-pressed')).toBe('true')
    }

    // Live under a filter: a task that reaches the status joins, one that leaves it goes.
    await page.click('#task-chips [data-s="running"]')
    await expect.poll(() => row(running.id).count(), { timeout: 5_000 }).toBe(1)
    const next = await h.assignedTask(a.id, { name: 'filter-next' })
    await h.report(next.id, a.token, { status: 'running', attempt: next.attempt })
    await expect.poll(() => row(next.id).count(), { timeout: 15_000 }).toBe(1)
    await h.report(running.id, a.token, { status: 'completed', attempt: running.attempt })
    await expect.poll(() => row(running.id).count(), { timeout: 15_000 }).toBe(0)
    expect(await statuses()).toEqual(['running'])

    await page.click('#task-chips [data-s=""]')
    await expect.poll(() => row(pending.id).count(), { timeout: 5_000 }).toBe(1)
    expect((await statuses()).length).toBeGreaterThan(2)
    expect(problems).toEqual([])
    await page.close()
  }, 60_000)

  it('opens a task’s detail on a click: its fields and events, updated live, text never markup; Escape, ✕ and the backdrop close it', async () => {
    h.clock.set(Date.now())
    const a = await h.agent({ name: `detail-agent-${Date.now()}` })
    const name = '<img src=x onerror="window.__xss=1">detail-task'
    const t = await h.assignedTask(a.id, {
      name,
      type: 'detail.check',
      priority: 7,
      payload: { html: '<script>window.__xss=2</script>', n: 1 },
    })
    await h.report(t.id, a.token, { status: 'running', attempt: t.attempt, progress: 30 })
    const { page, problems } = await openDashboard()
    const requests: string[] = []
    page.on('request', (r) => requests.push(r.url()))
    const dialog = page.locator('#task-detail')
    const field = (k: string) => page.locator(`#td-fields [data-field="${k}"]`).textContent()
    const eventTypes = () => page.locator('#td-events li .k').allTextContents()

    await page.click(`#tasks tr[data-task-id="${t.id}"]`)
    await expect.poll(() => dialog.evaluate((d: HTMLDialogElement) => d.open)).toBe(true)
    expect(await page.textContent('#td-title')).toBe(name)
    expect(await page.textContent('#td-id')).toBe(t.id)
    await expect.poll(() => field('status')).toBe('running')
    expect(await field('type')).toBe('detail.check')
    expect(await field('agent')).toBe(a.name)
    expect(await field('attempt')).toBe('1 of 3')
    expect(await field('priority')).toBe('7')
    expect(await field('failures')).toBe('0')
    expect(await field('lostCount')).toBe('0')
    expect(await field('progress')).toBe('30%')
    expect(await field('pendingReason')).toBe('–')
    expect(await field('startedAt')).toMatch(/ago\)$/)
    expect(await field('finishedAt')).toBe('–')
    expect(JSON.parse((await page.textContent('#td-payload')) ?? '')).toEqual({
      html: '<script>window.__xss=2</script>',
      n: 1,
    })
    expect(await page.textContent('#td-requirements')).toContain('"scope"')
    expect(await page.textContent('#td-result')).toBe('none')
    await expect.poll(eventTypes).toEqual(['task.created', 'task.assigned', 'task.started'])
    // The log's place is there under its heading: this task wrote none, and it is still live.
    expect(await page.locator('#task-detail h3:has(+ #task-log) #td-log-title').textContent()).toBe('Log')
    await expect.poll(() => page.getAttribute('#task-log', 'data-state')).toBe('live')
    expect(await page.locator('#task-log').evaluate((e) => e.childNodes.length)).toBe(0)
    expect(await page.locator('#td-log-attempt').isHidden()).toBe(true)

    // Live while open: the task ends, its fields and history follow.
    await h.report(t.id, a.token, { status: 'completed', attempt: t.attempt, result: { rows: 7 } })
    await expect.poll(() => field('status'), { timeout: 15_000 }).toBe('completed')
    await expect.poll(eventTypes).toEqual(['task.created', 'task.assigned', 'task.started', 'task.completed'])
    expect(await page.locator('#td-events li').last().locator('.muted').textContent()).toBe(
      'running → completed (attempt 1)',
    )
    expect(JSON.parse((await page.textContent('#td-result')) ?? '')).toEqual({ rows: 7 })
    expect(await field('finishedAt')).toMatch(/ago\)$/)
    mkdirSync('test-results', { recursive: true })
    await page.screenshot({ path: 'test-results/dashboard-detail.png' })

    await page.keyboard.press('Escape')
    await expect.poll(() => dialog.evaluate((d: HTMLDialogElement) => d.open)).toBe(false)
    await page.click(`#tasks tr[data-task-id="${t.id}"]`)
    await expect.poll(() => dialog.evaluate((d: HTMLDialogElement) => d.open)).toBe(true)
    await page.click('#td-close')
    await expect.poll(() => dialog.evaluate((d: HTMLDialogElement) => d.open)).toBe(false)
    // From the event list too; a click beside the panel closes it.
    await page.click(`#log > div[data-task-id="${t.id}"] >> nth=0`)
    await expect.poll(() => dialog.evaluate((d: HTMLDialogElement) => d.open)).toBe(true)
    await page.mouse.click(40, 500)
    await expect.poll(() => dialog.evaluate((d: HTMLDialogElement) => d.open)).toBe(false)

    // Untrusted text stayed text; the log was read for this task only.
    expect(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined()
    expect(await page.locator('img').count()).toBe(0)
    const logReads = requests.filter((u) => /\/logs\b/.test(u))
    expect(logReads.length).toBeGreaterThan(0)
    for (const u of logReads) expect(u).toContain(`/api/v1/tasks/${t.id}/logs`)
    expect(problems).toEqual([])
    await page.close()
  }, 60_000)

  it('shows why a task was requeued, and from where when the event says', async () => {
    h.clock.set(Date.now())
    const a = await h.agent({ name: `requeue-agent-${Date.now()}` })
    const { page, problems } = await openDashboard()
    const t = await h.assignedTask(a.id, { name: 'requeue-me', maxAttempts: 2 })
    await h.report(t.id, a.token, { status: 'running', attempt: t.attempt })
    await h.report(t.id, a.token, { status: 'failed', attempt: t.attempt, error: { code: 'exit_3', message: 'boom' } })
    // Past the backoff, a sweep puts it back in the queue: task.requeued {to, attempt, reason: 'retry'}, no from.
    h.clock.advance(60_000)
    expect((await h.call('POST', '/api/v1/scheduler/sweep')).status).toBe(200)
    // An event line: its type, whom it is about (.n) and what happened (.d).
    const line = (type: string, name: string) =>
      page.locator('#log > div').filter({ hasText: type }).filter({ hasText: name }).first()
    await expect
      .poll(() => line('task.requeued', 'requeue-me').locator('.d').textContent(), { timeout: 15_000 })
      .toBe('requeued (retry, attempt 1) → pending')
    await expect
      .poll(() => line('task.failed', 'requeue-me').locator('.d').textContent())
      .toBe('running → failed (exit_3, attempt 1)')
    // A manual retry says where it came from.
    const u = await h.assignedTask(a.id, { name: 'retry-me', maxAttempts: 1 })
    await h.report(u.id, a.token, { status: 'running', attempt: u.attempt })
    await h.report(u.id, a.token, { status: 'failed', attempt: u.attempt, error: { code: 'exit_1', message: 'no' } })
    expect((await h.call('POST', `/api/v1/tasks/${u.id}/retry`)).status).toBe(200)
    await expect
      .poll(() => line('task.requeued', 'retry-me').locator('.d').textContent(), { timeout: 15_000 })
      .toBe('failed → pending (manual_retry)')
    expect(problems).toEqual([])
    await page.close()
  }, 60_000)

  it('follows a running shell task’s log live: stored output first, then lines as they come, stderr marked, text never markup; the follow ends with the task', async () => {
    h.clock.set(Date.now())
    // A real runner in process (src/agent) with the shell handler, against the app the page reads.
    const appFetch: typeof fetch = async (input, init) => h.app.fetch(new Request(input as RequestInfo, init))
    const reg = (
      await h.call('POST', '/api/v1/registration-tokens', { body: { maxUses: 1, labels: { scope: h.scope() } } })
    ).body
    const runner = new Agent({
      url: 'http://app',
      token: reg.token,
      name: unique('log-runner'),
      capabilities: ['shell'],
      stateDir: false,
      maxWaitSeconds: 1,
      logger: silentAgentLogger,
      fetch: appFetch,
    }).handle('shell', shellHandler({ graceSeconds: 1 }))
    await runner.start()
    const gate = join(mkdtempSync(join(tmpdir(), 'dash-log-')), 'go')
    try {
      const task = await h.task({
        name: 'log-follow',
        type: 'shell',
        payload: {
          command: [
            'echo "first line"',
            'echo "oops <b>bold</b> <img src=x onerror=window.__xss=3>" >&2',
            `while [ ! -e '${gate}' ]; do sleep 0.05; done`,
            'echo "after the gate"',
            "printf '%0300d\\n' 7",
            'echo "last line"',
          ].join('; '),
        },
        requirements: { capabilities: ['shell'] },
      })
      const { page, problems } = await openDashboard({ width: 1280, height: 1000 })
      const requests: string[] = []
      page.on('request', (r) => requests.push(`${r.headers().accept ?? ''} ${r.url()}`))
      await expect
        .poll(async () => (await h.call('GET', `/api/v1/tasks/${task.id}`)).body.status, { timeout: 15_000 })
        .toBe('running')
      // Wait until the command's first output is stored, so the page reads some of it as stored output.
      await expect
        .poll(async () => (await h.call('GET', `/api/v1/tasks/${task.id}/logs`)).body.items.length, {
          timeout: 15_000,
        })
        .toBeGreaterThanOrEqual(3)
      await page.click(`#tasks tr[data-task-id="${task.id}"]`)
      const log = page.locator('#task-log')
      const chunks = () =>
        log
          .locator('span[data-seq]')
          .evaluateAll((els) =>
            els.map((e) => ({ seq: Number(e.getAttribute('data-seq')), cls: e.className, text: e.textContent })),
          )
      await expect.poll(() => log.getAttribute('data-state'), { timeout: 15_000 }).toBe('live')
      await expect.poll(async () => (await log.textContent()) ?? '').toContain('first line')
      let shown = await chunks()
      expect(shown[0]).toMatchObject({ cls: 'system' })
      expect(shown[0]?.text).toMatch(/^\[agent\] started: /)
      // (The system line quotes the command: the output is looked for in stdout and stderr.)
      const output = (list: typeof shown) =>
        list
          .filter((c) => c.cls !== 'system')
          .map((c) => c.text)
          .join('')
      const oops = shown.find((c) => c.cls === 'stderr')
      expect(oops).toEqual({
        seq: oops?.seq,
        cls: 'stderr',
        text: 'oops <b>bold</b> <img src=x onerror=window.__xss=3>\n',
      })
      expect(output(shown)).toContain('first line')
      expect(output(shown)).not.toContain('after the gate')
      // A monospace block that wraps long lines; stderr looks unlike stdout, system lines are dimmed.
      const styles = await page.evaluate(() => {
        const box = document.querySelector('#task-log') as HTMLElement
        const of = (sel: string) => getComputedStyle(box.querySelector(sel) as HTMLElement)
        return {
          font: getComputedStyle(box).fontFamily,
          ws: getComputedStyle(box).whiteSpace,
          out: of('.stdout').color,
          err: of('.stderr').color,
          sys: of('.system').color,
        }
      })
      expect(styles.font).toMatch(/mono/i)
      expect(styles.ws).toBe('pre-wrap')
      expect(new Set([styles.out, styles.err, styles.sys]).size).toBe(3)

      // The command goes on: the new lines arrive on the stream, in order, and the follow ends with the task.
      writeFileSync(gate, '')
      await expect.poll(async () => output(await chunks()), { timeout: 15_000 }).toContain('last line')
      await expect
        .poll(async () => (await h.call('GET', `/api/v1/tasks/${task.id}`)).body.status, { timeout: 15_000 })
        .toBe('completed')
      await expect.poll(() => log.getAttribute('data-state'), { timeout: 15_000 }).toBe('ended')
      shown = await chunks()
      const seqs = shown.map((c) => c.seq)
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b))
      expect(new Set(seqs).size).toBe(seqs.length)
      const text = shown.map((c) => c.text).join('')
      const stored = (await h.call('GET', `/api/v1/tasks/${task.id}/logs`, { headers: { accept: 'text/plain' } })).body
      expect(text).toBe(stored)
      // (stdout and stderr are separate pipes: their order between them is the agent's reading order.)
      expect(output(shown.filter((c) => c.cls === 'stdout'))).toBe(
        `first line\nafter the gate\n${'7'.padStart(300, '0')}\nlast line\n`,
      )
      expect(output(shown.filter((c) => c.cls === 'stderr'))).toBe(
        'oops <b>bold</b> <img src=x onerror=window.__xss=3>\n',
      )
      // It was read stored first, then followed on the stream, and the stream was not reopened after its end.
      const streams = requests.filter((r) => r.startsWith('text/event-stream') && r.includes(`/tasks/${task.id}/logs`))
      expect(streams.length).toBeGreaterThanOrEqual(1)
      expect(requests.some((r) => !r.startsWith('text/event-stream') && r.includes(`/tasks/${task.id}/logs?`))).toBe(
        true,
      )
      const after = requests.length
      // The page has re-read the finished task (as it would to follow a live attempt again),
      // then refreshed twice more (for agents registered now): no log read started meanwhile.
      await until(
        'the detail to show the task completed',
        async () => (await page.textContent('#td-fields [data-field="status"]')) === 'completed',
      )
      await twoRefreshes(page, async () => `/api/v1/agents/${(await h.agent({ name: unique('later') })).id}`)
      expect(requests.slice(after).filter((r) => r.includes('/logs'))).toEqual([])
      // The long line wraps inside the panel: nothing scrolls sideways.
      expect(await log.evaluate((e) => e.scrollWidth <= e.clientWidth)).toBe(true)
      expect(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined()
      expect(await page.locator('#task-log img, #task-log b').count()).toBe(0)
      mkdirSync('test-results', { recursive: true })
      await log.scrollIntoViewIfNeeded()
      await page.screenshot({ path: 'test-results/dashboard-log-1280.png' })
      expect(problems).toEqual([])
      await page.close()
    } finally {
      runner.kill()
      await runner.done().catch(() => {})
    }
  }, 90_000)

  it('scrolls with a live log while the reader is at the bottom, stays put once they scroll up, and stops following when the panel closes', async () => {
    h.clock.set(Date.now())
    const a = await h.agent({ name: `log-agent-${Date.now()}` })
    const t = await h.assignedTask(a.id, { name: 'log-scroll', maxAttempts: 2 })
    await h.report(t.id, a.token, { status: 'running', attempt: t.attempt })
    let seq = 0
    const write = async (n: number, stream = 'stdout') => {
      const chunks = Array.from({ length: n }, () => ({ seq: seq++, stream, data: `line ${seq} of the output\n` }))
      const res = await h.call('POST', `/api/v1/tasks/${t.id}/logs`, {
        token: a.token,
        body: { attempt: t.attempt, chunks },
      })
      expect(res.status).toBe(202)
    }
    await write(80)
    const { page, problems } = await openDashboard({ width: 390, height: 844 })
    const requests: string[] = []
    page.on('request', (r) => requests.push(r.url()))
    page.on('requestfinished', (r) => requests.push(`done ${r.url()}`))
    page.on('requestfailed', (r) => requests.push(`failed ${r.url()}`))
    await page.click(`#tasks tr[data-task-id="${t.id}"] td:nth-child(3)`)
    const log = page.locator('#task-log')
    const count = () => log.locator('span[data-seq]').count()
    const atBottom = () => log.evaluate((e) => e.scrollTop + e.clientHeight >= e.scrollHeight - 4)
    await expect.poll(() => log.getAttribute('data-state'), { timeout: 15_000 }).toBe('live')
    await expect.poll(count).toBe(80)
    expect(await log.evaluate((e) => e.scrollHeight > e.clientHeight)).toBe(true)
    expect(await atBottom()).toBe(true)
    await write(20, 'stderr')
    await expect.poll(count, { timeout: 10_000 }).toBe(100)
    await expect.poll(atBottom).toBe(true)
    expect(await log.locator('.stderr').count()).toBe(20)
    await page.locator('#task-log').scrollIntoViewIfNeeded()
    await page.screenshot({ path: 'test-results/dashboard-log-390.png' })
    const panel = await page.evaluate(() => {
      const body = document.querySelector('#task-detail .td-body') as HTMLElement
      return { wide: body.scrollWidth > body.clientWidth }
    })
    expect(panel).toEqual({ wide: false })

    // Scrolled up, the reader stays where they are as lines come; a button offers the newest.
    await log.hover()
    await page.mouse.wheel(0, -400)
    await expect.poll(atBottom).toBe(false)
    const top = await log.evaluate((e) => e.scrollTop)
    await write(20)
    await expect.poll(count, { timeout: 10_000 }).toBe(120)
    expect(await log.evaluate((e) => e.scrollTop)).toBe(top)
    expect(await atBottom()).toBe(false)
    expect(await page.locator('#td-log-jump').isVisible()).toBe(true)
    // Back at the bottom, it follows again.
    await log.evaluate((e) => {
      e.scrollTop = e.scrollHeight
    })
    await expect.poll(() => page.locator('#td-log-jump').isHidden()).toBe(true)
    await write(20)
    await expect.poll(count, { timeout: 10_000 }).toBe(140)
    await expect.poll(atBottom).toBe(true)

    // Closed, the stream is let go (its request ends): lines written then are not read.
    const streamUrl = (u: string) => u.includes(`/tasks/${t.id}/logs`) && !u.includes('limit=')
    await page.keyboard.press('Escape')
    await expect.poll(() => requests.filter((u) => /^(done|failed) /.test(u) && streamUrl(u)).length).toBeGreaterThan(0)
    const before = requests.length
    await write(5)
    // News of the task comes after: the page re-reads the task on its next refreshes, not its log.
    await twoRefreshes(page, async (n) => {
      await h.report(t.id, a.token, { status: 'running', attempt: t.attempt, progress: 10 * n })
      return `/api/v1/tasks/${t.id}`
    })
    expect(requests.slice(before).filter((u) => u.includes('/logs'))).toEqual([])

    // A second attempt: the latest is shown, with a choice of the earlier one.
    await h.report(t.id, a.token, { status: 'failed', attempt: t.attempt, error: { code: 'exit_1', message: 'no' } })
    h.clock.advance(60_000)
    expect((await h.call('POST', '/api/v1/scheduler/sweep')).status).toBe(200)
    const again = (await h.call('POST', '/api/v1/tasks/execute', { body: { taskId: t.id, agentId: a.id } })).body
    expect(again.attempt).toBe(t.attempt + 1)
    expect(
      (
        await h.call('POST', `/api/v1/tasks/${t.id}/logs`, {
          token: a.token,
          body: { attempt: again.attempt, chunks: [{ seq: 0, stream: 'stdout', data: 'second try\n' }] },
        })
      ).status,
    ).toBe(202)
    await page.click(`#tasks tr[data-task-id="${t.id}"] td:nth-child(3)`)
    await expect.poll(async () => (await log.textContent()) ?? '', { timeout: 10_000 }).toBe('second try\n')
    const sel = page.locator('#td-log-attempt')
    expect(await sel.isVisible()).toBe(true)
    expect(await sel.inputValue()).toBe(String(again.attempt))
    await sel.selectOption(String(t.attempt))
    await expect.poll(count, { timeout: 10_000 }).toBe(145)
    await expect.poll(() => log.getAttribute('data-state')).toBe('ended')
    expect(problems).toEqual([])
    await page.close()
  }, 60_000)

  it('resumes a dropped log stream with Last-Event-ID, and keeps only the newest 5,000 chunks with a note', async () => {
    h.clock.set(Date.now())
    const a = await h.agent({ name: `log-bound-agent-${Date.now()}` })
    const t = await h.assignedTask(a.id, { name: 'log-bound' })
    await h.report(t.id, a.token, { status: 'running', attempt: t.attempt })
    let seq = 0
    const write = async (n: number) => {
      for (let left = n; left > 0; left -= 500) {
        const chunks = Array.from({ length: Math.min(500, left) }, () => ({
          seq: seq++,
          stream: 'stdout',
          data: `chunk ${seq - 1}\n`,
        }))
        const res = await h.call('POST', `/api/v1/tasks/${t.id}/logs`, {
          token: a.token,
          body: { attempt: t.attempt, chunks },
        })
        expect(res.status).toBe(202)
      }
    }
    await write(5100)
    const { page, problems } = await openDashboard({ width: 1280, height: 1000 })
    // The first stream request is cut after one made-up chunk (no 'event: end'): the page reconnects, saying where it was.
    const resumedFrom: (string | undefined)[] = []
    let cut = false
    await page.route(
      (u) => u.pathname === `/api/v1/tasks/${t.id}/logs`,
      async (route) => {
        const req = route.request()
        if (!(req.headers().accept ?? '').includes('text/event-stream')) return route.continue()
        resumedFrom.push(req.headers()['last-event-id'])
        if (cut) return route.continue()
        cut = true
        const chunk = { seq: 5100, stream: 'system', data: '[… dropped here …]\n', at: new Date().toISOString() }
        return route.fulfill({
          status: 200,
          headers: { 'content-type': 'text/event-stream' },
          body: `retry: 2000\n\nid: 5100\nevent: system\ndata: ${JSON.stringify(chunk)}\n\n`,
        })
      },
    )
    await page.click(`#tasks tr[data-task-id="${t.id}"]`)
    const log = page.locator('#task-log')
    await expect.poll(() => log.locator('span[data-seq]').count(), { timeout: 15_000 }).toBe(5000)
    await expect.poll(() => resumedFrom.length, { timeout: 10_000 }).toBe(2)
    expect(resumedFrom).toEqual(['5099', '5100'])
    await expect.poll(() => log.getAttribute('data-state')).toBe('live')
    seq = 5101
    await write(3)
    await expect
      .poll(() => log.locator('span[data-seq]').last().textContent(), { timeout: 10_000 })
      .toBe('chunk 5103\n')
    const seqs = await log
      .locator('span[data-seq]')
      .evaluateAll((els) => els.map((e) => Number(e.getAttribute('data-seq'))))
    expect(seqs).toHaveLength(5000)
    expect(seqs.at(-5)).toBe(5099)
    expect(await log.locator('span[data-seq="5100"]').getAttribute('class')).toBe('system')
    // What the page let go of is said, with where to read it.
    const note = (await log.locator('.cut').textContent()) ?? ''
    expect(note).toContain('104 earlier chunks')
    expect(note).toContain(`/api/v1/tasks/${t.id}/logs?attempt=${t.attempt}`)
    expect(await log.evaluate((e) => e.firstElementChild?.className)).toBe('cut')
    await h.report(t.id, a.token, { status: 'completed', attempt: t.attempt })
    await expect.poll(() => log.getAttribute('data-state'), { timeout: 15_000 }).toBe('ended')
    expect(problems).toEqual([])
    await page.close()
  }, 90_000)

  it('at 390 px wide: the page is no wider than the viewport, wide tables scroll inside their card, figures stay on one line, the task detail fits', async () => {
    h.clock.set(Date.now())
    const a = await h.agent({
      name: `a-very-long-agent-name-that-goes-on-and-on-${Date.now()}`,
      capabilities: ['cpu', 'docker', 'playwright', 'gpu', 'cuda'],
    })
    const t = await h.assignedTask(a.id, {
      name: 'a-task-with-a-rather-long-name-for-a-phone-screen',
      type: 'some.long.task.type.name',
    })
    await h.report(t.id, a.token, { status: 'running', attempt: t.attempt })
    await h.report(t.id, a.token, {
      status: 'failed',
      attempt: t.attempt,
      error: { code: 'exit_1', message: 'x'.repeat(300) },
    })
    const { page, problems } = await openDashboard({ width: 390, height: 844 })
    await page.waitForFunction(() => document.querySelectorAll('#agents tr').length > 0)
    expect(await pageOverflow(page)).toEqual({ scrollWidth: 390, innerWidth: 390, wide: [] })
    // The task table is wider than its card and scrolls there.
    const tasksBox = page.locator('#tasks').locator('xpath=ancestor::div[contains(@class, "scroll")]')
    const box = await tasksBox.evaluate((e) => ({ scroll: e.scrollWidth, client: e.clientWidth }))
    expect(box.scroll).toBeGreaterThan(box.client)
    // Every KPI figure is one line, none cut off.
    for (const f of await kpiFigures(page)) expect(f).toEqual({ id: f.id, ws: 'nowrap', clipped: false })
    mkdirSync('test-results', { recursive: true })
    await page.screenshot({ path: 'test-results/dashboard-390.png', fullPage: true })
    // The task detail takes the whole screen and does not scroll sideways either.
    await page.click(`#tasks tr[data-task-id="${t.id}"] td:nth-child(3)`)
    await expect.poll(() => page.locator('#td-fields [data-field="status"]').textContent()).toBe('failed')
    await expect.poll(() => page.locator('#td-events li').count()).toBeGreaterThan(3)
    const panel = await page.evaluate(() => {
      const d = document.querySelector('#task-detail') as HTMLDialogElement
      const body = d.querySelector('.td-body') as HTMLElement
      return { open: d.open, right: d.getBoundingClientRect().right, wide: body.scrollWidth > body.clientWidth }
    })
    expect(panel).toEqual({ open: true, right: 390, wide: false })
    await page.screenshot({ path: 'test-results/dashboard-detail-390.png' })
    await page.keyboard.press('Escape')
    expect(problems).toEqual([])
    await page.close()

    // And at 1280 px, a common laptop.
    const wide = await openDashboard({ width: 1280, height: 1000 })
    await wide.page.waitForFunction(() => document.querySelectorAll('#agents tr').length > 0)
    expect(await pageOverflow(wide.page)).toEqual({ scrollWidth: 1280, innerWidth: 1280, wide: [] })
    for (const f of await kpiFigures(wide.page)) expect(f).toEqual({ id: f.id, ws: 'nowrap', clipped: false })
    await wide.page.screenshot({ path: 'test-results/dashboard-1280.png', fullPage: true })
    expect(wide.problems).toEqual([])
    await wide.page.close()
  }, 60_000)
})

/** Whether a dialog (`#task-detail`, `#agent-detail`, `#confirm`) is open. */
const isOpen = (page: Page, id: string) => page.locator(`#${id}`).evaluate((d: HTMLDialogElement) => d.open)

/** Clicks an action's button, waits for its confirmation, and answers it (`#cf-ok` or `#cf-cancel`). */
async function act(page: Page, button: string, answer: 'ok' | 'cancel' = 'ok') {
  // Dispatched on the button as it is now: live updates may redraw the detail around it,
  // and a click that waits for the button to hold still can wait out its timeout.
  await page.locator(button).dispatchEvent('click')
  await expect.poll(() => isOpen(page, 'confirm')).toBe(true)
  await page.click(`#cf-${answer}`)
}

/** The writes a page made (method, path and query, and whether they carried `token`). */
function writesOf(page: Page, token: string) {
  const writes: string[] = []
  page.on('request', (r) => {
    if (r.method() === 'GET') return
    const u = new URL(r.url())
    writes.push(
      `${r.method()} ${u.pathname}${u.search}${r.headers().authorization === `Bearer ${token}` ? '' : ' (no token)'}`,
    )
  })
  return writes
}

describe.runIf(enabled)('the dashboard for an operator: actions, search, the agent detail, failures by code', () => {
  it('lets an operator cancel and retry a task, each confirmed first, and shows the API’s refusal', async () => {
    h.clock.set(Date.now())
    const a = await h.agent({ name: unique('act-agent'), maxConcurrentTasks: 4 })
    const waiting = await h.pendingTask({ name: 'act-waiting' })
    const running = await h.assignedTask(a.id, { name: 'act-running' })
    await h.report(running.id, a.token, { status: 'running', attempt: running.attempt })
    const failed = await h.assignedTask(a.id, { name: 'act-failed', maxAttempts: 1 })
    await h.report(failed.id, a.token, {
      status: 'failed',
      attempt: failed.attempt,
      error: { code: 'x', message: 'no' },
    })
    const { page, problems } = await openDashboard(undefined, 'operator')
    const writes = writesOf(page, await h.token('operator', 'dashboard-operator'))
    const field = (k: string) => page.locator(`#td-fields [data-field="${k}"]`).textContent()
    const actions = () =>
      page.locator('#td-actions [data-action]').evaluateAll((b) => b.map((e) => e.getAttribute('data-action')))
    const apiTask = async (id: string) => (await h.call('GET', `/api/v1/tasks/${id}`)).body

    // A pending task: cancel only. Kept as is, nothing happens; confirmed, it is cancelled.
    await page.click(`#tasks tr[data-task-id="${waiting.id}"]`)
    await expect.poll(() => field('status')).toBe('pending')
    expect(await actions()).toEqual(['cancel'])
    await act(page, '#td-actions [data-action="cancel"]', 'cancel')
    await expect.poll(() => isOpen(page, 'confirm')).toBe(false)
    expect((await apiTask(waiting.id)).status).toBe('pending')
    await act(page, '#td-actions [data-action="cancel"]')
    expect(await page.textContent('#cf-title')).toBe('Cancel “act-waiting”?')
    await expect.poll(() => isOpen(page, 'confirm')).toBe(false)
    expect((await apiTask(waiting.id)).status).toBe('cancelled')
    await expect.poll(() => field('status')).toBe('cancelled')
    // Cancelled, it may be retried: back to pending.
    await expect.poll(actions).toEqual(['retry'])
    await act(page, '#td-actions [data-action="retry"]')
    await expect.poll(() => field('status')).toBe('pending')
    expect((await apiTask(waiting.id)).status).toBe('pending')
    await page.keyboard.press('Escape')
    await expect.poll(() => isOpen(page, 'task-detail')).toBe(false)

    // A running task: its agent is asked to stop it.
    await page.click(`#tasks tr[data-task-id="${running.id}"]`)
    await expect.poll(() => field('status')).toBe('running')
    await act(page, '#td-actions [data-action="cancel"]')
    await expect.poll(() => field('status')).toBe('running · cancel requested')
    expect(await apiTask(running.id)).toMatchObject({ status: 'running', cancelRequested: true })
    await expect.poll(actions).toEqual([])
    await page.keyboard.press('Escape')

    // Refused: the task was retried elsewhere meanwhile; the dialog stays open with the API's words.
    await page.click(`#tasks tr[data-task-id="${failed.id}"]`)
    await expect.poll(() => field('status')).toBe('failed')
    expect(await actions()).toEqual(['retry'])
    // Retried through the API while the operator's confirmation is open (the live update may
    // then redraw the detail, but the dialog holds what was asked).
    await page.click('#td-actions [data-action="retry"]')
    await expect.poll(() => isOpen(page, 'confirm')).toBe(true)
    expect((await h.call('POST', `/api/v1/tasks/${failed.id}/retry`)).status).toBe(200)
    await page.click('#cf-ok')
    await expect.poll(() => page.locator('#cf-err').isVisible()).toBe(true)
    expect(await page.textContent('#cf-err')).toBe(
      'The task is pending; only failed, cancelled or timed-out tasks can be retried.',
    )
    expect(await page.getAttribute('#cf-err', 'data-code')).toBe('invalid_transition')
    expect(await isOpen(page, 'confirm')).toBe(true)
    await page.click('#cf-cancel')
    await expect.poll(() => isOpen(page, 'confirm')).toBe(false)
    // The detail caught up with the move made elsewhere: cancel is offered now.
    await expect.poll(() => field('status')).toBe('pending')
    await expect.poll(actions).toEqual(['cancel'])

    // Every write went through the page's one fetch, with the operator's token, and only on a confirm.
    expect(writes).toEqual([
      `POST /api/v1/tasks/${waiting.id}/cancel`,
      `POST /api/v1/tasks/${waiting.id}/retry`,
      `POST /api/v1/tasks/${running.id}/cancel`,
      `POST /api/v1/tasks/${failed.id}/retry`,
    ])
    expect(problems).toEqual([])
    await page.close()
  }, 90_000)

  it('lets an operator drain an agent, set it to maintenance and online, and delete it, forcing when it holds tasks', async () => {
    h.clock.set(Date.now())
    const a = await h.agent({ name: unique('act-fleet'), maxConcurrentTasks: 2 })
    for (const n of [1, 2]) {
      const t = await h.assignedTask(a.id, { name: `held-${n}` })
      await h.report(t.id, a.token, { status: 'running', attempt: t.attempt })
    }
    const other = await h.agent({ name: unique('act-gone') })
    const { page, problems } = await openDashboard(undefined, 'operator')
    const writes = writesOf(page, await h.token('operator', 'dashboard-operator'))
    const field = (k: string) => page.locator(`#ad-fields [data-field="${k}"]`).textContent()
    const actions = () =>
      page.locator('#ad-actions [data-action]').evaluateAll((b) => b.map((e) => e.getAttribute('data-action')))
    const apiStatus = async () => (await h.call('GET', `/api/v1/agents/${a.id}`)).body.status
    const row = page.locator(`#agents tr[data-agent-id="${a.id}"]`)

    await row.click()
    await expect.poll(() => isOpen(page, 'agent-detail')).toBe(true)
    await expect.poll(() => field('status')).toBe('online')
    expect(await actions()).toEqual(['drain', 'maintenance', 'quarantine', 'delete'])
    for (const [action, status, offered, value] of [
      ['drain', 'draining', ['maintenance', 'resume', 'quarantine', 'delete'], '600'],
      ['maintenance', 'maintenance', ['resume', 'quarantine', 'delete'], null],
      ['resume', 'online', ['drain', 'maintenance', 'quarantine', 'delete'], null],
      ['quarantine', 'quarantined', ['release', 'delete'], 'bad disk'],
      ['release', 'online', ['drain', 'maintenance', 'quarantine', 'delete'], null],
    ] as const) {
      if (value !== null) {
        // The dialog asks for the value the action needs (a drain's deadline, a quarantine's reason).
        await page.click(`#ad-actions [data-action="${action}"]`)
        await expect.poll(() => isOpen(page, 'confirm')).toBe(true)
        await page.fill('#cf-input', value)
        await page.click('#cf-ok')
        await expect.poll(() => isOpen(page, 'confirm')).toBe(false)
      } else await act(page, `#ad-actions [data-action="${action}"]`)
      if (action === 'quarantine') {
        // The fleet table shows why.
        await expect.poll(() => row.locator('.qr').textContent()).toBe('bad disk')
      }
      await expect.poll(() => field('status')).toBe(status)
      expect(await apiStatus()).toBe(status)
      await expect.poll(actions).toEqual(offered)
      // The fleet table follows.
      await expect.poll(() => row.locator('.st').textContent()).toBe(status)
    }

    // Delete: refused while it holds tasks, the dialog says so and offers to force it.
    await act(page, '#ad-actions [data-action="delete"]')
    await expect.poll(() => page.textContent('#cf-ok')).toBe('Delete and requeue its tasks')
    expect(await page.textContent('#cf-err')).toBe(
      'The agent holds 2 assigned or running task(s); pass force=true to put them back to pending.',
    )
    expect(await apiStatus()).toBe('online')
    await page.screenshot({ path: 'test-results/dashboard-confirm.png' })
    await page.click('#cf-ok')
    await expect.poll(() => isOpen(page, 'confirm')).toBe(false)
    await expect.poll(() => page.textContent('#ad-note')).toBe('This agent was deleted.')
    expect(await actions()).toEqual([])
    expect((await h.call('GET', `/api/v1/agents/${a.id}`)).status).toBe(404)
    await expect.poll(() => row.count()).toBe(0)
    await page.keyboard.press('Escape')

    // Refused: an agent deleted elsewhere meanwhile (404), in the API's words.
    await page.click(`#agents tr[data-agent-id="${other.id}"]`)
    await expect.poll(() => field('status')).toBe('online')
    expect((await h.call('DELETE', `/api/v1/agents/${other.id}`)).status).toBe(204)
    await act(page, '#ad-actions [data-action="drain"]')
    await expect.poll(() => page.textContent('#cf-err')).toBe(`No agent with id ${other.id}.`)
    expect(await page.getAttribute('#cf-err', 'data-code')).toBe('not_found')
    await page.keyboard.press('Escape')
    await expect.poll(() => isOpen(page, 'confirm')).toBe(false)

    expect(writes).toEqual([
      `POST /api/v1/agents/${a.id}/drain`,
      `PATCH /api/v1/agents/${a.id}/status`,
      `POST /api/v1/agents/${a.id}/resume`,
      `POST /api/v1/agents/${a.id}/quarantine`,
      `POST /api/v1/agents/${a.id}/release`,
      `DELETE /api/v1/agents/${a.id}`,
      `DELETE /api/v1/agents/${a.id}?force=true`,
      `POST /api/v1/agents/${other.id}/drain`,
    ])
    expect(problems).toEqual([])
    await page.close()
  }, 90_000)

  it('shows rollouts with their progress, wave and errors against the budget; an operator pauses and cancels one; a target opens its task', async () => {
    h.clock.set(Date.now())
    const agents = [await h.agent({ name: unique('ro-agent') }), await h.agent({ name: unique('ro-agent') })]
    const made = await h.call('POST', '/api/v1/rollouts', {
      body: {
        name: 'dash-rollout',
        task: { type: 'test.run' },
        target: { labels: { scope: h.scope() } },
        strategy: { maxConcurrency: 1, maxErrors: 1 },
      },
    })
    expect(made.status).toBe(201)
    const id = made.body.id as string
    const { page, problems } = await openDashboard({ width: 1440, height: 1100 }, 'operator')
    const row = `#rollouts tr[data-rollout-id="${id}"]`
    await page.waitForSelector(row)
    expect(await page.textContent(`${row} td:nth-child(2)`)).toBe('running')
    expect(await page.textContent(`${row} td:nth-child(3)`)).toContain('0/2')
    expect(await page.textContent(`${row} td:nth-child(4)`)).toBe('1/1')
    expect(await page.textContent(`${row} td:nth-child(5)`)).toBe('0/1')
    await page.click(`${row} [data-rollout-act="pause"]`)
    await expect.poll(async () => (await h.call('GET', `/api/v1/rollouts/${id}`)).body.status).toBe('paused')
    await expect.poll(() => page.textContent(`${row} td:nth-child(2)`)).toBe('paused')
    await page.click(`${row} td:first-child`)
    await expect.poll(() => page.locator('#rollout-targets tr').count()).toBe(2)
    await page.click('#rollout-targets tr[data-task-id]')
    await expect.poll(() => page.textContent('#td-title')).toBe('dash-rollout')
    await page.keyboard.press('Escape')
    await page.click(`${row} [data-rollout-act="cancel"]`)
    await expect.poll(async () => (await h.call('GET', `/api/v1/rollouts/${id}`)).body.status).toBe('cancelled')
    await expect.poll(() => page.locator(`${row} [data-rollout-act]`).count()).toBe(0)
    expect(agents).toHaveLength(2)
    expect(problems).toEqual([])
    await page.close()
  }, 60_000)

  it('offers a viewer no action, on a task or an agent', async () => {
    h.clock.set(Date.now())
    const a = await h.agent({ name: unique('view-agent') })
    const t = await h.assignedTask(a.id, { name: 'view-failed', maxAttempts: 1 })
    await h.report(t.id, a.token, { status: 'failed', attempt: t.attempt, error: { code: 'x', message: 'no' } })
    const p = await h.pendingTask({ name: 'view-pending' })
    const { page, problems } = await openDashboard()
    for (const id of [t.id, p.id]) {
      await page.click(`#tasks tr[data-task-id="${id}"]`)
      await expect.poll(() => page.textContent('#td-title')).toBe(id === t.id ? 'view-failed' : 'view-pending')
      await expect.poll(() => page.locator('#td-fields [data-field="status"]').textContent()).toMatch(/failed|pending/)
      expect(await page.locator('#td-actions button').count()).toBe(0)
      await page.keyboard.press('Escape')
    }
    await page.click(`#agents tr[data-agent-id="${a.id}"]`)
    await expect.poll(() => page.locator('#ad-fields [data-field="status"]').textContent()).toBe('online')
    await expect.poll(() => page.locator('#ad-failures tr[data-task-id]').count()).toBe(1)
    expect(await page.textContent('#ad-fields [data-field="taskTypes"]')).toBe('any')
    expect(await page.locator('#ad-actions button').count()).toBe(0)
    expect(await page.locator('[data-action]').count()).toBe(0)
    expect(await isOpen(page, 'confirm')).toBe(false)
    expect(problems).toEqual([])
    await page.close()
  }, 60_000)

  it('finds tasks by id, by type, or by the start of their name in any case, and keeps the search live', async () => {
    h.clock.set(Date.now())
    const u = unique('find')
    const t1 = await h.pendingTask({ name: `${u}-alpha-1`, type: `findtype.${u}` })
    const t2 = await h.pendingTask({ name: `${u}-Alpha-2`, type: 'other.type' })
    const t3 = await h.pendingTask({ name: `${u}-beta`, type: `findtype.${u}` })
    const t4 = await h.pendingTask({ name: `x-${u}`, type: 'other.type' })
    const { page, problems } = await openDashboard()
    const reads: string[] = []
    page.on('request', (r) => reads.push(decodeURIComponent(new URL(r.url()).pathname + new URL(r.url()).search)))
    const shown = () =>
      page.locator('#tasks tr[data-task-id]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-task-id')))
    const find = async (q: string) => {
      await page.fill('#task-search', q)
      await page.press('#task-search', 'Enter')
    }

    await find(`${u.toUpperCase()}-ALPHA`)
    await expect.poll(shown).toEqual([t2.id, t1.id])
    expect(reads).toContain(`/api/v1/tasks?limit=60&name=${u.toUpperCase()}-ALPHA`)
    expect(await page.textContent('#task-count')).toBe('2 found')
    await find(`findtype.${u}`)
    await expect.poll(shown).toEqual([t3.id, t1.id])
    expect(reads).toContain(`/api/v1/tasks?limit=60&type=findtype.${u}`)
    await find(` ${t4.id.toUpperCase()} `)
    await expect.poll(shown).toEqual([t4.id])
    expect(reads).toContain(`/api/v1/tasks/${t4.id}`)
    // A found task opens like any other.
    await page.click(`#tasks tr[data-task-id="${t4.id}"]`)
    await expect.poll(() => page.textContent('#td-title')).toBe(`x-${u}`)
    await page.keyboard.press('Escape')
    await find(`${u}-nothing`)
    await expect
      .poll(() => page.textContent('#tasks'))
      .toContain(`No task has the type “${u}-nothing” or a name starting with it`)

    // Live: a task created that matches joins; one that does not, stays out.
    await find(`${u}-alpha`)
    await expect.poll(shown).toEqual([t2.id, t1.id])
    const miss = await h.pendingTask({ name: `${u}-gamma` })
    const hit = await h.pendingTask({ name: `${u}-ALPHA-3` })
    await expect.poll(shown, { timeout: 15_000 }).toEqual([hit.id, t2.id, t1.id])
    expect(await shown()).not.toContain(miss.id)
    // Typing (no Enter) searches too, after a pause; emptied, the table shows the newest again.
    await page.fill('#task-search', '')
    await expect.poll(async () => (await shown()).length).toBeGreaterThan(5)
    expect(await page.textContent('#task-count')).toMatch(/^\d+ newest/)
    expect(problems).toEqual([])
    await page.close()
  }, 60_000)

  it('opens an agent’s detail: its settings, last metrics, running tasks and newest failures, live; tasks open from it and it from a task', async () => {
    h.clock.set(Date.now())
    const c = await h.agent({
      name: unique('drawer-agent'),
      capabilities: ['cpu', 'gpu'],
      maxConcurrentTasks: 3,
      labels: { zone: 'z1' },
      taskTypes: ['drawer.run', 'test.run'],
      description: 'the <b>drawer</b> agent',
    })
    const metrics = { cpu: 0.42, memoryMb: 2048, disk: { freeGb: 12 } }
    expect(
      (await h.call('POST', '/api/v1/agents/heartbeat', { token: c.token, body: { agentId: c.id, metrics } })).status,
    ).toBe(200)
    const run = await h.assignedTask(c.id, { name: 'drawer-running', type: 'drawer.run' })
    await h.report(run.id, c.token, { status: 'running', attempt: run.attempt, progress: 20 })
    const fail = async (name: string, code: string) => {
      const t = await h.assignedTask(c.id, { name, maxAttempts: 1 })
      await h.report(t.id, c.token, { status: 'failed', attempt: t.attempt, error: { code, message: `${name} broke` } })
      h.clock.advance(1000)
      return t
    }
    const older = await fail('drawer-fail-old', 'exit_7')
    const newer = await fail('drawer-fail-new', 'oom')
    const { page, problems } = await openDashboard()
    const field = (k: string) => page.locator(`#ad-fields [data-field="${k}"]`).textContent()
    const ids = (sel: string) =>
      page.locator(`${sel} tr[data-task-id]`).evaluateAll((r) => r.map((e) => e.getAttribute('data-task-id')))

    await page.click(`#agents tr[data-agent-id="${c.id}"]`)
    await expect.poll(() => isOpen(page, 'agent-detail')).toBe(true)
    expect(await page.textContent('#ad-title')).toBe(c.name)
    expect(await page.textContent('#ad-id')).toBe(c.id)
    await expect.poll(() => ids('#ad-running')).toEqual([run.id])
    expect(await field('status')).toBe('online')
    expect(await field('load')).toBe('1 of 3 slots')
    expect(await field('capabilities')).toBe('cpu, gpu')
    expect(await field('labels')).toContain('zone=z1')
    expect(await field('taskTypes')).toBe('drawer.run, test.run')
    expect(await field('description')).toBe('the <b>drawer</b> agent')
    expect(await field('lastHeartbeatAt')).toMatch(/ago\)$/)
    expect(JSON.parse((await page.textContent('#ad-metrics')) ?? '')).toEqual(metrics)
    expect(await page.locator('#ad-running tr').first().locator('td').allTextContents()).toEqual([
      'drawer-running',
      'running',
      'drawer.run',
      '1/3',
      '20%',
      expect.stringMatching(/ago$/),
    ])
    // Failures: the newest first, with their error.
    expect(await ids('#ad-failures')).toEqual([newer.id, older.id])
    expect(await page.locator('#ad-failures tr').first().locator('td').nth(2).textContent()).toBe(
      'oom: drawer-fail-new broke',
    )

    // Live: work placed on it appears.
    const more = await h.assignedTask(c.id, { name: 'drawer-more' })
    await expect.poll(() => ids('#ad-running'), { timeout: 15_000 }).toEqual([more.id, run.id])
    await expect.poll(() => field('load')).toBe('2 of 3 slots')

    // A task opens from it, over it; closed, the agent is still there.
    await page.click(`#ad-failures tr[data-task-id="${older.id}"]`)
    await expect.poll(() => isOpen(page, 'task-detail')).toBe(true)
    await expect.poll(() => page.textContent('#td-title')).toBe('drawer-fail-old')
    await page.keyboard.press('Escape')
    await expect.poll(() => isOpen(page, 'task-detail')).toBe(false)
    expect(await isOpen(page, 'agent-detail')).toBe(true)
    await page.click('#ad-close')
    await expect.poll(() => isOpen(page, 'agent-detail')).toBe(false)

    // And the agent opens from a task's detail.
    await page.click(`#tasks tr[data-task-id="${run.id}"]`)
    await expect.poll(() => page.textContent('#td-summary [data-agent-id]')).toBe(c.name)
    await page.click('#td-summary [data-agent-id]')
    await expect.poll(() => isOpen(page, 'agent-detail')).toBe(true)
    await expect.poll(() => page.textContent('#ad-title')).toBe(c.name)
    expect(await page.locator('#agent-detail b').count()).toBe(0)
    await page.screenshot({ path: 'test-results/dashboard-agent.png' })
    expect(problems).toEqual([])
    await page.close()
  }, 60_000)

  it('names the task in the feed’s progress events, also one the table does not hold', async () => {
    h.clock.set(Date.now())
    const a = await h.agent({ name: unique('feed-agent') })
    const t = await h.assignedTask(a.id, { name: 'feed-progress-task' })
    await h.report(t.id, a.token, { status: 'running', attempt: t.attempt })
    const { page, problems } = await openDashboard()
    // Under the "completed" filter the table holds no running task: the name is not known from it.
    await page.click('#task-chips [data-s="completed"]')
    await expect.poll(() => page.locator(`#tasks tr[data-task-id="${t.id}"]`).count()).toBe(0)
    await h.report(t.id, a.token, { status: 'running', attempt: t.attempt, progress: 55 })
    const line = page.locator(`#log > div[data-task-id="${t.id}"]`).filter({ hasText: 'task.progress' }).first()
    await expect.poll(() => line.locator('.d').textContent(), { timeout: 15_000 }).toBe('progress 55% (attempt 1)')
    await expect.poll(() => line.locator('.n').textContent(), { timeout: 15_000 }).toBe('feed-progress-task')
    expect(problems).toEqual([])
    await page.close()
  }, 60_000)

  it('shows failures by error code for the last hour, a spike at a glance, and slots over the same agents', async () => {
    h.clock.set(Date.now())
    const big = await h.agent({ name: unique('spike-agent'), maxConcurrentTasks: 300 })
    const made = await h.call('POST', '/api/v1/tasks/batch', {
      body: {
        tasks: Array.from({ length: 300 }, (_, i) => ({
          name: `spike-${i}`,
          type: 'etl.load',
          maxAttempts: 1,
          requirements: { agentId: big.id, labels: { scope: h.scope() } },
        })),
      },
    })
    expect(made.status).toBe(201)
    // Placed at once, the most of them; the rest by hand.
    const items: { id: string; attempt: number; status: string }[] = []
    for (const t of made.body.items as typeof items)
      items.push(
        t.status === 'assigned'
          ? t
          : (await h.call('POST', '/api/v1/tasks/execute', { body: { taskId: t.id, agentId: big.id } })).body,
      )
    expect(items.filter((t) => t.status === 'assigned')).toHaveLength(300)
    // Each started, then failed with the same code: one heartbeat carries every report.
    const reports = items.flatMap((t) => [
      { taskId: t.id, status: 'running', attempt: t.attempt },
      { taskId: t.id, status: 'failed', attempt: t.attempt, error: { code: 'exit_127', message: 'command not found' } },
    ])
    const hb = await h.call('POST', '/api/v1/agents/heartbeat', {
      token: big.token,
      body: { agentId: big.id, reports },
    })
    expect(hb.status).toBe(200)
    expect(hb.body.reports.every((r: { ok: boolean }) => r.ok)).toBe(true)

    const { page, problems } = await openDashboard()
    const rows = page.locator('#failures .fc')
    await expect.poll(() => rows.first().getAttribute('data-code')).toBe('exit_127')
    expect(await rows.first().locator('.n').textContent()).toBe('300')
    // The spike's bar is the full width; every other code's is a sliver beside it.
    const widths = await rows.locator('.b i').evaluateAll((bars) => bars.map((b) => (b as HTMLElement).style.width))
    expect(widths[0]).toBe('100%')
    for (const w of widths.slice(1)) expect(Number.parseFloat(w)).toBeLessThan(5)
    const stats = (await h.call('GET', '/api/v1/tasks/statistics')).body
    expect(
      await page.locator('#failures .fc[data-code]').evaluateAll((r) => r.map((e) => e.getAttribute('data-code'))),
    ).toEqual(stats.failuresByCode.codes.map((c: { code: string }) => c.code))
    expect(await page.textContent('#fail-count')).toBe(`${stats.failuresByCode.sample} by code`)

    // Slots: used and free among the online agents' slots; tasks held by the others said apart.
    const slotsText = async () => {
      const s = (await h.call('GET', '/api/v1/agents/statistics')).body
      const held = Object.entries(s.activeTasksByStatus as Record<string, number>)
        .filter(([st]) => st !== 'online')
        .reduce((n, [, v]) => n + v, 0)
      const fmt = (n: number) => n.toLocaleString('en-US')
      return `${fmt(s.slots.used)} | ${fmt(s.slots.free)} free of ${fmt(s.slots.total)}${held ? ` · ${fmt(held)} more on agents not online` : ''}`
    }
    const drained = await h.agent({ name: unique('spike-drained'), maxConcurrentTasks: 2 })
    await h.assignedTask(drained.id)
    await h.call('PATCH', `/api/v1/agents/${drained.id}/status`, { body: { status: 'draining' } })
    await expect
      .poll(async () => `${await page.textContent('#k-slots')} | ${await page.textContent('#k-free')}`, {
        timeout: 15_000,
      })
      .toBe(await slotsText())
    expect(await page.textContent('#k-free')).toContain('more on agents not online')
    await page.locator('#failures').scrollIntoViewIfNeeded()
    await page.screenshot({ path: 'test-results/dashboard-failures.png' })
    expect(problems).toEqual([])
    await page.close()
  }, 90_000)

  it('at 1280 px wide: no column header is clipped, in the tables or the drawers; the task’s log comes right after its status', async () => {
    h.clock.set(Date.now())
    const a = await h.agent({
      name: `a-rather-long-agent-name-for-a-laptop-${Date.now()}`,
      capabilities: ['cpu', 'docker', 'playwright', 'gpu', 'cuda'],
      region: 'ap-northeast-2',
      maxConcurrentTasks: 12,
    })
    const t = await h.assignedTask(a.id, { name: 'laptop-task-with-a-long-name', type: 'some.long.task.type.name' })
    await h.call('PATCH', `/api/v1/agents/${a.id}/status`, { body: { status: 'maintenance' } })
    await h.report(t.id, a.token, { status: 'running', attempt: t.attempt, progress: 5 })
    await h.report(t.id, a.token, {
      status: 'failed',
      attempt: t.attempt,
      error: { code: 'exit_1', message: 'y'.repeat(300) },
    })
    const { page, problems } = await openDashboard({ width: 1280, height: 1000 }, 'operator')
    await page.waitForFunction(() => document.querySelectorAll('#agents tr').length > 0)
    expect(await pageOverflow(page)).toEqual({ scrollWidth: 1280, innerWidth: 1280, wide: [] })
    for (const f of await kpiFigures(page)) expect(f).toEqual({ id: f.id, ws: 'nowrap', clipped: false })
    /** Headers cut short (their text overflows) or out of their table's visible box. */
    const clipped = (scope: string) =>
      page.evaluate((scope) => {
        const out: string[] = []
        for (const th of document.querySelectorAll<HTMLElement>(`${scope} th`)) {
          const box = (th.closest('.scroll, .td-body') ?? document.documentElement).getBoundingClientRect()
          const r = th.getBoundingClientRect()
          if (th.scrollWidth > th.clientWidth || r.left < box.left - 0.5 || r.right > box.right + 0.5)
            out.push(th.textContent ?? '')
        }
        return { headers: document.querySelectorAll(`${scope} th`).length, clipped: out }
      }, scope)
    expect(await clipped('#fleet-table')).toEqual({ headers: 6, clipped: [] })
    expect(await clipped('#tasks-table')).toEqual({ headers: 8, clipped: [] })
    // Neither big table scrolls sideways at this width: every column is in sight.
    for (const id of ['fleet-table', 'tasks-table'])
      expect(
        await page.locator(`#${id}`).evaluate((tb) => {
          const box = tb.closest('.scroll') as HTMLElement
          return box.scrollWidth <= box.clientWidth
        }),
      ).toBe(true)

    // The task's detail: its status, then its log, then the rest.
    await page.click(`#tasks tr[data-task-id="${t.id}"] td:nth-child(3)`)
    await expect.poll(() => page.locator('#td-fields [data-field="status"]').textContent()).toBe('failed')
    const order = await page.evaluate(() => {
      const top = (sel: string) => (document.querySelector(sel) as HTMLElement).getBoundingClientRect().top
      const next = document.querySelector('#td-summary')?.nextElementSibling
      return {
        afterStatus: next?.querySelector('#task-log') ? 'log' : next?.tagName,
        statusAboveLog: top('#td-summary [data-field="status"]') < top('#task-log'),
        logAboveType: top('#task-log') < top('#td-more [data-field="type"]'),
      }
    })
    expect(order).toEqual({ afterStatus: 'log', statusAboveLog: true, logAboveType: true })
    expect(
      await page.evaluate(() => {
        const body = document.querySelector('#task-detail .td-body') as HTMLElement
        return body.scrollWidth > body.clientWidth
      }),
    ).toBe(false)
    await page.screenshot({ path: 'test-results/dashboard-detail-1280.png' })
    await page.keyboard.press('Escape')

    // The agent's detail, with its tables and actions.
    await page.click(`#agents tr[data-agent-id="${a.id}"]`)
    await expect.poll(() => page.locator('#ad-failures tr[data-task-id]').count()).toBe(1)
    expect(await clipped('#agent-detail')).toEqual({ headers: 10, clipped: [] })
    expect(await page.locator('#ad-actions [data-action]').count()).toBe(3) // in maintenance: resume, quarantine, delete
    expect(
      await page.evaluate(() => {
        const body = document.querySelector('#agent-detail .td-body') as HTMLElement
        return body.scrollWidth > body.clientWidth
      }),
    ).toBe(false)
    await page.screenshot({ path: 'test-results/dashboard-agent-1280.png' })
    expect(problems).toEqual([])
    await page.close()
  }, 60_000)
})
