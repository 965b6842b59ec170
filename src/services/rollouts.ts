import { and, desc, eq, inArray, lt, sql } from 'drizzle-orm'
import { v7 as uuidv7 } from 'uuid'
import { type Db, rowsOf, type Tx } from '../db/client'
import { bind, pgTextArray } from '../db/fragments'
import { fillNew, hot } from '../db/hot'
import { type RolloutRow, type RolloutTargetSpec, rollouts, rolloutTargets } from '../db/schema'
import { withTx } from '../db/tx'
import { releaseKeysSql } from '../domain/concurrency'
import { agentColumns, FIT_RULE, meetsRequirementsSql } from '../domain/fit'
import {
  decide,
  endedTargetStatuses,
  errorsOf,
  errorTargetStatuses,
  inFlightTargetStatuses,
  NOT_TARGETED,
  type ResolvedStrategy,
  type RolloutDecision,
  type RolloutStatus,
  resolveStrategy,
  resume as resumeRule,
  type StrategyInput,
  sqlList,
  type TargetCounts,
  type TargetStatus,
  targetStatusOfTaskSql,
  waveOfIndex,
  zeroCounts,
} from '../domain/rollouts'
import { SHELL_TASK_TYPE, ShellPayload } from '../domain/shell'
import {
  cancelAsksSql,
  cancelEndsSql,
  cancelReleasesSql,
  cancelSet,
  releaseSlots,
  requestCancelSet,
} from '../domain/sql'
import { ApiError } from '../lib/errors'
import { decodeCursor, page } from '../lib/pagination'
import { changed, type ServiceDeps } from './deps'
import { recordAssignments } from './placement'

/**
 * Rollouts (docs/rollouts.md): one task on every agent of a target set frozen at creation,
 * in waves, within an error budget. The rules are src/domain/rollouts.ts; this is the
 * controller that applies them. A target is dispatched as an ordinary task pinned to its
 * agent (`req_agent_id`) and carrying `rollout_id`; the controller advances a rollout —
 * its targets follow their tasks, then it decides (`decide`) and applies the decision —
 * on its creation, after every report of one of its tasks (in the same request), on its
 * controls, and in the sweep (bake timers, delivery timeouts). Every advance locks the
 * rollout's row first, so concurrent reports of one rollout's tasks are serialised and
 * never dispatch past maxConcurrency.
 */

export interface RolloutInput {
  name: string
  description?: string | null
  task: { type: string; payload?: unknown; timeoutSeconds?: number; maxAttempts?: number; priority?: number }
  target: RolloutTargetSpec
  strategy: StrategyInput
}

const IN_FLIGHT = sqlList(inFlightTargetStatuses)
const ERRORS = sqlList(errorTargetStatuses)
const ENDED = sqlList(endedTargetStatuses)

/** ----- Creation ----- */

const TYPE_RULE = FIT_RULE.find((r) => r.name === 'type')
if (!TYPE_RULE) throw new Error('the fit rule has no type requirement')

/**
 * The agents a target selects, by the fit rule's requirements (capabilities, provider,
 * region, labels; pinning and declines aside) and the ids asked for (null: any), in id
 * order, each with whether it runs the type. An agent an operator took out of service
 * (`draining`, `maintenance`, `quarantined`) is not a target; an offline one is, and ends undeliverable
 * if it stays away.
 */
const MATCHING_AGENTS = `
SELECT a.id, a.name, ${TYPE_RULE.sql(agentColumns('a'), { type: '{{type}}::text' } as never)} AS runs
  FROM agents a
 WHERE ${meetsRequirementsSql(
   agentColumns('a'),
   {
     type: '{{type}}::text',
     declinedBy: "'{}'::uuid[]",
     capabilities: '{{capabilities}}::text[]',
     provider: '{{provider}}::text',
     region: '{{region}}::text',
     labels: '{{labels}}::jsonb',
     agentId: 'NULL::uuid',
   },
   'type',
 )}
   AND a.status NOT IN (${sqlList(NOT_TARGETED)})
   AND ({{ids}}::uuid[] IS NULL OR a.id = ANY({{ids}}::uuid[]))
 ORDER BY a.id`

/** What an idempotent create hashes: the request, defaults applied. */
async function requestHash(input: RolloutInput, retryOf: string | null): Promise<string> {
  const text = JSON.stringify([input, retryOf])
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text))
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('')
}

const unprocessable = (detail: string, errors: { path: string; message: string }[]) =>
  new ApiError('validation_failed', detail, { errors })

/**
 * Creates a rollout: freezes its target set (every matching agent that runs the task's
 * type), resolves its strategy against the target count, writes the rollout, its targets
 * and `rollout.created` in one transaction with the first dispatch, then places the
 * dispatched tasks. 422 (nothing written) for an empty target set, a type no target runs,
 * or a strategy that does not fit the target count. With an idempotency key, a repeat of
 * the request answers the rollout the first made (`created: false`).
 */
