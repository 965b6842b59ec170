/**
 * The task detail (a dialog): its status and the actions it allows, its log right after, then
 * the task's other fields, its history (GET /tasks/{id}/events, oldest first) merged with the
 * stream's events for it by event id, so neither a gap nor a duplicate shows.
 */
import { taskActions } from './actions'
import { apiFetch, get } from './api'
import { describe } from './describe'
import { $, type Child, el, rowTask } from './dom'
import { num, stamp, when } from './format'
import { agents, detail, learnName, tasks } from './state'
import { closeLog, showLog, syncLog } from './task-log'
import { renderTasks, shown } from './tasks'
import type { FleetEvent, Task } from './types'

const MAX_DETAIL_EVENTS = 1000
const dialog = () => $<HTMLDialogElement>('task-detail')

/**
 * A changed task, re-read: one that left the filter's statuses leaves the table, one that
 * entered it joins, and the open detail shows the new state.
 */
export async function refreshTask(id: string) {
  const r = await apiFetch(`/tasks/${id}`)
  if (r.status === 404) {
    tasks.delete(id)
    if (id === detail.id) {
      detail.gone = true
      renderDetail()
    }
    return
  }
  if (!r.ok) return
  const x: Task = await r.json()
  learnName(id, x.name)
  if (shown(x)) tasks.set(id, x)
  else tasks.delete(id)
  if (id === detail.id) {
    detail.task = x
    renderDetail()
  }
}

function pretty(pre: HTMLElement, v: unknown) {
  const text = v === undefined || v === null ? 'none' : JSON.stringify(v, null, 2)
  pre.className = v === undefined || v === null ? 'none' : ''
  pre.textContent =
    text.length > 20000 ? `${text.slice(0, 20000)}\n… ${num(text.length - 20000)} more characters` : text
}

/** Opens a task's detail (from the table, the feed, a search, an agent's detail). */
export function openTask(id: string) {
  detail.id = id
  detail.task = tasks.get(id) || null
  detail.events = new Map()
  detail.gone = false
  $('td-events').replaceChildren()
  $('td-ev-count').textContent = 'loading…'
  renderDetail()
  const dlg = dialog()
  if (!dlg.open) dlg.showModal()
  $('td-events').dataset.stick = '1'
  showLog(id, detail.task?.attempt || 0)
  refreshTask(id).catch(() => {})
  loadDetailEvents(id).catch(() => {
    if (id === detail.id) $('td-ev-count').textContent = 'could not be read'
  })
}

async function loadDetailEvents(id: string) {
  let after = 0
  for (let pages = 0; pages < 20; pages++) {
    const p = await get<{ items: FleetEvent[]; nextAfter: number }>(
      `/tasks/${encodeURIComponent(id)}/events?limit=1000&after=${after}`,
    )
    if (id !== detail.id) return
    for (const e of p.items) detail.events.set(e.id, e)
    renderDetailEvents()
    if (p.items.length < 1000) return
    after = p.nextAfter
  }
}

/** An event from the stream about the open task. */
export function detailEvent(e: FleetEvent) {
  detail.events.set(e.id, e)
  if (e.type === 'task.deleted') detail.gone = true
  renderDetailEvents()
  if (detail.gone) renderDetail()
}

/** A field: its label and value, the value marked with its key (`data-field`). */
const fieldList = (fields: [string, string, Child][]) =>
  fields.flatMap(([k, label, v]) => [el('dt', null, label), el('dd', { 'data-field': k }, v)])

/** After an action: the task re-read, the table and the detail redrawn. */
const afterAction = (id: string) => () => {
  refreshTask(id)
    .then(() => renderTasks())
    .catch(() => {})
}

/** What the detail's action buttons were drawn for. */
let shownActions = ''

