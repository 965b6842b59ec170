import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
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
