import { spawn } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import { createInterface } from 'node:readline'
import pg from 'pg'
import { autoAnalyzeWork } from './autoanalyze'
import { attributeWal, WalAttribution, type WalShare } from './stats'

/**
 * What Postgres itself counts for one scratch database over a window, read from outside
 * (a connection to DATABASE_URL's own database, so the reading is not counted):
 * - commits: pg_stat_database.xact_commit of the database (every transaction that ended in a
 *   commit, read-only ones included: an autocommit SELECT is one);
 * - statements: pg_stat_statements' calls for the database, when the server loaded it
 *   (shared_preload_libraries); else null, and the caller counts on the client side;
 * - WAL: the records of the window that belong to the database, from pg_waldump (the
 *   cluster's WAL read from the data directory, when this machine runs the server and may
 *   read it), with the COMMIT records among them (the commits that wrote WAL and waited for
 *   its flush); and the diff of pg_current_wal_lsn(), which is the whole cluster's — other
 *   databases' writes included, so an upper bound. A temporary replication slot, held by
 *   this connection for the window (and dropped with it), keeps the window's WAL from
 *   being recycled before pg_waldump reads it.
 * The bench's own stand-in for autovacuum's analyze (autoanalyze.ts), when one runs on the
 * database, is left out of the commits and the WAL: its transactions are counted by it, and
 * its xids skipped (`leftOutTransactions` says how many were).
 */
export interface PgWindow {
  /** xact_commit and xact_rollback deltas; null when the window was not settled (see `begin`). */
  commits: number | null
  rollbacks: number | null
  /** pg_stat_statements calls, or null when it is not loaded. */
  statements: number | null
  /** Cluster-wide WAL bytes (pg_current_wal_lsn() diff): an upper bound for the database. */
  clusterWalBytes: number
  /** The database's own share of that WAL (pg_waldump), or the reason it could not be read. */
  wal: WalShare | string
  /** Transactions of the stand-in for autovacuum's analyze in the window, left out of `commits` and `wal`. */
  leftOutTransactions: number
}

/**
 * How long a backend may hold its counts before pg_stat_database has them (PG 15): it sends
 * them when it goes idle, but not twice within a second; one that sent less than a second
 * before going idle sends the rest 10 s later (PGSTAT_IDLE_INTERVAL), or when it exits.
 */
