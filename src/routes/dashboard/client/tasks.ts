/**
 * The task table: the newest tasks, filtered by status ('' for all). A change of filter
 * re-reads GET /tasks?status=…; tasks changed on the stream are re-read one by one.
 */
import { get } from './api'
import { $, el, esc } from './dom'
import { ago, num } from './format'
import { agents, tasks } from './state'
import type { Page, Task, TaskStatistics } from './types'

const TASK_STATUSES = ['pending', 'assigned', 'running', 'completed', 'failed', 'cancelled', 'timed_out']
const TASKS = 60
let status = ''
let counts: TaskStatistics | null = null
let loads = 0

/** Whether a task belongs in the table under the current filter. */
export const shown = (t: Task) => !status || status.split(',').includes(t.status)

export async function loadTasks() {
  const n = ++loads
  const p = await get<Page<Task>>(`/tasks?limit=${TASKS}${status ? `&status=${encodeURIComponent(status)}` : ''}`)
  if (n !== loads) return // the filter changed meanwhile: a newer read is on its way
  tasks.clear()
  for (const t of p.items) tasks.set(t.id, t)
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

export function filterTasks(s: string) {
  if (s === status) return
  status = s
  tasks.clear()
  renderTaskChips()
  renderTasks(true)
  loadTasks().catch(() => {})
}

export function renderTasks(loading = false) {
  const list = [...tasks.values()].sort((a, b) => (a.id < b.id ? 1 : -1))
  for (const t of list.splice(TASKS)) tasks.delete(t.id)
  const which = status ? `${status.replace(/_/g, ' ')} ` : ''
  if (!list.length)
    $('tasks').replaceChildren(
      el('tr', null, el('td', { colspan: '8', class: 'muted' }, loading ? 'Loading…' : `No ${which}tasks.`)),
    )
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
        return `<tr data-task-id="${esc(t.id)}" tabindex="0"><td title="${esc(t.id)}">${esc(t.name)}</td><td><span class="st ${esc(t.status)}" data-status="${esc(t.status)}">${esc(t.status.replace('_', ' '))}${t.cancelRequested && t.status === 'running' ? ' · cancelling' : ''}</span></td><td class="mono">${esc(t.type)}</td><td>${esc(t.priority)}</td><td>${who}</td><td>${esc(`${t.attempt}/${t.maxAttempts}`)}</td><td class="muted">${ago(t.createdAt)}</td><td class="muted">${esc(note)}</td></tr>`
      })
      .join('')
  $('task-count').textContent = `${list.length} newest ${which.trim()}`
}