export async function createRollout(
  deps: ServiceDeps,
  input: RolloutInput,
  by: string,
  opts: { idempotencyKey?: string; retryOf?: string | null } = {},
): Promise<{ rollout: RolloutRow; created: boolean }> {
  const retryOf = opts.retryOf ?? null
  const key = opts.idempotencyKey
  const hash = key ? await requestHash(input, retryOf) : null
  if (key) {
    const prior = await priorFor(deps.db, by, key, hash)
    if (prior) return { rollout: prior, created: false }
  }
  const now = deps.clock.now()
  const id = uuidv7()
  const target = input.target
  const made = await withTx(deps.db, async (tx) => {
    const agents = await rowsOf<{ id: string; name: string; runs: boolean }>(
      tx,
      bind(MATCHING_AGENTS, {
        type: input.task.type,
        capabilities: pgTextArray(target.capabilities ?? []),
        provider: target.provider ?? null,
        region: target.region ?? null,
        labels: JSON.stringify(target.labels ?? {}),
        ids: target.agentIds ? `{${target.agentIds.join(',')}}` : null,
      }),
    )
    if (agents.length === 0) {
      throw unprocessable('No registered agent matches the target: the target set would be empty.', [
        { path: 'body.target', message: 'matches no agent' },
      ])
    }
    const runs = agents.filter((a) => a.runs)
    if (runs.length === 0) {
      throw unprocessable(
        `None of the ${agents.length} agents the target matches runs tasks of type ${input.task.type}.`,
        [{ path: 'body.task.type', message: `no target runs type ${input.task.type}` }],
      )
    }
    const strategy = resolveStrategy(input.strategy, runs.length)
    if ('problems' in strategy) {
      throw unprocessable(`The strategy does not fit the ${runs.length} targets.`, strategy.problems)
    }
    const [row] = await rowsOf<{ id: string }>(
      tx,
      bind(INSERT_ROLLOUT, {
        id,
        name: input.name,
        description: input.description ?? null,
        type: input.task.type,
        payload: JSON.stringify(input.task.payload ?? {}),
        timeout: input.task.timeoutSeconds ?? 300,
        maxAttempts: input.task.maxAttempts ?? 1,
        priority: input.task.priority ?? 5,
        target: JSON.stringify(target),
        strategy: JSON.stringify(input.strategy),
        maxConcurrency: strategy.maxConcurrency,
        maxErrors: strategy.maxErrors,
        waves: `{${strategy.waves.join(',')}}`,
        bake: strategy.bakeSeconds,
        gate: strategy.pauseBetweenWaves,
        delivery: strategy.deliveryTimeoutSeconds,
        count: runs.length,
        retryOf,
        key: key ?? null,
        owner: key ? by : null,
        hash,
        by,
        now,
        agentIds: `{${runs.map((a) => a.id).join(',')}}`,
        agentNames: JSON.stringify(runs.map((a) => a.name)),
        agentWaves: `{${runs.map((_, i) => waveOfIndex(i, strategy.waves)).join(',')}}`,
      }),
    )
    // Its key was taken meanwhile by a request like it: that one's rollout is the answer.
    if (!row) return null
    const step = await advance(tx, id, now)
    return { strategy, step }
  })
  if (!made) {
    const prior = key ? await priorFor(deps.db, by, key, hash) : undefined
    if (!prior) throw new ApiError('conflict', 'The idempotency key is in use by a rollout being created; try again.')
    return { rollout: prior, created: false }
  }
  deps.metrics?.rolloutsCreated.inc({})
  await afterAdvance(deps, [made.step])
  return { rollout: await getRollout(deps.db, id), created: true }
}

async function priorFor(db: Db, owner: string, key: string, hash: string | null): Promise<RolloutRow | undefined> {
  const [prior] = await db
    .select()
    .from(rollouts)
    .where(and(eq(rollouts.idempotencyOwner, owner), eq(rollouts.idempotencyKey, key)))
  if (prior && prior.idempotencyHash !== hash) {
    throw new ApiError(
      'idempotency_key_reused',
      `Idempotency key "${key}" was used for a different request (rollout ${prior.id}); use a new key for a new rollout.`,
      { errors: [{ path: 'header.idempotency-key', message: 'already used for a different request' }] },
    )
  }
  return prior
}

/** The rollout, its targets (agents in id order, each with its wave) and `rollout.created`, in one statement. */
const INSERT_ROLLOUT = `
WITH ro AS (
  INSERT INTO rollouts (id, name, description, status, task_type, task_payload, task_timeout_seconds, task_max_attempts,
                        task_priority, target, strategy, max_concurrency, max_errors, waves, bake_seconds,
                        pause_between_waves, delivery_timeout_seconds, target_count, wave, wave_started_at, retry_of,
                        idempotency_key, idempotency_owner, idempotency_hash, created_by, created_at, updated_at)
  VALUES ({{id}}::uuid, {{name}}, {{description}}, 'running', {{type}}, {{payload}}::jsonb, {{timeout}}::int,
          {{maxAttempts}}::int, {{priority}}::smallint, {{target}}::jsonb, {{strategy}}::jsonb, {{maxConcurrency}}::int,
          {{maxErrors}}::int, {{waves}}::int[], {{bake}}::int, {{gate}}::boolean, {{delivery}}::int, {{count}}::int, 1,
          {{now}}::timestamptz, {{retryOf}}::uuid, {{key}}, {{owner}}, {{hash}}, {{by}}, {{now}}::timestamptz,
          {{now}}::timestamptz)
  ON CONFLICT (idempotency_owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
  RETURNING id
), tg AS (
  INSERT INTO rollout_targets (rollout_id, agent_id, agent_name, ordinal, wave)
  SELECT ro.id, a.id, n.name, a.k - 1, w.wave
    FROM ro, unnest({{agentIds}}::uuid[]) WITH ORDINALITY AS a(id, k)
    JOIN jsonb_array_elements_text({{agentNames}}::jsonb) WITH ORDINALITY AS n(name, k) ON n.k = a.k
    JOIN unnest({{agentWaves}}::int[]) WITH ORDINALITY AS w(wave, k) ON w.k = a.k
  RETURNING 1
), ev AS (
  INSERT INTO events (type, data, created_at)
  SELECT 'rollout.created', jsonb_build_object('rolloutId', ro.id, 'name', {{name}}::text, 'targetCount', {{count}}::int,
         'retryOf', {{retryOf}}::uuid), {{now}}::timestamptz FROM ro
  RETURNING 1
)
SELECT ro.id, (SELECT count(*) FROM tg) AS targets FROM ro`

