import { type AgentStatus, ANY_TASK_TYPE, type Labels } from './model'

/**
 * Placement's rules: which agent may take which task (the fit rule), in what order tasks
 * leave the queue, and which of the fitting agents gets one. Each is written once here, in
 * TypeScript and as SQL side by side, and every placement path takes it from here: the
 * heartbeat's fill, the create's fast path and `POST /tasks/execute` (SQL), the sweep's
 * in-memory matching (TypeScript), and `pendingReason` with its details.
 * test/fit-rule.test.ts checks that the two forms agree over a generated matrix.
 */

/** What the fit rule reads of a task. */
export interface FitTask {
  type: string
  /** Agents that declined it. */
  declinedBy: readonly string[]
  reqCapabilities: readonly string[]
  reqProvider: string | null
  reqRegion: string | null
  reqLabels: Labels
  reqAgentId: string | null
}

/** What the fit rule reads of an agent. */
export interface FitAgent {
  id: string
  status: AgentStatus
  provider: string
  region: string | null
  capabilities: readonly string[]
  labels: Labels
  /** The task types it runs; `*` is any. */
  taskTypes: readonly string[]
  maxConcurrentTasks: number
  activeTasks: number
}

/** SQL expressions for an agent's columns (`agentColumns('a')` for alias `a`). */
export interface AgentSql {
  id: string
  status: string
  provider: string
  region: string
  capabilities: string
  labels: string
  taskTypes: string
  maxConcurrentTasks: string
  activeTasks: string
}

/** SQL expressions for a task's requirements: columns (`taskColumns('t')`) or bound values. */
export interface TaskSql {
  type: string
  declinedBy: string
  capabilities: string
  provider: string
  region: string
  labels: string
  agentId: string
}

export const agentColumns = (alias: string): AgentSql => ({
  id: `${alias}.id`,
  status: `${alias}.status`,
  provider: `${alias}.provider`,
  region: `${alias}.region`,
  capabilities: `${alias}.capabilities`,
  labels: `${alias}.labels`,
  taskTypes: `${alias}.task_types`,
  maxConcurrentTasks: `${alias}.max_concurrent_tasks`,
  activeTasks: `${alias}.active_tasks`,
})

export const taskColumns = (alias: string): TaskSql => ({
  type: `${alias}.type`,
  declinedBy: `${alias}.declined_by`,
  capabilities: `${alias}.req_capabilities`,
  provider: `${alias}.req_provider`,
  region: `${alias}.req_region`,
  labels: `${alias}.req_labels`,
  agentId: `${alias}.req_agent_id`,
})

/**
 * A shape row's requirements (`task_shapes`, alias `s`) as a task's: the rule's rows read
 * them as they read a task's. A shape is never pinned and declined by nobody: those two
 * rows are per task, checked on the task rows a fill takes from the shape's queue.
 */
export const shapeColumns = (alias: string): TaskSql => ({
  type: `${alias}.type`,
  declinedBy: "'{}'::uuid[]",
  capabilities: `${alias}.req_capabilities`,
  provider: `${alias}.req_provider`,
  region: `${alias}.req_region`,
  labels: `${alias}.req_labels`,
  agentId: 'NULL::uuid',
})

const labelsContain = (have: Labels, want: Labels) => Object.entries(want).every(([k, v]) => have[k] === v)

/** One requirement a task may name, in each form the service needs. */
export interface Requirement {
  name: 'type' | 'capabilities' | 'provider' | 'region' | 'labels' | 'agentId' | 'declined'
  /** Whether the task names this requirement at all. */
  named(task: FitTask): boolean
  meets(task: FitTask, agent: FitAgent): boolean
  sql(a: AgentSql, t: TaskSql): string
  /** Why `agent` misses it. */
  miss(task: FitTask, agent: FitAgent): string
  /** Why a task waits when no online agent meets it. */
  nobody(task: FitTask): string
  /** Why a task waits when online agents meet all its other requirements, but not this one. */
  blocks(task: FitTask): string
}

const runsType = (a: Pick<FitAgent, 'taskTypes'>, type: string) =>
  a.taskTypes.includes(ANY_TASK_TYPE) || a.taskTypes.includes(type)

