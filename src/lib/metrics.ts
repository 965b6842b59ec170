/**
 * A small Prometheus registry: counters, gauges and histograms with labels, rendered in
 * the text exposition format (version 0.0.4). Written here rather than taken from
 * prom-client because the app must run unchanged on Workers, and prom-client reaches for
 * Node-only modules (process, cluster, perf_hooks); the format itself is small.
 * Counters and histograms are per process (Prometheus sums instances); gauges about the
 * fleet and the queue are read from the database at scrape time.
 */
type Labels = Record<string, string>

const escapeLabel = (v: string) => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')
const labelText = (l: Labels) => {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${escapeLabel(v)}"`)
  return parts.length ? `{${parts.join(',')}}` : ''
}
const num = (v: number) => (Number.isFinite(v) ? String(v) : v > 0 ? '+Inf' : v < 0 ? '-Inf' : 'NaN')
const keyOf = (l: Labels) => JSON.stringify(Object.entries(l).sort(([a], [b]) => a.localeCompare(b)))

interface Metric {
  render(): string
}

/** Labelled values of one name: what counters and gauges have in common. */
abstract class Series implements Metric {
  protected values = new Map<string, { labels: Labels; v: number }>()
  protected abstract readonly type: 'counter' | 'gauge'
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}
  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} ${this.type}`]
    for (const { labels, v } of this.values.values()) lines.push(`${this.name}${labelText(labels)} ${num(v)}`)
    return lines.join('\n')
  }
}

export class Counter extends Series {
  protected readonly type = 'counter'
  inc(labels: Labels = {}, by = 1): void {
    const k = keyOf(labels)
    const cur = this.values.get(k)
    if (cur) cur.v += by
    else this.values.set(k, { labels, v: by })
  }
  /** For a total kept elsewhere (read at scrape time). */
  setTotal(labels: Labels, v: number): void {
    this.values.set(keyOf(labels), { labels, v })
  }
}

export class Gauge extends Series {
  protected readonly type = 'gauge'
  set(labels: Labels, v: number): void {
    this.values.set(keyOf(labels), { labels, v })
  }
  reset(): void {
    this.values.clear()
  }
}

export class Histogram implements Metric {
  private series = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>()
  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: number[],
  ) {}
  observe(labels: Labels, v: number): void {
    const k = keyOf(labels)
    let s = this.series.get(k)
    if (!s) {
      s = { labels, counts: this.buckets.map(() => 0), sum: 0, count: 0 }
      this.series.set(k, s)
    }
    for (let i = 0; i < this.buckets.length; i++) if (v <= (this.buckets[i] as number)) (s.counts[i] as number)++
    s.sum += v
    s.count++
  }
  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`]
    for (const { labels, counts, sum, count } of this.series.values()) {
      this.buckets.forEach((b, i) => {
        lines.push(`${this.name}_bucket${labelText({ ...labels, le: num(b) })} ${counts[i]}`)
      })
      lines.push(`${this.name}_bucket${labelText({ ...labels, le: '+Inf' })} ${count}`)
      lines.push(`${this.name}_sum${labelText(labels)} ${num(sum)}`)
      lines.push(`${this.name}_count${labelText(labels)} ${count}`)
    }
    return lines.join('\n')
  }
}

const LATENCY = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
const WAIT = [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600]
const RUN = [0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 10_800, 86_400]
const BATCH = [1, 2, 4, 8, 16, 32, 64, 128, 256]

