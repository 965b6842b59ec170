/**
 * Live: the fleet's event stream (GET /api/v1/events as Server-Sent Events, resumed with
 * Last-Event-ID after a drop), the feed of events in words, and the refresh that folds a
 * burst of events into one re-read a second of what changed.
 */
import { apiFetch, tokenRefused } from './api'
import { describe } from './describe'
import { detailEvent, refreshTask } from './detail'
import { $, el } from './dom'
import { refreshAgent, renderAgents } from './fleet'
import { num } from './format'
import { readSSE } from './sse'
import { agents, detail, tasks } from './state'
import { loadStats, markStatsStale, statsStale } from './stats'
import { renderTasks } from './tasks'
import type { FleetEvent } from './types'

const FEED_LINES = 150
const NAMES_KEPT = 5000
let lastEventId: string | null = null
let stream: AbortController | null = null
let received = 0
/** Names seen in events (task.created, agent.registered), for events about what the tables do not hold. */
const names = new Map<string, string>()
const dirtyAgents = new Set<string>()
const dirtyTasks = new Set<string>()

/** The indicator in the header: 'on' (live), 'retry' or 'off'. */
export function setLive(cls: 'on' | 'retry' | 'off', text: string) {
  $('live').className = `live ${cls}`
  $('live-text').textContent = text
}

function logEvent(e: FleetEvent) {
  received++
  // Who it is about: the task's (or else the agent's) name, known from the tables or an earlier event.
  const d = e.data || {}
  const named = d.name ? (e.type === 'task.created' ? e.taskId : e.agentId) : null
  if (named) {
    names.set(named, String(d.name))
    if (names.size > NAMES_KEPT) {
      const oldest = names.keys().next().value
      if (oldest !== undefined) names.delete(oldest)
    }
  }
  const about = e.taskId || e.agentId
  const subject = about ? (tasks.get(about) || agents.get(about))?.name || names.get(about) || about.slice(0, 8) : null
  const what = describe(e)
  const row = el(
    'div',
    { title: JSON.stringify(d), 'data-task-id': e.taskId || null },
    el('span', { class: 't' }, new Date(e.time).toLocaleTimeString()),
    el(
      'span',
      { class: 'b' },
      el('span', { class: 'k' }, e.type),
      subject ? el('span', { class: 'n' }, subject) : null,
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
  await Promise.all([...a.map((id) => refreshAgent(id)), ...t.map((id) => refreshTask(id))])
  if (a.length) renderAgents()
  if (t.length) renderTasks()
  if (statsStale()) await loadStats()
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
