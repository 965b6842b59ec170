import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { inject } from 'vitest'

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
 * The real entry point (src/server.ts) as a child process, as `npm start` (or
 * `bun src/server.ts`) runs it, with only PATH and the given settings in its environment.
 */
export function startServer(env: Record<string, string>, runtime: Runtime = 'node', cwd?: string): Spawned {
  const entry = cwd ? `${process.cwd()}/src/server.ts` : 'src/server.ts'
  const [cmd, args] =
    runtime === 'bun'
      ? [cwd ? `${process.cwd()}/${bunBin}` : bunBin, [entry]]
      : [process.execPath, ['--import', cwd ? `${process.cwd()}/node_modules/tsx/dist/loader.mjs` : 'tsx', entry]]
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

/** Runs a script of this repository (`scripts/…`) as `npm run` would, without npm: node with tsx. */
export function script(
  file: string,
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', file, ...args], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
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
  /** Deletes the build. */
  remove(): void
}

/**
 * Entry points built once for a test file that starts them many times, as `npm run build`
 * builds them (scripts/build.mjs: esbuild, our code bundled, packages left in node_modules),
 * so that each start is `node <file>` instead of tsx compiling the sources again. The build
 * sits in a temporary directory beside links to node_modules and drizzle/, which the built
 * code finds there as it does beside dist/.
 */
export async function buildEntries<K extends string>(entries: Record<K, string>): Promise<Built<K>> {
  const { build } = await import('esbuild')
  const root = process.cwd()
  const top = mkdtempSync(join(tmpdir(), 'act-build-'))
  const dir = join(top, 'app')
  mkdirSync(dir)
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'))
  symlinkSync(join(root, 'drizzle'), join(dir, 'drizzle'))
  await build({
    entryPoints: Object.fromEntries(Object.entries(entries).map(([k, v]) => [k, join(root, v as string)])),
    outdir: join(dir, 'dist'),
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20.12',
    packages: 'external',
    logLevel: 'warning',
    plugins: [
      {
        // JSON our code imports from a package is inlined (Node would want an import attribute).
        name: 'inline-package-json',
        setup(b) {
          b.onResolve({ filter: /^[^./].*\.json$/ }, (args) => ({
            path: createRequire(join(args.resolveDir, 'noop.js')).resolve(args.path),
          }))
        },
      },
    ],
  })
  const files = Object.fromEntries(Object.keys(entries).map((k) => [k, join(dir, 'dist', `${k}.js`)])) as Record<
    K,
    string
  >
  return { files, remove: () => rmSync(dirname(dir), { recursive: true, force: true }) }
}

/** startServer for a server built by buildEntries (from src/server.ts): the same settings, started by node alone. */
export function startBuiltServer(file: string, env: Record<string, string>): Spawned {
  const child = spawn(process.execPath, [file], {
    env: {
      PATH: process.env.PATH ?? '',
      PORT: '0',
      HOST: '127.0.0.1',
      LOG_FORMAT: 'json',
      DATA_DIR: mkdtempSync(join(tmpdir(), 'act-data-')),
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const tracked = track(child)
  const listening = tracked.waitFor(/"url":"(http:\/\/[^"]+)"/).then((m) => m[1] as string)
  listening.catch(() => {})
  return { ...tracked, listening }
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
