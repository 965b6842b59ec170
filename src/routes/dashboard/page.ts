import { dashboardScript, dashboardScriptHash } from './client.bundle'

/**
 * The operator dashboard: one self-contained page (no CDN), served by the app. Its script
 * is TypeScript in ./client (checked by tsc and Biome), bundled by `npm run build:dashboard`
 * into ./client.bundle.ts and inlined here, so the page needs no file at run time (Workers
 * have none). It reads the API with a token the operator pastes once (kept in localStorage),
 * and stays live on the event stream (GET /api/v1/events as Server-Sent Events, read with
 * fetch so the token travels in the Authorization header, never in a URL), resuming with
 * Last-Event-ID after a drop. Built for fleets of a thousand agents: the agent table is
 * filtered and paged in the browser, and event bursts are folded into one refresh a second.
 * Admin and operator tokens get actions on tasks and agents, each confirmed in a dialog.
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
  .span3 { grid-column: span 3; } .span9 { grid-column: span 9; } .span4 { grid-column: span 4; } .span8 { grid-column: span 8; } .span6 { grid-column: span 6; } .span12 { grid-column: span 12; }
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
  .prio .b, .fc .b { height: 10px; border-radius: 5px; background: var(--panel2); overflow: hidden; }
  .prio .b i { display: block; height: 100%; background: var(--info); }
  /* Failures by code: the commonest first, its bar the longest, in red. */
  #failures { display: grid; gap: 6px; font-size: 12px; max-height: 300px; overflow: auto; }
  .fc { display: grid; grid-template-columns: minmax(0, 11ch) minmax(40px, 1fr) max-content; gap: 10px; align-items: center; }
  .fc > span:first-child { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; color: var(--text); }
  .fc .b i { display: block; height: 100%; background: var(--bad); }
  .fc.other .b i { background: var(--idle); }
  .fc .n { text-align: right; font-variant-numeric: tabular-nums; }
  .chips { display: flex; flex-wrap: wrap; gap: 6px; margin-bottom: 10px; }
  .chip { font-size: 12px; padding: 2px 8px; border-radius: 999px; border: 1px solid var(--line); background: transparent; color: var(--muted); cursor: pointer; user-select: none; white-space: nowrap; }
  .chip.sel { color: var(--text); border-color: var(--accent); }
  table { width: 100%; border-collapse: collapse; font-size: 13px; }
  th { text-align: left; color: var(--muted); font-weight: 500; font-size: 12px; padding: 6px 8px; position: sticky; top: 0; background: var(--panel); white-space: nowrap;
    /* A shadow, not a border: collapsed borders of sticky cells are not always painted. */
    box-shadow: inset 0 -1px 0 var(--line); }
  td { padding: 6px 8px; border-bottom: 1px solid #20283a; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; max-width: 280px; }
  /* The big tables share their card's width by set columns (a long value is cut with an ellipsis
     and has a title), so no column is pushed out of sight on a laptop; narrower, they scroll. */
  table.fixed { table-layout: fixed; }
  table.fixed th { overflow: hidden; text-overflow: ellipsis; }
  table.fixed td { max-width: none; }
  #fleet-table { min-width: 700px; } #tasks-table { min-width: 860px; }
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
  .st.quarantined { background: rgba(248,81,73,.22); color: var(--bad); }
  .qr { display: block; font-size: 11px; color: var(--muted); overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .load { display: inline-block; width: 70px; height: 6px; border-radius: 3px; background: var(--panel2); vertical-align: middle; margin-right: 6px; overflow: hidden; }
  .load i { display: block; height: 100%; background: var(--ok); }
  .rbar { display: inline-flex; width: 60%; height: 8px; border-radius: 4px; background: var(--panel2); vertical-align: middle; margin-right: 6px; overflow: hidden; }
  .rbar i { display: block; height: 100%; }
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
  tr[data-task-id], tr[data-agent-id], #log > div[data-task-id] { cursor: pointer; }
  tr[data-task-id]:focus-visible, tr[data-agent-id]:focus-visible { outline: 2px solid var(--accent); outline-offset: -2px; }
  .find { display: flex; gap: 8px; margin-bottom: 10px; }
  .find input { flex: 1; min-width: 0; }
  /* A task's and an agent's detail: a panel from the right (the whole screen on a phone); Escape closes it. */
  .drawer { margin: 0 0 0 auto; width: min(700px, 100vw); max-width: 100vw; height: 100%; max-height: 100%; padding: 0; border: 0; border-left: 1px solid var(--line); background: var(--panel); color: var(--text); }
  .drawer::backdrop { background: rgba(5,8,12,.6); }
  .drawer .td { display: flex; flex-direction: column; height: 100%; }
  .td-head { display: flex; align-items: flex-start; gap: 12px; padding: 14px 18px; border-bottom: 1px solid var(--line); }
  .td-head > div { flex: 1; min-width: 0; }
  .td-actions { display: flex; flex-wrap: wrap; gap: 6px; margin-top: 8px; }
  .td-actions:empty { display: none; }
  button.act { padding: 3px 10px; font-size: 12px; }
  button.danger { color: #ffb1ab; border-color: rgba(248,81,73,.45); }
  button.danger:hover { border-color: var(--bad); }
  button.link { padding: 0; border: 0; background: none; color: var(--accent); text-align: left; overflow-wrap: anywhere; }
  button.link:hover { text-decoration: underline; }
  .td-head h2 { margin: 0 0 2px; font-size: 16px; font-weight: 600; overflow-wrap: anywhere; }
  .td-body { flex: 1; overflow: auto; padding: 0 18px 28px; overscroll-behavior: contain; }
  .td-body h3 { font-size: 12px; text-transform: uppercase; letter-spacing: .08em; color: var(--muted); margin: 20px 0 8px; font-weight: 600; }
  .td-note { margin-top: 14px; padding: 8px 10px; border-radius: 6px; background: rgba(210,153,34,.12); color: var(--warn); font-size: 13px; }
  .fields { display: grid; grid-template-columns: max-content minmax(0, 1fr) max-content minmax(0, 1fr); gap: 7px 14px; margin: 16px 0 0; font-size: 13px; }
  .fields dt { color: var(--muted); } .fields dd { margin: 0; overflow-wrap: anywhere; font-variant-numeric: tabular-nums; }
  #td-summary + section h3 { margin-top: 16px; }
  .drawer table { margin: 0; }
  .drawer .bad { color: var(--bad); }
  .drawer pre { margin: 0; background: var(--panel2); border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; font: 12px/1.45 ui-monospace, SFMono-Regular, Menlo, monospace; max-height: 260px; overflow: auto; white-space: pre-wrap; overflow-wrap: anywhere; }
  .drawer pre.none { color: var(--muted); }
  .drawer pre.bad { color: var(--bad); }
  /* The confirmation every action asks for. */
  #confirm { width: min(480px, 92vw); padding: 20px; border: 1px solid var(--line); border-radius: 12px; background: var(--panel); color: var(--text); }
  #confirm::backdrop { background: rgba(5,8,12,.7); }
  #confirm h2 { margin: 0 0 8px; font-size: 16px; overflow-wrap: anywhere; }
  #confirm p { margin: 0 0 12px; color: var(--muted); }
  #cf-err { margin: 0 0 12px; padding: 8px 10px; border-radius: 6px; background: rgba(248,81,73,.12); color: #ff938a; font-size: 13px; overflow-wrap: anywhere; }
  .cf-buttons { display: flex; justify-content: flex-end; gap: 8px; }
  #cf-ok { border-color: var(--accent); } #cf-ok.danger { background: #3a1d1f; border-color: rgba(248,81,73,.55); }
  #cf-ok:disabled { opacity: .6; cursor: progress; }
  #cf-field { display: block; margin: 0 0 12px; font-size: 13px; color: var(--muted); }
  #cf-input { display: block; width: 100%; margin-top: 4px; box-sizing: border-box; }
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
  @media (max-width: 1100px) { .kpis { grid-template-columns: repeat(3, minmax(0, 1fr)); } .span4, .span8, .span6, .span9, .span3.events { grid-column: span 12; } .span3 { grid-column: span 6; } }
  @media (max-width: 640px) {
    header { padding: 10px 12px; gap: 6px 12px; } header h1 .sub, #who { display: none; }
    main { padding: 12px 12px 32px; gap: 12px; }
    .kpis { grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 12px; }
    .span3 { grid-column: span 12; }
    .card { padding: 12px; }
    .fields { grid-template-columns: max-content minmax(0, 1fr); }
    .td-head { padding: 12px; } .td-body { padding: 0 12px 24px; }
    td { max-width: 170px; }
    #fleet-table { min-width: 820px; } #tasks-table { min-width: 980px; }
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
  <section class="card span6">
    <h2>Throughput <span class="count muted">completed per minute, last hour</span></h2>
    <div class="thr-now"><b id="thr-now">–</b><span class="muted" id="thr-note"></span></div>
    <div class="chart" id="thr-chart" role="img" aria-label="Tasks completed per minute over the last hour">
      <div class="yaxis" id="thr-y"></div>
      <div class="plot"><div id="thr-grid"></div><div class="bars" id="thr"></div></div>
      <div class="xaxis" id="thr-x"></div>
    </div>
  </section>
  <section class="card span3" aria-labelledby="fail-title">
    <h2 title="Tasks that ended failed or timed out in the last hour (the newest 10,000), per error code"><span id="fail-title">Failures · last hour</span> <span class="count muted" id="fail-count"></span></h2>
    <div id="failures"></div>
  </section>
  <section class="card span3"><h2>Queue by priority</h2><div class="prio" id="prio"></div></section>
  <section class="card span9">
    <h2>Fleet <span class="count muted" id="fleet-count"></span></h2>
    <div class="chips" id="agent-chips"></div>
    <input id="filter" placeholder="Filter by name, provider, region, capability…" style="width:100%;margin-bottom:8px">
    <div class="scroll"><table class="fixed" id="fleet-table"><colgroup><col><col style="width:112px"><col style="width:21%"><col style="width:140px"><col><col style="width:118px"></colgroup><thead><tr><th>Agent</th><th>Status</th><th>Provider · region</th><th>Load</th><th>Capabilities</th><th>Last heartbeat</th></tr></thead><tbody id="agents"></tbody></table></div>
    <div class="pager"><span id="page-info"></span><button id="prev" type="button">‹</button><button id="next" type="button">›</button></div>
  </section>
  <section class="card span3 events"><h2>Live events <span class="count muted" id="ev-count"></span></h2><div id="log" class="scroll"></div></section>
  <section class="card span12" aria-labelledby="rollouts-title">
    <h2><span id="rollouts-title">Rollouts</span> <span class="count muted" id="rollout-count"></span></h2>
    <div class="muted" id="rollout-err" role="status"></div>
    <div class="scroll"><table class="fixed" id="rollouts-table"><colgroup><col><col style="width:120px"><col style="width:30%"><col style="width:70px"><col style="width:90px"><col style="width:220px"></colgroup><thead><tr><th>Rollout</th><th>Status</th><th>Progress</th><th>Wave</th><th>Errors / budget</th><th></th></tr></thead><tbody id="rollouts"></tbody></table></div>
    <div class="scroll"><table class="fixed" id="rollout-targets-table"><thead><tr><th>Target</th><th>Wave</th><th>Status</th><th>Error</th></tr></thead><tbody id="rollout-targets"></tbody></table></div>
  </section>
  <section class="card span12">
    <h2>Tasks <span class="count muted" id="task-count"></span></h2>
    <div class="find"><input id="task-search" type="search" placeholder="Find a task by id, type, or the start of its name…" aria-label="Find a task by id, type, or the start of its name (names: the newest 10,000 tasks)" title="An id finds that task; other text finds the tasks of that type and those whose name starts with it (any case, among the newest 10,000 tasks)" autocomplete="off" spellcheck="false"></div>
    <div class="chips" id="task-chips" role="group" aria-label="Show tasks by status"></div>
    <div class="scroll"><table class="fixed" id="tasks-table"><colgroup><col><col style="width:150px"><col style="width:15%"><col style="width:76px"><col style="width:17%"><col style="width:80px"><col style="width:100px"><col></colgroup><thead><tr><th>Task</th><th>Status</th><th>Type</th><th>Priority</th><th>Agent</th><th>Attempt</th><th>Created</th><th>Result / reason</th></tr></thead><tbody id="tasks"></tbody></table></div>
  </section>
</main>
<dialog id="task-detail" class="drawer" aria-labelledby="td-title">
  <div class="td">
    <div class="td-head">
      <div><h2 id="td-title">Task</h2><div class="mono" id="td-id"></div><div class="td-actions" id="td-actions"></div></div>
      <button type="button" id="td-close" aria-label="Close the task detail">✕</button>
    </div>
    <div class="td-body">
      <div class="td-note" id="td-note" hidden></div>
      <div id="td-fields">
        <dl class="fields" id="td-summary"></dl>
        <section aria-labelledby="td-log-title">
          <h3 class="td-log-head"><span id="td-log-title">Log</span><select id="td-log-attempt" aria-label="Attempt whose log is shown" hidden></select><span class="muted" id="td-log-state"></span><button type="button" id="td-log-jump" hidden>↓ newest</button></h3>
          <div id="task-log" role="log" aria-labelledby="td-log-title" tabindex="0" data-empty="No output."></div>
        </section>
        <h3>Task</h3>
        <dl class="fields" id="td-more"></dl>
      </div>
      <h3>Error</h3><pre id="td-error"></pre>
      <h3>Result</h3><pre id="td-result"></pre>
      <h3>Requirements</h3><pre id="td-requirements"></pre>
      <h3>Payload</h3><pre id="td-payload"></pre>
      <h3>Events <span class="muted" id="td-ev-count"></span></h3>
      <ol class="td-events" id="td-events"></ol>
    </div>
  </div>
</dialog>
<dialog id="agent-detail" class="drawer" aria-labelledby="ad-title">
  <div class="td">
    <div class="td-head">
      <div><h2 id="ad-title">Agent</h2><div class="mono" id="ad-id"></div><div class="td-actions" id="ad-actions"></div></div>
      <button type="button" id="ad-close" aria-label="Close the agent detail">✕</button>
    </div>
    <div class="td-body">
      <div class="td-note" id="ad-note" hidden></div>
      <dl class="fields" id="ad-fields"></dl>
      <h3>Running <span class="muted" id="ad-running-count"></span></h3>
      <table class="fixed"><colgroup><col><col style="width:96px"><col style="width:24%"><col style="width:72px"><col style="width:76px"><col style="width:84px"></colgroup><thead><tr><th>Task</th><th>Status</th><th>Type</th><th>Attempt</th><th>Progress</th><th>Since</th></tr></thead><tbody id="ad-running"></tbody></table>
      <h3 title="Failed or timed out, the newest first">Recent failures <span class="muted" id="ad-failures-count"></span></h3>
      <table class="fixed"><colgroup><col style="width:30%"><col style="width:96px"><col><col style="width:84px"></colgroup><thead><tr><th>Task</th><th>Status</th><th>Error</th><th>Ended</th></tr></thead><tbody id="ad-failures"></tbody></table>
      <h3>Last metrics <span class="muted" id="ad-metrics-at"></span></h3><pre id="ad-metrics"></pre>
    </div>
  </div>
</dialog>
<dialog id="confirm" aria-labelledby="cf-title" aria-describedby="cf-text">
  <h2 id="cf-title"></h2>
  <p id="cf-text"></p>
  <label id="cf-field" hidden><span id="cf-label"></span><input id="cf-input" autocomplete="off"></label>
  <div id="cf-err" role="alert" hidden></div>
  <div class="cf-buttons"><button type="button" id="cf-cancel">Keep as is</button><button type="button" id="cf-ok">Confirm</button></div>
</dialog>
<div id="login"><form id="login-form">
  <h2 style="margin:0;font-size:16px">Connect to the control plane</h2>
  <div class="muted">Paste an admin, operator or viewer token (printed by <code>npm start</code> in development, or <code>npm run token -- --role viewer</code>). It stays in this browser only.</div>
  <textarea id="token" placeholder="eyJhbGciOi…" spellcheck="false"></textarea>
  <div class="err" id="login-err"></div>
  <div style="display:flex;justify-content:flex-end"><button type="submit" id="connect">Connect</button></div>
</form></div>
<script>${dashboardScript}</script>
</body>
</html>`

/**
 * Only this origin: the page's own script (by its hash: no other inline script runs), its
 * inline styles, and the API.
 */
export const dashboardCsp = `default-src 'none'; script-src '${dashboardScriptHash}'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`