const STATS_SETTLE_MS = 11_000

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export async function openCounters(baseUrl: string, dbUrl: string) {
  const dbName = new URL(dbUrl).pathname.slice(1)
  const admin = new pg.Client({ connectionString: baseUrl, application_name: 'bench-counters' })
  await admin.connect()
  const one = async <T>(text: string, values: unknown[] = []) => (await admin.query(text, values)).rows[0] as T
  const { oid } = await one<{ oid: number }>('SELECT oid::int FROM pg_database WHERE datname = $1', [dbName])
  const { libs } = await one<{ libs: string }>('SHOW shared_preload_libraries').then((r) => ({
    libs: (r as unknown as { shared_preload_libraries: string }).shared_preload_libraries,
  }))
  // pg_stat_statements: its view lives in a database that created the extension; the scratch one is ours to change.
  let pss: pg.Client | null = null
  if (/\bpg_stat_statements\b/.test(libs)) {
    pss = new pg.Client({ connectionString: dbUrl, application_name: 'bench-counters' })
    await pss.connect()
    await pss.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements')
  }
  const statementCalls = async () => {
    if (!pss) return null
    const { rows } = await pss.query<{ n: string }>(
      `SELECT coalesce(sum(calls), 0)::text AS n FROM pg_stat_statements WHERE dbid = $1 AND query NOT LIKE '%pg_stat_statements%'`,
      [oid],
    )
    return Number(rows[0]?.n)
  }

  // pg_waldump and the data directory, when this machine runs the server and may read its WAL.
  let waldump: { bin: string; dir: string } | string = 'not tried'
  try {
    const { v } = await one<{ v: string }>(`SELECT current_setting('server_version_num') AS v`)
    const { d } = await one<{ d: string }>(`SELECT current_setting('data_directory') AS d`)
    const bin = `/usr/lib/postgresql/${Math.floor(Number(v) / 10000)}/bin/pg_waldump`
    accessSync(bin, constants.X_OK)
    accessSync(`${d}/pg_wal`, constants.R_OK)
    waldump = { bin, dir: `${d}/pg_wal` }
  } catch (err) {
    waldump = `pg_waldump_or_pg_wal_unreadable(${(err as Error).message.split('\n')[0]?.slice(0, 80)})`
  }
  let slot = false
  if (typeof waldump !== 'string') {
    try {
      await admin.query('SELECT pg_create_physical_replication_slot($1, true, true)', [
        `bench_wal_${process.pid}_${Date.now().toString(36)}`,
      ])
      slot = true
    } catch {
      // No slot (max_replication_slots = 0, or not allowed): the window is short, read it soon.
    }
  }

  const snapshot = async () => {
    const r = await one<{ commits: string; rollbacks: string; lsn: string }>(
      `SELECT xact_commit::text AS commits, xact_rollback::text AS rollbacks, pg_current_wal_lsn()::text AS lsn
         FROM pg_stat_database WHERE datid = $1`,
      [oid],
    )
    return {
      commits: Number(r.commits),
      rollbacks: Number(r.rollbacks),
      lsn: r.lsn,
      statements: await statementCalls(),
      standIn: autoAnalyzeWork(dbName)?.transactions ?? 0,
    }
  }
  const lsnBytes = async (a: string, b: string) =>
    Number((await one<{ n: string }>('SELECT pg_wal_lsn_diff($2, $1)::text AS n', [a, b])).n)

  return {
    dbName,
    oid,
    hasStatements: pss !== null,
    walSlot: slot,
    /**
     * Starts a window. With `settle` (the default), first waits until the counts of earlier
     * work have reached pg_stat_database, so the commits can be read; `end(flush)` then
     * marks the window's end (the WAL position at once), runs `flush` — which should end
     * the connections that did the work, since a backend that exits sends its counts — or
     * else waits as long, reads the counts, and reads the window's WAL. Without `settle`,
     * the window has WAL figures only.
     */
    async begin({ settle = true } = {}) {
      if (settle) await sleep(STATS_SETTLE_MS)
      const a = await snapshot()
      return {
        async end(flush?: () => Promise<void>): Promise<PgWindow> {
          const { lsn } = await one<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')
          if (settle) {
            if (flush) {
              await flush()
              await sleep(500) // the exiting backends send their last counts
            } else await sleep(STATS_SETTLE_MS)
          }
          const b = await snapshot()
          const clusterWalBytes = await lsnBytes(a.lsn, lsn)
          const skip = autoAnalyzeWork(dbName)?.xids
          const wal = typeof waldump === 'string' ? waldump : await readWal(waldump, a.lsn, lsn, oid, skip)
          const leftOut = b.standIn - a.standIn
          return {
            leftOutTransactions: leftOut,
            commits: settle ? b.commits - a.commits - leftOut : null,
            rollbacks: settle ? b.rollbacks - a.rollbacks : null,
            statements: !settle || a.statements === null || b.statements === null ? null : b.statements - a.statements,
            clusterWalBytes,
            wal,
          }
        },
      }
    },
    async close() {
      await pss?.end().catch(() => {})
      await admin.end().catch(() => {}) // drops the temporary slot
    },
  }
}

/** Runs pg_waldump over [from, to) and attributes its records to database `oid`. */
async function readWal(
  w: { bin: string; dir: string },
  from: string,
  to: string,
  oid: number,
  skip?: ReadonlySet<string>,
): Promise<WalShare | string> {
  if (from === to) return attributeWal([], oid, skip)
  const child = spawn(w.bin, ['-p', w.dir, '-s', from, '-e', to], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d) => {
    stderr += d
  })
  const acc = new WalAttribution(oid, skip)
  const lines = createInterface({ input: child.stdout })
  lines.on('line', (l) => acc.add(l))
  const [code] = await Promise.all([
    new Promise<number | null>((r) => child.once('close', r)),
    new Promise((r) => lines.once('close', r)),
  ])
  if (code !== 0) return `pg_waldump_failed(${stderr.trim().split('\n').at(-1)?.slice(0, 120)})`
  return acc.share
}
