import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { migratedDataDir, track } from './spawn'

/**
 * Every command of README.md, run as a reader runs it, so that the README cannot drift from
 * the code (docs/development.md, "The README's commands"):
 *
 * - Each ```sh block runs, unless the line before it is `<!-- not run: <reason> -->`.
 * - `npm start` (with any settings before it) is a server: the test starts it in a scratch
 *   checkout (links to this one) with a free PORT, HOST=127.0.0.1 and a DATA_DIR of its own (a
 *   copy of the migrated embedded database), and waits for the URL it prints. The blocks after it run
 *   against it; a server no block runs against is stopped once it has printed its URL.
 * - The other blocks of a section run in order in one bash (what one defines, the next
 *   uses), with `set -eo pipefail`, in that checkout, `8000` replaced by the server's port.
 * - A comment line `#> …` after a command is what the command prints (`…`: any text).
 * - `npm install` and `npm test` are not run: see `ownWay`.
 */

const README = readFileSync('README.md', 'utf8')

/** Commands the test does not hand to bash, and why. Each must still be in the README. */
const ownWay = {
  install: { pattern: /^npm install$/, why: 'CI installed the dependencies (`npm ci`) before the suite' },
  test: { pattern: /^npm test$/, why: 'the suite this test is a file of, which CI runs (.ci/run)' },
  server: {
    pattern: /^(?:[A-Z][A-Z0-9_]*=\S*\s+)*npm start$/,
    why: 'a server: started by the test with its own PORT and DATA_DIR, until it prints its URL',
  },
} as const
type OwnWay = keyof typeof ownWay

/** A marked block may be skipped; keep them few (each is a command CI does not prove). */
const MAX_NOT_RUN = 1

interface Block {
  section: string
  /** 1-based line of the opening fence. */
  line: number
  lines: { text: string; line: number }[]
  notRun?: string
}

interface Command {
  text: string
  line: number
  expected: string[]
  /** Set for commands the test runs its own way (ownWay). */
  own?: OwnWay
  section: string
}

function readmeBlocks(md: string): Block[] {
  const out: Block[] = []
  const lines = md.split('\n')
  let section = ''
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i] as string
    if (/^## /.test(l)) section = l.slice(3).trim()
    if (l !== '```sh') continue
    let prev = i - 1
    while (prev >= 0 && lines[prev]?.trim() === '') prev--
    const marker = /^<!-- not run: (.*) -->$/.exec(lines[prev] ?? '')
    const block: Block = { section, line: i + 1, lines: [] }
    if (marker) block.notRun = marker[1]?.trim()
    for (i++; i < lines.length && lines[i] !== '```'; i++) block.lines.push({ text: lines[i] as string, line: i + 1 })
    out.push(block)
  }
  return out
}

/**
 * A block's commands: a line, with the lines after it while it ends in `\`, then the `#>`
 * lines after it (its output). Comments and blank lines are not commands.
 */
function blockCommands(block: Block): Command[] {
  const out: Command[] = []
  const ls = block.lines
  for (let i = 0; i < ls.length; i++) {
    const { text, line } = ls[i] as { text: string; line: number }
    if (/^#>( |$)/.test(text)) {
      const last = out.at(-1)
      if (!last || last.line + last.text.split('\n').length !== line - last.expected.length) {
        throw new Error(`README.md:${line}: a "#>" line must follow its command directly`)
      }
      last.expected.push(text.replace(/^#> ?/, ''))
      continue
    }
    if (text.trim() === '' || text.trimStart().startsWith('#')) continue
    let joined = text
    while (joined.endsWith('\\') && i + 1 < ls.length) joined += `\n${ls[++i]?.text}`
    out.push({ text: joined, line, expected: [], section: block.section })
  }
  return out
}

/** Which own-way command a README command is, if any (`a && b` is each of its parts). */
function ownParts(cmd: string): OwnWay[] | undefined {
  const bare = cmd.replace(/\s+#\s.*$/, '').trim()
  const parts = bare.split(/\s+&&\s+/)
  const kinds = parts.map((p) => (Object.keys(ownWay) as OwnWay[]).find((k) => ownWay[k].pattern.test(p)))
  if (kinds.every((k) => k === undefined)) return undefined
  if (kinds.some((k) => k === undefined))
    throw new Error(`"${bare}" mixes commands the test runs its own way and others`)
  return kinds as OwnWay[]
}

/** A checkout-like directory: links to this one's code, a `.data` of its own. */
function scratchCheckout(dataDir: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'act-readme-'))
  for (const f of [
    'package.json',
    'package-lock.json',
    'node_modules',
    'src',
    'scripts',
    'bin',
    'drizzle',
    'tsconfig.json',
  ]) {
    symlinkSync(join(process.cwd(), f), join(dir, f))
  }
  symlinkSync(dataDir, join(dir, '.data'))
  mkdirSync(join(dir, 'home'))
  return dir
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number }
      srv.close(() => resolve(port))
    })
  })
}

