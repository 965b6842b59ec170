import { describe, expect, it } from 'vitest'
import { attributeWal, median, percentile, steadyRate, topWalKinds } from '../scripts/bench/stats'

describe('bench figures (scripts/bench/stats.ts)', () => {
  it('percentile is nearest-rank, median averages the middle pair', () => {
    const xs = [5, 1, 4, 2, 3, 6, 7, 8, 9, 10]
    expect(percentile(xs, 50)).toBe(5)
    expect(percentile(xs, 90)).toBe(9)
    expect(percentile(xs, 100)).toBe(10)
    expect(percentile(xs, 0)).toBe(1)
    expect(percentile([], 50)).toBeNaN()
    expect(median(xs)).toBe(5.5)
    expect(median([3, 1, 2])).toBe(2)
    expect(median([])).toBeNaN()
  })

  it('steadyRate counts the completions between the 10th and 90th percentile over that span', () => {
    // 101 completions 10 ms apart (100/s), behind a slow start and before a long tail.
    const steady = Array.from({ length: 101 }, (_, i) => 1000 + i * 10)
    const r = steadyRate(steady)
    expect(r?.completions).toBe(80)
    expect(r?.from).toBe(1100)
    expect(r?.to).toBe(1900)
    expect(r?.rate).toBeCloseTo(100)
    // A ramp-up and a tail of 5 completions each move the cut points, not the rate.
    const ramp = [0, 300, 600, 800, 900]
    const tail = [3000, 4000, 6000, 8000, 10_000]
    const withEnds = steadyRate([...tail, ...steady, ...ramp])
    // total/elapsed would say 111 completions in 10 s.
    expect(withEnds?.rate).toBeCloseTo(100)
  })

  it('steadyRate needs two distinct times', () => {
    expect(steadyRate([])).toBeNull()
    expect(steadyRate([5])).toBeNull()
    expect(steadyRate([5, 5, 5])).toBeNull()
  })

  it('attributeWal keeps the records of one database and of its transactions', () => {
    const lines = [
      // ours: a relation of database 16390, then its transaction's Standby LOCK and COMMIT
      'rmgr: Heap        len (rec/tot):     54/   934, tx:        700, lsn: 0/01, prev 0/00, desc: INSERT off 10 flags 0x00, blkref #0: rel 1663/16390/2615 blk 0 FPW',
      'rmgr: Standby     len (rec/tot):     42/    42, tx:        700, lsn: 0/02, prev 0/01, desc: LOCK xid 700 db 16390 rel 23118 ',
      'rmgr: Transaction len (rec/tot):     34/    34, tx:        700, lsn: 0/03, prev 0/02, desc: COMMIT 2026-01-01 00:00:00.000000 UTC',
      // another database's transaction, interleaved
      'rmgr: Heap        len (rec/tot):     59/    59, tx:        701, lsn: 0/04, prev 0/03, desc: HOT_UPDATE off 2 xmax 701, blkref #0: rel 1663/16386/16400 blk 3',
      'rmgr: Transaction len (rec/tot):     34/    34, tx:        701, lsn: 0/05, prev 0/04, desc: COMMIT 2026-01-01 00:00:00.000001 UTC',
      // a record of ours whose transaction's earlier record named no relation
      'rmgr: Standby     len (rec/tot):     42/    42, tx:        702, lsn: 0/06, prev 0/05, desc: LOCK xid 702 db 16390 rel 1 ',
      'rmgr: Btree       len (rec/tot):     64/    64, tx:        702, lsn: 0/07, prev 0/06, desc: INSERT_LEAF off 8, blkref #0: rel 1663/16390/2685 blk 1',
      'rmgr: Transaction len (rec/tot):     34/    34, tx:        702, lsn: 0/08, prev 0/07, desc: COMMIT 2026-01-01 00:00:00.000002 UTC',
      // nobody's: no transaction, no relation; and a pruning of ours with no transaction
      'rmgr: Standby     len (rec/tot):     50/    50, tx:          0, lsn: 0/09, prev 0/08, desc: RUNNING_XACTS nextXid 703',
      'rmgr: Heap2       len (rec/tot):     56/    56, tx:          0, lsn: 0/0A, prev 0/09, desc: PRUNE latestRemovedXid 700, blkref #0: rel 1663/16390/16401 blk 0',
      'pg_waldump: error: something that is not a record',
    ]
    const share = attributeWal(lines, 16390)
    const a8 = (n: number) => Math.ceil(n / 8) * 8
    expect(share.records).toBe(7)
    expect(share.commits).toBe(2)
    expect(share.fpwRecords).toBe(1)
    expect(share.bytes).toBe(a8(934) + a8(42) + a8(34) + a8(42) + a8(64) + a8(34) + a8(56))
    expect(share.allRecords).toBe(10)
    expect(share.allBytes).toBe(share.bytes + a8(59) + a8(34) + a8(50))
    expect(share.kinds.get('Transaction COMMIT')).toEqual({ records: 2, bytes: 2 * a8(34) })
    expect(share.kinds.get('Standby LOCK')).toEqual({ records: 2, bytes: 2 * a8(42) })
    expect(share.kinds.has('Standby RUNNING_XACTS')).toBe(false)
    // Per 2 tasks, the kinds with the most bytes first.
    expect(Object.entries(topWalKinds(share, 2, 2))).toEqual([
      ['Heap/INSERT', `0.50r/${a8(934) / 2}B`],
      ['Standby/LOCK', `1.00r/${a8(42)}B`],
    ])
  })

  it('attributeWal leaves out the transactions it is told to skip, wholly', () => {
    const lines = [
      // the service's transaction
      'rmgr: Heap        len (rec/tot):     54/    54, tx:        800, lsn: 0/01, prev 0/00, desc: INSERT off 10 flags 0x00, blkref #0: rel 1663/16390/16401 blk 0',
      'rmgr: Transaction len (rec/tot):     34/    34, tx:        800, lsn: 0/02, prev 0/01, desc: COMMIT 2026-01-01 00:00:00.000000 UTC',
      // the bench's own ANALYZE: pg_statistic rows of the same database, and its commit
      'rmgr: Heap        len (rec/tot):    900/   900, tx:        801, lsn: 0/03, prev 0/02, desc: HOT_UPDATE off 3 xmax 801, blkref #0: rel 1663/16390/2619 blk 7',
      'rmgr: Heap        len (rec/tot):     70/    70, tx:        801, lsn: 0/04, prev 0/03, desc: INPLACE off 12, blkref #0: rel 1663/16390/1259 blk 2',
      'rmgr: Transaction len (rec/tot):     66/    66, tx:        801, lsn: 0/05, prev 0/04, desc: COMMIT 2026-01-01 00:00:00.000001 UTC; inval msgs: relcache 16401',
    ]
    const a8 = (n: number) => Math.ceil(n / 8) * 8
    const all = attributeWal(lines, 16390)
    expect(all.commits).toBe(2)
    const share = attributeWal(lines, 16390, new Set(['801']))
    expect(share.records).toBe(2)
    expect(share.commits).toBe(1)
    expect(share.bytes).toBe(a8(54) + a8(34))
    expect(share.kinds.has('Heap HOT_UPDATE')).toBe(false)
    // Still part of the stretch as a whole.
    expect(share.allRecords).toBe(5)
    expect(share.allBytes).toBe(all.allBytes)
  })
})
