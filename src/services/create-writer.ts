import type { TaskRow } from '../db/schema'
import { isDatabaseUnavailable } from '../db/tx'
import { GroupCommit, type Outcome } from '../lib/group-commit'
import { describeError, type Logger } from '../lib/logger'
import type { Metrics } from '../lib/metrics'

/**
 * The write side of single creates (POST /api/v1/tasks): creates that arrive while others
 * are being written are written together (natural batching, src/lib/group-commit.ts): one
 * statement inserts them all with their events and shapes, one more places them
 * (`writeCreates`, src/services/tasks.ts, which src/app.ts hands the writer). A process with
 * one database makes one writer for all its requests; on Workers, each create is a batch of
 * one.
 */

/** An idempotency key and whose it is: keys are scoped to the caller (the token's `sub`). */
export interface IdempotencyKey {
  key: string
  owner: string
}

/** One create request's part of a batch of creates. */
export interface CreateEntry {
  idempotency?: IdempotencyKey
  /** The request's hash (with a key), to tell a repeat from another request. */
  hash: string | null
  /** The row to insert (`insertTasks` in src/db/hot.ts), its id made by the caller. */
  values: { id: string } & Record<string, unknown>
}

/** A create's answer: the task (as placement left it), and whether this request made it. */
export type Created = { task: TaskRow; created: boolean }

/** Writes a batch of creates: one outcome per entry, in order; throws if nothing was written. */
export type WriteCreates = (entries: CreateEntry[]) => Promise<Outcome<Created>[]>

export interface CreateWriterOptions {
  /** Most creates in one statement (CREATE_BATCH_SIZE); 1: each alone and at once. */
  batchSize: number
  /** Most batches in flight at once (CREATE_BATCHES_IN_FLIGHT). */
  inFlight: number
  metrics?: Metrics
  logger?: Logger
}

export class CreateWriter {
  private readonly creates: GroupCommit<CreateEntry, Created>

  private readonly logger: Logger | undefined

  constructor(
    private readonly writeCreates: WriteCreates,
    opts: CreateWriterOptions,
  ) {
    this.logger = opts.logger
    this.creates = new GroupCommit((entries) => this.write(entries), {
      max: opts.batchSize,
      inFlight: opts.batchSize <= 1 ? Number.POSITIVE_INFINITY : opts.inFlight,
      onBatch: (n) => opts.metrics?.createBatch.observe({}, n),
    })
  }

  /** Writes one create (with the others in flight). */
  create(entry: CreateEntry): Promise<Created> {
    return this.creates.submit(entry)
  }

  /**
   * One batch. If its statement fails for a reason other than an unreachable database, each
   * create is written again alone, so one the database refuses fails on its own and the
   * others are answered (none is ever answered with another's task).
   */
  private async write(entries: CreateEntry[]): Promise<Outcome<Created>[]> {
    try {
      return await this.writeCreates(entries)
    } catch (err) {
      if (entries.length === 1 || isDatabaseUnavailable(err)) throw err
      this.logger?.warn('a batch of creates failed; each is written alone', {
        creates: entries.length,
        error: describeError(err),
      })
      return Promise.all(
        entries.map(async (e): Promise<Outcome<Created>> => {
          try {
            const [one] = await this.writeCreates([e])
            return one ?? { error: new Error('a create answered nothing') }
          } catch (error) {
            return { error }
          }
        }),
      )
    }
  }
}
