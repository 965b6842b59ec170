/**
 * What a shell task is given of the runner's host: its environment (a small allow-list,
 * never the runner's own settings), the user it runs as, and its limits. Checked once, when the handler
 * is made: a setting that cannot hold throws ShellConfigError (the CLI exits 2 with its
 * message).
 */
import { execFileSync } from 'node:child_process'
import { accessSync, constants, existsSync, readFileSync } from 'node:fs'
import { resolve } from 'node:path'

/** A shell setting that cannot work (the CLI: exit 2, with the message). */
export class ShellConfigError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'ShellConfigError'
  }
}

/**
 * The runner's environment variables every shell task gets (when the runner has them), with
 * every `LC_*`: the program search path, the home, the language and the time zone. Nothing
 * else of the runner's environment reaches a task unless passed by name (`passEnv`).
 */
export const SHELL_BASE_ENV = ['PATH', 'HOME', 'LANG', 'TZ'] as const

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/
/** The runner's own settings (its token among them): never passed to a task. */
const RUNNER_SETTING = /^AGENTICCP_/i

/** Checks the names of `passEnv`: variable names, none of them the runner's own settings. */
export function checkPassEnv(names: readonly string[]): string[] {
  for (const name of names) {
    if (!NAME.test(name)) throw new ShellConfigError(`--pass-env takes variable names (got "${name}").`)
    if (RUNNER_SETTING.test(name)) {
      throw new ShellConfigError(
        `--pass-env ${name}: the runner's own settings (AGENTICCP_*, its token among them) are never passed to shell tasks; give a task what it needs in its payload's env.`,
      )
    }
  }
  return [...new Set(names)]
}

/**
 * A shell task's environment from the runner's: SHELL_BASE_ENV and every LC_*, the names in
 * `passEnv`, then `home` (a --run-as user's) in place of HOME. The payload's env and the
 * task's own variables go on top of it.
 */
export function baseEnvironment(
  from: NodeJS.ProcessEnv,
  passEnv: readonly string[],
  home?: string,
): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [name, value] of Object.entries(from)) {
    if (value === undefined || RUNNER_SETTING.test(name)) continue
    if ((SHELL_BASE_ENV as readonly string[]).includes(name) || name.startsWith('LC_') || passEnv.includes(name)) {
      env[name] = value
    }
  }
  if (home !== undefined) env.HOME = home
  return env
}

/** The user shell tasks run as (`--run-as`): ids and home from the user database. */
export interface RunAs {
  user: string
  uid: number
  gid: number
  home: string
}

/**
 * `user` (a name or a uid) as the user database knows it, for a runner that runs as root and
 * drops to it for each shell task. Throws ShellConfigError when this process is not root
 * (it could not switch users) or the user is unknown.
 */
export function runAsUser(user: string): RunAs {
  const self = process.getuid?.()
  if (self === undefined) throw new ShellConfigError('--run-as needs a POSIX system (setuid).')
  if (self !== 0) {
    throw new ShellConfigError(
      `--run-as ${user}: switching users needs a runner started as root (this one runs as uid ${self}); without root, run the runner itself as the user tasks should run as.`,
    )
  }
  const found = passwdEntry(user)
  if (!found) throw new ShellConfigError(`--run-as ${user}: no such user on this host.`)
  return found
}

/** The user database's entry for a name or uid: `getent passwd` (NSS: files, LDAP, …), else /etc/passwd. */
function passwdEntry(user: string): RunAs | undefined {
  if (!/^[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?$/.test(user)) return undefined
  let lines: string[]
  try {
    lines = [execFileSync('getent', ['passwd', user], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })]
  } catch (err) {
    // getent exits 2 for a user it does not know; where there is no getent, the file.
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return undefined
    try {
      lines = readFileSync('/etc/passwd', 'utf8').split('\n')
    } catch {
      return undefined
    }
  }
  for (const line of lines) {
    const [name, , uid, gid, , home] = line.trim().split(':')
    if (name === undefined || uid === undefined || gid === undefined || home === undefined) continue
    if (name !== user && uid !== user) continue
    if (!/^\d+$/.test(uid) || !/^\d+$/.test(gid)) continue
    return { user: name, uid: Number(uid), gid: Number(gid), home }
  }
  return undefined
}

/** libuv's search path when the environment has none. */
const DEFAULT_PATH = '/usr/bin:/bin'

/**
 * Where `program` is: itself when it names a path (a `/` in it), else the first directory of
 * `path` that holds it (executable, with `executable`; else there at all); a relative one
 * from `cwd`. Undefined: nowhere.
 */
export function findProgram(
  program: string,
  path = DEFAULT_PATH,
  executable = true,
  cwd = process.cwd(),
): string | undefined {
  const there = (file: string) => {
    try {
      if (!executable) return existsSync(file)
      accessSync(file, constants.X_OK)
      return true
    } catch {
      return false
    }
  }
  if (program.includes('/')) return there(resolve(cwd, program)) ? program : undefined
  for (const dir of path.split(':')) {
    const file = resolve(cwd, dir, program)
    if (there(file)) return file
  }
  return undefined
}

/**
 * The prlimit program that caps each shell command's processes (`--max-processes`):
 * RLIMIT_NPROC, which counts every process and thread of the command's user, and which root
 * is exempt from. Throws ShellConfigError when the limit would not hold: not Linux, a root
 * runner with no --run-as (its tasks run as root), or no prlimit (util-linux) on PATH.
 */
export function processLimiter(max: number, runAs: RunAs | undefined): string {
  if (!Number.isSafeInteger(max) || max < 1)
    throw new ShellConfigError('--max-processes must be a whole number, 1 or more.')
  if (process.platform !== 'linux') {
    throw new ShellConfigError(
      `--max-processes works on Linux only (RLIMIT_NPROC, set by prlimit); this is ${process.platform}.`,
    )
  }
  if (process.getuid?.() === 0 && !runAs) {
    throw new ShellConfigError(
      '--max-processes limits the processes of the user tasks run as (RLIMIT_NPROC), and root is exempt from it: give --run-as USER too.',
    )
  }
  const prlimit = findProgram('prlimit', process.env.PATH)
  if (!prlimit) {
    throw new ShellConfigError(
      "--max-processes needs the prlimit program (util-linux), and there is none on PATH: install it, or limit the runner's processes from outside (systemd TasksMax=, docker run --pids-limit, a Kubernetes pod's PID limit).",
    )
  }
  return prlimit
}
