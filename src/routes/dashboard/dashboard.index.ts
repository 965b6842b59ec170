import { createRoute, z } from '@hono/zod-openapi'
import { createRouter } from '../../middleware/router'
import { dashboardHtml } from './page'

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
    // Only this origin: the page's own inline code, and the API.
    'Content-Security-Policy':
      "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    'Cache-Control': 'no-cache',
  }),
)
