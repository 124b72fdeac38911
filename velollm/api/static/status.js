// VeloLLM status page: polls /metrics (the numbers Prometheus scrapes), /api/ps, /health and
// /status/upstream, and redraws. No build step, no dependencies. An API key, when the server needs
// one, is read from the address: http://host:8000/#key=KEY (never sent anywhere but this server).
"use strict";

const POLL_MS = 2000, UPSTREAM_EVERY = 5, HISTORY = 300;  // 300 samples x 2 s = the last 10 minutes
const key = new URLSearchParams(location.hash.slice(1)).get("key");
const headers = key ? { Authorization: "Bearer " + key } : {};
const $ = (id) => document.getElementById(id);
const series = { tps: [], ttft: [], kv: [] };
let previous = null, ticks = 0;

// Prometheus text format -> [{name, labels, value}]
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2].replace(/\\(.)/g, "$1");
    out.push({ name: m[1], labels, value: parseFloat(m[4]) });
  }
  return out;
}

const sum = (samples, name, where = () => true) =>
  samples.filter((s) => s.name === name && where(s.labels)).reduce((a, s) => a + s.value, 0);
const byModel = (samples, name) => {
  const out = {};
  for (const s of samples) if (s.name === name && s.labels.model !== undefined) out[s.labels.model] = s.value;
  return out;
};

function totals(samples) {
  return {
    t: performance.now() / 1000,
    generated: sum(samples, "velollm_tokens_total", (l) => l.kind === "generation"),
    ttftSum: sum(samples, "velollm_time_to_first_token_seconds_sum"),
    ttftCount: sum(samples, "velollm_time_to_first_token_seconds_count"),
    blocks: sum(samples, "velollm_allocated_blocks"),
    totalBlocks: sum(samples, "velollm_kv_cache_blocks"),
  };
}

function push(name, value) {
  const s = series[name];
  s.push(value);
  if (s.length > HISTORY) s.shift();
}

function record(now) {
  if (previous) {
    const dt = Math.max(now.t - previous.t, 1e-3);
    push("tps", Math.max(0, now.generated - previous.generated) / dt);
    const n = now.ttftCount - previous.ttftCount;
    push("ttft", n > 0 ? (1000 * (now.ttftSum - previous.ttftSum)) / n : null);
  }
  push("kv", now.totalBlocks ? (100 * now.blocks) / now.totalBlocks : 0);
  previous = now;
}

// A line over the last samples (at least MIN_SPAN of them across the width), a dot on each point.
const MIN_SPAN = 30;
function plot(id, values, color, unit, fixedMax) {
  const canvas = $(id), ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = w * ratio; canvas.height = h * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, w, h);
  const known = values.filter((v) => v !== null);
  const max = fixedMax || Math.max(1, ...known) * 1.15;
  const left = 44, bottom = h - 16, top = 8, right = w - 6;
  g.strokeStyle = "#2b3540"; g.fillStyle = "#8a96a3"; g.font = "11px system-ui"; g.lineWidth = 1;
  for (const f of [0, 0.5, 1]) {
    const y = bottom - f * (bottom - top);
    g.beginPath(); g.moveTo(left, y); g.lineTo(right, y); g.stroke();
    g.fillText(format(f * max), 2, y + 4);
  }
  const span = Math.max(values.length, MIN_SPAN);
  g.fillText(`-${Math.round(((span - 1) * POLL_MS) / 1000)} s`, left, h - 2);
  g.fillText("now", right - 22, h - 2);
  const x = (i) => right - (values.length - 1 - i) * ((right - left) / (span - 1));
  const y = (v) => bottom - (v / max) * (bottom - top);
  g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
  let drawing = false;
  values.forEach((v, i) => {
    if (v === null) { drawing = false; return; }
    drawing ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v));
    drawing = true;
  });
  g.stroke();
  g.fillStyle = color;
  values.forEach((v, i) => {
    if (v !== null) { g.beginPath(); g.arc(x(i), y(v), 2.5, 0, 2 * Math.PI); g.fill(); }
  });
  canvas.dataset.samples = String(known.length);
  canvas.dataset.last = String(known.length ? known[known.length - 1] : 0);
  canvas.dataset.max = String(known.length ? Math.max(...known) : 0);
  canvas.title = known.length ? `last: ${format(known[known.length - 1])} ${unit}` : "no data yet";
}

function format(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (v >= 1e3) return (v / 1e3).toFixed(1) + "k";
  return v >= 10 ? v.toFixed(0) : v.toFixed(1);
}

function bytes(n) {
  if (!n) return "-";
  for (const [unit, size] of [["GB", 1e9], ["MB", 1e6], ["KB", 1e3]]) if (n >= size) return (n / size).toFixed(1) + " " + unit;
  return n + " B";
}

