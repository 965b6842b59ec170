/**
 * A small structured logger: JSON lines in production, readable text in development.
 * Fields named like secrets are never written.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error'
export type LogFields = Record<string, unknown>

export interface Logger {
  debug(msg: string, fields?: LogFields): void
  info(msg: string, fields?: LogFields): void
  warn(msg: string, fields?: LogFields): void
  error(msg: string, fields?: LogFields): void
  child(fields: LogFields): Logger
}

const order: Record<LogLevel | 'silent', number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 }
const secretish = /token|secret|password|authorization|cookie|database_url|redis_url/i

const oneLine = (s: string) => s.replace(/\s+/g, ' ').trim()

/**
 * A log-safe description of an error. A failed query (drizzle's DrizzleQueryError, which
 * carries `query` and `params`, and whose message repeats both) is told by its cause and
 * the start of its SQL, never its bound values; a data error from Postgres (SQLSTATE class
 * 22, e.g. `invalid input syntax for type uuid: "…"`, `value "…" is out of range`) loses
 * every quoted value it echoes. PGlite's own errors carry `query` and `params` too, with
 * Postgres's message (no values but those class 22 echoes): told by that message, the SQL once.
 */
export function describeError(err: unknown, depth = 0): string {
  if (err instanceof Error && 'query' in err && typeof err.query === 'string' && 'params' in err) {
    const where = `(in: ${oneLine(err.query).slice(0, 120)})`
    if (err.cause !== undefined && depth < 3) {
      const told = describeError(err.cause, depth + 1)
      return told.endsWith(where) ? told : `${told} ${where}`
    }
    // Drizzle's own message lists the bound values: never that one.
    const own = /\bparams:/.test(err.message) ? 'no cause' : plainMessage(err)
    return `${own} ${where}`
  }
  return plainMessage(err)
}

/** An error's message on one line, quoted values dropped from a data error's (SQLSTATE class 22). */
function plainMessage(err: unknown): string {
  let msg = oneLine(err instanceof Error ? err.message : String(err))
  const code = err && typeof err === 'object' ? (err as { code?: unknown }).code : undefined
  if (typeof code === 'string' && code.startsWith('22')) msg = msg.replace(/"[^"]*"/g, '"[value]"')
  return msg.slice(0, 500)
}

function scrub(fields: LogFields): LogFields {
  const out: LogFields = {}
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue
    out[k] = secretish.test(k) ? '[redacted]' : v instanceof Error ? { name: v.name, message: describeError(v) } : v
  }
  return out
}

// Control characters (a path with %0A, say) must not break or forge a line of text output.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching them is the point
const controls = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g
const escapeControls = (s: string) =>
  s.replace(controls, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`)
/** A text-format value: bare when printable ASCII without `"` or `=`, else quoted and escaped, so it stays one field. */
const textValue = (s: string) => (/^[!#-<>-~]*$/.test(s) ? s : escapeControls(JSON.stringify(s)))

export interface LoggerOptions {
  level: LogLevel | 'silent'
  format: 'json' | 'text'
  write?: (line: string, level: LogLevel) => void
}

const defaultWrite = (line: string, level: LogLevel) => {
  if (level === 'error' || level === 'warn') console.error(line)
  else console.log(line)
}

export function createLogger(opts: LoggerOptions, base: LogFields = {}): Logger {
  const write = opts.write ?? defaultWrite
  const min = order[opts.level]
  const emit = (level: LogLevel, msg: string, fields?: LogFields) => {
    if (order[level] < min) return
    const all = scrub({ ...base, ...fields })
    const time = new Date().toISOString()
    if (opts.format === 'json') {
      write(JSON.stringify({ time, level, msg, ...all }), level)
    } else {
      const rest = Object.entries(all)
        .map(([k, v]) => `${k}=${typeof v === 'string' ? textValue(v) : JSON.stringify(v)}`)
        .join(' ')
      write(`${time} ${level.toUpperCase().padEnd(5)} ${escapeControls(msg)}${rest ? ` ${rest}` : ''}`, level)
    }
  }
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => createLogger(opts, { ...base, ...fields }),
  }
}

export const silentLogger: Logger = createLogger({ level: 'silent', format: 'json' })
