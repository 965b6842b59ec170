/** The figures (KPI cards), the throughput chart, failures by error code and the queue by priority. */
import { get } from './api'
import { $, el } from './dom'
import { hhmm, niceMax, num, secs } from './format'
import { showTaskCounts } from './tasks'
import type { AgentStatistics, TaskStatistics } from './types'

let stale = true
/** Something happened: the figures are re-read on the next refresh. */
export const markStatsStale = () => {
  stale = true
}
export const statsStale = () => stale

export async function loadStats() {
  const [a, t] = await Promise.all([
    get<AgentStatistics>('/agents/statistics'),
    get<TaskStatistics>('/tasks/statistics'),
  ])
  $('k-online').textContent = num(a.byStatus.online)
  $('k-agents').textContent = `${num(a.total)} registered · ${num(a.byStatus.offline)} offline`
  // Slots that take work: those of online agents, used and free among them. Tasks held by
  // agents that take no new work (draining, maintenance, error, offline) are said apart.
  $('k-slots').textContent = num(a.slots.used)
  const elsewhere = Object.entries(a.activeTasksByStatus).filter(([s, n]) => s !== 'online' && n > 0)
  const held = elsewhere.reduce((sum, [, n]) => sum + n, 0)
  const free = $('k-free')
  free.textContent = `${num(a.slots.free)} free of ${num(a.slots.total)}${held ? ` · ${num(held)} more on agents not online` : ''}`
  free.title = held
    ? `Tasks held by agents that take no new work: ${elsewhere.map(([s, n]) => `${s} ${num(n)}`).join(', ')}`
    : ''
  $('k-pending').textContent = num(t.queue.pending)
  $('k-oldest').textContent =
    t.queue.oldestPendingAgeSeconds == null ? 'queue empty' : `oldest ${secs(t.queue.oldestPendingAgeSeconds)}`
  $('k-running').textContent = num(t.byStatus.running)
  $('k-assigned').textContent = `${num(t.byStatus.assigned)} assigned, not started`
  const h = t.recent.last60Minutes
  $('k-done').textContent = num(h.completed)
  $('k-success').textContent =
    `${t.recent.successRate == null ? '–' : `${(t.recent.successRate * 100).toFixed(1)}% success`} · ${num(h.failed + h.timedOut)} failed`
  $('k-wait').replaceChildren(
    secs(t.createToAssignedSeconds.p50),
    el('small', null, ` / ${secs(t.createToAssignedSeconds.p95)}`),
  )
  $('k-run').textContent = `p50 / p95 · run p50 ${secs(t.durationSeconds.p50)}`
  renderThroughput(t.recent.completedPerMinute)
  renderFailures(t.failuresByCode)
  showTaskCounts(t)
  const pmax = Math.max(1, ...Object.values(t.queue.byPriority))
  let rows = ''
  for (let p = 10; p >= 1; p--) {
    const n = t.queue.byPriority[p] || 0
    rows += `<span class="muted">P${p}</span><span class="b"><i style="width:${(n / pmax) * 100}%"></i></span><span style="text-align:right">${num(n)}</span>`
  }
  $('prio').innerHTML = rows
  stale = false
}

/** completedPerMinute: 60 values, oldest first; the last is the minute under way. */
function renderThroughput(perMinute: number[]) {
  const n = perMinute.length
  const now = Date.now()
  const peak = Math.max(0, ...perMinute)
  const top = niceMax(peak)
  const total = perMinute.reduce((a, b) => a + b, 0)
  const last = perMinute[n - 2] ?? 0
  const current = perMinute[n - 1] ?? 0
  $('thr-now').textContent = `${num(last)} / min`
  $('thr-note').textContent =
    `last full minute · ${num(current)} so far this minute · peak ${num(peak)} · ${num(total)} this hour`
  const ticks = top % 2 === 0 ? [top, top / 2, 0] : [top, 0]
  const at = (v: number) => `top:${100 - (v / top) * 100}%`
  $('thr-y').replaceChildren(...ticks.map((v) => el('span', { style: at(v) }, num(v))))
  $('thr-grid').replaceChildren(...ticks.filter((v) => v > 0).map((v) => el('div', { class: 'gl', style: at(v) })))
  const label = (i: number) => (i === n - 1 ? 'now' : hhmm(new Date(now - (n - 1 - i) * 60000)))
  $('thr').replaceChildren(
    ...perMinute.map((c, i) =>
      el('div', {
        class: i === n - 1 ? 'partial' : null,
        title: `${i === n - 1 ? 'this minute so far' : label(i)}: ${c} completed`,
        style: `height:${Math.max(c ? 1 : 0, (c / top) * 100)}%`,
      }),
    ),
  )
  $('thr-x').replaceChildren(
    ...[0, n / 4, n / 2, (3 * n) / 4, n - 1]
      .map(Math.round)
      .map((i) => el('span', { style: `left:${((i + 0.5) / n) * 100}%` }, label(i))),
  )
}

/** Failed and timed-out tasks of the last hour per error code, most first: a spike of one code stands out. */
function renderFailures(f: TaskStatistics['failuresByCode']) {
  $('fail-count').textContent = f.sample ? `${num(f.sample)} by code` : ''
  if (!f.sample) {
    $('failures').replaceChildren(el('div', { class: 'muted none' }, 'No failures in the last hour.'))
    return
  }
  const top = Math.max(1, ...f.codes.map((c) => c.count), f.other)
  const row = (code: string, count: number, cls: string) =>
    el(
      'div',
      { class: `fc ${cls}`, 'data-code': cls === 'other' ? null : code, title: `${code}: ${num(count)}` },
      el('span', { class: cls === 'other' ? 'muted' : 'mono' }, code),
      el('span', { class: 'b' }, el('i', { style: `width:${(count / top) * 100}%` })),
      el('span', { class: 'n' }, num(count)),
    )
  const rows = f.codes.map((c) => row(c.code, c.count, ''))
  if (f.other) rows.push(row('other codes', f.other, 'other'))
  $('failures').replaceChildren(...rows)
}
