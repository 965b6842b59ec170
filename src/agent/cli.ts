/**
 * agenticcp-agent: the runner as a command.
 *
 *   agenticcp-agent run --url URL (--token-file FILE | --token TOKEN) [--name NAME] [--provider P] [--region R]
 *     [--capabilities a,b] [--labels k=v,k=v] [--slots N] [--state-dir DIR]
 *     [--allow-shell] [--pass-env NAME]… [--run-as USER] [--max-output BYTES]
 *     [--max-processes N] [--cancel-grace S] [--drain-timeout S]
 *     [--log-format text|json] [--log-level L]
 *
 * Every flag is also an environment variable: AGENTICCP_URL, AGENTICCP_TOKEN, AGENTICCP_NAME,
 * … (the flag's name in capitals, dashes as underscores). Flags win. The token is best given
 * as AGENTICCP_TOKEN or --token-file: --token shows in `ps`, and says so.
 */
import { readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Agent } from './agent'
import type { Provider } from './api'
import { killLeftoverGroups } from './groups'
import { AgentFatalError } from './identity'
import { createLogger, type LogFormat, type LogLevel } from './log'
import { shellHandler } from './shell'
import { ShellConfigError } from './shell-setup'
import { loadState } from './state'

const usage = `Usage: agenticcp-agent run --url URL (--token-file FILE | AGENTICCP_TOKEN=… | --token TOKEN) [options]

  --url URL              the service (AGENTICCP_URL)
  --token-file FILE      the token (a registration token, acpr_…, for the first start, or an agent
                         token) read from a file, e.g. a mounted secret (AGENTICCP_TOKEN_FILE)
  AGENTICCP_TOKEN        the token from the environment (as a service manager gives it)
  --token TOKEN          the token as an argument: every user of this host can read it (ps), so
                         it prints a warning; prefer --token-file or AGENTICCP_TOKEN
                         (no token is needed once --state-dir holds this agent's identity)
  --name NAME            the agent's name (default: this host's name)
  --description TEXT     stored with the agent, shown by the API
  --provider P           aws|azure|gcp|ncp|oci|alibaba|onprem|other (default onprem)
  --region R             e.g. us-east-1
  --capabilities a,b     what this host offers (tasks may require them); --allow-shell adds "shell"
  --labels k=v,k=v       labels (a registration token's own labels win)
  --slots N              tasks run at once (default 1)
  --state-dir DIR        where the agent's id and token are kept (default ~/.agenticcp-agent);
                         one live runner per dir: a second one exits 1, naming the first's pid
  --allow-shell          run tasks of type "shell": {command, env?, cwd?}
  --pass-env NAME        a variable of this environment that shell tasks get too (repeatable, or
                         A,B); they get only PATH, HOME, LANG, TZ, LC_* and their payload's env
                         otherwise, and never the runner's AGENTICCP_* (refused here)
  --run-as USER          run shell tasks as this user (its uid, gid and home), not as the runner's:
                         they cannot read the state dir (the agent's token); needs a root runner
  --max-output BYTES     a shell task's output kept in its log at most (e.g. 10M); past it the log
                         says so and the command goes on (default: no limit)
  --max-processes N      a fork past N processes of the user shell tasks run as fails (RLIMIT_NPROC
                         through prlimit, Linux; counted per user: meant with --run-as)
  --cancel-grace S       seconds between SIGTERM and SIGKILL when a task is stopped (default 10)
  --drain-timeout S      on SIGTERM/SIGINT, how long running tasks may finish (default 600)
  --log-format F         text|json (default text)
  --log-level L          debug|info|warn|error (default info)

Each flag can also be set as AGENTICCP_<FLAG> (e.g. AGENTICCP_STATE_DIR); flags win.
SIGTERM or SIGINT drains (nothing new is taken; running tasks finish; exit 0); a second one
stops what is left (reported failed with agent_stopped) and exits 1.`

