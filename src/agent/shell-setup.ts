/**
 * What a shell task is given of the runner's host: its environment (a small allow-list,
 * never the runner's own settings). Checked once, when the handler is made: a setting that
 * cannot hold throws ShellConfigError (the CLI exits 2 with its message).
 */

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
