/**
 * The task table: the newest tasks, filtered by status ('' for all) and found by a search. A
 * change of either re-reads the API; tasks changed on the stream are re-read one by one, and
 * join or leave the table as they match. The search takes a task's id (GET /tasks/{id}), or
 * else its type (GET /tasks?type=, exact) or the start of its name (GET /tasks?name=, any
 * case, over the newest 10,000 tasks: names are not indexed).
 */
import { apiFetch, get } from './api'
import { $, el, esc } from './dom'
import { ago, num } from './format'
import { agents, tasks } from './state'
import type { Page, Task, TaskStatistics } from './types'

const TASK_STATUSES = ['pending', 'assigned', 'running', 'completed', 'failed', 'cancelled', 'timed_out']
const TASKS = 60
/** As the API bounds them. */
const MAX_TYPE = 100
const MAX_NAME = 200
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
let status = ''
let query = ''
let counts: TaskStatistics | null = null
let loads = 0

const byId = () => UUID.test(query)

/** Whether a task belongs in the table under the current filter and search (a search by id ignores the filter). */
export const shown = (t: Task) => {
  if (!query) return !status || status.split(',').includes(t.status)
  if (byId()) return t.id === query.toLowerCase()
  const q = query.toLowerCase()
  return (!status || status.split(',').includes(t.status)) && (t.type === query || t.name.toLowerCase().startsWith(q))
}

async function read(): Promise<Task[]> {
  const st = status ? `&status=${encodeURIComponent(status)}` : ''
  if (!query) return (await get<Page<Task>>(`/tasks?limit=${TASKS}${st}`)).items
  if (byId()) {
    const r = await apiFetch(`/tasks/${encodeURIComponent(query.toLowerCase())}`)
    if (r.status === 404) return []
    if (!r.ok) throw new Error(`task ${r.status}`)
    return [await r.json()]
  }
  const q = encodeURIComponent(query)
  const [byType, byName] = await Promise.all([
    query.length <= MAX_TYPE ? get<Page<Task>>(`/tasks?limit=${TASKS}&type=${q}${st}`) : { items: [] },
    query.length <= MAX_NAME ? get<Page<Task>>(`/tasks?limit=${TASKS}&name=${q}${st}`) : { items: [] },
  ])
  return [...byType.items, ...byName.items]
}

export async function loadTasks() {
  const n = ++loads
  const items = await read()
  if (n !== loads) return // the filter or search changed meanwhile: a newer read is on its way
  tasks.clear()
  for (const t of items) tasks.set(t.id, t)
  renderTasks()
}

function renderTaskChips() {
  const c = counts
  $('task-chips').replaceChildren(
    ...['', ...TASK_STATUSES].map((s) =>
      el(
        'button',
        {
          type: 'button',
          class: `chip${s === status ? ' sel' : ''}`,
          'data-s': s,
          'aria-pressed': String(s === status),
        },
        (s ? s.replace('_', ' ') : 'all') + (c ? ` ${num(s ? c.byStatus[s] : c.total)}` : ''),
      ),
    ),
  )
}

/** The chips' counts, from the statistics. */
export function showTaskCounts(stats: TaskStatistics) {
  counts = stats
  renderTaskChips()
}

function reload() {
  tasks.clear()
  renderTaskChips()
  renderTasks(true)
  loadTasks().catch(() => {
    renderTasks()
    $('task-count').textContent = 'could not be read'
  })
}

export function filterTasks(s: string) {
  if (s === status) return
  status = s
  reload()
}

/** A search: a task id, a type or the start of a name ('' ends the search). */
export function findTasks(text: string) {
  const q = text.trim()
  if (q === query) return
  query = q
  reload()
}

export function renderTasks(loading = false) {
  const list = [...tasks.values()].sort((a, b) => (a.id < b.id ? 1 : -1))
  for (const t of list.splice(TASKS)) tasks.delete(t.id)
  const which = status && !byId() ? `${status.replace(/_/g, ' ')} ` : ''
  const none = !query
    ? `No ${which}tasks.`
    : byId()
      ? 'No task has this id.'
      : `No ${which}task has the type “${query}” or a name starting with it (names: the newest 10,000 tasks).`
  if (!list.length)
    $('tasks').replaceChildren(el('tr', null, el('td', { colspan: '8', class: 'muted' }, loading ? 'Loading…' : none)))
  else
    $('tasks').innerHTML = list
      .map((t) => {
        const agent = t.agentId ? agents.get(t.agentId) : null
        const note = t.error
          ? `${t.error.code}: ${t.error.message}`
          : t.status === 'pending'
            ? t.pendingReason || ''
            : t.result != null
              ? JSON.stringify(t.result)
              : ''
        const who = agent
          ? esc(agent.name)
          : t.agentId
            ? `<span class="mono">${esc(t.agentId.slice(0, 8))}</span>`
            : '–'
        return `<tr data-task-id="${esc(t.id)}" tabindex="0"><td title="${esc(t.id)}">${esc(t.name)}</td><td><span class="st ${esc(t.status)}" data-status="${esc(t.status)}">${esc(t.status.replace('_', ' '))}${t.cancelRequested && t.status === 'running' ? ' · cancelling' : ''}</span></td><td class="mono" title="${esc(t.type)}">${esc(t.type)}</td><td>${esc(t.priority)}</td><td>${who}</td><td>${esc(`${t.attempt}/${t.maxAttempts}`)}</td><td class="muted">${ago(t.createdAt)}</td><td class="muted" title="${esc(note)}">${esc(note)}</td></tr>`
      })
      .join('')
  $('task-count').textContent = query
    ? `${list.length}${list.length === TASKS ? '+' : ''} found`
    : `${list.length} newest ${which.trim()}`
}
