/**
 * Flow control: concurrency keys and fair share. Each rule is written once here, in
 * TypeScript and as SQL side by side; every placement path (the batched heartbeat's fill,
 * the fill after creates, the sweep's placement, POST /tasks/execute) takes the SQL, and
 * every path that ends, requeues or loses a live task gives its key's slot back with
 * `releaseKeysSql`. test/flow-control.test.ts checks the two forms agree.
 *
 * A concurrency key counts the tasks holding it that are assigned or running (its `active`,
 * stored on the key's row of `concurrency_keys`, moved in the same statement as each move
 * that changes it, like an agent's load). A key's limit is the one its newest create named
 * (docs/decisions.md, "Which limit a key has").
 */

/** Longest concurrency or fairness key. */
export const KEY_MAX_LENGTH = 200
/** Highest limit a concurrency key may name. */
export const KEY_LIMIT_MAX = 1_000_000
/**
 * What a key may hold: letters, digits and `. _ : / @ = + -`, starting with a letter or digit
 * (no spaces: a key is printed in pending details and logs as it is).
 */
export const KEY_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:/@=+-]*$/

/** A task's flow-control fields, as the service stores them. */
export interface FlowTask {
  concurrencyKey: string | null
  fairnessKey: string | null
}

/**
 * THE FAIR GROUP: the tenant placement alternates between, within one priority: the task's
 * fairness key, else its concurrency key; none (null) for a task with neither, and those all
 * count as one tenant among the others.
 */
export const fairGroup = (t: FlowTask): string | null => t.fairnessKey ?? t.concurrencyKey ?? null
/** `fairGroup` as SQL over task row `t` (unqualified columns without it). */
export const fairGroupSql = (t?: string) => {
  const p = t ? `${t}.` : ''
  return `coalesce(${p}fairness_key, ${p}concurrency_key)`
}

/**
 * THE ADMISSION RULE: of `wanted` tasks of one key offered to agents at once, best first, the
 * first `granted(active, limit, wanted)` are assigned: as many as the key has room for, never
 * fewer than none (a count already over its limit, after the limit was lowered, admits none).
 */
export const granted = (active: number, limit: number, wanted: number) => Math.min(wanted, Math.max(limit - active, 0))
export const grantedSql = (active: string, limit: string, wanted: string) =>
  `least(${wanted}, greatest(${limit} - ${active}, 0))`

/** The key has no room: its tasks wait (pending reason `concurrency_limit`). */
export const keyFull = (active: number, limit: number) => active >= limit
export const keyFullSql = (active: string, limit: string) => `(${active} >= ${limit})`

/** A key's count less the live tasks that left it (ended, requeued, lost), never below zero. */
export const releasedKey = (active: number, left: number) => Math.max(active - left, 0)
export const releasedKeySql = (active: string, left: string) => `greatest(${active} - ${left}, 0)`

/** Whether task row `t`'s key is full now (false for a task without one). */
export const heldByKeySql = (t: string) =>
  `(${t}.concurrency_key IS NOT NULL AND EXISTS (SELECT 1 FROM concurrency_keys ck
     WHERE ck.key = ${t}.concurrency_key AND ${keyFullSql('ck.active', 'ck.key_limit')}))`

/**
 * The fair order of the queue's heads, over rows with `priority`, `frank` (the row's rank
 * among the rows of its fair group and priority, by age) and `id`: priority first, then one
 * task of each tenant in turn (every tenant's first, then every second…), oldest first among
 * equals. With no keys, `frank` orders as age does: the queue order of src/domain/fit.ts.
 */
export const fairOrderSql = (t: string) => `${t}.priority DESC, ${t}.frank, ${t}.id`

/**
 * Gives back the key slots of the rows of `rows` (a CTE or table with the tasks' columns)
 * that left assigned or running (`where` picks them), keys in order. Never below zero.
 */
export const releaseKeysSql = (rows: string, where = 'true', now = 'now()') => `
  UPDATE concurrency_keys k SET active = ${releasedKeySql('k.active', 'c.n')}, updated_at = ${now}
    FROM (SELECT concurrency_key AS key, count(*)::int AS n FROM ${rows}
           WHERE concurrency_key IS NOT NULL AND (${where}) GROUP BY concurrency_key ORDER BY concurrency_key) c
   WHERE k.key = c.key
  RETURNING 1`

/**
 * Adds or updates the key rows of the task rows `from` (columns concurrency_key,
 * concurrency_limit and an order column `i`): the limit of a key is the one of its newest
 * create (the last row of the batch for that key). Keys in order.
 */
export const upsertKeysSql = (from: string, now: string) => `
  INSERT INTO concurrency_keys (key, key_limit, active, created_at, updated_at)
  SELECT DISTINCT ON (concurrency_key) concurrency_key, concurrency_limit, 0, ${now}, ${now}
    FROM ${from} WHERE concurrency_key IS NOT NULL
   ORDER BY concurrency_key, i DESC
  ON CONFLICT (key) DO UPDATE SET key_limit = excluded.key_limit, updated_at = excluded.updated_at
   WHERE concurrency_keys.key_limit <> excluded.key_limit`
