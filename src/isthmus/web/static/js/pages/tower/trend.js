// The tower's trend chart: the last 15 minutes of one tag on the vendored uPlot.
// History from /api/tags/{path}/samples (raw, or 5-second buckets with a min–max band
// when there are too many points), live points appended from the stream, Bad samples as
// gaps over a red strip, booleans as steps. uPlot draws the scales, grid, axes and line;
// the hooks below draw what it has no notion of (plot background, Bad strips, frame, unit,
// last-point dot, the "no Good samples" note).
// The canvas keeps id="chart" and data-testid="trend-chart" (the e2e tests read it).

import uPlot from "../../../vendor/uplot/uPlot.esm.js";
import { api, encodePath } from "../../api.js";
import { formatClock, isTextTag } from "../../format.js";

export const WINDOW_MS = 15 * 60 * 1000;
const RAW_LIMIT = 3000;
const LIVE_MAX_POINTS = 20000;
const TIME_STEPS = [5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3];
const FONT = "11px Inter, 'Segoe UI', system-ui, sans-serif";
const COLOR = {
  line: "#1f8fff", // the e2e tests count pixels of this colour
  band: "rgba(31, 143, 255, 0.16)",
  badStrip: "rgba(217, 58, 58, 0.13)",
  badEdge: "rgba(217, 58, 58, 0.7)",
  plot: "#fbfcfd",
  grid: "#e4e8ee",
  frame: "#c5ced9",
  axis: "#66758a",
  unit: "#3b4a5c",
};
const EMPTY_TEXT = "Select a tag to see its trend";
const TEXT_TAG_TEXT = "Text tag: no trend (its current value is shown above)";

