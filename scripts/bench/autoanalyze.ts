import { readFileSync } from 'node:fs'
import pg from 'pg'

/**
 * A stand-in for autovacuum's analyze, for the benches that run against a Postgres whose
 * `autovacuum` is off (this machine's: CI's conf.d sets it so).
 *
 * Why: the server sends its hot statements as named prepared statements, and Postgres
 * settles on a generic plan for each after a few runs on a connection. That plan is kept
 * until something invalidates it; `ANALYZE` does (it rewrites the table's statistics and its
 * pg_class row, which invalidates every plan that reads the table). With autovacuum on, its
 * analyze of a table that has changed enough does this on its own, as on any live database.
 * With it off, nothing does: a bench's fresh database keeps the plans made while its tables
 * held a few rows (sequential scans of `tasks`), and measures that instead of the service.
 *
 * What: when the scratch database's server has `autovacuum` (or `track_counts`) off, a
 * connection of the bench's own (`application_name` bench-autoanalyze) runs, every
 * BENCH_AUTOANALYZE_SECONDS (2), autovacuum's own rule — ANALYZE the tables whose rows
 * changed since their last analyze more than `autovacuum_analyze_threshold` +
 * `autovacuum_analyze_scale_factor` × their rows (the server's settings: 50 and 10 % by
 * default) — in one transaction a round; and `analyzeNow` runs a round at once (after a
 * bench has seeded its tables). Autovacuum's launcher looks every `autovacuum_naptime`
 * (1 min); 2 s stands in for a live database whose statistics were taken at its present
 * size, since a bench's tables grow from nothing within seconds. With autovacuum on, the
 * stand-in does nothing; BENCH_AUTOANALYZE=0 turns it off (to see the stale plans).
 *
 * Its work is not the service's: pg-counters.ts leaves its transactions out of a window's
 * commits and WAL, bench.ts leaves its backend out of Postgres CPU, and its own rounds and
 * CPU are printed on an `autoanalyze` line when it stops.
 */

interface StandIn {
  database: string
  /** Committed transactions of the stand-in (one per round, read-only ones included). */
  transactions: number
  /** Ids (32-bit, as pg_waldump prints them) of its transactions that wrote. */
  xids: Set<string>
  rounds: number
  /** Rounds that failed (and were rolled back). */
  errors: number
  /** Tables analyzed, summed over the rounds. */
  analyzed: number
  users: number
  round(): Promise<void>
  stop(): Promise<void>
}

const standIns = new Map<string, StandIn | Promise<StandIn | undefined>>()
/** Each database's stand-in work, kept after it stops (a window may end after the server has). */
const works = new Map<string, { transactions: number; xids: Set<string> }>()

function databaseOf(url: string) {
  return decodeURIComponent(new URL(url).pathname.slice(1))
}

/** CPU seconds a local process has used (/proc/<pid>/stat), or NaN when it cannot be read. */
function cpuSeconds(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
    return (Number(fields[11]) + Number(fields[12])) / 100
  } catch {
    return Number.NaN
  }
}

/**
 * The tables autovacuum would analyze now (its rule, for plain tables and partitions), and
 * `all`: every table of the service's schemas that has rows changed since its last analyze.
 */
const DUE_SQL = `
  SELECT format('%I.%I', s.schemaname, s.relname) AS name
    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
   WHERE c.relkind = 'r'
     AND s.n_mod_since_analyze > CASE WHEN $1 THEN 0 ELSE
           current_setting('autovacuum_analyze_threshold')::float8
           + current_setting('autovacuum_analyze_scale_factor')::float8 * greatest(c.reltuples, 0) END
   ORDER BY 1`

