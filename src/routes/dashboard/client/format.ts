/** Numbers, durations and times as the page writes them. */

export const num = (n: number | null | undefined) => (n ?? 0).toLocaleString()

/** A duration in seconds, in the largest unit that fits: 45 s, 3 min, 5 h, 2 d, 1 y. */
export const span = (s: number) =>
  s < 60
    ? `${s} s`
    : s < 3600
      ? `${Math.round(s / 60)} min`
      : s < 172800
        ? `${Math.round(s / 3600)} h`
        : s < 63072000
          ? `${Math.round(s / 86400)} d`
          : `${Math.round(s / 31557600)} y`

/** How long ago (or, for a clock ahead, in how long). */
export const ago = (iso: string | null | undefined) => {
  if (!iso) return '–'
  const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000)
  return s < -1 ? `in ${span(-s)}` : `${span(Math.max(0, s))} ago`
}

/** Short enough for a KPI card: 3 ms, 4.2 s, 17 s, 6 min, 5 h. */
export const secs = (x: number | null | undefined) =>
  x == null
    ? '–'
    : x < 0.9995
      ? `${Math.round(x * 1000)} ms`
      : x < 9.95
        ? `${x.toFixed(1)} s`
        : x < 119.5
          ? `${Math.round(x)} s`
          : x < 7170
            ? `${Math.round(x / 60)} min`
            : `${Math.round(x / 3600)} h`

/** A chart's top, rounded up to 1, 2, 5 or 10 times a power of ten, so its axis reads easily. */
export const niceMax = (n: number) => {
  if (n <= 1) return 1
  const p = 10 ** Math.floor(Math.log10(n))
  for (const m of [1, 2, 5, 10]) if (m * p >= n) return m * p
  return 10 * p
}

export const hhmm = (d: Date) => d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' })

/** A time: today's as a time of day, any other day's with its date. */
export const when = (iso: string | null | undefined) => {
  if (!iso) return '–'
  const d = new Date(iso)
  return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString()
}

/** A time and how long ago it was. */
export const stamp = (iso: string | null | undefined) => (iso ? `${when(iso)} (${ago(iso)})` : '–')
