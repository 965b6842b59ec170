/**
 * The runner's own log lines, as the server writes them: JSON (one object a line) or text
 * (`time level message key=value …`), on stderr. Fields carry the task id where there is
 * one. Never given a token.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent'
export type LogFormat = 'json' | 'text'
export type LogFields = Record<string, unknown>

export interface AgentLogger {
  debug(msg: string, fields?: LogFields): void
  info(msg: string, fields?: LogFields): void
  warn(msg: string, fields?: LogFields): void
  error(msg: string, fields?: LogFields): void
  child(fields: LogFields): AgentLogger
}

const order: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 99 }

// Escaped so that a value can never start a line of its own or fake a field.
const textValue = (v: unknown) => {
  const s = typeof v === 'string' ? v : JSON.stringify(v)
  return /^[\w.:/@+-]*$/.test(s ?? '') ? s : JSON.stringify(s)
}

export function createLogger(
  opts: { level?: LogLevel; format?: LogFormat; write?: (line: string) => void; base?: LogFields } = {},
): AgentLogger {
  const level = order[opts.level ?? 'info']
  const format = opts.format ?? 'text'
  const write = opts.write ?? ((line: string) => process.stderr.write(`${line}\n`))
  const base = opts.base ?? {}
  const log = (lvl: Exclude<LogLevel, 'silent'>, msg: string, fields: LogFields = {}) => {
    if (order[lvl] < level) return
    const all = { ...base, ...fields }
    const time = new Date().toISOString()
    if (format === 'json') write(JSON.stringify({ time, level: lvl, msg, ...all }))
    else {
      const kv = Object.entries(all)
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => `${k}=${textValue(v)}`)
      write([time, lvl.toUpperCase().padEnd(5), JSON.stringify(msg).slice(1, -1), ...kv].join(' '))
    }
  }
  return {
    debug: (m, f) => log('debug', m, f),
    info: (m, f) => log('info', m, f),
    warn: (m, f) => log('warn', m, f),
    error: (m, f) => log('error', m, f),
    child: (fields) => createLogger({ ...opts, base: { ...base, ...fields } }),
  }
}

export const silentAgentLogger: AgentLogger = createLogger({ level: 'silent' })