/**
 * THE FIT RULE. A task fits an agent when the agent takes work (`takesWork`: online, with a
 * free slot) and meets every requirement below that the task names: it runs the task's
 * type, holds every required capability, is on the provider and in the region asked for,
 * carries the labels asked for, is the agent the task is pinned to, and has not declined it.
 */
export const FIT_RULE: readonly Requirement[] = [
  {
    name: 'type',
    named: () => true,
    meets: (t, a) => runsType(a, t.type),
    sql: (a, t) => `(${t.type} = ANY(${a.taskTypes}) OR '${ANY_TASK_TYPE}' = ANY(${a.taskTypes}))`,
    miss: (t, a) => `agent does not run tasks of type ${t.type} (it runs: ${a.taskTypes.join(', ') || 'none'})`,
    nobody: (t) => `no online agent runs tasks of type ${t.type}`,
    blocks: (t) => `the online agents that meet its other requirements do not run tasks of type ${t.type}`,
  },
  {
    name: 'capabilities',
    named: (t) => t.reqCapabilities.length > 0,
    meets: (t, a) => t.reqCapabilities.every((c) => a.capabilities.includes(c)),
    sql: (a, t) => `${a.capabilities} @> ${t.capabilities}`,
    miss: (t, a) =>
      `agent lacks capabilities: ${t.reqCapabilities.filter((c) => !a.capabilities.includes(c)).join(', ')}`,
    nobody: (t) => `no online agent has capabilities: ${t.reqCapabilities.join(', ')}`,
    blocks: (t) =>
      `the online agents that meet its other requirements lack capabilities: ${t.reqCapabilities.join(', ')}`,
  },
  {
    name: 'provider',
    named: (t) => t.reqProvider !== null,
    meets: (t, a) => t.reqProvider === null || t.reqProvider === a.provider,
    sql: (a, t) => `(${t.provider} IS NULL OR ${a.provider} = ${t.provider})`,
    miss: (t, a) => `task needs provider ${t.reqProvider}, agent is ${a.provider}`,
    nobody: (t) => `no online agent on provider ${t.reqProvider}`,
    blocks: (t) => `the online agents that meet its other requirements are not on provider ${t.reqProvider}`,
  },
  {
    name: 'region',
    named: (t) => t.reqRegion !== null,
    meets: (t, a) => t.reqRegion === null || t.reqRegion === a.region,
    sql: (a, t) => `(${t.region} IS NULL OR ${a.region} = ${t.region})`,
    miss: (t, a) => `task needs region ${t.reqRegion}, agent is in ${a.region ?? 'no region'}`,
    nobody: (t) => `no online agent in region ${t.reqRegion}`,
    blocks: (t) => `the online agents that meet its other requirements are not in region ${t.reqRegion}`,
  },
  {
    name: 'labels',
    named: (t) => Object.keys(t.reqLabels).length > 0,
    meets: (t, a) => labelsContain(a.labels, t.reqLabels),
    sql: (a, t) => `${a.labels} @> ${t.labels}`,
    miss: () => 'agent labels do not match the required labels',
    nobody: (t) => `no online agent has labels ${JSON.stringify(t.reqLabels)}`,
    blocks: (t) => `the online agents that meet its other requirements lack labels ${JSON.stringify(t.reqLabels)}`,
  },
  {
    name: 'agentId',
    named: (t) => t.reqAgentId !== null,
    meets: (t, a) => t.reqAgentId === null || t.reqAgentId === a.id,
    sql: (a, t) => `(${t.agentId} IS NULL OR ${a.id} = ${t.agentId})`,
    miss: (t) => `task is pinned to agent ${t.reqAgentId}`,
    nobody: (t) => `pinned agent ${t.reqAgentId} is not online`,
    blocks: (t) => `pinned agent ${t.reqAgentId} does not meet its other requirements`,
  },
  {
    name: 'declined',
    named: (t) => t.declinedBy.length > 0,
    meets: (t, a) => !t.declinedBy.includes(a.id),
    sql: (a, t) => `NOT (${a.id} = ANY(${t.declinedBy}))`,
    miss: () => 'agent declined this task',
    nobody: () => 'every online agent declined it',
    blocks: () => 'the online agents that would fit it declined it',
  },
]

/** The agent takes new work now: online, with a free slot. */
export const takesWork = (a: Pick<FitAgent, 'status' | 'activeTasks' | 'maxConcurrentTasks'>) =>
  a.status === 'online' && a.activeTasks < a.maxConcurrentTasks

