/**
 * Node and Bun, development only: the signing key used when SECRET_KEY is unset, made once
 * and kept in the data directory (file mode 0600), so tokens printed or minted with
 * `npm run token` keep working across restarts. Production refuses to start without
 * SECRET_KEY (src/env.ts) and never comes here.
 */
import { randomBytes } from 'node:crypto'
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'

export const devSecretPath = (dataDir: string) => resolve(join(dataDir, 'secret-key'))

/** The kept key, made first if `create` and there is none; undefined when there is none. */
export function devSecret(dataDir: string, create: boolean): string | undefined {
  const file = devSecretPath(dataDir)
  const read = () => {
    try {
      const key = readFileSync(file, 'utf8').trim()
      return key.length >= 32 ? key : undefined
    } catch {
      return undefined
    }
  }
  const existing = read()
  if (existing) {
    // Whoever else may read it could mint admin tokens: keep it to its owner.
    if ((statSync(file).mode & 0o077) !== 0) chmodSync(file, 0o600)
    return existing
  }
  if (!create) return undefined
  mkdirSync(resolve(dataDir), { recursive: true })
  try {
    // 'wx': two processes starting at once keep one key (the loser reads the winner's).
    writeFileSync(file, `${randomBytes(48).toString('base64url')}\n`, { mode: 0o600, flag: 'wx' })
  } catch (err) {
    if ((err as { code?: string }).code !== 'EEXIST') throw err
  }
  return read()
}
