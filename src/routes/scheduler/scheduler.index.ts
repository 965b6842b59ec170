import { isoOrNull } from '../../lib/timestamps'
import { serviceDeps } from '../../middleware/context'
import { createRouter } from '../../middleware/router'
import { runSweep, schedulerStatus } from '../../services/scheduler'
import { recentStalls } from '../../services/stalls'
import * as routes from './scheduler.routes'

export const schedulerRouter = createRouter()
  .openapi(routes.sweep, async (c) => c.json(await runSweep(serviceDeps(c)), 200))
  .openapi(routes.status, async (c) => {
    const row = await schedulerStatus(serviceDeps(c))
    return c.json(
      {
        lastRunAt: isoOrNull(row?.lastRunAt),
        lastSummary: row?.lastSummary ?? null,
        runs: row?.runs ?? 0,
        sweepIntervalSeconds: c.var.deps.config.sweepIntervalSeconds,
        stalls: await recentStalls(c.var.deps.database.db),
      },
      200,
    )
  })
