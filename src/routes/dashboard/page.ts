/**
 * The operator dashboard: one self-contained page (no build, no CDN), served by the app.
 * It reads the API with a token the operator pastes once (kept in localStorage), and stays
 * live on the event stream (GET /api/v1/events as Server-Sent Events, read with fetch so
 * the token travels in the Authorization header, never in a URL), resuming with
 * Last-Event-ID after a drop. Built for fleets of a thousand agents: the agent table is
 * filtered and paged in the browser, and event bursts are folded into one refresh a second.
 */
export const dashboardHtml = /* html */ `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>AgenticCP · Dashboard</title>
<link rel="icon" href="data:,">
<style>
  :root {
    --bg: #0d1117; --panel: #161b22; --panel2: #1c2330; --line: #2a3342; --text: #e6edf3; --muted: #8b98a9;
    --accent: #58a6ff; --ok: #3fb950; --warn: #d29922; --bad: #f85149; --info: #a371f7; --idle: #6e7681;
  }
  * { box-sizing: border-box; }
  body { margin: 0; background: var(--bg); color: var(--text); font: 14px/1.45 ui-sans-serif, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
  header { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 16px; padding: 14px 24px; border-bottom: 1px solid var(--line); background: var(--panel); position: sticky; top: 0; z-index: 2; }
  header h1 { font-size: 16px; margin: 0; font-weight: 600; letter-spacing: .2px; }
  header h1 span { color: var(--accent); } header h1 .sub { color: var(--text); }
  .live { display: inline-flex; align-items: center; gap: 6px; font-size: 12px; color: var(--muted); }
  .dot { width: 8px; height: 8px; border-radius: 50%; background: var(--idle); }
  .live.on .dot { background: var(--ok); box-shadow: 0 0 0 3px rgba(63,185,80,.18); }
  .live.retry .dot { background: var(--warn); }
  header .spacer { flex: 1; }
  button, input, select { font: inherit; color: var(--text); background: var(--panel2); border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px; }
  button { cursor: pointer; } button:hover { border-color: var(--accent); }
  main { padding: 20px 24px 40px; display: grid; gap: 16px; grid-template-columns: repeat(12, minmax(0, 1fr)); }
  .card { background: var(--panel); border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px; min-width: 0; display: flex; flex-direction: column; }
  .card h2 { margin: 0 0 10px; font-size: 12px; text-transform: uppercase; letter-spacing: .08em; color: var(--muted); font-weight: 600; display: flex; align-items: center; gap: 8px; }
  .card h2 .count { margin-left: auto; text-transform: none; letter-spacing: 0; }
  .kpis { grid-column: span 12; display: grid; grid-template-columns: repeat(6, minmax(0, 1fr)); gap: 16px; min-width: 0; }
  .kpis .card { display: block; container-type: inline-size; }
  /* A figure stays on one line: it scales with its card, a second figure (p95) is set smaller, nothing wraps. */
  .kpi .v { font-size: clamp(18px, 14cqi, 26px); font-weight: 650; font-variant-numeric: tabular-nums; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
  .kpi .v small { font-size: .65em; font-weight: 550; color: var(--muted); }
  .kpi .s { color: var(--muted); font-size: 12px; }
  .span4 { grid-column: span 4; } .span8 { grid-column: span 8; } .span6 { grid-column: span 6; } .span12 { grid-column: span 12; }
  .thr-now { display: flex; align-items: baseline; gap: 6px 10px; flex-wrap: wrap; margin: -2px 0 10px; }
  .thr-now b { font-size: 22px; font-weight: 650; font-variant-numeric: tabular-nums; white-space: nowrap; }
  .thr-now .muted { font-size: 12px; }
  .chart { flex: 1; display: grid; grid-template-columns: auto minmax(0, 1fr); grid-template-rows: minmax(120px, 1fr) auto; column-gap: 8px; padding-top: 6px; }
  .yaxis { position: relative; min-width: 2ch; font-size: 11px; color: var(--muted); font-variant-numeric: tabular-nums; }
  .yaxis span { position: absolute; right: 0; transform: translateY(-50%); line-height: 1; white-space: nowrap; }
  .plot { position: relative; border-left: 1px solid var(--line); border-bottom: 1px solid var(--line); }
  .plot .gl { position: absolute; left: 0; right: 0; border-top: 1px dashed #263041; }
  .bars { position: absolute; inset: 0 0 0 2px; display: flex; align-items: flex-end; gap: clamp(1px, .3vw, 3px); }
  .bars div { flex: 1; background: linear-gradient(180deg, var(--accent), #1f6feb); border-radius: 2px 2px 0 0; min-height: 1px; }
  .bars div.partial { opacity: .45; }
  .xaxis { grid-column: 2; position: relative; height: 18px; font-size: 11px; color: var(--muted); }
  .xaxis span { position: absolute; top: 4px; transform: translateX(-50%); white-space: nowrap; }
  .xaxis span:first-child { transform: none; } .xaxis span:last-child { transform: translateX(-100%); }
  .prio { display: grid; grid-template-columns: 24px 1fr 48px; gap: 6px 10px; align-items: center; font-size: 12px; }
  .prio .b { height: 10px; border-radius: 5px; background: var(--panel2); overflow: hidden; }
  .prio .b i { display: block; height: 100%; background: var(--info); }
  .chips { display: flex; flex-wrap: wrap; gap: 6px; margin-bottom: 10px; }
  .chip { font-size: 12px; padding: 2px 8px; border-radius: 999px; border: 1px solid var(--line); background: transparent; color: var(--muted); cursor: pointer; user-select: none; white-space: nowrap; }
  .chip.sel { color: var(--text); border-color: var(--accent); }
  table { width: 100%; border-collapse: collapse; font-size: 13px; }
  th { text-align: left; color: var(--muted); font-weight: 500; font-size: 12px; padding: 6px 8px; position: sticky; top: 0; background: var(--panel); white-space: nowrap;
    /* A shadow, not a border: collapsed borders of sticky cells are not always painted. */
    box-shadow: inset 0 -1px 0 var(--line); }
  td { padding: 6px 8px; border-bottom: 1px solid #20283a; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; max-width: 280px; }
  tr:hover td { background: #1a2130; }
  /* Wide tables scroll sideways inside their card, never the page. */
  .scroll { max-height: 460px; overflow: auto; overscroll-behavior-x: contain;
    /* A shadow at the right edge while more columns hide there (the cover scrolls with the content). */
    background: linear-gradient(to left, var(--panel) 40%, transparent) right / 32px 100% no-repeat local,
      radial-gradient(farthest-side at 100% 50%, rgba(0,0,0,.55), transparent) right / 12px 100% no-repeat scroll; }
  .st { display: inline-block; font-size: 12px; padding: 1px 8px; border-radius: 999px; font-weight: 550; }
  .st.online, .st.completed { background: rgba(63,185,80,.15); color: var(--ok); }
  .st.assigned, .st.draining { background: rgba(88,166,255,.15); color: var(--accent); }
  .st.running { background: rgba(163,113,247,.18); color: var(--info); }
  .st.pending, .st.maintenance { background: rgba(210,153,34,.15); color: var(--warn); }
  .st.failed, .st.timed_out, .st.error { background: rgba(248,81,73,.15); color: var(--bad); }
  .st.offline, .st.cancelled { background: rgba(110,118,129,.2); color: var(--muted); }
  .load { display: inline-block; width: 70px; height: 6px; border-radius: 3px; background: var(--panel2); vertical-align: middle; margin-right: 6px; overflow: hidden; }
  .load i { display: block; height: 100%; background: var(--ok); }
  .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; color: var(--muted); }
  .muted { color: var(--muted); }
  .pager { display: flex; gap: 8px; align-items: center; justify-content: flex-end; margin-top: 8px; color: var(--muted); font-size: 12px; }
  #log > div { font-size: 12px; padding: 4px 0; border-bottom: 1px dashed #20283a; display: flex; gap: 10px; }
  #log .t { color: var(--muted); font-variant-numeric: tabular-nums; white-space: nowrap; }
  #log .b { display: flex; flex-wrap: wrap; gap: 0 8px; min-width: 0; }
  #log .k { color: var(--accent); } #log .n { overflow-wrap: anywhere; } #log .d { flex-basis: 100%; }
  #login { position: fixed; inset: 0; background: rgba(5,8,12,.78); display: none; align-items: center; justify-content: center; z-index: 5; }
  #login.show { display: flex; }
  #login form { background: var(--panel); border: 1px solid var(--line); border-radius: 12px; padding: 24px; width: min(560px, 92vw); display: grid; gap: 12px; }
  #login textarea { width: 100%; min-height: 90px; font: 12px ui-monospace, monospace; color: var(--text); background: var(--panel2); border: 1px solid var(--line); border-radius: 6px; padding: 8px; }
  #login .err { color: var(--bad); font-size: 12px; min-height: 16px; }
  #tasks tr[data-task-id], #log > div[data-task-id] { cursor: pointer; }
  #tasks tr[data-task-id]:focus-visible { outline: 2px solid var(--accent); outline-offset: -2px; }
  /* The task detail: a panel from the right (the whole screen on a phone); Escape closes it. */
  #task-detail { margin: 0 0 0 auto; width: min(700px, 100vw); max-width: 100vw; height: 100%; max-height: 100%; padding: 0; border: 0; border-left: 1px solid var(--line); background: var(--panel); color: var(--text); }
  #task-detail::backdrop { background: rgba(5,8,12,.6); }
  #task-detail .td { display: flex; flex-direction: column; height: 100%; }
  .td-head { display: flex; align-items: flex-start; gap: 12px; padding: 14px 18px; border-bottom: 1px solid var(--line); }
  .td-head > div { flex: 1; min-width: 0; }
  .td-head h2 { margin: 0 0 2px; font-size: 16px; font-weight: 600; overflow-wrap: anywhere; }
  .td-body { flex: 1; overflow: auto; padding: 0 18px 28px; overscroll-behavior: contain; }
  .td-body h3 { font-size: 12px; text-transform: uppercase; letter-spacing: .08em; color: var(--muted); margin: 20px 0 8px; font-weight: 600; }
  .td-note { margin-top: 14px; padding: 8px 10px; border-radius: 6px; background: rgba(210,153,34,.12); color: var(--warn); font-size: 13px; }
  .fields { display: grid; grid-template-columns: max-content minmax(0, 1fr) max-content minmax(0, 1fr); gap: 7px 14px; margin: 16px 0 0; font-size: 13px; }
  .fields dt { color: var(--muted); } .fields dd { margin: 0; overflow-wrap: anywhere; font-variant-numeric: tabular-nums; }
  #task-detail pre { margin: 0; background: var(--panel2); border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; font: 12px/1.45 ui-monospace, SFMono-Regular, Menlo, monospace; max-height: 260px; overflow: auto; white-space: pre-wrap; overflow-wrap: anywhere; }
  #task-detail pre.none { color: var(--muted); }
  #task-detail pre.bad { color: var(--bad); }
  .td-events { list-style: none; margin: 0; padding: 0; max-height: 340px; overflow: auto; font-size: 12px; }
  .td-events li { display: grid; grid-template-columns: auto minmax(0, 1fr); gap: 0 10px; padding: 4px 0; border-bottom: 1px dashed #20283a; }
  .td-events .t { color: var(--muted); font-variant-numeric: tabular-nums; white-space: nowrap; grid-row: span 2; }
  .td-events .k { color: var(--accent); }
  /* The task's log: text only, wrapped; stderr in red with a mark at its edge, system lines dimmed. */
  .td-log-head { display: flex; align-items: center; flex-wrap: wrap; gap: 4px 10px; }
  .td-log-head select { padding: 2px 6px; font-size: 12px; text-transform: none; letter-spacing: 0; }
  .td-log-head .muted { text-transform: none; letter-spacing: 0; font-weight: 400; }
  #task-log { position: relative; min-height: 40px; max-height: min(60vh, 520px); overflow: auto; overscroll-behavior: contain; margin: 0; padding: 8px 10px; background: #0a0e14; border: 1px solid var(--line); border-radius: 6px;
    font: 12px/1.5 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; color: #d6dde6; white-space: pre-wrap; overflow-wrap: anywhere; tab-size: 4; }
  #task-log:empty::before { content: attr(data-empty); color: var(--muted); }
  #task-log .stderr { color: #ff938a; background: rgba(248,81,73,.1); box-shadow: -3px 0 0 rgba(248,81,73,.1), 3px 0 0 rgba(248,81,73,.1); }
  #task-log .system { color: var(--muted); font-style: italic; }
  #task-log .cut { display: block; margin-bottom: 6px; padding-bottom: 6px; border-bottom: 1px dashed var(--line); color: var(--warn); font: 12px/1.4 ui-sans-serif, system-ui, sans-serif; white-space: normal; }
  #td-log-jump { margin-left: auto; padding: 1px 10px; font-size: 12px; text-transform: none; letter-spacing: 0; border-radius: 999px; }
  @media (max-width: 1100px) { .kpis { grid-template-columns: repeat(3, minmax(0, 1fr)); } .span4, .span8, .span6 { grid-column: span 12; } }
  @media (max-width: 640px) {
    header { padding: 10px 12px; gap: 6px 12px; } header h1 .sub, #who { display: none; }
    main { padding: 12px 12px 32px; gap: 12px; }
    .kpis { grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 12px; }
    .card { padding: 12px; }
    .fields { grid-template-columns: max-content minmax(0, 1fr); }
    .td-head { padding: 12px; } .td-body { padding: 0 12px 24px; }
    td { max-width: 170px; }
    /* The first column (the name) stays put while the rest scrolls. */
    .scroll td:first-child, .scroll th:first-child { position: sticky; left: 0; background: var(--panel); box-shadow: inset -1px 0 0 var(--line); }
    .scroll th:first-child { z-index: 1; box-shadow: inset -1px 0 0 var(--line), inset 0 -1px 0 var(--line); }
  }
</style>
</head>
<body>
<header>
  <h1>Agentic<span>CP</span><span class="sub"> · fleet &amp; queue</span></h1>
  <span id="live" class="live"><span class="dot"></span><span id="live-text">offline</span></span>
  <span class="spacer"></span>
  <span class="muted" id="who"></span>
  <button id="signout" type="button">Change token</button>
</header>
<main>
  <section class="kpis">
    <div class="card kpi"><h2>Agents online</h2><div class="v" id="k-online">–</div><div class="s" id="k-agents">–</div></div>
    <div class="card kpi"><h2>Slots used</h2><div class="v" id="k-slots">–</div><div class="s" id="k-free">–</div></div>
    <div class="card kpi"><h2>Pending</h2><div class="v" id="k-pending">–</div><div class="s" id="k-oldest">–</div></div>
    <div class="card kpi"><h2>Running</h2><div class="v" id="k-running">–</div><div class="s" id="k-assigned">–</div></div>
    <div class="card kpi"><h2>Done · last hour</h2><div class="v" id="k-done">–</div><div class="s" id="k-success">–</div></div>
    <div class="card kpi"><h2 title="From creation to assignment, over the tasks finished in the last hour">Time to place</h2><div class="v" id="k-wait">–</div><div class="s" id="k-run">–</div></div>
  </section>
  <section class="card span8">
    <h2>Throughput <span class="count muted">tasks completed per minute, last hour</span></h2>
    <div class="thr-now"><b id="thr-now">–</b><span class="muted" id="thr-note"></span></div>
    <div class="chart" id="thr-chart" role="img" aria-label="Tasks completed per minute over the last hour">
      <div class="yaxis" id="thr-y"></div>
      <div class="plot"><div id="thr-grid"></div><div class="bars" id="thr"></div></div>
      <div class="xaxis" id="thr-x"></div>
    </div>
  </section>
  <section class="card span4"><h2>Queue by priority</h2><div class="prio" id="prio"></div></section>
  <section class="card span8">
    <h2>Fleet <span class="count muted" id="fleet-count"></span></h2>
    <div class="chips" id="agent-chips"></div>
    <input id="filter" placeholder="Filter by name, provider, region, capability…" style="width:100%;margin-bottom:8px">
    <div class="scroll"><table><thead><tr><th>Agent</th><th>Status</th><th>Provider · region</th><th>Load</th><th>Capabilities</th><th>Last heartbeat</th></tr></thead><tbody id="agents"></tbody></table></div>
    <div class="pager"><span id="page-info"></span><button id="prev" type="button">‹</button><button id="next" type="button">›</button></div>
  </section>
  <section class="card span4"><h2>Live events <span class="count muted" id="ev-count"></span></h2><div id="log" class="scroll"></div></section>
  <section class="card span12">
    <h2>Tasks <span class="count muted" id="task-count"></span></h2>
    <div class="chips" id="task-chips" role="group" aria-label="Show tasks by status"></div>
    <div class="scroll"><table><thead><tr><th>Task</th><th>Status</th><th>Type</th><th>Priority</th><th>Agent</th><th>Attempt</th><th>Created</th><th>Result / reason</th></tr></thead><tbody id="tasks"></tbody></table></div>
  </section>
</main>
<dialog id="task-detail" aria-labelledby="td-title">
  <div class="td">
    <div class="td-head">
      <div><h2 id="td-title">Task</h2><div class="mono" id="td-id"></div></div>
      <button type="button" id="td-close" aria-label="Close the task detail">✕</button>
    </div>
    <div class="td-body">
      <div class="td-note" id="td-note" hidden></div>
      <dl class="fields" id="td-fields"></dl>
      <h3>Requirements</h3><pre id="td-requirements"></pre>
      <h3>Payload</h3><pre id="td-payload"></pre>
      <h3>Result</h3><pre id="td-result"></pre>
      <h3>Error</h3><pre id="td-error"></pre>
      <h3>Events <span class="muted" id="td-ev-count"></span></h3>
      <ol class="td-events" id="td-events"></ol>
      <section aria-labelledby="td-log-title">
        <h3 class="td-log-head"><span id="td-log-title">Log</span><select id="td-log-attempt" aria-label="Attempt whose log is shown" hidden></select><span class="muted" id="td-log-state"></span><button type="button" id="td-log-jump" hidden>↓ newest</button></h3>
        <div id="task-log" role="log" aria-labelledby="td-log-title" tabindex="0" data-empty="No output."></div>
      </section>
    </div>
  </div>
</dialog>
<div id="login"><form id="login-form">
  <h2 style="margin:0;font-size:16px">Connect to the control plane</h2>
  <div class="muted">Paste an admin, operator or viewer token (printed by <code>npm start</code> in development, or <code>npm run token -- --role viewer</code>). It stays in this browser only.</div>
  <textarea id="token" placeholder="eyJhbGciOi…" spellcheck="false"></textarea>
  <div class="err" id="login-err"></div>
  <div style="display:flex;justify-content:flex-end"><button type="submit" id="connect">Connect</button></div>
</form></div>
<script>
(() => {
  const $ = (id) => document.getElementById(id)
  const api = '/api/v1'
  let token = localStorage.getItem('agenticcp.token') || ''
  const agents = new Map(), tasks = new Map(), names = new Map()
  let agentFilter = '', agentStatus = '', page = 0
  // The task table's status filter ('' for all); the table re-reads GET /tasks?status=… when it changes.
  const TASK_STATUSES = ['pending', 'assigned', 'running', 'completed', 'failed', 'cancelled', 'timed_out']
  let taskStatus = '', taskCounts = null, taskLoads = 0
  const shown = (t) => !taskStatus || taskStatus.split(',').includes(t.status)
  const PAGE = 100, TASKS = 60
  let lastEventId = null, stream = null, dirtyAgents = new Set(), dirtyTasks = new Set(), statsDirty = true, events = 0

  // Untrusted text (names, payloads, messages) goes in as text nodes, or through esc() in markup.
  const el = (tag, attrs, ...kids) => {
    const n = document.createElement(tag)
    for (const [k, v] of Object.entries(attrs || {})) if (v != null) n.setAttribute(k, v)
    for (const k of kids) if (k != null) n.append(k)
    return n
  }
  const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c])
  const span = (s) => s < 60 ? s + ' s' : s < 3600 ? Math.round(s / 60) + ' min' : s < 172800 ? Math.round(s / 3600) + ' h' : s < 63072000 ? Math.round(s / 86400) + ' d' : Math.round(s / 31557600) + ' y'
  const ago = (iso) => { if (!iso) return '–'; const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000); return s < -1 ? 'in ' + span(-s) : span(Math.max(0, s)) + ' ago' }
  const num = (n) => (n ?? 0).toLocaleString()
  // Short enough for a KPI card: 3 ms, 4.2 s, 17 s, 6 min, 5 h.
  const secs = (x) => x == null ? '–' : x < 0.9995 ? Math.round(x * 1000) + ' ms' : x < 9.95 ? x.toFixed(1) + ' s' : x < 119.5 ? Math.round(x) + ' s' : x < 7170 ? Math.round(x / 60) + ' min' : Math.round(x / 3600) + ' h'

  async function get(path) {
    const res = await fetch(api + path, { headers: { authorization: 'Bearer ' + token } })
    if (res.status === 401 || res.status === 403) { showLogin('That token was refused (' + res.status + ').'); throw new Error('auth') }
    if (!res.ok) throw new Error(path + ': ' + res.status)
    return res.json()
  }
  function showLogin(msg) { if ($('task-detail').open) $('task-detail').close(); $('login').classList.add('show'); $('login-err').textContent = msg || ''; $('token').value = token; live('off', 'offline'); stream?.abort() }
  function live(cls, text) { $('live').className = 'live ' + cls; $('live-text').textContent = text }

  async function loadAgents() {
    const seen = new Set(); let cursor = null
    do {
      const p = await get('/agents?limit=100&order=asc' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : ''))
      for (const a of p.items) { agents.set(a.id, a); seen.add(a.id) }
      cursor = p.nextCursor
    } while (cursor)
    for (const id of [...agents.keys()]) if (!seen.has(id)) agents.delete(id)
    renderAgents()
  }
  async function loadTasks() {
    const n = ++taskLoads
    const p = await get('/tasks?limit=' + TASKS + (taskStatus ? '&status=' + encodeURIComponent(taskStatus) : ''))
    if (n !== taskLoads) return // the filter changed meanwhile: a newer read is on its way
    tasks.clear(); for (const t of p.items) tasks.set(t.id, t)
    renderTasks()
  }
  function renderTaskChips() {
    const c = taskCounts
    $('task-chips').replaceChildren(...['', ...TASK_STATUSES].map((s) => el('button', { type: 'button', class: 'chip' + (s === taskStatus ? ' sel' : ''), 'data-s': s, 'aria-pressed': String(s === taskStatus) },
      (s ? s.replace('_', ' ') : 'all') + (c ? ' ' + num(s ? c.byStatus[s] : c.total) : ''))))
  }
  function filterTasks(s) {
    if (s === taskStatus) return
    taskStatus = s; tasks.clear(); renderTaskChips(); renderTasks(true)
    loadTasks().catch(() => {})
  }
  async function loadStats() {
    const [a, t] = await Promise.all([get('/agents/statistics'), get('/tasks/statistics')])
    $('k-online').textContent = num(a.byStatus.online); $('k-agents').textContent = num(a.total) + ' registered · ' + num(a.byStatus.offline) + ' offline'
    $('k-slots').textContent = num(a.slots.used); $('k-free').textContent = num(a.slots.free) + ' free of ' + num(a.slots.total)
    $('k-pending').textContent = num(t.queue.pending); $('k-oldest').textContent = t.queue.oldestPendingAgeSeconds == null ? 'queue empty' : 'oldest ' + secs(t.queue.oldestPendingAgeSeconds)
    $('k-running').textContent = num(t.byStatus.running); $('k-assigned').textContent = num(t.byStatus.assigned) + ' assigned, not started'
    const h = t.recent.last60Minutes
    $('k-done').textContent = num(h.completed); $('k-success').textContent = (t.recent.successRate == null ? '–' : (t.recent.successRate * 100).toFixed(1) + '% success') + ' · ' + num(h.failed + h.timedOut) + ' failed'
    $('k-wait').replaceChildren(secs(t.createToAssignedSeconds.p50), el('small', null, ' / ' + secs(t.createToAssignedSeconds.p95))); $('k-run').textContent = 'p50 / p95 · run p50 ' + secs(t.durationSeconds.p50)
    renderThroughput(t.recent.completedPerMinute)
    taskCounts = t; renderTaskChips()
    const pmax = Math.max(1, ...Object.values(t.queue.byPriority))
    let rows = ''
    for (let p = 10; p >= 1; p--) { const n = t.queue.byPriority[p] || 0; rows += '<span class="muted">P' + p + '</span><span class="b"><i style="width:' + (n / pmax) * 100 + '%"></i></span><span style="text-align:right">' + num(n) + '</span>' }
    $('prio').innerHTML = rows
    statsDirty = false
  }

  // Round a chart's top up to 1, 2, 5 or 10 times a power of ten, so its axis reads easily.
  const niceMax = (n) => { if (n <= 1) return 1; const p = Math.pow(10, Math.floor(Math.log10(n))); for (const m of [1, 2, 5, 10]) if (m * p >= n) return m * p; return 10 * p }
  const hhmm = (d) => d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' })
  // completedPerMinute: 60 values, oldest first; the last is the minute under way.
  function renderThroughput(perMinute) {
    const n = perMinute.length, now = Date.now()
    const peak = Math.max(0, ...perMinute), top = niceMax(peak), total = perMinute.reduce((a, b) => a + b, 0)
    const last = perMinute[n - 2] ?? 0, current = perMinute[n - 1] ?? 0
    $('thr-now').textContent = num(last) + ' / min'
    $('thr-note').textContent = 'last full minute · ' + num(current) + ' so far this minute · peak ' + num(peak) + ' · ' + num(total) + ' this hour'
    const ticks = top % 2 === 0 ? [top, top / 2, 0] : [top, 0]
    $('thr-y').replaceChildren(...ticks.map((v) => el('span', { style: 'top:' + (100 - (v / top) * 100) + '%' }, num(v))))
    $('thr-grid').replaceChildren(...ticks.filter((v) => v > 0).map((v) => el('div', { class: 'gl', style: 'top:' + (100 - (v / top) * 100) + '%' })))
    $('thr').replaceChildren(...perMinute.map((c, i) => el('div', {
      class: i === n - 1 ? 'partial' : null,
      title: (i === n - 1 ? 'this minute so far' : hhmm(new Date(now - (n - 1 - i) * 60000))) + ': ' + c + ' completed',
      style: 'height:' + Math.max(c ? 1 : 0, (c / top) * 100) + '%',
    })))
    const label = (i) => (i === n - 1 ? 'now' : hhmm(new Date(now - (n - 1 - i) * 60000)))
    $('thr-x').replaceChildren(...[0, n / 4, n / 2, (3 * n) / 4, n - 1].map(Math.round).map((i) => el('span', { style: 'left:' + ((i + 0.5) / n) * 100 + '%' }, label(i))))
  }

  function renderAgents() {
    const q = agentFilter.toLowerCase()
    const all = [...agents.values()]
    const counts = {}; for (const a of all) counts[a.status] = (counts[a.status] || 0) + 1
    $('agent-chips').innerHTML = ['', 'online', 'draining', 'maintenance', 'error', 'offline'].map((s) => '<button type="button" class="chip' + (s === agentStatus ? ' sel' : '') + '" data-s="' + s + '" aria-pressed="' + (s === agentStatus) + '">' + (s || 'all') + ' ' + (s ? counts[s] || 0 : all.length) + '</button>').join('')
    const rows = all.filter((a) => (!agentStatus || a.status === agentStatus) && (!q || [a.name, a.provider, a.region, ...a.capabilities].join(' ').toLowerCase().includes(q)))
      .sort((x, y) => y.activeTasks / y.maxConcurrentTasks - x.activeTasks / x.maxConcurrentTasks || x.name.localeCompare(y.name))
    const pages = Math.max(1, Math.ceil(rows.length / PAGE)); page = Math.min(page, pages - 1)
    $('agents').innerHTML = rows.slice(page * PAGE, page * PAGE + PAGE).map((a) => {
      const pct = a.maxConcurrentTasks ? (a.activeTasks / a.maxConcurrentTasks) * 100 : 0
      return '<tr data-agent-id="' + esc(a.id) + '"><td title="' + esc(a.id) + '">' + esc(a.name) + '</td><td><span class="st ' + esc(a.status) + '">' + esc(a.status) + '</span></td><td>' + esc(a.provider) + (a.region ? ' · ' + esc(a.region) : '') + '</td><td><span class="load"><i style="width:' + pct + '%;background:' + (pct >= 100 ? 'var(--warn)' : 'var(--ok)') + '"></i></span>' + a.activeTasks + '/' + a.maxConcurrentTasks + '</td><td class="muted">' + esc(a.capabilities.join(', ')) + '</td><td class="muted hb" data-at="' + esc(a.lastHeartbeatAt || '') + '">' + ago(a.lastHeartbeatAt) + '</td></tr>'
    }).join('')
    $('fleet-count').textContent = rows.length + ' shown of ' + all.length
    $('page-info').textContent = 'page ' + (page + 1) + ' of ' + pages
  }
  function renderTasks(loading) {
    const list = [...tasks.values()].sort((a, b) => (a.id < b.id ? 1 : -1))
    for (const t of list.splice(TASKS)) tasks.delete(t.id)
    const which = taskStatus ? taskStatus.replace(/_/g, ' ') + ' ' : ''
    if (!list.length) $('tasks').replaceChildren(el('tr', null, el('td', { colspan: '8', class: 'muted' }, loading ? 'Loading…' : 'No ' + which + 'tasks.')))
    else $('tasks').innerHTML = list.map((t) => {
      const agent = t.agentId ? agents.get(t.agentId) : null
      const note = t.error ? t.error.code + ': ' + t.error.message : t.status === 'pending' ? (t.pendingReason || '') : t.result != null ? JSON.stringify(t.result) : ''
      return '<tr data-task-id="' + esc(t.id) + '" tabindex="0"><td title="' + esc(t.id) + '">' + esc(t.name) + '</td><td><span class="st ' + esc(t.status) + '" data-status="' + esc(t.status) + '">' + esc(t.status.replace('_', ' ')) + (t.cancelRequested && t.status === 'running' ? ' · cancelling' : '') + '</span></td><td class="mono">' + esc(t.type) + '</td><td>' + esc(t.priority) + '</td><td>' + (agent ? esc(agent.name) : t.agentId ? '<span class="mono">' + esc(t.agentId.slice(0, 8)) + '</span>' : '–') + '</td><td>' + esc(t.attempt + '/' + t.maxAttempts) + '</td><td class="muted">' + ago(t.createdAt) + '</td><td class="muted">' + esc(note) + '</td></tr>'
    }).join('')
    $('task-count').textContent = list.length + ' newest ' + which.trim()
  }
  // One line for an event: the move (from → to) with why (reason, error code) and the attempt.
  // task.requeued after a failure has no from: "requeued (retry, attempt 1) → pending".
  function describe(e) {
    const d = e.data || {}
    const why = []
    if (d.reason) why.push(String(d.reason))
    if (d.error && typeof d.error === 'object' && d.error.code) why.push(String(d.error.code))
    if (d.via) why.push('via ' + d.via)
    if (d.attempt != null) why.push('attempt ' + d.attempt)
    const note = why.length ? ' (' + why.join(', ') + ')' : ''
    if (e.type === 'task.requeued' && !d.from) return 'requeued' + note + ' → ' + (d.to || 'pending')
    if (d.to) return (d.from ? d.from + ' → ' : '') + d.to + note
    if (e.type === 'task.progress') return 'progress ' + (d.progress == null ? '–' : d.progress + '%') + note
    if (e.type === 'task.created') return [d.type, d.priority != null ? 'priority ' + d.priority : null].filter(Boolean).join(', ')
    if (e.type === 'agent.registered') return [d.provider, d.region, d.takeover ? 'takeover' : null].filter(Boolean).join(' · ')
    if (e.type === 'agent.deregistered') return d.requeued ? d.requeued + ' task(s) requeued' : ''
    if (e.type === 'task.deleted' && d.status) return 'was ' + d.status
    return why.join(', ')
  }
  function logEvent(e) {
    events++
    // Who it is about: the task's (or else the agent's) name, known from the tables or an earlier event.
    const d = e.data || {}
    const named = d.name ? (e.type === 'task.created' ? e.taskId : e.agentId) : null
    if (named) { names.set(named, String(d.name)); if (names.size > 5000) names.delete(names.keys().next().value) }
    const about = e.taskId || e.agentId
    const subject = (tasks.get(about) || agents.get(about))?.name || names.get(about) || (about ? about.slice(0, 8) : null)
    const what = describe(e)
    const row = el('div', { title: JSON.stringify(d), 'data-task-id': e.taskId || null }, el('span', { class: 't' }, new Date(e.time).toLocaleTimeString()),
      el('span', { class: 'b' }, el('span', { class: 'k' }, e.type), subject ? el('span', { class: 'n' }, subject) : null, what ? el('span', { class: 'd muted' }, what) : null))
    const log = $('log'); log.prepend(row); while (log.childElementCount > 150) log.lastElementChild.remove()
    $('ev-count').textContent = num(events) + ' received'
  }
  function onEvent(e) {
    logEvent(e)
    if (detailId && e.taskId === detailId) detailEvent(e)
    if (e.agentId) dirtyAgents.add(e.agentId)
    if (e.taskId) dirtyTasks.add(e.taskId)
    statsDirty = true
  }

  // A changed task is re-read: one that left the filter's statuses leaves the table, one that
  // entered it joins, and the open detail shows the new state.
  async function refreshTask(id) {
    const r = await fetch(api + '/tasks/' + id, { headers: { authorization: 'Bearer ' + token } })
    if (r.status === 404) { tasks.delete(id); if (id === detailId) { detailGone = true; renderDetail() } return }
    if (!r.ok) return
    const x = await r.json()
    if (shown(x)) tasks.set(id, x); else tasks.delete(id)
    if (id === detailId) { detailTask = x; renderDetail() }
  }

  // The task detail: its fields, and its history (GET /tasks/{id}/events, oldest first) merged
  // with the stream's events for it by event id, so neither a gap nor a duplicate shows.
  const dlg = $('task-detail')
  let detailId = null, detailTask = null, detailEvents = new Map(), detailGone = false
  const MAX_DETAIL_EVENTS = 1000
  const when = (iso) => { if (!iso) return '–'; const d = new Date(iso); return (d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString()) }
  const stamp = (iso) => (iso ? when(iso) + ' (' + ago(iso) + ')' : '–')
  function pretty(pre, v) {
    const text = v === undefined || v === null ? 'none' : JSON.stringify(v, null, 2)
    pre.className = v === undefined || v === null ? 'none' : ''
    pre.textContent = text.length > 20000 ? text.slice(0, 20000) + '\\n… ' + num(text.length - 20000) + ' more characters' : text
  }
  function openTask(id) {
    detailId = id; detailTask = tasks.get(id) || null; detailEvents = new Map(); detailGone = false
    $('td-events').replaceChildren(); $('td-ev-count').textContent = 'loading…'
    renderDetail()
    if (!dlg.open) dlg.showModal()
    $('td-events').dataset.stick = '1'
    logPinned = false; logLatest = detailTask?.attempt || 0; openLog(id, null)
    refreshTask(id).catch(() => {})
    loadDetailEvents(id).catch(() => { if (id === detailId) $('td-ev-count').textContent = 'could not be read' })
  }
  async function loadDetailEvents(id) {
    let after = 0
    for (let pages = 0; pages < 20; pages++) {
      const p = await get('/tasks/' + encodeURIComponent(id) + '/events?limit=1000&after=' + after)
      if (id !== detailId) return
      for (const e of p.items) detailEvents.set(e.id, e)
      renderDetailEvents()
      if (p.items.length < 1000) return
      after = p.nextAfter
    }
  }
  function detailEvent(e) {
    detailEvents.set(e.id, e)
    if (e.type === 'task.deleted') detailGone = true
    renderDetailEvents()
    if (detailGone) renderDetail()
  }
  function renderDetail() {
    const t = detailTask
    $('td-title').textContent = t ? t.name : 'Task'
    $('td-id').textContent = detailId || ''
    const note = $('td-note')
    note.hidden = !detailGone && !!t
    note.textContent = detailGone ? 'This task was deleted.' : t ? '' : 'Loading…'
    if (!t) { $('td-fields').replaceChildren(); for (const k of ['requirements', 'payload', 'result', 'error']) $('td-' + k).textContent = ''; return }
    const agent = t.agentId ? agents.get(t.agentId) : null
    const status = el('span', null, el('span', { class: 'st ' + t.status }, t.status.replace('_', ' ')), t.cancelRequested ? ' · cancel requested' : null)
    const fields = [
      ['status', 'Status', status],
      ['type', 'Type', el('span', { class: 'mono' }, t.type)],
      ['agent', 'Agent', agent ? agent.name : t.agentId || '–'],
      ['attempt', 'Attempt', t.attempt + ' of ' + t.maxAttempts],
      ['failures', 'Failures', String(t.failures)],
      ['lostCount', 'Lost count', String(t.lostCount)],
      ['priority', 'Priority', String(t.priority)],
      ['progress', 'Progress', t.progress == null ? '–' : t.progress + '%'],
      ['pendingReason', 'Pending reason', t.pendingReason || '–'],
      ['timeoutSeconds', 'Timeout', t.timeoutSeconds + ' s'],
      ['idempotencyKey', 'Idempotency key', t.idempotencyKey || '–'],
      ['version', 'Version', String(t.version)],
      ['createdAt', 'Created', stamp(t.createdAt)],
      ['scheduledAt', 'Scheduled', stamp(t.scheduledAt)],
      ['assignedAt', 'Assigned', stamp(t.assignedAt)],
      ['startedAt', 'Started', stamp(t.startedAt)],
      ['finishedAt', 'Finished', stamp(t.finishedAt)],
      ['updatedAt', 'Updated', stamp(t.updatedAt)],
    ]
    $('td-fields').replaceChildren(...fields.flatMap(([k, label, v]) => [el('dt', null, label), el('dd', { 'data-field': k }, v)]))
    pretty($('td-requirements'), t.requirements)
    pretty($('td-payload'), t.payload)
    pretty($('td-result'), t.result)
    const err = $('td-error')
    err.className = t.error ? 'bad' : 'none'
    err.textContent = t.error ? t.error.code + ': ' + t.error.message : 'none'
    syncLog(t)
  }
  function renderDetailEvents() {
    const box = $('td-events')
    // Stay at the newest (the bottom) unless the reader scrolled up.
    const stick = box.dataset.stick === '1' || box.scrollTop + box.clientHeight >= box.scrollHeight - 8
    const all = [...detailEvents.values()].sort((a, b) => a.id - b.id)
    const list = all.slice(-MAX_DETAIL_EVENTS)
    box.replaceChildren(...list.map((e) => el('li', { 'data-event-id': String(e.id), title: JSON.stringify(e.data) },
      el('span', { class: 't' }, when(e.time)), el('span', { class: 'k' }, e.type), el('span', { class: 'muted' }, describe(e) || ' '))))
    $('td-ev-count').textContent = num(all.length) + (all.length > list.length ? ' (the newest ' + num(list.length) + ' shown)' : '')
    if (stick) { box.scrollTop = box.scrollHeight; delete box.dataset.stick }
  }
  // The task's log (GET /tasks/{id}/logs): what is stored, then, while the attempt is live,
  // followed on its event stream (read with fetch, resumed with Last-Event-ID after a drop,
  // ended by 'event: end'). Chunks go in as text nodes (the output is untrusted); the page
  // keeps the newest MAX_LOG_CHUNKS. It scrolls with the output while the reader is at the
  // bottom, and stays put once they scroll up.
  const MAX_LOG_CHUNKS = 5000, LOG_PAGE = 1000, LOG_RETRIES = 5
  const logBox = $('task-log')
  let logCtl = null, logId = null, logAttempt = null, logPinned = false, logLatest = 0, logLast = -1
  let logState = '', logStateLabel = '', logCount = 0, logCut = 0, logStick = true, logQueue = [], logTimer = null, logUnseen = false
  const STREAM_CLASSES = { stdout: 'stdout', stderr: 'stderr', system: 'system' }
  function setLogState(state, text) {
    logState = state; logStateLabel = text; logBox.dataset.state = state
    $('td-log-state').textContent = [text, logCount + logCut ? num(logCount + logCut) + ' chunk' + (logCount + logCut === 1 ? '' : 's') : ''].filter(Boolean).join(' · ')
  }
  const logStateText = { loading: 'loading…', live: 'live', reconnecting: 'reconnecting…', ended: 'ended', error: 'could not be read', lost: 'connection lost, reopen to retry' }
  function stopLog() {
    logCtl?.abort(); logCtl = null
    clearTimeout(logTimer); logTimer = null; logQueue = []
  }
  function renderLogAttempts() {
    const sel = $('td-log-attempt')
    const n = Math.max(logLatest, logAttempt || 0)
    sel.hidden = n <= 1
    if (sel.hidden) return
    if (sel.options.length !== n) sel.replaceChildren(...Array.from({ length: n }, (_, i) => n - i).map((a) => el('option', { value: String(a) }, 'attempt ' + a + (a === n ? ' (latest)' : ''))))
    sel.value = String(logAttempt)
  }
  // attempt: a number, or null for the task's latest.
  function openLog(id, attempt) {
    stopLog()
    const ctl = (logCtl = new AbortController())
    logId = id; logAttempt = attempt; logLast = -1; logCount = 0; logCut = 0; logStick = true; logUnseen = false
    logBox.replaceChildren(); logBox.dataset.attempt = attempt == null ? '' : String(attempt)
    $('td-log-jump').hidden = true
    setLogState('loading', logStateText.loading)
    loadLog(id, ctl).catch(() => { if (!ctl.signal.aborted) setLogState('error', logStateText.error) })
      .finally(() => { if (logCtl === ctl) logCtl = null })
  }
  const logUrl = (id, attempt) => api + '/tasks/' + encodeURIComponent(id) + '/logs?' + (attempt == null ? '' : 'attempt=' + attempt + '&')
  async function loadLog(id, ctl) {
    let live = false
    for (;;) {
      const res = await fetch(logUrl(id, logAttempt) + 'limit=' + LOG_PAGE + '&after=' + logLast, { headers: { authorization: 'Bearer ' + token }, signal: ctl.signal })
      if (res.status === 404) { setLogState('error', 'no such task'); return }
      if (!res.ok) throw new Error('logs ' + res.status)
      const p = await res.json()
      if (ctl.signal.aborted) return
      if (logAttempt == null) { logAttempt = p.attempt; logBox.dataset.attempt = String(p.attempt) }
      logLatest = Math.max(logLatest, p.attempt, detailTask?.attempt || 0); renderLogAttempts()
      addLogChunks(p.items)
      live = p.live
      if (p.items.length < LOG_PAGE) break
    }
    if (!live) { flushLog(); setLogState('ended', logCount + logCut ? logStateText.ended : 'no output'); return }
    await followLog(id, ctl)
  }
  async function followLog(id, ctl) {
    const signal = ctl.signal
    for (let tries = 0; !signal.aborted;) {
      let ended = false, opened = 0
      try {
        const headers = { authorization: 'Bearer ' + token, accept: 'text/event-stream' }
        if (logLast >= 0) headers['last-event-id'] = String(logLast)
        const res = await fetch(logUrl(id, logAttempt).replace(/[?&]$/, ''), { headers, signal })
        if (res.status === 404 || res.status === 401 || res.status === 403) { setLogState('error', logStateText.error + ' (' + res.status + ')'); return }
        if (!res.ok || !res.body) throw new Error('log stream ' + res.status)
        setLogState('live', logStateText.live)
        opened = Date.now()
        await readSSE(res, (type, _id, data) => {
          if (type === 'end') { ended = true; return }
          if (!STREAM_CLASSES[type]) return
          tries = 0
          addLogChunks([JSON.parse(data)])
        })
      } catch (err) { if (signal.aborted) return }
      if (ended || signal.aborted) break
      // A connection that held a while (past a keep-alive) before it dropped starts the count afresh.
      if (opened && Date.now() - opened > 20000) tries = 0
      if (++tries > LOG_RETRIES) { flushLog(); setLogState('lost', logStateText.lost); return }
      setLogState('reconnecting', logStateText.reconnecting)
      await new Promise((r) => { const t = setTimeout(r, 500 * 2 ** (tries - 1)); signal.addEventListener('abort', () => { clearTimeout(t); r() }, { once: true }) })
    }
    if (signal.aborted) return
    flushLog(); setLogState('ended', logStateText.ended)
  }
  // Chunks arrive in seq order; one already shown (a resume's overlap) is skipped. They are
  // drawn in batches, so a burst is one layout.
  function addLogChunks(items) {
    for (const c of items) {
      if (c.seq <= logLast) continue
      logLast = c.seq; logQueue.push(c)
    }
    if (logQueue.length > MAX_LOG_CHUNKS) { logCut += logQueue.length - MAX_LOG_CHUNKS; logQueue.splice(0, logQueue.length - MAX_LOG_CHUNKS) }
    if (logQueue.length && !logTimer) logTimer = setTimeout(flushLog, 40)
  }
  function flushLog() {
    clearTimeout(logTimer); logTimer = null
    if (!logQueue.length) return
    const frag = document.createDocumentFragment()
    for (const c of logQueue) frag.append(el('span', { class: STREAM_CLASSES[c.stream] || 'stdout', 'data-seq': String(c.seq) }, c.data))
    logCount += logQueue.length; logQueue = []
    const before = logBox.scrollHeight
    logBox.append(frag)
    if (logCount > MAX_LOG_CHUNKS) {
      const first = logBox.querySelector('.cut') ? 1 : 0
      const drop = logCount - MAX_LOG_CHUNKS
      for (let i = 0; i < drop; i++) logBox.children[first]?.remove()
      logCount -= drop; logCut += drop
    }
    if (logCut) {
      let note = logBox.querySelector('.cut')
      if (!note) { note = el('span', { class: 'cut' }); logBox.prepend(note) }
      note.textContent = num(logCut) + ' earlier chunk' + (logCut === 1 ? ' is' : 's are') + ' not shown here (only the newest ' + num(MAX_LOG_CHUNKS) + ' are kept): read them from GET /api/v1/tasks/' + logId + '/logs?attempt=' + logAttempt + '.'
    }
    if (logStick) logBox.scrollTop = logBox.scrollHeight
    else { logUnseen = true; $('td-log-jump').hidden = false; if (logCut) logBox.scrollTop -= Math.max(0, before - logBox.scrollHeight) }
    setLogState(logState, logStateLabel)
  }
  // At the bottom (within a few pixels) the log follows the output; scrolled up, it stays.
  logBox.addEventListener('scroll', () => {
    logStick = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 4
    if (logStick) { logUnseen = false; $('td-log-jump').hidden = true }
  })
  $('td-log-jump').addEventListener('click', () => { logStick = true; logBox.scrollTop = logBox.scrollHeight; $('td-log-jump').hidden = true })
  $('td-log-attempt').addEventListener('change', (e) => { if (detailId) { logPinned = true; openLog(detailId, Number(e.target.value)) } })
  // As the open task moves on: a new attempt is shown (unless the reader chose one), and an
  // attempt that became live again (placed, then started) is followed.
  function syncLog(t) {
    if (!t || t.id !== logId || logAttempt == null || logState === 'loading') return
    if (t.attempt > logLatest) { logLatest = t.attempt; renderLogAttempts() }
    const live = t.status === 'assigned' || t.status === 'running'
    if (!logPinned && t.attempt !== logAttempt) openLog(t.id, null)
    else if (t.attempt === logAttempt && live && !logCtl && logState !== 'lost') {
      const ctl = (logCtl = new AbortController())
      followLog(t.id, ctl).catch(() => {}).finally(() => { if (logCtl === ctl) logCtl = null })
    }
  }
  $('td-close').addEventListener('click', () => dlg.close())
  dlg.addEventListener('click', (e) => { if (e.target === dlg) dlg.close() }) // the backdrop
  dlg.addEventListener('close', () => { detailId = null; detailTask = null; detailEvents = new Map(); stopLog(); logId = null })
  const rowTask = (e) => e.target.closest('[data-task-id]')?.dataset.taskId
  $('tasks').addEventListener('click', (e) => { const id = rowTask(e); if (id) openTask(id) })
  $('tasks').addEventListener('keydown', (e) => { const id = (e.key === 'Enter' || e.key === ' ') && rowTask(e); if (id) { e.preventDefault(); openTask(id) } })
  $('log').addEventListener('click', (e) => { const id = rowTask(e); if (id) openTask(id) })

  // Event bursts become one refresh a second: changed agents and tasks are re-read by id.
  async function flush() {
    const a = [...dirtyAgents].slice(0, 50), t = [...dirtyTasks].slice(0, 50)
    a.forEach((id) => dirtyAgents.delete(id)); t.forEach((id) => dirtyTasks.delete(id))
    await Promise.all([
      ...a.map((id) => fetch(api + '/agents/' + id, { headers: { authorization: 'Bearer ' + token } }).then((r) => r.status === 404 ? agents.delete(id) : r.ok ? r.json().then((x) => agents.set(id, x)) : null)),
      ...t.map(refreshTask),
    ])
    if (a.length) renderAgents()
    if (t.length) renderTasks()
    if (statsDirty) await loadStats()
  }

  // Server-Sent Events read from a fetch response (EventSource cannot send the Authorization
  // header): calls on(event, id, data) for each message with data, until the stream ends.
  async function readSSE(res, on) {
    const reader = res.body.getReader(), dec = new TextDecoder()
    let buf = ''
    for (;;) {
      const { value, done } = await reader.read()
      if (done) return
      buf += dec.decode(value, { stream: true }).replace(/\\r\\n?/g, '\\n')
      let i
      while ((i = buf.indexOf('\\n\\n')) >= 0) {
        const block = buf.slice(0, i); buf = buf.slice(i + 2)
        let id = null, type = 'message', data = null
        for (const line of block.split('\\n')) {
          const c = line.indexOf(':'), field = c < 0 ? line : line.slice(0, c)
          const v = c < 0 ? '' : line.slice(c + (line[c + 1] === ' ' ? 2 : 1))
          if (field === 'id') id = v; else if (field === 'event') type = v; else if (field === 'data') data = data === null ? v : data + '\\n' + v
        }
        if (data !== null) on(type, id, data)
      }
    }
  }

  async function listen() {
    for (;;) {
      stream = new AbortController()
      try {
        const headers = { authorization: 'Bearer ' + token, accept: 'text/event-stream' }
        if (lastEventId) headers['last-event-id'] = lastEventId
        const res = await fetch(api + '/events', { headers, signal: stream.signal })
        if (res.status === 401 || res.status === 403) return showLogin('That token was refused (' + res.status + ').')
        if (!res.ok || !res.body) throw new Error('stream ' + res.status)
        live('on', 'live')
        await readSSE(res, (_type, id, data) => { lastEventId = id; onEvent(JSON.parse(data)) })
      } catch (err) { if (stream.signal.aborted) return }
      live('retry', 'reconnecting…')
      await new Promise((r) => setTimeout(r, 2000))
    }
  }

  async function start() {
    $('login').classList.remove('show')
    live('retry', 'connecting…')
    try {
      await Promise.all([loadAgents(), loadStats()])
      await loadTasks()
    } catch (err) { if (String(err.message) !== 'auth') live('retry', 'API unreachable, retrying…'); return }
    try { const p = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))); $('who').textContent = p.sub + ' · ' + p.role } catch {}
    listen()
  }

  $('login-form').addEventListener('submit', (e) => { e.preventDefault(); token = $('token').value.trim(); localStorage.setItem('agenticcp.token', token); start() })
  $('signout').addEventListener('click', () => showLogin(''))
  $('filter').addEventListener('input', (e) => { agentFilter = e.target.value; page = 0; renderAgents() })
  $('agent-chips').addEventListener('click', (e) => { const s = e.target.closest('[data-s]')?.dataset.s; if (s !== undefined) { agentStatus = s; page = 0; renderAgents() } })
  $('task-chips').addEventListener('click', (e) => { const s = e.target.closest('[data-s]')?.dataset.s; if (s !== undefined) filterTasks(s) })
  $('prev').addEventListener('click', () => { page = Math.max(0, page - 1); renderAgents() })
  $('next').addEventListener('click', () => { page++; renderAgents() })
  setInterval(() => { for (const td of document.querySelectorAll('td.hb')) td.textContent = ago(td.dataset.at) }, 1000)
  setInterval(() => { if (token && !$('login').classList.contains('show')) flush().catch(() => {}) }, 1000)
  setInterval(() => { if (token && !$('login').classList.contains('show')) Promise.all([loadAgents(), loadTasks()]).catch(() => {}) }, 30000)
  if (token) start(); else showLogin('')
})()
</script>
</body>
</html>`
