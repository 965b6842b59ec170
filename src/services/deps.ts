import type { Db } from '../db/client'
import type { Config } from '../env'
import type { Clock } from '../lib/clock'

/** What services take: the database, the clock (all domain time) and the settings. */
export interface ServiceDeps {
  db: Db
  clock: Clock
  config: Config
}
