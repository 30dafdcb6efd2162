// orch web UI: fills the pages from the JSON API and keeps them live. No library, no CDN.
"use strict";

const STATES = ["pending", "running", "waiting", "completed", "failed", "skipped", "cancelled"];
window.orchLoadedAt = Date.now(); // a test reads it: the page was not reloaded

function csrfToken() {
  const found = document.cookie.split("; ").find((c) => c.startsWith("orch_csrf="));
  return found ? decodeURIComponent(found.slice("orch_csrf=".length)) : "";
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", "X-Orch-CSRF": csrfToken() };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    credentials: "same-origin",
  });
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const message = (data && data.error) || response.statusText;
    throw new Error(`${response.status}: ${message}${data && data.hint ? ` (${data.hint})` : ""}`);
  }
  return data;
}

function el(tag, attrs = {}, ...children) {
  const svg = ["svg", "g", "rect", "text", "path", "line", "title", "defs", "marker"].includes(tag);
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function toast(text, bad = false) {
  const box = document.getElementById("toast");
  box.textContent = text;
  box.className = bad ? "toast show bad" : "toast show";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.className = "toast"; }, 5000);
}

function fmtTime(ts) {
  return ts ? new Date(ts * 1000).toLocaleString() : "—";
}

function fmtDuration(s) {
  if (s === null || s === undefined) return "—";
  if (s < 1) return `${Math.round(s * 1000)}ms`;
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${Math.round(s % 60)}s` : `${Math.floor(m / 60)}h${m % 60}m`;
}

function badge(status) {
  return el("span", { class: `badge state-${status}`, text: status });
}

function short(value, n = 160) {
  if (value === null || value === undefined) return "";
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > n ? text.slice(0, n - 1) + "…" : text;
}

// ---- runs list ---------------------------------------------------------------------------
async function runsPage() {
  const params = new URLSearchParams(location.search);
  const query = new URLSearchParams();
  for (const k of ["workflow", "status"]) if (params.get(k)) query.set(k, params.get(k));
  const body = document.getElementById("runs-body");
  async function load() {
    const runs = await api(`/api/runs?${query}`);
    body.replaceChildren();
    if (!runs.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "no runs yet" })));
    for (const r of runs) {
      const counts = Object.entries(r.counts || {}).map(([k, v]) => `${v} ${k}`).join(", ");
      body.append(el("tr", { "data-run": r.id, "data-status": r.status },
        el("td", {}, el("a", { href: `/runs/${r.id}`, text: r.id })),
        el("td", { text: r.workflow }),
        el("td", {}, badge(r.status)),
        el("td", { text: fmtTime(r.started) }),
        el("td", { text: fmtDuration(r.duration) }),
        el("td", { class: "muted", text: counts })));
    }
  }
  await load();
  setInterval(() => load().catch(() => {}), 2000);
}

// ---- workflows -------------------------------------------------------------------------
async function workflowsPage() {
  const box = document.getElementById("workflows");
  async function load() {
    const workflows = await api("/api/workflows");
    box.replaceChildren();
    if (!workflows.length) box.append(el("p", { class: "muted", text: "no workflows in the folder" }));
    for (const w of workflows) {
      const card = el("article", { class: "card", "data-workflow": w.name },
        el("h2", {}, el("a", { href: `/?workflow=${encodeURIComponent(w.name)}`, text: w.name }),
          w.valid ? null : el("span", { class: "badge state-failed", text: "invalid" })),
        w.description ? el("p", { text: w.description }) : null,
        w.error ? el("pre", { class: "error", text: w.error }) : null);
      const triggers = [];
      if (w.webhook) triggers.push(`webhook: POST /api/workflows/${w.name}/runs`);
      for (const a of w.after) triggers.push(`after ${a.workflow} ${a.status}`);
      if (triggers.length) card.append(el("p", { class: "muted", text: triggers.join(" · ") }));
      if (w.schedules.length) {
        const table = el("table", { class: "schedules" },
          el("thead", {}, el("tr", {}, el("th", { text: "Schedule" }), el("th", { text: "Time zone" }),
            el("th", { text: "Overlap" }), el("th", { text: "Next fire times" }))));
        const tb = el("tbody");
        for (const s of w.schedules) {
          tb.append(el("tr", {},
            el("td", {}, el("code", { text: s.cron || `run_at ${s.run_at}` })),
            el("td", { text: s.timezone }), el("td", { text: s.overlap }),
            el("td", { class: "next", text: s.next.length ? s.next.join("  ·  ") : "never (past)" })));
        }
        table.append(tb);
        card.append(table);
      } else {
        card.append(el("p", { class: "muted", text: "no schedule" }));
      }
      card.append(el("p", {}, el("button", { class: "start", "data-workflow": w.name, text: "Start a run",
        disabled: w.valid ? null : "disabled", onclick: () => startRun(w.name) })));
      box.append(card);
    }
  }
  await load();
  setInterval(() => load().catch(() => {}), 5000);
}

async function startRun(name) {
  try {
    const run = await api("/api/runs", { method: "POST", body: { workflow: name, inputs: {} } });
    location.href = `/runs/${run.id}`;
  } catch (e) { toast(e.message, true); }
}

// ---- one run ---------------------------------------------------------------------------
const NODE_W = 150, NODE_H = 38, COL = 200, ROW = 62, PAD = 20;

function drawGraph(svg, graph) {
  svg.replaceChildren();
  const nodes = new Map(graph.nodes.map((n) => [n.id, n]));
  const width = PAD * 2 + (Math.max(0, ...graph.nodes.map((n) => n.level)) + 1) * COL;
  const height = PAD * 2 + (Math.max(0, ...graph.nodes.map((n) => n.row)) + 1) * ROW;
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.append(el("defs", {}, el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto" }, el("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }))));
  const x = (n) => PAD + n.level * COL, y = (n) => PAD + n.row * ROW;
  for (const [from, to] of graph.edges) {
    const a = nodes.get(from), b = nodes.get(to);
    if (!a || !b) continue;
    const x1 = x(a) + NODE_W, y1 = y(a) + NODE_H / 2, x2 = x(b), y2 = y(b) + NODE_H / 2;
    const mid = (x1 + x2) / 2;
    svg.append(el("path", { class: "edge", d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, "marker-end": "url(#arrow)" }));
  }
  for (const n of graph.nodes) {
    const g = el("g", { class: `node state-${n.state}`, "data-phase": n.id, "data-state": n.state,
      transform: `translate(${x(n)},${y(n)})` },
      el("title", { text: `${n.id}: ${n.state}` }),
      el("rect", { width: NODE_W, height: NODE_H, rx: 8 }),
      el("text", { x: 12, y: 24, text: short(n.id, 18) }));
    svg.append(g);
  }
}

function drawGantt(svg, bars, run) {
  svg.replaceChildren();
  if (!bars.length) {
    svg.setAttribute("width", 400); svg.setAttribute("height", 30);
    svg.append(el("text", { x: 0, y: 20, class: "muted-text", text: "no attempt started yet" }));
    return;
  }
  const phases = [];
  for (const b of bars) if (!phases.includes(b.phase)) phases.push(b.phase);
  const start = Math.min(...bars.map((b) => b.start));
  const now = Date.now() / 1000;
  const end = Math.max(run.ended || 0, ...bars.map((b) => b.end || now), start + 0.001);
  const LABEL = 150, WIDTH = 760, ROWH = 26;
  const scale = (t) => LABEL + ((t - start) / (end - start)) * WIDTH;
  const height = phases.length * ROWH + 30;
  svg.setAttribute("width", LABEL + WIDTH + 50);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${LABEL + WIDTH + 50} ${height}`);
  for (let i = 0; i <= 4; i++) {
    const t = start + ((end - start) * i) / 4;
    const gx = scale(t);
    svg.append(el("line", { x1: gx, x2: gx, y1: 0, y2: height - 18, class: "grid" }));
    svg.append(el("text", { x: gx, y: height - 4, class: "axis", "text-anchor": "middle", text: `+${fmtDuration(t - start)}` }));
  }
  phases.forEach((p, i) => {
    svg.append(el("text", { x: 0, y: i * ROWH + 18, class: "label", text: short(p, 20) }));
  });
  for (const b of bars) {
    const i = phases.indexOf(b.phase);
    const x1 = scale(b.start), x2 = scale(b.end || now);
    svg.append(el("rect", { class: `bar ${b.kind} state-${b.state}`, "data-phase": b.phase, "data-attempt": b.attempt,
      x: x1, y: i * ROWH + 5, width: Math.max(2, x2 - x1), height: ROWH - 10, rx: 3 },
      el("title", { text: `${b.phase} ${b.kind}${b.attempt ? ` ${b.attempt}` : ""}: ${b.outcome}, ${fmtDuration((b.end || now) - b.start)}${b.note ? ` (${b.note})` : ""}` })));
  }
}

