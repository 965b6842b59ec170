import { createRoute, z } from '@hono/zod-openapi'
import { createRouter } from '../../middleware/router'
import { dashboardCsp, dashboardHtml } from './page'

const route = createRoute({
  method: 'get',
  path: '/dashboard',
  operationId: 'dashboard',
  summary: 'The operator dashboard (one HTML page; paste a token once)',
  tags: ['Health'],
  responses: { 200: { description: 'The page', content: { 'text/html': { schema: z.string() } } } },
})

export const dashboardRouter = createRouter().openapi(route, (c) =>
  c.html(dashboardHtml, 200, {
    'Content-Security-Policy': dashboardCsp,
    'Cache-Control': 'no-cache',
  }),
)
