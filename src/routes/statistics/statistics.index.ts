import { serviceDeps } from '../../middleware/context'
import { createRouter } from '../../middleware/router'
import { cachedAgentStatistics, cachedTaskStatistics } from '../../services/statistics'
import * as routes from './statistics.routes'

// Mounted before the agents and tasks routers, so `statistics` is not read as an id.
export const statisticsRouter = createRouter()
  .openapi(routes.agents, async (c) => c.json(await cachedAgentStatistics(serviceDeps(c)), 200))
  .openapi(routes.tasks, async (c) => c.json(await cachedTaskStatistics(serviceDeps(c)), 200))
