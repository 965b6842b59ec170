/**
 * Node and Bun, development only: the signing key used when SECRET_KEY is unset, made once
 * and kept in the data directory (file mode 0600), so tokens printed or minted with
 * `npm run token` keep working across restarts. Production refuses to start without
 * SECRET_KEY (src/env.ts) and never comes here.
 */
import { randomBytes } from 'node:crypto'
import { chmodSync, lstatSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'

export const devSecretPath = (dataDir: string) => resolve(join(dataDir, 'secret-key'))

export class DevSecretError extends Error {
  override name = 'DevSecretError'
}

/**
 * The kept key, made first if `create` and there is none; undefined when there is none.
 * Whoever can write the file can mint admin tokens, so a key file that is a symbolic link
 * or belongs to another user is refused, and one others may read is made private.
 */
export function devSecret(dataDir: string, create: boolean): string | undefined {
  const file = devSecretPath(dataDir)
  const read = () => {
    let st: ReturnType<typeof lstatSync>
    try {
      st = lstatSync(file)
    } catch {
      return undefined
    }
    if (!st.isFile()) throw new DevSecretError(`${file} is not a plain file (a link?); delete it or set SECRET_KEY`)
    const uid = process.getuid?.()
    if (uid !== undefined && st.uid !== uid) {
      throw new DevSecretError(`${file} belongs to another user (uid ${st.uid}); delete it or set SECRET_KEY`)
    }
    if ((st.mode & 0o077) !== 0) chmodSync(file, 0o600)
    const key = readFileSync(file, 'utf8').trim()
    return key.length >= 32 ? key : undefined
  }
  const existing = read()
  if (existing || !create) return existing
  mkdirSync(resolve(dataDir), { recursive: true })
  try {
    // 'wx': two processes starting at once keep one key (the loser reads the winner's).
    writeFileSync(file, `${randomBytes(48).toString('base64url')}\n`, { mode: 0o600, flag: 'wx' })
  } catch (err) {
    if ((err as { code?: string }).code !== 'EEXIST') throw err
  }
  return read()
}
