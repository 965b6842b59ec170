import type { z } from '@hono/zod-openapi'

export const security = [{ bearerAuth: [] }]

/** A JSON response entry for a route's `responses`. */
export const jsonContent = <T extends z.ZodType>(schema: T, description: string) => ({
  description,
  content: { 'application/json': { schema } },
})

/** A required JSON request body: a request without a JSON content type is refused, not read as `{}`. */
export const jsonBody = <T extends z.ZodType>(schema: T) => ({
  required: true,
  content: { 'application/json': { schema } },
})
