import { spawn } from 'node:child_process'
import { statSync } from 'node:fs'
import { ShellPayload } from '../domain/shell'
import { type GroupRecord, killCommand, procStat, recordGroup, signalCommand } from './groups'
import { type Handler, TaskError } from './handler'
import { baseEnvironment, checkPassEnv, findProgram, processLimiter, runAsUser, ShellConfigError } from './shell-setup'

/** The payload of a `shell` task (the service checks it with the same schema at create). */
export { ShellPayload }

export interface ShellResult {
  exitCode: number | null
  signal: string | null
  /** The last `TAIL_BYTES` of stdout and stderr, interleaved as they came. */
  outputTail: string
  /** Bytes of output past `maxOutputBytes`, not sent to the task's log (absent when none). */
  outputDropped?: number
}

export const TAIL_BYTES = 8 * 1024

/** Keeps the last `max` bytes written to it. */
class Tail {
  private chunks: Buffer[] = []
  private size = 0
  constructor(private readonly max: number) {}
  push(b: Buffer) {
    this.chunks.push(b)
    this.size += b.length
    while (this.size - (this.chunks[0]?.length ?? 0) >= this.max) this.size -= this.chunks.shift()?.length ?? 0
  }
  text(): string {
    const all = Buffer.concat(this.chunks)
    const cut = all.subarray(Math.max(0, all.length - this.max))
    // A cut through a multi-byte character leaves continuation bytes first: skip them.
    let i = 0
    while (i < cut.length && i < 4 && ((cut[i] as number) & 0xc0) === 0x80) i++
    return cut.subarray(i).toString('utf8')
  }
}

export interface ShellOptions {
  /** Between SIGTERM and SIGKILL when the task is stopped (cancel, timeout, shutdown). */
  graceSeconds?: number
  /**
   * Where each running command is recorded (the CLI: `<state-dir>/groups`),
   * so that a runner killed with SIGKILL stops what it left behind when it starts again
   * (`killLeftoverGroups`). Unset: not recorded.
   */
  groupsDir?: string
  /**
   * Variables of the runner's environment a task gets besides PATH, HOME, LANG, TZ and
   * LC_* (the CLI's `--pass-env`). The runner's own settings (AGENTICCP_*) are refused:
   * ShellConfigError.
   */
  passEnv?: string[]
  /**
   * The user (a name or a uid) every command runs as, with that user's uid, primary gid
   * (no supplementary groups) and home as HOME (the CLI's `--run-as`). The runner must run
   * as root: ShellConfigError otherwise, or when the user is unknown.
   */
  runAs?: string
  /**
   * The most bytes of a command's output (stdout and stderr together) sent to its task's
   * log (the CLI's `--max-output`). Past it the log says so, the rest is read and dropped,
   * and the command goes on; its result's outputTail is still its last 8 KiB.
   */
  maxOutputBytes?: number
  /**
   * Each command starts under RLIMIT_NPROC = this (through prlimit, the CLI's
   * `--max-processes`): a fork past it fails. The limit counts every process and thread of
   * the user the command runs as, wherever they came from, and root is exempt: so it is
   * meant with `runAs` (a root runner without it is refused). Linux with prlimit only:
   * ShellConfigError elsewhere.
   */
  maxProcesses?: number
}

/**
 * The built-in `shell` task type: runs the payload's command in a session and process group
 * of its own, so that stopping it stops everything it started (groups.ts), with a clean
 * environment (PATH, HOME, LANG, TZ, LC_*, `passEnv`, the payload's env; never the runner's
 * AGENTICCP_*), as `runAs` if given. Completes with {exitCode, signal, outputTail}; a non-zero
 * exit fails with `exit_<n>`, a death by signal with `signal_<NAME>`; a payload that does
 * not match fails with `malformed_payload` (the service never retries that), a missing cwd
 * with `cwd_not_found`. On `ctx.signal`: SIGTERM to all its processes, then SIGKILL after
 * the grace; when it exits, SIGKILL to whatever it left running. Options that cannot hold
 * throw ShellConfigError here, when it is made.
 */