/** ----- The controller ----- */

/** What one advance did, for what follows its commit (placement, caches, metrics, wake-ups). */
interface Step {
  rolloutId: string
  decision: RolloutDecision
  /** The tasks it dispatched (pinned to these agents). */
  dispatched: { taskId: string; agentId: string }[]
  /** Targets that ended in it, by status. */
  ended: TargetStatus[]
  /** Tasks it cancelled or asked to cancel (delivery timeouts, a cancel), and their agents. */
  touched: { tasks: string[]; agents: string[] }
}

/**
 * Under the rollout's lock (taken by the statement before), makes its targets follow their
 * tasks, and returns what the decision reads. Targets in flight only (at most maxConcurrency of them) are looked at; the counts
 * it needs come from the index on (rollout, status, wave). A target whose task is gone
 * (deleted by hand) counts as cancelled.
 */
const SYNC = `
WITH r AS (
  SELECT * FROM rollouts WHERE id = {{id}}::uuid
), moved AS (
  SELECT rt.agent_id, rt.status AS was, coalesce(${targetStatusOfTaskSql('t')}, 'cancelled') AS next,
         coalesce(t.attempt, rt.attempt) AS attempt, t.finished_at
    FROM r JOIN rollout_targets rt ON rt.rollout_id = r.id AND rt.status IN (${IN_FLIGHT})
    LEFT JOIN tasks t ON t.id = rt.task_id
   WHERE coalesce(${targetStatusOfTaskSql('t')}, 'cancelled') <> rt.status OR coalesce(t.attempt, rt.attempt) <> rt.attempt
), synced AS (
  UPDATE rollout_targets rt
     SET status = m.next, attempt = m.attempt,
         ended_at = CASE WHEN m.next IN (${ENDED}) THEN coalesce(m.finished_at, {{now}}::timestamptz) END
    FROM moved m WHERE rt.rollout_id = {{id}}::uuid AND rt.agent_id = m.agent_id
  RETURNING rt.agent_id
), cur AS (
  SELECT coalesce(m.next, rt.status) AS status, rt.wave
    FROM rollout_targets rt LEFT JOIN moved m ON m.agent_id = rt.agent_id
   WHERE rt.rollout_id = {{id}}::uuid AND rt.status IN (${IN_FLIGHT})
)
SELECT to_jsonb(r) AS rollout,
  (SELECT count(*)::int FROM cur WHERE status IN (${IN_FLIGHT})) AS in_flight,
  (SELECT count(*)::int FROM rollout_targets x WHERE x.rollout_id = r.id AND x.status IN (${ERRORS}))
    + (SELECT count(*)::int FROM moved WHERE next IN (${ERRORS})) AS errors,
  -- Bounded: the decision needs no more than maxConcurrency of them, and of later waves only
  -- whether there is one, so an advance never counts a large rollout's waiting targets.
  (SELECT count(*)::int FROM (SELECT 1 FROM rollout_targets x
     WHERE x.rollout_id = r.id AND x.status = 'waiting' AND x.wave <= r.wave LIMIT r.max_concurrency) w)
    AS waiting_started,
  (SELECT count(*)::int FROM (SELECT 1 FROM rollout_targets x
     WHERE x.rollout_id = r.id AND x.status = 'waiting' AND x.wave > r.wave LIMIT 1) w)
    AS waiting_later,
  coalesce((SELECT jsonb_agg(next) FROM moved WHERE next IN (${ENDED})), '[]'::jsonb) AS ended,
  (SELECT count(*) FROM synced) AS synced
FROM r`

/**
 * Applies a decision: the rollout row, the waiting targets skipped, and up to `{{ids}}`'s
 * length of the waiting targets of started waves (wave, then target order) dispatched as
 * tasks pinned to their agents, with their `task.created` events and the decision's
 * `rollout.*` events.
 */
const APPLY = `
WITH ro AS (
  UPDATE rollouts SET status = {{status}}, wave = {{wave}}::int,
         wave_started_at = CASE WHEN {{wave}}::int <> wave THEN {{now}}::timestamptz ELSE wave_started_at END,
         wave_ended_at = {{waveEndedAt}}::timestamptz, ended_at = {{endedAt}}::timestamptz,
         version = version + 1, updated_at = {{now}}::timestamptz
   WHERE id = {{id}}::uuid
  RETURNING *
), skip AS (
  UPDATE rollout_targets SET status = 'skipped', ended_at = {{now}}::timestamptz
   WHERE rollout_id = {{id}}::uuid AND status = 'waiting' AND {{skip}}::boolean
  RETURNING 1
), pick AS (
  SELECT rt.agent_id, row_number() OVER (ORDER BY rt.wave, rt.ordinal) AS n
    FROM rollout_targets rt
   WHERE rt.rollout_id = {{id}}::uuid AND rt.status = 'waiting' AND rt.wave <= {{wave}}::int AND NOT {{skip}}::boolean
   ORDER BY rt.wave, rt.ordinal
   LIMIT cardinality({{ids}}::uuid[])
), ins AS (
  INSERT INTO tasks (id, name, type, payload, priority, req_agent_id, max_attempts, timeout_seconds, available_at,
                     rollout_id, status, created_at, updated_at)
  SELECT ({{ids}}::uuid[])[p.n], ro.name, ro.task_type, ro.task_payload, ro.task_priority, p.agent_id,
         ro.task_max_attempts, ro.task_timeout_seconds, {{now}}::timestamptz, ro.id, 'pending', {{now}}::timestamptz,
         {{now}}::timestamptz
    FROM pick p CROSS JOIN ro ORDER BY p.n
  RETURNING id, req_agent_id, name, type, priority
), upd AS (
  UPDATE rollout_targets rt SET status = 'dispatched', task_id = i.id, dispatched_at = {{now}}::timestamptz
    FROM ins i WHERE rt.rollout_id = {{id}}::uuid AND rt.agent_id = i.req_agent_id
  RETURNING 1
), ev AS (
  INSERT INTO events (type, agent_id, task_id, data, created_at)
  SELECT e.type, e.agent_id, e.task_id, e.data, {{now}}::timestamptz FROM (
    SELECT 0 AS k, 'task.created' AS type, NULL::uuid AS agent_id, i.id AS task_id,
           jsonb_build_object('name', i.name, 'type', i.type, 'priority', i.priority, 'rolloutId', {{id}}::uuid) AS data
      FROM ins i
    UNION ALL
    SELECT 1, 'rollout.' || x.type, NULL::uuid, NULL::uuid, x.data || jsonb_build_object('rolloutId', {{id}}::uuid)
      FROM jsonb_to_recordset({{events}}::jsonb) AS x(type text, data jsonb)
  ) e ORDER BY e.k, e.task_id
  RETURNING 1
)
SELECT coalesce((SELECT jsonb_agg(jsonb_build_object('taskId', id, 'agentId', req_agent_id)) FROM ins), '[]'::jsonb)
         AS dispatched,
       (SELECT count(*) FROM skip) AS skipped, (SELECT count(*) FROM upd) AS marked, (SELECT count(*) FROM ev) AS events`

