import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { configKeys } from '../src/env'

/**
 * Every setting src/env.ts reads is documented where a newcomer looks (the settings table of
 * docs/configuration.md, which the README links to, and .dev.vars.example), and nothing else is.
 */
describe('settings documentation', () => {
  const page = readFileSync('docs/configuration.md', 'utf8')
  const example = readFileSync('.dev.vars.example', 'utf8')

  it('lists every setting in the settings table of docs/configuration.md and in .dev.vars.example', () => {
    // The first cell of each row of the table under "## Settings", which may name several settings.
    const start = page.indexOf('\n## Settings\n')
    expect(start, 'docs/configuration.md has a "## Settings" section').toBeGreaterThanOrEqual(0)
    const table = page.slice(start, page.indexOf('\n## ', start + 1))
    const firstCells = [...table.matchAll(/^\| ([^|]+) \|/gm)].map((m) => m[1] ?? '')
    const documented = new Set(
      firstCells.flatMap((cell) => [...cell.matchAll(/`([A-Z][A-Z0-9_]*)`/g)].map((m) => m[1])),
    )
    const examples = new Set([...example.matchAll(/^#? ?([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]))
    expect(configKeys.filter((k) => !documented.has(k))).toEqual([])
    expect(configKeys.filter((k) => !examples.has(k))).toEqual([])
    // …and names no setting the service does not read (a renamed or removed one).
    const known = new Set<string | undefined>(configKeys)
    expect([...examples].filter((k) => !known.has(k))).toEqual([])
    expect([...documented].filter((k) => !known.has(k))).toEqual([])
  })
})