function until(iso) {
  const left = (Date.parse(iso) - Date.now()) / 1000;
  if (!isFinite(left)) return "";
  if (left > 100 * 365 * 86400) return "never (pinned)";
  if (left <= 0) return "now";
  return left >= 3600 ? `in ${Math.round(left / 3600)} h` : left >= 60 ? `in ${Math.round(left / 60)} min` : `in ${Math.round(left)} s`;
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function renderModels(ps, samples) {
  const running = byModel(samples, "velollm_running_requests"), waiting = byModel(samples, "velollm_queue_size");
  const kv = byModel(samples, "velollm_kv_cache_usage_ratio");
  const body = $("models").tBodies[0];
  body.replaceChildren();
  for (const m of ps.models || []) {
    const row = body.insertRow();
    row.dataset.model = m.name;
    cell(row, m.name);
    cell(row, bytes(m.size), "num");
    cell(row, m.size_vram > 0 ? "GPU" : "CPU");
    cell(row, m.context_length ? String(m.context_length) : "-", "num");
    cell(row, String(running[m.name] ?? 0), "num");
    cell(row, String(waiting[m.name] ?? 0), "num");
    const bar = document.createElement("div"), fill = document.createElement("div");
    bar.className = "bar"; bar.title = `${((kv[m.name] ?? 0) * 100).toFixed(1)}% of KV blocks in use`;
    fill.style.width = `${Math.min(100, (kv[m.name] ?? 0) * 100)}%`;
    bar.append(fill);
    row.insertCell().append(bar);
    cell(row, until(m.expires_at));
  }
  $("models-empty").hidden = (ps.models || []).length > 0;
}

function renderCaches(samples) {
  const rows = [["prefix (prompt tokens)", sum(samples, "velollm_prefix_cache_hits_total"),
    sum(samples, "velollm_prefix_cache_queries_total")]];
  // any other cache that exports <name>_cache_hits_total with _misses_total or _queries/_lookups_total
  const names = new Set(samples.map((s) => s.name).filter((n) => /_cache_hits_total$/.test(n) && !n.includes("prefix")));
  for (const hits of names) {
    const base = hits.replace(/_hits_total$/, "");
    const h = sum(samples, hits), misses = sum(samples, base + "_misses_total");
    const looked = misses ? h + misses : sum(samples, base + "_queries_total") || sum(samples, base + "_lookups_total");
    const label = base === "velollm_cache" ? "response (whole answers)" : base.replace(/^velollm_/, "").replace(/_/g, " ");
    rows.push([label, h, looked]);
  }
  const body = $("caches").tBodies[0];
  body.replaceChildren();
  for (const [name, h, looked] of rows) {
    const row = body.insertRow();
    cell(row, name); cell(row, String(Math.round(h)), "num"); cell(row, String(Math.round(looked)), "num");
    cell(row, looked ? `${((100 * h) / looked).toFixed(1)}%` : "-");
  }
}

function renderRequests(samples) {
  $("stat-running").textContent = sum(samples, "velollm_running_requests");
  $("stat-waiting").textContent = sum(samples, "velollm_queue_size") + sum(samples, "velollm_backend_queue_size");
  $("stat-requests").textContent = Math.round(sum(samples, "velollm_requests_total"));
  $("stat-errors").textContent = Math.round(sum(samples, "velollm_requests_total", (l) => +l.status >= 400));
  $("stat-aborted").textContent = Math.round(sum(samples, "velollm_aborted_requests_total"));
}

function renderUpstream(info) {
  const body = $("upstream").tBodies[0];
  body.replaceChildren();
  const up = info.upstream;
  const add = (k, v, cls) => { const row = body.insertRow(); cell(row, k); const td = cell(row, v); if (cls) td.className = cls; };
  if (!up) { add("upstream", "none configured (native models only)"); return; }
  add("address", up.url);
  add("state", up.up ? "up" : "down", up.up ? "ok" : "bad");
  $("upstream").dataset.state = up.up ? "up" : "down";
  if (up.kind === "router") add("routing", `${up.backends.length} backends (--config)`);
  else if (up.kind) add("speaks", up.kind === "ollama" ? "Ollama API" : "OpenAI-compatible API");
  for (const b of up.backends || []) {
    const state = b.up ? "up" : `ejected: ${b.reason || "down"}`;
    add(`backend ${b.name}`, `${b.url} · ${state} · ${b.in_flight} in flight, ${b.waiting} waiting`, b.up ? "ok" : "bad");
  }
  if (up.models !== undefined && up.models !== null) add("models", String(up.models));
  if (up.latency_ms !== undefined) add("listing took", `${up.latency_ms} ms`);
  if (up.error) add("error", up.error);
  if (info.proxy_only) add("mode", "--proxy-only: every model goes to the upstream");
}

async function get(path, kind = "json") {
  const response = await fetch(path, { headers, cache: "no-store" });
  if (!response.ok && path !== "/health") throw new Error(`${path}: HTTP ${response.status}`);
  return kind === "json" ? response.json() : response.text();
}

async function tick() {
  try {
    const [text, ps, health] = await Promise.all([get("/metrics", "text"), get("/api/ps"), get("/health")]);
    const samples = parseMetrics(text);
    record(totals(samples));
    renderModels(ps, samples);
    renderRequests(samples);
    renderCaches(samples);
    plot("plot-tps", series.tps, "#58a6ff", "tok/s");
    plot("plot-ttft", series.ttft, "#bc8cff", "ms");
    plot("plot-kv", series.kv, "#3fb950", "%", 100);
    const badge = $("health");
    badge.textContent = health.status;
    badge.className = "badge " + (health.status === "ok" ? "ok" : health.status === "loading" ? "warn" : "bad");
    $("served").textContent = (health.models || []).length ? "serving " + health.models.join(", ") : "";
    if (ticks++ % UPSTREAM_EVERY === 0) renderUpstream(await get("/status/upstream"));
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.ticks = String(ticks);
  } catch (err) {
    $("health").textContent = "unreachable";
    $("health").className = "badge bad";
    $("updated").textContent = String(err.message || err);
  }
}

tick();
setInterval(tick, POLL_MS);
