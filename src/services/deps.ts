import type { Db } from '../db/client'
import type { Config } from '../env'
import type { Clock } from '../lib/clock'
import type { WorkNotifier } from '../lib/notifier'

/** What services take: the database, the clock (all domain time) and the settings. */
export interface ServiceDeps {
  db: Db
  clock: Clock
  config: Config
  /** Wakes long-polling heartbeats when work lands on an agent; optional (tests, scripts). */
  notifier?: WorkNotifier
}
