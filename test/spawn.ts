import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { inject } from 'vitest'
import { type BuildEntry, buildInto, buildEntries as buildSources, testNodeFlags } from './build-cache'

export const bunBin = 'node_modules/.bin/bun'
export const runtimes = existsSync(bunBin) ? (['node', 'bun'] as const) : (['node'] as const)
export type Runtime = (typeof runtimes)[number]

export interface Spawned {
  child: ChildProcess
  /** The URL the server logged once listening; rejects if it exits first. */
  listening: Promise<string>
  exited: Promise<number | null>
  output(): { out: string; err: string }
  /**
   * Resolves once `pattern` appears on stdout or stderr (or rejects when the process exits
   * first); with `since` (from mark()), only in what was printed after that mark.
   */
  waitFor(pattern: RegExp, since?: Mark): Promise<RegExpExecArray>
  /** How much has been printed so far: what a later waitFor should not look at. */
  mark(): Mark
}

export interface Mark {
  out: number
  err: number
}

/**
 * How a test starts the server (src/server.ts):
 * - `node`: the run's build of it (test/build-cache.ts testBuild, as `npm run build` builds
 *   dist/server.js) under Node. Most tests: the same code, without tsx compiling it again on
 *   each start (~2 CPU-seconds a start).
 * - `tsx`: the sources under tsx, exactly as `npm start` runs them.
 * - `bun`: the sources under Bun, as `npm run start:bun` runs them.
 */
export type Start = Runtime | 'tsx'

/** The run's build of an entry point (test/build-cache.ts buildEntries): run it with `node <file>`. */
export const builtFile = (entry: BuildEntry) => join(inject('testBuild'), 'dist', `${entry}.js`)

/**
 * The server as a child process (see Start for how), with only PATH and the given settings
 * in its environment.
 */
export function startServer(env: Record<string, string>, start: Start = 'node', cwd?: string): Spawned {
  const entry = cwd ? `${process.cwd()}/src/server.ts` : 'src/server.ts'
  const [cmd, args] =
    start === 'bun'
      ? [cwd ? `${process.cwd()}/${bunBin}` : bunBin, [entry]]
      : start === 'tsx'
        ? [process.execPath, ['--import', cwd ? `${process.cwd()}/node_modules/tsx/dist/loader.mjs` : 'tsx', entry]]
        : [process.execPath, [...testNodeFlags, builtFile('server')]]
  return spawnServer(cmd, args, env, cwd)
}

function spawnServer(cmd: string, args: string[], env: Record<string, string>, cwd?: string): Spawned {
  const child = spawn(cmd, args, {
    cwd,
    env: {
      PATH: process.env.PATH ?? '',
      PORT: '0',
      HOST: '127.0.0.1',
      LOG_FORMAT: 'json',
      // Never the repository's own .data: each server gets a directory of its own.
      DATA_DIR: mkdtempSync(join(tmpdir(), 'act-data-')),
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const tracked = track(child)
  const listening = tracked.waitFor(/"url":"(http:\/\/[^"]+)"/).then((m) => m[1] as string)
  listening.catch(() => {}) // refusal tests only wait for the exit
  return { ...tracked, listening }
}

/** Collects a child's output and exit, and waits for lines in it. */
export function track(child: ChildProcess): Omit<Spawned, 'listening'> {
  let out = ''
  let err = ''
  const listeners = new Set<() => void>()
  const onData = () => {
    for (const l of listeners) l()
  }
  child.stdout?.on('data', (d) => {
    out += d
    onData()
  })
  child.stderr?.on('data', (d) => {
    err += d
    onData()
  })
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  const waitFor = (pattern: RegExp, since: Mark = { out: 0, err: 0 }) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const check = () => {
        const m = pattern.exec(out.slice(since.out)) ?? pattern.exec(err.slice(since.err))
        if (m) {
          listeners.delete(check)
          resolve(m)
        }
      }
      listeners.add(check)
      check()
      void exited.then((code) => {
        if (!listeners.has(check)) return
        listeners.delete(check)
        reject(new Error(`process exited ${code} before printing ${pattern}: ${err || out}`))
      })
    })
  return { child, exited, output: () => ({ out, err }), waitFor, mark: () => ({ out: out.length, err: err.length }) }
}

