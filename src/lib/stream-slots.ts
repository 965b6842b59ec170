/**
 * Caps on open event streams in this process (Workers: this isolate): so many per token
 * subject and so many in all. A stream takes a slot before it starts and gives it back
 * when it ends, however it ends.
 */
export class StreamSlots {
  private perKey = new Map<string, number>()
  private total = 0

  constructor(
    readonly perPrincipal: number,
    readonly max: number,
  ) {}

  /** A release function, or which cap is full. */
  take(key: string): { release: () => void } | { full: 'principal' | 'total' } {
    const mine = this.perKey.get(key) ?? 0
    if (mine >= this.perPrincipal) return { full: 'principal' }
    if (this.total >= this.max) return { full: 'total' }
    this.perKey.set(key, mine + 1)
    this.total++
    let released = false
    return {
      release: () => {
        if (released) return
        released = true
        this.total--
        const left = (this.perKey.get(key) ?? 1) - 1
        if (left <= 0) this.perKey.delete(key)
        else this.perKey.set(key, left)
      },
    }
  }

  get open(): number {
    return this.total
  }
}
