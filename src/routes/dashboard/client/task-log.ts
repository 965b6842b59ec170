/**
 * The open task's log (GET /tasks/{id}/logs): what is stored, then, while the attempt is
 * live, followed on its event stream (read with fetch, resumed with Last-Event-ID after a
 * drop, ended by 'event: end'). Chunks go in as text nodes (the output is untrusted); the
 * page keeps the newest MAX_LOG_CHUNKS. It scrolls with the output while the reader is at
 * the bottom, and stays put once they scroll up.
 */
import { apiFetch } from './api'
import { $, el } from './dom'
import { num } from './format'
import { readSSE } from './sse'
import { detail } from './state'
import type { LogChunk, Task } from './types'

const MAX_LOG_CHUNKS = 5000
const LOG_PAGE = 1000
const LOG_RETRIES = 5
const STREAMS = new Set(['stdout', 'stderr', 'system'])
const stateText = {
  loading: 'loading…',
  live: 'live',
  reconnecting: 'reconnecting…',
  ended: 'ended',
  error: 'could not be read',
  lost: 'connection lost, reopen to retry',
}
type LogState = keyof typeof stateText | ''

const box = () => $('task-log')
const jump = () => $('td-log-jump')

/** The read under way (its controller), and for which task and attempt (null: the latest). */
let ctl: AbortController | null = null
let logId: string | null = null
let attempt: number | null = null
/** The reader chose the attempt: a new attempt of the task does not replace it. */
let pinned = false
let latest = 0
/** The last seq shown (where a resume starts). */
let last = -1
let state: LogState = ''
let stateLabel = ''
/** Chunks on screen, and chunks let go of (the oldest, past MAX_LOG_CHUNKS). */
let count = 0
let cut = 0
let stick = true
let queue: LogChunk[] = []
let timer: number | undefined

function setState(next: LogState, text: string) {
  state = next
  stateLabel = text
  box().dataset.state = next
  const chunks = count + cut ? `${num(count + cut)} chunk${count + cut === 1 ? '' : 's'}` : ''
  $('td-log-state').textContent = [text, chunks].filter(Boolean).join(' · ')
}

function stop() {
  ctl?.abort()
  ctl = null
  clearTimeout(timer)
  timer = undefined
  queue = []
}

function renderAttempts() {
  const sel = $<HTMLSelectElement>('td-log-attempt')
  const n = Math.max(latest, attempt || 0)
  sel.hidden = n <= 1
  if (sel.hidden) return
  if (sel.options.length !== n)
    sel.replaceChildren(
      ...Array.from({ length: n }, (_, i) => n - i).map((a) =>
        el('option', { value: String(a) }, `attempt ${a}${a === n ? ' (latest)' : ''}`),
      ),
    )
  sel.value = String(attempt)
}

/** attempt: a number, or null for the task's latest. */
function open(id: string, which: number | null) {
  stop()
  const mine = new AbortController()
  ctl = mine
  logId = id
  attempt = which
  last = -1
  count = 0
  cut = 0
  stick = true
  const b = box()
  b.replaceChildren()
  b.dataset.attempt = which == null ? '' : String(which)
  jump().hidden = true
  setState('loading', stateText.loading)
  load(id, mine)
    .catch(() => {
      if (!mine.signal.aborted) setState('error', stateText.error)
    })
    .finally(() => {
      if (ctl === mine) ctl = null
    })
}

const logPath = (id: string, which: number | null) =>
  `/tasks/${encodeURIComponent(id)}/logs?${which == null ? '' : `attempt=${which}&`}`

async function load(id: string, mine: AbortController) {
  let live = false
  for (;;) {
    const res = await apiFetch(`${logPath(id, attempt)}limit=${LOG_PAGE}&after=${last}`, { signal: mine.signal })
    if (res.status === 404) {
      setState('error', 'no such task')
      return
    }
    if (!res.ok) throw new Error(`logs ${res.status}`)
    const p: { attempt: number; items: LogChunk[]; live: boolean } = await res.json()
    if (mine.signal.aborted) return
    if (attempt == null) {
      attempt = p.attempt
      box().dataset.attempt = String(p.attempt)
    }
    latest = Math.max(latest, p.attempt, detail.task?.attempt || 0)
    renderAttempts()
    addChunks(p.items)
    live = p.live
    if (p.items.length < LOG_PAGE) break
  }
  if (!live) {
    flush()
    setState('ended', count + cut ? stateText.ended : 'no output')
    return
  }
  await follow(id, mine)
}

