/**
 * A WebSocket→TCP proxy in the shape of Neon's wsproxy, so the Neon serverless driver
 * (the Workers database driver) can reach a plain Postgres in local development and CI:
 * a WebSocket to `ws://HOST:PORT/v1?address=pghost:5432` becomes a TCP connection to
 * pghost:5432, bytes passed through both ways. Loopback only by default.
 *
 *   npx tsx scripts/ws-proxy.ts [--port 5433] [--host 127.0.0.1] [--allow 127.0.0.1:5432]
 *
 * Then point the Worker at it with NEON_WS_PROXY=127.0.0.1:5433 (see .dev.vars.example).
 */
import { createConnection } from 'node:net'
import { parseArgs } from 'node:util'
import { WebSocketServer } from 'ws'

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '5433' },
    host: { type: 'string', default: '127.0.0.1' },
    allow: { type: 'string', default: '127.0.0.1:5432,localhost:5432' },
  },
})
const allowed = new Set((values.allow ?? '').split(',').filter(Boolean))

const wss = new WebSocketServer({ host: values.host, port: Number(values.port) })
wss.on('connection', (ws, req) => {
  const url = new URL(req.url ?? '/', 'http://proxy')
  const address = url.searchParams.get('address') ?? ''
  const [host, port] = address.split(':')
  if (!host || !port || !allowed.has(address)) {
    ws.close(1008, `address ${address || '(none)'} not allowed`)
    return
  }
  const tcp = createConnection({ host, port: Number(port) })
  tcp.setNoDelay(true)
  const pending: Buffer[] = []
  let open = false
  tcp.on('connect', () => {
    open = true
    for (const chunk of pending) tcp.write(chunk)
    pending.length = 0
  })
  ws.on('message', (data: Buffer) => {
    if (open) tcp.write(data)
    else pending.push(data)
  })
  tcp.on('data', (chunk) => ws.send(chunk))
  const end = () => {
    tcp.destroy()
    if (ws.readyState === ws.OPEN) ws.close()
  }
  ws.on('close', end)
  ws.on('error', end)
  tcp.on('close', end)
  tcp.on('error', end)
})
wss.on('listening', () =>
  console.log(`ws-proxy listening on ws://${values.host}:${values.port} → ${[...allowed].join(', ')}`),
)
const stop = () => wss.close(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