interface SyncRow {
  rollout: Record<string, unknown>
  in_flight: number
  errors: number
  waiting_started: number
  waiting_later: number
  ended: TargetStatus[]
}

const asDate = (v: unknown) => (v === null || v === undefined ? null : new Date(v as string))

/** Locks the rollout's row for the rest of the transaction: every advance and control takes it first. */
const lockRollout = (tx: Tx, id: string) => tx.execute(sql`SELECT 1 FROM rollouts WHERE id = ${id} FOR UPDATE`)

/** One advance of rollout `id` in transaction `tx` (which the lock of its row then spans). */
async function advance(
  tx: Tx,
  id: string,
  now: Date,
  pre?: Partial<Step['touched']> & { undeliverable?: number },
): Promise<Step> {
  // The row lock first, in a statement of its own: the reads that follow then see every
  // advance committed before this one got the lock (a statement reads the snapshot taken
  // when it began, so a lock taken inside SYNC would count targets as they were before
  // the advance it waited for, and dispatch past maxConcurrency).
  await lockRollout(tx, id)
  const [s] = await rowsOf<SyncRow>(tx, bind(SYNC, { id, now }))
  if (!s) throw new ApiError('not_found', `No rollout with id ${id}.`)
  const r = s.rollout
  const decision = decide(
    {
      status: r.status as RolloutStatus,
      wave: Number(r.wave),
      waveCount: (r.waves as number[]).length,
      waveEndedAt: asDate(r.wave_ended_at),
      bakeSeconds: Number(r.bake_seconds),
      pauseBetweenWaves: Boolean(r.pause_between_waves),
      maxConcurrency: Number(r.max_concurrency),
      maxErrors: Number(r.max_errors),
      errors: s.errors,
      inFlight: s.in_flight,
      waitingStarted: s.waiting_started,
      waitingLater: s.waiting_later,
      endedAt: asDate(r.ended_at),
    },
    now,
  )
  const events = decision.events.map((type) => ({
    type,
    data:
      type === 'wave_started'
        ? { wave: decision.wave }
        : type === 'budget_exceeded'
          ? { errors: s.errors, maxErrors: Number(r.max_errors) }
          : type === 'paused'
            ? { reason: 'gate', wave: decision.wave }
            : { status: decision.status },
  }))
  const unchanged =
    decision.status === r.status &&
    decision.wave === Number(r.wave) &&
    (decision.waveEndedAt?.getTime() ?? null) === (asDate(r.wave_ended_at)?.getTime() ?? null) &&
    decision.endedAt === null &&
    !decision.skipWaiting &&
    events.length === 0
  // Nothing to dispatch when nothing waits in a started wave (a new wave's targets are found by the statement).
  const want = decision.wave === Number(r.wave) ? Math.min(decision.dispatch, s.waiting_started) : decision.dispatch
  let dispatched: Step['dispatched'] = []
  const ended: TargetStatus[] = [
    ...s.ended,
    ...Array.from({ length: pre?.undeliverable ?? 0 }, () => 'undeliverable' as const),
  ]
  if (!(unchanged && want === 0)) {
    const [a] = await rowsOf<{ dispatched: Step['dispatched']; skipped: number }>(
      tx,
      bind(APPLY, {
        id,
        now,
        status: decision.status,
        wave: decision.wave,
        waveEndedAt: decision.waveEndedAt,
        endedAt: decision.endedAt,
        skip: decision.skipWaiting,
        ids: `{${Array.from({ length: want }, () => uuidv7()).join(',')}}`,
        events: JSON.stringify(events),
      }),
    )
    dispatched = a?.dispatched ?? []
    for (let k = 0; k < Number(a?.skipped ?? 0); k++) ended.push('skipped')
  }
  return {
    rolloutId: id,
    decision,
    dispatched,
    ended,
    touched: { tasks: pre?.tasks ?? [], agents: pre?.agents ?? [] },
  }
}