async function start(url: string, line: Line): Promise<StandIn | undefined> {
  const database = databaseOf(url)
  const client = new pg.Client({ connectionString: url, application_name: 'bench-autoanalyze' })
  client.on('error', () => {}) // a DROP DATABASE … WITH (FORCE) may end it first
  await client.connect()
  const { rows } = await client.query<{ av: string; tc: string; pid: number }>(
    `SELECT current_setting('autovacuum') AS av, current_setting('track_counts') AS tc, pg_backend_pid() AS pid`,
  )
  const { av, tc, pid } = rows[0] as { av: string; tc: string; pid: number }
  const off = process.env.BENCH_AUTOANALYZE === '0'
  if ((av === 'on' && tc === 'on') || off) {
    await client.end()
    line('autoanalyze', {
      database,
      autovacuum: av,
      track_counts: tc,
      standin: off ? 'off(BENCH_AUTOANALYZE=0)' : 'not_needed',
    })
    return undefined
  }
  const everyMs = Number(process.env.BENCH_AUTOANALYZE_SECONDS ?? 2) * 1000
  const cpu0 = cpuSeconds(pid)
  let running: Promise<void> = Promise.resolve()
  let stopped = false
  let timer: NodeJS.Timeout | undefined
  const s: StandIn = {
    database,
    transactions: 0,
    xids: new Set(),
    rounds: 0,
    errors: 0,
    analyzed: 0,
    users: 1,
    round: () => {
      running = running.then(async () => {
        if (stopped) return
        try {
          await client.query('BEGIN')
          const due = (await client.query<{ name: string }>(DUE_SQL, [false])).rows.map((r) => r.name)
          if (due.length) await client.query(`ANALYZE ${due.join(', ')}`)
          const { rows: x } = await client.query<{ xid: string | null }>(
            'SELECT pg_current_xact_id_if_assigned()::text AS xid',
          )
          await client.query('COMMIT')
          s.transactions++
          s.rounds++
          s.analyzed += due.length
          const xid = x[0]?.xid
          if (xid) s.xids.add(String(BigInt(xid) & 0xffffffffn))
        } catch {
          s.errors++
          await client.query('ROLLBACK').catch(() => {})
        }
      })
      return running
    },
    stop: async () => {
      stopped = true
      clearTimeout(timer)
      await running
      const cpu = cpuSeconds(pid) - cpu0
      await client.end().catch(() => {})
      line('autoanalyze', {
        database,
        autovacuum: av,
        track_counts: tc,
        standin: 'on',
        every_s: everyMs / 1000,
        rounds: s.rounds,
        failed_rounds: s.errors,
        tables_analyzed: s.analyzed,
        postgres_cpu_ms: Number.isFinite(cpu) ? Math.round(cpu * 1000) : 'unreadable',
      })
    },
  }
  works.set(database, s)
  const tick = async () => {
    await s.round()
    if (!stopped) timer = setTimeout(tick, everyMs)
  }
  timer = setTimeout(tick, everyMs)
  line('autoanalyze', {
    database,
    autovacuum: av,
    track_counts: tc,
    standin: 'on',
    every_s: everyMs / 1000,
    rule: 'n_mod_since_analyze>autovacuum_analyze_threshold+scale_factor*reltuples',
  })
  return s
}

type Line = (name: string, fields: Record<string, string | number>) => void

/**
 * Starts the stand-in on `url`'s database when its server needs one (shared: a second call
 * for the same database counts one more user). Stop it with `releaseAutoAnalyze`.
 */
export async function acquireAutoAnalyze(url: string, line: Line): Promise<void> {
  const db = databaseOf(url)
  const held = standIns.get(db)
  if (held) {
    const s = await held
    if (s) s.users++
    return
  }
  const p = start(url, line)
  standIns.set(db, p)
  const s = await p.catch((err: unknown) => {
    standIns.delete(db)
    throw err
  })
  if (s) standIns.set(db, s)
}

/** One user fewer; the last one stops the stand-in (which prints its `autoanalyze` line). */
export async function releaseAutoAnalyze(url: string): Promise<void> {
  const db = databaseOf(url)
  const s = await standIns.get(db)
  if (!s) {
    standIns.delete(db)
    return
  }
  if (--s.users > 0) return
  standIns.delete(db)
  await s.stop()
}

/** A round at once on `url`'s database, if a stand-in runs there: after a bench has seeded its tables. */
export async function analyzeNow(url: string): Promise<void> {
  const s = await standIns.get(databaseOf(url))
  await s?.round()
}

/** What the stand-in on `dbName` has done so far (for pg-counters.ts to leave out), if one runs. */
export function autoAnalyzeWork(dbName: string): { transactions: number; xids: ReadonlySet<string> } | undefined {
  return works.get(dbName)
}
