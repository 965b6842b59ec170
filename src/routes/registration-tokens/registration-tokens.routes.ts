import { createRoute, z } from '@hono/zod-openapi'
import { errorResponses as E } from '../../lib/errors'
import { jsonBody as body, jsonContent as json, security } from '../../lib/route-helpers'
import { authenticate, canWrite } from '../../middleware/auth'
import {
  IdParam,
  page,
  paging,
  RegistrationToken,
  RegistrationTokenInput,
  RegistrationTokenWithSecret,
} from '../schemas'

const tags = ['Registration tokens']

export const create = createRoute({
  method: 'post',
  path: '/registration-tokens',
  operationId: 'createRegistrationToken',
  summary: 'Make a registration token',
  description:
    'A token an agent presents (`Authorization: Bearer acpr_…`) to register itself with POST /agents, the only call it can make. ' +
    'The secret is in this answer only (`Cache-Control: no-store`); the service keeps its SHA-256. ' +
    'It works until `expiresAt`, for `maxUses` registrations when set, or until it is deleted. ' +
    'Its `labels` are set on every agent it registers.',
  tags,
  security,
  middleware: [authenticate, canWrite] as const,
  request: { body: body(RegistrationTokenInput) },
  responses: {
    201: json(RegistrationTokenWithSecret, 'The token, with its secret (shown once)'),
    ...E.common,
    ...E.body,
  },
})

export const list = createRoute({
  method: 'get',
  path: '/registration-tokens',
  operationId: 'listRegistrationTokens',
  summary: 'List registration tokens',
  description:
    'Newest first by default; never the secrets. Expired tokens show (`expired: true`) until the sweep prunes them, 7 days after they expired.',
  tags,
  security,
  middleware: [authenticate, canWrite] as const,
  request: { query: z.object(paging) },
  responses: {
    200: json(page(RegistrationToken, 'RegistrationTokenPage'), 'A page of registration tokens'),
    ...E.common,
  },
})

export const remove = createRoute({
  method: 'delete',
  path: '/registration-tokens/{id}',
  operationId: 'deleteRegistrationToken',
  summary: 'Revoke a registration token',
  description: 'Deletes it: from now on it registers nothing (401). Agents it registered keep their own tokens.',
  tags,
  security,
  middleware: [authenticate, canWrite] as const,
  request: { params: IdParam },
  responses: {
    204: { description: 'Revoked' },
    ...E.common,
    ...E.notFound,
  },
})

export type CreateRoute = typeof create
export type ListRoute = typeof list
export type RemoveRoute = typeof remove
