import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/**
 * The process groups of running commands, recorded in a directory (the runner's
 * `<state-dir>/groups`), so that a runner killed with SIGKILL (which cannot clean up) has
 * the commands it left behind stopped when it starts again: their runs are reported lost
 * and retried, and must not go on beside the retry.
 *
 * A group is identified by its leader's pid and that process's start time (from
 * /proc/<pid>/stat), so a pid the system has since given to another program is never
 * signalled. Linux only: where /proc is missing, nothing is recorded or killed.
 */
export interface GroupRecord {
  pid: number
  /** The leader's start time, in clock ticks since boot (/proc/<pid>/stat, field 22). */
  start: number
  taskId: string
  attempt: number
}

/**
 * A process's group (pgrp, field 5 of /proc/<pid>/stat) and start time (field 22, clock
 * ticks since boot), or undefined when it is gone (or there is no /proc). The start time
 * tells a process from a later one given the same pid (the state dir's lock uses it too).
 */
export function procStat(pid: number): { group: number; start: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The fields after the parenthesised command name (which may hold spaces), from field 3 on.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return { group: Number(f[2]), start: Number(f[19]) }
  } catch {
    return undefined
  }
}

/** Records a just-started group leader; returns what forgets it (when the command has ended). */
export function recordGroup(dir: string, pid: number, taskId: string, attempt: number): () => void {
  const start = procStat(pid)?.start
  if (start === undefined || !Number.isFinite(start)) return () => {}
  const file = join(dir, `${pid}.json`)
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    writeFileSync(file, JSON.stringify({ pid, start, taskId, attempt } satisfies GroupRecord), { mode: 0o600 })
  } catch {
    return () => {}
  }
  return () => rmSync(file, { force: true })
}

/**
 * Kills (SIGKILL) the groups recorded in `dir` by an earlier process that are still there,
 * and forgets every record. Returns the groups killed.
 */
export function killLeftoverGroups(dir: string): GroupRecord[] {
  let names: string[]
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.json'))
  } catch {
    return []
  }
  const killed: GroupRecord[] = []
  for (const name of names) {
    const file = join(dir, name)
    try {
      const r = JSON.parse(readFileSync(file, 'utf8')) as GroupRecord
      if (!Number.isInteger(r.pid) || r.pid <= 1) continue
      const leader = procStat(r.pid)
      // The leader alive as the same process, or gone while members of its group remain
      // (a pid still in use as a group id is not handed out again).
      const ours = leader ? leader.start === r.start && leader.group === r.pid : anyMemberOf(r.pid)
      if (ours) {
        try {
          process.kill(-r.pid, 'SIGKILL')
          killed.push(r)
        } catch {} // gone meanwhile
      }
    } catch {
      // unreadable: forgotten below
    } finally {
      rmSync(file, { force: true })
    }
  }
  return killed
}

/** Whether any process is in group `pgid`. */
function anyMemberOf(pgid: number): boolean {
  let pids: string[]
  try {
    pids = readdirSync('/proc').filter((n) => /^\d+$/.test(n))
  } catch {
    return false
  }
  return pids.some((p) => procStat(Number(p))?.group === pgid)
}
