/**
 * One live runner per state dir. Two runners on one dir share an identity: the second would
 * kill the first one's commands as leftovers, report its runs lost, and leave the agent
 * draining when it stops while the first goes on. So a runner holds its state dir with a lock
 * file, `runner.lock`, saying who holds it (pid, that process's start time, host), checked as
 * the embedded database's lock is (src/db/pglite-lock.ts):
 *
 * - on this host, the holder is live if its pid runs and is the same process (its start time
 *   from /proc/<pid>/stat, so a pid the system gave to another program since does not count);
 *   a lock naming this very process is held only if this process took it (an `Agent` of its
 *   own on the same dir), else it is a previous process's that had the same pid (a container
 *   restarted);
 * - from another host (a volume shared between hosts or containers), its pid means nothing
 *   here: the holder touches the file every LEASE_REFRESH_MS, and a lock not touched for
 *   LEASE_STALE_MS is stale.
 *
 * A stale lock is taken over under a second, exclusive file, so two starters cannot both take
 * it. The lock goes when its holder lets go (or its process exits).
 */
import { mkdirSync, readFileSync, realpathSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { procStat } from './groups'
import { AgentFatalError } from './identity'

export const LOCK_FILE = 'runner.lock'
const LEASE_REFRESH_MS = 5_000
const LEASE_STALE_MS = 30_000

/** Who holds a state dir, as its lock file says. */
export interface LockHolder {
  pid: number
  /** The holder's start time (clock ticks since boot, /proc/<pid>/stat); absent without /proc. */
  start?: number
  host: string
  /** When it took the lock (for people reading the message). */
  since?: string
}

/** The state dir is held by another live runner. */
export class StateDirHeldError extends AgentFatalError {
  constructor(
    readonly dir: string,
    readonly holder: LockHolder | undefined,
  ) {
    const who = holder
      ? `runner process ${holder.pid}${holder.host === hostname() ? '' : ` on ${holder.host}`}${holder.since ? ` (since ${holder.since})` : ''}`
      : 'another runner'
    super(
      `the state dir ${dir} is in use by ${who}; stop that runner, or give this one a state dir of its own (--state-dir)`,
    )
    this.name = 'StateDirHeldError'
  }
}

/** Dirs this process holds (real paths): a second `Agent` on one of them is refused too. */
const held = new Set<string>()

function readHolder(file: string): { holder: LockHolder | undefined; ageMs: number } | undefined {
  try {
    const ageMs = Date.now() - statSync(file).mtimeMs
    let holder: LockHolder | undefined
    try {
      const p = JSON.parse(readFileSync(file, 'utf8')) as Partial<LockHolder>
      if (Number.isInteger(p.pid) && typeof p.host === 'string') {
        holder = {
          pid: p.pid as number,
          host: p.host,
          ...(typeof p.start === 'number' ? { start: p.start } : {}),
          ...(typeof p.since === 'string' ? { since: p.since } : {}),
        }
      }
    } catch {
      // half-written or foreign: judged by its age alone
    }
    return { holder, ageMs }
  } catch {
    return undefined // gone
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as { code?: string }).code === 'EPERM'
  }
}

/** Whether the lock found is no one's any more. */
function stale(found: { holder: LockHolder | undefined; ageMs: number }, real: string): boolean {
  const h = found.holder
  if (!h || h.host !== hostname()) return found.ageMs > LEASE_STALE_MS
  if (h.pid === process.pid) return !held.has(real)
  if (h.pid <= 0 || !alive(h.pid)) return true
  const now = procStat(h.pid)?.start
  // The same pid started at another time is another process; without /proc a live pid counts.
  return h.start !== undefined && now !== undefined && now !== h.start
}

/**
 * Takes `dir` (created 0700 if missing) for this process, or throws StateDirHeldError naming
 * the live holder. Returns the release.
 */
export function lockStateDir(dir: string): () => void {
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const real = realpathSync(dir)
  const file = join(dir, LOCK_FILE)
  const takeover = `${file}.takeover`
  const me = JSON.stringify({
    pid: process.pid,
    start: procStat(process.pid)?.start,
    host: hostname(),
    since: new Date().toISOString(),
  } satisfies LockHolder)
  if (held.has(real)) throw new StateDirHeldError(dir, readHolder(file)?.holder)
  const take = (): boolean => {
    try {
      writeFileSync(file, me, { flag: 'wx', mode: 0o600 })
      return true
    } catch (err) {
      if ((err as { code?: string }).code !== 'EEXIST') throw err
      return false
    }
  }
  for (let tries = 0; tries < 3; tries++) {
    if (take()) return hold(real, file, me)
    const found = readHolder(file)
    if (!found) continue // released meanwhile
    if (!stale(found, real)) throw new StateDirHeldError(dir, found.holder)
    // Stale: replaced, by one starter at a time, and only if it is still the same lock.
    try {
      writeFileSync(takeover, me, { flag: 'wx', mode: 0o600 })
    } catch (err) {
      if ((err as { code?: string }).code !== 'EEXIST') throw err
      const other = readHolder(takeover)
      if (other && other.ageMs > LEASE_STALE_MS) rmSync(takeover, { force: true }) // its taker died
      continue
    }
    try {
      const again = readHolder(file)
      if (!again || (stale(again, real) && again.holder?.pid === found.holder?.pid)) {
        writeFileSync(file, me, { mode: 0o600 })
        return hold(real, file, me)
      }
    } finally {
      rmSync(takeover, { force: true })
    }
  }
  throw new StateDirHeldError(dir, readHolder(file)?.holder)
}

/** Keeps the lease fresh while held; the release (or the process's exit) removes it if it is still ours. */
function hold(real: string, file: string, me: string): () => void {
  held.add(real)
  const timer = setInterval(() => {
    try {
      const now = new Date()
      utimesSync(file, now, now)
    } catch {
      // removed under us: nothing to refresh
    }
  }, LEASE_REFRESH_MS)
  timer.unref?.()
  let released = false
  const release = () => {
    if (released) return
    released = true
    clearInterval(timer)
    held.delete(real)
    process.removeListener('exit', release)
    try {
      if (readFileSync(file, 'utf8') === me) rmSync(file, { force: true })
    } catch {
      // already gone
    }
  }
  process.once('exit', release)
  return release
}