export function shellHandler(options: ShellOptions = {}): Handler {
  const graceMs = (options.graceSeconds ?? 10) * 1000
  const passEnv = checkPassEnv(options.passEnv ?? [])
  const runAs = options.runAs === undefined ? undefined : runAsUser(options.runAs)
  const maxOutput = options.maxOutputBytes ?? Number.POSITIVE_INFINITY
  if (!(maxOutput > 0)) throw new ShellConfigError('--max-output must be more than 0 bytes.')
  const prlimit = options.maxProcesses === undefined ? undefined : processLimiter(options.maxProcesses, runAs)
  return (task, ctx) => {
    const parsed = ShellPayload.safeParse(task.payload)
    if (!parsed.success) {
      const why = parsed.error.issues.map((i) => `${i.path.join('.') || 'payload'}: ${i.message}`).join('; ')
      throw new TaskError('malformed_payload', `A shell task's payload is {command, env?, cwd?}: ${why}`)
    }
    const { command, env, cwd } = parsed.data
    const [file, args] =
      typeof command === 'string' ? ['/bin/sh', ['-c', command]] : [command[0] as string, command.slice(1)]
    // Never the runner's whole environment (its token, its settings, whatever its host put
    // there): the allow-list, the payload's env, and the task's own two.
    const environment: Record<string, string> = {
      ...baseEnvironment(process.env, passEnv, runAs?.home),
      ...env,
      AGENTICCP_TASK_ID: task.id,
      AGENTICCP_TASK_ATTEMPT: String(task.attempt),
    }
    // A working directory that is not there is named as such (spawn would say ENOENT, as
    // for a missing program).
    const badCwd = cwd === undefined ? undefined : cwdProblem(cwd)
    if (badCwd) {
      ctx.log(`[agent] could not start: ${badCwd.message}\n`, 'system')
      ctx.logger.warn(`could not start: ${badCwd.message}`)
      throw new TaskError(badCwd.code, `${badCwd.message[0]?.toUpperCase()}${badCwd.message.slice(1)}.`, {
        exitCode: null,
        signal: null,
        outputTail: '',
      })
    }
    // Under prlimit a program that is not there would be prlimit's exit 127 (or 126): said
    // as spawn would say it.
    if (prlimit && !findProgram(file, environment.PATH, false, cwd)) {
      const why = notStarted('ENOENT', file, cwd)
      ctx.log(`[agent] could not start: ENOENT (${why})\n`, 'system')
      ctx.logger.warn(`could not start: ENOENT (${why})`)
      throw new TaskError('spawn_failed', `Could not start: ENOENT (${why}).`, {
        exitCode: null,
        signal: null,
        outputTail: '',
        spawnError: 'ENOENT',
      })
    }
    return new Promise<ShellResult>((resolve, reject) => {
      const tail = new Tail(TAIL_BYTES)
      // Recorded before it starts: a runner killed between the spawn and the record below
      // would leave a command no record names. This one names it by its marks (its task and
      // attempt), among the processes started since this runner did.
      const intent = options.groupsDir
        ? recordGroup(options.groupsDir, {
            pid: 0,
            start: procStat(process.pid)?.start ?? Number.NaN,
            taskId: task.id,
            attempt: task.attempt,
          })
        : () => {}
      // Under prlimit, which sets the limit and execs the command (the same process).
      const child = spawn(prlimit ?? file, prlimit ? [`--nproc=${options.maxProcesses}`, '--', file, ...args] : args, {
        cwd,
        env: environment,
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true, // setsid: its own session and process group (pid = sid = pgid)
        // Another user's: neither the state dir (0700) nor the runner's process is theirs.
        // (Its cwd is entered before the switch, as root.)
        ...(runAs ? { uid: runAs.uid, gid: runAs.gid } : {}),
      })
      // The command as a whole: its session and group (its pid), and what it starts
      // elsewhere, found by the marks in their environment (groups.ts).
      const self: GroupRecord | undefined = child.pid
        ? { pid: child.pid, start: procStat(child.pid)?.start ?? Number.NaN, taskId: task.id, attempt: task.attempt }
        : undefined
      const forgetSelf = options.groupsDir && self ? recordGroup(options.groupsDir, self) : () => {}
      if (self) intent()
      const forget = () => {
        forgetSelf()
        intent()
      }
      // Each stream decoded on its own (a character split across reads stays whole), into
      // the task's log as it comes and into the tail of the result.
      const out = new TextDecoder()
      const err = new TextDecoder()
      // Said once it has started (before any of its output: that is read later).
      child.once('spawn', () =>
        ctx.log(`[agent] started: ${typeof command === 'string' ? command : JSON.stringify(command)}\n`, 'system'),
      )
      // Into the log up to maxOutputBytes (cut between characters), then only counted.
      let kept = 0
      let dropped = 0
      let endsLine = true
      const emit = (b: Buffer, decoder: TextDecoder, stream: 'stdout' | 'stderr') => {
        tail.push(b)
        if (dropped > 0) {
          dropped += b.length
          return
        }
        let n = b.length
        if (kept + n > maxOutput) {
          n = maxOutput - kept
          while (n > 0 && ((b[n] as number) & 0xc0) === 0x80) n-- // not through a character
        }
        const text = decoder.decode(n === b.length ? b : b.subarray(0, n), { stream: true })
        if (text) {
          ctx.log(text, stream)
          endsLine = text.endsWith('\n')
        }
        kept += n
        if (n < b.length) {
          dropped = b.length - n
          ctx.log(
            `${endsLine ? '' : '\n'}[agent] output past ${maxOutput} bytes is not kept (--max-output); the command goes on\n`,
            'system',
          )
        }
      }
      child.stdout.on('data', (b: Buffer) => emit(b, out, 'stdout'))
      child.stderr.on('data', (b: Buffer) => emit(b, err, 'stderr'))
      let killTimer: NodeJS.Timeout | undefined
      const all = (sig: NodeJS.Signals) => {
        if (!self) return
        if (Number.isNaN(self.start)) {
          // No /proc: its process group is what can be reached.
          try {
            process.kill(-self.pid, sig)
          } catch {} // already gone
        } else if (sig === 'SIGKILL') killCommand(self)
        else signalCommand(self, sig)
      }
      const stop = () => {
        ctx.logger.info('stopping the command', { signal: 'SIGTERM', graceSeconds: graceMs / 1000 })
        ctx.log(
          `[agent] stopping: SIGTERM to the command and all it started, SIGKILL after ${graceMs / 1000} s\n`,
          'system',
        )
        all('SIGTERM')
        killTimer = setTimeout(() => {
          ctx.logger.warn('the command outlived its grace', { signal: 'SIGKILL' })
          all('SIGKILL')
        }, graceMs)
        killTimer.unref()
      }
      if (ctx.signal.aborted) stop()
      else ctx.signal.addEventListener('abort', stop, { once: true })
      // The only 'error' here: it could not start (no such program or directory, not
      // executable, …). Its 'close' follows, with the negated errno as a status: not an exit.
      child.on('error', (e: NodeJS.ErrnoException) => {
        forget()
        ctx.signal.removeEventListener('abort', stop)
        clearTimeout(killTimer)
        const code = e.code ?? 'unknown'
        const why = notStarted(code, file, cwd)
        ctx.log(`[agent] could not start: ${code} (${why})\n`, 'system')
        ctx.logger.warn(`could not start: ${code} (${why})`)
        reject(
          new TaskError('spawn_failed', `Could not start: ${code} (${why}).`, {
            exitCode: null,
            signal: null,
            outputTail: '',
            spawnError: code,
          }),
        )
      })
      // Whatever the command left running (in its group, its session, or a session of its
      // own) goes with it, and so lets go of the pipes, or 'close' would wait for it.
      child.on('exit', () => all('SIGKILL'))
      child.on('close', (exitCode, signal) => {
        if (child.pid === undefined) return // never started: said by 'error'
        forget()
        ctx.signal.removeEventListener('abort', stop)
        clearTimeout(killTimer)
        const rest = dropped > 0 ? '' : out.decode() + err.decode()
        if (rest) ctx.log(rest, 'stdout')
        if (dropped > 0) ctx.log(`[agent] ${dropped} bytes of output not kept\n`, 'system')
        ctx.log(signal ? `[agent] ended by ${signal}\n` : `[agent] exited with status ${exitCode}\n`, 'system')
        const result: ShellResult = {
          exitCode,
          signal,
          outputTail: tail.text(),
          ...(dropped > 0 ? { outputDropped: dropped } : {}),
        }
        if (exitCode === 0) resolve(result)
        else if (signal) reject(new TaskError(`signal_${signal}`, `The command was ended by ${signal}.`, result))
        else reject(new TaskError(`exit_${exitCode}`, `The command exited with status ${exitCode}.`, result))
      })
    })
  }
}

/** What is wrong with a task's working directory, if anything: its failure's code and message. */
function cwdProblem(cwd: string): { code: string; message: string } | undefined {
  try {
    if (!statSync(cwd).isDirectory())
      return { code: 'cwd_not_directory', message: `the working directory ${cwd} is not a directory` }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR')
      return { code: 'cwd_not_found', message: `the working directory ${cwd} does not exist` }
    // Not ours to look into (EACCES): spawn says what it finds.
  }
  return undefined
}

/** Why a command could not start, from the spawn error's code. */
function notStarted(code: string, file: string, cwd: string | undefined): string {
  if ((code === 'ENOENT' || code === 'ENOTDIR') && cwd !== undefined) {
    const bad = cwdProblem(cwd) // gone since it was looked at
    if (bad) return bad.message
  }
  if (code === 'ENOENT')
    return file.includes('/') ? `no program ${JSON.stringify(file)}` : `no program ${JSON.stringify(file)} on PATH`
  if (code === 'EACCES') return `${JSON.stringify(file)} is not executable, or a directory on its way is not accessible`
  if (code === 'E2BIG') return 'its arguments and environment are too large'
  return `${JSON.stringify(file)}`
}
