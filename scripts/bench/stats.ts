/**
 * Pure figures the bench phases under scripts/bench/ compute: percentiles, the steady rate
 * of a run, and the attribution of pg_waldump's records to one database. No I/O here, so
 * test/bench-stats.test.ts checks them directly.
 */

/** The nearest-rank p-th percentile (0–100) of `xs`; NaN for none. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  const rank = Math.ceil((p / 100) * s.length)
  return s[Math.min(s.length - 1, Math.max(0, rank - 1))] as number
}

/** The median: the mean of the two middle values for an even count; NaN for none. */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2
}

export interface SteadyRate {
  /** Completions per second between the two cut points. */
  rate: number
  /** The cut points (the same unit as the times given), and the completions counted between them. */
  from: number
  to: number
  completions: number
}

/**
 * The steady rate of a run from its completion times (any unit; the rate is per 1,000 of it,
 * so milliseconds give per second): the completions after the `lo` quantile of the times up
 * to and including the `hi` one, divided by the time between them. The ramp-up before the
 * first (agents waking, the first batches) and the tail after the second (the last agents
 * finishing their share) are left out; total/elapsed would count both. Null when there are
 * fewer than two distinct times between the cut points.
 */
export function steadyRate(times: readonly number[], lo = 0.1, hi = 0.9): SteadyRate | null {
  if (times.length < 2) return null
  const s = [...times].sort((a, b) => a - b)
  const i = Math.floor(lo * (s.length - 1))
  const j = Math.ceil(hi * (s.length - 1))
  const from = s[i] as number
  const to = s[j] as number
  if (!(to > from)) return null
  return { rate: ((j - i) * 1000) / (to - from), from, to, completions: j - i }
}

/** What of a stretch of WAL belongs to one database (`attributeWal`). */
export interface WalShare {
  /** Records that name a relation of the database, or belong to a transaction that wrote one. */
  records: number
  /** Their bytes, each rounded up to 8 as WAL lays records out (full-page images included). */
  bytes: number
  /** Commit records of those transactions: the commits that wrote (and flushed) WAL. */
  commits: number
  /** Of `records`, those carrying a full-page image (the first change of a page after a checkpoint). */
  fpwRecords: number
  /** Every record of the stretch, any database, and their bytes. */
  allRecords: number
  allBytes: number
  /** The database's records by kind (`rmgr desc`, e.g. `Heap LOCK`, `Btree INSERT_LEAF`). */
  kinds: Map<string, { records: number; bytes: number }>
}

const RECORD = /^rmgr: (\S+)\s+len \(rec\/tot\):\s*\d+\/\s*(\d+), tx:\s*(\d+),.*?desc: (\S+)/
const REL = /rel \d+\/(\d+)\/\d+/g

/**
 * Attributes pg_waldump's record lines (its default output), fed one at a time, to the
 * database `dbOid`: a record that names one of its relations is its own, and so is every
 * record of a transaction that has such a record (its commit, its Standby LOCK), wherever
 * they fall in the stretch. Records of no transaction and no relation (checkpoints,
 * RUNNING_XACTS) are nobody's. So other databases' writes at the same time do not count,
 * as they do in a diff of pg_current_wal_lsn().
 */
export class WalAttribution {
  readonly share: WalShare = {
    records: 0,
    bytes: 0,
    commits: 0,
    fpwRecords: 0,
    allRecords: 0,
    allBytes: 0,
    kinds: new Map(),
  }
  private readonly mine = new Set<string>()
  // Records with a transaction but no relation, until their transaction is known to be ours.
  private readonly pending = new Map<string, { bytes: number[]; commits: number[]; kinds: string[] }>()
  private readonly db: string
  private readonly skip: ReadonlySet<string>

  /** `skip`: transactions to leave out wholly (the bench's own, e.g. its stand-in for autovacuum's analyze). */
  constructor(dbOid: number, skip: ReadonlySet<string> = new Set()) {
    this.db = String(dbOid)
    this.skip = skip
  }

  add(text: string): void {
    const m = RECORD.exec(text)
    if (!m) return
    const [, rmgr, tot, xid, desc] = m as unknown as [string, string, string, string, string]
    const out = this.share
    const bytes = Math.ceil(Number(tot) / 8) * 8
    const commit = rmgr === 'Transaction' && desc.startsWith('COMMIT') ? 1 : 0
    const kind = `${rmgr} ${desc.replace(/[+:;,]$/, '')}`
    out.allRecords++
    out.allBytes += bytes
    if (this.skip.has(xid)) return
    let rels = 0
    let ours = false
    for (const r of text.matchAll(REL)) {
      rels++
      if (r[1] === this.db) ours = true
    }
    if (ours) {
      this.count(kind, bytes, commit)
      if (text.includes(' FPW')) out.fpwRecords++
      if (xid !== '0' && !this.mine.has(xid)) {
        this.mine.add(xid)
        const p = this.pending.get(xid)
        if (p) {
          for (const [i, k] of p.kinds.entries()) this.count(k, p.bytes[i] as number, p.commits[i] as number)
          this.pending.delete(xid)
        }
      }
    } else if (xid !== '0' && rels === 0) {
      if (this.mine.has(xid)) this.count(kind, bytes, commit)
      else {
        const p = this.pending.get(xid) ?? { bytes: [], commits: [], kinds: [] }
        p.bytes.push(bytes)
        p.commits.push(commit)
        p.kinds.push(kind)
        this.pending.set(xid, p)
      }
    }
  }

  private count(kind: string, bytes: number, commit: number) {
    const out = this.share
    out.records++
    out.bytes += bytes
    out.commits += commit
    const k = out.kinds.get(kind) ?? { records: 0, bytes: 0 }
    k.records++
    k.bytes += bytes
    out.kinds.set(kind, k)
  }
}

/** `WalAttribution` over a list of lines. */
export function attributeWal(lines: Iterable<string>, dbOid: number, skip?: ReadonlySet<string>): WalShare {
  const a = new WalAttribution(dbOid, skip)
  for (const l of lines) a.add(l)
  return a.share
}

/**
 * The `n` kinds of WAL record with the most bytes, as `key=value` fields: `Heap/LOCK` →
 * `records/bytes` per `per` (a task, a sweep), e.g. `2.00r/112B`.
 */
export function topWalKinds(share: WalShare, per: number, n = 8): Record<string, string> {
  const out: Record<string, string> = {}
  const kinds = [...share.kinds].sort((a, b) => b[1].bytes - a[1].bytes).slice(0, n)
  for (const [kind, k] of kinds) {
    out[kind.replace(/\s+/, '/').replace(/\s+/g, '_')] =
      `${(k.records / per).toFixed(2)}r/${Math.round(k.bytes / per)}B`
  }
  return out
}
