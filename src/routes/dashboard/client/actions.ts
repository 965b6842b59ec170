/**
 * What an operator may do from the page, for admin and operator tokens (the page reads the
 * role from the token to offer them; the API enforces it): cancel and retry a task; drain,
 * set to maintenance or online, and delete an agent. Every one asks first (confirm.ts) and
 * goes through `apiFetch`, like every read.
 */
import { canAct, send } from './api'
import { confirmAction } from './confirm'
import { el } from './dom'
import type { Agent, Task } from './types'

const button = (action: string, label: string, onClick: () => void, danger = false) => {
  const b = el('button', { type: 'button', class: `act${danger ? ' danger' : ''}`, 'data-action': action }, label)
  b.addEventListener('click', onClick)
  return b
}

const quoted = (name: string) => `“${name}”`
const taskPath = (t: Task) => `/tasks/${encodeURIComponent(t.id)}`
const agentPath = (a: Agent) => `/agents/${encodeURIComponent(a.id)}`

/** The actions the task's state allows (none for a viewer); `after` runs once one is done. */
export function taskActions(t: Task, after: () => void): HTMLElement[] {
  if (!canAct()) return []
  const out: HTMLElement[] = []
  const live = t.status === 'pending' || t.status === 'assigned' || t.status === 'running'
  if (live && !t.cancelRequested)
    out.push(
      button(
        'cancel',
        'Cancel task…',
        () =>
          confirmAction({
            title: `Cancel ${quoted(t.name)}?`,
            text:
              t.status === 'running'
                ? 'It is running: its agent is told to stop it on its next heartbeat, and it ends cancelled when the agent confirms (or when the grace period runs out).'
                : 'It will not run: it ends cancelled now.',
            ok: 'Cancel the task',
            danger: true,
            run: () => send('POST', `${taskPath(t)}/cancel`),
            done: after,
          }),
        true,
      ),
    )
  if (t.status === 'failed' || t.status === 'cancelled' || t.status === 'timed_out')
    out.push(
      button('retry', 'Retry…', () =>
        confirmAction({
          title: `Retry ${quoted(t.name)}?`,
          text: `It goes back to the queue (now ${t.status.replace('_', ' ')}), with its retry budget renewed.`,
          ok: 'Retry the task',
          run: () => send('POST', `${taskPath(t)}/retry`),
          done: after,
        }),
      ),
    )
  return out
}

const statusSteps: { status: string; action: string; label: string; ok: string; text: (a: Agent) => string }[] = [
  {
    status: 'draining',
    action: 'drain',
    label: 'Drain…',
    ok: 'Drain',
    text: (a) =>
      `It finishes what it holds (${a.activeTasks} task${a.activeTasks === 1 ? '' : 's'}) and takes no new work.`,
  },
  {
    status: 'maintenance',
    action: 'maintenance',
    label: 'Maintenance…',
    ok: 'Set to maintenance',
    text: () =>
      'It takes no new work, and its own heartbeats do not bring it back: only an operator sets it online again.',
  },
  {
    status: 'online',
    action: 'online',
    label: 'Set online…',
    ok: 'Set online',
    text: () => 'It takes work again while it has free slots (an agent that stops heartbeating goes offline).',
  },
]

/**
 * The agent's actions (none for a viewer). `after(deleted)` runs once one is done. Deleting an
 * agent that holds tasks is refused (409 agent_has_active_tasks): the dialog then offers to
 * delete it anyway, with `force=true`, which puts those tasks back in the queue.
 */
export function agentActions(a: Agent, after: (deleted: boolean) => void): HTMLElement[] {
  if (!canAct()) return []
  const out: HTMLElement[] = statusSteps
    .filter((s) => s.status !== a.status)
    .map((s) =>
      button(s.action, s.label, () =>
        confirmAction({
          title: `${s.ok}: ${quoted(a.name)}?`,
          text: s.text(a),
          ok: s.ok,
          run: () => send('PATCH', `${agentPath(a)}/status`, { status: s.status }),
          done: () => after(false),
        }),
      ),
    )
  const forced = {
    title: `${quoted(a.name)} holds tasks`,
    text: 'Delete it anyway? Its assigned and running tasks go back to the queue (the attempt is not counted against them), and any late report from it is refused.',
    ok: 'Delete and requeue its tasks',
    danger: true,
    run: () => send('DELETE', `${agentPath(a)}?force=true`),
    done: () => after(true),
  }
  out.push(
    button(
      'delete',
      'Delete…',
      () =>
        confirmAction({
          title: `Delete ${quoted(a.name)}?`,
          text: 'It is deregistered: its token stops working at once. Its tasks’ history stays.',
          ok: 'Delete the agent',
          danger: true,
          run: () => send('DELETE', agentPath(a)),
          next: (p) => (p.code === 'agent_has_active_tasks' ? forced : null),
          done: () => after(true),
        }),
      true,
    ),
  )
  return out
}
