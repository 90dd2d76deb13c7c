// Isthmus control tower: plain JavaScript, no build step, nothing fetched from elsewhere.
// Data: REST (/api/...) with a bearer token kept in sessionStorage; live values over
// the WebSocket /api/stream (token sent as the first message).
"use strict";

const TOKEN_KEY = "isthmus.token";
const WINDOW_MS = 15 * 60 * 1000;
const RAW_LIMIT = 3000;
const LIVE_MAX_POINTS = 20000;
const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  tags: new Map(), // path -> tag
  last: new Map(), // path -> {value, quality, ts}
  rows: new Map(), // path -> {tr, value, quality, age}
  treeNodes: new Map(), // path -> .node element
  selection: "", // UNS prefix shown in the table ("" = all)
  chartPath: null,
  ws: null,
  wsBackoff: 500,
  wsTimer: null,
  stopped: true,
};

// ------------------------------------------------------------------ helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function under(path, prefix) {
  return !prefix || path === prefix || path.startsWith(prefix + "/");
}

function qualityClass(name) {
  if (!name) return "q-none";
  if (name.startsWith("Good")) return "q-good";
  if (name.startsWith("Uncertain")) return "q-uncertain";
  return "q-bad";
}

const INT_TYPES = new Set(["int16", "uint16", "int32", "uint32", "int64", "uint64"]);

