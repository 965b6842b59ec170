/**
 * Live: the fleet's event stream (GET /api/v1/events as Server-Sent Events, resumed with
 * Last-Event-ID after a drop), the feed of events in words, and the refresh that folds a
 * burst of events into one re-read a second of what changed.
 */
import { agentEvent, refreshAgentDetail } from './agent-detail'
import { apiFetch, tokenRefused } from './api'
import { describe } from './describe'
import { detailEvent, refreshTask } from './detail'
import { $, el } from './dom'
import { refreshAgent, renderAgents } from './fleet'
import { num } from './format'
import { readSSE } from './sse'
import { detail, learnName, nameOf } from './state'
import { loadStats, markStatsStale, statsStale } from './stats'
import { renderTasks } from './tasks'
import type { FleetEvent } from './types'

const FEED_LINES = 150
let lastEventId: string | null = null
let stream: AbortController | null = null
let received = 0
const dirtyAgents = new Set<string>()
const dirtyTasks = new Set<string>()

/** The indicator in the header: 'on' (live), 'retry' or 'off'. */
export function setLive(cls: 'on' | 'retry' | 'off', text: string) {
  $('live').className = `live ${cls}`
  $('live-text').textContent = text
}

function logEvent(e: FleetEvent) {
  received++
  // Who it is about: the task's (or else the agent's) name, known from the tables, a read or an
  // earlier event. Not known yet (a progress event of a task the table does not hold): the
  // refresh re-reads the task, and the line then names it (see nameLines).
  const d = e.data || {}
  const named = d.name ? (e.type === 'task.created' ? e.taskId : e.agentId) : null
  if (named) learnName(named, String(d.name))
  const about = e.taskId || e.agentId
  const name = about ? nameOf(about) : undefined
  const subject = about
    ? el('span', { class: 'n', 'data-about': name ? null : about }, name || about.slice(0, 8))
    : null
  const what = describe(e)
  const row = el(
    'div',
    { title: JSON.stringify(d), 'data-task-id': e.taskId || null },
    el('span', { class: 't' }, new Date(e.time).toLocaleTimeString()),
    el(
      'span',
      { class: 'b' },
      el('span', { class: 'k' }, e.type),
      subject,
      what ? el('span', { class: 'd muted' }, what) : null,
    ),
  )
  const log = $('log')
  log.prepend(row)
  while (log.childElementCount > FEED_LINES) log.lastElementChild?.remove()
  $('ev-count').textContent = `${num(received)} received`
}

function onEvent(e: FleetEvent) {
  logEvent(e)
  if (detail.id && e.taskId === detail.id) detailEvent(e)
  agentEvent(e.agentId, e.taskId)
  if (e.agentId) dirtyAgents.add(e.agentId)
  if (e.taskId) dirtyTasks.add(e.taskId)
  markStatsStale()
}

/** Event bursts become one refresh a second: changed agents and tasks are re-read by id. */
export async function flush() {
  const a = [...dirtyAgents].slice(0, 50)
  const t = [...dirtyTasks].slice(0, 50)
  for (const id of a) dirtyAgents.delete(id)
  for (const id of t) dirtyTasks.delete(id)
  await Promise.all([...a.map((id) => refreshAgent(id)), ...t.map((id) => refreshTask(id)), refreshAgentDetail()])
  if (a.length) renderAgents()
  if (t.length) renderTasks()
  if (a.length || t.length) nameLines()
  if (statsStale()) await loadStats()
}

/** Feed lines written before their subject's name was known, named now that it is. */
function nameLines() {
  for (const n of $('log').querySelectorAll<HTMLElement>('.n[data-about]')) {
    const name = nameOf(n.dataset.about ?? '')
    if (name) {
      n.textContent = name
      delete n.dataset.about
    }
  }
}

/** Reads the event stream until the token is refused or `stopListening`, reconnecting after a drop. */
export async function listen() {
  for (;;) {
    const mine = new AbortController()
    stream = mine
    try {
      const res = await apiFetch('/events', {
        accept: 'text/event-stream',
        lastEventId: lastEventId || undefined,
        signal: mine.signal,
      })
      if (res.status === 401 || res.status === 403) return tokenRefused(res.status)
      if (!res.ok || !res.body) throw new Error(`stream ${res.status}`)
      setLive('on', 'live')
      await readSSE(res.body, (_type, id, data) => {
        lastEventId = id
        onEvent(JSON.parse(data))
      })
    } catch {
      if (mine.signal.aborted) return
    }
    setLive('retry', 'reconnecting…')
    await new Promise((r) => setTimeout(r, 2000))
  }
}

export function stopListening() {
  stream?.abort()
}
