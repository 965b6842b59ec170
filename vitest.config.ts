import { readdirSync, readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'
import { BaseSequencer, type TestSpecification } from 'vitest/node'
import { testNodeFlags } from './test/build-cache'

/**
 * Two projects, one run (`npm test` runs both, the unit project first):
 * - `unit`: everything that runs in this process against its own PGlite copy (or, in CI's
 *   second run, its own Postgres database). CPU-bound, so one file per core, and the worker
 *   processes are reused from file to file (isolate: false): each file builds its own app on
 *   its own database, so files share only loaded modules, and compiling src/ and PGlite's
 *   WebAssembly once per worker instead of once per file halves the project's CPU time.
 * - `integration`: the files below, which start processes (the server, scripts, the runner,
 *   command-line tools), a browser, or need Postgres/Redis. They mostly wait on those
 *   processes and on real time, so more of them run at once than there are cores, with
 *   longer timeouts (a loaded machine slows a child process's start several-fold). Their
 *   workers are reused from file to file too (isolate: false): each file imports the test
 *   helpers, src/ and its client once per worker rather than once per file.
 *
 * Vitest runs projects with different parallelism one after the other (sequence.groupOrder).
 * `npm run test:unit` and `npm run test:integration` run one project each.
 */
const integration: Record<string, string> = {
  'agent-runner.test.ts': 'the server and runner processes (bin/agenticcp-agent.mjs), killed and restarted',
  'agent-library.test.ts': 'real agents on their real timers (heartbeats, grace periods, restarts): mostly waiting',
  'container.test.ts': 'docker-compose config (a Python process, ~1 s a call)',
  'concurrency.test.ts': 'Postgres only (skipped on PGlite)',
  'dashboard.test.ts': 'headless Chromium against a server process',
  'deploy-manifests.test.ts': 'systemd-analyze verify',
  'faults.test.ts': 'Postgres only: kills the database connections of server processes under load',
  'first-run.test.ts': 'the server and scripts on fresh data directories, restarted and refused',
  'metrics.test.ts': 'promtool check metrics',
  'pglite-lock.test.ts': 'processes racing for the embedded database lock',
  'readme.test.ts': "the README's commands: `npm start`, the runner and curl against them, in bash",
  'redis.test.ts': 'Redis (TEST_REDIS_URL), cut and restored through a TCP relay',
  'registration-tokens.test.ts': 'the server and `npm run token -- --registration` against it',
  'server.test.ts': 'the server under Node and Bun, its shutdown, and its refusals to start',
  'stalls.test.ts': 'a server process paused (SIGSTOP) longer than the heartbeat timeout, then resumed',
  'workers.test.ts': 'the Worker under `wrangler dev` and the WebSocket proxy (TEST_WORKERS=1)',
}
const integrationFiles = Object.keys(integration).map((f) => `test/${f}`)

/**
 * The integration files that take longest (mostly waiting on processes and timers), longest
 * first: they start first, so that the short ones fill the time around them rather than one
 * of them starting last and the run waiting for it alone (vitest otherwise orders by its
 * results cache, which a fresh clone or CI does not have, then by file size).
 */
const longestFirst = [
  'dashboard.test.ts',
  'agent-runner.test.ts',
  'first-run.test.ts',
  'stalls.test.ts',
  'readme.test.ts',
  'agent-library.test.ts',
  'registration-tokens.test.ts',
  'server.test.ts',
]
class Sequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]) {
    const rank = (f: TestSpecification) => {
      const i = longestFirst.findIndex((n) => f.moduleId.endsWith(`/test/${n}`))
      return i < 0 ? longestFirst.length : i
    }
    const group = (f: TestSpecification) => f.project.config.sequence.groupOrder ?? 0
    // Array.prototype.sort is stable: the rest keep vitest's order.
    return (await super.sort(files)).sort((a, b) => group(a) - group(b) || rank(a) - rank(b))
  }
}

// A file that starts a process or a browser belongs in the list above: say so at once
// rather than let it run, CPU-bound assumptions and short timeouts, among the unit files.
const testDir = fileURLToPath(new URL('./test/', import.meta.url))
for (const f of readdirSync(testDir).filter((n) => n.endsWith('.test.ts') && !(n in integration))) {
  if (/node:child_process|playwright|from '\.\/spawn'/.test(readFileSync(`${testDir}${f}`, 'utf8'))) {
    throw new Error(`test/${f} starts processes: list it in vitest.config.ts's integration files`)
  }
}

const cores = availableParallelism()

export default defineConfig({
  test: {
    // Once for the whole run: the migrated PGlite snapshot (or Postgres template) every file copies.
    globalSetup: ['test/global-setup.ts'],
    sequence: { sequencer: Sequencer },
    // `npm run test:coverage`: the whole suite, with the coverage of src/ by the code that runs
    // in the test processes (V8's own counters). What runs in a child process — the server a
    // test starts, the runner's CLI, the Worker under wrangler — is not counted, so the entry
    // points read low although their tests run them. The thresholds are the figures measured
    // when they were set, rounded down: coverage may rise, and `npm run test:coverage` fails if
    // it falls.
    coverage: {
      provider: 'v8',
      include: ['src/**/*.ts'],
      // The dashboard's script runs in the browser (test/dashboard.test.ts drives it there).
      exclude: ['src/routes/dashboard/client/**', 'src/routes/dashboard/client.bundle.ts'],
      reporter: ['text-summary', 'text', 'html', 'json-summary'],
      reportsDirectory: 'coverage',
      thresholds: { lines: 77, branches: 66, functions: 78, statements: 75 },
    },
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/**/*.test.ts'],
          exclude: integrationFiles,
          pool: 'forks',
          maxWorkers: cores,
          isolate: false,
          execArgv: testNodeFlags,
          sequence: { groupOrder: 0 },
          testTimeout: 20_000,
          hookTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: integrationFiles,
          pool: 'forks',
          maxWorkers: cores * 2,
          isolate: false,
          execArgv: testNodeFlags,
          sequence: { groupOrder: 1 },
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
})
