import { createHash } from 'node:crypto'
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
} from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'

/**
 * What test/global-setup.ts makes once and keeps between runs, under the system's temp
 * directory (`$TMPDIR/agenticcp-test-cache/`), each in a directory named after a hash of what
 * it is made from: a run whose inputs have not changed reuses it, one where they changed
 * makes a new one. Entries nobody has used for a day are removed.
 */
export const cacheRoot = join(tmpdir(), 'agenticcp-test-cache')
const STALE_MS = 24 * 60 * 60_000

/** A SHA-256 of the files (and, recursively, directories) named, with their paths, and of `extra`. */
export function hashOf(root: string, paths: string[], extra = ''): string {
  const h = createHash('sha256').update(extra)
  const add = (path: string) => {
    const full = join(root, path)
    if (!existsSync(full)) {
      h.update(`missing ${path}\n`)
      return
    }
    if (statSync(full).isDirectory()) {
      for (const name of readdirSync(full).sort()) add(join(path, name))
      return
    }
    h.update(`${relative(root, full)}\n`).update(readFileSync(full))
  }
  for (const p of paths) add(p)
  return h.digest('hex').slice(0, 20)
}

/**
 * The directory `<cacheRoot>/<name>`, made by `make` (into a temporary directory, renamed into
 * place whole, so that runs at the same time, such as the one test/first-run.test.ts starts,
 * never see half of it) unless a run already made it.
 */
export async function cached(name: string, make: (dir: string) => Promise<void>): Promise<string> {
  mkdirSync(cacheRoot, { recursive: true, mode: 0o755 })
  prune(name)
  const dir = join(cacheRoot, name)
  if (existsSync(dir)) {
    const now = new Date()
    utimesSync(dir, now, now) // in use: not stale
    return dir
  }
  const tmp = mkdtempSync(join(cacheRoot, `.tmp-${name}-`))
  // Readable by every user: a test runs the built runner as another user (--run-as).
  chmodSync(tmp, 0o755)
  try {
    await make(tmp)
    renameSync(tmp, dir)
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true })
    if (!existsSync(dir)) throw err // else another run made it first: use theirs
  }
  return dir
}

/** Entries (and half-made ones) unused for a day, other than `keep`. */
function prune(keep: string) {
  const now = Date.now()
  for (const entry of readdirSync(cacheRoot)) {
    if (entry === keep) continue
    const path = join(cacheRoot, entry)
    try {
      if (now - statSync(path).mtimeMs > STALE_MS) rmSync(path, { recursive: true, force: true })
    } catch {
      // removed by another run meanwhile
    }
  }
}

/**
 * Node's flags for the test processes that open PGlite: vitest's workers (vitest.config.ts)
 * and what tests start from the build (test/spawn.ts). `--liftoff-only`: V8 compiles
 * PGlite's 9 MB of WebAssembly with its baseline compiler (Liftoff) only, and never compiles
 * the functions that run hot again with its optimizing one (TurboFan). A test's process
 * lives seconds to minutes and runs a few hundred queries, which the optimizing compiler
 * costs more than it saves: a server started on a migrated copy takes ~3.9 CPU-seconds
 * instead of ~5.2, the unit project ~10% less. Only how fast the queries run changes.
 */
export const testNodeFlags = ['--liftoff-only']

/** The entry points tests start as processes, by name (the file names of the build). */
export const buildEntries = {
  server: 'src/server.ts',
  token: 'scripts/token.ts',
  migrate: 'scripts/migrate.ts',
  agent: 'src/agent/bin.ts',
} as const
export type BuildEntry = keyof typeof buildEntries

/**
 * The entry points of `buildEntries` built for the tests that start them (test/spawn.ts), as
 * `npm run build` builds dist/ (scripts/build.mjs: esbuild, our code bundled, packages left in
 * node_modules), so that each start is `node <file>`: tsx compiles the sources again on every
 * start, ~2 CPU-seconds that the dozens of starts of a run add up. Returns the directory
 * whose `dist/` holds `<entry>.js`, beside links to this checkout's node_modules and drizzle/,
 * which the built code finds there as it does beside dist/. Keyed by the checkout's path and
 * its sources (src/, scripts/, the lockfile, this file): an edit makes a new build.
 */
export async function testBuild(root = process.cwd()): Promise<string> {
  const key = hashOf(root, ['src', 'scripts', 'package-lock.json', 'test/build-cache.ts'], root)
  return cached(`build-${key}`, (dir) => buildInto(dir, root, buildEntries))
}

/**
 * `entries` (name → source path, relative to `root`) built into `<dir>/dist/<name>.js`, with
 * the options of scripts/build.mjs; `dir` gets links to `root`'s node_modules and drizzle/.
 */
export async function buildInto(dir: string, root: string, entries: Record<string, string>) {
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'))
  symlinkSync(join(root, 'drizzle'), join(dir, 'drizzle'))
  const { build } = await import('esbuild')
  await build({
    entryPoints: Object.fromEntries(Object.entries(entries).map(([k, v]) => [k, join(root, v)])),
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
}
