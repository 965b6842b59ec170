/** Parses an If-Match header (`"3"`, `W/"3"`, `*`, or a list) and checks it against a version. */
export function ifMatchOk(header: string | undefined, version: number): boolean {
  if (header === undefined) return true
  return header
    .split(',')
    .map((s) => s.trim().replace(/^W\//, '').replace(/^"|"$/g, ''))
    .some((v) => v === '*' || v === String(version))
}

export const etagOf = (version: number) => `"${version}"`
