import { DrizzleQueryError, sql } from 'drizzle-orm'
import { describe, expect, it, vi } from 'vitest'
import { createApp } from '../src/app'
import { isDatabaseUnavailable, pgErrorCode } from '../src/db/tx'
import { loadConfig } from '../src/env'
import { ManualClock } from '../src/lib/clock'
import { createLogger, describeError } from '../src/lib/logger'
import { signToken } from '../src/lib/tokens'
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
    // PGlite's own error carries the query and its values too: told by Postgres's message, the SQL once.
    const pglite = Object.assign(new Error('relation "task_logs" does not exist'), {
      code: '42P01',
      query: 'SELECT max(seq) FROM task_logs WHERE task_id = $1',
      params: ['secret-value-3'],
    })
    const wrapped = new DrizzleQueryError(pglite.query, pglite.params, pglite)
    expect(describeError(wrapped)).toBe(
      'relation "task_logs" does not exist (in: SELECT max(seq) FROM task_logs WHERE task_id = $1)',
    )
    const pgliteRange = Object.assign(new Error('value "2147483648" is out of range for type integer'), {
      code: '22003',
      query: 'SELECT 1 WHERE $1::int > 0',
      params: ['2147483648'],
    })
    expect(describeError(new DrizzleQueryError(pgliteRange.query, pgliteRange.params, pgliteRange))).toBe(
      'value "[value]" is out of range for type integer (in: SELECT 1 WHERE $1::int > 0)',
    )
    // A query error without a cause whose message lists its values: only the SQL.
    const bare = Object.assign(new Error('Failed query: SELECT $1\nparams: secret-value-4'), {
      query: 'SELECT $1',
      params: ['secret-value-4'],
    })
    expect(describeError(bare)).toBe('no cause (in: SELECT $1)')
    // A socket errno is not a SQLSTATE (EPIPE has five letters too).
    const pipe = Object.assign(new Error('write EPIPE'), { code: 'EPIPE' })
    expect(pgErrorCode(pipe)).toBeUndefined()
    expect(isDatabaseUnavailable(pipe)).toBe(true)
  })

  it('a live stream that fails after its 200 logs the cause and the start of the SQL: never bound values, nothing on the console', async () => {
    const lines: string[] = []
    const logger = createLogger({ level: 'debug', format: 'json', write: (line) => lines.push(line) })
    const printed: string[] = []
    const consoleError = vi.spyOn(console, 'error').mockImplementation((...args: unknown[]) => {
      printed.push(args.map((a) => (a instanceof Error ? `${a.message}\n${a.stack}` : String(a))).join(' '))
    })
    const database = await freshDatabase()
    try {
      const config = loadConfig({ ENVIRONMENT: 'test', SECRET_KEY: SECRET })
      const app = createApp({ config, database, clock: new ManualClock(new Date()), logger })
      const auth = { authorization: `Bearer ${await signToken(config, { sub: 'ops', role: 'admin' }, 60)}` }
      const created = await app.request('/api/v1/tasks', {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'logged', type: 'test.run', scheduledAt: '2099-01-01T00:00:00Z' }),
      })
      const task = (await created.json()) as { id: string }
      // The tables the streams read go away after the request is validated (the stream answers 200).
      await database.db.execute(sql.raw('ALTER TABLE task_logs RENAME TO task_logs_away'))
      await database.db.execute(sql.raw('ALTER TABLE event_sequence RENAME TO event_sequence_away'))
      const follow = await app.request(`/api/v1/tasks/${task.id}/logs`, {
        headers: { ...auth, accept: 'text/event-stream', 'last-event-id': '1234567' },
      })
      expect(follow.status).toBe(200)
      await follow.text() // the stream ends
      const events = await app.request('/api/v1/events?after=7654321', {
        headers: { ...auth, accept: 'text/event-stream' },
      })
      expect(events.status).toBe(200)
      await events.text()

      // Nothing reached the console (Hono prints a stream's error there whole: drizzle's message lists the values).
      expect(printed).toEqual([])
      const all = lines.join('\n')
      expect(all).not.toMatch(/params/i)
      for (const bound of ['1234567', '7654321', '10000']) expect(all).not.toContain(bound)
      const failed = lines.filter((l) => /stream failed/.test(l)).map((l) => JSON.parse(l) as Record<string, string>)
      expect(failed.map((l) => l.msg).sort()).toEqual(['event stream failed', 'log stream failed'])
      expect(failed.map((l) => l.error).join('\n')).toMatch(/does not exist \(in: /) // the cause and the SQL
      // The task id is in the request lines' path, never in what a failure says.
      expect(failed.map((l) => l.error).join('\n')).not.toContain(task.id)
    } finally {
      consoleError.mockRestore()
      await database.close()
    }
  })
})
