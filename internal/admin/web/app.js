// agua dashboard: polls /v1/live every second with the bearer token kept
// in sessionStorage; draws a connections/s chart; blocks, unblocks and
// switches lockdown through the admin API. No external resources.
"use strict";

const $ = (s) => document.querySelector(s);
let token = sessionStorage.getItem("agua-token") || "";
let prev = null;
const history = []; // {served, refused} per second
const maxPoints = 120;
let timer = null;
let eventsTimer = null;
let queueTimer = null;

async function api(method, path, body) {
  const opts = { method, headers: { Authorization: "Bearer " + token } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error(data.error || resp.statusText);
    err.status = resp.status;
    throw err;
  }
  return data;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function showApp(on) {
  $("#login").hidden = on;
  $("#app").hidden = !on;
  $("#lockdown-toggle").hidden = !on;
  $("#logout").hidden = !on;
}

async function refresh() {
  let live;
  try {
    live = await api("GET", "/v1/live");
  } catch (e) {
    if (e.status === 401) {
      stop();
      showApp(false);
      $("#login-error").textContent = "Token refused.";
    }
    return;
  }
  showApp(true);
  render(live);
}

function render(live) {
  const st = live.status || {};
  $("#uptime").textContent = (st.version ? "agua " + st.version + " · " : "") + (st.uptime ? "up " + st.uptime : "");
  const badge = $("#lockdown-badge");
  badge.textContent = live.lockdown ? "LOCKDOWN ON" : "lockdown off";
  badge.className = "badge " + (live.lockdown ? "on" : "off");
  $("#lockdown-toggle").textContent = live.lockdown ? "Lockdown off" : "Lockdown on";
  $("#lockdown-toggle").dataset.on = live.lockdown ? "1" : "0";

  renderCluster(st.cluster);

  const names = Object.keys(live.listeners).sort();
  const dt = prev ? (new Date(live.time) - new Date(prev.time)) / 1000 : 0;
  let servedRate = 0, refusedRate = 0;
  const rows = names.map((name) => {
    const l = live.listeners[name];
    const p = prev && prev.listeners[name];
    let s = 0, r = 0;
    if (p && dt > 0) {
      s = (l.accepted - p.accepted) / dt;
      r = (l.rejected + l.dropped + l.tarpitted - p.rejected - p.dropped - p.tarpitted) / dt;
    }
    servedRate += s;
    refusedRate += r;
    const tr = el("tr");
    tr.dataset.listener = name;
    for (const v of [name, l.active, s.toFixed(0), r.toFixed(0), l.accepted, l.rejected, l.dropped, l.tarpitted, l.evicted]) tr.append(el("td", String(v)));
    return tr;
  });
  fill($("#listeners tbody"), rows);
  if (prev) {
    history.push({ served: servedRate, refused: refusedRate });
    if (history.length > maxPoints) history.shift();
    draw();
  }
  prev = live;

  const talkerRows = (list) => list.map((t) => {
    const tr = el("tr");
    tr.dataset.prefix = t.prefix;
    tr.append(el("td", t.prefix, t.banned ? "banned" : ""), el("td", String(t.connections)), el("td", String(t.authenticated)));
    const td = el("td");
    if (t.exempt) {
      td.append(el("span", t.exempt, "exempt"));
    } else if (!t.banned) {
      const b = el("button", "Block");
      b.className = "block-talker";
      b.addEventListener("click", () => block(t.prefix, "1h", "dashboard", "drop"));
      td.append(b);
    }
    tr.append(td);
    return tr;
  });
  fill($("#top-addrs tbody"), talkerRows(live.top_addresses || []));
  fill($("#top-nets tbody"), talkerRows(live.top_networks || []));

  // Reputation: the lowest scores, each with its parts, worst part first.
  const scoreRows = (list) => list.map((s) => {
    const tr = el("tr");
    tr.dataset.prefix = s.prefix;
    const parts = Object.entries(s.parts || {}).sort((a, b) => a[1] - b[1] || a[0].localeCompare(b[0]))
      .map(([k, v]) => k + " " + (v > 0 ? "+" : "") + v).join(", ");
    tr.append(el("td", s.prefix), el("td", String(s.score)), el("td", parts));
    return tr;
  });
  fill($("#worst-addrs tbody"), scoreRows(live.worst_addresses || []));
  fill($("#worst-nets tbody"), scoreRows(live.worst_networks || []));

  $("#ban-count").textContent = "(" + live.bans.length + ")";
  fill($("#bans tbody"), live.bans.map((b) => {
    const tr = el("tr");
    tr.dataset.prefix = b.prefix;
    const exp = new Date(b.expires);
    const mins = Math.max(0, Math.round((exp - Date.now()) / 60000));
    for (const v of [b.prefix, b.reason, b.action, b.count, b.hits, utcTime(exp) + " (" + mins + " min)", b.node || ""]) tr.append(el("td", String(v)));
    const td = el("td");
    const u = el("button", "Unblock");
    u.className = "unblock";
    u.addEventListener("click", async () => {
      try { await api("DELETE", "/v1/bans?prefix=" + encodeURIComponent(b.prefix)); } catch (e) { alert(e.message); }
      refresh();
    });
    td.append(u);
    tr.append(td);
    return tr;
  }));
}

// renderCluster shows the nodes sharing the shield through Redis, when
// [cluster] redis is set: connected or not since when, shared bans, and
// each node's last heartbeat.
function renderCluster(c) {
  $("#cluster").hidden = !c;
  if (!c) return;
  const since = utcTime(new Date(c.since));
  $("#cluster-state").textContent = "· this node: " + (c.node || "?") + " · Redis " +
    (c.connected ? "connected" : "UNREACHABLE, enforcing with local state") + " since " + since +
    " · " + c.shared_bans + " shared bans" + (c.pending ? " · " + c.pending + " writes waiting" : "");
  $("#cluster-state").className = c.connected ? "sub" : "sub error";
  fill($("#cluster-nodes tbody"), (c.nodes || []).map((n) => {
    const tr = el("tr");
    tr.dataset.node = n.name;
    tr.append(el("td", n.name), el("td", n.alive ? "alive" : "silent", n.alive ? "" : "banned"),
      el("td", utcTime(new Date(n.last_heartbeat))), el("td", n.age));
    return tr;
  }));
}

// niceStep rounds a tick step up to 1, 2 or 5 times a power of ten, so
// the y axis reads 0, 200, 400, ... rather than 0, 167, 334, ...
function niceStep(raw) {
  const pow = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1))));
  for (const m of [1, 2, 5, 10]) {
    if (m * pow >= raw) return m * pow;
  }
  return 10 * pow;
}

