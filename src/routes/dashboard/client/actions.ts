/**
 * What an operator may do from the page, for admin and operator tokens (the page reads the
 * role from the token to offer them; the API enforces it): cancel and retry a task; drain
 * (with a deadline), set to maintenance, resume, set online, quarantine (with a reason),
 * release, and delete an agent. Every one asks first (confirm.ts) and
 * goes through `apiFetch`, like every read.
 */
import { canAct, type Problem, send } from './api'
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

interface AgentStep {
  action: string
  label: string
  ok: string
  /** Offered to an agent in one of these statuses. */
  from: readonly string[]
  text: (a: Agent) => string
  input?: { label: string; kind: 'text' | 'number'; placeholder?: string; required?: boolean }
  run: (a: Agent, value: string) => Promise<Problem | null>
  danger?: boolean
}

const held = (a: Agent) => `${a.activeTasks} task${a.activeTasks === 1 ? '' : 's'}`

const agentSteps: AgentStep[] = [
  {
    action: 'drain',
    label: 'Drain…',
    ok: 'Drain',
    from: ['online', 'error'],
    text: (a) =>
      `It takes no new work and finishes what it holds (${held(a)}), then goes to maintenance. With a deadline, what it still holds then is stopped and put back in the queue (no attempt spent).`,
    input: { label: 'Deadline in seconds (empty: none)', kind: 'number', placeholder: 'e.g. 600' },
    run: (a, value) => send('POST', `${agentPath(a)}/drain`, value ? { deadlineSeconds: Number(value) } : {}),
  },
  {
    action: 'maintenance',
    label: 'Maintenance…',
    ok: 'Set to maintenance',
    from: ['online', 'draining', 'error', 'offline'],
    text: () =>
      'It takes no new work, and its own heartbeats do not bring it back: only an operator sets it online again.',
    run: (a) => send('PATCH', `${agentPath(a)}/status`, { status: 'maintenance' }),
  },
  {
    action: 'resume',
    label: 'Resume…',
    ok: 'Resume',
    from: ['draining', 'maintenance'],
    text: () => 'It takes work again while it has free slots (a drain in progress is called off).',
    run: (a) => send('POST', `${agentPath(a)}/resume`),
  },
  {
    action: 'online',
    label: 'Set online…',
    ok: 'Set online',
    from: ['error'],
    text: () => 'It takes work again while it has free slots (an agent that stops heartbeating goes offline).',
    run: (a) => send('PATCH', `${agentPath(a)}/status`, { status: 'online' }),
  },
  {
    action: 'quarantine',
    label: 'Quarantine…',
    ok: 'Quarantine',
    from: ['online', 'draining', 'maintenance', 'error', 'offline'],
    text: (a) =>
      `It takes no new work until released, finishes what it holds (${held(a)}), is skipped by rollouts and not counted as capacity.`,
    input: { label: 'Reason', kind: 'text', placeholder: 'why it is taken out', required: true },
    run: (a, value) => send('POST', `${agentPath(a)}/quarantine`, { reason: value }),
    danger: true,
  },
  {
    action: 'release',
    label: 'Release…',
    ok: 'Release',
    from: ['quarantined'],
    text: (a) => `Its quarantine (${a.quarantine?.reason ?? 'no reason given'}) ends: it takes work again.`,
    run: (a) => send('POST', `${agentPath(a)}/release`),
  },
]

/**
 * The agent's actions (none for a viewer): those its status allows. `after(deleted)` runs
 * once one is done. Deleting an agent that holds tasks is refused (409
 * agent_has_active_tasks): the dialog then offers to delete it anyway, with `force=true`,
 * which puts those tasks back in the queue.
 */
export function agentActions(a: Agent, after: (deleted: boolean) => void): HTMLElement[] {
  if (!canAct()) return []
  const out: HTMLElement[] = agentSteps
    .filter((s) => s.from.includes(a.status))
    .map((s) =>
      button(
        s.action,
        s.label,
        () =>
          confirmAction({
            title: `${s.ok}: ${quoted(a.name)}?`,
            text: s.text(a),
            ok: s.ok,
            ...(s.input ? { input: s.input } : {}),
            ...(s.danger ? { danger: true } : {}),
            run: (value) => s.run(a, value),
            done: () => after(false),
          }),
        s.danger,
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
