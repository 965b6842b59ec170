/**
 * The confirmation every action asks for: an in-page dialog (not window.confirm, which a
 * test cannot drive and which blocks the page's live updates). It says what will happen,
 * runs the action on Confirm, closes when the API did it, and otherwise stays open with the
 * API's own words (its problem's `detail`). A refusal may lead to a further step: deleting
 * an agent that holds tasks offers to delete it anyway, putting them back in the queue.
 */
import type { Problem } from './api'
import { $ } from './dom'

export interface Step {
  title: string
  text: string
  /** The confirm button's label: what it does ("Cancel the task"). */
  ok: string
  /** It ends or removes something (the button says so in red). */
  danger?: boolean
  /** Does it: null when done, else why not. */
  run: () => Promise<Problem | null>
  /** A refusal that is a question (409 agent_has_active_tasks): the step that answers it. */
  next?: (p: Problem) => Step | null
  /** After it is done. */
  done?: () => void
}

const dialog = () => $<HTMLDialogElement>('confirm')
let step: Step | null = null
let busy = false

function show(s: Step, note = '') {
  step = s
  $('cf-title').textContent = s.title
  $('cf-text').textContent = s.text
  const err = $('cf-err')
  delete err.dataset.code
  err.textContent = note
  err.hidden = !note
  const ok = $<HTMLButtonElement>('cf-ok')
  ok.textContent = s.ok
  ok.classList.toggle('danger', !!s.danger)
  ok.disabled = false
}

/** Asks, then acts. */
export function confirmAction(s: Step) {
  busy = false
  show(s)
  const dlg = dialog()
  if (!dlg.open) dlg.showModal()
  $('cf-cancel').focus()
}

export function closeConfirm() {
  const dlg = dialog()
  if (dlg.open) dlg.close()
}

async function go() {
  const s = step
  if (!s || busy) return
  busy = true
  const ok = $<HTMLButtonElement>('cf-ok')
  ok.disabled = true
  ok.textContent = 'Working…'
  const problem = await s.run()
  busy = false
  if (!problem) {
    if (step === s) {
      step = null
      closeConfirm()
    }
    s.done?.() // (also when the dialog was dismissed while the request was on its way)
    return
  }
  if (step !== s) return
  // Refused: the API's words, and the step that answers the refusal if there is one.
  show(s.next?.(problem) ?? s, problem.detail)
  $('cf-err').dataset.code = problem.code
}

export function wireConfirm() {
  const dlg = dialog()
  $('cf-ok').addEventListener('click', () => {
    go().catch(() => {})
  })
  $('cf-cancel').addEventListener('click', () => dlg.close())
  dlg.addEventListener('close', () => {
    step = null
  })
}
