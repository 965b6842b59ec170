import { describe, expect, it } from 'vitest'
import { ConfigError, loadConfig } from '../src/env'

describe('loadConfig', () => {
  it('has working defaults for a fresh machine', () => {
    const c = loadConfig({})
    expect(c).toMatchObject({
      appName: 'AgenticCP Agent',
      environment: 'development',
      host: '0.0.0.0',
      port: 8000,
      databaseUrl: '',
      redisUrl: '',
      secretKey: '',
      algorithm: 'HS256',
      heartbeatIntervalSeconds: 30,
      heartbeatTimeoutSeconds: 90,
      maxBodyBytes: 1048576,
      corsOrigins: [],
      logFormat: 'text',
      dataDir: '.data',
      migrateOnStart: true,
      maxTokenLifetimeMinutes: 60,
      maxAgentTokenLifetimeMinutes: 525_600,
    })
  })

  it('bounds token lifetimes by role, never below what the service itself mints', () => {
    expect(loadConfig({ ACCESS_TOKEN_EXPIRE_MINUTES: '120' }).maxTokenLifetimeMinutes).toBe(120)
    expect(loadConfig({ MAX_TOKEN_LIFETIME_MINUTES: '1440' }).maxTokenLifetimeMinutes).toBe(1440)
    expect(() => loadConfig({ MAX_TOKEN_LIFETIME_MINUTES: '30' })).toThrow(/MAX_TOKEN_LIFETIME_MINUTES/)
    expect(() => loadConfig({ MAX_AGENT_TOKEN_LIFETIME_MINUTES: '60' })).toThrow(/MAX_AGENT_TOKEN_LIFETIME_MINUTES/)
  })

  it('parses every kind of value', () => {
    const c = loadConfig({
      DEBUG: 'true',
      PORT: '9000',
      ENVIRONMENT: 'production',
      SECRET_KEY: 'x'.repeat(32),
      CORS_ORIGINS: 'https://a.example, https://b.example',
      MAX_BODY_BYTES: '2048',
      UNRELATED: 'ignored',
    })
    expect(c).toMatchObject({
      debug: true,
      port: 9000,
      environment: 'production',
      corsOrigins: ['https://a.example', 'https://b.example'],
      maxBodyBytes: 2048,
      logFormat: 'json',
    })
  })

  it('names each bad setting on its own line, and never echoes the secret', () => {
    let err: unknown
    try {
      loadConfig({ PORT: 'eighty', ALGORITHM: 'RS256', SECRET_KEY: 'short-secret' })
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(ConfigError)
    const lines = (err as Error).message.split('\n')
    expect(lines).toHaveLength(3)
    expect(lines[0]).toMatch(/^invalid setting PORT \(got "eighty"\)/)
    expect(lines.some((l) => l.startsWith('invalid setting ALGORITHM'))).toBe(true)
    expect(lines.some((l) => l.startsWith('invalid setting SECRET_KEY'))).toBe(true)
    expect((err as Error).message).not.toContain('short-secret')
  })

  it('DATABASE_POOL_MAX is 10 by default, and a bad value is one line naming it', () => {
    expect(loadConfig({}).databasePoolMax).toBe(10)
    expect(loadConfig({ DATABASE_POOL_MAX: '4' }).databasePoolMax).toBe(4)
    for (const [bad, why] of [
      ['0', 'must be at least 1'],
      ['ten', 'must be a number'],
      ['2.5', 'must be a whole number'],
      ['5000', 'must be at most 1000'],
    ]) {
      expect(() => loadConfig({ DATABASE_POOL_MAX: bad })).toThrow(
        new ConfigError(`invalid setting DATABASE_POOL_MAX (got "${bad}"): ${why}`),
      )
    }
  })

  it('DEBUG turns on debug logs unless LOG_LEVEL is given', () => {
    expect(loadConfig({ DEBUG: '1' }).logLevel).toBe('debug')
    expect(loadConfig({ DEBUG: '1', LOG_LEVEL: 'warn' }).logLevel).toBe('warn')
    expect(() => loadConfig({ DEBUG: 'maybe' })).toThrow(/invalid setting DEBUG/)
  })

  it('refuses production without SECRET_KEY, naming it', () => {
    expect(() => loadConfig({ ENVIRONMENT: 'production' })).toThrow(
      /SECRET_KEY: is required when ENVIRONMENT=production/,
    )
  })

  it('wants the heartbeat timeout above the interval', () => {
    expect(() => loadConfig({ HEARTBEAT_INTERVAL_SECONDS: '60', HEARTBEAT_TIMEOUT_SECONDS: '30' })).toThrow(
      /HEARTBEAT_TIMEOUT_SECONDS/,
    )
  })
})
