import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'

/** A process that tries to take the lock, says whether it got it, and holds it for `holdMs`. */
function contender(dir: string, holdMs: number) {
  const code = `
    import { lockDataDir } from './src/db/pglite-lock.ts'
    try { const release = lockDataDir(${JSON.stringify(dir)}); console.log('got'); setTimeout(() => { release(); process.exit(0) }, ${holdMs}) }
    catch (err) { console.log('refused', err.message); process.exit(0) }`
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let out = ''
  child.stdout.on('data', (d) => {
    out += d
  })
  return new Promise<string>((resolve) => child.on('exit', () => resolve(out.trim())))
}

describe('the embedded database lock', () => {
  it('lets exactly one of several starters take over a stale lock', async () => {
    for (let round = 0; round < 3; round++) {
      const dir = mkdtempSync(join(tmpdir(), 'act-lock-'))
      const gone = spawnSync(process.execPath, ['-e', 'process.exit(0)']).pid
      writeFileSync(join(dir, 'owner.lock'), JSON.stringify({ pid: gone, host: hostname() }))
      const results = await Promise.all(Array.from({ length: 5 }, () => contender(dir, 3000)))
      expect(
        results.filter((r) => r === 'got'),
        results.join(' | '),
      ).toHaveLength(1)
      for (const r of results.filter((x) => x !== 'got')) expect(r).toMatch(/^refused .*(in use by|taken over)/)
    }
  }, 90_000)

  it('treats a lease nobody refreshed for 30 s as free (a crashed container, another host)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'act-lease-'))
    const file = join(dir, 'owner.lock')
    writeFileSync(file, JSON.stringify({ pid: 1, host: 'some-other-host' }))
    expect(await contender(dir, 0)).toMatch(/^refused .*process 1 on some-other-host/)
    const old = new Date(Date.now() - 60_000)
    const { utimesSync } = await import('node:fs')
    utimesSync(file, old, old)
    expect(await contender(dir, 0)).toBe('got')
  }, 30_000)
})
