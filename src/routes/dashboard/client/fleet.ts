/** The fleet table: every agent, filtered by status and text and paged in the browser. */
import { apiFetch, get } from './api'
import { $, esc } from './dom'
import { ago } from './format'
import { agents, learnName } from './state'
import type { Agent, Page } from './types'

const PAGE = 100
const STATUSES = ['', 'online', 'draining', 'maintenance', 'quarantined', 'error', 'offline']
let filter = ''
let status = ''
let page = 0

export async function loadAgents() {
  const seen = new Set<string>()
  let cursor: string | null = null
  do {
    const p: Page<Agent> & { nextCursor: string | null } = await get(
      `/agents?limit=100&order=asc${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
    )
    for (const a of p.items) {
      agents.set(a.id, a)
      seen.add(a.id)
    }
    cursor = p.nextCursor
  } while (cursor)
  for (const id of [...agents.keys()]) if (!seen.has(id)) agents.delete(id)
  renderAgents()
}

/** An agent that changed, re-read (one that is gone leaves the table). */
export async function refreshAgent(id: string) {
  const r = await apiFetch(`/agents/${id}`)
  if (r.status === 404) {
    const gone = agents.get(id)
    if (gone) learnName(id, gone.name) // the feed still names it
    agents.delete(id)
  } else if (r.ok) agents.set(id, await r.json())
}

export function renderAgents() {
  const q = filter.toLowerCase()
  const all = [...agents.values()]
  const counts: Record<string, number> = {}
  for (const a of all) counts[a.status] = (counts[a.status] || 0) + 1
  $('agent-chips').innerHTML = STATUSES.map(
    (s) =>
      `<button type="button" class="chip${s === status ? ' sel' : ''}" data-s="${s}" aria-pressed="${s === status}">${s || 'all'} ${s ? counts[s] || 0 : all.length}</button>`,
  ).join('')
  const rows = all
    .filter(
      (a) =>
        (!status || a.status === status) &&
        (!q || [a.name, a.provider, a.region, ...a.capabilities].join(' ').toLowerCase().includes(q)),
    )
    .sort(
      (x, y) =>
        y.activeTasks / y.maxConcurrentTasks - x.activeTasks / x.maxConcurrentTasks || x.name.localeCompare(y.name),
    )
  const pages = Math.max(1, Math.ceil(rows.length / PAGE))
  page = Math.min(page, pages - 1)
  $('agents').innerHTML = rows
    .slice(page * PAGE, page * PAGE + PAGE)
    .map((a) => {
      const pct = a.maxConcurrentTasks ? (a.activeTasks / a.maxConcurrentTasks) * 100 : 0
      const where = `${a.provider}${a.region ? ` · ${a.region}` : ''}`
      const caps = a.capabilities.join(', ')
      return `<tr data-agent-id="${esc(a.id)}" tabindex="0"><td title="${esc(`${a.name} · ${a.id}`)}">${esc(a.name)}</td><td><span class="st ${esc(a.status)}">${esc(a.status)}</span>${a.quarantine ? `<span class="qr" title="${esc(a.quarantine.reason)}">${esc(a.quarantine.reason)}</span>` : ''}</td><td title="${esc(where)}">${esc(where)}</td><td><span class="load"><i style="width:${pct}%;background:${pct >= 100 ? 'var(--warn)' : 'var(--ok)'}"></i></span>${a.activeTasks}/${a.maxConcurrentTasks}</td><td class="muted" title="${esc(caps)}">${esc(caps)}</td><td class="muted hb" data-at="${esc(a.lastHeartbeatAt || '')}">${ago(a.lastHeartbeatAt)}</td></tr>`
    })
    .join('')
  $('fleet-count').textContent = `${rows.length} shown of ${all.length}`
  $('page-info').textContent = `page ${page + 1} of ${pages}`
}

export function filterAgents(text: string) {
  filter = text
  page = 0
  renderAgents()
}

export function showAgentStatus(s: string) {
  status = s
  page = 0
  renderAgents()
}

export function turnPage(by: 1 | -1) {
  page = Math.max(0, page + by)
  renderAgents()
}
