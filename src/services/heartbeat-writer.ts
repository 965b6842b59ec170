import type { Db } from '../db/client'
import { heartbeats, heartbeatsPlain, hot, type ReportRow, touchBeats, type VerdictRow } from '../db/hot'
import { isDatabaseUnavailable } from '../db/tx'
import type { Clock } from '../lib/clock'
import { ApiError } from '../lib/errors'
import { GroupCommit, type Outcome } from '../lib/group-commit'
import { describeError, type Logger } from '../lib/logger'
import type { Metrics } from '../lib/metrics'

/**
 * The write side of heartbeats: each heartbeat's beat (with its reports' last round) and
 * each long poll's refreshed beat, committed together with the others in flight (natural
 * batching, src/lib/group-commit.ts): one statement for a batch of heartbeats
 * (`heartbeats` in src/db/hot.ts), one for a batch of refreshed beats (`touchBeats`).
 * A process with one database makes one writer for all its requests (src/app.ts); where the
 * database is per request (Workers), each heartbeat gets a writer of its own, which runs
 * the same statement for a batch of one.
 */

/** One heartbeat's part of a batch. */
export interface BeatEntry {
  agentId: string
  /** The status it reports, or null. */
  status: string | null
  metrics: Record<string, unknown> | null
  /** The task ids it reports running (deduplicated). */
  running: string[]
  /** The task types it declares (deduplicated), or null: unchanged. */
  taskTypes: string[] | null
  /** The last round of its reports (src/services/tasks.ts, applyTaskReports), or null. */
  reports: ReportRow[] | null
}

/** What the statement answers for one agent. */
export type BeatRow = {
  agent: Record<string, unknown>
  assigned: Record<string, unknown>[]
  given: (Record<string, unknown> & { wait_s: number })[]
  cancel: string[]
  lost: string[]
  moved: boolean
  reports: VerdictRow[]
}

export interface HeartbeatWriterOptions {
  /** Most heartbeats in one statement (HEARTBEAT_BATCH_SIZE); 1: each alone and at once. */
  batchSize: number
  /** Most batch statements in flight at once (HEARTBEAT_BATCHES_IN_FLIGHT). */
  inFlight: number
  metrics?: Metrics
  logger?: Logger
}

/** Most refreshed beats in one statement: each is one uuid in an array. */
const TOUCH_BATCH = 1000

export class HeartbeatWriter {
  private readonly beats: GroupCommit<BeatEntry, BeatRow>
  private readonly touches: GroupCommit<string, void>

  private readonly logger: Logger | undefined

  constructor(
    private readonly db: Db,
    private readonly clock: Clock,
    opts: HeartbeatWriterOptions,
  ) {
    this.logger = opts.logger
    this.beats = new GroupCommit((entries) => this.writeBeats(entries), {
      max: opts.batchSize,
      // Batches of one: each heartbeat at once, as many in flight as arrive (the pool bounds them).
      inFlight: opts.batchSize <= 1 ? Number.POSITIVE_INFINITY : opts.inFlight,
      // One entry per agent in a statement: its reports and slots are judged once.
      key: (e) => e.agentId.toLowerCase(),
      onBatch: (n) => opts.metrics?.heartbeatBatch.observe({}, n),
    })
    this.touches = new GroupCommit<string, void>(
      async (ids) => {
        const list = [...new Set(ids.map((id) => id.toLowerCase()))].sort()
        await hot(this.db, touchBeats, [this.clock.now(), `{${list.join(',')}}`])
        return ids.map(() => ({ value: undefined }))
      },
      { max: TOUCH_BATCH, inFlight: opts.inFlight },
    )
  }

  /** Writes one heartbeat (with the others in flight); its answer, or not_found. */
  beat(entry: BeatEntry): Promise<BeatRow> {
    return this.beats.submit(entry)
  }

  /** Moves the agent's last heartbeat to now (with the others in flight). */
  touch(agentId: string): Promise<void> {
    return this.touches.submit(agentId)
  }

  /**
   * One statement for the batch. If it fails for a reason other than an unreachable
   * database, each heartbeat is written again alone, so one whose data the database refuses
   * fails on its own and the others are answered (none is ever answered with another's row).
   */
  private async writeBeats(entries: BeatEntry[]): Promise<Outcome<BeatRow>[]> {
    try {
      return await this.statement(entries)
    } catch (err) {
      if (entries.length === 1 || isDatabaseUnavailable(err)) throw err
      this.logger?.warn('a batch of heartbeats failed; each is written alone', {
        heartbeats: entries.length,
        error: describeError(err),
      })
      return Promise.all(
        entries.map(async (e): Promise<Outcome<BeatRow>> => {
          try {
            const [one] = await this.statement([e])
            return one ?? { error: new Error('a heartbeat statement answered nothing') }
          } catch (error) {
            return { error }
          }
        }),
      )
    }
  }

  private async statement(entries: BeatEntry[]): Promise<Outcome<BeatRow>[]> {
    const beats = entries.map((e) => ({
      agent_id: e.agentId,
      status: e.status,
      metrics: e.metrics,
      running: e.running,
      task_types: e.taskTypes,
    }))
    const agentIds = [...new Set(entries.map((e) => e.agentId.toLowerCase()))].sort()
    // Report rows are numbered across the batch; each entry's verdicts come back by agent
    // and are numbered again from its own first row.
    const rows: ReportRow[] = []
    const offsets = entries.map((e) => {
      const offset = rows.length
      for (const r of e.reports ?? []) rows.push({ ...r, i: offset + r.i, agent_id: e.agentId })
      return offset
    })
    const now = this.clock.now()
    const ids = `{${agentIds.join(',')}}`
    type Row = BeatRow & { agent_id: string }
    const out =
      rows.length > 0
        ? await hot<Row>(this.db, heartbeats, [
            now,
            JSON.stringify(beats),
            ids,
            JSON.stringify(rows),
            `{${[...new Set(rows.map((r) => r.task_id.toLowerCase()))].sort().join(',')}}`,
          ])
        : await hot<Row>(this.db, heartbeatsPlain, [now, JSON.stringify(beats), ids])
    const byAgent = new Map(out.map((r) => [String(r.agent_id).toLowerCase(), r]))
    return entries.map((e, n) => {
      const row = byAgent.get(e.agentId.toLowerCase())
      if (!row) return { error: new ApiError('not_found', `No agent with id ${e.agentId}.`) }
      const offset = offsets[n] ?? 0
      const { agent_id: _, ...answer } = row
      return { value: { ...answer, reports: row.reports.map((v) => ({ ...v, i: v.i - offset })) } }
    })
  }
}
