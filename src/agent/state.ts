import { chmodSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/** What a runner keeps between starts: who it is on which server. */
export interface AgentState {
  url: string
  id: string
  name: string
  token: string
  /** Set when this runner drained itself: its next start asks to be online again. */
  drained?: boolean
}

const FILE = 'agent.json'

/** The state in `dir`, or undefined when there is none (or it is unreadable as state). */
export function loadState(dir: string): AgentState | undefined {
  let text: string
  try {
    text = readFileSync(join(dir, FILE), 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  try {
    const s = JSON.parse(text) as Partial<AgentState>
    if (typeof s.url === 'string' && typeof s.id === 'string' && typeof s.token === 'string') {
      return { url: s.url, id: s.id, name: String(s.name ?? ''), token: s.token, drained: s.drained === true }
    }
  } catch {}
  return undefined
}

/**
 * Writes the state readable by its owner only (directory 0700, file 0600), through a
 * temporary file and a rename, so a crash mid-write never leaves half a file.
 */
export function saveState(dir: string, state: AgentState): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const path = join(dir, FILE)
  const tmp = `${path}.${process.pid}.tmp`
  writeFileSync(tmp, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 })
  chmodSync(tmp, 0o600)
  renameSync(tmp, path)
}

/** What `keepPrivate` found open to others: the path, its mode, the mode it should have, and why it kept its own. */
export interface Tightened {
  path: string
  was: number
  want: number
  /** Set when it could not be changed (the errno code). */
  error?: string
}

/**
 * The state dir readable by its owner only, as `saveState` makes it, even when it was there
 * before, looser (made by hand, by an older version, by a volume): the dir (and its
 * `groups`) 0700, `agent.json` 0600. Returns what it had to change (and what it could not:
 * another user's dir, a read-only volume).
 */
export function keepPrivate(dir: string): Tightened[] {
  const changed: Tightened[] = []
  for (const [path, mode] of [
    [dir, 0o700],
    [join(dir, FILE), 0o600],
    [join(dir, 'groups'), 0o700],
  ] as const) {
    let was: number
    try {
      was = statSync(path).mode & 0o777
    } catch {
      continue // not there (yet): made private when it is made
    }
    if ((was & ~mode) === 0) continue
    try {
      chmodSync(path, mode)
      changed.push({ path, was, want: mode })
    } catch (err) {
      changed.push({ path, was, want: mode, error: (err as NodeJS.ErrnoException).code ?? String(err) })
    }
  }
  return changed
}