/** After the advances commit: place what they dispatched, drop cached copies, count, wake. */
async function afterAdvance(deps: ServiceDeps, steps: Step[]): Promise<void> {
  const dispatched = steps.flatMap((s) => s.dispatched)
  const m = deps.metrics
  if (m) {
    if (dispatched.length) m.rolloutTargetsDispatched.inc({}, dispatched.length)
    for (const s of steps) {
      for (const status of s.ended) m.rolloutTargetsEnded.inc({ status })
      if (s.decision.events.includes('ended')) m.rolloutsEnded.inc({ status: s.decision.status })
    }
  }
  const tasks = steps.flatMap((s) => s.touched.tasks)
  const agents = steps.flatMap((s) => s.touched.agents)
  if (agents.length) deps.notifier?.notify(agents)
  if (dispatched.length) await placeDispatched(deps, dispatched)
  else if (tasks.length || steps.some((s) => s.decision.events.length)) await changed(deps, { tasks, agents })
}

/**
 * Places dispatched tasks at once on their agents where those have a free slot (`fillNew`,
 * as after creates: agents taken SKIP LOCKED, each filled from its queue in order). Best
 * effort: a task left pending goes on its agent's next heartbeat.
 */
async function placeDispatched(deps: ServiceDeps, dispatched: Step['dispatched']): Promise<void> {
  const agents = [...new Set(dispatched.map((d) => d.agentId))].sort()
  try {
    const [out] = await hot<{ rows: { id: string; agent_id: string; attempt: number; wait_s: number | null }[] }>(
      deps.db,
      fillNew,
      [deps.clock.now(), '{}', `{${agents.join(',')}}`, agents.length, 'rollout'],
    )
    const rows = out?.rows ?? []
    recordAssignments(deps.metrics, rows, 'rollout')
    const placedOn = [...new Set(rows.map((r) => r.agent_id))]
    await changed(deps, { tasks: rows.map((r) => r.id), agents: placedOn })
    deps.notifier?.notify(placedOn)
  } catch (err) {
    deps.logger?.warn('placing dispatched rollout tasks at once failed; their agents’ heartbeats will take them', {
      error: String(err),
    })
    await changed(deps, {}).catch(() => {})
  }
}

/**
 * Advances in flight per database (a process's, or a Worker request's) and rollout: at most
 * one running and one queued behind it. A report that arrives while an advance of its
 * rollout runs joins the queued one, which starts after the running one ends — so after
 * every report waiting on it committed — and does for all of them what each would have done
 * alone (natural batching, as heartbeats and creates are written). Many concurrent reports
 * of one rollout's tasks cost two advances, not one each serialised on its row lock.
 */
const advancing = new WeakMap<Db, Map<string, { running: Promise<Step | null>; queued: Promise<Step | null> | null }>>()

function advanceOnce(deps: ServiceDeps, id: string): Promise<Step | null> {
  let byId = advancing.get(deps.db)
  if (!byId) {
    byId = new Map()
    advancing.set(deps.db, byId)
  }
  const run = async (): Promise<Step | null> => {
    try {
      return await withTx(deps.db, (tx) => advance(tx, id, deps.clock.now()))
    } catch (err) {
      deps.logger?.warn('advancing a rollout after a report failed; the sweep will', {
        rolloutId: id,
        error: String(err),
      })
      return null
    }
  }
  const slot = byId.get(id)
  if (!slot) {
    const entry: { running: Promise<Step | null>; queued: Promise<Step | null> | null } = {
      running: run(),
      queued: null,
    }
    byId.set(id, entry)
    const settle = (): void => {
      if (entry.queued) {
        entry.running = entry.queued
        entry.queued = null
        void entry.running.then(settle)
      } else byId?.delete(id)
    }
    void entry.running.then(settle)
    return entry.running
  }
  // One advance runs: the queued one (made now if none) starts when it ends.
  slot.queued ??= slot.running.then(run)
  return slot.queued
}

/**
 * Advances rollouts after reports of their tasks (in the request that made the reports),
 * rollouts in id order, each joining an advance queued behind one in flight
 * (`advanceOnce`). A failure is logged, never the report's: the sweep advances the rollout
 * again. Only the advance that ran places what it dispatched (once).
 */
export async function advanceRollouts(deps: ServiceDeps, ids: Iterable<string>): Promise<void> {
  const steps: Step[] = []
  for (const id of [...new Set(ids)].sort()) {
    const step = await advanceOnce(deps, id)
    if (step && !placedSteps.has(step)) {
      placedSteps.add(step)
      steps.push(step)
    }
  }
  await afterAdvance(deps, steps)
}

/** Steps whose aftermath (placement, caches, metrics) one of the requests sharing them took on. */
const placedSteps = new WeakSet<Step>()

/**
 * Targets dispatched whose agent is gone (deleted) or has not been online (offline, or
 * taken out of service after the rollout began) for the rollout's deliveryTimeoutSeconds,
 * while their task waited pending as long: the task is cancelled and the target ends
 * `undeliverable` (an error). The task waits from its last move (its creation or its
 * requeue) or, waiting out a retry backoff, from when it is due; the agent from its last
 * change of status (its row's `updated_at`: a heartbeat that changes nothing leaves it). A
 * busy online agent's target is not undeliverable: it waits for a slot. Under the rollout's
 * lock.
 */
