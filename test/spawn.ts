import { type ChildProcess, spawn } from 'node:child_process'
import { cpSync, existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { inject } from 'vitest'
import { connectDatabase } from '../src/db/connect'

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

let template: Promise<string> | undefined

/**
 * A new DATA_DIR holding an embedded database already migrated: for a server whose test is not about a first start, which would otherwise spend seconds of CPU
 * on initdb and the migrations. Copied from one directory per run, made from the run's
 * snapshot by the first file that asks.
 */
export async function migratedDataDir(): Promise<string> {
  template ??= (async () => {
    const snapshot = inject('pgliteSnapshot')
    const dir = join(dirname(snapshot), 'data-dir')
    if (!existsSync(join(dir, 'pglite', 'PG_VERSION'))) {
      // Made aside and renamed into place: files racing here never see half a directory.
      const building = mkdtempSync(join(dirname(snapshot), 'building-'))
      const db = await connectDatabase(join(building, 'pglite'), { loadDataDir: new Blob([readFileSync(snapshot)]) })
      await db.close()
      try {
        renameSync(building, dir)
      } catch {
        rmSync(building, { recursive: true, force: true }) // another file's copy won
      }
    }
    return dir
  })()
  const dataDir = mkdtempSync(join(tmpdir(), 'act-data-'))
  cpSync(await template, dataDir, { recursive: true })
  if (copies.length === 0) {
    process.once('exit', () => {
      for (const d of copies) rmSync(d, { recursive: true, force: true })
    })
  }
  copies.push(dataDir)
  return dataDir
}
const copies: string[] = [] // 40 MB each: removed when the test file's process ends

export async function stopped(child: ChildProcess, exited: Promise<number | null>) {
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  await exited
}