/** Every metric the service exports, made once per process (or Worker isolate). */
export class Metrics {
  readonly httpRequests = new Counter(
    'agenticcp_http_requests_total',
    'HTTP requests by method, route pattern and status.',
  )
  readonly httpDuration = new Histogram(
    'agenticcp_http_request_duration_seconds',
    'HTTP request duration by method, route pattern and status.',
    LATENCY,
  )
  readonly assigned = new Counter('agenticcp_tasks_assigned_total', 'Task assignments, by the path that made them.')
  readonly requeued = new Counter('agenticcp_tasks_requeued_total', 'Tasks put back to pending by the sweep.')
  readonly retried = new Counter('agenticcp_tasks_retried_total', 'Failed or timed-out tasks retried by the sweep.')
  readonly timedOut = new Counter('agenticcp_tasks_timed_out_total', 'Running tasks timed out by the sweep.')
  readonly expired = new Counter('agenticcp_agents_expired_total', 'Silent agents set offline by the sweep.')
  readonly sweeps = new Counter(
    'agenticcp_sweeps_total',
    'Sweeps run by this process: result ran (recovery and placement), skipped (another held the lock; placement only) or failed.',
  )
  readonly sweepDuration = new Histogram('agenticcp_sweep_duration_seconds', 'Sweep duration.', LATENCY)
  readonly createToAssigned = new Histogram(
    'agenticcp_task_create_to_assigned_seconds',
    'Time from a task being created to its assignment.',
    WAIT,
  )
  readonly runDuration = new Histogram(
    'agenticcp_task_run_duration_seconds',
    'Time from a task starting to its end, by outcome.',
    RUN,
  )
  readonly agents = new Gauge('agenticcp_agents', 'Agents by status.')
  readonly slots = new Gauge('agenticcp_agent_slots', 'Slots of online agents: total, used and free.')
  readonly tasks = new Gauge('agenticcp_tasks', 'Tasks by status.')
  readonly queueDepth = new Gauge('agenticcp_queue_depth', 'Pending tasks by priority.')
  readonly oldestPending = new Gauge('agenticcp_oldest_pending_age_seconds', 'Age of the oldest pending task.')
  readonly info = new Gauge('agenticcp_build_info', 'Version and runtime of this process (always 1).')
  readonly uptime = new Gauge('agenticcp_uptime_seconds', 'Seconds since this process started.')
  readonly eventStreams = new Gauge('agenticcp_event_streams_open', 'Live event streams open on this process.')
  readonly longPolls = new Gauge(
    'agenticcp_long_polls_waiting',
    'Long-polling heartbeats held by this process (at most one per agent).',
  )
  readonly heartbeatBatch = new Histogram(
    'agenticcp_heartbeat_batch_agents',
    'Heartbeats written by one statement (natural batching: those that arrived while others were in flight).',
    BATCH,
  )
  readonly createBatch = new Histogram(
    'agenticcp_create_batch_tasks',
    'Single creates (POST /tasks) written by one statement (natural batching: those that arrived while others were in flight).',
    BATCH,
  )
  readonly longPollRechecks = new Counter(
    'agenticcp_long_poll_rechecks_total',
    'Long polls that woke or ended a wait slice, by what they did: none (read again, no write), touch (read, and wrote the beat only, batched), beat (a whole heartbeat, to fill free slots) or handoff (answered from the rows of the placement in this process that woke it: no statement).',
  )
  readonly dbStatements = new Counter(
    'agenticcp_db_statements_total',
    'Statements this process sent to Postgres, transaction control included (node-postgres driver).',
  )
  readonly eventFeedReads = new Counter(
    'agenticcp_event_feed_reads_total',
    'Reads of the event log by the reader all live streams of this process share.',
  )
  readonly logFeedReads = new Counter(
    'agenticcp_log_feed_reads_total',
    'Reads of task logs by the readers followers share (one per followed attempt, per process).',
  )

  readonly keyCorrections = new Counter(
    'agenticcp_concurrency_key_corrections_total',
    "Concurrency keys whose count the sweep's recount found off and corrected: each is a path that moved a keyed task without moving its key's count (a defect worth reporting), or a count edited by hand.",
  )

  readonly rolloutsCreated = new Counter('agenticcp_rollouts_created_total', 'Rollouts created.')
  readonly rolloutsEnded = new Counter('agenticcp_rollouts_ended_total', 'Rollouts that ended, by status.')
  readonly rolloutTargetsDispatched = new Counter(
    'agenticcp_rollout_targets_dispatched_total',
    'Rollout targets dispatched as tasks by the rollout controller.',
  )
  readonly rolloutTargetsEnded = new Counter(
    'agenticcp_rollout_targets_ended_total',
    'Rollout targets that ended, by status (succeeded, failed, timed_out, undeliverable, cancelled, skipped).',
  )
  readonly rollouts = new Gauge('agenticcp_rollouts', 'Rollouts by status.')

  private all(): Metric[] {
    return Object.values(this).filter(
      (m): m is Metric => m instanceof Counter || m instanceof Gauge || m instanceof Histogram,
    )
  }

  render(): string {
    return `${this.all()
      .map((m) => m.render())
      .join('\n')}\n`
  }
}
