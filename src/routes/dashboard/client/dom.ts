/** The page's elements, by id; the page's markup has every one the script asks for. */
export function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const found = document.getElementById(id)
  if (!found) throw new Error(`the page has no #${id}`)
  return found as T
}

export type Child = Node | string | null | undefined
type Attrs = Record<string, string | null | undefined>

/** An element; untrusted text (names, payloads, messages) goes in as text nodes, never markup. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs?: Attrs | null,
  ...kids: Child[]
): HTMLElementTagNameMap[K] {
  const n = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs || {})) if (v != null) n.setAttribute(k, v)
  for (const k of kids) if (k != null) n.append(k)
  return n
}

const entities: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }
/** Untrusted text for markup built as a string (the big tables, for speed). */
export const esc = (s: unknown) => String(s ?? '').replace(/[&<>"']/g, (c) => entities[c] ?? c)

/** The task id of the row (or event line) an event happened in. */
export const rowTask = (e: Event) =>
  e.target instanceof Element ? e.target.closest<HTMLElement>('[data-task-id]')?.dataset.taskId : undefined

/** The status (`data-s`) of the chip an event happened in; '' is "all". */
export const chipStatus = (e: Event) =>
  e.target instanceof Element ? e.target.closest<HTMLElement>('[data-s]')?.dataset.s : undefined