function renderDetail() {
  const t = detail.task
  $('td-title').textContent = t ? t.name : 'Task'
  $('td-id').textContent = detail.id || ''
  const note = $('td-note')
  note.hidden = !detail.gone && !!t
  note.textContent = detail.gone ? 'This task was deleted.' : t ? '' : 'Loading…'
  // Redrawn only when what they offer changes: a button replaced under a reader's click (the
  // detail is redrawn on every event of its task) would swallow the click.
  const actionsKey = t && !detail.gone ? `${t.id} ${t.status} ${t.cancelRequested} ${t.name}` : ''
  if (actionsKey !== shownActions) {
    shownActions = actionsKey
    $('td-actions').replaceChildren(...(t && !detail.gone ? taskActions(t, afterAction(t.id)) : []))
  }
  if (!t) {
    $('td-summary').replaceChildren()
    $('td-more').replaceChildren()
    for (const k of ['requirements', 'payload', 'result', 'error']) $(`td-${k}`).textContent = ''
    return
  }
  const agent = t.agentId ? agents.get(t.agentId) : null
  const status = el(
    'span',
    null,
    el('span', { class: `st ${t.status}` }, t.status.replace('_', ' ')),
    t.cancelRequested ? ' · cancel requested' : null,
  )
  // The agent opens its own detail.
  const agentLink = t.agentId
    ? el('button', { type: 'button', class: 'link', 'data-agent-id': t.agentId }, agent ? agent.name : t.agentId)
    : '–'
  // What it is doing now comes first, then its log (in the page's markup), then the rest.
  $('td-summary').replaceChildren(
    ...fieldList([
      ['status', 'Status', status],
      ['progress', 'Progress', t.progress == null ? '–' : `${t.progress}%`],
      ['agent', 'Agent', agentLink],
      ['attempt', 'Attempt', `${t.attempt} of ${t.maxAttempts}`],
    ]),
  )
  $('td-more').replaceChildren(
    ...fieldList([
      ['type', 'Type', el('span', { class: 'mono' }, t.type)],
      ['priority', 'Priority', String(t.priority)],
      ['failures', 'Failures', String(t.failures)],
      ['lostCount', 'Lost count', String(t.lostCount)],
      ['pendingReason', 'Pending reason', t.pendingReason || '–'],
      ['timeoutSeconds', 'Timeout', `${t.timeoutSeconds} s`],
      ['idempotencyKey', 'Idempotency key', t.idempotencyKey || '–'],
      ['version', 'Version', String(t.version)],
      ['createdAt', 'Created', stamp(t.createdAt)],
      ['scheduledAt', 'Scheduled', stamp(t.scheduledAt)],
      ['assignedAt', 'Assigned', stamp(t.assignedAt)],
      ['startedAt', 'Started', stamp(t.startedAt)],
      ['finishedAt', 'Finished', stamp(t.finishedAt)],
      ['updatedAt', 'Updated', stamp(t.updatedAt)],
    ]),
  )
  pretty($('td-requirements'), t.requirements)
  pretty($('td-payload'), t.payload)
  pretty($('td-result'), t.result)
  const err = $('td-error')
  err.className = t.error ? 'bad' : 'none'
  err.textContent = t.error ? `${t.error.code}: ${t.error.message}` : 'none'
  syncLog(t)
}

function renderDetailEvents() {
  const box = $('td-events')
  // Stay at the newest (the bottom) unless the reader scrolled up.
  const stick = box.dataset.stick === '1' || box.scrollTop + box.clientHeight >= box.scrollHeight - 8
  const all = [...detail.events.values()].sort((a, b) => a.id - b.id)
  const list = all.slice(-MAX_DETAIL_EVENTS)
  box.replaceChildren(
    ...list.map((e) =>
      el(
        'li',
        { 'data-event-id': String(e.id), title: JSON.stringify(e.data) },
        el('span', { class: 't' }, when(e.time)),
        el('span', { class: 'k' }, e.type),
        el('span', { class: 'muted' }, describe(e) || ' '),
      ),
    ),
  )
  $('td-ev-count').textContent =
    num(all.length) + (all.length > list.length ? ` (the newest ${num(list.length)} shown)` : '')
  if (stick) {
    box.scrollTop = box.scrollHeight
    delete box.dataset.stick
  }
}

export function wireDetail() {
  const dlg = dialog()
  $('td-close').addEventListener('click', () => dlg.close())
  // A click on the backdrop (outside the panel) closes it; so does Escape (the dialog's own).
  dlg.addEventListener('click', (e) => {
    if (e.target === dlg) dlg.close()
  })
  dlg.addEventListener('close', () => {
    detail.id = null
    detail.task = null
    detail.events = new Map()
    closeLog()
  })
  // A task opens from its row in the table (click, or Enter / Space) and from the event feed.
  $('tasks').addEventListener('click', (e) => {
    const id = rowTask(e)
    if (id) openTask(id)
  })
  $('tasks').addEventListener('keydown', (e) => {
    const id = (e.key === 'Enter' || e.key === ' ') && rowTask(e)
    if (id) {
      e.preventDefault()
      openTask(id)
    }
  })
  $('log').addEventListener('click', (e) => {
    const id = rowTask(e)
    if (id) openTask(id)
  })
}