function tokens(meta) {
  const t = meta && (meta.tokens || meta.usage);
  if (!t) return "";
  if (typeof t === "number") return String(t);
  return String(t.total || t.total_tokens || (t.prompt || 0) + (t.completion || 0) || "");
}

async function runPage(runId) {
  const state = { run: null, lastSeq: 0, logSeq: 0, logPhase: "", source: null };
  const $ = (id) => document.getElementById(id);

  function render(run) {
    state.run = run;
    $("run-status").replaceWith(Object.assign(badge(run.status), { id: "run-status" }));
    document.body.dataset.status = run.status;
    const trig = run.trigger ? ` · started by ${run.trigger.kind}${run.trigger.run_id ? ` (after ${run.trigger.run_id})` : ""}` : "";
    $("run-meta").textContent = `${run.workflow} · started ${fmtTime(run.started)} · ${fmtDuration(run.duration)}${trig}`;
    $("run-error").hidden = !run.error;
    $("run-error").textContent = run.error || "";
    const active = ["queued", "running"].includes(run.status);
    $("btn-cancel").hidden = !active;
    $("btn-resume").hidden = active || run.status === "completed";
    if (run.graph) drawGraph($("graph"), run.graph);
    drawGantt($("gantt"), run.attempts || [], run);
    const body = $("phases-body");
    body.replaceChildren();
    const waiting = [];
    for (const p of run.phases || []) {
      if (p.state === "waiting") waiting.push(p);
      body.append(el("tr", { "data-phase": p.id, "data-state": p.state },
        el("td", {}, el("code", { text: p.id })),
        el("td", {}, badge(p.state)),
        el("td", { text: p.attempts || "" }),
        el("td", { text: fmtDuration(p.duration) }),
        el("td", { text: tokens(p.metadata) }),
        el("td", { class: p.error ? "error" : "" , text: p.error ? short(p.error, 300) : short(p.output) })));
    }
    const box = $("approvals");
    box.replaceChildren();
    for (const p of waiting) {
      const pid = p.id;
      box.append(el("div", { class: "approval", "data-phase": pid },
        el("span", { text: `Phase ${pid} waits for approval${p.approval ? `: ${p.approval}` : ""} ` }),
        el("button", { class: "approve", text: "Approve", onclick: () => decide(pid, "approve") }),
        el("button", { class: "reject danger", text: "Reject", onclick: () => decide(pid, "reject") })));
    }
    $("outputs").textContent = run.outputs === null || run.outputs === undefined ? "—" : JSON.stringify(run.outputs, null, 2);
    const choice = $("log-phase");
    const listed = new Set([...choice.options].map((o) => o.value));
    for (const p of run.phases || []) {
      if (!listed.has(p.id)) choice.append(el("option", { value: p.id, text: p.id }));
    }
  }

  // The Logs box: the lines `orch logs RUN [--phase P]` prints, appended as events arrive,
  // a page of at most LOG_PAGE lines per request (a full page: ask for the next one), each
  // page one text node (appending to textContent would copy the whole log every time).
  const LOG_PAGE = 1000;
  let logsBusy = null, logsAgain = false;
  function loadLogs() {
    if (logsBusy) { logsAgain = true; return logsBusy; } // one load at a time, then once more
    logsBusy = (async () => {
      do {
        logsAgain = false;
        const phase = state.logPhase;
        const query = new URLSearchParams({ after: String(state.logSeq), limit: String(LOG_PAGE) });
        if (phase) query.set("phase", phase);
        const entries = await api(`/api/runs/${runId}/logs?${query}`);
        if (phase !== state.logPhase) { logsAgain = true; continue; } // the choice changed
        if (entries.length) {
          $("logs").append(document.createTextNode(entries.map((e) => `${e.line}\n`).join("")));
          state.logSeq = Math.max(state.logSeq, entries[entries.length - 1].seq); // in seq order
        }
        if (entries.length >= LOG_PAGE) logsAgain = true; // a full page: more may follow
      } while (logsAgain);
    })().finally(() => { logsBusy = null; });
    return logsBusy;
  }
  let logsPending = null;
  function logsSoon() {
    if (logsPending) return;
    logsPending = setTimeout(() => { logsPending = null; loadLogs().catch((e) => toast(e.message, true)); }, 150);
  }
  $("log-phase").addEventListener("change", (e) => {
    state.logPhase = e.target.value;
    state.logSeq = 0;
    $("logs").textContent = "";
    loadLogs().catch((err) => toast(err.message, true));
  });

  // Answers may come back out of order (each request reads the store in its own
  // thread): only the last one asked for is drawn, so an older read never replaces a
  // newer one (a waiting phase's Approve box drawn, then taken away by an earlier read).
  let asked = 0;
  async function refresh() {
    const mine = ++asked;
    const run = await api(`/api/runs/${runId}`);
    if (mine === asked) render(run);
    return run;
  }

  let pending = null;
  function soon() {
    if (pending) return;
    pending = setTimeout(() => { pending = null; refresh().catch((e) => toast(e.message, true)); }, 150);
  }

  async function decide(phase, decision) {
    try {
      const r = await api(`/api/runs/${runId}/phases/${encodeURIComponent(phase)}/${decision}`, { method: "POST", body: {} });
      toast(r.message); soon();
    } catch (e) { toast(e.message, true); }
  }

  $("btn-cancel").addEventListener("click", async () => {
    try { const r = await api(`/api/runs/${runId}/cancel`, { method: "POST", body: {} }); toast(r.message); soon(); }
    catch (e) { toast(e.message, true); }
  });
  $("btn-resume").addEventListener("click", async () => {
    try { const r = await api(`/api/runs/${runId}/resume`, { method: "POST", body: {} }); toast(r.message); soon(); listen(); }
    catch (e) { toast(e.message, true); }
  });

  function listen() {
    if (state.source) state.source.close();
    const source = new EventSource(`/api/runs/${runId}/events/stream?after=${state.lastSeq}`);
    state.source = source;
    $("live").classList.add("on");
    const handle = (msg) => {
      const e = JSON.parse(msg.data);
      state.lastSeq = Math.max(state.lastSeq, e.seq || 0);
      if (!state.logPhase || e.phase === state.logPhase) logsSoon();
      soon();
    };
    for (const kind of ["workflow_started", "phase_started", "phase_stream", "phase_retry", "phase_completed",
      "phase_failed", "phase_skipped", "phase_compensated", "phase_waiting", "phase_iteration",
      "workflow_completed", "workflow_failed", "workflow_cancelled"]) source.addEventListener(kind, handle);
    source.addEventListener("end", () => { source.close(); $("live").classList.remove("on"); soon(); logsSoon(); });
  }

  // The run's last_seq is the last event its read saw (the phases it shows are at least as
  // new), and the stream goes on from that event: nothing falls between the two, and a
  // long run's events are not all fetched to find it.
  try {
    const run = await refresh();
    state.lastSeq = Math.max(state.lastSeq, run.last_seq || 0);
  } catch (e) {
    toast(e.message, true);
    return;
  }
  loadLogs().catch((e) => toast(e.message, true));
  listen();
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  const run = page === "runs" ? runsPage() : page === "workflows" ? workflowsPage()
    : page === "run" ? runPage(document.body.dataset.run) : Promise.resolve();
  run.catch((e) => toast(e.message, true));
});