function formatValue(value, dataType, labels = null) {
  if (value === null || value === undefined) return "—";
  if (labels && typeof value === "number" && labels[String(Math.round(value))] !== undefined) {
    return `${labels[String(Math.round(value))]} (${Math.round(value)})`;
  }
  if (dataType === "bool") return value === true || value === 1 ? "true" : "false";
  if (typeof value !== "number") return String(value);
  if (INT_TYPES.has(dataType)) return Math.round(value).toLocaleString("en-US");
  const abs = Math.abs(value);
  const digits = abs >= 1000 ? 1 : abs >= 10 ? 2 : 3;
  return value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function isTextTag(tag) {
  return Boolean(tag && tag.value_type === "string");
}

function formatAge(ms) {
  if (ms < 0) ms = 0;
  const s = ms / 1000;
  if (s < 10) return `${s.toFixed(1)} s ago`;
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function problemDetail(body, fallback) {
  return body && typeof body.detail === "string" ? body.detail : fallback;
}

class Unauthorized extends Error {}

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${state.token}` } });
  if (response.status === 401) {
    logout("Your session has expired; please sign in again.");
    throw new Unauthorized();
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new Error(problemDetail(body, `${response.status} ${response.statusText}`));
  return body;
}

// ------------------------------------------------------------------ login / logout

function showLogin(message = "") {
  $("app-view").hidden = true;
  $("login-view").hidden = false;
  $("logout").hidden = true;
  $("conn").hidden = true;
  $("user").textContent = "";
  $("login-error").textContent = message;
  $("login-password").value = "";
  $("login-username").focus();
}

async function onLogin(event) {
  event.preventDefault();
  const button = event.submitter || $("login-form").querySelector("button");
  button.disabled = true;
  $("login-error").textContent = "";
  try {
    const response = await fetch("/api/auth/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: $("login-username").value, password: $("login-password").value }),
    });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      $("login-error").textContent =
        response.status === 401 ? "Wrong username or password." : problemDetail(body, "Sign-in failed.");
      return;
    }
    state.token = body.access_token;
    sessionStorage.setItem(TOKEN_KEY, state.token);
    $("login-password").value = "";
    await start();
  } catch (err) {
    if (!(err instanceof Unauthorized)) $("login-error").textContent = "The server cannot be reached.";
  } finally {
    button.disabled = false;
  }
}

function logout(message = "") {
  state.stopped = true;
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(state.wsTimer);
  if (state.ws) {
    state.ws.onclose = null;
    state.ws.close(1000);
    state.ws = null;
  }
  showLogin(message);
}

// ------------------------------------------------------------------ start

async function start() {
  state.stopped = false;
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("logout").hidden = false;
  $("conn").hidden = false;
  const [me, tags, tree] = await Promise.all([api("/api/auth/me"), api("/api/tags"), api("/api/hierarchy")]);
  $("user").textContent = `${me.username} · ${me.role}`;
  state.tags = new Map(tags.map((t) => [t.path, t]));
  renderTree(tree);
  select(state.selection && !isKnownPrefix(state.selection) ? "" : state.selection);
  connect();
}

function isKnownPrefix(prefix) {
  for (const path of state.tags.keys()) if (under(path, prefix)) return true;
  return false;
}

// ------------------------------------------------------------------ hierarchy tree

function renderTree(roots) {
  const nav = $("tree");
  nav.replaceChildren();
  state.treeNodes.clear();
  const build = (nodes, depth) => {
    const ul = el("ul");
    for (const node of nodes) {
      const isTag = node.level === "tag";
      const li = el("li");
      if (!isTag && depth >= 5) li.classList.add("collapsed"); // equipment starts folded
      const caret = el("span", { class: "caret", text: isTag ? "" : "▼" });
      const row = el(
        "div",
        {
          class: isTag ? "node node-tag" : "node",
          title: node.path,
          "data-testid": `tree-node-${node.path}`,
          "data-path": node.path,
        },
        caret,
        isTag ? el("span", { class: "dot q-none" }) : null,
        el("span", { class: "node-name", text: node.name }),
        isTag ? el("span", { class: "level", text: node.unit || "" }) : el("span", { class: "level", text: node.level }),
      );
      caret.addEventListener("click", (e) => {
        e.stopPropagation();
        li.classList.toggle("collapsed");
      });
      row.addEventListener("click", () => {
        if (isTag) {
          select(node.path.slice(0, node.path.lastIndexOf("/")));
          openChart(node.path);
        } else {
          li.classList.remove("collapsed");
          select(node.path);
        }
      });
      state.treeNodes.set(node.path, row);
      li.append(row);
      if (node.children && node.children.length) li.append(build(node.children, depth + 1));
      ul.append(li);
    }
    return ul;
  };
  nav.append(build(roots, 0));
}

function markTree() {
  for (const [path, row] of state.treeNodes) {
    row.classList.toggle("selected", path === state.selection || path === state.chartPath);
  }
}

// ------------------------------------------------------------------ live table

function select(prefix) {
  state.selection = prefix;
  const title = prefix ? prefix.slice(prefix.lastIndexOf("/") + 1) : "All tags";
  $("table-title").textContent = title;
  $("table-path").textContent = prefix || "every tag of the plant";
  renderTable();
  markTree();
  resubscribe();
  refreshLast().catch(reportError);
}

function visibleTags() {
  const filter = $("filter").value.trim().toLowerCase();
  return [...state.tags.values()].filter(
    (t) => under(t.path, state.selection) && (!filter || t.path.toLowerCase().includes(filter)),
  );
}

function renderTable() {
  const body = $("tag-rows");
  body.replaceChildren();
  state.rows.clear();
  const tags = visibleTags();
  $("table-empty").hidden = tags.length > 0;
  for (const tag of tags) {
    const rel = state.selection ? tag.path.slice(state.selection.length + 1) : tag.path;
    const equipment = rel.includes("/") ? rel.slice(0, rel.lastIndexOf("/")) : "";
    const value = el("td", { class: "value", "data-testid": `value-${tag.path}` });
    const quality = el("td", { "data-testid": `quality-${tag.path}` });
    const age = el("td", { class: "age" });
    const tr = el(
      "tr",
      { "data-testid": "tag-row", "data-path": tag.path, title: tag.description || tag.path },
      el("td", {}, el("span", { class: "tag-name", text: tag.name }), equipment ? el("span", { class: "tag-eq", text: equipment }) : null),
      value,
      el("td", { class: "unit", text: tag.unit }),
      quality,
      age,
    );
    tr.classList.toggle("selected", tag.path === state.chartPath);
    tr.addEventListener("click", () => openChart(tag.path));
    body.append(tr);
    const row = { tr, value, quality, age };
    state.rows.set(tag.path, row);
    paintRow(tag.path, row, false);
  }
}

function paintRow(path, row, flash) {
  const tag = state.tags.get(path);
  const last = state.last.get(path);
  if (!last) {
    row.value.textContent = "—";
    row.quality.replaceChildren(el("span", { class: "quality q-none" }, el("span", { class: "dot" }), "no data"));
    row.age.textContent = "";
    return;
  }
  const text = formatValue(last.value, tag ? tag.value_type : "float64", tag ? tag.enum : null);
  row.value.classList.toggle("text", isTextTag(tag));
  if (row.value.textContent !== text) {
    row.value.textContent = text;
    row.value.title = isTextTag(tag) ? text : "";
    if (flash) {
      row.value.classList.remove("flash");
      void row.value.offsetWidth; // restart the animation
      row.value.classList.add("flash");
    }
  }
  const cls = qualityClass(last.quality);
  if (row.quality.dataset.q !== last.quality) {
    row.quality.dataset.q = last.quality;
    row.quality.replaceChildren(el("span", { class: `quality ${cls}` }, el("span", { class: "dot" }), last.quality));
  }
  if (path === state.chartPath) paintChartValue();
  const dot = state.treeNodes.get(path)?.querySelector(".dot");
  if (dot) dot.className = `dot ${cls}`;
  paintAge(row, last);
}

function paintChartValue() {
  const badge = $("chart-value");
  const last = state.chartPath ? state.last.get(state.chartPath) : null;
  const tag = state.chartPath ? state.tags.get(state.chartPath) : null;
  if (!last || !tag) {
    badge.textContent = "";
    return;
  }
  badge.className = `chart-value ${qualityClass(last.quality)}`;
  badge.textContent = `${formatValue(last.value, tag.value_type, tag.enum)}${tag.unit ? ` ${tag.unit}` : ""}`;
}

function paintAge(row, last) {
  const age = Date.now() - last.ts;
  row.age.textContent = formatAge(age);
  row.age.classList.toggle("stale", age > 60000);
}

async function refreshLast() {
  const prefix = state.selection ? `?prefix=${encodeURIComponent(state.selection)}` : "";
  const body = await api(`/api/last${prefix}`);
  for (const v of body.values) remember(v.path, v.value, v.quality, Date.parse(v.timestamp));
  for (const [path, row] of state.rows) paintRow(path, row, false);
}

function remember(path, value, quality, ts) {
  const known = state.last.get(path);
  if (known && known.ts > ts) return false;
  state.last.set(path, { value, quality, ts });
  return true;
}

function reportError(err) {
  if (!(err instanceof Unauthorized)) console.error(err);
}

// ------------------------------------------------------------------ WebSocket

function subscriptions() {
  if (!state.selection) return [];
  const list = [state.selection];
  if (state.chartPath && !under(state.chartPath, state.selection)) list.push(state.chartPath);
  return list;
}

function setConn(kind, text) {
  const c = $("conn");
  c.className = `conn conn-${kind}`;
  c.textContent = text;
}

function connect() {
  clearTimeout(state.wsTimer);
  if (state.stopped) return;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/api/stream`);
  state.ws = ws;
  setConn("wait", "connecting");
  ws.onopen = () => {
    ws.send(JSON.stringify({ token: state.token, subscribe: subscriptions() }));
    state.wsBackoff = 500;
    setConn("live", "live");
    // Catch up on what happened while disconnected.
    refreshLast().catch(reportError);
    if (state.chartPath) chart.load(state.chartPath).catch(reportError);
  };
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (Array.isArray(message.samples)) onSamples(message.samples);
  };
  ws.onclose = (event) => {
    if (state.ws !== ws) return;
    state.ws = null;
    if (state.stopped) return;
    if (event.code === 4401) {
      logout("Your session has expired; please sign in again.");
      return;
    }
    const delay = state.wsBackoff * (0.8 + Math.random() * 0.4);
    state.wsBackoff = Math.min(state.wsBackoff * 2, 10000);
    setConn("off", `reconnecting in ${Math.ceil(delay / 1000)} s`);
    state.wsTimer = setTimeout(connect, delay);
  };
}

