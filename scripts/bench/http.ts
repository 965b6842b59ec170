import http from 'node:http'
/** JSON calls to the server under test for the phases under scripts/bench/. */
export interface Answer {
  status: number
  // biome-ignore lint/suspicious/noExplicitAny: the bench reads answers field by field
  body: any
}

/**
 * A caller of the server under test over node:http with kept-alive sockets. Not `fetch`:
 * the simulated agents share the machine's two cores with the server and Postgres, and
 * fetch (undici through its web streams) cost them about twice the CPU per request, taken
 * from what the server could use (docs/performance.md, "Steady state").
 */
export function jsonCaller(base: string, token: string) {
  const url = new URL(base)
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1024 })
  return (
    path: string,
    init: { method?: string; token?: string; body?: unknown; signal?: AbortSignal } = {},
  ): Promise<Answer> =>
    new Promise((resolve, reject) => {
      const payload = init.body === undefined ? undefined : JSON.stringify(init.body)
      const req = http.request(
        {
          host: url.hostname,
          port: url.port,
          path,
          agent,
          method: init.method ?? (payload === undefined ? 'GET' : 'POST'),
          headers: {
            authorization: `Bearer ${init.token ?? token}`,
            ...(payload === undefined
              ? {}
              : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
          },
          signal: init.signal,
        },
        (res) => {
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8')
            try {
              resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : null })
            } catch (err) {
              reject(err)
            }
          })
          res.on('error', reject)
        },
      )
      req.on('error', reject)
      req.end(payload)
    })
}

/** The server's own count of statements sent to Postgres (agenticcp_db_statements_total). */
export async function serverStatements(base: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text()
  return Number(/^agenticcp_db_statements_total (\d+)/m.exec(text)?.[1] ?? Number.NaN)
}

export interface Registered {
  id: string
  token: string
}

/** Registers `n` agents and sends each its first heartbeat (online, nothing to report). */
export async function registerAgents(
  call: ReturnType<typeof jsonCaller>,
  n: number,
  spec: { prefix: string; capabilities: string[]; slots: number },
): Promise<Registered[]> {
  const out: Registered[] = []
  const providers = ['aws', 'azure', 'gcp', 'ncp', 'oci', 'alibaba', 'onprem', 'other']
  for (let i = 0; i < n; i++) {
    const r = await call('/api/v1/agents', {
      body: {
        name: `${spec.prefix}-${i}`,
        provider: providers[i % providers.length],
        capabilities: spec.capabilities,
        maxConcurrentTasks: spec.slots,
      },
    })
    if (r.status >= 300) throw new Error(`register: ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`)
    const hb = await call('/api/v1/agents/heartbeat', { token: r.body.token, body: { agentId: r.body.id } })
    if (hb.status !== 200) throw new Error(`first heartbeat: ${hb.status}`)
    out.push({ id: r.body.id, token: r.body.token })
  }
  return out
}
