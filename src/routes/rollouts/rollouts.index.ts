import { createRouter } from '../../middleware/router'
import * as handlers from './rollouts.handlers'
import * as routes from './rollouts.routes'

export const rolloutsRouter = createRouter()
  .openapi(routes.create, handlers.create)
  .openapi(routes.list, handlers.list)
  .openapi(routes.get, handlers.get)
  .openapi(routes.targets, handlers.targets)
  .openapi(routes.wait, handlers.wait)
  .openapi(routes.pause, handlers.pause)
  .openapi(routes.resume, handlers.resume)
  .openapi(routes.cancel, handlers.cancel)
  .openapi(routes.retry, handlers.retry)