/** `takesWork` as SQL. */
export const takesWorkSql = (a: AgentSql) => `(${a.status} = 'online' AND ${a.activeTasks} < ${a.maxConcurrentTasks})`

/** The agent meets every requirement the task names (whether it takes work aside). */
export const meetsRequirements = (task: FitTask, agent: FitAgent) => FIT_RULE.every((r) => r.meets(task, agent))

/** The task fits the agent. */
export const fits = (task: FitTask, agent: FitAgent) => takesWork(agent) && meetsRequirements(task, agent)

/** Why `agent` cannot take `task` now (empty when it can). */
export function misfits(task: FitTask, agent: FitAgent): string[] {
  const out: string[] = []
  if (agent.status !== 'online') out.push(`agent is ${agent.status}, not online`)
  if (agent.activeTasks >= agent.maxConcurrentTasks) {
    out.push(`agent has no free slot (${agent.activeTasks}/${agent.maxConcurrentTasks})`)
  }
  for (const r of FIT_RULE) if (!r.meets(task, agent)) out.push(r.miss(task, agent))
  return out
}

/**
 * `meetsRequirements` as SQL (a null in either side reads as "does not meet"); with `except`,
 * every requirement but that one (what would fit if it were not asked).
 */
export const meetsRequirementsSql = (a: AgentSql, t: TaskSql, except?: Requirement['name']) =>
  `(${FIT_RULE.filter((r) => r.name !== except)
    .map((r) => r.sql(a, t))
    .join(' AND ')})`

/**
 * `meetsRequirements` between agent rows `a` and the task rows of a queue scan `t`,
 * wrapped in coalesce(…, false): the planner cannot estimate how many tasks the bare
 * conjunction lets through (containment between two columns), guesses almost none, and
 * then sorts the whole pending queue instead of reading it in index order and stopping at
 * the free slots (30 ms against 0.1 ms with 20,000 pending). It takes an expression it
 * cannot look into as a coin flip, which is the order it should read in.
 */
export const FITS_QUEUE_SQL = `coalesce(${meetsRequirementsSql(agentColumns('a'), taskColumns('t'))}, false)`

/**
 * The queue's order: priority (high first), then age (ids are UUIDv7), spelled as the
 * queue's partial index has it (`DESC NULLS LAST`; `DESC` alone is `NULLS FIRST`, which the
 * index cannot give, so Postgres would sort).
 */
export const queueOrderSql = (t: string) => `${t}.priority DESC NULLS LAST, ${t}.id`

/**
 * The queues placement reads (each served by its partial index, `tasks_shape_queue_idx`
 * and `tasks_pinned_queue_idx`): the pending unpinned tasks of shape `shape`, and the pending
 * tasks pinned to agent `agent`, of task alias `t`; with `now`, only the due ones.
 */
export const shapeQueueSql = (t: string, shape: string, now?: string) =>
  `${t}.shape = ${shape} AND ${t}.status = 'pending' AND ${t}.req_agent_id IS NULL${now ? ` AND ${t}.available_at <= ${now}` : ''}`
export const pinnedQueueSql = (t: string, agent: string, now?: string) =>
  `${t}.req_agent_id = ${agent} AND ${t}.status = 'pending'${now ? ` AND ${t}.available_at <= ${now}` : ''}`

/**
 * Among fitting agents, the least loaded first. Ties go to the agent with fewer
 * capabilities, which keeps specialised agents (gpu, arm…) free for the tasks only they can
 * take, then to the one with more free slots, then to the lower id.
 */
export function lessLoaded(a: FitAgent, b: FitAgent): boolean {
  if (a.activeTasks !== b.activeTasks) return a.activeTasks < b.activeTasks
  if (a.capabilities.length !== b.capabilities.length) return a.capabilities.length < b.capabilities.length
  const fa = a.maxConcurrentTasks - a.activeTasks
  const fb = b.maxConcurrentTasks - b.activeTasks
  if (fa !== fb) return fa > fb
  return a.id < b.id
}

/** `lessLoaded` as ORDER BY terms. */
export const leastLoadedOrderSql = (a: AgentSql) =>
  `${a.activeTasks}, cardinality(${a.capabilities}), ${a.maxConcurrentTasks} - ${a.activeTasks} DESC, ${a.id}`
