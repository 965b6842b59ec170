/**
 * Rollouts through the typed client: a progress line for a rollout, and following one to
 * its end with the server's long poll (`GET /rollouts/{id}/wait`). `npm run rollout` is
 * built on these (scripts/rollout.ts). Runtime imports: only the client and src/domain.
 */
import type { RolloutStatus, targetStatuses } from '../domain/rollouts'
import { type Client, ok } from './index'

/** A rollout as the API answers it (GET /rollouts/{id}). */
export interface RolloutView {
  id: string
  name: string
  status: RolloutStatus
  targetCount: number
  counts: Record<(typeof targetStatuses)[number], number>
  errors: number
  maxErrors: number
  maxConcurrency: number
  wave: number
  waves: number[]
  endedAt: string | null
}

/**
 * One line: `openssl-upgrade running · wave 2/3 · 45/200 done (40 ok) · 5 in flight ·
 * errors 3/5 · 150 waiting`.
 */
export function progressLine(r: RolloutView): string {
  const c = r.counts
  const done = c.succeeded + c.failed + c.timed_out + c.undeliverable + c.cancelled + c.skipped
  const parts = [
    `${r.name} ${r.endedAt ? `${r.status} (ended)` : r.status}`,
    `wave ${r.wave}/${r.waves.length}`,
    `${done}/${r.targetCount} done (${c.succeeded} ok)`,
    `${c.dispatched + c.running} in flight`,
    `errors ${r.errors}/${r.maxErrors}`,
  ]
  if (c.waiting) parts.push(`${c.waiting} waiting`)
  if (c.skipped) parts.push(`${c.skipped} skipped`)
  return parts.join(' · ')
}

/**
 * Follows a rollout until it ends (`endedAt` set), calling `onUpdate` with each state read:
 * one long poll after another, each up to `pollSeconds`. Resolves with the ended rollout.
 */
export async function followRollout(
  api: Client,
  id: string,
  onUpdate: (r: RolloutView) => void,
  pollSeconds = 5,
): Promise<RolloutView> {
  for (;;) {
    const r: RolloutView = await ok(
      api.api.v1.rollouts[':id'].wait.$get({ param: { id }, query: { timeoutSeconds: String(pollSeconds) } }),
    )
    onUpdate(r)
    if (r.endedAt) return r
  }
}

/** The exit code a command following a rollout ends with: 0 only for `completed`. */
export const exitCodeOf = (r: Pick<RolloutView, 'status'>) => (r.status === 'completed' ? 0 : 1)