const UNDELIVERABLE = `
WITH due AS (
  SELECT t.id, rt.agent_id FROM rollouts r
    JOIN rollout_targets rt ON rt.rollout_id = r.id AND rt.status = 'dispatched'
    JOIN tasks t ON t.id = rt.task_id
    LEFT JOIN agents a ON a.id = rt.agent_id
   WHERE r.id = {{id}}::uuid AND t.status = 'pending'
     AND greatest(t.updated_at, t.available_at) <= {{now}}::timestamptz - r.delivery_timeout_seconds * interval '1 second'
     AND (a.id IS NULL OR (a.status <> 'online'
                           AND a.updated_at <= {{now}}::timestamptz - r.delivery_timeout_seconds * interval '1 second'))
   ORDER BY t.id FOR UPDATE OF t SKIP LOCKED
), c AS (
  UPDATE tasks t SET ${cancelSet('t', 't.status', '{{now}}::timestamptz')},
         error = jsonb_build_object('code', 'undeliverable',
                 'message', 'Its agent could not take it within the rollout''s deliveryTimeoutSeconds.')
    FROM due WHERE t.id = due.id AND ${cancelEndsSql('t')}
  RETURNING t.id
), tg AS (
  UPDATE rollout_targets rt SET status = 'undeliverable', ended_at = {{now}}::timestamptz
    FROM due WHERE rt.rollout_id = {{id}}::uuid AND rt.agent_id = due.agent_id AND due.id IN (SELECT id FROM c)
  RETURNING 1
), ev AS (
  INSERT INTO events (type, task_id, data, created_at)
  SELECT 'task.cancelled', id, jsonb_build_object('from', 'pending', 'to', 'cancelled', 'reason', 'undeliverable'),
         {{now}}::timestamptz FROM c ORDER BY id
  RETURNING 1
)
SELECT coalesce(jsonb_agg(id), '[]'::jsonb) AS ids FROM c`

/**
 * The sweep's part: the rollouts not over (up to `limit`, the longest unadvanced first, so
 * with more than `limit` open every one still gets its turn), advanced — their delivery
 * timeouts first — so bake timers and gates move and targets follow tasks the sweep moved.
 * A paused rollout with nothing in flight has nothing to move and is passed over. Returns
 * how many it advanced.
 */
export async function sweepRollouts(deps: ServiceDeps, now: Date, limit: number): Promise<number> {
  const open = await deps.db
    .select({ id: rollouts.id })
    .from(rollouts)
    .where(
      sql`${rollouts.endedAt} IS NULL AND (${rollouts.status} <> 'paused' OR EXISTS (
            SELECT 1 FROM rollout_targets rt
             WHERE rt.rollout_id = ${rollouts.id} AND rt.status IN (${sql.raw(sqlList(inFlightTargetStatuses))})))`,
    )
    .orderBy(rollouts.updatedAt, rollouts.id)
    .limit(limit)
  const steps: Step[] = []
  for (const { id } of open) {
    try {
      steps.push(
        await withTx(deps.db, async (tx) => {
          await lockRollout(tx, id)
          const [u] = await rowsOf<{ ids: string[] }>(tx, bind(UNDELIVERABLE, { id, now }))
          return advance(tx, id, now, { tasks: u?.ids ?? [], undeliverable: u?.ids.length ?? 0 })
        }),
      )
    } catch (err) {
      deps.logger?.warn('the sweep could not advance a rollout', { rolloutId: id, error: String(err) })
    }
  }
  await afterAdvance(deps, steps)
  return steps.length
}

/** ----- Controls ----- */

async function locked(tx: Tx, id: string): Promise<RolloutRow> {
  const [row] = await tx.select().from(rollouts).where(eq(rollouts.id, id)).for('update')
  if (!row) throw new ApiError('not_found', `No rollout with id ${id}.`)
  return row
}

const refuse = (row: RolloutRow, what: string): never => {
  throw new ApiError('invalid_transition', `The rollout is ${row.status}; ${what}.`, {
    allowed: allowedControls(row),
  })
}

/** The controls a rollout takes now, as a 409's `allowed` names them. */
export function allowedControls(row: Pick<RolloutRow, 'status' | 'endedAt'>): string[] {
  const out: string[] = []
  if (row.status === 'running') out.push('paused (pause)')
  if (row.status === 'paused') out.push('running (resume)')
  if (row.status === 'running' || row.status === 'paused') out.push('cancelled (cancel)')
  // Failed (its budget broke) with tasks still in flight: cancel stops them.
  if (row.status === 'failed' && !row.endedAt) out.push('its tasks in flight cancelled (cancel)')
  if (row.endedAt) out.push('a new rollout (retry)')
  return out
}

async function control(
  deps: ServiceDeps,
  id: string,
  fn: (tx: Tx, row: RolloutRow, now: Date) => Promise<Partial<Step['touched']> | undefined>,
): Promise<RolloutRow> {
  const now = deps.clock.now()
  const step = await withTx(deps.db, async (tx) => {
    const row = await locked(tx, id)
    const touched = await fn(tx, row, now)
    return advance(tx, id, now, touched)
  })
  await afterAdvance(deps, [step])
  return getRollout(deps.db, id)
}

const event = (tx: Tx, now: Date, type: string, data: Record<string, unknown>) =>
  tx.execute(sql`INSERT INTO events (type, data, created_at) VALUES (${type}, ${JSON.stringify(data)}::jsonb, ${now})`)

/** Stops dispatch at once; what is in flight goes on. */
export function pauseRollout(deps: ServiceDeps, id: string): Promise<RolloutRow> {
  return control(deps, id, async (tx, row, now) => {
    if (row.status === 'paused') return
    if (row.status !== 'running') refuse(row, 'only a running rollout can be paused')
    await tx.update(rollouts).set({ status: 'paused', updatedAt: now }).where(eq(rollouts.id, id))
    await event(tx, now, 'rollout.paused', { rolloutId: id, reason: 'manual', wave: row.wave })
    return undefined
  })
}