function resubscribe() {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify({ subscribe: subscriptions() }));
  }
}

function onSamples(samples) {
  const changed = new Set();
  for (const s of samples) {
    const ts = Date.parse(s.timestamp);
    if (remember(s.path, s.value, s.quality, ts)) changed.add(s.path);
    if (s.path === state.chartPath) chart.append(ts, s.value, s.quality);
  }
  for (const path of changed) {
    const row = state.rows.get(path);
    if (row) paintRow(path, row, true);
  }
}

// ------------------------------------------------------------------ trend chart

function niceStep(span, count) {
  const raw = span / Math.max(count, 1);
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

const TIME_STEPS = [5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3];

function pad2(n) {
  return String(n).padStart(2, "0");
}

class TrendChart {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.points = []; // {t, v (null = gap), lo, hi, bad}
    this.path = null;
    this.tag = null;
    this.bucketed = false;
    this.pending = false;
    this.loadSeq = 0;
    new ResizeObserver(() => this.draw()).observe(canvas.parentElement);
  }

  async load(path) {
    const seq = ++this.loadSeq;
    this.path = path;
    this.tag = state.tags.get(path);
    if (isTextTag(this.tag)) {
      this.points = [];
      this.canvas.dataset.points = "0";
      this.schedule();
      return;
    }
    const base = `/api/tags/${path.split("/").map(encodeURIComponent).join("/")}/samples?from=-15m&to=now`;
    let body = await api(`${base}&limit=${RAW_LIMIT}`);
    let points;
    let bucketed = false;
    if (body.samples.length >= RAW_LIMIT) {
      // Too many raw samples for 15 minutes: ask for 5-second buckets instead.
      body = await api(`${base}&bucket=5s`);
      bucketed = true;
      points = body.buckets.map((b) => ({ t: Date.parse(b.timestamp) + 2500, v: b.avg, lo: b.min, hi: b.max, bad: b.count === 0 }));
    } else {
      points = body.samples.map((s) => this.point(Date.parse(s.timestamp), s.value, s.quality));
    }
    if (seq !== this.loadSeq) return; // a newer tag was selected meanwhile
    const lastLoaded = points.length ? points[points.length - 1].t : -Infinity;
    // Keep live points that arrived while loading.
    const live = this.points.filter((p) => p.t > lastLoaded && this.path === path);
    this.points = points.concat(live);
    this.bucketed = bucketed;
    $("legend-band").hidden = !bucketed;
    this.canvas.dataset.points = String(this.points.length);
    this.schedule();
  }

  point(t, value, quality) {
    const bad = !quality || quality.startsWith("Bad") || value === null;
    let v = value;
    if (typeof v === "boolean") v = v ? 1 : 0;
    return { t, v: bad ? null : v, bad };
  }

  append(t, value, quality) {
    if (isTextTag(this.tag)) return;
    const pts = this.points;
    if (pts.length && t <= pts[pts.length - 1].t) return;
    pts.push(this.point(t, value, quality));
    const cutoff = Date.now() - WINDOW_MS - 60000;
    let drop = 0;
    while (drop < pts.length - 1 && pts[drop + 1].t < cutoff) drop++;
    if (pts.length - drop > LIVE_MAX_POINTS) drop = pts.length - LIVE_MAX_POINTS;
    if (drop) pts.splice(0, drop);
    this.canvas.dataset.points = String(pts.length);
    this.schedule();
  }

  clear() {
    this.points = [];
    this.path = null;
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const canvas = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (!w || !h) return;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const g = this.ctx;
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    // A string tag has no trend: its current text is shown in the badge above.
    const isText = isTextTag(this.tag);
    const empty = $("chart-empty");
    empty.hidden = Boolean(this.path) && !isText;
    empty.textContent = isText ? "Text tag: no trend (its current value is shown above)" : "Select a tag to see its trend";
    if (!this.path || isText) return;

    const now = Date.now();
    const last = this.points.length ? this.points[this.points.length - 1].t : now;
    const t1 = Math.max(now, last);
    const t0 = t1 - WINDOW_MS;
    const visible = this.points.filter((p) => p.t >= t0 - 60000);

    // Value range.
    let lo = Infinity;
    let hi = -Infinity;
    for (const p of visible) {
      if (p.t < t0) continue;
      for (const v of [p.v, p.lo, p.hi]) {
        if (typeof v === "number" && Number.isFinite(v)) {
          lo = Math.min(lo, v);
          hi = Math.max(hi, v);
        }
      }
    }
    const hasData = Number.isFinite(lo);
    if (!hasData) {
      lo = 0;
      hi = 1;
    } else if (hi - lo < 1e-9) {
      const pad = Math.abs(hi) * 0.05 || 1;
      lo -= pad;
      hi += pad;
    } else {
      const pad = (hi - lo) * 0.08;
      lo -= pad;
      hi += pad;
    }
    const yStep = niceStep(hi - lo, Math.max(2, Math.floor(h / 48)));
    lo = Math.floor(lo / yStep) * yStep;
    hi = Math.ceil(hi / yStep) * yStep;

    const dataType = this.tag ? this.tag.value_type : "float64";
    let decimals = 0;
    while (decimals < 6 && Math.abs(Math.round(yStep * 10 ** decimals) - yStep * 10 ** decimals) > 1e-6) decimals++;
    const label = (v) => (dataType === "bool" ? (v === 1 ? "true" : v === 0 ? "false" : "") : v.toFixed(Math.min(decimals, 6)));
    g.font = "11px Inter, 'Segoe UI', system-ui, sans-serif";
    let labelWidth = 0;
    for (let v = lo; v <= hi + yStep / 2; v += yStep) labelWidth = Math.max(labelWidth, g.measureText(label(v)).width);
    const left = Math.ceil(labelWidth) + 18;
    const right = 14;
    const top = 26;
    const bottom = 26;
    const pw = w - left - right;
    const ph = h - top - bottom;
    if (pw < 40 || ph < 40) return;
    const x = (t) => left + ((t - t0) / WINDOW_MS) * (pw - 6);
    const y = (v) => top + (1 - (v - lo) / (hi - lo)) * ph;

    // Frame, grid and value labels.
    g.fillStyle = "#fbfcfd";
    g.fillRect(left, top, pw, ph);
    g.strokeStyle = "#e4e8ee";
    g.lineWidth = 1;
    g.fillStyle = "#66758a";
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (let v = lo; v <= hi + yStep / 2; v += yStep) {
      const yy = Math.round(y(v)) + 0.5;
      g.beginPath();
      g.moveTo(left, yy);
      g.lineTo(left + pw, yy);
      g.stroke();
      g.fillText(label(v), left - 8, yy);
    }
    const tStep = TIME_STEPS.find((s) => (WINDOW_MS / s) * 70 <= pw) || TIME_STEPS[TIME_STEPS.length - 1];
    g.textAlign = "center";
    g.textBaseline = "top";
    for (let t = Math.ceil(t0 / tStep) * tStep; t <= t1; t += tStep) {
      const xx = Math.round(x(t)) + 0.5;
      g.beginPath();
      g.moveTo(xx, top);
      g.lineTo(xx, top + ph);
      g.stroke();
      const d = new Date(t);
      const text = tStep < 60e3
        ? `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`
        : `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
      g.fillText(text, xx, top + ph + 7);
    }
    g.strokeStyle = "#c5ced9";
    g.strokeRect(left + 0.5, top + 0.5, pw - 1, ph - 1);

    // Unit (top left) and tag name.
    g.textAlign = "left";
    g.textBaseline = "alphabetic";
    g.fillStyle = "#3b4a5c";
    g.font = "600 11px Inter, 'Segoe UI', system-ui, sans-serif";
    g.fillText(this.tag && this.tag.unit ? this.tag.unit : "value", 6, 13);

    g.save();
    g.beginPath();
    g.rect(left, top, pw, ph);
    g.clip();

    // Bad stretches: a red strip from each Bad sample to the next sample.
    g.fillStyle = "rgba(217, 58, 58, 0.13)";
    for (let i = 0; i < visible.length; i++) {
      if (!visible[i].bad) continue;
      const end = i + 1 < visible.length ? visible[i + 1].t : Math.max(visible[i].t + 1000, t1);
      const xa = x(visible[i].t);
      g.fillRect(xa, top, Math.max(2, x(end) - xa), ph);
    }
    g.fillStyle = "rgba(217, 58, 58, 0.7)";
    for (let i = 0; i < visible.length; i++) {
      if (!visible[i].bad) continue;
      const end = i + 1 < visible.length ? visible[i + 1].t : Math.max(visible[i].t + 1000, t1);
      const xa = x(visible[i].t);
      g.fillRect(xa, top + ph - 4, Math.max(2, x(end) - xa), 4);
    }

    // min–max band of buckets.
    if (this.bucketed) {
      g.fillStyle = "rgba(31, 143, 255, 0.16)";
      let open = false;
      let run = [];
      const flush = () => {
        if (run.length) {
          g.beginPath();
          run.forEach((p, i) => (i ? g.lineTo(x(p.t), y(p.hi)) : g.moveTo(x(p.t), y(p.hi))));
          for (let i = run.length - 1; i >= 0; i--) g.lineTo(x(run[i].t), y(run[i].lo));
          g.closePath();
          g.fill();
        }
        run = [];
      };
      for (const p of visible) {
        if (typeof p.lo === "number" && typeof p.hi === "number") {
          run.push(p);
          open = true;
        } else if (open) {
          flush();
          open = false;
        }
      }
      flush();
    }

    // The line: gaps at Bad samples; steps for booleans.
    const step = dataType === "bool";
    g.strokeStyle = "#1f8fff";
    g.lineWidth = 1.8;
    g.lineJoin = "round";
    g.beginPath();
    let pen = false;
    let prevY = 0;
    let lastPoint = null;
    for (const p of visible) {
      if (p.v === null || p.v === undefined) {
        pen = false;
        continue;
      }
      const px = x(p.t);
      const py = y(p.v);
      if (!pen) g.moveTo(px, py);
      else {
        if (step) g.lineTo(px, prevY);
        g.lineTo(px, py);
      }
      pen = true;
      prevY = py;
      lastPoint = p;
    }
    g.stroke();
    if (lastPoint) {
      g.fillStyle = "#1f8fff";
      g.beginPath();
      g.arc(x(lastPoint.t), y(lastPoint.v), 3.2, 0, Math.PI * 2);
      g.fill();
    }
    g.restore();

    if (!hasData) {
      g.fillStyle = "#66758a";
      g.textAlign = "center";
      g.textBaseline = "middle";
      g.font = "13px Inter, 'Segoe UI', system-ui, sans-serif";
      g.fillText("No Good samples in the last 15 minutes", left + pw / 2, top + ph / 2);
    }
  }
}

const chart = new TrendChart($("chart"));

function openChart(path) {
  state.chartPath = path;
  const tag = state.tags.get(path);
  $("chart-title").textContent = tag ? tag.name : path;
  $("chart-sub").textContent = path;
  paintChartValue();
  for (const [p, row] of state.rows) row.tr.classList.toggle("selected", p === path);
  markTree();
  resubscribe();
  chart.points = [];
  chart.path = path;
  chart.tag = tag;
  chart.schedule();
  chart.load(path).catch(reportError);
}

// ------------------------------------------------------------------ wiring

function tick() {
  for (const [path, row] of state.rows) {
    const last = state.last.get(path);
    if (last) paintAge(row, last);
  }
  chart.schedule(); // scroll the time axis
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", () => logout());
  $("select-all").addEventListener("click", () => select(""));
  $("filter").addEventListener("input", () => renderTable());
  setInterval(tick, 1000);
  state.token = sessionStorage.getItem(TOKEN_KEY);
  if (state.token) start().catch(reportError);
  else showLogin();
});
