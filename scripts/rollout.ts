/**
 * `npm run rollout -- --name NAME --command 'CMD' [target and strategy flags]`: creates a
 * rollout (docs/rollouts.md) of a `shell` task (or `--type T --payload JSON`) and follows it
 * to its end with a progress line; `npm run rollout -- --follow ID` follows one already made.
 * Exits 0 only when the rollout ends `completed`, 1 when it ends otherwise, 2 for bad usage
 * or a refused request.
 *
 * Target: --labels k=v,k=v --provider P --region R --capabilities a,b --agents id,id
 * Strategy: --max-concurrency N|N% --max-errors N|N% --waves 1,10%,100% --bake SECONDS
 *           --gate (pause between waves) --delivery-timeout SECONDS
 * Task: --timeout SECONDS --max-attempts N --priority N
 * Server: --url URL (default http://127.0.0.1:$PORT, else :8000) --token JWT (default
 * $AGENTICCP_TOKEN, else $TOKEN: an admin or operator token, `npm run token`)
 */
import { parseArgs } from 'node:util'
import { ApiClientError, createClient, ok } from '../src/client'
import { exitCodeOf, followRollout, progressLine, type RolloutView } from '../src/client/rollouts'

const { values } = parseArgs({
  options: {
    name: { type: 'string' },
    command: { type: 'string' },
    type: { type: 'string' },
    payload: { type: 'string' },
    labels: { type: 'string' },
    provider: { type: 'string' },
    region: { type: 'string' },
    capabilities: { type: 'string' },
    agents: { type: 'string' },
    'max-concurrency': { type: 'string' },
    'max-errors': { type: 'string' },
    waves: { type: 'string' },
    bake: { type: 'string' },
    gate: { type: 'boolean', default: false },
    'delivery-timeout': { type: 'string' },
    timeout: { type: 'string' },
    'max-attempts': { type: 'string' },
    priority: { type: 'string' },
    follow: { type: 'string' },
    url: { type: 'string' },
    token: { type: 'string' },
  },
})

function usage(message: string): never {
  console.error(`rollout: ${message}`)
  console.error("usage: npm run rollout -- --name NAME --command 'CMD' [--labels k=v] [--max-concurrency 10%] …")
  console.error('       npm run rollout -- --follow ROLLOUT_ID')
  process.exit(2)
}

/** A count or a percentage, as the API takes it. */
const amount = (flag: string, v: string | undefined) => {
  if (v === undefined) return undefined
  if (/^\d+(\.\d+)?%$/.test(v)) return v
  if (/^\d+$/.test(v)) return Number(v)
  return usage(`${flag} takes a count or a percentage such as 10% (got "${v}")`)
}
const whole = (flag: string, v: string | undefined) => {
  if (v === undefined) return undefined
  if (!/^\d+$/.test(v)) usage(`${flag} takes a whole number (got "${v}")`)
  return Number(v)
}
const list = (v: string | undefined) =>
  v === undefined
    ? undefined
    : v
        .split(',')
        .map((x) => x.trim())
        .filter(Boolean)

function body() {
  if (!values.name) usage('--name is required')
  if (!values.command && !values.type) usage('--command (a shell rollout) or --type is required')
  let payload: unknown = values.command ? { command: values.command } : {}
  if (values.payload !== undefined) {
    try {
      payload = JSON.parse(values.payload)
    } catch {
      usage('--payload is not JSON')
    }
  }
  const labels = list(values.labels)?.map((kv) => {
    const at = kv.indexOf('=')
    if (at < 1) usage(`--labels takes k=v pairs (got "${kv}")`)
    return [kv.slice(0, at), kv.slice(at + 1)]
  })
  const drop = <T extends Record<string, unknown>>(o: T) =>
    Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T
  return {
    name: values.name as string,
    task: drop({
      type: values.type ?? 'shell',
      payload,
      timeoutSeconds: whole('--timeout', values.timeout),
      maxAttempts: whole('--max-attempts', values['max-attempts']),
      priority: whole('--priority', values.priority),
    }),
    target: drop({
      labels: labels ? Object.fromEntries(labels) : undefined,
      provider: values.provider,
      region: values.region,
      capabilities: list(values.capabilities),
      agentIds: list(values.agents),
    }),
    strategy: drop({
      maxConcurrency: amount('--max-concurrency', values['max-concurrency']),
      maxErrors: amount('--max-errors', values['max-errors']),
      waves: list(values.waves)?.map((w) => ({ size: amount('--waves', w) as number | string })),
      bakeSeconds: whole('--bake', values.bake),
      pauseBetweenWaves: values.gate || undefined,
      deliveryTimeoutSeconds: whole('--delivery-timeout', values['delivery-timeout']),
    }),
  }
}

async function main(): Promise<number> {
  const token = values.token ?? process.env.AGENTICCP_TOKEN ?? process.env.TOKEN
  if (!token) usage('no token: pass --token, or set AGENTICCP_TOKEN (`npm run token -- --role operator`)')
  const url = values.url ?? `http://127.0.0.1:${process.env.PORT ?? '8000'}`
  const api = createClient({ url, token })
  let id = values.follow
  if (!id) {
    const made: RolloutView = await ok(api.api.v1.rollouts.$post({ json: body() as never, header: {} }))
    id = made.id
    console.log(
      `rollout ${made.id}: ${made.targetCount} target${made.targetCount === 1 ? '' : 's'}, waves ${made.waves.join(' + ')}`,
    )
  }
  let last = ''
  const end = await followRollout(
    api,
    id,
    (r) => {
      const line = progressLine(r)
      if (line !== last) console.log(line)
      last = line
    },
    2,
  )
  return exitCodeOf(end)
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof ApiClientError) {
      const errors = (err.body.errors as { path: string; message: string }[] | undefined) ?? []
      console.error(`rollout: ${err.status} ${String(err.body.detail ?? err.message)}`)
      for (const e of errors) console.error(`  ${e.path}: ${e.message}`)
    } else console.error(`rollout: ${err instanceof Error ? err.message : String(err)}`)
    process.exit(2)
  },
)
