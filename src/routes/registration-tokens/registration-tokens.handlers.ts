import { type AppRouteHandler, serviceDeps as svc } from '../../middleware/context'
import * as tokens from '../../services/registration-tokens'
import type { CreateRoute, ListRoute, RemoveRoute } from './registration-tokens.routes'

export const create: AppRouteHandler<CreateRoute> = async (c) => {
  const deps = svc(c)
  const { row, token } = await tokens.createRegistrationToken(deps, c.req.valid('json'), c.var.principal.sub)
  // The answer holds a credential: no cache (browser, proxy) may keep it.
  c.header('Cache-Control', 'no-store')
  return c.json({ ...tokens.toRegistrationTokenDto(row, deps.clock.now(), c.var.logger), token }, 201)
}

export const list: AppRouteHandler<ListRoute> = async (c) => {
  const deps = svc(c)
  const result = await tokens.listRegistrationTokens(deps.db, c.req.valid('query'))
  const now = deps.clock.now()
  return c.json(
    {
      items: result.items.map((row) => tokens.toRegistrationTokenDto(row, now, c.var.logger)),
      nextCursor: result.nextCursor,
    },
    200,
  )
}

export const remove: AppRouteHandler<RemoveRoute> = async (c) => {
  await tokens.deleteRegistrationToken(svc(c).db, c.req.valid('param').id)
  return c.body(null, 204)
}