/** Runs a paused rollout again; at a gate (pauseBetweenWaves), its next wave starts at once. */
export function resumeRollout(deps: ServiceDeps, id: string): Promise<RolloutRow> {
  return control(deps, id, async (tx, row, now) => {
    if (row.status === 'running') return
    if (row.status !== 'paused') refuse(row, 'only a paused rollout can be resumed')
    const next = resumeRule({
      status: row.status,
      wave: row.wave,
      waveCount: row.waves.length,
      waveEndedAt: row.waveEndedAt,
      pauseBetweenWaves: row.pauseBetweenWaves,
    })
    await tx
      .update(rollouts)
      .set({
        status: next.status,
        wave: next.wave,
        waveEndedAt: next.waveEndedAt,
        ...(next.startsWave ? { waveStartedAt: now } : {}),
        updatedAt: now,
      })
      .where(eq(rollouts.id, id))
    await event(tx, now, 'rollout.resumed', { rolloutId: id, wave: next.wave })
    if (next.startsWave) await event(tx, now, 'rollout.wave_started', { rolloutId: id, wave: next.wave })
    return undefined
  })
}

/**
 * Cancels a rollout: its tasks in flight are cancelled (pending and assigned ones at once,
 * a failed or timed-out one waiting for its retry too; running ones are asked, their
 * agents end them), the waiting targets are skipped, and it ends `cancelled` once nothing
 * is in flight. One statement for all its tasks, tasks locked before their agents.
 */
const CANCEL_TASKS = `
WITH tk AS (
  SELECT t.id, t.status, t.agent_id, t.cancel_requested, t.auto_retry, t.finished_at FROM rollout_targets rt
    JOIN tasks t ON t.id = rt.task_id
   WHERE rt.rollout_id = {{id}}::uuid AND rt.status IN (${IN_FLIGHT})
     AND (${cancelEndsSql('t')} OR ${cancelAsksSql('t')})
   ORDER BY t.id FOR UPDATE OF t
), ended AS (
  UPDATE tasks t SET ${cancelSet('t', 'tk.status', '{{now}}::timestamptz')}
    FROM tk WHERE t.id = tk.id AND ${cancelEndsSql('tk')}
  RETURNING t.id, tk.agent_id, tk.status AS was, t.concurrency_key
), asked AS (
  UPDATE tasks t SET ${requestCancelSet('t', '{{now}}::timestamptz')}
    FROM tk WHERE t.id = tk.id AND ${cancelAsksSql('tk')} AND NOT tk.cancel_requested
  RETURNING t.id, t.agent_id, t.attempt
), rel AS (${releaseSlots('ended', cancelReleasesSql('was'))}
), relk AS (${releaseKeysSql('ended', cancelReleasesSql('was'), '{{now}}::timestamptz')}
), ev AS (
  INSERT INTO events (type, agent_id, task_id, data, created_at)
  SELECT e.type, e.agent_id, e.task_id, e.data, {{now}}::timestamptz FROM (
    SELECT 'task.cancelled' AS type, agent_id, id AS task_id,
           jsonb_build_object('from', was, 'to', 'cancelled', 'reason', 'rollout_cancelled') AS data FROM ended
    UNION ALL
    SELECT 'task.cancel_requested', agent_id, id, jsonb_build_object('attempt', attempt, 'reason', 'rollout_cancelled')
      FROM asked
  ) e ORDER BY e.task_id
  RETURNING 1
)
SELECT coalesce((SELECT jsonb_agg(id) FROM (SELECT id FROM ended UNION ALL SELECT id FROM asked) x), '[]'::jsonb) AS tasks,
       coalesce((SELECT jsonb_agg(DISTINCT agent_id) FROM (SELECT agent_id FROM ended UNION ALL SELECT agent_id FROM asked) x
                  WHERE agent_id IS NOT NULL), '[]'::jsonb) AS agents`

export function cancelRollout(deps: ServiceDeps, id: string): Promise<RolloutRow> {
  return control(deps, id, async (tx, row, now) => {
    if (row.status === 'cancelled') return
    // A failed rollout still finishing what was in flight: cancel stops that, and it stays failed.
    const finishing = row.status === 'failed' && !row.endedAt
    if (row.status !== 'running' && row.status !== 'paused' && !finishing) {
      refuse(row, 'it is over and cannot be cancelled')
    }
    const [c] = await rowsOf<{ tasks: string[]; agents: string[] }>(tx, bind(CANCEL_TASKS, { id, now }))
    if (!finishing) await tx.update(rollouts).set({ status: 'cancelled', updatedAt: now }).where(eq(rollouts.id, id))
    await event(tx, now, 'rollout.cancelled', { rolloutId: id })
    return { tasks: c?.tasks ?? [], agents: c?.agents ?? [] }
  })
}

/**
 * A new rollout over the targets of an ended one that did not succeed (their agents, if
 * still registered), with the same task and strategy unless the body overrides them,
 * linked as `retryOf`. 409 while the rollout is not over; 422 when every target succeeded.
 */
