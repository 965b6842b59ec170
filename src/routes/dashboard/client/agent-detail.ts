/**
 * The agent detail (a dialog like the task's): its settings, the metrics it last reported,
 * the tasks it runs (GET /tasks?agentId=&status=assigned,running) and its recent failures
 * (status=failed,timed_out, newest first), with the actions on it. Kept live: an event about
 * the agent or one of those tasks re-reads it on the next refresh.
 */
import { agentActions } from './actions'
import { apiFetch, get } from './api'
import { $, type Child, el } from './dom'
import { renderAgents } from './fleet'
import { ago, num, stamp } from './format'
import { agentDetail, agents, learnName } from './state'
import type { Agent, Page, Task } from './types'

const RUNNING = 100
const FAILURES = 20
const dialog = () => $<HTMLDialogElement>('agent-detail')
let stale = false
let loads = 0

/** Something about the open agent happened: it is re-read on the next refresh. */
export function agentEvent(agentId: string | null, taskId: string | null) {
  const id = agentDetail.id
  if (!id) return
  if (agentId === id || (taskId && [...agentDetail.running, ...agentDetail.failures].some((t) => t.id === taskId)))
    stale = true
}

/** The refresh, once a second: the open agent re-read if something happened to it. */
export async function refreshAgentDetail() {
  if (!stale || !agentDetail.id) return
  stale = false
  await loadAgentDetail(agentDetail.id)
}

export function openAgent(id: string) {
  agentDetail.id = id
  agentDetail.agent = agents.get(id) || null
  agentDetail.running = []
  agentDetail.failures = []
  agentDetail.gone = false
  stale = false
  $('ad-running-count').textContent = 'loading…'
  $('ad-failures-count').textContent = 'loading…'
  renderAgentDetail()
  const dlg = dialog()
  if (!dlg.open) dlg.showModal()
  loadAgentDetail(id).catch(() => {
    if (id === agentDetail.id) $('ad-running-count').textContent = 'could not be read'
  })
}

async function loadAgentDetail(id: string) {
  const n = ++loads
  const path = encodeURIComponent(id)
  const [r, running, failures] = await Promise.all([
    apiFetch(`/agents/${path}`),
    get<Page<Task>>(`/tasks?agentId=${path}&status=assigned,running&limit=${RUNNING}`),
    get<Page<Task>>(`/tasks?agentId=${path}&status=failed,timed_out&limit=${FAILURES}`),
  ])
  if (n !== loads || id !== agentDetail.id) return
  if (r.status === 404) {
    agentDetail.gone = true
    agents.delete(id)
  } else if (r.ok) {
    const a: Agent = await r.json()
    agentDetail.agent = a
    agents.set(id, a)
  }
  for (const t of [...running.items, ...failures.items]) learnName(t.id, t.name)
  agentDetail.running = running.items
  // The newest failures first: by when they ended.
  agentDetail.failures = failures.items.sort((x, y) => (y.finishedAt ?? '').localeCompare(x.finishedAt ?? ''))
  renderAgentDetail()
}

const field = (k: string, label: string, v: Child) => [el('dt', null, label), el('dd', { 'data-field': k }, v)]
const cell = (text: string, cls?: string) => el('td', { class: cls ?? null, title: text }, text)
const badge = (status: string) =>
  el('td', null, el('span', { class: `st ${status}`, 'data-status': status }, status.replace('_', ' ')))

/** After an action: the agent and its tasks re-read (a deleted one says so), the fleet redrawn. */
function afterAction() {
  if (!agentDetail.id) return
  loadAgentDetail(agentDetail.id)
    .then(() => renderAgents())
    .catch(() => {})
}

/** What the agent detail's action buttons were drawn for. */
let shownActions = ''

