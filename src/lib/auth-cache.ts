/**
 * A small bounded map with a lifetime per entry, for what authentication re-derives on
 * every request: the verified claims of a token (until it expires) and, without Redis,
 * an agent's token version (for AUTH_CACHE_TTL_SECONDS, dropped at once by a rotation or
 * deletion on this process). Oldest entries go first when full.
 */
export class TtlCache<V> {
  private entries = new Map<string, { value: V; until: number }>()
  /** Bumped by `delete`: a value looked up before a delete must not be stored after it. */
  private generations = new Map<string, number>()

  constructor(private readonly max: number) {}

  get(key: string, now = Date.now()): V | undefined {
    const e = this.entries.get(key)
    if (!e) return undefined
    if (e.until <= now) {
      this.entries.delete(key)
      return undefined
    }
    return e.value
  }

  set(key: string, value: V, until: number): void {
    if (this.entries.size >= this.max && !this.entries.has(key)) {
      // Map iterates in insertion order: drop the oldest.
      const oldest = this.entries.keys().next().value
      if (oldest !== undefined) this.entries.delete(oldest)
    }
    this.entries.set(key, { value, until })
  }

  /** Stores `value` only if `key` was not deleted since `generation(key)` gave `generation`. */
  setIf(key: string, value: V, until: number, generation: number): void {
    if (this.generation(key) === generation) this.set(key, value, until)
  }

  generation(key: string): number {
    return this.generations.get(key) ?? 0
  }

  delete(key: string): void {
    this.entries.delete(key)
    if (this.generations.size >= this.max) this.generations.clear() // lookups in flight then store nothing
    this.generations.set(key, this.generation(key) + 1)
  }

  get size(): number {
    return this.entries.size
  }
}