/** What every command gets: no settings from this process's environment (TEST_DATABASE_URL…). */
function baseEnv(dir: string, port: number): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '',
    HOME: join(dir, 'home'),
    PORT: String(port),
    DATA_DIR: join(dir, '.data'),
    NO_COLOR: '1',
    npm_config_update_notifier: 'false',
    npm_config_fund: 'false',
  }
}

/** Kills a process group started detached; resolves once no process of it is left. */
async function killGroup(child: ChildProcess, signal: NodeJS.Signals, graceMs: number) {
  const pgid = child.pid
  if (!pgid) return
  const alive = () => {
    try {
      process.kill(-pgid, 0)
      return true
    } catch {
      return false
    }
  }
  try {
    process.kill(-pgid, signal)
  } catch {
    return
  }
  const until = Date.now() + graceMs
  while (alive() && Date.now() < until) await new Promise((r) => setTimeout(r, 100))
  if (alive()) process.kill(-pgid, 'SIGKILL')
}

const literal = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
/** The README's shown output as a pattern: literal text, `…` any text. */
const shown = (lines: string[]) =>
  new RegExp(`^${lines.map((l) => l.split('…').map(literal).join('[\\s\\S]*?')).join('\n')}$`)

const blocks = readmeBlocks(README)
const missingTools = ['bash', 'curl', 'jq'].filter((t) => spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0)
const cleanups: (() => Promise<void> | void)[] = []
afterAll(async () => {
  for (const c of cleanups.reverse()) await c()
})

describe('README.md', () => {
  it('marks few blocks "not run", each with a reason, and every script and file they name exists', () => {
    const notRun = blocks.filter((b) => b.notRun !== undefined)
    expect(notRun.length).toBeLessThanOrEqual(MAX_NOT_RUN)
    const scripts = JSON.parse(readFileSync('package.json', 'utf8')).scripts as Record<string, string>
    for (const b of notRun) {
      expect(b.notRun, `README.md:${b.line}`).toMatch(/\w{3,}/)
      const code = b.lines.map((l) => l.text).join('\n')
      for (const [, name] of code.matchAll(/npm run (?:-s )?([\w:-]+)/g)) {
        expect(scripts, `README.md:${b.line}: npm run ${name}`).toHaveProperty([name as string])
      }
      for (const [file] of code.matchAll(/\b(?:test|src|scripts|docs|deploy)\/[\w./-]+\.\w+/g)) {
        expect(existsSync(file), `README.md:${b.line}: ${file}`).toBe(true)
      }
    }
  })

  it('links, as do the docs, only to files and headings that exist', () => {
    // GitHub's anchors: lower case, punctuation dropped, spaces as dashes.
    const anchor = (h: string) =>
      h
        .toLowerCase()
        .replace(/[^\p{L}\p{N}\s_-]/gu, '')
        .trim()
        .replace(/\s/g, '-')
    const headings = (file: string) =>
      [
        ...readFileSync(file, 'utf8')
          .replace(/^```[\s\S]*?^```/gm, '')
          .matchAll(/^#+ (.+)$/gm),
      ].map((m) => anchor(m[1] as string))
    const pages = [
      'README.md',
      ...readdirSync('docs')
        .filter((f) => f.endsWith('.md'))
        .map((f) => `docs/${f}`),
    ]
    for (const page of pages) {
      const text = readFileSync(page, 'utf8').replace(/^```[\s\S]*?^```/gm, '')
      for (const [, target] of text.matchAll(/\]\(((?!https?:|mailto:)[^)\s]+)\)/g)) {
        const [path, hash] = (target as string).split('#')
        const file = path ? join(dirname(page), path) : page
        expect(existsSync(file), `${page} links to ${target}`).toBe(true)
        if (hash) expect(headings(file), `${page} links to ${target}`).toContain(hash)
      }
    }
  })

  it('runs every command in it, and each prints what the README shows', async (ctx) => {
    if (missingTools.length > 0) {
      const why = `the README's commands need ${missingTools.join(', ')}`
      if (process.env.CI) throw new Error(`${why}: install them (CI must run every command of the README)`)
      ctx.skip(why)
    }
    const runnable = blocks.filter((b) => b.notRun === undefined)
    const commands = runnable.flatMap(blockCommands)
    for (const c of commands) {
      const parts = ownParts(c.text)
      if (parts) c.own = parts.includes('server') ? 'server' : (parts[0] as OwnWay)
      else {
        // Each command stands on its own (lines joined by `\` only), so a marker can follow it.
        const syntax = spawnSync('bash', ['-n', '-c', c.text], { encoding: 'utf8' })
        expect(syntax.status, `README.md:${c.line}: ${c.text}\n${syntax.stderr}`).toBe(0)
      }
    }
    // Every own-way rule still has its command in the README: the table cannot outlive it.
    for (const k of Object.keys(ownWay) as OwnWay[]) {
      expect(
        commands.some((c) => ownParts(c.text)?.includes(k)),
        `no README command is left for ownWay.${k} (${ownWay[k].why}): remove the rule`,
      ).toBe(true)
    }

    // The servers, all at once, each in a checkout of its own.
    const servers = await Promise.all(
      commands
        .filter((c) => c.own === 'server')
        .map(async (c) => {
          const dir = scratchCheckout(migratedDataDir())
          const port = await freePort()
          const line = c.text
            .replace(/\s+#\s.*$/, '')
            .split(/\s+&&\s+/)
            .find((p) => ownWay.server.pattern.test(p)) as string
          const child = spawn('bash', ['-c', line], {
            cwd: dir,
            env: { ...baseEnv(dir, port), HOST: '127.0.0.1' },
            stdio: ['ignore', 'pipe', 'pipe'],
            detached: true,
          })
          const t = track(child)
          cleanups.push(async () => {
            await killGroup(child, 'SIGTERM', 15_000)
            rmSync(dir, { recursive: true, force: true })
          })
          return { command: c, dir, port, ...t }
        }),
    )
    const serverFor = (c: Command) => servers.filter((s) => s.command.line < c.line).at(-1)
    const ready = servers.map(async (s) => {
      const [, url] = await s.waitFor(/listening url=(http:\/\/\S+)/)
      expect(url).toBe(`http://127.0.0.1:${s.port}`)
      // What the README says of it: an admin token, printed when SECRET_KEY is not set.
      expect(s.output().out).toMatch(/An admin token .*\n\n {2}ey[\w-]+\.[\w-]+\.[\w-]+\n/)
      if (!commands.some((c) => !c.own && serverFor(c) === s)) await killGroup(s.child, 'SIGTERM', 15_000)
    })
    for (const r of ready) r.catch(() => {}) // awaited below; a failure before then is reported there

    // The other commands: one bash per section, against the server before them.
    const sessions = new Map<string, Command[]>()
    for (const c of commands.filter((c) => !c.own)) {
      sessions.set(c.section, [...(sessions.get(c.section) ?? []), c])
    }
    const results = await Promise.all(
      [...sessions.entries()].map(async ([section, cmds]) => {
        const server = serverFor(cmds[0] as Command)
        if (!server) throw new Error(`README.md:${cmds[0]?.line}: a command before any \`npm start\``)
        expect(
          cmds.every((c) => serverFor(c) === server),
          `section "${section}" spans two servers`,
        ).toBe(true)
        await ready[servers.indexOf(server)]
        return runSession(section, cmds, server)
      }),
    )
    await Promise.all(ready)
    for (const r of results) {
      for (const { command, out } of r.outputs) {
        if (command.expected.length === 0) continue
        expect(
          out,
          `README.md:${command.line} (${command.section}): ${command.text}\n${r.stderr.slice(-1500)}`,
        ).toMatch(shown(command.expected))
      }
    }
  }, 150_000)
})

