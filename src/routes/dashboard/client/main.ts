/**
 * The operator dashboard's script (bundled into the page by `npm run build:dashboard`).
 * It reads the API with a token the operator pastes once (kept in localStorage), and stays
 * live on the event stream. Built for fleets of a thousand agents: the agent table is
 * filtered and paged in the browser, and event bursts are folded into one refresh a second.
 */
import { currentToken, onTokenRefused, saveToken } from './api'
import { wireDetail } from './detail'
import { $, chipStatus } from './dom'
import { flush, listen, setLive, stopListening } from './feed'
import { filterAgents, loadAgents, showAgentStatus, turnPage } from './fleet'
import { ago } from './format'
import { loadStats } from './stats'
import { wireTaskLog } from './task-log'
import { filterTasks, loadTasks } from './tasks'

const tokenBox = () => $<HTMLTextAreaElement>('token')
const loginShown = () => $('login').classList.contains('show')

function showLogin(msg: string) {
  const dlg = $<HTMLDialogElement>('task-detail')
  if (dlg.open) dlg.close()
  $('login').classList.add('show')
  $('login-err').textContent = msg || ''
  tokenBox().value = currentToken()
  setLive('off', 'offline')
  stopListening()
}

/** Who the token says it is (read from its claims; the API checks it, not the page). */
function showWho(token: string) {
  try {
    const p = JSON.parse(atob((token.split('.')[1] ?? '').replace(/-/g, '+').replace(/_/g, '/')))
    $('who').textContent = `${p.sub} · ${p.role}`
  } catch {}
}

async function start() {
  $('login').classList.remove('show')
  setLive('retry', 'connecting…')
  try {
    await Promise.all([loadAgents(), loadStats()])
    await loadTasks()
  } catch (err) {
    if (String((err as Error).message) !== 'auth') setLive('retry', 'API unreachable, retrying…')
    return
  }
  showWho(currentToken())
  listen()
}

onTokenRefused((status) => showLogin(`That token was refused (${status}).`))
wireDetail()
wireTaskLog()
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
if (currentToken()) start()
else showLogin('')
