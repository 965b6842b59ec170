import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildSync } from 'esbuild'
import { afterAll, describe, expect, it } from 'vitest'

// src/db/pglite-lock.ts compiled once (as tsx would, with esbuild): each contender is then a
// plain node process, which starts in a fraction of tsx's time.
const build = mkdtempSync(join(tmpdir(), 'act-lock-build-'))
const lockModule = join(build, 'pglite-lock.mjs')
buildSync({ entryPoints: ['src/db/pglite-lock.ts'], outfile: lockModule, format: 'esm', platform: 'node' })
afterAll(() => rmSync(build, { recursive: true, force: true }))

/**
 * A process that tries to take the lock and says whether it got it (its first line). One
 * that got it holds it until `release()` closes its stdin; one refused exits at once.
 */
function contender(dir: string) {
  const code = `
    import { lockDataDir } from ${JSON.stringify(lockModule)}
    try {
      const release = lockDataDir(${JSON.stringify(dir)})
      console.log('got')
      process.stdin.on('end', () => { release(); process.exit(0) }).resume()
    } catch (err) { console.log('refused', err.message); process.exit(0) }`
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['pipe', 'pipe', 'inherit'] })
  child.stdin.on('error', () => {}) // closing the stdin of one that already exited
  let out = ''
  let said: (line: string) => void = () => {}
  const decided = new Promise<string>((resolve) => {
    said = resolve
  })
  child.stdout.on('data', (d) => {
    out += d
    if (out.includes('\n')) said(out.slice(0, out.indexOf('\n')))
  })
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()))
  void exited.then(() => said(out.trim()))
  return { decided, exited, release: () => child.stdin.end() }
}

describe('the embedded database lock', () => {
  it('lets exactly one of several starters take over a stale lock', async () => {
    for (let round = 0; round < 3; round++) {
      const dir = mkdtempSync(join(tmpdir(), 'act-lock-'))
      const gone = spawnSync(process.execPath, ['-e', 'process.exit(0)']).pid
      writeFileSync(join(dir, 'owner.lock'), JSON.stringify({ pid: gone, host: hostname() }))
      const all = Array.from({ length: 5 }, () => contender(dir))
      // The winner holds the lock until every other has tried, however late it started.
      const results = await Promise.all(all.map((c) => c.decided))
      for (const c of all) c.release()
      await Promise.all(all.map((c) => c.exited))
      expect(
        results.filter((r) => r === 'got'),
        results.join(' | '),
      ).toHaveLength(1)
      for (const r of results.filter((x) => x !== 'got')) expect(r).toMatch(/^refused .*(in use by|taken over)/)
    }
  })

  it('treats a lease nobody refreshed for 30 s as free (a crashed container, another host)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'act-lease-'))
    const file = join(dir, 'owner.lock')
    writeFileSync(file, JSON.stringify({ pid: 1, host: 'some-other-host' }))
    const first = contender(dir)
    expect(await first.decided).toMatch(/^refused .*process 1 on some-other-host/)
    await first.exited
    const old = new Date(Date.now() - 60_000)
    utimesSync(file, old, old)
    const second = contender(dir)
    expect(await second.decided).toBe('got')
    second.release()
    await second.exited
  })
})
