import { createRouter } from '../../middleware/router'
import * as handlers from './registration-tokens.handlers'
import * as routes from './registration-tokens.routes'

export const registrationTokensRouter = createRouter()
  .openapi(routes.create, handlers.create)
  .openapi(routes.list, handlers.list)
  .openapi(routes.remove, handlers.remove)
