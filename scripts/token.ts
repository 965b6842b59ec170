/**
 * `npm run token -- --role admin [--sub alice] [--minutes 60]`: prints a JWT signed with
 * SECRET_KEY (from the environment or .dev.vars) or, in development without it, with the
 * key the server keeps in DATA_DIR, for local use.
 *
 * `npm run token -- --registration [--uses N] [--minutes M] [--description TEXT]
 * [--labels k=v,k=v] [--url URL]`: asks the running server (default
 * http://127.0.0.1:$PORT, else :8000) for a registration token, with an admin JWT signed
 * here with the same key and living 5 minutes, and prints only the token, so
 * `TOKEN=$(npm run -s token -- --registration)` works.
 *
 * `--out FILE` writes the token to FILE instead (mode 0600, replaced whole), for a runner's
 * `--token-file`: the compose file's one-shot `fleet-token` service does this.
 *
 * Built to dist/token.js (`node dist/token.js …`) for production installs without tsx.
 */
import { existsSync, renameSync, writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { type Role, roles } from '../src/domain/model'
import { type Config, ConfigError, loadConfig } from '../src/env'
import { devSecret, devSecretPath } from '../src/lib/dev-secret'
import { maxLifetimeMinutes, signToken } from '../src/lib/tokens'

if (existsSync('.dev.vars')) process.loadEnvFile('.dev.vars')
const { values } = parseArgs({
  options: {
    role: { type: 'string', default: 'admin' },
    sub: { type: 'string' },
    minutes: { type: 'string' },
    tv: { type: 'string' },
    registration: { type: 'boolean', default: false },
    uses: { type: 'string' },
    description: { type: 'string' },
    labels: { type: 'string' },
    url: { type: 'string' },
    out: { type: 'string' },
  },
})

/** The token on stdout, or written to --out whole (a reader never sees half of it). */
function emit(token: string) {
  if (values.out === undefined) {
    console.log(token)
    return
  }
  const tmp = `${values.out}.${process.pid}.tmp`
  try {
    writeFileSync(tmp, `${token}\n`, { mode: 0o600 })
    renameSync(tmp, values.out)
  } catch (err) {
    throw new ConfigError(`cannot write --out ${values.out}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
  }
  console.error(`token written to ${values.out}`)
}

const wholeNumber = (flag: string, value: string) => {
  const n = Number(value)
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1) {
    throw new ConfigError(`${flag} must be a whole number of at least 1 (got "${value}")`)
  }
  return n
}

function parseLabels(value: string): Record<string, string> {
  const labels: Record<string, string> = {}
  for (const pair of value.split(',').filter((p) => p.trim() !== '')) {
    const eq = pair.indexOf('=')
    if (eq <= 0) throw new ConfigError(`--labels wants k=v,k=v (got "${pair}")`)
    labels[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim()
  }
  return labels
}

/** Asks the server for a registration token; returns the secret. */
async function registrationToken(config: Config): Promise<string> {
  const base = (values.url ?? `http://127.0.0.1:${process.env.PORT || 8000}`).replace(/\/+$/, '')
  const body = {
    ...(values.description !== undefined ? { description: values.description } : {}),
    ...(values.minutes !== undefined ? { expiresInMinutes: wholeNumber('--minutes', values.minutes) } : {}),
    ...(values.uses !== undefined ? { maxUses: wholeNumber('--uses', values.uses) } : {}),
    ...(values.labels !== undefined ? { labels: parseLabels(values.labels) } : {}),
  }
  const admin = await signToken(
    config,
    { sub: 'local-token-script', role: 'admin' },
    Math.min(5, maxLifetimeMinutes(config, 'admin')),
  )
  let res: Response
  try {
    res = await fetch(`${base}/api/v1/registration-tokens`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(15_000),
    })
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause
    const why = cause?.code ?? cause?.message ?? (err instanceof Error ? err.message : String(err))
    throw new ConfigError(`cannot reach the server at ${base} (${why}): is it running? (--url, or PORT)`)
  }
  const text = await res.text()
  let answer: { token?: string; detail?: string; errors?: { path: string; message: string }[] } = {}
  try {
    answer = JSON.parse(text)
  } catch {
    // not JSON: said below
  }
  if (res.status !== 201 || typeof answer.token !== 'string') {
    const fields = answer.errors?.map((e) => `${e.path} ${e.message}`).join('; ')
    const detail = answer.detail ?? (text.slice(0, 200) || res.statusText)
    const hint = res.status === 401 ? ' (is SECRET_KEY the one the server uses?)' : ''
    throw new ConfigError(
      `the server at ${base} refused the registration token: ${res.status} ${detail}${fields ? `: ${fields}` : ''}${hint}`,
    )
  }
  return answer.token
}

try {
  const loaded = loadConfig(process.env)
  const secretKey = loaded.secretKey || devSecret(loaded.dataDir, false)
  if (!secretKey)
    throw new ConfigError(
      `SECRET_KEY is not set (environment or .dev.vars) and there is no development key in ${devSecretPath(loaded.dataDir)} yet: start the server once (npm start) or set SECRET_KEY`,
    )
  const config = { ...loaded, secretKey }
  if (values.registration) {
    emit(await registrationToken(config))
  } else {
    for (const flag of ['uses', 'description', 'labels', 'url'] as const) {
      if (values[flag] !== undefined) throw new ConfigError(`--${flag} goes with --registration`)
    }
    const role = values.role as Role
    if (!roles.includes(role)) throw new ConfigError(`--role must be one of ${roles.join(', ')}`)
    if (role === 'agent' && (!values.sub || !values.tv)) {
      throw new ConfigError(
        'an agent token needs --sub <agentId> and --tv <tokenVersion>; better, use POST /api/v1/agents/{id}/token',
      )
    }
    const minutes = values.minutes ? Number(values.minutes) : config.accessTokenExpireMinutes
    const most = maxLifetimeMinutes(config, role)
    if (!Number.isInteger(minutes) || minutes < 1 || minutes > most) {
      throw new ConfigError(
        `--minutes must be a whole number from 1 to ${most}: the server refuses ${role} tokens that live longer (${role === 'agent' ? 'MAX_AGENT_TOKEN_LIFETIME_MINUTES' : 'MAX_TOKEN_LIFETIME_MINUTES'})`,
      )
    }
    const token = await signToken(
      config,
      { sub: values.sub ?? `local-${role}`, role, ...(values.tv ? { tv: Number(values.tv) } : {}) },
      minutes,
    )
    emit(token)
  }
} catch (err) {
  console.error(err instanceof Error ? err.message : String(err))
  process.exit(1)
}
