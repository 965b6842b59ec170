import type { FleetEvent } from './types'

/**
 * One line for an event: the move (from → to) with why (reason, error code) and the attempt.
 * task.requeued after a failure has no from: "requeued (retry, attempt 1) → pending". An end
 * whose run started in the same report (`started`) shows the start it stands for:
 * "assigned → running → completed (attempt 1)".
 */
export function describe(e: FleetEvent): string {
  const d = e.data || {}
  const why: string[] = []
  if (d.reason) why.push(String(d.reason))
  if (d.error && typeof d.error === 'object' && 'code' in d.error && d.error.code) why.push(String(d.error.code))
  if (d.via) why.push(`via ${d.via}`)
  if (d.attempt != null) why.push(`attempt ${d.attempt}`)
  const note = why.length ? ` (${why.join(', ')})` : ''
  if (e.type === 'task.requeued' && !d.from) return `requeued${note} → ${d.to || 'pending'}`
  if (d.to) return (d.from ? `${d.from} → ` : '') + (d.started ? 'running → ' : '') + d.to + note
  if (e.type === 'task.progress') return `progress ${d.progress == null ? '–' : `${d.progress}%`}${note}`
  if (e.type === 'task.created')
    return [d.type, d.priority != null ? `priority ${d.priority}` : null].filter(Boolean).join(', ')
  if (e.type === 'agent.registered')
    return [d.provider, d.region, d.takeover ? 'takeover' : null].filter(Boolean).join(' · ')
  if (e.type === 'agent.deregistered') return d.requeued ? `${d.requeued} task(s) requeued` : ''
  if (e.type === 'task.deleted' && d.status) return `was ${d.status}`
  return why.join(', ')
}