export async function retryRollout(
  deps: ServiceDeps,
  id: string,
  by: string,
  override: Partial<Pick<RolloutInput, 'name' | 'description' | 'strategy'>> & {
    task?: Partial<RolloutInput['task']>
  },
  idempotencyKey?: string,
): Promise<{ rollout: RolloutRow; created: boolean }> {
  const row = await getRollout(deps.db, id)
  if (!row.endedAt) refuse(row, 'retry it once it is over (cancel it first)')
  const left = await deps.db
    .select({ agentId: rolloutTargets.agentId })
    .from(rolloutTargets)
    .where(and(eq(rolloutTargets.rolloutId, id), sql`${rolloutTargets.status} <> 'succeeded'`))
    .orderBy(rolloutTargets.agentId)
  if (left.length === 0) {
    throw unprocessable('Every target of the rollout succeeded: there is nothing to retry.', [
      { path: 'params.id', message: 'no target to retry' },
    ])
  }
  const input: RolloutInput = {
    name: override.name ?? row.name,
    description: override.description ?? row.description,
    task: {
      type: override.task?.type ?? row.taskType,
      payload: override.task?.payload ?? row.taskPayload,
      timeoutSeconds: override.task?.timeoutSeconds ?? row.taskTimeoutSeconds,
      maxAttempts: override.task?.maxAttempts ?? row.taskMaxAttempts,
      priority: override.task?.priority ?? row.taskPriority,
    },
    target: { agentIds: left.map((t) => t.agentId) },
    strategy: override.strategy ?? row.strategy,
  }
  // A payload override is checked as a create's is (the route's schema sees it without its type).
  if (input.task.type === SHELL_TASK_TYPE) {
    const parsed = ShellPayload.safeParse(input.task.payload)
    if (!parsed.success) {
      throw unprocessable(
        'The task payload is not a shell payload.',
        parsed.error.issues.map((i) => ({
          path: ['body.task.payload', ...i.path.map(String)].join('.'),
          message: i.message,
        })),
      )
    }
  }
  return createRollout(deps, input, by, { retryOf: id, ...(idempotencyKey ? { idempotencyKey } : {}) })
}

/** ----- Reads ----- */

export async function getRollout(db: Db, id: string): Promise<RolloutRow> {
  const [row] = await db.select().from(rollouts).where(eq(rollouts.id, id))
  if (!row) throw new ApiError('not_found', `No rollout with id ${id}.`)
  return row
}

/** Targets by status, per rollout (every status present, so they sum to targetCount). */
export async function countsOf(db: Db, ids: string[]): Promise<Map<string, TargetCounts>> {
  const out = new Map<string, TargetCounts>(ids.map((id) => [id, zeroCounts()]))
  if (ids.length === 0) return out
  const rows = await db
    .select({ rolloutId: rolloutTargets.rolloutId, status: rolloutTargets.status, n: sql<number>`count(*)::int` })
    .from(rolloutTargets)
    .where(inArray(rolloutTargets.rolloutId, ids))
    .groupBy(rolloutTargets.rolloutId, rolloutTargets.status)
  for (const r of rows) {
    const c = out.get(r.rolloutId)
    if (c) c[r.status] = Number(r.n)
  }
  return out
}

export { errorsOf }

/** Rollouts by status (the metrics' gauge, read at scrape time). */
export async function rolloutsByStatus(db: Db): Promise<Record<string, number>> {
  const rows = await db
    .select({ status: rollouts.status, n: sql<number>`count(*)::int` })
    .from(rollouts)
    .groupBy(rollouts.status)
  return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]))
}

export interface RolloutFilters {
  status?: RolloutStatus[]
  limit: number
  cursor?: string
}

/** Newest first, paged by id. */
export async function listRollouts(db: Db, f: RolloutFilters) {
  const after = decodeCursor(f.cursor, 'desc')
  const rows = await db
    .select()
    .from(rollouts)
    .where(
      and(
        f.status?.length ? inArray(rollouts.status, f.status) : undefined,
        after ? lt(rollouts.id, after) : undefined,
      ),
    )
    .orderBy(desc(rollouts.id))
    .limit(f.limit + 1)
  return page(rows, f.limit, 'desc')
}

export interface TargetFilters {
  status?: TargetStatus[]
  wave?: number
  limit: number
  cursor?: string
}

export interface TargetView {
  agentId: string
  agentName: string
  wave: number
  status: TargetStatus
  taskId: string | null
  attempt: number
  exitCode: number | null
  errorCode: string | null
  outputTail: string | null
  dispatchedAt: Date | null
  endedAt: Date | null
}

/** A rollout's targets in target order (agents by id), with what their tasks say of their run. */
export async function listTargets(db: Db, id: string, f: TargetFilters) {
  await getRollout(db, id)
  const after = decodeCursor(f.cursor, 'asc')
  const rows = await rowsOf<Record<string, unknown>>(
    db,
    sql`SELECT rt.agent_id, rt.agent_name, rt.wave, rt.status, rt.task_id, rt.attempt, rt.dispatched_at, rt.ended_at,
               t.result, t.error
          FROM rollout_targets rt LEFT JOIN tasks t ON t.id = rt.task_id
         WHERE rt.rollout_id = ${id}
           ${
             f.status?.length
               ? sql`AND rt.status IN (${sql.join(
                   f.status.map((s) => sql`${s}`),
                   sql`, `,
                 )})`
               : sql``
           }
           ${f.wave !== undefined ? sql`AND rt.wave = ${f.wave}` : sql``}
           ${after ? sql`AND rt.agent_id > ${after}` : sql``}
         ORDER BY rt.agent_id
         LIMIT ${f.limit + 1}`,
  )
  const items = rows.map((r): TargetView & { id: string } => {
    const result = (r.result ?? null) as Record<string, unknown> | null
    const error = (r.error ?? null) as { code?: string } | null
    const inResult = (k: string) => (result && typeof result === 'object' ? result[k] : undefined)
    return {
      id: String(r.agent_id),
      agentId: String(r.agent_id),
      agentName: String(r.agent_name),
      wave: Number(r.wave),
      status: r.status as TargetStatus,
      taskId: (r.task_id as string | null) ?? null,
      attempt: Number(r.attempt),
      exitCode: typeof inResult('exitCode') === 'number' ? (inResult('exitCode') as number) : null,
      errorCode: error?.code ?? null,
      outputTail: typeof inResult('outputTail') === 'string' ? (inResult('outputTail') as string) : null,
      dispatchedAt: asDate(r.dispatched_at),
      endedAt: asDate(r.ended_at),
    }
  })
  return page(items, f.limit, 'asc')
}

export type { ResolvedStrategy }
