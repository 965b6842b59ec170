import { type SQL, sql } from 'drizzle-orm'

/**
 * Drizzle SQL from a fragment's text (src/domain/sql.ts, src/domain/fit.ts) written with
 * `{{name}}` markers: each marker becomes a bound value, so the fragments the prepared hot
 * statements use with `$n` parameters serve drizzle's statements too, with nothing spliced
 * into the text.
 */
export function bind(text: string, values: Record<string, unknown>): SQL {
  const parts = text.split(/\{\{(\w+)\}\}/)
  const chunks: SQL[] = []
  for (const [i, part] of parts.entries()) {
    if (i % 2 === 0) {
      if (part) chunks.push(sql.raw(part))
      continue
    }
    if (!(part in values)) throw new Error(`no value for {{${part}}}`)
    chunks.push(sql`${values[part]}`)
  }
  return sql.join(chunks)
}

/** A Postgres text[] literal, one bound parameter whatever the length. */
export function pgTextArray(values: readonly string[]): string {
  return `{${values.map((v) => `"${v.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`).join(',')}}`
}