// utcTime writes a time as the logs and the CLI do: 24-hour UTC.
function utcTime(d) {
  return d.toISOString().slice(11, 19) + " UTC";
}

function draw() {
  const c = $("#chart");
  const ctx = c.getContext("2d");
  const w = c.width, h = c.height, pad = 30;
  ctx.clearRect(0, 0, w, h);
  const step = niceStep(Math.max(10, ...history.map((p) => Math.max(p.served, p.refused))) / 4);
  const peak = 4 * step; // the axis ends on a round tick: 0, 250, 500, 750, 1000
  ctx.strokeStyle = "#e3e8ec";
  ctx.fillStyle = "#6b7b88";
  ctx.font = "11px sans-serif";
  const ticks = [];
  for (let i = 0; i <= 4; i++) {
    const y = h - pad - (i / 4) * (h - 2 * pad);
    ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w - 5, y); ctx.stroke();
    ticks.push(step * i);
    ctx.fillText(String(step * i), 2, y + 4);
  }
  c.dataset.ticks = ticks.join(","); // for the end-to-end test
  const line = (key, color) => {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    history.forEach((p, i) => {
      const x = pad + (i / (maxPoints - 1)) * (w - pad - 5);
      const y = h - pad - (p[key] / peak) * (h - 2 * pad);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  };
  line("served", "#1565c0");
  line("refused", "#c62828");
}

async function block(cidr, dur, reason, action) {
  try {
    const r = await api("POST", "/v1/bans", { prefix: cidr, for: dur, reason, action });
    $("#block-result").textContent = r.result;
  } catch (e) {
    $("#block-result").textContent = e.message;
  }
  refresh();
}

// refreshEvents shows the shield's aggregated history of misbehaving
// addresses; it changes once a log interval, so it is polled less often.
async function refreshEvents() {
  let h;
  try {
    h = await api("GET", "/v1/history?since=15m&offending=true");
  } catch (e) {
    return;
  }
  const addrs = (h.addrs || []).slice().sort((a, b) => new Date(b.last) - new Date(a.last)).slice(0, 20);
  fill($("#events tbody"), addrs.map((a) => {
    const tr = el("tr");
    tr.dataset.prefix = a.addr;
    const refused = (a.refused || []).filter((r) => !r.dry_run).reduce((n, r) => n + r.count, 0);
    const what = Object.entries(a.events || {}).filter(([k]) => k !== "auth_success" && k !== "message" && k !== "recipient")
      .map(([k, v]) => k + " " + v).join(", ");
    const bans = (a.bans || []).filter((b) => b.kind === "ban").map((b) => b.reason).join(", ");
    for (const v of [a.addr, utcTime(new Date(a.last)), refused, what || "-", bans || "-"]) tr.append(el("td", String(v)));
    return tr;
  }));
}

// refreshQueue shows the outbound queue (size, oldest, held, recipients
// waiting by destination) and the accounts whose sending is suspended,
// each with a Release button (DELETE /v1/suspensions/ACCOUNT: resumes its
// sending and releases its held mail).
async function refreshQueue() {
  let st, sus;
  try {
    [st, sus] = await Promise.all([api("GET", "/v1/queue/stats"), api("GET", "/v1/suspensions")]);
  } catch (e) {
    return;
  }
  const panel = $("#queue-panel");
  panel.dataset.messages = st.messages;
  panel.dataset.held = st.held;
  let text = st.messages + " message(s), " + st.recipients + " recipient(s) waiting (" + st.deferred + " deferred), " + st.held + " held";
  if (st.oldest) text += "; oldest " + utcTime(new Date(st.oldest)) + " (" + ago(new Date(st.oldest)) + " ago)";
  $("#queue-summary").textContent = text;
  const doms = Object.entries(st.by_domain || {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, 20);
  fill($("#queue-domains tbody"), doms.map(([d, n]) => {
    const tr = el("tr");
    tr.dataset.domain = d;
    tr.append(el("td", d), el("td", String(n)));
    return tr;
  }));
  $("#suspended-count").textContent = "(" + sus.length + ")";
  fill($("#suspended tbody"), sus.map((s) => {
    const tr = el("tr");
    tr.dataset.account = s.account;
    for (const v of [s.account, utcTime(new Date(s.since)), s.reason, s.held_messages]) tr.append(el("td", String(v)));
    const td = el("td");
    const b = el("button", "Release");
    b.className = "release";
    b.addEventListener("click", async () => {
      try { await api("DELETE", "/v1/suspensions/" + encodeURIComponent(s.account)); } catch (e) { alert(e.message); }
      refreshQueue();
    });
    td.append(b);
    tr.append(td);
    return tr;
  }));
}

// ago writes how long ago d was, roughly.
function ago(d) {
  const s = Math.max(0, Math.round((Date.now() - d) / 1000));
  if (s < 120) return s + "s";
  if (s < 7200) return Math.round(s / 60) + "m";
  if (s < 172800) return Math.round(s / 3600) + "h";
  return Math.round(s / 86400) + "d";
}

function start() {
  stop();
  refresh();
  refreshEvents();
  refreshQueue();
  timer = setInterval(refresh, 1000);
  eventsTimer = setInterval(refreshEvents, 5000);
  queueTimer = setInterval(refreshQueue, 2000);
}

function stop() {
  if (timer) clearInterval(timer);
  if (eventsTimer) clearInterval(eventsTimer);
  if (queueTimer) clearInterval(queueTimer);
  timer = null;
  eventsTimer = null;
  queueTimer = null;
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("#token").value.trim();
    sessionStorage.setItem("agua-token", token);
    $("#login-error").textContent = "";
    start();
  });
  $("#logout").addEventListener("click", () => {
    token = "";
    sessionStorage.removeItem("agua-token");
    stop();
    showApp(false);
  });
  $("#block-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    block($("#block-cidr").value.trim(), $("#block-for").value.trim(), $("#block-reason").value.trim(), $("#block-action").value);
  });
  $("#lockdown-toggle").addEventListener("click", async () => {
    const on = $("#lockdown-toggle").dataset.on !== "1";
    if (on && !confirm("Lockdown: only allowlisted and known-good clients will be served. Continue?")) return;
    try { await api("POST", "/v1/lockdown", { on }); } catch (e) { alert(e.message); }
    refresh();
  });
  if (token) start();
});
