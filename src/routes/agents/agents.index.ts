import { createRouter } from '../../middleware/router'
import * as handlers from './agents.handlers'
import * as routes from './agents.routes'

// Static paths before `/agents/{id}` so `heartbeat` is not read as an id.
export const agentsRouter = createRouter()
  .openapi(routes.create, handlers.create)
  .openapi(routes.list, handlers.list)
  .openapi(routes.heartbeat, handlers.heartbeat)
  .openapi(routes.actions, handlers.actions)
  .openapi(routes.get, handlers.get)
  .openapi(routes.update, handlers.update)
  .openapi(routes.setStatus, handlers.setStatus)
  .openapi(routes.remove, handlers.remove)
  .openapi(routes.token, handlers.token)
  .openapi(routes.drain, handlers.drain)
  .openapi(routes.resume, handlers.resume)
  .openapi(routes.quarantine, handlers.quarantine)
  .openapi(routes.release, handlers.release)
