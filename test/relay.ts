import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net'

/**
 * What the relay does with a connection:
 * - `pass`: relays both ways (to the real server).
 * - `reset`: accepts, then destroys the socket at the client's first bytes (a Postgres
 *   client's startup message): "Connection terminated unexpectedly", no code.
 * - `close`: accepts and ends the connection at once.
 * - `stall`: accepts and never answers; connections already passing stop relaying too, so
 *   their queries hang until the client gives up (a network that went dark).
 * - `{ fatal }`: answers a Postgres startup message with a FATAL ErrorResponse carrying that
 *   SQLSTATE and closes, as a server does when it is starting, shutting down or full.
 */
export type RelayMode = 'pass' | 'reset' | 'close' | 'stall' | { fatal: string; message: string }

/**
 * A TCP relay in front of a real server (Postgres, Redis) that a test can cut, restore and
 * misbehave with, to play a server that dies, stalls or refuses.
 */
export class Relay {
  private server: Server | undefined
  private sockets = new Set<Socket>()
  port = 0
  mode: RelayMode = 'pass'
  /** Sees each chunk a client sends on a passing connection; true destroys that connection. */
  cutWhen: ((chunk: Buffer) => boolean) | undefined

  constructor(
    private readonly host: string,
    private readonly targetPort: number,
  ) {}

  async start(port = 0): Promise<void> {
    this.server = createServer((client) => this.accept(client))
    await new Promise<void>((resolve) => this.server?.listen(port, '127.0.0.1', () => resolve()))
    const a = this.server.address()
    this.port = typeof a === 'object' && a ? a.port : 0
  }

  /** Cuts every connection and stops listening: new ones are refused (ECONNREFUSED). */
  async stop(): Promise<void> {
    this.cutAll()
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()))
    this.server = undefined
  }

  /** Cuts every open connection (clients see their connection end); new ones are accepted. */
  cutAll(): void {
    for (const s of this.sockets) s.destroy()
  }

  private track(s: Socket) {
    this.sockets.add(s)
    s.on('close', () => this.sockets.delete(s))
    s.on('error', () => s.destroy())
  }

  private accept(client: Socket) {
    this.track(client)
    const mode = this.mode
    if (mode === 'close') return void client.end()
    if (mode === 'stall') return void client.on('data', () => {})
    if (mode === 'reset') return void client.once('data', () => client.destroy())
    if (typeof mode === 'object') return void client.once('data', () => client.end(errorResponse(mode)))
    const upstream = tcpConnect(this.targetPort, this.host)
    this.track(upstream)
    const both = () => {
      client.destroy()
      upstream.destroy()
    }
    client.on('close', both)
    upstream.on('close', both)
    client.on('data', (chunk: Buffer) => {
      if (this.mode === 'stall') return
      if (this.cutWhen?.(chunk)) return both()
      upstream.write(chunk)
    })
    upstream.on('data', (chunk: Buffer) => {
      if (this.mode !== 'stall') client.write(chunk)
    })
  }
}

/** A Postgres ErrorResponse ('E') with severity FATAL, the SQLSTATE and the message. */
function errorResponse(e: { fatal: string; message: string }): Buffer {
  const fields = Buffer.concat([
    ...(
      [
        ['S', 'FATAL'],
        ['V', 'FATAL'],
        ['C', e.fatal],
        ['M', e.message],
      ] as const
    ).map(([k, v]) => Buffer.from(`${k}${v}\0`, 'utf8')),
    Buffer.from([0]),
  ])
  const head = Buffer.alloc(5)
  head.write('E', 0)
  head.writeInt32BE(fields.length + 4, 1)
  return Buffer.concat([head, fields])
}