function niceStep(span, count) {
  const raw = span / Math.max(count, 1);
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

const measure = document.createElement("canvas").getContext("2d");
measure.font = FONT;

export class TrendChart {
  /** `wrap`: the element the chart fills; `empty`: the overlay shown without a trend;
   * `legendBand`: the legend entry of the min–max band; `tags`: path -> tag. */
  constructor(wrap, { empty, legendBand, tags }) {
    this.wrap = wrap;
    this.empty = empty;
    this.legendBand = legendBand;
    this.tags = tags;
    this.points = []; // {t, v (null = gap), lo, hi, bad}
    this.path = null;
    this.tag = null;
    this.bucketed = false;
    this.pending = false;
    this.loadSeq = 0;
    this.destroyed = false;
    this.view = { t0: Date.now() - WINDOW_MS, t1: Date.now(), lo: 0, hi: 1, yStep: 0.5, decimals: 1, hasData: false, visible: [] };
    const linear = uPlot.paths.linear();
    const stepped = uPlot.paths.stepped({ align: 1 });
    this.plot = new uPlot(this.options(linear, stepped), [[], [], [], []], wrap);
    this.canvas = this.plot.ctx.canvas;
    this.canvas.id = "chart";
    this.canvas.setAttribute("data-testid", "trend-chart");
    this.canvas.setAttribute("role", "img");
    this.canvas.setAttribute("aria-label", "Trend chart of the selected tag");
    this.canvas.dataset.points = "0";
    this.observer = new ResizeObserver(() => this.draw());
    this.observer.observe(wrap);
  }

  options(linear, stepped) {
    const view = () => this.view;
    const isBool = () => Boolean(this.tag && this.tag.value_type === "bool");
    return {
      class: "trend",
      width: Math.max(1, this.wrap.clientWidth),
      height: Math.max(1, this.wrap.clientHeight),
      ms: 1, // timestamps in milliseconds
      padding: [26, 14, 0, 0],
      legend: { show: false },
      cursor: { show: false, drag: { x: false, y: false } },
      select: { show: false },
      scales: {
        x: { time: true, range: () => [view().t0, view().t1] },
        y: { range: () => [view().lo, view().hi] },
      },
      axes: [
        {
          stroke: COLOR.axis,
          font: FONT,
          size: 26,
          gap: 7,
          space: 70,
          incrs: TIME_STEPS,
          ticks: { show: false },
          grid: { stroke: COLOR.grid, width: 1 },
          splits: (u, i, min, max, incr) => {
            const out = [];
            for (let t = Math.ceil(min / incr) * incr; t <= max; t += incr) out.push(t);
            return out;
          },
          values: (u, splits, i, space, incr) => splits.map((t) => formatClock(t, incr < 60e3)),
        },
        {
          stroke: COLOR.axis,
          font: FONT,
          gap: 8,
          ticks: { show: false },
          grid: { stroke: COLOR.grid, width: 1 },
          size: (u, values) => {
            let width = 0;
            for (const v of values || []) if (v) width = Math.max(width, measure.measureText(v).width);
            return Math.ceil(width) + 18;
          },
          splits: () => {
            const { lo, hi, yStep } = view();
            const out = [];
            for (let v = lo; v <= hi + yStep / 2; v += yStep) out.push(v);
            return out;
          },
          values: (u, splits) =>
            splits.map((v) =>
              isBool()
                ? Math.abs(v - 1) < 1e-9 ? "true" : Math.abs(v) < 1e-9 ? "false" : ""
                : v.toFixed(Math.min(view().decimals, 6)),
            ),
        },
      ],
      series: [
        {},
        { label: "max", width: 0, points: { show: false }, paths: linear }, // band top
        { label: "min", width: 0, points: { show: false }, paths: linear }, // band bottom
        {
          label: "value",
          stroke: COLOR.line,
          width: 1.8,
          points: { show: false },
          paths: (u, si, i0, i1) => (isBool() ? stepped : linear)(u, si, i0, i1),
        },
      ],
      bands: [{ series: [1, 2], fill: COLOR.band }],
      hooks: {
        drawClear: [(u) => this.paint(u, () => this.drawPlotArea(u))],
        drawAxes: [(u) => this.paint(u, () => this.drawBad(u))],
        draw: [(u) => this.paint(u, () => this.drawOverlay(u))],
      },
    };
  }

  async load(path) {
    const seq = ++this.loadSeq;
    this.path = path;
    this.tag = this.tags.get(path);
    if (isTextTag(this.tag)) {
      this.points = [];
      this.canvas.dataset.points = "0";
      this.schedule();
      return;
    }
    const base = `/api/tags/${encodePath(path)}/samples?from=-15m&to=now`;
    let body = await api.get(`${base}&limit=${RAW_LIMIT}`);
    let points;
    let bucketed = false;
    if (body.samples.length >= RAW_LIMIT) {
      // Too many raw samples for 15 minutes: ask for 5-second buckets instead.
      body = await api.get(`${base}&bucket=5s`);
      bucketed = true;
      points = body.buckets.map((b) => ({ t: Date.parse(b.timestamp) + 2500, v: b.avg, lo: b.min, hi: b.max, bad: b.count === 0 }));
    } else {
      points = body.samples.map((s) => this.point(Date.parse(s.timestamp), s.value, s.quality));
    }
    if (seq !== this.loadSeq || this.destroyed) return; // a newer tag was selected meanwhile
    const lastLoaded = points.length ? points[points.length - 1].t : -Infinity;
    // Keep live points that arrived while loading.
    const live = this.points.filter((p) => p.t > lastLoaded && this.path === path);
    this.points = points.concat(live);
    this.bucketed = bucketed;
    this.legendBand.hidden = !bucketed;
    this.canvas.dataset.points = String(this.points.length);
    this.schedule();
  }

  /** Show `path` (empty until loaded). */
  open(path) {
    this.points = [];
    this.path = path;
    this.tag = this.tags.get(path);
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

  schedule() {
    if (this.pending || this.destroyed) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      if (!this.destroyed) this.draw();
    });
  }

  destroy() {
    this.destroyed = true;
    this.loadSeq++;
    this.observer.disconnect();
    this.plot.destroy();
  }

  draw() {
    if (this.destroyed) return;
    const w = this.wrap.clientWidth;
    const h = this.wrap.clientHeight;
    if (!w || !h) return;
    if (this.plot.width !== w || this.plot.height !== h) this.plot.setSize({ width: w, height: h });
    // A string tag has no trend: its current text is shown in the badge above.
    const isText = isTextTag(this.tag);
    this.empty.hidden = Boolean(this.path) && !isText;
    this.empty.textContent = isText ? TEXT_TAG_TEXT : EMPTY_TEXT;
    const blank = !this.path || isText;
    this.plot.root.classList.toggle("trend-blank", blank);
    if (blank) {
      this.plot.setData([[], [], [], []]);
      return;
    }

    const now = Date.now();
    const last = this.points.length ? this.points[this.points.length - 1].t : now;
    const t1 = Math.max(now, last);
    const t0 = t1 - WINDOW_MS;
    const visible = this.points.filter((p) => p.t >= t0 - 60000);

    // Value range, padded and rounded to the grid step.
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
    let decimals = 0;
    while (decimals < 6 && Math.abs(Math.round(yStep * 10 ** decimals) - yStep * 10 ** decimals) > 1e-6) decimals++;
    this.view = { t0, t1, lo, hi, yStep, decimals, hasData, visible };

    const xs = [];
    const his = [];
    const los = [];
    const vs = [];
    for (const p of visible) {
      xs.push(p.t);
      vs.push(typeof p.v === "number" ? p.v : null);
      his.push(this.bucketed && typeof p.hi === "number" ? p.hi : null);
      los.push(this.bucketed && typeof p.lo === "number" ? p.lo : null);
    }
    if (!xs.length) {
      // uPlot draws no axes without data: two empty points span the window.
      xs.push(t0, t1);
      for (const a of [vs, his, los]) a.push(null, null);
    }
    this.plot.setData([xs, his, los, vs]);
  }

  // --- hooks (canvas pixels: uPlot's bbox is in device pixels) ---

  paint(u, fn) {
    if (this.plot.root.classList.contains("trend-blank")) return;
    u.ctx.save();
    try {
      fn();
    } finally {
      u.ctx.restore();
    }
  }

  drawPlotArea(u) {
    const { left, top, width, height } = u.bbox;
    u.ctx.fillStyle = COLOR.plot;
    u.ctx.fillRect(left, top, width, height);
  }

  /** Bad stretches: a red strip from each Bad sample to the next sample. */
  drawBad(u) {
    const g = u.ctx;
    const { left, top, width, height } = u.bbox;
    const { visible, t1 } = this.view;
    const pr = uPlot.pxRatio;
    g.beginPath();
    g.rect(left, top, width, height);
    g.clip();
    for (const [style, y, h] of [
      [COLOR.badStrip, top, height],
      [COLOR.badEdge, top + height - 4 * pr, 4 * pr],
    ]) {
      g.fillStyle = style;
      for (let i = 0; i < visible.length; i++) {
        if (!visible[i].bad) continue;
        const end = i + 1 < visible.length ? visible[i + 1].t : Math.max(visible[i].t + 1000, t1);
        const xa = u.valToPos(visible[i].t, "x", true);
        g.fillRect(xa, y, Math.max(2 * pr, u.valToPos(end, "x", true) - xa), h);
      }
    }
  }

  /** Frame, unit, the last point and the "no Good samples" note. */
  drawOverlay(u) {
    const g = u.ctx;
    const pr = uPlot.pxRatio;
    const { left, top, width, height } = u.bbox;
    g.strokeStyle = COLOR.frame;
    g.lineWidth = pr;
    g.strokeRect(Math.round(left) + 0.5 * pr, Math.round(top) + 0.5 * pr, Math.round(width) - pr, Math.round(height) - pr);

    g.textAlign = "left";
    g.textBaseline = "alphabetic";
    g.fillStyle = COLOR.unit;
    g.font = `600 ${Math.round(11 * pr)}px Inter, 'Segoe UI', system-ui, sans-serif`;
    g.fillText(this.tag && this.tag.unit ? this.tag.unit : "value", 6 * pr, 13 * pr);

    const { visible, hasData } = this.view;
    let lastPoint = null;
    for (let i = visible.length - 1; i >= 0; i--) {
      if (typeof visible[i].v === "number") {
        lastPoint = visible[i];
        break;
      }
    }
    g.beginPath();
    g.rect(left, top, width, height);
    g.clip();
    if (lastPoint) {
      g.fillStyle = COLOR.line;
      g.beginPath();
      g.arc(u.valToPos(lastPoint.t, "x", true), u.valToPos(lastPoint.v, "y", true), 3.2 * pr, 0, Math.PI * 2);
      g.fill();
    }
    if (!hasData) {
      g.fillStyle = COLOR.axis;
      g.textAlign = "center";
      g.textBaseline = "middle";
      g.font = `${Math.round(13 * pr)}px Inter, 'Segoe UI', system-ui, sans-serif`;
      g.fillText("No Good samples in the last 15 minutes", left + width / 2, top + height / 2);
    }
  }
}