function renderAgentDetail() {
  const a = agentDetail.agent
  $('ad-title').textContent = a ? a.name : 'Agent'
  $('ad-id').textContent = agentDetail.id || ''
  const note = $('ad-note')
  note.hidden = !agentDetail.gone && !!a
  note.textContent = agentDetail.gone ? 'This agent was deleted.' : a ? '' : 'Loading…'
  // Redrawn only when what they offer changes: every heartbeat redraws the detail, and a
  // button replaced under a reader's click would swallow it.
  const actionsKey =
    a && !agentDetail.gone ? `${a.id} ${a.status} ${a.activeTasks} ${a.name} ${a.quarantine?.reason ?? ''}` : ''
  if (actionsKey !== shownActions) {
    shownActions = actionsKey
    $('ad-actions').replaceChildren(...(a && !agentDetail.gone ? agentActions(a, afterAction) : []))
  }
  if (!a) {
    $('ad-fields').replaceChildren()
    $('ad-metrics').textContent = ''
  } else {
    const labels = Object.entries(a.labels ?? {})
    $('ad-fields').replaceChildren(
      ...field('status', 'Status', el('span', { class: `st ${a.status}` }, a.status)),
      ...(a.quarantine
        ? field(
            'quarantine',
            'Quarantine',
            `${a.quarantine.reason}${a.quarantine.until ? ` (until ${a.quarantine.until})` : ' (until released)'}`,
          )
        : []),
      ...(a.drain
        ? field('drain', 'Drain', `then ${a.drain.then}${a.drain.deadline ? `, deadline ${a.drain.deadline}` : ''}`)
        : []),
      ...field('load', 'Load', `${a.activeTasks} of ${a.maxConcurrentTasks} slots`),
      ...field('provider', 'Provider', a.provider),
      ...field('region', 'Region', a.region || '–'),
      ...field('capabilities', 'Capabilities', a.capabilities.length ? a.capabilities.join(', ') : '–'),
      // '*' (the default) runs any type.
      ...field(
        'taskTypes',
        'Task types',
        !a.taskTypes || a.taskTypes.includes('*') ? 'any' : a.taskTypes.join(', ') || '–',
      ),
      ...field('labels', 'Labels', labels.length ? labels.map(([k, v]) => `${k}=${v}`).join(', ') : '–'),
      ...field('description', 'Description', a.description || '–'),
      ...field('lastHeartbeatAt', 'Last heartbeat', stamp(a.lastHeartbeatAt)),
      ...field('createdAt', 'Registered', stamp(a.createdAt)),
      ...field('updatedAt', 'Updated', stamp(a.updatedAt)),
      ...field('version', 'Version', String(a.version)),
    )
    const m = $('ad-metrics')
    m.className = a.lastMetrics ? '' : 'none'
    m.textContent = a.lastMetrics ? JSON.stringify(a.lastMetrics, null, 2) : 'None reported.'
    $('ad-metrics-at').textContent =
      a.lastMetrics && a.lastHeartbeatAt ? `with the heartbeat ${ago(a.lastHeartbeatAt)}` : ''
  }
  const run = agentDetail.running
  $('ad-running').replaceChildren(
    ...(run.length
      ? run.map((t) =>
          el(
            'tr',
            { 'data-task-id': t.id, tabindex: '0' },
            cell(t.name),
            badge(t.status),
            cell(t.type, 'mono'),
            cell(`${t.attempt}/${t.maxAttempts}`),
            cell(t.progress == null ? '–' : `${t.progress}%`),
            cell(ago(t.startedAt || t.assignedAt), 'muted'),
          ),
        )
      : [el('tr', null, el('td', { colspan: '6', class: 'muted' }, 'None.'))]),
  )
  $('ad-running-count').textContent = num(run.length) + (run.length === RUNNING ? '+' : '')
  const fails = agentDetail.failures
  $('ad-failures').replaceChildren(
    ...(fails.length
      ? fails.map((t) =>
          el(
            'tr',
            { 'data-task-id': t.id, tabindex: '0' },
            cell(t.name),
            badge(t.status),
            cell(t.error ? `${t.error.code}: ${t.error.message}` : '–', 'bad'),
            cell(ago(t.finishedAt), 'muted'),
          ),
        )
      : [el('tr', null, el('td', { colspan: '4', class: 'muted' }, 'None.'))]),
  )
  $('ad-failures-count').textContent = num(fails.length) + (fails.length === FAILURES ? ', the newest' : '')
}

export function wireAgentDetail() {
  const dlg = dialog()
  $('ad-close').addEventListener('click', () => dlg.close())
  dlg.addEventListener('click', (e) => {
    if (e.target === dlg) dlg.close()
  })
  dlg.addEventListener('close', () => {
    agentDetail.id = null
    agentDetail.agent = null
    agentDetail.running = []
    agentDetail.failures = []
    stale = false
  })
}
