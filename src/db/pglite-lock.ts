/**
 * One process per embedded-database directory (Node, Bun): tried here, a second PGlite
 * opened on a directory another is using silently loses that one's writes.
 *
 * The lock is a lease: `owner.lock` in the directory says who holds it (pid, host) and the
 * holder touches it every LEASE_REFRESH_MS. It is free when its holder is gone: a process of
 * this host that no longer runs, or a lease not refreshed for LEASE_STALE_MS (a crashed
 * container, another host sharing the volume, a reused pid). Taking over a stale lease
 * happens under a second, exclusive file, so two starters cannot both take it.
 */
import { readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'

const LEASE_REFRESH_MS = 5_000
const LEASE_STALE_MS = 30_000

export class DataDirLockedError extends Error {
  override name = 'DataDirLockedError'
}

type Holder = { pid: number; host: string }

function readHolder(file: string): { holder: Holder | undefined; ageMs: number } | undefined {
  try {
    const ageMs = Date.now() - statSync(file).mtimeMs
    let holder: Holder | undefined
    try {
      const parsed = JSON.parse(readFileSync(file, 'utf8')) as Partial<Holder>
      if (typeof parsed.pid === 'number' && typeof parsed.host === 'string')
        holder = { pid: parsed.pid, host: parsed.host }
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

function stale(found: { holder: Holder | undefined; ageMs: number }): boolean {
  if (found.ageMs > LEASE_STALE_MS) return true
  const h = found.holder
  return h !== undefined && h.host === hostname() && h.pid !== process.pid && !alive(h.pid)
}

/** Takes the directory's lock or throws DataDirLockedError; returns the release function. */
export function lockDataDir(dir: string): () => void {
  const file = join(dir, 'owner.lock')
  const takeover = `${file}.takeover`
  const me = JSON.stringify({ pid: process.pid, host: hostname() } satisfies Holder)
  const take = (): boolean => {
    try {
      writeFileSync(file, me, { flag: 'wx' })
      return true
    } catch (err) {
      if ((err as { code?: string }).code !== 'EEXIST') throw err
      return false
    }
  }
  for (let tries = 0; tries < 3; tries++) {
    if (take()) return hold(file, me)
    const found = readHolder(file)
    if (!found) continue // released meanwhile
    if (!stale(found)) {
      const who = found.holder ? `process ${found.holder.pid} on ${found.holder.host}` : 'another process'
      throw new DataDirLockedError(
        `the embedded database in ${dir} is in use by ${who}; stop it, or set DATA_DIR (or DATABASE_URL) for this one`,
      )
    }
    // Stale: replace it, but only one starter at a time, and only if it is still the same lease.
    try {
      writeFileSync(takeover, me, { flag: 'wx' })
    } catch (err) {
      if ((err as { code?: string }).code !== 'EEXIST') throw err
      const other = readHolder(takeover)
      if (other && other.ageMs > LEASE_STALE_MS) rmSync(takeover, { force: true }) // its taker died
      continue
    }
    try {
      const again = readHolder(file)
      if (!again || (stale(again) && again.holder?.pid === found.holder?.pid)) {
        writeFileSync(file, me)
        return hold(file, me)
      }
    } finally {
      rmSync(takeover, { force: true })
    }
  }
  throw new DataDirLockedError(`the embedded database in ${dir} is being taken over by another process; try again`)
}

/** Keeps the lease fresh while the process runs; the release removes it if it is still ours. */
function hold(file: string, me: string): () => void {
  const timer = setInterval(() => {
    try {
      const now = new Date()
      utimesSync(file, now, now)
    } catch {
      // removed under us: nothing to refresh
    }
  }, LEASE_REFRESH_MS)
  timer.unref?.()
  return () => {
    clearInterval(timer)
    try {
      if (readFileSync(file, 'utf8') === me) rmSync(file, { force: true })
    } catch {
      // already gone
    }
  }
}
