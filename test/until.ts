/**
 * The suite's one polling helper: runs `probe` until it gives a truthy value and returns
 * that value. A probe that throws counts as "not yet" (its last error is in the timeout's
 * message). The budget is generous on purpose: on a loaded 2-core machine a wait that
 * usually takes 200 ms can take ten times that, and a test that waits on an event should
 * fail only when the event never comes, not when the machine is busy.
 */
export async function until<T>(
  what: string,
  probe: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  opts: { timeoutMs?: number; everyMs?: number } = {},
): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 30_000
  const everyMs = opts.everyMs ?? 50
  const end = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const v = await probe()
      if (v) return v
    } catch (err) {
      last = err
    }
    if (Date.now() > end) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`)
    }
    await new Promise((r) => setTimeout(r, everyMs))
  }
}
