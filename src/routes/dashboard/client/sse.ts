/**
 * Server-Sent Events read from a fetch response's body (EventSource cannot send the
 * Authorization header): calls on(event, id, data) for each message with data, until the
 * stream ends.
 */
export async function readSSE(
  body: ReadableStream<Uint8Array>,
  on: (type: string, id: string | null, data: string) => void,
): Promise<void> {
  const reader = body.getReader()
  const dec = new TextDecoder()
  let buf = ''
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return
    buf += dec.decode(value, { stream: true }).replace(/\r\n?/g, '\n')
    for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
      const block = buf.slice(0, i)
      buf = buf.slice(i + 2)
      let id: string | null = null
      let type = 'message'
      let data: string | null = null
      for (const line of block.split('\n')) {
        const c = line.indexOf(':')
        const field = c < 0 ? line : line.slice(0, c)
        const v = c < 0 ? '' : line.slice(c + (line[c + 1] === ' ' ? 2 : 1))
        if (field === 'id') id = v
        else if (field === 'event') type = v
        else if (field === 'data') data = data === null ? v : `${data}\n${v}`
      }
      if (data !== null) on(type, id, data)
    }
  }
}