const options = {
  url: { type: 'string' },
  token: { type: 'string' },
  'token-file': { type: 'string' },
  name: { type: 'string' },
  description: { type: 'string' },
  provider: { type: 'string' },
  region: { type: 'string' },
  capabilities: { type: 'string' },
  labels: { type: 'string' },
  slots: { type: 'string' },
  'state-dir': { type: 'string' },
  'allow-shell': { type: 'boolean' },
  'pass-env': { type: 'string', multiple: true },
  'run-as': { type: 'string' },
  'max-output': { type: 'string' },
  'max-processes': { type: 'string' },
  'cancel-grace': { type: 'string' },
  'drain-timeout': { type: 'string' },
  'log-format': { type: 'string' },
  'log-level': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const

type Name = keyof typeof options

class UsageError extends Error {}

/** The flag, else its environment variable. */
function setting(values: Record<string, unknown>, name: Name, env: NodeJS.ProcessEnv): string | undefined {
  const v = values[name]
  if (typeof v === 'string') return v
  if (Array.isArray(v) && v.length > 0) return v.join(',')
  if (v === true) return 'true'
  const e = env[`AGENTICCP_${name.toUpperCase().replace(/-/g, '_')}`]
  return e === undefined || e === '' ? undefined : e
}

function int(name: string, v: string | undefined, min: number, max: number, fallback: number): number {
  if (v === undefined) return fallback
  const n = Number(v)
  if (!Number.isInteger(n) || n < min || n > max)
    throw new UsageError(`--${name} must be a whole number ${min}–${max}.`)
  return n
}

/** A comma-separated list (a repeated flag comes joined with commas). */
function list(v: string | undefined): string[] {
  return (v ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
}

/** A size in bytes: a whole number, or with K, M or G (powers of 1024). */
function size(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined
  const m = /^(\d+)([KMG]?)$/i.exec(v.trim())
  const n = m ? Number(m[1]) * 1024 ** ' KMG'.indexOf((m[2] || ' ').toUpperCase()) : Number.NaN
  if (!Number.isSafeInteger(n) || n < 1)
    throw new UsageError(`--${name} is a size in bytes, e.g. 1048576 or 1M (got "${v}").`)
  return n
}

function parseLabels(v: string | undefined): Record<string, string> {
  const out: Record<string, string> = {}
  for (const pair of (v ?? '').split(',').filter(Boolean)) {
    const i = pair.indexOf('=')
    if (i <= 0) throw new UsageError(`--labels takes k=v pairs (got "${pair}").`)
    out[pair.slice(0, i).trim()] = pair.slice(i + 1).trim()
  }
  return out
}

/**
 * --token, or the content of --token-file; one of them, or neither once the state dir holds
 * this agent's identity for this URL (the registration token is then no longer needed).
 */
function readToken(token: string | undefined, file: string | undefined, registered: boolean): string {
  if (token !== undefined && file !== undefined) throw new UsageError('give --token or --token-file, not both.')
  if (file !== undefined) {
    let text: string
    try {
      text = readFileSync(file, 'utf8')
    } catch (err) {
      // Registered already: the token file may have been removed, as it is no longer needed.
      if (registered && (err as NodeJS.ErrnoException).code === 'ENOENT') return ''
      throw new UsageError(`cannot read --token-file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
    }
    const read = text.trim()
    if (!read) throw new UsageError(`--token-file ${file} is empty.`)
    return read
  }
  if (!token && registered) return ''
  if (!token) throw new UsageError('--token or --token-file (or AGENTICCP_TOKEN, AGENTICCP_TOKEN_FILE) is required.')
  return token
}

export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let parsed: ReturnType<typeof parseArgs<{ options: typeof options; allowPositionals: true }>>
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true })
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${usage}\n`)
    return 2
  }
  const { values, positionals } = parsed
  if (values.help || positionals[0] !== 'run') {
    process.stderr.write(`${usage}\n`)
    return values.help ? 0 : 2
  }
  const get = (n: Name) => setting(values, n, env)
  let agent: Agent
  let logger: ReturnType<typeof createLogger>
  let drainTimeout: number
  let stateDir: string
  try {
    const url = get('url')
    stateDir = get('state-dir') ?? join(homedir(), '.agenticcp-agent')
    const allowShell = ['1', 'true', 'yes'].includes((get('allow-shell') ?? '').toLowerCase())
    const grace = int('cancel-grace', get('cancel-grace'), 1, 86_400, 10)
    // Checked first, even without --allow-shell: a shell setting that cannot hold is said
    // before anything else is read or touched.
    const runAs = get('run-as')
    const maxProcesses = get('max-processes')
    const shell = shellHandler({
      graceSeconds: grace,
      groupsDir: join(stateDir, 'groups'),
      passEnv: list(get('pass-env')),
      runAs,
      maxOutputBytes: size('max-output', get('max-output')),
      maxProcesses: maxProcesses === undefined ? undefined : int('max-processes', maxProcesses, 1, 1_000_000, 1),
    })
    const token = readToken(get('token'), get('token-file'), url !== undefined && loadState(stateDir)?.url === url)
    if (!url) throw new UsageError('--url (or AGENTICCP_URL) is required.')
    if (!/^https?:\/\//.test(url)) throw new UsageError('--url must start with http:// or https://.')
    const format = get('log-format') ?? 'text'
    const level = get('log-level') ?? 'info'
    if (format !== 'text' && format !== 'json') throw new UsageError('--log-format is text or json.')
    if (!['debug', 'info', 'warn', 'error'].includes(level))
      throw new UsageError('--log-level is debug|info|warn|error.')
    logger = createLogger({ format: format as LogFormat, level: level as LogLevel })
    drainTimeout = int('drain-timeout', get('drain-timeout'), 0, 604_800, 600)
    const capabilities = list(get('capabilities'))
    if (allowShell && !capabilities.includes('shell')) capabilities.push('shell')
    agent = new Agent({
      url,
      token,
      name: get('name'),
      description: get('description'),
      provider: get('provider') as Provider | undefined,
      region: get('region'),
      capabilities,
      labels: parseLabels(get('labels')),
      slots: int('slots', get('slots'), 1, 1000, 1),
      stateDir,
      cancelGraceSeconds: grace,
      logger,
    })
    if (allowShell) {
      agent.handle('shell', shell)
      if (runAs !== undefined) logger.info(`shell tasks run as ${runAs}`)
      if (maxProcesses !== undefined && runAs === undefined) {
        logger.warn(
          `--max-processes ${maxProcesses} counts every process and thread of this runner's user (uid ${process.getuid?.()}): the runner's own and all its tasks' together`,
        )
      }
    }
  } catch (err) {
    if (!(err instanceof UsageError || err instanceof ShellConfigError)) throw err
    process.stderr.write(`agenticcp-agent: ${err.message}\n`)
    return 2
  }
  // One live runner per state dir, taken before anything in it is touched: a second runner
  // on a held dir says whose it is and exits, leaving the first one's commands alone.
  try {
    agent.lockStateDir()
  } catch (err) {
    if (!(err instanceof AgentFatalError)) throw err
    logger.error(err.message)
    return 1
  }
  // A token in the arguments is there for every user of this host to read (ps, /proc).
  if (typeof values.token === 'string') {
    logger.warn(
      '--token on the command line can be read by every user of this host (ps); use --token-file FILE or the AGENTICCP_TOKEN environment variable instead',
    )
  }
  if (agent.taskTypes.length === 0) {
    logger.warn(
      'this runner has no handlers (start it with --allow-shell to run shell tasks): it will be handed nothing',
    )
  } else if (!agent.taskTypes.includes('shell'))
    logger.info('shell tasks are off (start with --allow-shell to run them)')

  let signals = 0
  const onSignal = (signal: NodeJS.Signals) => {
    signals++
    if (signals === 1) {
      logger.info('signal: draining (send it again to stop now)', { signal })
      void agent.stop(drainTimeout)
    } else {
      logger.warn('second signal: stopping running tasks', { signal })
      agent.kill()
    }
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  // Commands a runner killed with SIGKILL left running: stopped before their runs are
  // reported lost and retried, so a retry never runs beside its previous attempt.
  for (const g of killLeftoverGroups(join(stateDir, 'groups'))) {
    logger.warn('killed a command left running by the previous process', {
      taskId: g.taskId,
      attempt: g.attempt,
      pid: g.pid,
    })
  }
  try {
    await agent.start()
    await agent.done()
    return signals > 1 ? 1 : 0
  } catch (err) {
    if (err instanceof AgentFatalError) {
      logger.error('cannot go on', { error: err.message })
      return 1
    }
    throw err
  }
}
