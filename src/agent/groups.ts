import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/**
 * The processes of a running shell command, found and stopped as a whole, and recorded in a
 * directory (the runner's `<state-dir>/groups`) so that a runner killed with SIGKILL (which
 * cannot clean up) has the commands it left behind stopped when it starts again: their runs
 * are reported lost and retried, and must not go on beside the retry.
 *
 * A command starts as the leader of a session and process group of its own (pid = sid =
 * pgid). What it starts may leave the group (setpgid: `set -m`, `timeout`) or the session too
 * (setsid: `setsid`, daemons). On Linux its processes are found in /proc: every process of
 * its session (field 6 of /proc/<pid>/stat), every process whose environment carries its
 * marks (AGENTICCP_TASK_ID and AGENTICCP_TASK_ATTEMPT, which a process that made a session of
 * its own still has), and every member of a session such a marked process leads.
 *
 * The leader is identified by its pid and that process's start time (/proc/<pid>/stat,
 * field 22), so a pid the system has since given to another program is never signalled: a
 * process found is signalled only if it started no earlier than the leader, and only while
 * its pid still names the process found (its start time read again just before). Without
 * /proc only the process group is reached, and nothing is recorded.
 */
export interface GroupRecord {
  /** The leader's pid: its session id and process group id. */
  pid: number
  /** The leader's start time, in clock ticks since boot (/proc/<pid>/stat, field 22). */
  start: number
  taskId: string
  attempt: number
}

export interface ProcStat {
  /** The process state (R, S, D, Z, …; field 3). */
  state: string
  /** Its process group (field 5). */
  group: number
  /** Its session (field 6). */
  session: number
  /** Its start time, clock ticks since boot (field 22). */
  start: number
}

/**
 * A process's state, group, session and start time from /proc/<pid>/stat, or undefined when
 * it is gone (or there is no /proc). The start time tells a process from a later one given
 * the same pid (the state dir's lock uses it too).
 */
export function procStat(pid: number): ProcStat | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The fields after the parenthesised command name (which may hold spaces), from field 3 on.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return { state: f[0] ?? '', group: Number(f[2]), session: Number(f[3]), start: Number(f[19]) }
  } catch {
    return undefined
  }
}

/** Records a just-started command; returns what forgets it (when the command has ended). */
export function recordGroup(dir: string, c: GroupRecord): () => void {
  if (!Number.isFinite(c.start)) return () => {}
  // A record made before the spawn (pid 0) is named by its task and attempt.
  const file = join(dir, c.pid > 1 ? `${c.pid}.json` : `starting-${c.taskId}-${c.attempt}.json`)
  const { pid, start, taskId, attempt } = c
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    writeFileSync(file, JSON.stringify({ pid, start, taskId, attempt } satisfies GroupRecord), { mode: 0o600 })
  } catch {
    return () => {}
  }
  return () => rmSync(file, { force: true })
}

/** A process found, as found (its start time tells it from a later process with its pid). */
interface Found {
  pid: number
  start: number
}

/** Whether a process in this state has anything left to signal (a zombie or a dead one has not). */
const live = (s: ProcStat) => s.state !== 'Z' && s.state !== 'X'

/**
 * The live processes of the command `c` (Linux; none without /proc): its session's, the ones
 * carrying its marks, and the members of sessions those lead; each started no earlier than
 * the leader. Never this process.
 */
export function commandProcesses(c: GroupRecord): Found[] {
  let pids: number[]
  try {
    pids = readdirSync('/proc')
      .filter((n) => /^\d+$/.test(n))
      .map(Number)
  } catch {
    return []
  }
  // The leader's pid names another process now: its session (and group) ended before that
  // pid could be given out again, so whatever is there belongs to someone else.
  const leader = procStat(c.pid)
  const sessions = new Set<number>(c.pid <= 1 || (leader && leader.start !== c.start) ? [] : [c.pid])
  const marks = [`\0AGENTICCP_TASK_ID=${c.taskId}\0`, `\0AGENTICCP_TASK_ATTEMPT=${c.attempt}\0`]
  const candidates: (ProcStat & Found)[] = []
  for (const pid of pids) {
    if (pid === process.pid || pid <= 1) continue
    const s = procStat(pid)
    if (s && s.start >= c.start) candidates.push({ ...s, pid })
  }
  const found: (ProcStat & Found)[] = []
  const unmarked: (ProcStat & Found)[] = []
  for (const p of candidates) {
    if (sessions.has(p.session)) found.push(p)
    else if (carries(p.pid, marks)) {
      found.push(p)
      if (p.session === p.pid) sessions.add(p.pid) // a session it made: everything in it is the command's
    } else unmarked.push(p)
  }
  // Members of a session a marked process made, which cleared their environment.
  for (const p of unmarked) if (sessions.has(p.session)) found.push(p)
  return found.filter(live).map(({ pid, start }) => ({ pid, start }))
}

/** Whether process `pid`'s environment holds every one of `marks` (each `\0NAME=value\0`). */
function carries(pid: number, marks: string[]): boolean {
  let env: string
  try {
    env = `\0${readFileSync(`/proc/${pid}/environ`, 'latin1')}\0`
  } catch {
    return false // gone, or not ours to read
  }
  return marks.every((m) => env.includes(m))
}

/**
 * Sends `signal` to every process of the command `c`: its process group at once (while its
 * leader is the process recorded), then each process found (commandProcesses) that is still
 * the process found. Returns how many processes were signalled, the group counted as one.
 */
export function signalCommand(c: GroupRecord, signal: NodeJS.Signals): number {
  let sent = 0
  if (c.pid > 1 && procStat(c.pid)?.start === c.start) {
    try {
      process.kill(-c.pid, signal)
      sent++
    } catch {} // no group left (or no such group)
  }
  for (const p of commandProcesses(c)) {
    if (procStat(p.pid)?.start !== p.start) continue // gone meanwhile, its pid perhaps reused
    try {
      process.kill(p.pid, signal)
      sent++
    } catch {} // gone meanwhile
  }
  return sent
}

/**
 * SIGKILL to every process of the command `c`, again while a round finds processes it has
 * not signalled yet (forked meanwhile), a few rounds at most. Returns how many processes
 * were killed.
 */
export function killCommand(c: GroupRecord): number {
  const killed = new Set<string>()
  for (let round = 0; round < 5; round++) {
    if (c.pid > 1 && procStat(c.pid)?.start === c.start) {
      try {
        process.kill(-c.pid, 'SIGKILL')
      } catch {}
    }
    let fresh = 0
    for (const p of commandProcesses(c)) {
      if (procStat(p.pid)?.start !== p.start) continue // gone meanwhile, its pid perhaps reused
      try {
        process.kill(p.pid, 'SIGKILL')
      } catch {
        continue
      }
      const key = `${p.pid}:${p.start}`
      if (!killed.has(key)) fresh++
      killed.add(key)
    }
    if (fresh === 0) break
  }
  return killed.size
}

/**
 * Kills (SIGKILL) the commands recorded in `dir` by an earlier process that are still there,
 * whole (killCommand), and forgets every record. Returns the commands killed.
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
      // pid 0: recorded before its spawn (found by its marks alone).
      if (!Number.isInteger(r.pid) || r.pid < 0 || r.pid === 1 || !Number.isFinite(r.start)) continue
      if (typeof r.taskId !== 'string' || !Number.isInteger(r.attempt)) continue
      if (killCommand(r) > 0) killed.push(r)
    } catch {
      // unreadable: forgotten below
    } finally {
      rmSync(file, { force: true })
    }
  }
  return killed
}
