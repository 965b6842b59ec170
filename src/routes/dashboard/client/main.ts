/**
 * The operator dashboard's script (bundled into the page by `npm run build:dashboard`).
 * It reads the API with a token the operator pastes once (kept in localStorage), and stays
 * live on the event stream. Built for fleets of a thousand agents: the agent table is
 * filtered and paged in the browser, and event bursts are folded into one refresh a second.
 * Admin and operator tokens get the actions (actions.ts), each confirmed first.
 */
import { openAgent, wireAgentDetail } from './agent-detail'
import { currentToken, onTokenRefused, saveToken, tokenClaims } from './api'
import { closeConfirm, wireConfirm } from './confirm'
import { openTask, wireDetail } from './detail'
import { $, chipStatus, rowTask } from './dom'
import { flush, listen, setLive, stopListening } from './feed'
import { filterAgents, loadAgents, showAgentStatus, turnPage } from './fleet'
import { ago } from './format'
import { loadRollouts, wireRollouts } from './rollouts'
import { loadStats } from './stats'
import { wireTaskLog } from './task-log'
import { filterTasks, findTasks, loadTasks } from './tasks'

const tokenBox = () => $<HTMLTextAreaElement>('token')
const loginShown = () => $('login').classList.contains('show')

function showLogin(msg: string) {
  closeConfirm()
  for (const id of ['task-detail', 'agent-detail']) {
    const dlg = $<HTMLDialogElement>(id)
    if (dlg.open) dlg.close()
  }
  $('login').classList.add('show')
  $('login-err').textContent = msg || ''
  tokenBox().value = currentToken()
  setLive('off', 'offline')
  stopListening()
}

/** Who the token says it is (read from its claims; the API checks it, not the page). */
function showWho() {
  const p = tokenClaims()
  $('who').textContent = p.sub || p.role ? `${p.sub} · ${p.role}` : ''
}

async function start() {
  $('login').classList.remove('show')
  setLive('retry', 'connecting…')
  try {
    await Promise.all([loadAgents(), loadStats()])
    await loadTasks()
    await loadRollouts()
  } catch (err) {
    if (String((err as Error).message) !== 'auth') setLive('retry', 'API unreachable, retrying…')
    return
  }
  showWho()
  listen()
}

/** Opens what a row (or a link) names, on a click or Enter / Space. */
function opens(box: HTMLElement, open: (e: Event) => boolean) {
  box.addEventListener('click', (e) => {
    open(e)
  })
  box.addEventListener('keydown', (e) => {
    if ((e.key === 'Enter' || e.key === ' ') && e.target instanceof HTMLTableRowElement && open(e)) e.preventDefault()
  })
}
const taskRow = (e: Event) => {
  const id = rowTask(e)
  if (id) openTask(id)
  return !!id
}
const agentLink = (e: Event) => {
  const id = e.target instanceof Element ? e.target.closest<HTMLElement>('[data-agent-id]')?.dataset.agentId : undefined
  if (id) openAgent(id)
  return !!id
}

onTokenRefused((status) => showLogin(`That token was refused (${status}).`))
wireDetail()
wireTaskLog()
wireAgentDetail()
wireConfirm()
wireRollouts(openTask)
$('login-form').addEventListener('submit', (e) => {
  e.preventDefault()
  saveToken(tokenBox().value.trim())
  start()
})
$('signout').addEventListener('click', () => showLogin(''))
$<HTMLInputElement>('filter').addEventListener('input', (e) =>
  filterAgents((e.currentTarget as HTMLInputElement).value),
)
$('agent-chips').addEventListener('click', (e) => {
  const s = chipStatus(e)
  if (s !== undefined) showAgentStatus(s)
})
$('task-chips').addEventListener('click', (e) => {
  const s = chipStatus(e)
  if (s !== undefined) filterTasks(s)
})
// The task search: as one types (after a pause), at once on Enter.
let typing: number | undefined
const search = $<HTMLInputElement>('task-search')
search.addEventListener('input', () => {
  clearTimeout(typing)
  typing = setTimeout(() => findTasks(search.value), 300)
})
search.addEventListener('keydown', (e) => {
  if (e.key !== 'Enter') return
  clearTimeout(typing)
  findTasks(search.value)
})
// An agent opens from its row in the fleet and from a task's detail; a task from an agent's lists.
opens($('agents'), agentLink)
opens($('td-summary'), agentLink)
opens($('ad-running'), taskRow)
opens($('ad-failures'), taskRow)
$('prev').addEventListener('click', () => turnPage(-1))
$('next').addEventListener('click', () => turnPage(1))
setInterval(() => {
  for (const td of document.querySelectorAll<HTMLElement>('td.hb')) td.textContent = ago(td.dataset.at)
}, 1000)
setInterval(() => {
  if (currentToken() && !loginShown()) flush().catch(() => {})
}, 1000)
setInterval(() => {
  if (currentToken() && !loginShown()) Promise.all([loadAgents(), loadTasks()]).catch(() => {})
}, 30000)
setInterval(() => {
  if (currentToken() && !loginShown()) loadRollouts().catch(() => {})
}, 5000)
if (currentToken()) start()
else showLogin('')