interface Server {
  dir: string
  port: number
  output(): { out: string; err: string }
}

async function runSession(section: string, cmds: Command[], server: Server) {
  const marker = (i: number) => `@@readme-command ${i}@@`
  const script = [
    'set -eo pipefail',
    ...cmds.flatMap((c, i) => [c.text.replaceAll(':8000', `:${server.port}`), `printf '\\n%s\\n' '${marker(i)}'`]),
  ].join('\n')
  const file = join(server.dir, `readme-${section.replace(/\W+/g, '-').toLowerCase()}.sh`)
  writeFileSync(file, `${script}\n`)
  const child = spawn('bash', [file], {
    cwd: server.dir,
    env: baseEnv(server.dir, server.port),
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  })
  const t = track(child)
  // What the commands left running (a runner the README does not stop, if it fails midway).
  cleanups.push(() => killGroup(child, 'SIGKILL', 5_000))
  const timer = setTimeout(() => void killGroup(child, 'SIGKILL', 5_000), 120_000)
  const code = await t.exited
  clearTimeout(timer)
  const { out, err } = t.output()
  const outputs: { command: Command; out: string }[] = []
  let from = 0
  for (const [i, command] of cmds.entries()) {
    const at = out.indexOf(`\n${marker(i)}\n`, from)
    if (at < 0) {
      const s = server.output()
      throw new Error(
        `README.md:${command.line} (${section}) failed (bash exited ${code ?? child.signalCode}):\n${command.text}\n` +
          `--- its output:\n${out.slice(from)}\n--- stderr:\n${err.slice(-3000)}\n--- the server:\n${(s.out + s.err).slice(-3000)}`,
      )
    }
    // The marker starts on a line of its own: the command's own last newline is not part of what it shows.
    outputs.push({ command, out: out.slice(from, at).replace(/\n$/, '') })
    from = at + marker(i).length + 2
  }
  expect(code, `${section}: bash exited ${code}\n${err.slice(-2000)}`).toBe(0)
  return { outputs, stderr: err }
}