/**
 * Runs a script of this repository (`scripts/…`) as `npm run` would, without npm: the run's
 * build of it (builtFile) under node when there is one (scripts/token.ts, scripts/migrate.ts),
 * else the sources under tsx.
 */
export function script(
  file: string,
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number | null; out: string; err: string }> {
  const built = (Object.keys(buildSources) as BuildEntry[]).find((k) => buildSources[k] === file)
  const child = spawn(
    process.execPath,
    [...(built ? [...testNodeFlags, builtFile(built)] : ['--import', 'tsx', file]), ...args],
    {
      env: { PATH: process.env.PATH ?? '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  )
  const t = track(child)
  return t.exited.then((code) => ({ code, ...t.output() }))
}

export async function stopped(child: ChildProcess, exited: Promise<number | null>) {
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  await exited
}

export interface Built<K extends string> {
  /** Each entry's built file (an absolute path): run it with `node <file>`. */
  files: Record<K, string>
  /** Deletes the build (nothing, for the run's own build). */
  remove(): void
}

/**
 * Entry points built for a test file that starts them many times, so that each start is
 * `node <file>` instead of tsx compiling the sources again: the run's build (builtFile) when
 * it has them all, else built here as `npm run build` builds them (scripts/build.mjs:
 * esbuild, our code bundled, packages left in node_modules), in a temporary directory beside
 * links to node_modules and drizzle/, which the built code finds there as it does beside dist/.
 */
export async function buildEntries<K extends string>(entries: Record<K, string>): Promise<Built<K>> {
  const names = Object.keys(entries) as K[]
  const runs = (k: K) => (Object.keys(buildSources) as BuildEntry[]).find((b) => buildSources[b] === entries[k])
  if (names.every((k) => runs(k))) {
    const files = Object.fromEntries(names.map((k) => [k, builtFile(runs(k) as BuildEntry)])) as Record<K, string>
    return { files, remove: () => {} }
  }
  const top = mkdtempSync(join(tmpdir(), 'act-build-'))
  const dir = join(top, 'app')
  mkdirSync(dir)
  await buildInto(dir, process.cwd(), entries)
  const files = Object.fromEntries(names.map((k) => [k, join(dir, 'dist', `${k}.js`)])) as Record<K, string>
  return { files, remove: () => rmSync(dirname(dir), { recursive: true, force: true }) }
}

/** startServer for a server built by buildEntries (from src/server.ts): the same settings, started by node alone. */
export function startBuiltServer(file: string, env: Record<string, string>): Spawned {
  return spawnServer(process.execPath, [...testNodeFlags, file], env)
}

/**
 * A DATA_DIR whose embedded database is a copy of the run's migrated one (the PGlite
 * snapshot of test/global-setup.ts), for a server that needs a database rather than a first
 * start: PGlite's initdb and the migrations take seconds on a busy machine. Postgres runs
 * make the snapshot too; a caller there that sets DATABASE_URL just does not use it. The
 * copies (40 MB each) are removed when the test file's process ends.
 */
export function migratedDataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'act-data-'))
  const snapshot = inject('pgliteSnapshot')
  if (snapshot) {
    mkdirSync(join(dir, 'pglite'))
    execFileSync('tar', ['-xf', snapshot, '-C', join(dir, 'pglite')], { stdio: 'ignore' })
  }
  if (copies.length === 0) {
    process.once('exit', () => {
      for (const d of copies) rmSync(d, { recursive: true, force: true })
    })
  }
  copies.push(dir)
  return dir
}
const copies: string[] = []