async function follow(id: string, mine: AbortController) {
  const signal = mine.signal
  for (let tries = 0; !signal.aborted; ) {
    let ended = false
    let opened = 0
    try {
      const res = await apiFetch(logPath(id, attempt).replace(/[?&]$/, ''), {
        accept: 'text/event-stream',
        lastEventId: last >= 0 ? String(last) : undefined,
        signal,
      })
      if (res.status === 404 || res.status === 401 || res.status === 403) {
        setState('error', `${stateText.error} (${res.status})`)
        return
      }
      if (!res.ok || !res.body) throw new Error(`log stream ${res.status}`)
      setState('live', stateText.live)
      opened = Date.now()
      await readSSE(res.body, (type, _id, data) => {
        if (type === 'end') {
          ended = true
          return
        }
        if (!STREAMS.has(type)) return
        tries = 0
        addChunks([JSON.parse(data)])
      })
    } catch {
      if (signal.aborted) return
    }
    if (ended || signal.aborted) break
    // A connection that held a while (past a keep-alive) before it dropped starts the count afresh.
    if (opened && Date.now() - opened > 20000) tries = 0
    if (++tries > LOG_RETRIES) {
      flush()
      setState('lost', stateText.lost)
      return
    }
    setState('reconnecting', stateText.reconnecting)
    await new Promise<void>((r) => {
      const t = setTimeout(r, 500 * 2 ** (tries - 1))
      signal.addEventListener(
        'abort',
        () => {
          clearTimeout(t)
          r()
        },
        { once: true },
      )
    })
  }
  if (signal.aborted) return
  flush()
  setState('ended', stateText.ended)
}

/**
 * Chunks arrive in seq order; one already shown (a resume's overlap) is skipped. They are
 * drawn in batches, so a burst is one layout.
 */
function addChunks(items: LogChunk[]) {
  for (const c of items) {
    if (c.seq <= last) continue
    last = c.seq
    queue.push(c)
  }
  if (queue.length > MAX_LOG_CHUNKS) {
    cut += queue.length - MAX_LOG_CHUNKS
    queue.splice(0, queue.length - MAX_LOG_CHUNKS)
  }
  if (queue.length && !timer) timer = setTimeout(flush, 40)
}

function flush() {
  clearTimeout(timer)
  timer = undefined
  if (!queue.length) return
  const b = box()
  const frag = document.createDocumentFragment()
  for (const c of queue)
    frag.append(el('span', { class: STREAMS.has(c.stream) ? c.stream : 'stdout', 'data-seq': String(c.seq) }, c.data))
  count += queue.length
  queue = []
  const before = b.scrollHeight
  b.append(frag)
  if (count > MAX_LOG_CHUNKS) {
    const first = b.querySelector('.cut') ? 1 : 0
    const drop = count - MAX_LOG_CHUNKS
    for (let i = 0; i < drop; i++) b.children[first]?.remove()
    count -= drop
    cut += drop
  }
  if (cut) {
    let note = b.querySelector('.cut')
    if (!note) {
      note = el('span', { class: 'cut' })
      b.prepend(note)
    }
    note.textContent = `${num(cut)} earlier chunk${cut === 1 ? ' is' : 's are'} not shown here (only the newest ${num(MAX_LOG_CHUNKS)} are kept): read them from GET /api/v1/tasks/${logId}/logs?attempt=${attempt}.`
  }
  if (stick) b.scrollTop = b.scrollHeight
  else {
    jump().hidden = false
    if (cut) b.scrollTop -= Math.max(0, before - b.scrollHeight)
  }
  setState(state, stateLabel)
}

/** The log of a task whose detail just opened: its latest attempt (`known`: the latest seen so far). */
export function showLog(id: string, known: number) {
  pinned = false
  latest = known
  open(id, null)
}

/** The detail closed: the log is let go of (a stream's request ends). */
export function closeLog() {
  stop()
  logId = null
}

/**
 * As the open task moves on: a new attempt is shown (unless the reader chose one), and an
 * attempt that became live again (placed, then started) is followed.
 */
export function syncLog(t: Task) {
  if (t.id !== logId || attempt == null || state === 'loading') return
  if (t.attempt > latest) {
    latest = t.attempt
    renderAttempts()
  }
  const live = t.status === 'assigned' || t.status === 'running'
  if (!pinned && t.attempt !== attempt) open(t.id, null)
  else if (t.attempt === attempt && live && !ctl && state !== 'lost') {
    const mine = new AbortController()
    ctl = mine
    follow(t.id, mine)
      .catch(() => {})
      .finally(() => {
        if (ctl === mine) ctl = null
      })
  }
}

export function wireTaskLog() {
  const b = box()
  // At the bottom (within a few pixels) the log follows the output; scrolled up, it stays.
  b.addEventListener('scroll', () => {
    stick = b.scrollTop + b.clientHeight >= b.scrollHeight - 4
    if (stick) jump().hidden = true
  })
  jump().addEventListener('click', () => {
    stick = true
    b.scrollTop = b.scrollHeight
    jump().hidden = true
  })
  $<HTMLSelectElement>('td-log-attempt').addEventListener('change', (e) => {
    if (detail.id) {
      pinned = true
      open(detail.id, Number((e.currentTarget as HTMLSelectElement).value))
    }
  })
}
