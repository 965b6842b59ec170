import type { ChildProcess } from 'node:child_process'
import type { Database } from '../../src/db/client'

/**
 * What scripts/bench.ts lends the phases under scripts/bench/: its scratch database, its
 * server in a child process and its CPU readings, so every phase starts the server and
 * measures it the same way. (bench.ts runs its phases when loaded, so these files take
 * its helpers as an argument rather than importing it.)
 */
export interface BenchContext {
  /** DATABASE_URL points at a Postgres server (else PGlite in memory). */
  onPostgres: boolean
  /** DATABASE_URL itself: the server the scratch databases are made on. */
  baseUrl: string
  /** Prints one `name key=value …` line. */
  line(name: string, fields: Record<string, string | number>): void
  /** A new scratch database (migrated), with a function that drops it. */
  scratch(): Promise<{ database: Database; url: string; drop: () => Promise<void> }>
  /** src/server.ts in a child process on `url`; resolves once it answers. */
  startServer(
    url: string,
    secret: string,
    opts?: { runtime?: 'node' | 'bun'; redisUrl?: string; env?: Record<string, string>; built?: boolean },
  ): Promise<{ child: ChildProcess; base: string }>
  /** SIGTERM, SIGKILL after 10 s. */
  stopServer(child: ChildProcess): Promise<void>
  /** CPU seconds (user + system) a process has used, from /proc/<pid>/stat. */
  cpuSeconds(pid: number): number
  /** CPU seconds of each Postgres backend serving `dbName`, by pid. */
  postgresCpuByPid(dbName: string): Promise<Map<number, number>>
}
