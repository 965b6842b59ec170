/**
 * The rollouts panel: the newest rollouts, each with a progress bar by target state, its
 * wave, its errors against the budget, and (for an admin or operator token) pause, resume
 * and cancel. A rollout's row opens its targets below; a target opens its task (with its log).
 */
import { canAct, get, send } from './api'
import { $, esc } from './dom'
import type { Page } from './types'

interface Rollout {
  id: string
  name: string
  status: string
  targetCount: number
  counts: Record<string, number>
  errors: number
  maxErrors: number
  wave: number
  waves: number[]
  endedAt: string | null
}
interface Target {
  agentId: string
  agentName: string
  wave: number
  status: string
  taskId: string | null
  errorCode: string | null
}

/** Target states in the bar's order, with their colours. */
const BAR: [string, string][] = [
  ['succeeded', 'var(--ok)'],
  ['failed', 'var(--bad)'],
  ['timed_out', 'var(--bad)'],
  ['undeliverable', 'var(--warn)'],
  ['cancelled', 'var(--idle)'],
  ['skipped', 'var(--idle)'],
  ['running', 'var(--accent)'],
  ['dispatched', 'var(--info)'],
]

let open = ''

const bar = (r: Rollout) =>
  `<span class="rbar" title="${esc(
    Object.entries(r.counts)
      .filter(([, n]) => n)
      .map(([s, n]) => `${s} ${n}`)
      .join(' · '),
  )}">${BAR.map(([s, c]) =>
    r.counts[s] ? `<i style="width:${(r.counts[s] / Math.max(1, r.targetCount)) * 100}%;background:${c}"></i>` : '',
  ).join('')}</span>`

function controls(r: Rollout): string {
  if (!canAct() || r.endedAt) return ''
  const b = (what: string, cls = '') =>
    `<button type="button" class="act ${cls}" data-rollout-act="${what}" data-rollout-id="${esc(r.id)}">${what}</button>`
  return [
    r.status === 'running' ? b('pause') : '',
    r.status === 'paused' ? b('resume') : '',
    r.status === 'running' || r.status === 'paused' ? b('cancel', 'danger') : '',
  ].join(' ')
}

export async function loadRollouts() {
  const page = await get<Page<Rollout>>('/rollouts?limit=20')
  $('rollout-count').textContent = page.items.length ? `${page.items.length} newest` : 'none yet'
  $('rollouts').innerHTML = page.items
    .map(
      (r) =>
        `<tr data-rollout-id="${esc(r.id)}" tabindex="0"><td title="${esc(r.id)}">${esc(r.name)}</td><td><span class="st ${esc(r.status)}">${esc(r.status)}</span></td><td>${bar(r)} ${r.targetCount - (r.counts.waiting ?? 0) - (r.counts.dispatched ?? 0) - (r.counts.running ?? 0)}/${r.targetCount}</td><td>${r.wave}/${r.waves.length}</td><td class="${r.errors > r.maxErrors ? 'bad' : ''}">${r.errors}/${r.maxErrors}</td><td>${controls(r)}</td></tr>`,
    )
    .join('')
  if (open) await loadTargets(open)
}

async function loadTargets(id: string) {
  const page = await get<Page<Target>>(`/rollouts/${encodeURIComponent(id)}/targets?limit=200`)
  $('rollout-targets').innerHTML = page.items
    .map(
      (t) =>
        `<tr${t.taskId ? ` data-task-id="${esc(t.taskId)}" tabindex="0"` : ''}><td>${esc(t.agentName)}</td><td>${t.wave}</td><td><span class="st ${esc(t.status)}">${esc(t.status)}</span></td><td class="muted">${esc(t.errorCode ?? '')}</td></tr>`,
    )
    .join('')
}

/** The panel's clicks: a control, or a row opening its targets; `openTask` opens a target's task. */
export function wireRollouts(openTask: (id: string) => void) {
  $('rollouts').addEventListener('click', async (e) => {
    const t = e.target instanceof Element ? e.target : null
    const act = t?.closest<HTMLElement>('[data-rollout-act]')
    if (act) {
      const problem = await send('POST', `/rollouts/${act.dataset.rolloutId}/${act.dataset.rolloutAct}`)
      $('rollout-err').textContent = problem ? problem.detail : ''
      await loadRollouts()
      return
    }
    const row = t?.closest<HTMLElement>('tr[data-rollout-id]')
    if (row?.dataset.rolloutId) {
      open = row.dataset.rolloutId
      await loadTargets(open)
    }
  })
  $('rollout-targets').addEventListener('click', (e) => {
    const id = e.target instanceof Element ? e.target.closest<HTMLElement>('[data-task-id]')?.dataset.taskId : undefined
    if (id) openTask(id)
  })
}
