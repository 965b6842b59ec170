/** JSON calls to the server under test for the phases under scripts/bench/. */
export interface Answer {
  status: number
  // biome-ignore lint/suspicious/noExplicitAny: the bench reads answers field by field
  body: any
}

export function jsonCaller(base: string, token: string) {
  return async (
    path: string,
    init: { method?: string; token?: string; body?: unknown; signal?: AbortSignal } = {},
  ): Promise<Answer> => {
    const res = await fetch(`${base}${path}`, {
      method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
      headers: { authorization: `Bearer ${init.token ?? token}`, 'content-type': 'application/json' },
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
      signal: init.signal,
    })
    const text = await res.text()
    return { status: res.status, body: text ? JSON.parse(text) : null }
  }
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
