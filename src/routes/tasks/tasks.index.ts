import { createRouter } from '../../middleware/router'
import * as handlers from './tasks.handlers'
import * as routes from './tasks.routes'

// Static paths before `/tasks/{id}` so `execute` is not read as an id.
export const tasksRouter = createRouter()
  .openapi(routes.create, handlers.create)
  .openapi(routes.createBatch, handlers.createBatch)
  .openapi(routes.list, handlers.list)
  .openapi(routes.execute, handlers.execute)
  .openapi(routes.get, handlers.get)
  .openapi(routes.update, handlers.update)
  .openapi(routes.reportStatus, handlers.reportStatus)
  .openapi(routes.remove, handlers.remove)
  .openapi(routes.cancel, handlers.cancel)
  .openapi(routes.retry, handlers.retry)
