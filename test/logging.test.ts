import { DrizzleQueryError } from 'drizzle-orm'
import { describe, expect, it } from 'vitest'
import { createApp } from '../src/app'
import { isDatabaseUnavailable, pgErrorCode } from '../src/db/tx'
import { loadConfig } from '../src/env'
import { ManualClock } from '../src/lib/clock'
import { createLogger, describeError } from '../src/lib/logger'
import { freshDatabase, SECRET } from './harness'

describe('log lines', () => {
  it('in text format, a request path with %0A or %0D cannot forge a line', async () => {
    const lines: string[] = []
    const logger = createLogger({ level: 'debug', format: 'text', write: (line) => lines.push(line) })
    const database = await freshDatabase()
    try {
      const config = loadConfig({ ENVIRONMENT: 'test', SECRET_KEY: SECRET })
      const app = createApp({ config, database, clock: new ManualClock(new Date()), logger })
      const res = await app.request('/api/v1/agents%0A2026-01-01T00:00:00.000Z%20INFO%20%20forged%0D%0Ax')
      expect(res.status).toBe(404)
      for (const line of lines) {
        expect(line).not.toMatch(/[\n\r\u2028\u2029]/)
        expect(line).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z (DEBUG|INFO |WARN |ERROR) /)
      }
      const logged = lines.find((l) => l.includes(' request ') && l.includes('status=404'))
      expect(logged).toContain('path="/api/v1/agents\\n2026-01-01T00:00:00.000Z INFO  forged\\r\\nx"')
    } finally {
      await database.close()
    }
  })

  it('describe a failed query by its cause and SQL, never its bound values', () => {
    const cause = Object.assign(new Error('invalid input syntax for type uuid: "secret-value-1"'), { code: '22P02' })
    const err = new DrizzleQueryError(
      'select * from agents where id = $1 and name = $2',
      ['x', 'secret-value-2'],
      cause,
    )
    expect(err.message).toContain('secret-value-2') // drizzle's own message has them…
    const told = describeError(err)
    expect(told).toContain('select * from agents where id = $1')
    expect(told).not.toMatch(/secret-value/) // …ours never
    const lines: string[] = []
    createLogger({ level: 'info', format: 'json', write: (l) => lines.push(l) }).error('failed', { error: err })
    expect(lines.join('')).not.toMatch(/secret-value/)
    const range = Object.assign(new Error('value "99999999999" is out of range for type integer'), { code: '22003' })
    expect(describeError(range)).toBe('value "[value]" is out of range for type integer')
    // A socket errno is not a SQLSTATE (EPIPE has five letters too).
    const pipe = Object.assign(new Error('write EPIPE'), { code: 'EPIPE' })
    expect(pgErrorCode(pipe)).toBeUndefined()
    expect(isDatabaseUnavailable(pipe)).toBe(true)
  })
})
