/**
 * `npm run token -- --role admin [--sub alice] [--minutes 60]`: prints a JWT signed with
 * SECRET_KEY (from the environment or .dev.vars) or, in development without it, with the
 * key the server keeps in DATA_DIR, for local use.
 */
import { existsSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { ConfigError, loadConfig } from '../src/env'
import { maxLifetimeMinutes, signToken } from '../src/lib/auth'
import { type Role, roles } from '../src/lib/context'
import { devSecret, devSecretPath } from '../src/lib/dev-secret'

if (existsSync('.dev.vars')) process.loadEnvFile('.dev.vars')
const { values } = parseArgs({
  options: {
    role: { type: 'string', default: 'admin' },
    sub: { type: 'string' },
    minutes: { type: 'string' },
    tv: { type: 'string' },
  },
})
try {
  const loaded = loadConfig(process.env)
  const secretKey = loaded.secretKey || devSecret(loaded.dataDir, false)
  if (!secretKey)
    throw new ConfigError(
      `SECRET_KEY is not set (environment or .dev.vars) and there is no development key in ${devSecretPath(loaded.dataDir)} yet: start the server once (npm start) or set SECRET_KEY`,
    )
  const config = { ...loaded, secretKey }
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
  console.log(token)
} catch (err) {
  console.error(err instanceof Error ? err.message : String(err))
  process.exit(1)
}
