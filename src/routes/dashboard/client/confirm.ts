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
  /** A value the action needs (a drain's deadline, a quarantine's reason), asked in the dialog. */
  input?: { label: string; kind: 'text' | 'number'; placeholder?: string; required?: boolean }
  /** Does it (with the input's value, trimmed): null when done, else why not. */
  run: (value: string) => Promise<Problem | null>
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
  const field = $('cf-field')
  const input = $<HTMLInputElement>('cf-input')
  field.hidden = !s.input
  if (s.input && !note) {
    $('cf-label').textContent = s.input.label
    input.type = s.input.kind
    input.placeholder = s.input.placeholder ?? ''
    input.value = ''
  }
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
  const value = s.input ? $<HTMLInputElement>('cf-input').value.trim() : ''
  if (s.input?.required && !value) {
    show(s, `${s.input.label}: required.`)
    busy = false
    return
  }
  ok.disabled = true
  ok.textContent = 'Working…'
  const problem = await s.run(value)
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
